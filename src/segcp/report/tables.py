"""Human-readable results: rich tables on the terminal, Markdown tables for reports."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from segcp.metrics import METRICS

__all__ = ["HEADERS", "fmt", "metrics_table", "markdown_table", "rich_table"]

#: Short column headers for result keys.
HEADERS = {
    "alpha": "α",
    "lambda": "λ̂",
    "coverage": "coverage",
    "fnr": "FNR",
    "stretch": "stretch",
    "dice": "Dice",
    "hd95": "HD95",
    "assd": "ASSD",
}


def fmt(value: Any, digits: int = 3) -> str:
    """Format a number for a table: NaN/None as an en dash, floats to ``digits`` decimals."""
    if value is None:
        return "–"
    if isinstance(value, float):
        if math.isnan(value):
            return "–"
        return f"{value:.{digits}f}"
    return str(value)


def rich_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    """Print rows as a rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        left = c in ("method", "split")
        table.add_column(HEADERS.get(c, c), justify="left" if left else "right", no_wrap=not left)
    for r in rows:
        table.add_row(*(fmt(r.get(c)) for c in columns))
    console = Console()
    if not console.is_terminal:
        console = Console(width=160)
    console.print(table)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    """Rows as a GitHub-flavoured Markdown table."""
    lines = ["| " + " | ".join(HEADERS.get(c, c) for c in columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def metrics_table(results: Mapping[str, Mapping[str, Any]], title: str | None = None) -> None:
    """Print the mean metrics of one or more ``evaluate`` results (name → result)."""
    rows = []
    for name, res in results.items():
        row: dict[str, Any] = {"method": name, "n": res["n"]}
        for m in METRICS:
            row[m] = res["mean"].get(m)
            undefined = res["undefined"].get(m, 0)
            if undefined:
                row[m] = f"{fmt(row[m])} ({undefined} undef.)"
        rows.append(row)
    rich_table(rows, ["method", "n", *METRICS], title=title)
