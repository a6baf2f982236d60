"""The tables of every report (:func:`results_table`, :func:`empty_truth_table`, :func:`chosen_note`; Markdown
or HTML) and the terminal's (rich)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from segcp.metrics import METRICS
from segcp.report.html import Cell, Table

__all__ = ["NOTE_LOSS", "chosen_note", "empty_truth_table", "fmt", "metrics_table", "ms_text", "results_table", "rich_table", "risk_cells"]

#: Short column headers for result keys.
HEADERS = {"alpha": "α", "lambda": "λ̂", "coverage": "coverage", "fnr": "FNR", "stretch": "stretch", "dice": "Dice", "hd95": "HD95", "assd": "ASSD"}
#: The label of the base model's row in tables.
MODEL_ROW = "base model (p ≥ 0.5)"
#: The columns of a summary (after method and α), ``{u}`` the distance units.
SUMMARY_HEADER = ["λ̂", "coverage", "stretch", "DSC", "ASSD ({u})", "HD95 ({u})"]
#: What a report says about the columns of controlled-loss rows (:func:`risk_cells`).
NOTE_LOSS = (
    "Rows with a controlled loss (loss=NAME: calibrated by RiskSegmenter, exact CRC without δ, Learn then Test with δ): the mean over splits "
    "of that loss's mean over the test images at λ̂ ± SE (CRC: ✓ when ≤ α + 3 SE) and the fraction of splits whose test risk exceeds α "
    "(Learn then Test's guarantee P(risk ≤ α) ≥ 1 − δ: ✓ when ≤ δ + 3·√(δ(1 − δ)/splits); a split where nothing is certified claims "
    "nothing and counts as not exceeding); over many splits, the same from the step functions alone. "
)
#: The keys marked best in a block (highest Dice, lowest others) and their rounding.
BEST = [("stretch", 2), ("dice", 3), ("assd", 2), ("hd95", 2)]


def _finite(v: Any) -> bool:
    return v is not None and math.isfinite(v)


def fmt(value: Any, digits: int = 3) -> str:
    """Format a number for a table: NaN/None as an en dash, floats to ``digits`` decimals."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def ms_text(mean: Any, std: Any, digits: int = 3) -> str:
    """``mean ± std`` as table text (``–`` when the mean is undefined, the mean alone without a std)."""
    if not _finite(mean):
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if _finite(std) else f"{mean:.{digits}f}"


def alpha_set(alphas: Sequence[float]) -> str:
    """``{0.2, 0.1}``: risk levels as a set in text."""
    return "{" + ", ".join(f"{a:g}" for a in alphas) + "}"


def _ms(row: Mapping[str, Any], key: str, digits: int = 3) -> str:
    return ms_text(row.get(key), row.get(f"{key}_std"), digits)


def _pct(v: Any, digits: int = 1) -> str:
    return f"{100 * v:.{digits}f} %" if _finite(v) else "–"


def rich_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str | None = None) -> None:
    """Print rows as a rich table on stdout."""
    from rich.console import Console
    from rich.table import Table as RichTable

    table = RichTable(title=title)
    for c in columns:
        left = c in ("method", "split")
        table.add_column(HEADERS.get(c, c), justify="left" if left else "right", no_wrap=not left)
    for r in rows:
        table.add_row(*(fmt(r.get(c)) for c in columns))
    console = Console()
    (console if console.is_terminal else Console(width=160)).print(table)


def metrics_table(results: Mapping[str, Mapping[str, Any]], title: str | None = None) -> None:
    """Print the mean metrics of one or more ``evaluate`` results (name → result)."""
    rows = []
    for name, res in results.items():
        row: dict[str, Any] = {"method": name, "n": res["n"]}
        for m in METRICS:
            undefined = res["undefined"].get(m, 0)
            row[m] = f"{fmt(res['mean'].get(m))} ({undefined} undef.)" if undefined else res["mean"].get(m)
        rows.append(row)
    rich_table(rows, ["method", "n", *METRICS], title=title)


def fnr_cell(row: Mapping[str, Any], alpha: float) -> Cell:
    """Mean test FNR ± its SE over splits, ✓ when within α + 3 SE (the guarantee), ⚠ otherwise."""
    f, se, ok = row.get("fnr"), row.get("fnr_se"), row.get("valid")
    if not _finite(f):
        return Cell("–")
    mark = "" if ok is None else (" ✓" if ok else " ⚠")
    title = f"mean test FNR over splits ± its standard error; ✓: ≤ α + 3 SE = {alpha + 3 * (se or 0):.3f}"
    return Cell(f"{f:.3f} ± {se:.3f}{mark}" if _finite(se) else f"{f:.3f}{mark}", title=title)


def risk_cells(row: Mapping[str, Any], alpha: float) -> list[Cell | str]:
    """A controlled-loss row's two columns (:func:`~segcp.report.summaries.risk_summary`): its loss's mean test risk
    ± SE (✓/⚠: CRC's E[loss] ≤ α within 3 SE) and the fraction of splits whose test risk exceeds α (✓/⚠ with δ:
    Learn then Test's P(risk ≤ α) ≥ 1 − δ, the fraction ≤ δ + 3 SE); blank for other rows."""
    if "loss" not in row:
        return ["", ""]
    r, se, delta, ok = row.get("risk"), row.get("risk_se"), row.get("delta"), row.get("risk_valid")
    if not _finite(r):
        return [Cell(f"{row['loss']}: –"), "–"]
    mark = "" if ok is None else (" ✓" if ok else " ⚠")
    text = f"{row['loss']}: {r:.3f}" + (f" ± {se:.3f}" if _finite(se) else "")
    risk = Cell(
        text + ("" if delta is not None else mark), title=f"mean test {row['loss']} over splits ± SE; CRC's guarantee E[loss] ≤ α = {alpha:g}"
    )
    title = "fraction of splits whose test risk exceeds α" + (f"; Learn then Test: at most δ = {delta:g} (+ 3 SE)" if delta is not None else "")
    return [risk, Cell(_pct(row.get("risk_exceeds"), 0) + (f" (δ = {delta:g}){mark}" if delta is not None else ""), title=title)]


def _validity_cell(v: Mapping[str, Any] | None) -> Cell:
    if v and _finite(v.get("risk")):  # a controlled loss over many splits: its test risk and how often it exceeds α
        exceed = f", > α in {_pct(v.get('risk_exceeds'), 1)}" + (f" ({v['infeasible']} infeasible)" if v.get("infeasible") else "")
        return Cell(
            f"risk {v['risk']:.3f} ± {v['risk_se']:.4f}{exceed}", title=f"mean test risk over {v['splits']} random splits from the step functions"
        )
    if not v or not _finite(v.get("fnr")):
        return Cell("–")
    ok = v["fnr"] <= v["alpha"] + 3 * (v["fnr_se"] if math.isfinite(v["fnr_se"]) else 0)
    inf = f" ({v['infeasible']} infeasible)" if v.get("infeasible") else ""
    title = f"mean test FNR over {v['splits']} random splits from the loss curves, ± its standard error"
    return Cell(f"{v['fnr']:.3f} ± {v['fnr_se']:.4f} {'✓' if ok else '⚠'}{inf}", title=title)


def best_cells(block: Sequence[Mapping[str, Any]], keys: Sequence[tuple[str, int]]) -> dict[int, set[str]]:
    """Per row of ``block``: the keys where it is the block's best (highest Dice, lowest others) among the rows
    feasible on every split (all, if none is)."""
    feasible = [i for i, s in enumerate(block) if not s.get("infeasible")] or list(range(len(block)))
    out: dict[int, set[str]] = {i: set() for i in range(len(block))}
    for key, digits in keys:
        vals = {i: round(float(v), digits) for i in feasible if (v := block[i].get(key)) is not None and math.isfinite(v)}
        best = (max if key == "dice" else min)(vals.values(), default=None)
        for i, v in vals.items():
            if v == best:
                out[i].add(key)
    return out


def summary_cells(s: Mapping[str, Any], bold: set[str], units: str) -> list[Cell | str]:
    """λ̂, coverage, stretch, DSC, ASSD, HD95 of a summary row (bold: the block's best)."""
    return [_ms(s, "lambda"), _ms(s, "coverage"), *(Cell(_ms(s, k, d), k in bold) for k, d in BEST)]


def results_table(
    caption: str,
    summary: Sequence[Mapping[str, Any]],
    model: Mapping[str, Any],
    alphas: Sequence[float],
    units: str,
    baseline: str | None,
    note: str = "",
    validity: Mapping[tuple[str, float], Any] | None = None,
    validity_splits: int = 0,
) -> Table:
    """Every row at every α and the model's own mask: mean ± std over splits, missed structures, the guarantee
    check (with ``validity``: over many splits too), wins against ``baseline``; bold: the α block's best."""
    val = [f"FNR, {validity_splits} splits"] if validity is not None else []
    risk = ["controlled loss: test risk ± SE", "splits with risk > α"] if any("loss" in s for s in summary) else []
    header = ["method", "α", *(h.format(u=units) for h in SUMMARY_HEADER), "missed", "test FNR ± SE", *val, *risk, "DSC win", "HD95 win"]
    model_row: list[Cell | str] = [Cell(MODEL_ROW), "–", "–", _ms(model, "coverage"), "1", _ms(model, "dice"), _ms(model, "assd", 2)]
    rows = [[*model_row, _ms(model, "hd95", 2), _pct(model.get("missed")), fmt(model.get("fnr")), *[""] * (len(val) + len(risk) + 2)]]
    for a in alphas:
        block = [s for s in summary if s["alpha"] == a]
        bold = best_cells(block, BEST)
        for j, s in enumerate(block):
            name = s["method"] + (f" (infeasible in {s['infeasible']}/{s['splits']} splits)" if s["infeasible"] else "")
            wins = ["", ""] if s["method"] == baseline else [_pct(s.get("dice_win"), 0), _pct(s.get("hd95_win"), 0)]
            checks = [_validity_cell(validity.get((s["method"], a)))] if validity is not None else []
            risks = risk_cells(s, a) if risk else []
            rows.append([Cell(name), f"{a:g}", *summary_cells(s, bold[j], units), _pct(s.get("missed")), fnr_cell(s, a), *checks, *risks, *wins])
    return Table(caption, header, rows, note)


def empty_truth_table(caption: str, summary: Sequence[Mapping[str, Any]], model: Mapping[str, Any]) -> Table:
    """On images without the structure: the fraction whose set is not empty and its mean area."""
    rows: list[list[Cell | str]] = [[MODEL_ROW, "–", _pct(model.get("empty_hit")), fmt(model.get("empty_fp"), 1)]]
    rows += [[s["method"], f"{s['alpha']:g}", _pct(s.get("empty_hit")), _ms(s, "empty_fp", 1)] for s in summary]
    note = (
        "Mean over splits of the test images' values: the fraction of images without the structure whose set is not empty, and the set's "
        "mean area in pixels (false positives)."
    )
    return Table(caption, ["method", "α", "set not empty", "false-positive area (px)"], rows, note)


def chosen_note(summary: Sequence[Mapping[str, Any]]) -> str:
    """What each tuned row chose by cross-validation on the calibration images (number of splits), or ''."""
    chosen = [s for s in summary if s.get("chosen")]
    if not chosen:
        return ""
    each = "; ".join(f"{s['method']} at α = {s['alpha']:g}: " + ", ".join(f"{k} ({v})" for k, v in s["chosen"].items()) for s in chosen)
    return f"Settings chosen by cross-validation on each split's calibration images (number of splits): {each}."
