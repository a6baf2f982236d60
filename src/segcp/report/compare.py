"""`segcp compare`'s report folder: ``results.json``, ``report.md`` (the tables of every report) and ``summary.png``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from segcp.io import atomic_dir, write_json, write_text
from segcp.report.figures import summary_figure
from segcp.report.tables import NOTE_LOSS, band_table, chosen_note, empty_truth_table, results_table, volume_table

__all__ = ["REPORT_FILES", "markdown_summary", "write_report"]

REPORT_FILES = ("results.json", "report.md", "summary.png")


def markdown_summary(result: dict[str, Any]) -> str:
    """The comparison's tables in Markdown (and the sets on images without the structure, when any; the two-sided
    rows' tables when any)."""
    summary, model, band = result["summary"], result["model"], result.get("band_guarantees", {})
    baseline = next((m["label"] for m in result["methods"] if m["label"] not in band), None)
    parts = [results_table("Sets at every α", summary, model, result["alphas"], result.get("units", "pixels"), baseline=baseline).markdown()]
    if band:
        unit = next((r["volume_unit"] for r in result["splits"] if r.get("volume_unit")), "voxels")
        parts.append(band_table("Two-sided sets at every α", result["band_summary"], result["alphas"], band).markdown())
        parts.append(volume_table("Volume intervals at every α", result["band_summary"], result["alphas"], band, unit).markdown())
    if result.get("n_empty_truth"):
        caption = f"Images without the structure ({result['n_empty_truth']} of {result['n_images']} in the pool)"
        parts.append(empty_truth_table(caption, summary, model).markdown())
    note = chosen_note(summary)
    return "\n".join(parts + ([note + "\n"] if note else []))


def write_report(out: str | os.PathLike[str], result: dict[str, Any], title: str, notes: str = "") -> Path:
    """Write ``results.json``, ``report.md`` and ``summary.png`` into ``out``, all or none (other files kept)."""
    out = Path(out)
    baseline = result["methods"][0]["label"] if result["methods"] else "–"
    with atomic_dir(out, existing="merge", expect=REPORT_FILES) as tmp:
        write_json(tmp / "results.json", result)
        (tmp / "summary.png").write_bytes(summary_figure(result["summary"], result["alphas"]))
        write_text(
            tmp / "report.md",
            (
                f"# {title}\n\n{notes}\n\n"
                f"{result['n_images']} images in {result['n_groups']} groups; {result['n_splits']} random "
                f"calibration/test splits with {result['n_cal']} calibration images (whole groups), seed "
                f"{result['seed']}. Mean ± std over splits of the per-split mean over test images. test FNR ± SE: the "
                "guarantee holds when FNR ≤ α + 3·SE (⚠ marks a violation). Win: fraction of splits in which "
                f"the row's Dice is higher / HD95 lower than the baseline row's ({baseline}) at the same α. Missed: "
                "fraction of test images with the structure whose set is empty (HD95 and ASSD are undefined "
                "there and left out of their means and win rates). Bold: best of the α block. Splits where "
                'no λ satisfied the bound ("infeasible", e.g. Consema when the model predicts nothing on '
                "too many calibration images) are excluded from the means; the FNR check of such a row is "
                "then conditional on feasibility and is not the marginal guarantee."
                + (" " + NOTE_LOSS if any("controlled" in s for s in result["summary"]) else "")
                + "\n\n"
                + markdown_summary(result)
                + "\n![summary](summary.png)\n"
            ),
        )
    return out
