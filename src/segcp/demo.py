"""`segcp demo`: ``segcp benchmark`` on built-in SYNTHETIC phantoms, every method, no data needed.

The demo is one benchmark config (:data:`DEMO_CONFIG`): the synthetic task, the three pixel-set
methods (Standard CRC, Consema, RW-CP with the weight-free encoder) at α ∈ {0.2, 0.1, 0.05} over
random subject-level splits, the guarantee checked over 200 more splits, RW-CP's ablations
(calibration size, diffusion steps, k), and the sets-of-segmentations families (CONSIGN K=5,
pixel-wise APS) on made-up sampled outputs. It prints the tables and (with ``--out``) writes the
benchmark's report folder: ``report.html`` (self-contained), ``report.md``, the figures,
``results.json`` and ``results.csv``. The data is SYNTHETIC (``segcp.synthetic``): the numbers
show the mechanics, not clinical performance.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

from segcp.errors import SegcpError
from segcp.report.tables import rich_table

__all__ = ["ALPHAS", "DEMO_CONFIG", "MC_METHODS", "demo_config", "run_demo"]

ALPHAS = (0.2, 0.1, 0.05)
N_VALIDITY_SPLITS = 200
MC_METHODS = ("CONSIGN (K=5)", "pixel-wise APS")

#: The demo's benchmark config ({n}, {seed}, {n_cal} filled in). β = 0.8 for the sets of
#: segmentations: at 0.9 some of these truths are not of the form argmax(μ + Σ c_k u_k) at any c,
#: more than α = 0.1 tolerates with n = 30 (the same limit as on real data, docs/consign.md).
DESCRIPTION = (
    "Built-in synthetic short-axis-heart phantoms with model-like probability maps (segcp.synthetic): the numbers show the "
    "mechanics of the guarantees, not clinical performance. Every method of segcp, through `segcp benchmark`."
)
DEMO_CONFIG = """\
title = "segcp demo — SYNTHETIC phantoms (not real patients)"
description = "{description}"
seed = {seed}
splits = 4
n_cal = {n_cal}
alphas = [0.2, 0.1, 0.05]
curve_alphas = [0.175, 0.15, 0.125, 0.075]
validity_splits = {validity}
methods = [
  "threshold@Standard CRC",
  "morph:se=cross@Consema (morph)",
  "rwcp:encoder=fallback@RW-CP (fallback features)",
  "consign:K=5,beta=0.8@CONSIGN (K=5)",
  "aps:beta=0.8@pixel-wise APS",
]

[[task]]
name = "synthetic"
n = {n}
seed = {seed}

[ablation]
alpha = 0.1
n_cal = [10, 20, {n_cal}]

[ablation.params]
steps = [0, 10]
k = [8, 20]

[sets]
alpha = 0.1
splits = 3
n_cal = 30
max_images = 60
draws = 100
sizes = [5, 10, 20, 50, 100]
draw_images = 4
validity_splits = {validity}

[figures]
overlay_alpha = 0.1
overlay_images = 3
"""


def demo_config(n: int = 200, seed: int = 0) -> str:
    """The demo's benchmark config (TOML text) for ``n`` phantoms."""
    return DEMO_CONFIG.format(n=n, seed=seed, n_cal=n // 2, validity=N_VALIDITY_SPLITS, description=DESCRIPTION)


def _rows(result: dict[str, Any]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The demo's compact rows (model, then method × α; then the sets of segmentations)."""
    task = result["tasks"][0]
    rows: list[dict[str, Any]] = []
    n_cal = next((r["n_cal"] for r in task["model"]), None)
    model = [r for r in task["model"] if r["n_cal"] == n_cal]
    metrics = ("coverage", "fnr", "stretch", "dice", "hd95", "assd")

    def mean(vals: list[Any]) -> float:
        v = [float(x) for x in vals if x is not None and math.isfinite(float(x))]
        return sum(v) / len(v) if v else math.nan

    rows.append({"method": "model (p >= 0.5)", "alpha": None, "lambda": None} | {m: mean([r[m] for r in model]) for m in metrics})
    validity = {(v["method"], v["alpha"]): v for v in task["validity"]}
    for s in result["summary"]:
        v = validity.get((s["method"], s["alpha"]), {})
        rows.append(
            {
                "method": s["method"],
                "alpha": s["alpha"],
                "lambda": s["lambda"],
                **{m: s[m] for m in metrics},
                "FNR, 200 splits": v.get("fnr"),
                "validity": {"splits": v.get("splits"), "mean_test_fnr": v.get("fnr"), "se": v.get("fnr_se"), "infeasible": v.get("infeasible")},
                "splits": s["splits"],
                "infeasible": s["infeasible"],
            }
        )
    mc: list[dict[str, Any]] = []
    for label in MC_METHODS:
        recs = [r for r in task["sets_records"] if r["method"] == label and r.get("lambda") is not None and math.isfinite(r["lambda"])]
        secs = task["seconds_per_image"].get(f"{label} (α=0.1)", math.nan)
        mc.append(
            {
                "method": label,
                "alpha": 0.1,
                "lambda": mean([r["lambda"] for r in recs]),
                "coverage": mean([r.get("coverage") for r in recs]),
                "SEC@100": mean([r.get("sec@100") for r in recs]),
                "Chao1@100": mean([r.get("chao@100") for r in recs]),
                "|corr|": mean([r.get("correlation@100") for r in recs]),
                "seconds": secs,
            }
        )
    return rows, mc


def run_demo(
    out: str | os.PathLike[str] | None = None,
    n: int = 200,
    seed: int = 0,
    show_progress: bool = True,
    cache_dir: str | os.PathLike[str] | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Run the demo (``segcp benchmark`` on the synthetic task); returns results.json's content.

    ``workers``: local worker processes (default 2 on 2+ CPUs).
    """
    from segcp.benchmark import parse_config, run_benchmark
    from segcp.parallel import open_executor

    if n < 2 * 40:
        raise SegcpError(f"--n {n}: the demo needs at least 80 images (40 calibration images for alpha=0.05)")
    t0 = time.perf_counter()
    print("segcp demo: SYNTHETIC phantom data (built-in, not real patients); LV-like structure, model-like probabilities")
    cfg = parse_config(demo_config(n, seed))
    command = f"segcp demo --n {n} --seed {seed}" + (f" --out {out}" if out is not None else "")

    def extend(res: dict[str, Any]) -> dict[str, Any]:
        rows, mc = _rows(res)
        return {
            "demo": True,
            "data": "SYNTHETIC phantoms from segcp.synthetic (not real patients)",
            "distance_units": "mm",
            "rows": rows,
            "multiclass_rows": mc,
        }

    with open_executor(workers or min(2, os.cpu_count() or 1), dask=False) as executor:
        result = run_benchmark(
            cfg, out, cache_dir=cache_dir, show_progress=show_progress, command=command, extend=extend, replaceable=LEGACY_FILES, executor=executor
        )
    rows, mc = result["rows"], result["multiclass_rows"]
    n_cal = cfg.n_cal
    columns = ["method", "alpha", "lambda", "coverage", "fnr", "stretch", "dice", "hd95", "assd", "FNR, 200 splits"]
    title = f"Test metrics: {cfg.splits} random splits, {n_cal} calibration / {n - n_cal} test synthetic images (distances in mm)"
    rich_table(rows, columns, title=title)
    for r in rows[1:]:
        v = r["validity"]
        if v["mean_test_fnr"] is None:
            continue
        ok = v["mean_test_fnr"] <= r["alpha"] + 3 * (v["se"] or 0)
        print(
            f"  guarantee check {r['method']} alpha={r['alpha']}: mean test FNR over {v['splits']} random splits "
            f"= {v['mean_test_fnr']:.4f} (se {v['se']:.4f}) {'<=' if ok else '>'} alpha {'OK' if ok else 'VIOLATED'}"
        )
    title = "Sets of segmentations, SYNTHETIC MC-dropout-like samples (LV vs background, beta = 0.8): P(truth in set up to beta) >= 1 - alpha"
    rich_table(mc, ["method", "alpha", "lambda", "coverage", "SEC@100", "Chao1@100", "|corr|", "seconds"], title=title)
    if out is not None:
        out = Path(out)
        print(f"wrote {out / 'report.html'} (open it in a browser), report.md, results.json, results.csv and the figures")
    print(f"done in {time.perf_counter() - t0:.1f} s")
    return result


#: Files of the demo before it was built on ``segcp benchmark``: such a folder may be replaced.
LEGACY_FILES = ("results.json", "report.md", "report.png")
