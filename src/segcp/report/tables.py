"""The tables of every report (:func:`results_table`, :func:`empty_truth_table`, :func:`chosen_note`; Markdown
or HTML) and the terminal's (rich)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from segcp.metrics import METRICS
from segcp.report.html import Cell, Table

__all__ = [
    "NOTE_LOSS",
    "band_table",
    "chosen_note",
    "empty_truth_table",
    "fmt",
    "metrics_table",
    "ms_text",
    "results_table",
    "rich_table",
    "risk_cells",
    "volume_table",
]

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
    if "controlled" not in row:
        return ["", ""]
    r, se, delta, ok = row.get("risk"), row.get("risk_se"), row.get("delta"), row.get("risk_valid")
    if not _finite(r):
        return [Cell(f"{row['controlled']}: –"), "–"]
    mark = "" if ok is None else (" ✓" if ok else " ⚠")
    text = f"{row['controlled']}: {r:.3f}" + (f" ± {se:.3f}" if _finite(se) else "")
    risk = Cell(
        text + ("" if delta is not None else mark), title=f"mean test {row['controlled']} over splits ± SE; CRC's guarantee E[loss] ≤ α = {alpha:g}"
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
    risk = ["controlled loss: test risk ± SE", "splits with risk > α"] if any("controlled" in s for s in summary) else []
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


#: The two-sided rows' table: its notes (what each column is).
NOTE_BAND = (
    "Two-sided sets (docs/band.md): the inner set I (certainly structure) and the outer set O (possibly), calibrated by the estimator "
    "on each split's calibration images. Mean ± std over splits of the per-split mean over test images: joint coverage, the fraction "
    "with I ⊆ Y ⊆ O; inner precision |I ∩ Y| / |I| (over the images with I ≠ ∅); outer recall |O ∩ Y| / |Y|; width |O \\ I| / |Y| "
    "(bold: the narrowest of the α block among the rows of the same guarantee). guarantee (test): band, the fraction of test images "
    "where the band's event holds (I ⊆ Y ⊆ O; with τ < 1: recall(O) ≥ τ and precision(I) ≥ τ), ✓ when ≥ 1 − α − 3 SE; band-risk, the "
    "mean test loss max(FNR(O), |I \\ Y| / |Y|), ✓ when ≤ α + 3 SE — both from the loss curves at λ̂, ± SE over the splits."
)
#: The volume-interval table's note.
NOTE_VOLUME = (
    "Per test image an interval for the structure's volume, in {unit}: direct, split conformal on the volume itself (the score of "
    "segcp calibrate --guarantee band, fitted on each split's calibration images; the same for every row); [vol(I), vol(O)] of each "
    "two-sided row (valid by containment whenever I ⊆ Y ⊆ O). coverage: mean ± std over splits of the fraction of test images whose true "
    "volume lies in the interval (✓ when ≥ 1 − α − 3 SE, SE = std / √splits; band-risk rows carry no probability guarantee for it); "
    "median width: mean ± std over splits of the per-split median width."
)


def _guarantee_cell(s: Mapping[str, Any], guarantee: str, alpha: float, loss: Any = None, se: Any = None) -> Cell:
    """The guarantee of a two-sided row at test: 1 − mean loss (band) or the mean loss (band-risk), ± SE, ✓/⚠
    (the row's test ``risk``, as a controlled-loss row's)."""
    loss, se = (s.get("risk"), s.get("risk_se")) if loss is None else (loss, se)
    if not _finite(loss):
        return Cell("–")
    ok = loss <= alpha + 3 * (se if _finite(se) else 0.0)
    v, what = (1.0 - loss, "coverage of the band's event") if guarantee == "band" else (loss, "risk")
    text = f"{v:.3f} ± {se:.3f}" if _finite(se) else f"{v:.3f}"
    return Cell(f"{text} {'✓' if ok else '⚠'}", title=f"{what}; ✓ when the mean loss ≤ α + 3 SE")


def band_table(
    caption: str,
    summary: Sequence[Mapping[str, Any]],
    alphas: Sequence[float],
    guarantees: Mapping[str, str],
    validity: Mapping[tuple[str, float], Any] | None = None,
    validity_splits: int = 0,
) -> Table:
    """The two-sided rows (``summary``: :func:`segcp.report.summaries.summarize` of their records with
    ``BAND_SPLIT`` and ``loss``) at every α; ``guarantees``: row → band or band-risk; ``validity``: the same
    guarantee over many splits from the loss curves."""
    val = [f"guarantee, {validity_splits} splits"] if validity is not None else []
    header = ["method", "guarantee", "α", "λ̂", "joint coverage I ⊆ Y ⊆ O", "inner precision", "outer recall", "width |O \\ I| / |Y|"]
    header += ["guarantee (test) ± SE", *val]
    rows: list[list[Cell | str]] = []
    for a in alphas:
        block = [s for s in summary if s["alpha"] == a]
        best = {
            g: min((round(float(s["band_width"]), 3) for s in block if guarantees[s["method"]] == g and _finite(s.get("band_width"))), default=None)
            for g in set(guarantees.values())
        }
        for s in block:
            g = guarantees[s["method"]]
            name = s["method"] + (f" (infeasible in {s['infeasible']}/{s['splits']} splits)" if s["infeasible"] else "")
            bold = _finite(s.get("band_width")) and round(float(s["band_width"]), 3) == best[g]
            cells: list[Cell | str] = [Cell(name), g, f"{a:g}", _ms(s, "lambda"), _ms(s, "band_holds"), _ms(s, "inner_precision")]
            cells += [_ms(s, "outer_recall"), Cell(_ms(s, "band_width", 2), bold), _guarantee_cell(s, g, a)]
            if validity is not None:
                v = validity.get((s["method"], a)) or {}
                cells.append(_guarantee_cell(s, g, a, v.get("risk"), v.get("risk_se")))
            rows.append(cells)
    return Table(caption, header, rows, NOTE_BAND)


def volume_table(caption: str, summary: Sequence[Mapping[str, Any]], alphas: Sequence[float], guarantees: Mapping[str, str], unit: str) -> Table:
    """The volume intervals of the two-sided rows at every α: the direct interval (once per α: it does not
    depend on the row) and each row's [vol(I), vol(O)] — coverage and median width."""

    def cells(s: Mapping[str, Any], k: str, a: float, checked: bool) -> list[Cell | str]:
        m, sd, n = float(s.get(f"volume_{k}_covered", math.nan)), float(s.get(f"volume_{k}_covered_std", math.nan)), s["splits"] - s["infeasible"]
        se = sd / math.sqrt(n) if math.isfinite(sd) and n > 0 else 0.0
        mark = (" ✓" if m >= 1 - a - 3 * se else " ⚠") if checked and math.isfinite(m) else ""
        return [Cell(_ms(s, f"volume_{k}_covered") + mark), _ms(s, f"volume_{k}_width_median", 1), _ms(s, f"volume_{k}_width", 1)]

    rows: list[list[Cell | str]] = []
    for a in alphas:
        block = [s for s in summary if s["alpha"] == a]
        if block:
            rows.append(["direct (split conformal on the volume)", "–", f"{a:g}", *cells(block[0], "direct", a, True)])
        for s in block:
            g = guarantees[s["method"]]
            rows.append(["[vol(I), vol(O)]", s["method"], f"{a:g}", *cells(s, "band", a, g == "band")])
    header = ["interval", "two-sided row", "α", "coverage", f"median width ({unit})", f"mean width ({unit})"]
    return Table(caption, header, rows, NOTE_VOLUME.format(unit=unit))
