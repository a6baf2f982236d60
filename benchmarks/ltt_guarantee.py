"""Learn then Test and the new losses, checked over many random group-level splits on real data.

What it measures (issue 25; results in docs/results/ltt/, discussed in docs/ltt.md):

* **precision by Learn then Test** on ACDC LV (the RW-CP slices, split by patient) and BUSI
  (split by near-duplicate group) at α = 0.1, δ = 0.1: for each split λ̂ is calibrated on the
  calibration images and the test FDR is the mean FDR of the test images at λ̂; the fraction of
  splits whose test FDR exceeds α must be at most δ (within its standard error). The test
  images are the rest of a finite pool, so a calibration half that happens to look good leaves a
  test half that looks bad (and the test mean has its own noise): the *pool* FDR at λ̂ (every
  image, the pool taken as the population the calibration images were drawn from) is reported
  beside it. Four ways to get
  λ̂ on the same calibration sets: MAPIE's (``SemanticSegmentationController(risk="precision")``:
  its 0.01 grid of thresholds, HB p-values, Holm, an empty set counted as FDR 1), the same grid
  with fixed-sequence testing, and segcp's exact fixed sequence over the breakpoints with HB and
  with WSR p-values.
* **two risks at once** on ACDC LV: E[FNR] ≤ 0.1 and E[FDR] ≤ 0.2 over threshold × ``normalize``
  (:func:`segcp.calibration.ltt_chains`), on images seen with a per-image confidence (5 %, 20 % or
  100 %, as in tests/test_guarantee_acdc.py): the fraction of splits where either test risk
  exceeds its level, and the chosen configurations.
* **lesion-fnr by exact CRC** on synthetic multi-lesion images (2D and 3D) and BUSI: mean test
  lesion-FNR ≤ α + 3·SE over the splits (and ≥ α − 2/(n+1) − 3·SE).

Scores are model-free, as in the project's other guarantee tests (any fixed score gives a valid
guarantee): ``fixed_score`` of tests/test_guarantee_acdc.py (a blurred, noised mask). BUSI's maps
are computed on masks downsampled 4× (2× for lesion-fnr) to keep the FDR step functions small.

    python benchmarks/ltt_guarantee.py --splits 500 --out docs/results/ltt

The fast subset in the test suite (tests/test_guarantee_ltt.py) uses :func:`ltt_splits`,
:func:`crc_splits` and :func:`multi_lesion_cases`.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from segcp.calibration import LossCurves, StepLosses, crc_lambda, ltt_chains, ltt_grid, ltt_steps
from segcp.engine.splits import random_cal_test_splits
from segcp.losses import get_loss

ROOT = Path(__file__).resolve().parents[1]
#: MAPIE's default candidates: probability thresholds t (C = {p > t}); segcp's λ = 1 − t.
MAPIE_GRID = np.arange(0, 1, 0.01)


# ---------------------------------------------------------------------- split loops
def violation_summary(risks: Sequence[float], alpha: float, delta: float, infeasible: int, pool_risks: Sequence[float] = ()) -> dict[str, Any]:
    """The fraction of splits whose test risk exceeds α, its standard error under the claim
    (√(δ(1 − δ)/S)), and whether it is within δ + 3·SE; the same for the pool risk (the mean over
    every image of the pool, calibration ones included, at λ̂: the pool taken as the population)."""
    r = np.asarray(risks, dtype=np.float64)
    s = r.size + infeasible
    frac = float(np.sum(r > alpha) / s) if s else math.nan
    se = math.sqrt(delta * (1 - delta) / s) if s else math.nan
    pool = np.asarray(pool_risks, dtype=np.float64)
    frac_pool = float(np.sum(pool > alpha) / s) if s and pool.size else math.nan
    return {
        "splits": s,
        "violations": frac,
        "se": se,
        "valid": bool(frac <= delta + 3 * se),
        "infeasible": infeasible,
        "mean_test_risk": float(r.mean()) if r.size else math.nan,
        "violations_pool": frac_pool,
        "valid_pool": bool(frac_pool <= delta + 3 * se) if pool.size else None,
    }


def _split_loop(
    calibrate: Callable[[np.ndarray], float | None],
    steps: StepLosses,
    groups: Sequence[str],
    alpha: float,
    delta: float,
    *,
    n_cal: int,
    n_splits: int,
    seed: int,
    also: dict[str, StepLosses] | None,
) -> dict[str, Any]:
    """λ̂ = ``calibrate(calibration indices)`` on each random group-level split (None: nothing
    certified — the split abstains, it claims nothing and cannot violate; counted as infeasible),
    the test risk from ``steps`` at λ̂, and the mean test value of each loss in ``also``."""
    risks, pool, lambdas, infeasible = [], [], [], 0
    extra: dict[str, list[float]] = {k: [] for k in (also or {})}
    for cal, test in random_cal_test_splits(list(groups), n_cal, n_splits, seed):
        lam = calibrate(cal)
        if lam is None:
            infeasible += 1
            continue
        lambdas.append(lam)
        every = steps.evaluate(lam)
        risks.append(float(every[test].mean()))
        pool.append(float(every.mean()))
        for k, other in (also or {}).items():
            extra[k].append(float(other.take(test).evaluate(lam).mean()))
    out = violation_summary(risks, alpha, delta, infeasible, pool)
    out.update(
        alpha=alpha,
        delta=delta,
        n_cal=n_cal,
        lambda_mean=float(np.mean(lambdas)) if lambdas else math.nan,
        lambdas=lambdas,
        test_risks=risks,
        **{f"mean_test_{k}": float(np.mean(v)) if v else math.nan for k, v in extra.items()},
    )
    return out


def ltt_splits(
    steps: StepLosses,
    groups: Sequence[str],
    alpha: float,
    delta: float,
    *,
    n_cal: int,
    n_splits: int,
    seed: int = 0,
    pvalue: str = "hb",
    order: str = "ascending",
    lambda_min: float = -np.inf,
    lambda_max: float = np.inf,
    also: dict[str, StepLosses] | None = None,
) -> dict[str, Any]:
    """Exact LTT (:func:`ltt_steps`) on each of ``n_splits`` random group-level splits.

    ``steps`` holds one step loss per image (order of ``groups``); ``also``: other per-image
    losses (e.g. the FNR) whose mean test value at λ̂ is reported.
    """

    def calibrate(cal: np.ndarray) -> float | None:
        return ltt_steps(steps.take(cal), alpha, delta, pvalue=pvalue, order=order, lambda_min=lambda_min, lambda_max=lambda_max).lambda_

    out = _split_loop(calibrate, steps, groups, alpha, delta, n_cal=n_cal, n_splits=n_splits, seed=seed, also=also)
    out["pvalue"] = pvalue
    return out


def grid_splits(
    grid_losses: np.ndarray,
    lambdas: np.ndarray,
    steps: StepLosses,
    groups: Sequence[str],
    alpha: float,
    delta: float,
    *,
    n_cal: int,
    n_splits: int,
    seed: int = 0,
    procedure: str = "holm",
    also: dict[str, StepLosses] | None = None,
) -> dict[str, Any]:
    """LTT on a stated grid (:func:`ltt_grid`, HB p-values): calibration losses ``grid_losses``
    (images × candidates, e.g. MAPIE's convention), test risk from ``steps`` at λ̂ (the same
    splits as :func:`ltt_splits` for the same seed)."""

    def calibrate(cal: np.ndarray) -> float | None:
        return ltt_grid(grid_losses[cal], lambdas, alpha, delta, pvalue="hb", procedure=procedure).lambda_

    out = _split_loop(calibrate, steps, groups, alpha, delta, n_cal=n_cal, n_splits=n_splits, seed=seed, also=also)
    out.update(pvalue="hb", procedure=procedure)
    return out


def crc_splits(
    curves: LossCurves, groups: Sequence[str], alpha: float, *, n_cal: int, n_splits: int, seed: int = 0, lambda_min: float = -np.inf
) -> dict[str, Any]:
    """Exact CRC (:func:`crc_lambda`) on each split: mean test loss at λ̂, its SE over splits, the
    validity bound α + 3·SE and CRC's lower bound α − 2/(n+1) − 3·SE (Angelopoulos et al., Thm. 2)."""
    means, used = [], 0
    for cal, test in random_cal_test_splits(list(groups), n_cal, n_splits, seed):
        used = len(cal)
        lam = crc_lambda(curves.take(cal), alpha, lambda_min=lambda_min).lambda_
        means.append(float(curves.evaluate(lam)[test].mean()))
    m = np.asarray(means)
    se = float(m.std(ddof=1) / math.sqrt(m.size))
    return {
        "alpha": alpha,
        "splits": int(m.size),
        "n_cal": used,
        "mean_test_loss": float(m.mean()),
        "se": se,
        "valid": bool(m.mean() <= alpha + 3 * se),
        "not_conservative": bool(m.mean() >= alpha - 2 / (used + 1) - 3 * se),
    }


def chains_splits(
    configs: Sequence[Sequence[StepLosses]],
    groups: Sequence[str],
    alphas: Sequence[float],
    delta: float,
    *,
    orders: Sequence[str],
    n_cal: int,
    n_splits: int,
    seed: int = 0,
    pvalue: str = "hb",
    lambda_min: float = -np.inf,
    lambda_max: float = np.inf,
) -> dict[str, Any]:
    """Several risks at once (:func:`ltt_chains`) on each split: a split violates when any test
    risk at (θ̂, λ̂) exceeds its level."""
    bad, pool_bad, infeasible, chosen, test_risks = 0, 0, 0, [], []
    for cal, test in random_cal_test_splits(list(groups), n_cal, n_splits, seed):
        res = ltt_chains(
            [[s.take(cal) for s in row] for row in configs], alphas, delta, orders=orders, pvalue=pvalue, lambda_min=lambda_min, lambda_max=lambda_max
        )
        if not res.feasible:
            infeasible += 1
            continue
        k, lam = int(res.config), float(res.lambda_)
        every = [s.evaluate(lam) for s in configs[k]]
        risks = [float(e[test].mean()) for e in every]
        test_risks.append(risks)
        chosen.append((k, lam))
        bad += any(r > a for r, a in zip(risks, alphas))
        pool_bad += any(float(e.mean()) > a for e, a in zip(every, alphas))
    s = len(chosen) + infeasible
    se = math.sqrt(delta * (1 - delta) / s)
    tr = np.asarray(test_risks) if test_risks else np.zeros((0, len(alphas)))
    return {
        "alphas": list(alphas),
        "delta": delta,
        "n_cal": n_cal,
        "splits": s,
        "violations": bad / s,
        "se": se,
        "valid": bool(bad / s <= delta + 3 * se),
        "violations_pool": pool_bad / s,
        "infeasible": infeasible,
        "mean_test_risks": tr.mean(axis=0).tolist() if tr.size else [],
        "configs": [c for c, _ in chosen],
        "lambdas": [lam for _, lam in chosen],
    }


# ---------------------------------------------------------------------- synthetic lesions
def multi_lesion_cases(n: int, shape: tuple[int, ...] = (64, 64), seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` synthetic multi-lesion cases (2D or 3D): (score map r = 1 − p, float64; truth, bool).

    Each case has 0–6 lesions (ellipsoids of radius 1.5–7 voxels, some touching); the model-free
    "probability" of each lesion is a sigmoid of its blurred mask with a per-lesion contrast (some
    lesions are faint, as small metastases are for a real model) plus smooth noise, so the
    lesion-FNR curves spread over λ. Case i depends on (seed, i) only.
    """
    out = []
    grids = np.indices(shape, dtype=np.float64)
    for i in range(n):
        rng = np.random.default_rng((seed, i))
        truth = np.zeros(shape, bool)
        logit = np.full(shape, -6.0)
        for _ in range(int(rng.integers(0, 7))):
            centre = [rng.uniform(4, s - 4) for s in shape]
            radii = rng.uniform(1.5, 7.0, len(shape))
            blob = sum(((g - c) / r) ** 2 for g, c, r in zip(grids, centre, radii)) <= 1.0
            truth |= blob
            contrast = rng.choice([2.0, 5.0, 12.0], p=[0.25, 0.35, 0.4])
            logit = np.maximum(logit, contrast * (ndimage.gaussian_filter(blob.astype(float), 1.5) - 0.45) * 2)
        noise = ndimage.gaussian_filter(rng.normal(0, 1, shape), 2.0)
        noise /= noise.std() + 1e-12
        p = 1.0 / (1.0 + np.exp(-(logit + 0.8 * noise)))
        out.append((np.subtract(1.0, p, dtype=np.float64), truth))
    return out


# ---------------------------------------------------------------------- real data
def _fixed_score() -> Callable[[np.ndarray, int], np.ndarray]:
    """The project's model-free score (tests/test_guarantee_acdc.py), shared with its tests."""
    sys.path.insert(0, str(ROOT / "tests"))
    from test_guarantee_acdc import fixed_score

    return fixed_score


def acdc_lv(root: Path, confidences: bool = False) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    """ACDC LV RW-CP slices: probability maps (fixed score; with ``confidences`` scaled by 5 %,
    20 % or 100 % per image as in tests/test_guarantee_acdc.py), masks, patient groups."""
    from segcp.harness.datasets.tasks import get_task

    fixed_score = _fixed_score()
    probs, masks, groups = [], [], []
    for i, item in enumerate(get_task("acdc-lv", root=root).items(protocol="rwcp")):
        mask = item.load().mask
        p = fixed_score(mask, seed=i)
        if confidences:
            p = np.random.default_rng(10_000 + i).choice([0.05, 0.2, 1.0], p=[0.1, 0.2, 0.7]) * p
        probs.append(p)
        masks.append(mask)
        groups.append(item.group)
    return probs, masks, groups


def busi(root: Path, factor: int) -> tuple[list[np.ndarray], list[np.ndarray], list[str], list[str]]:
    """BUSI: model-free probability maps of the masks downsampled by ``factor``, the masks, the
    near-duplicate groups and the classes (benign/malignant)."""
    from segcp.harness.datasets.tasks import get_task

    fixed_score = _fixed_score()
    task = get_task("busi", root=root)
    groups = task.groups()
    probs, masks, gs, cls = [], [], [], []
    for i, item in enumerate(task.items()):
        mask = np.ascontiguousarray(item.load().mask[::factor, ::factor])
        probs.append(fixed_score(mask, seed=i))
        masks.append(mask)
        gs.append(groups[item.id])
        cls.append(item.id.split("_")[0])
    return probs, masks, gs, cls


def step_losses(name: str, probs: Sequence[np.ndarray], masks: Sequence[np.ndarray], **params: Any) -> StepLosses:
    """One step loss per image of the threshold family (r = 1 − p, computed in float64)."""
    loss = get_loss(name, **params)
    return StepLosses.concat([loss.steps(np.subtract(1.0, p, dtype=np.float64), m) for p, m in zip(probs, masks)])


def mapie_grid_losses(probs: Sequence[np.ndarray], masks: Sequence[np.ndarray]) -> np.ndarray:
    """MAPIE's per-image risks on its grid (images × 100): FDR of {p > t}, an empty set counted as 1
    (equal to ``SemanticSegmentationController._risks``; tests/test_ltt.py), as functions of λ = 1 − t."""
    loss = get_loss("fdr", empty_set=1.0)
    return np.stack([loss.values(-np.asarray(p, dtype=np.float64), m, -MAPIE_GRID) for p, m in zip(probs, masks)])


def check_mapie_controller(
    probs: Sequence[np.ndarray], masks: Sequence[np.ndarray], groups: Sequence[str], n_cal: int, n_splits: int, seed: int, alpha: float, delta: float
) -> list[bool]:
    """On a few splits, MAPIE's own controller and ltt_grid on :func:`mapie_grid_losses` agree on λ̂."""
    from mapie.risk_control import SemanticSegmentationController

    grid = mapie_grid_losses(probs, masks)
    same = []
    for cal, _ in random_cal_test_splits(list(groups), n_cal, n_splits, seed):
        ctrl = SemanticSegmentationController(predict_function=lambda x: x, risk="precision", target_level=1 - alpha, confidence_level=1 - delta)
        shapes = sorted({probs[i].shape for i in cal})
        for j, shape in enumerate(shapes):  # MAPIE takes one array per batch: one batch per image shape
            batch = [i for i in cal if probs[i].shape == shape]
            ctrl.compute_risks(np.stack([probs[i][None] for i in batch]), np.stack([masks[i][None] for i in batch]), _refit=j == 0)
        ctrl.compute_best_predict_param()
        mine = ltt_grid(grid[cal], -MAPIE_GRID, alpha, delta, procedure="holm")
        theirs = float(ctrl.best_predict_param[0])
        same.append((mine.lambda_ is None and math.isnan(theirs)) or (mine.lambda_ is not None and mine.lambda_ == -theirs))
    return same


# ---------------------------------------------------------------------- the run
def precision_rows(
    task: str, probs: Sequence[np.ndarray], masks: Sequence[np.ndarray], groups: Sequence[str], args: argparse.Namespace, n_cal: int, n_splits: int
) -> list[dict[str, Any]]:
    """The four precision procedures on the same splits of one task."""
    t0 = time.perf_counter()
    fdr = step_losses("fdr", probs, masks)
    fnr = step_losses("fnr", probs, masks)
    grid = mapie_grid_losses(probs, masks)
    print(
        f"{task}: step functions of {len(probs)} images in {time.perf_counter() - t0:.1f} s ({sum(b.size for b in fdr.breakpoints)} FDR breakpoints)",
        flush=True,
    )
    common: dict[str, Any] = {"n_cal": n_cal, "n_splits": n_splits, "seed": args.seed}
    rows = []
    for label, run in [
        (
            "MAPIE: 0.01 grid, HB, Holm, empty set = 1",
            lambda: grid_splits(grid, 1.0 - MAPIE_GRID, fdr, groups, 0.1, 0.1, procedure="holm", also={"fnr": fnr}, **common),
        ),
        (
            "0.01 grid, HB, fixed sequence, empty set = 1",
            lambda: grid_splits(grid, 1.0 - MAPIE_GRID, fdr, groups, 0.1, 0.1, procedure="fixed-sequence", also={"fnr": fnr}, **common),
        ),
        (
            "segcp: breakpoints, HB, fixed sequence",
            lambda: ltt_splits(fdr, groups, 0.1, 0.1, pvalue="hb", lambda_min=0.0, lambda_max=1.0, also={"fnr": fnr}, **common),
        ),
        (
            "segcp: breakpoints, WSR, fixed sequence",
            lambda: ltt_splits(fdr, groups, 0.1, 0.1, pvalue="wsr", lambda_min=0.0, lambda_max=1.0, also={"fnr": fnr}, **common),
        ),
    ]:
        t0 = time.perf_counter()
        r = run()
        r.update(task=task, procedure_label=label, seconds=time.perf_counter() - t0, n_images=len(probs), n_groups=len(set(groups)))
        rows.append(r)
        print(
            f"  {label:<46} violations {r['violations']:.3f} (se {r['se']:.3f}, valid {r['valid']}) "
            f"mean test FDR {r['mean_test_risk']:.4f} FNR {r['mean_test_fnr']:.4f} mean lambda {r['lambda_mean']:.4f} "
            f"infeasible {r['infeasible']} ({r['seconds']:.1f} s)",
            flush=True,
        )
    return rows


def chains_rows(probs: Sequence[np.ndarray], masks: Sequence[np.ndarray], groups: Sequence[str], args: argparse.Namespace) -> dict[str, Any]:
    """E[FNR] ≤ 0.1 and E[FDR] ≤ 0.2 together over threshold × normalize (none, max, component)."""
    from segcp.methods import Case, ThresholdMethod

    thetas = ["none", "max", "component"]
    configs = []
    t0 = time.perf_counter()
    for theta in thetas:
        family = ThresholdMethod(normalize=theta)
        maps = [family.score_map(Case(str(i), p)) for i, p in enumerate(probs)]
        fnr = StepLosses.concat([get_loss("fnr").steps(r, m) for r, m in zip(maps, masks)])
        fdr = StepLosses.concat([get_loss("fdr").steps(r, m) for r, m in zip(maps, masks)])
        configs.append([fnr, fdr])
    print(f"chains: step functions in {time.perf_counter() - t0:.1f} s", flush=True)
    out = {}
    for pvalue in ("hb", "wsr"):
        t0 = time.perf_counter()
        r = chains_splits(
            configs,
            groups,
            [0.1, 0.2],
            0.1,
            orders=["descending", "ascending"],
            n_cal=args.n_cal_ltt,
            n_splits=args.chain_splits,
            seed=args.seed,
            pvalue=pvalue,
            lambda_min=0.0,
            lambda_max=1.0,
        )
        r["thetas"] = thetas
        r["chosen"] = {t: int(sum(c == k for c in r["configs"])) for k, t in enumerate(thetas)}
        r["seconds"] = time.perf_counter() - t0
        out[pvalue] = r
        print(
            f"  chains {pvalue}: violations {r['violations']:.3f} (se {r['se']:.3f}, valid {r['valid']}) mean test (FNR, FDR) "
            f"{np.round(r['mean_test_risks'], 4).tolist()} chosen {r['chosen']} infeasible {r['infeasible']} ({r['seconds']:.1f} s)",
            flush=True,
        )
    return out


def lesion_rows(args: argparse.Namespace) -> list[dict[str, Any]]:
    """lesion-fnr by exact CRC: synthetic 2D, synthetic 3D, BUSI (by near-duplicate group)."""
    rows = []
    datasets: list[tuple[str, list[tuple[np.ndarray, np.ndarray]], list[str], dict[str, Any]]] = []
    for name, shape, n in [("synthetic 2D (64 x 64)", (64, 64), 600), ("synthetic 3D (24 x 40 x 40)", (24, 40, 40), 300)]:
        cases = multi_lesion_cases(n, shape, seed=args.seed)
        datasets.append((name, cases, [str(i) for i in range(n)], {}))
    if args.busi:
        probs, masks, groups, _ = busi(args.busi, factor=2)
        cases = [(np.subtract(1.0, p, dtype=np.float64), m) for p, m in zip(probs, masks)]
        datasets.append(("BUSI (masks 2x downsampled)", cases, groups, {}))
    for name, cases, groups, _ in datasets:
        counts = [int(get_loss("lesion-fnr").lesions(m)[1]) for _, m in cases]
        for params in ({}, {"connectivity": 2, "min_overlap": 0.5}):
            curves = LossCurves.concat([get_loss("lesion-fnr", **params).curve(r, m) for r, m in cases])
            for alpha in (0.2, 0.1, 0.05):
                r = crc_splits(curves, groups, alpha, n_cal=args.n_cal_crc, n_splits=args.splits, seed=args.seed, lambda_min=0.0)
                r.update(data=name, params=params, n_images=len(cases), n_multi=int(sum(c > 1 for c in counts)), n_lesions=int(sum(counts)))
                rows.append(r)
                print(
                    f"  lesion-fnr {name} {params} alpha={alpha}: mean test {r['mean_test_loss']:.4f} (se {r['se']:.4f}) "
                    f"valid {r['valid']} not conservative {r['not_conservative']}",
                    flush=True,
                )
    return rows


def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "splits": args.splits,
        "busi_splits": args.busi_splits,
        "chain_splits": args.chain_splits,
        "seed": args.seed,
        "n_cal_ltt": args.n_cal_ltt,
        "n_cal_busi": args.n_cal_busi,
        "n_cal_crc": args.n_cal_crc,
    }
    precision: list[dict[str, Any]] = []
    if args.acdc:
        probs, masks, groups = acdc_lv(args.acdc)
        same = check_mapie_controller(probs, masks, groups, args.n_cal_ltt, args.mapie_checks, args.seed, 0.1, 0.1)
        result["mapie_controller_agrees"] = {"splits": len(same), "same_lambda": int(sum(same))}
        print(f"MAPIE's controller vs ltt_grid on {len(same)} ACDC splits: same lambda on {sum(same)}", flush=True)
        precision += precision_rows("ACDC LV", probs, masks, groups, args, args.n_cal_ltt, args.splits)
        result["chains"] = chains_rows(*acdc_lv(args.acdc, confidences=True), args)
    if args.busi:
        probs, masks, groups, _ = busi(args.busi, factor=4)
        precision += precision_rows("BUSI (masks 4x downsampled)", probs, masks, groups, args, args.n_cal_busi, args.busi_splits)
    result["precision"] = precision
    result["lesion"] = lesion_rows(args)
    return result


def write(out: Path, result: dict[str, Any]) -> None:
    """results.json (without the per-split arrays) and report.md."""
    from segcp.io import write_json, write_text

    slim = json.loads(json.dumps(result, default=float))
    for row in slim.get("precision", []):
        row.pop("lambdas", None)
        row.pop("test_risks", None)
    for r in slim.get("chains", {}).values():
        r.pop("configs", None)
        r.pop("lambdas", None)
    write_json(out / "results.json", slim)
    lines = [
        f"# Learn then Test and the new losses (random group-level splits, seed {result['seed']})",
        "",
        "Produced by `benchmarks/ltt_guarantee.py`; read with docs/ltt.md. Scores are model-free (a blurred, noised mask).",
        "",
    ]
    if result.get("precision"):
        lines += [
            "## Precision (FDR) by Learn then Test, alpha = 0.1, delta = 0.1",
            "",
            "| task | n_cal | splits | procedure | splits with test FDR > alpha (SE) | within delta + 3 SE | splits with pool FDR > alpha | within | mean lambda (1 - threshold) | mean test FDR | mean test FNR | no lambda certified |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in result["precision"]:
            vp = r["valid_pool"]
            lines.append(
                f"| {r['task']} | {r['n_cal']} | {r['splits']} | {r['procedure_label']} | {r['violations']:.3f} ({r['se']:.3f}) | {'yes' if r['valid'] else '**no**'} | "
                f"{r['violations_pool']:.3f} | {'–' if vp is None else ('yes' if vp else '**no**')} | "
                f"{r['lambda_mean']:.4f} | {r['mean_test_risk']:.4f} | {r['mean_test_fnr']:.4f} | {r['infeasible']} |"
            )
        if "mapie_controller_agrees" in result:
            m = result["mapie_controller_agrees"]
            lines += [
                "",
                (
                    f'MAPIE\'s `SemanticSegmentationController(risk="precision")` itself, on {m["splits"]} of the ACDC '
                    f"calibration sets: the same lambda as the first row's procedure on {m['same_lambda']}."
                ),
            ]
    if result.get("chains"):
        lines += [
            "",
            "## E[FNR] <= 0.1 and E[FDR] <= 0.2 together (threshold x normalize, delta = 0.1)",
            "",
            "| p-value | splits | splits with a test risk above its level (SE) | within delta + 3 SE | splits with a pool risk above its level | mean test FNR | mean test FDR | chosen normalize | none certified |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for pv, r in result["chains"].items():
            fnr, fdr = (r["mean_test_risks"] + [math.nan, math.nan])[:2]
            lines.append(
                f"| {pv} | {r['splits']} | {r['violations']:.3f} ({r['se']:.3f}) | {'yes' if r['valid'] else '**no**'} | {r['violations_pool']:.3f} | "
                f"{fnr:.4f} | {fdr:.4f} | {', '.join(f'{k}: {v}' for k, v in r['chosen'].items())} | {r['infeasible']} |"
            )
    if result.get("lesion"):
        lines += [
            "",
            f"## lesion-fnr by exact CRC (n_cal = {result['n_cal_crc']})",
            "",
            "| data | images (multi-lesion) | lesions | parameters | alpha | mean test lesion-FNR +- SE | valid (<= alpha + 3 SE) | not conservative (>= alpha - 2/(n+1) - 3 SE) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in result["lesion"]:
            params = ", ".join(f"{k}={v}" for k, v in r["params"].items()) or "defaults (connectivity 1, any overlap)"
            lines.append(
                f"| {r['data']} | {r['n_images']} ({r['n_multi']}) | {r['n_lesions']} | {params} | {r['alpha']:g} | "
                f"{r['mean_test_loss']:.4f} +- {r['se']:.4f} | {'yes' if r['valid'] else '**no**'} | {'yes' if r['not_conservative'] else 'no'} |"
            )
    write_text(out / "report.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--acdc", type=Path, default=ROOT.parent / "shared" / "data" / "acdc")
    ap.add_argument("--busi", type=Path, default=ROOT.parent / "shared" / "data" / "busi")
    ap.add_argument("--splits", type=int, default=500)
    ap.add_argument("--busi-splits", type=int, default=200, help="splits for Learn then Test on BUSI (n_cal = 300: slower)")
    ap.add_argument("--chain-splits", type=int, default=200)
    ap.add_argument("--mapie-checks", type=int, default=5, help="splits on which MAPIE's own controller is run")
    ap.add_argument("--n-cal-ltt", type=int, default=70, help="calibration images for Learn then Test")
    ap.add_argument("--n-cal-busi", type=int, default=300, help="calibration images for Learn then Test on BUSI")
    ap.add_argument("--n-cal-crc", type=int, default=50, help="calibration images for CRC (lesion-fnr)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True, help="output folder (results.json, report.md)")
    args = ap.parse_args(argv)
    for name in ("acdc", "busi"):
        if getattr(args, name) is not None and not getattr(args, name).is_dir():
            print(f"{name}: {getattr(args, name)} not found, skipped", flush=True)
            setattr(args, name, None)
    t0 = time.perf_counter()
    result = run(args)
    result["seconds"] = time.perf_counter() - t0
    write(args.out, result)
    print(json.dumps({"wrote": str(args.out), "seconds": round(result["seconds"], 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
