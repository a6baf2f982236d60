"""`segcp demo`: the whole job on built-in synthetic phantoms, no data needed.

Calibrates every demo method at α ∈ {0.2, 0.1, 0.05} on half of the synthetic subjects,
evaluates the sets on the other half, checks the guarantee over many random splits, prints
a table and (with ``--out``) writes ``results.json``, ``report.md`` and ``report.png``. Then
the sets-of-segmentations families (CONSIGN, pixel-wise APS) on made-up sampled outputs.
The data is SYNTHETIC (``segcp.synthetic``): the numbers show the mechanics, not clinical
performance. Every row goes through the same estimator (:class:`ConformalSegmenter`).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from segcp._version import __version__
from segcp.cases import Case
from segcp.conformal import ConformalSegmenter
from segcp.data.splits import split_fraction
from segcp.errors import SegcpError
from segcp.io import atomic_dir, atomic_path, write_json, write_text
from segcp.io.writers import check_dir_target
from segcp.metrics import METRICS, aggregate, draw_metrics, evaluate_set
from segcp.progress import track
from segcp.report import markdown_table, rich_table
from segcp.specs import MethodSpec

__all__ = ["ALPHAS", "DEMO_METHODS", "MC_METHODS", "run_demo"]

ALPHAS = (0.2, 0.1, 0.05)
N_VALIDITY_SPLITS = 200

#: Pixel-set rows of the demo table.
DEMO_METHODS: list[MethodSpec] = [
    MethodSpec("Standard CRC", "threshold"),
    MethodSpec("Consema (morph)", "morph", {"se": "cross"}),
    # RW-CP with the weight-free encoder (no downloads, no torch; features kept in memory only)
    MethodSpec("RW-CP (fallback features)", "rwcp", {"encoder": "fallback", "cache": False}),
]

#: Sets-of-segmentations rows (β = 0.8: at 0.9 some of these truths are not of the form
#: argmax(μ + Σ c_k u_k) at any c (4 of 30), more than α = 0.1 tolerates with n = 30, so
#: CONSIGN could not be calibrated — the same limit as on real data, docs/consign.md).
MC_METHODS: list[MethodSpec] = [
    MethodSpec("CONSIGN (K=5)", "consign", {"K": 5, "beta": 0.8}),
    MethodSpec("pixel-wise APS", "aps", {"beta": 0.8}),
]
DEMO_FILES = ("results.json", "report.md", "report.png")
MC_ALPHA = 0.1
MC_IMAGES = 30
MC_DRAWS = 100
MC_COLUMNS = ["method", "alpha", "lambda", "coverage", "SEC@100", "Chao1@100", "|corr|", "seconds"]
MC_TITLE = (
    "Sets of segmentations, SYNTHETIC MC-dropout-like samples (LV vs background, beta = 0.8, "
    "first 30 calibration / 30 test images): P(truth in set up to beta) >= 1 - alpha"
)


def _validity(cs: ConformalSegmenter, curves: Any, groups: list[str], alpha: float, seed: int) -> dict[str, float]:
    """Mean test FNR over many random group splits, and its standard error."""
    rng = np.random.default_rng(seed + 1)
    est = ConformalSegmenter(cs.method_, alpha)
    means = []
    for _ in range(N_VALIDITY_SPLITS):
        cal, test = split_fraction(groups, 0.5, rng)
        lam = est.calibrate_curves(curves.take(cal)).lambda_
        means.append(float(curves.evaluate(lam)[test].mean()))
    m = np.asarray(means)
    return {"splits": N_VALIDITY_SPLITS, "mean_test_fnr": float(m.mean()), "se": float(m.std(ddof=1) / math.sqrt(m.size))}


def _figure(path: Path, cases: list[Case], sets: dict[float, dict[str, np.ndarray]], method_label: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {0.2: "#1b9e77", 0.1: "#d95f02", 0.05: "#7570b3"}
    fig, axes = plt.subplots(2, len(cases), figsize=(3.2 * len(cases), 6.4), squeeze=False)
    for j, c in enumerate(cases):
        ax = axes[0, j]
        ax.imshow(c.image, cmap="gray")
        ax.contour(c.mask, levels=[0.5], colors="yellow", linewidths=1.0)
        for a, col in colours.items():
            ax.contour(sets[a][c.id], levels=[0.5], colors=col, linewidths=1.0)
        ax.set_title(f"{c.id}: truth (yellow), sets", fontsize=8)
        ax.axis("off")
        ax = axes[1, j]
        ax.imshow(c.probs, cmap="magma", vmin=0, vmax=1)
        ax.contour(c.mask, levels=[0.5], colors="cyan", linewidths=0.8)
        ax.set_title("model probability, truth (cyan)", fontsize=8)
        ax.axis("off")
    handles = [plt.Line2D([], [], color=col, label=f"{method_label}, α={a}") for a, col in colours.items()]
    fig.legend(handles=handles, loc="lower center", ncol=3, fontsize=8)
    fig.suptitle("SYNTHETIC phantoms (segcp demo) — not real data", fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _sets_of_segmentations(phantoms: list[Any], cal: np.ndarray, test: np.ndarray, seed: int) -> list[dict[str, Any]]:
    """CONSIGN and APS rows: calibrate on the first calibration images, draw on the first test ones."""
    from segcp.synthetic import phantom_samples

    cal_i, test_i = list(cal)[:MC_IMAGES], list(test)[:MC_IMAGES]
    rng = np.random.default_rng((seed, 6))
    cases = {
        i: Case(phantoms[i].id, samples=phantom_samples(phantoms[i].probs, rng), label_map=(phantoms[i].label == 3).astype(np.int64))
        for i in [*cal_i, *test_i]
    }
    rows = []
    for spec in MC_METHODS:
        t0 = time.perf_counter()
        cs = spec.estimator(MC_ALPHA)
        prepared = dict(zip(cases, cs.prepare(cases.values())))
        cs.calibrate([prepared[i] for i in cal_i])
        fam = cs.method_
        per = []
        for k, i in enumerate(test_i):
            item = prepared[i]
            draws = cs.predict(item).sample(MC_DRAWS, np.random.default_rng((seed, k)))
            per.append({"covered": float(fam.score(item) <= cs.lambda_)} | draw_metrics(draws, item.case.label_map, float(fam.beta), 2))
        m = {key: float(np.nanmean([r[key] for r in per])) for key in per[0]}
        rows.append({
            "method": spec.label, "alpha": MC_ALPHA, "lambda": cs.lambda_, "coverage": m["covered"], "SEC@100": m["sec"],
            "Chao1@100": m["chao"], "|corr|": m["correlation"], "seconds": time.perf_counter() - t0,
        })
    return rows


def run_demo(
    out: str | os.PathLike[str] | None = None,
    n: int = 200,
    seed: int = 0,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run the demo; returns the results dict (also written to ``out/results.json``)."""
    from segcp.synthetic import make_phantoms

    if n < 2 * 40:
        raise SegcpError(f"--n {n}: the demo needs at least 80 images (40 calibration images for alpha=0.05)")
    if out is not None:
        check_dir_target(Path(out), "merge", DEMO_FILES)
    t0 = time.perf_counter()
    print("segcp demo: SYNTHETIC phantom data (built-in, not real patients); LV-like structure, model-like probabilities")
    phantoms = make_phantoms(n=n, seed=seed)
    cases = [Case(p.id, p.probs, mask=p.label == 3, image=p.image, spacing=p.spacing) for p in phantoms]
    groups = [p.group for p in phantoms]
    cal, test = split_fraction(groups, 0.5, np.random.default_rng(seed))
    cal_cases, test_cases = [cases[i] for i in cal], [cases[i] for i in test]

    rows: list[dict[str, Any]] = []
    per_image: dict[str, dict[str, Any]] = {}
    model_metrics = {c.id: evaluate_set(c.model_mask, c.mask, c.model_mask, c.spacing) for c in test_cases}
    summary = aggregate(model_metrics)
    rows.append({"method": "model (p >= 0.5)", "alpha": None, "lambda": None, **summary["mean"]})
    per_image["model"] = model_metrics
    figure_sets: dict[float, dict[str, np.ndarray]] = {}
    for spec in track(DEMO_METHODS, "calibrating and evaluating", show_progress):
        cs = spec.estimator(ALPHAS)
        prepared = cs.prepare(cases)  # score maps once, for every α and every split
        curves = cs.curves(prepared)
        cs.calibrate_curves(curves.take(cal))
        for a in ALPHAS:
            sets = {prepared[i].case.id: s for i, s in zip(test, cs.predict([prepared[i] for i in test], alpha=a))}
            metrics = {c.id: evaluate_set(sets[c.id], c.mask, c.model_mask, c.spacing) for c in test_cases}
            summary = aggregate(metrics)
            validity = _validity(cs.at(a), curves, groups, a, seed)
            rows.append(
                {
                    "method": spec.label,
                    "alpha": a,
                    "lambda": cs.lambdas_[a],
                    **summary["mean"],
                    "FNR, 200 splits": validity["mean_test_fnr"],
                    "validity": validity,
                    "undefined": summary["undefined"],
                }
            )
            per_image[f"{spec.label} alpha={a}"] = metrics
            if spec is DEMO_METHODS[0]:
                figure_sets[a] = sets

    columns = ["method", "alpha", "lambda", *METRICS, "FNR, 200 splits"]
    rich_table(rows, columns, title=f"Test metrics: {len(cal_cases)} calibration / {len(test_cases)} test synthetic images (distances in mm)")
    for r in rows[1:]:
        v = r["validity"]
        ok = v["mean_test_fnr"] <= r["alpha"] + 3 * v["se"]
        print(
            f"  guarantee check {r['method']} alpha={r['alpha']}: mean test FNR over {v['splits']} random splits "
            f"= {v['mean_test_fnr']:.4f} (se {v['se']:.4f}) {'<=' if ok else '>'} alpha {'OK' if ok else 'VIOLATED'}"
        )
    mc_rows = _sets_of_segmentations(phantoms, cal, test, seed)
    rich_table(mc_rows, MC_COLUMNS, title=MC_TITLE)
    elapsed = time.perf_counter() - t0
    result = {
        "segcp_version": __version__,
        "data": "SYNTHETIC phantoms from segcp.synthetic (not real patients)",
        "seed": seed,
        "n_calibration": len(cal_cases),
        "n_test": len(test_cases),
        "distance_units": "mm",
        "rows": rows,
        "multiclass_rows": mc_rows,
        "per_image": per_image,
        "seconds": elapsed,
    }
    if out is not None:
        with atomic_dir(Path(out), existing="merge", expect=DEMO_FILES) as tmp:
            _write_outputs(tmp, result, columns, test_cases, figure_sets)
        out = Path(out)
        print(f"wrote {out / 'results.json'}, {out / 'report.md'}, {out / 'report.png'}")
    print(f"done in {elapsed:.1f} s")
    return result


def _write_outputs(out: Path, result: dict[str, Any], columns: list[str], test_cases: list[Case],
                   figure_sets: dict[float, dict[str, np.ndarray]]) -> None:
    """results.json, report.md and report.png of the demo, into ``out``."""
    write_json(out / "results.json", result)
    md = (
        "# segcp demo — SYNTHETIC phantoms\n\n"
        "Built-in synthetic short-axis-heart phantoms with model-like probability maps "
        "(segcp.synthetic): the numbers show the mechanics of the guarantee, not clinical performance.\n\n"
        f"{result['n_calibration']} calibration / {result['n_test']} test images, split by subject; "
        "metrics are means over test images (distances in mm); the last column is the mean test FNR "
        f"over {N_VALIDITY_SPLITS} random calibration/test splits.\n\n"
        + markdown_table(result["rows"], columns)
        + f"\n## {MC_TITLE}\n\n" + markdown_table(result["multiclass_rows"], MC_COLUMNS)
        + "\n![example sets](report.png)\n"
    )
    write_text(out / "report.md", md)
    _figure(out / "report.png", test_cases[:4], figure_sets, DEMO_METHODS[0].label)
