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
from segcp.engine.splits import random_cal_test_splits
from segcp.errors import SegcpError
from segcp.io import DataDir, atomic_dir, atomic_path, check_output, read_json, write_json, write_text
from segcp.io.datadir import data_home, data_inputs, describe_data
from segcp.io.writers import check_dir_target
from segcp.jobs import Job, holds_label, map_ids, mapped_executor, worker_family
from segcp.parallel import Executor
from segcp.metrics import METRICS, evaluate_set
from segcp.progress import track
from segcp.specs import MethodSpec, TunedSpec
from segcp.tuning import candidate_maps, select

__all__ = ["MethodSpec", "TunedSpec", "compare_dir", "load_groups", "load_labelled_dir", "markdown_summary", "mean_std_text", "run_comparison", "run_comparison_mapped", "summarize", "write_report"]


def load_groups(data: str | os.PathLike[str], ids: Sequence[str]) -> tuple[list[str], str]:
    """Exchangeability groups of the ids of a data directory, and where they came from.

    ``segcp_export.json`` (written by ``segcp.harness.datasets`` exports and ``segcp infer``) or
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


#: What a split records besides the per-image metrics' means (:data:`segcp.metrics.METRICS`):
#: where the structure is present, the fraction of images whose set is empty (HD95 and ASSD
#: are undefined there and left out of their means, so a method that misses images can look
#: better on HD95); where it is absent (empty masks, e.g. the basal and apical slices of a
#: whole ACDC stack), the fraction of images whose set is not empty and its mean area.
EXTRAS: dict[str, str] = {
    "missed": "fraction of test images with a structure whose set is empty (HD95/ASSD undefined, left out of their means)",
    "empty_hit": "fraction of test images without the structure whose set is not empty",
    "empty_fp": "mean set area (pixels) on test images without the structure (false-positive area)",
}


def _split_means(per: Sequence[dict[str, float]], truth_sizes: Sequence[int]) -> dict[str, float]:
    """Means over one split's test images: every metric of :data:`METRICS` and the :data:`EXTRAS`."""
    row = {m: _nanmean([p[m] for p in per]) for m in METRICS}
    present = [p for p, n in zip(per, truth_sizes) if n > 0]
    absent = [p for p, n in zip(per, truth_sizes) if n == 0]
    row["missed"] = _nanmean([float(p["set_size"] == 0) for p in present])
    row["empty_hit"] = _nanmean([float(p["set_size"] > 0) for p in absent])
    row["empty_fp"] = _nanmean([p["set_size"] for p in absent])
    return row


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
    truth_sizes = [int(np.count_nonzero(c.mask)) for c in cases]
    model_rows: list[dict[str, float]] = []
    for cal, test in splits:
        model_rows.append(
            _split_means(
                [evaluate_set(cases[i].model_mask, cases[i].mask, cases[i].model_mask, cases[i].spacing) for i in test],
                [truth_sizes[i] for i in test],
            )
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
                cv_alpha = table[0]["alpha"]
                chosen = cands[k].label
                if not scored:  # no candidate could be scored: the first is used, and the record says so
                    chosen += " (fallback: no fold feasible)"
                elif cv_alpha != a:  # folds too small for α (CRC needs n ≥ 1/α − 1): CV at the smallest feasible level
                    chosen += f" (CV at α = {cv_alpha:.3g})"
                base = base | {"chosen": chosen, "cv": [t["value"] for t in table], "cv_alpha": cv_alpha}
            if (s, k) not in cal_curves:
                cal_curves[(s, k)] = all_curves[k].take(cal)
            lam = _split_lambda(estimators[k].set_params(alpha=a), cal_curves[(s, k)])
            if isinstance(lam, str):  # e.g. sets that never cover: no valid λ on this split
                records.append(_infeasible(base, lam))
                continue
            per = [evaluate_set(all_scores[k][i] <= lam, cases[i].mask, cases[i].model_mask, cases[i].spacing) for i in test]
            records.append(base | {"lambda": lam} | _split_means(per, [truth_sizes[i] for i in test]))
    return _comparison(specs, alphas, n_cal, splits, seed, groups, truth_sizes, model_rows, records)


def _split_lambda(cs: Any, curves: LossCurves) -> float | str:
    """λ̂ of a split's calibration curves, or the reason none exists."""
    try:
        return float(cs.calibrate_curves(curves).lambda_)
    except SegcpError as exc:
        return str(exc)


def _infeasible(base: dict[str, Any], reason: str) -> dict[str, Any]:
    return base | {"lambda": float("nan"), "infeasible": reason} | {m: float("nan") for m in (*METRICS, *EXTRAS)}


def _comparison(
    specs: Sequence[MethodSpec | TunedSpec], alphas: Sequence[float], n_cal: int, splits: Sequence[Any], seed: int,
    groups: Sequence[str], truth_sizes: Sequence[int], model_rows: Sequence[dict[str, float]], records: list[dict[str, Any]],
) -> dict[str, Any]:
    return {
        "segcp_version": __version__,
        "methods": [s.to_dict() for s in specs],
        "alphas": list(alphas),
        "n_cal": n_cal,
        "n_splits": len(splits),
        "seed": seed,
        "n_images": len(groups),
        "n_groups": len(set(groups)),
        "n_empty_truth": sum(n == 0 for n in truth_sizes),
        "model": {m: _nanmean([r[m] for r in model_rows]) for m in (*METRICS, *EXTRAS)},
        "splits": records,
        "summary": summarize(records, baseline=specs[0].label if specs else None),
    }


def _spec_maps(specs: Sequence[MethodSpec], case: Case) -> list[tuple[Any, Any]]:
    """Per spec: (its family, the case prepared by it) — as :func:`segcp.tuning.candidate_maps` does."""
    out = []
    for spec in specs:
        cs = spec.estimator().set_params(curve_form="exact")
        cs.set_params(method=worker_family(cs.family), method_params=None)  # run-time threads of this worker
        out.append((cs, cs.prepare([case])[0]))
    return out


def _compare_curves_chunk(task: tuple[Job, list[MethodSpec], list[str]]) -> list[tuple[list[LossCurves], dict[str, float], bool, int]]:
    """Worker, first pass: per case, its loss curve for every spec, the model's own metrics,
    whether its mask holds the label, and the size of its truth (pixels)."""
    job, specs, ids = task
    reader = job.reader()
    out = []
    for ident in ids:
        case = reader.read(ident)
        curves = [cs.curves([item]) for cs, item in _spec_maps(specs, case)]
        model = evaluate_set(case.model_mask, case.mask, case.model_mask, case.spacing)
        out.append((curves, model, holds_label(case), int(np.count_nonzero(case.mask))))
    return out


def _compare_sets_chunk(task: tuple[Job, list[MethodSpec], list[tuple[str, list[list[float]]]]]) -> list[list[list[dict[str, float]]]]:
    """Worker, second pass: per case and spec, the metrics of its set at each λ̂ it is tested at."""
    job, specs, items = task
    reader = job.reader()
    out = []
    for ident, lams in items:
        case = reader.read(ident)
        row = []
        for (cs, item), spec_lams in zip(_spec_maps(specs, case), lams):
            scores = cs.family.scores(item) if spec_lams else None
            row.append([evaluate_set(scores <= lam, case.mask, case.model_mask, case.spacing) for lam in spec_lams])
        out.append(row)
    return out


def run_comparison_mapped(
    reader: Any,
    groups: Sequence[str],
    specs: Sequence[MethodSpec | TunedSpec],
    executor: Executor,
    *,
    label: int | None = None,
    alphas: Sequence[float] = (0.2, 0.1, 0.05),
    n_cal: int = 20,
    n_splits: int = 20,
    seed: int = 0,
    show_progress: bool = True,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """:func:`run_comparison` with the per-image work on ``executor`` (a Dask cluster).

    Tasks carry the data directory's paths and the specs, never arrays. A first pass reads
    every case and returns only its loss curves (and the model's own metrics); the client
    calibrates every split and α on them; a second pass reads the cases again and returns the
    metrics of each case's set at the λ̂ of every split it is a test image of. The client
    never holds a score map, and the result is the same as :func:`run_comparison`'s, bit for
    bit. Tuned rows (``KEY=V1|V2``) choose per split on score maps and are not supported here.
    """
    if any(isinstance(s, TunedSpec) for s in specs):
        raise SegcpError("compare: tuned settings (KEY=V1|V2) are chosen in one process; run them without --workers/--scheduler")
    if len(reader.ids) != len(groups):
        raise SegcpError(f"{len(reader.ids)} cases but {len(groups)} group labels")
    alphas = [check_alpha(a) for a in alphas]
    splits = list(random_cal_test_splits(list(groups), n_cal, n_splits, seed))
    job = Job(reader.dd.spec, reader.family, label, reader.channels)
    first = map_ids(executor, _compare_curves_chunk, (job, list(specs)), reader.ids, "curves", show_progress, chunk_size)
    reader.label_seen = any(f[2] for f in first)
    reader.require_label_seen()
    model = [f[1] for f in first]
    truth_sizes = [f[3] for f in first]
    curves = [LossCurves.concat([f[0][k] for f in first]) for k in range(len(specs))]
    del first
    model_rows = [_split_means([model[i] for i in test], [truth_sizes[i] for i in test]) for _, test in splits]
    estimators = [s.estimator() for s in specs]
    lambdas: dict[tuple[int, int, float], float | str] = {}
    for k in range(len(specs)):
        for s, (cal, _) in enumerate(splits):
            sub = curves[k].take(cal)
            for a in alphas:
                lambdas[(k, s, a)] = _split_lambda(estimators[k].set_params(alpha=a), sub)
    wanted: list[list[set[float]]] = [[set() for _ in specs] for _ in reader.ids]  # per case and spec: the λ̂ it is tested at
    for (k, s, _), lam in lambdas.items():
        if not isinstance(lam, str):
            for i in splits[s][1]:
                wanted[i][k].add(lam)
    needs = [[sorted(x) for x in row] for row in wanted]
    second = map_ids(executor, _compare_sets_chunk, (job, list(specs)), list(zip(reader.ids, needs)), "sets", show_progress, chunk_size)
    measured = {(k, i, lam): m for i, row in enumerate(second) for k, ms in enumerate(row) for lam, m in zip(needs[i][k], ms)}
    records: list[dict[str, Any]] = []
    for k, spec in enumerate(specs):
        for s, a in [(s, a) for s in range(len(splits)) for a in alphas]:
            cal, test = splits[s]
            base = {"method": spec.label, "alpha": a, "split": s, "n_cal": len(cal), "n_test": len(test)}
            lam = lambdas[(k, s, a)]
            if isinstance(lam, str):
                records.append(_infeasible(base, lam))
                continue
            records.append(base | {"lambda": lam} | _split_means([measured[(k, i, lam)] for i in test], [truth_sizes[i] for i in test]))
    return _comparison(specs, alphas, n_cal, splits, seed, groups, truth_sizes, model_rows, records)


def summarize(records: Sequence[dict[str, Any]], baseline: str | None = None) -> list[dict[str, Any]]:
    """Mean ± std over splits per (method, α); win rates against ``baseline``.

    Besides the metrics, ``missed``, ``empty_hit`` and ``empty_fp`` (:data:`EXTRAS`).
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
        for m in ["lambda", *METRICS, *EXTRAS]:
            v = np.array([r.get(m, np.nan) for r in rows], dtype=float)
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


def mean_std_text(row: dict[str, Any], key: str, digits: int = 3) -> str:
    """``row[key] ± row[key_std]`` of a summary row as table text (``–`` when undefined)."""
    v, s = row.get(key), row.get(f"{key}_std")
    if v is None or not np.isfinite(v):
        return "–"
    return f"{v:.{digits}f} ± {s:.{digits}f}" if s is not None and np.isfinite(s) else f"{v:.{digits}f}"


def _pct(row: dict[str, Any], key: str) -> str:
    v = row.get(key)
    return "–" if v is None or not np.isfinite(v) else f"{100 * v:.1f} %"


def markdown_summary(result: dict[str, Any]) -> str:
    """The summary as a Markdown table (mean ± std over splits).

    ``missed``: the fraction of test images with a structure whose set is empty (their HD95 and
    ASSD are undefined and left out of the means). When the pool has images without the
    structure, a second table gives the sets on them (fraction not empty, mean area).
    """
    head = "| method | α | λ̂ | coverage | FNR (± SE) | stretch | Dice | ASSD | HD95 | missed | Dice win | HD95 win |"
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    m = result["model"]
    lines.append(
        f"| model (p ≥ 0.5) | – | – | {m['coverage']:.3f} | {m['fnr']:.3f} | 1.000 | {m['dice']:.3f} | {m['assd']:.2f} | "
        f"{m['hd95']:.2f} | {_pct(m, 'missed')} | | |"
    )
    for r in result["summary"]:
        win = lambda k: f"{100 * r[k]:.0f} %" if k in r else ""  # noqa: E731
        lines.append(
            f"| {r['method']} | {r['alpha']:g} | {mean_std_text(r, 'lambda')} | {mean_std_text(r, 'coverage')} | "
            f"{r['fnr']:.3f} ± {r['fnr_se']:.3f}{'' if r['valid'] in (True, None) else ' ⚠'} | {mean_std_text(r, 'stretch', 2)} | "
            f"{mean_std_text(r, 'dice')} | {mean_std_text(r, 'assd', 2)} | {mean_std_text(r, 'hd95', 2)} | {_pct(r, 'missed')} | {win('dice_win')} | {win('hd95_win')} |"
            + (f" infeasible in {r['infeasible']}/{r['splits']} splits" if r["infeasible"] else "")
        )
    if result.get("n_empty_truth"):
        lines += [
            "",
            (
                f"Images without the structure ({result['n_empty_truth']} of {result['n_images']} in the pool; "
                "mean over splits of the test images' values): fraction whose set is not empty, and the "
                "set's mean area in pixels (false positives)."
            ),
            "",
            "| method | α | set not empty | false-positive area (px) |",
            "|---|---|---|---|",
            f"| model (p ≥ 0.5) | – | {_pct(m, 'empty_hit')} | {m['empty_fp']:.1f} |",
        ]
        for r in result["summary"]:
            lines.append(f"| {r['method']} | {r['alpha']:g} | {_pct(r, 'empty_hit')} | {mean_std_text(r, 'empty_fp', 1)} |")
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
        "the method beats the first method's Dice (higher) / HD95 (lower) at the same α. Missed: "
        "fraction of test images with the structure whose set is empty (HD95 and ASSD are undefined "
        "there and left out of their means and win rates). Splits where "
        "no λ satisfied the bound (\"infeasible\", e.g. Consema when the model predicts nothing on "
        "too many calibration images) are excluded from the means; the FNR check of such a row is "
        "then conditional on feasibility and is not the marginal guarantee.\n\n"
        + markdown_summary(result)
        + "\n![summary](summary.png)\n"
    )
    write_text(out / "report.md", md)


def _widest_reader(data: str | os.PathLike[str], specs: Sequence[MethodSpec], label: int | None) -> Any:
    """The case reader of the spec that reads the most folders (every spec's inputs)."""
    dd = DataDir(data)
    readers = [dd.reader(c.build(), label=label) for c in specs]
    return max(readers, key=lambda r: len(r.folders))


def load_labelled_dir(
    data: str | os.PathLike[str],
    specs: Sequence[MethodSpec],
    *,
    label: int | None = None,
    show_progress: bool = True,
) -> tuple[list[Case], list[str], str]:
    """(cases, groups, where the groups came from) of a labelled data directory, with every
    input that one of ``specs`` reads (probs/, masks/, and images/ for image-aware families)."""
    reader = _widest_reader(data, specs, label)
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
    executor: Executor | None = None,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """:func:`run_comparison` on a data directory (probs/, masks/, images/ when needed).

    ``executor`` (a Dask cluster): :func:`run_comparison_mapped` — the workers read the files.
    """
    if out is not None:
        check_output(out, data_inputs(data))
        check_dir_target(Path(out), "merge", REPORT_FILES)
    alphas = [check_alpha(a) for a in alphas]
    builds = [c for s in specs for c in (s.candidates if isinstance(s, TunedSpec) else [s])]
    executor, owned = mapped_executor(executor)
    if executor is not None:
        try:
            reader = _widest_reader(data, builds, label)
            groups, source = load_groups(data, reader.ids)
            result = run_comparison_mapped(reader, groups, specs, executor, label=label, alphas=alphas, n_cal=n_cal, n_splits=n_splits,
                                           seed=seed, show_progress=show_progress, chunk_size=chunk_size)
        finally:
            if owned:
                executor.close()
    else:
        cases, groups, source = load_labelled_dir(data, builds, label=label, show_progress=show_progress)
        result = run_comparison(cases, groups, specs, alphas=alphas, n_cal=n_cal, n_splits=n_splits, seed=seed, show_progress=show_progress)
    result["data"] = describe_data(data)
    result["groups_from"] = source
    if out is not None:
        write_report(out, result, title or f"segcp comparison on {Path(describe_data(data)).name}", notes=f"Groups: {source}.")
    return result
