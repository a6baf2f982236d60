"""The benchmark report: one self-contained HTML file (figures as PNG ``data:`` URIs, no scripts, a
print stylesheet: each task on a new page) and the same in Markdown (figures as files beside it).
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Cell", "Document", "Figure", "Table", "page"]


@dataclass
class Cell:
    text: str
    bold: bool = False
    title: str | None = None  # hover text (HTML only)

    def html(self) -> str:
        t = f"<b>{html.escape(self.text)}</b>" if self.bold else html.escape(self.text)
        return f'<td title="{html.escape(self.title)}">{t}</td>' if self.title else f"<td>{t}</td>"


@dataclass
class Table:
    caption: str
    header: list[str]
    rows: list[list[Cell | str]]
    note: str = ""

    def _cells(self) -> list[list[Cell]]:
        return [[c if isinstance(c, Cell) else Cell(str(c)) for c in r] for r in self.rows]

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = ["<tr>" + "".join(c.html() for c in r) + "</tr>" for r in self._cells()]
        note = f'<p class="note">{html.escape(self.note)}</p>' if self.note else ""
        return (
            f'<div class="table"><table><caption>{html.escape(self.caption)}</caption><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table>{note}</div>"
        )

    def markdown(self) -> str:
        def esc(s: str) -> str:
            return s.replace("|", "\\|")

        lines = [f"**{esc(self.caption)}**", "", "| " + " | ".join(esc(h) for h in self.header) + " |", "|" + "---|" * len(self.header)]
        for r in self._cells():
            lines.append("| " + " | ".join(f"**{esc(c.text)}**" if c.bold and c.text else esc(c.text) for c in r) + " |")
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines) + "\n"


@dataclass
class Figure:
    name: str  # file name (PNG) beside report.md
    png: bytes
    caption: str

    def html(self) -> str:
        data = base64.b64encode(self.png).decode("ascii")
        return (
            f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(self.caption)}">'
            f"<figcaption>{html.escape(self.caption)}</figcaption></figure>"
        )

    def markdown(self) -> str:
        return f"![{self.caption}]({self.name})\n\n*{self.caption}*\n"


@dataclass
class Document:
    """A report as blocks (headings, text, lists, tables, figures), each kept as its HTML and its Markdown."""

    title: str
    blocks: list[tuple[str, str]] = field(default_factory=list)  # (HTML, Markdown; "": HTML only)
    toc: list[tuple[str, str]] = field(default_factory=list)  # (text, anchor) of the level-2 headings
    figs: list[Figure] = field(default_factory=list)

    def h(self, level: int, text: str, anchor: str | None = None) -> None:
        a = f' id="{html.escape(anchor)}"' if anchor else ""
        self.blocks.append((f"<h{level}{a}>{html.escape(text)}</h{level}>", "#" * level + " " + text + "\n"))
        if level == 2 and anchor:
            self.toc.append((text, anchor))

    def p(self, text: str) -> None:
        self.blocks.append((f"<p>{_inline(text)}</p>", text + "\n"))

    def items(self, lines: Sequence[str]) -> None:
        if lines:
            self.blocks.append(("<ul>" + "".join(f"<li>{_inline(x)}</li>" for x in lines) + "</ul>", "\n".join(f"- {x}" for x in lines) + "\n"))

    def pre(self, text: str, summary: str | None = None) -> None:
        block = f"<pre>{html.escape(text)}</pre>"
        md = (f"{summary}:\n\n" if summary else "") + "```\n" + text.rstrip("\n") + "\n```\n"
        self.blocks.append((f"<details><summary>{html.escape(summary)}</summary>{block}</details>" if summary else block, md))

    def table(self, t: Table) -> None:
        self.blocks.append((t.html(), t.markdown()))

    def figure(self, f: Figure) -> None:
        self.figs.append(f)
        self.blocks.append((f.html(), f.markdown()))

    def section(self, cls: str) -> None:
        """Start a section (HTML only: each task's section starts a printed page)."""
        self.blocks.append(("</section>\n" * self._in_section() + f'<section class="{html.escape(cls)}">', ""))

    def _in_section(self) -> bool:
        return any(b.startswith(("<section", "</section>")) for b, _ in self.blocks)

    def html(self) -> str:
        toc = (
            (
                '<nav class="toc"><b>Contents</b><ol>'
                + "".join(f'<li><a href="#{html.escape(an)}">{html.escape(t)}</a></li>' for t, an in self.toc)
                + "</ol></nav>"
            )
            if self.toc
            else ""
        )
        body = [x for b, _ in self.blocks for x in ([b, toc] if b.startswith("<h1") and toc else [b])] + ["</section>"] * self._in_section()
        return page(self.title, "\n".join(body))

    def markdown(self) -> str:
        return "\n".join(md for _, md in self.blocks if md)


def page(title: str, body: str, *, css: str = "", generator: str = "segcp benchmark") -> str:
    """One self-contained HTML page: the report's stylesheet (``CSS``, then ``css``) and ``body``."""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generator" content="{html.escape(generator)}"><title>{html.escape(title)}</title>'
        f"<style>{CSS}{css}</style></head><body>\n" + body + "\n</body></html>\n"
    )


def _inline(text: str) -> str:
    """Escape, then turn `code` spans and **bold** into HTML (the Markdown subset the report uses)."""
    import re

    t = html.escape(text)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"\*\*([^*]+)\*\*", r"<b>\1</b>", t)
    return t


CSS = """
:root { --fg: #1d1d1f; --muted: #555; --line: #c9c9c9; --head: #f2f2f2; }
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: var(--fg); max-width: 1120px;
       margin: 1.5em auto; padding: 0 1em; line-height: 1.45; font-size: 15px; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; } h2 { font-size: 1.35em; border-bottom: 2px solid var(--line); padding-bottom: 0.15em;
     margin-top: 1.8em; } h3 { font-size: 1.1em; margin-top: 1.4em; }
table { border-collapse: collapse; font-size: 0.82em; margin: 0.4em 0 0.3em; font-variant-numeric: tabular-nums; }
caption { caption-side: top; text-align: left; font-weight: 600; padding: 0.3em 0; }
th, td { border: 1px solid var(--line); padding: 2px 7px; text-align: right; white-space: nowrap; }
th { background: var(--head); white-space: normal; vertical-align: bottom; } td:first-child, th:first-child { text-align: left; white-space: normal; }
.table { overflow-x: auto; margin-bottom: 1.1em; } .note { color: var(--muted); font-size: 0.85em; margin: 0.2em 0 0; }
figure { margin: 0.8em 0 1.4em; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: var(--muted); font-size: 0.85em; } code { background: #f4f4f4; padding: 0 3px; border-radius: 3px; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: 0.6em; overflow-x: auto; font-size: 0.8em; }
nav.toc { background: #fafafa; border: 1px solid #e5e5e5; padding: 0.4em 1em; margin: 1em 0; font-size: 0.9em; }
nav.toc ol { margin: 0.2em 0; } section.first p { margin: 0.3em 0; }
@media print {
  body { max-width: none; margin: 0; padding: 0; font-size: 9.5pt; }
  h2 { break-after: avoid; page-break-after: avoid; } h3 { break-after: avoid; page-break-after: avoid; }
  section.task { break-before: page; page-break-before: always; }
  table, figure, .table { break-inside: avoid; page-break-inside: avoid; }
  .table { overflow: visible; } th, td { padding: 1px 4px; } figure img { border: none; max-height: 24cm; }
  pre { white-space: pre-wrap; word-break: break-all; font-size: 7.5pt; }
  nav.toc { display: none; } a { color: inherit; text-decoration: none; }
}
"""
