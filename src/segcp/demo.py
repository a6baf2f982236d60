"""`segcp demo`: the whole job on built-in synthetic phantoms, no data needed.

Calibrates every demo method at α ∈ {0.2, 0.1, 0.05} on half of the synthetic subjects,
evaluates the sets on the other half, checks the guarantee over many random splits, prints
a table and (with ``--out``) writes ``results.json``, ``report.md`` and ``report.png``.
The data is SYNTHETIC (``segcp.synthetic``): the numbers show the mechanics, not clinical
performance.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from segcp import __version__
from segcp.calibration import LossCurves
from segcp.compare import MethodSpec
from segcp.conformal import ConformalSegmenter
from segcp.errors import SegcpError
from segcp.io import atomic_path, write_json
from segcp.methods import Case
from segcp.metrics import METRICS, aggregate, evaluate_set
from segcp.report import markdown_table, rich_table

__all__ = ["DemoMethod", "DEMO_METHODS", "ALPHAS", "run_demo", "group_split"]

ALPHAS = (0.2, 0.1, 0.05)
N_VALIDITY_SPLITS = 200


#: A row family of the demo table (display label, method name, parameters, guarantee).
DemoMethod = MethodSpec


#: Methods shown by the demo (later methods append themselves here).
DEMO_METHODS: list[DemoMethod] = [DemoMethod("Standard CRC", "threshold")]
DEMO_METHODS.append(DemoMethod("Consema (morph)", "morph", {"se": "cross"}))
# RW-CP with the weight-free encoder (no downloads, no torch; features kept in memory only)
DEMO_METHODS.append(DemoMethod("RW-CP (fallback features)", "rwcp", {"encoder": "fallback", "cache": False}))


def group_split(groups: list[str], rng: np.random.Generator, frac: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """Indices of a calibration/test split that keeps every group on one side."""
    uniq = np.array(sorted(set(groups)))
    perm = rng.permutation(uniq.size)
    cal_groups = set(uniq[perm[: int(round(frac * uniq.size))]].tolist())
    is_cal = np.array([g in cal_groups for g in groups])
    return np.flatnonzero(is_cal), np.flatnonzero(~is_cal)


def _validity(curves: LossCurves, groups: list[str], alpha: float, lambda_min: float, seed: int) -> dict[str, float]:
    """Mean test FNR over many random group splits, and its standard error."""
    from segcp.calibration import crc_lambda

    rng = np.random.default_rng(seed + 1)
    per_image = [curves[i] for i in range(curves.n)]
    means = []
    for _ in range(N_VALIDITY_SPLITS):
        cal, test = group_split(groups, rng)
        lam = crc_lambda(LossCurves.concat([per_image[i] for i in cal]), alpha, lambda_min=lambda_min).lambda_
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


def run_demo(
    out: str | os.PathLike[str] | None = None,
    n: int = 200,
    seed: int = 0,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Run the demo; returns the results dict (also written to ``out/results.json``)."""
    from segcp.pipeline import progress
    from segcp.synthetic import make_phantoms

    if n < 2 * 40:
        raise SegcpError(f"--n {n}: the demo needs at least 80 images (40 calibration images for alpha=0.05)")
    t0 = time.perf_counter()
    print("segcp demo: SYNTHETIC phantom data (built-in, not real patients); LV-like structure, model-like probabilities")
    phantoms = make_phantoms(n=n, seed=seed)
    cases = [Case(p.id, p.probs, mask=p.label == 3, image=p.image, spacing=p.spacing) for p in phantoms]
    groups = [p.group for p in phantoms]
    cal, test = group_split(groups, np.random.default_rng(seed))
    cal_cases, test_cases = [cases[i] for i in cal], [cases[i] for i in test]

    rows: list[dict[str, Any]] = []
    per_image: dict[str, dict[str, Any]] = {}
    model_metrics = {c.id: evaluate_set(c.model_mask, c.mask, c.model_mask, c.spacing) for c in test_cases}
    summary = aggregate(model_metrics)
    rows.append({"method": "model (p >= 0.5)", "alpha": None, "lambda": None, **summary["mean"]})
    per_image["model"] = model_metrics
    figure_sets: dict[float, dict[str, np.ndarray]] = {}
    jobs = [(dm, a) for dm in DEMO_METHODS for a in ALPHAS]
    curves_of: dict[int, LossCurves] = {}  # per method: every case's curve, computed once for all α
    for dm, a in progress(jobs, "calibrating and evaluating", show_progress):
        cs = ConformalSegmenter(dm.method, alpha=a, guarantee=dm.guarantee, method_params=dm.params)
        if id(dm) not in curves_of:
            curves_of[id(dm)] = cs.curves(cases)
        all_curves = curves_of[id(dm)]
        cs.calibrate_curves(LossCurves.concat([all_curves[i] for i in cal]))
        sets = {c.id: cs.predict(c) for c in test_cases}
        metrics = {c.id: evaluate_set(sets[c.id], c.mask, c.model_mask, c.spacing) for c in test_cases}
        summary = aggregate(metrics)
        validity = _validity(all_curves, groups, a, cs.method_.lambda_min, seed)
        rows.append(
            {
                "method": dm.label,
                "alpha": a,
                "lambda": cs.lambda_,
                **summary["mean"],
                "FNR, 200 splits": validity["mean_test_fnr"],
                "validity": validity,
                "undefined": summary["undefined"],
            }
        )
        per_image[f"{dm.label} alpha={a}"] = metrics
        if dm is DEMO_METHODS[0]:
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
    from segcp.multiclass.demo import COLUMNS as MC_COLUMNS, MC_TITLE, run_multiclass_demo  # CONSIGN, APS (issue 6)

    mc_rows = run_multiclass_demo(phantoms, cal, test, seed=seed)
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
        out = Path(out)
        write_json(out / "results.json", result)
        md = (
            "# segcp demo — SYNTHETIC phantoms\n\n"
            "Built-in synthetic short-axis-heart phantoms with model-like probability maps "
            "(segcp.synthetic): the numbers show the mechanics of the guarantee, not clinical performance.\n\n"
            f"{len(cal_cases)} calibration / {len(test_cases)} test images, split by subject; "
            "metrics are means over test images (distances in mm); the last column is the mean test FNR "
            f"over {N_VALIDITY_SPLITS} random calibration/test splits.\n\n"
            + markdown_table(rows, columns)
            + f"\n## {MC_TITLE}\n\n" + markdown_table(mc_rows, MC_COLUMNS)
            + "\n![example sets](report.png)\n"
        )
        with atomic_path(out / "report.md") as tmp:
            tmp.write_text(md)
        _figure(out / "report.png", test_cases[:4], figure_sets, DEMO_METHODS[0].label)
        print(f"wrote {out / 'results.json'}, {out / 'report.md'}, {out / 'report.png'}")
    print(f"done in {elapsed:.1f} s")
    return result
