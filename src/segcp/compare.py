"""Method comparison over repeated calibration/test splits (the papers' tables).

Given labelled cases (probabilities, masks, optionally images) and their exchangeability
groups (patients, near-duplicate groups), :func:`run_comparison` draws ``n_splits`` random
calibration/test splits with ``n_cal`` calibration images (whole groups on one side),
calibrates every method at every α on the calibration part and measures its sets on the test
part. Score maps and loss curves are computed once per image and method, so every split and
α reuses them. :func:`write_report` writes ``results.json``, ``report.md`` and figures.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segcp._version import __version__
from segcp.calibration import LossCurves, check_alpha
from segcp.cases import Case
from segcp.data.splits import random_cal_test_splits
from segcp.errors import SegcpError
from segcp.io import DataDir, atomic_dir, atomic_path, check_output, read_json, write_json, write_text
from segcp.io.datadir import data_home, data_inputs, describe_data
from segcp.io.writers import check_dir_target
from segcp.metrics import METRICS, evaluate_set
from segcp.progress import track
from segcp.specs import MethodSpec, TunedSpec
from segcp.tuning import candidate_maps, select

__all__ = ["MethodSpec", "TunedSpec", "compare_dir", "load_groups", "load_labelled_dir", "markdown_summary", "run_comparison", "summarize", "write_report"]


def load_groups(data: str | os.PathLike[str], ids: Sequence[str]) -> tuple[list[str], str]:
    """Exchangeability groups of the ids of a data directory, and where they came from.

    ``segcp_export.json`` (written by ``segcp.data`` exports and ``segcp infer``) or
    ``groups.json`` ({id: group}) in the directory; otherwise every image is its own group
    (valid only if images are exchangeable one by one — say so in reports).
    """
    root = data_home(data)
    for name in ("segcp_export.json", "groups.json"):
        f = root / name
        if f.is_file():
            rec = read_json(f)
            mapping = rec.get("groups", rec) if name == "segcp_export.json" else rec
            missing = [i for i in ids if i not in mapping]
            if missing:
                raise SegcpError(f"{f}: no group for id {missing[0]!r}")
            return [str(mapping[i]) for i in ids], str(f)
    return list(ids), "none (each image its own group)"


def _nanmean(values: Sequence[float]) -> float:
    a = np.asarray(values, dtype=float)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


def run_comparison(
    cases: Sequence[Case],
    groups: Sequence[str],
    specs: Sequence[MethodSpec | TunedSpec],
    *,
    alphas: Sequence[float] = (0.2, 0.1, 0.05),
    n_cal: int = 20,
    n_splits: int = 20,
    seed: int = 0,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Calibrate and evaluate every method at every α over random group splits.

    Returns a dict with ``splits`` (per split, method and α: λ̂ and the mean test metrics)
    and ``summary`` (see :func:`summarize`).

    Each setting's estimator prepares every case once (score maps) and builds every case's
    loss curve once; a split then calibrates on its calibration cases' curves and predicts on
    its test cases. A :class:`segcp.specs.TunedSpec` chooses its setting per split and α by
    group K-fold cross-validation on that split's *calibration* images only
    (:func:`segcp.tuning.select`), then calibrates the chosen setting on the whole calibration
    part; its records say which candidate was chosen (``chosen``).
    """
    if len(cases) != len(groups):
        raise SegcpError(f"{len(cases)} cases but {len(groups)} group labels")
    alphas = [check_alpha(a) for a in alphas]
    splits = list(random_cal_test_splits(list(groups), n_cal, n_splits, seed))
    records: list[dict[str, Any]] = []
    model_rows: list[dict[str, float]] = []
    for cal, test in splits:
        model_rows.append(
            {m: _nanmean([evaluate_set(cases[i].model_mask, cases[i].mask, cases[i].model_mask, cases[i].spacing)[m] for i in test]) for m in METRICS}
        )
    for spec in specs:
        cands = list(spec.candidates) if isinstance(spec, TunedSpec) else [spec]
        all_scores, all_curves, mins = candidate_maps(cands, cases, f"{spec.label}: score maps", show_progress)
        estimators = [c.estimator() for c in cands]
        jobs = [(s, a) for s in range(len(splits)) for a in alphas]
        cal_curves: dict[tuple[int, int], LossCurves] = {}  # (split, candidate): curves of the calibration images
        for s, a in track(jobs, f"{spec.label}: splits", show_progress):
            cal, test = splits[s]
            base = {"method": spec.label, "alpha": a, "split": s, "n_cal": len(cal), "n_test": len(test)}
            k = 0
            if isinstance(spec, TunedSpec):
                k, table = select(
                    [[m[i] for i in cal] for m in all_scores],
                    [c.take(cal) for c in all_curves],
                    mins,
                    [cases[i] for i in cal],
                    [groups[i] for i in cal],
                    a,
                    criterion=spec.criterion,
                    folds=spec.folds,
                    seed=spec.seed + s,
                )
                scored = any(math.isfinite(t["value"]) for t in table)
                # no candidate could be scored (e.g. folds too small for α: CRC needs n ≥ 1/α − 1
                # images per training part): the first candidate is used, and the record says so
                chosen = cands[k].label if scored else f"{cands[k].label} (fallback: no fold feasible at this α)"
                base = base | {"chosen": chosen, "cv": [t["value"] for t in table]}
            if (s, k) not in cal_curves:
                cal_curves[(s, k)] = all_curves[k].take(cal)
            cs = estimators[k].set_params(alpha=a)
            try:
                cs.calibrate_curves(cal_curves[(s, k)])
            except SegcpError as exc:  # e.g. sets that never cover: no valid λ on this split
                records.append(base | {"lambda": float("nan"), "infeasible": str(exc)} | {m: float("nan") for m in METRICS})
                continue
            per = [evaluate_set(all_scores[k][i] <= cs.lambda_, cases[i].mask, cases[i].model_mask, cases[i].spacing) for i in test]
            row = {m: _nanmean([p[m] for p in per]) for m in METRICS}
            records.append(base | {"lambda": cs.lambda_} | row)
    return {
        "segcp_version": __version__,
        "methods": [s.to_dict() for s in specs],
        "alphas": list(alphas),
        "n_cal": n_cal,
        "n_splits": len(splits),
        "seed": seed,
        "n_images": len(cases),
        "n_groups": len(set(groups)),
        "model": {m: _nanmean([r[m] for r in model_rows]) for m in METRICS},
        "splits": records,
        "summary": summarize(records, baseline=specs[0].label if specs else None),
    }


def summarize(records: Sequence[dict[str, Any]], baseline: str | None = None) -> list[dict[str, Any]]:
    """Mean ± std over splits per (method, α); win rates against ``baseline``.

    ``fnr_se`` is the standard error of the mean test FNR over splits, so the guarantee check
    is ``fnr <= alpha + 3 * fnr_se``. ``infeasible`` counts splits where no λ satisfied the
    bound (e.g. Consema with empty predictions); they are excluded from the means, and the
    report says how many. ``dice_win`` / ``hd95_win``: fraction of splits where the
    method's Dice is higher / HD95 lower than the baseline's at the same α.
    """
    out = []
    keys = sorted({(r["method"], r["alpha"]) for r in records}, key=lambda k: ([r["method"] for r in records].index(k[0]), -k[1]))
    for method, alpha in keys:
        rows = sorted((r for r in records if r["method"] == method and r["alpha"] == alpha), key=lambda r: r["split"])
        row: dict[str, Any] = {"method": method, "alpha": alpha, "splits": len(rows)}
        row["infeasible"] = sum("infeasible" in r for r in rows)
        chosen = [r["chosen"] for r in rows if "chosen" in r]
        if chosen:
            row["chosen"] = {c: chosen.count(c) for c in dict.fromkeys(chosen)}
        rows = [r for r in rows if "infeasible" not in r]
        for m in ["lambda", *METRICS]:
            v = np.array([r[m] for r in rows], dtype=float)
            v = v[np.isfinite(v)]
            row[m] = float(v.mean()) if v.size else float("nan")
            row[f"{m}_std"] = float(v.std(ddof=1)) if v.size > 1 else float("nan")
        fnrs = np.array([r["fnr"] for r in rows], dtype=float)
        fnrs = fnrs[np.isfinite(fnrs)]
        row["fnr_se"] = float(fnrs.std(ddof=1) / math.sqrt(fnrs.size)) if fnrs.size > 1 else float("nan")
        row["valid"] = bool(row["fnr"] <= alpha + 3 * row["fnr_se"]) if fnrs.size > 1 else None
        if baseline is not None and method != baseline:
            base = {r["split"]: r for r in records if r["method"] == baseline and r["alpha"] == alpha}
            pairs = [(r, base[r["split"]]) for r in rows if r["split"] in base]
            if pairs:
                row["dice_win"] = float(np.mean([r["dice"] > b["dice"] for r, b in pairs]))
                row["hd95_win"] = float(np.mean([r["hd95"] < b["hd95"] for r, b in pairs]))
        out.append(row)
    return out


def _pm(row: dict[str, Any], key: str, digits: int = 3) -> str:
    v, s = row.get(key), row.get(f"{key}_std")
    if v is None or not np.isfinite(v):
        return "–"
    return f"{v:.{digits}f} ± {s:.{digits}f}" if s is not None and np.isfinite(s) else f"{v:.{digits}f}"


def markdown_summary(result: dict[str, Any]) -> str:
    """The summary as a Markdown table (mean ± std over splits)."""
    head = "| method | α | λ̂ | coverage | FNR (± SE) | stretch | Dice | ASSD | HD95 | Dice win | HD95 win |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    m = result["model"]
    lines.append(
        f"| model (p ≥ 0.5) | – | – | {m['coverage']:.3f} | {m['fnr']:.3f} | 1.000 | {m['dice']:.3f} | {m['assd']:.2f} | {m['hd95']:.2f} | | |"
    )
    for r in result["summary"]:
        win = lambda k: f"{100 * r[k]:.0f} %" if k in r else ""  # noqa: E731
        lines.append(
            f"| {r['method']} | {r['alpha']:g} | {_pm(r, 'lambda')} | {_pm(r, 'coverage')} | "
            f"{r['fnr']:.3f} ± {r['fnr_se']:.3f}{'' if r['valid'] in (True, None) else ' ⚠'} | {_pm(r, 'stretch', 2)} | "
            f"{_pm(r, 'dice')} | {_pm(r, 'assd', 2)} | {_pm(r, 'hd95', 2)} | {win('dice_win')} | {win('hd95_win')} |"
            + (f" infeasible in {r['infeasible']}/{r['splits']} splits" if r["infeasible"] else "")
        )
    tuned = [r for r in result["summary"] if r.get("chosen")]
    if tuned:
        lines += ["", "Settings chosen by cross-validation on each split's calibration images (number of splits):", ""]
        for r in tuned:
            lines.append(f"- {r['method']}, α = {r['alpha']:g}: " + ", ".join(f"{k} ({v})" for k, v in r["chosen"].items()))
    return "\n".join(lines) + "\n"


def _figure(path: Path, result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = result["summary"]
    methods = list(dict.fromkeys(r["method"] for r in summary))
    panels = [("dice", "Dice (set vs truth)"), ("hd95", "HD95"), ("stretch", "stretch |C|/|Ŷ|"), ("fnr", "test FNR")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.4))
    for ax, (key, title) in zip(axes, panels):
        for mth in methods:
            rows = sorted((r for r in summary if r["method"] == mth), key=lambda r: r["alpha"])
            x = [r["alpha"] for r in rows]
            y = [r[key] for r in rows]
            e = [r.get(f"{key}_std", 0.0) for r in rows]
            ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=mth)
        if key == "fnr":
            xs = np.array(result["alphas"], dtype=float)
            ax.plot(np.sort(xs), np.sort(xs), "k--", lw=1, label="α")
        ax.set_xlabel("α")
        ax.set_title(title, fontsize=10)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


REPORT_FILES = ("results.json", "report.md", "summary.png")


def write_report(out: str | os.PathLike[str], result: dict[str, Any], title: str, notes: str = "") -> Path:
    """Write ``results.json``, ``report.md`` and ``summary.png`` into ``out``, all or none.

    Other files of ``out`` (e.g. figures of other scripts) are kept; the three are made in a
    temporary sibling folder and moved in together.
    """
    out = Path(out)
    with atomic_dir(out, existing="merge", expect=REPORT_FILES) as tmp:
        _write_report_files(tmp, result, title, notes)
    return out


def _write_report_files(out: Path, result: dict[str, Any], title: str, notes: str) -> None:
    write_json(out / "results.json", result)
    _figure(out / "summary.png", result)
    md = (
        f"# {title}\n\n{notes}\n\n"
        f"{result['n_images']} images in {result['n_groups']} groups; {result['n_splits']} random "
        f"calibration/test splits with {result['n_cal']} calibration images (whole groups), seed "
        f"{result['seed']}. Mean ± std over splits of the per-split mean over test images. FNR ± SE: the "
        "guarantee holds when FNR ≤ α + 3·SE (⚠ marks a violation). Win: fraction of splits in which "
        "the method beats the first method's Dice (higher) / HD95 (lower) at the same α. Splits where "
        "no λ satisfied the bound (\"infeasible\", e.g. Consema when the model predicts nothing on "
        "too many calibration images) are excluded from the means; the FNR check of such a row is "
        "then conditional on feasibility and is not the marginal guarantee.\n\n"
        + markdown_summary(result)
        + "\n![summary](summary.png)\n"
    )
    write_text(out / "report.md", md)


def load_labelled_dir(
    data: str | os.PathLike[str],
    specs: Sequence[MethodSpec],
    *,
    label: int | None = None,
    show_progress: bool = True,
) -> tuple[list[Case], list[str], str]:
    """(cases, groups, where the groups came from) of a labelled data directory, with every
    input that one of ``specs`` reads (probs/, masks/, and images/ for image-aware families)."""
    dd = DataDir(data)
    readers = [dd.reader(c.build(), label=label) for c in specs]
    reader = max(readers, key=lambda r: len(r.folders))  # the one that reads the most folders
    cases = [reader.read(i) for i in track(reader.ids, "loading", show_progress)]
    reader.require_label_seen()
    groups, source = load_groups(data, reader.ids)
    return cases, groups, source


def compare_dir(
    data: str | os.PathLike[str],
    specs: Sequence[MethodSpec],
    *,
    label: int | None = None,
    alphas: Sequence[float] = (0.2, 0.1, 0.05),
    n_cal: int = 20,
    n_splits: int = 20,
    seed: int = 0,
    out: str | os.PathLike[str] | None = None,
    title: str | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """:func:`run_comparison` on a data directory (probs/, masks/, images/ when needed)."""
    if out is not None:
        check_output(out, data_inputs(data))
        check_dir_target(Path(out), "merge", REPORT_FILES)
    alphas = [check_alpha(a) for a in alphas]
    builds = [c for s in specs for c in (s.candidates if isinstance(s, TunedSpec) else [s])]
    cases, groups, source = load_labelled_dir(data, builds, label=label, show_progress=show_progress)
    result = run_comparison(cases, groups, specs, alphas=alphas, n_cal=n_cal, n_splits=n_splits, seed=seed, show_progress=show_progress)
    result["data"] = describe_data(data)
    result["groups_from"] = source
    if out is not None:
        write_report(out, result, title or f"segcp comparison on {Path(describe_data(data)).name}", notes=f"Groups: {source}.")
    return result
