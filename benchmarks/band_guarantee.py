"""Two-sided sets and volume intervals over many random group-level splits on real data (issue 24).

For each pool (real images and masks; model-free probabilities ``fixed_score`` as in the
project's other guarantee tests, or a trained model's probabilities on its pool patients,
benchmarks/band_models.py) and each two-sided family (threshold, ``normalize=component``, morph
with a Euclidean margin, rwcp), every case's exact scores are computed once — the band's outer and
inner scores (a, b) at τ = 1 and τ < 1, the ``band-risk`` step function, the band-volume score —
and each of ``--splits`` random calibration/test splits (whole patients / near-duplicate groups on
one side) calibrates on the calibration cases and measures on the test cases:

* ``band``: joint coverage (the fraction of test cases with I ⊆ Y ⊆ O; τ < 1: outer recall and
  inner precision ≥ τ), which must be ≥ 1 − α within its standard error over the splits, and the
  band's width |O \\ I| / |Y| (mean over test cases with a structure), |I| / |Y| and |O| / |Y|,
  for the one-λ scheme (``shared``) and the two-λ schemes (``split``, ``bonferroni``;
  :func:`segcp.calibration.band_lambdas`); and the width at the *same* joint coverage: each
  scheme's (coverage, width) over a grid of α, interpolated at coverage 1 − α;
* ``band-risk``: mean test loss ≤ α within its SE (exact CRC);
* volume intervals (mL; mm² in 2D; voxels without a spacing) per structure and case: coverage and
  median / mean width of the direct split-conformal candidates (``abs`` |V − V̂|, ``scaled`` by
  the Bernoulli spread √Σp(1−p), by Σp(1−p), by V̂ (relative), ``cqr`` on [vol{p ≥ .75},
  vol{p ≥ .25}], and with MC-dropout draws ``scaled``/``cqr`` on the sampled volumes) and of the
  band-derived ones: [vol(I), vol(O)] of the band calibrated for containment, and of the band's
  sets calibrated for the volume itself (``band-volume``, :func:`segcp.volumes.band_volume_score`);
* the ejection fraction (EDV − ESV) / EDV of ACDC's ED (frame01) and ES (frame02) LV volumes, per
  patient (the exchangeable unit): the same candidates through the same code, in percentage points.

    python benchmarks/band_guarantee.py --splits 500 --out docs/results/band

writes ``results.json`` and ``report.md`` (and ``volumes.png``). The fast subset in the test suite
(tests/test_guarantee_band.py) uses :func:`acdc_volumes`, :func:`busi_pool`, :func:`pool_scores`,
:func:`band_rows`, :func:`volume_rows` and :func:`ef_rows`.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from standin_probs import fixed_score

from segcp.calibration import LossCurves, band_lambdas, conformal_quantile, crc_lambda, fit_interval, min_calibration_size
from segcp.cases import Case
from segcp.engine.splits import random_cal_test_splits
from segcp.errors import SegcpError
from segcp.losses import get_loss
from segcp.methods import get_method
from segcp.methods.base import MaskFamily
from segcp.volumes import band_volume_score, ejection_fraction, ejection_fraction_bounds, ejection_fraction_spread, probability_volume, volume_unit

ROOT = Path(__file__).resolve().parents[1]
ALPHAS = (0.2, 0.1, 0.05)
#: The α grid of the equal-coverage comparison of the band schemes.
SWEEP = (0.03, 0.05, 0.075, 0.1, 0.125, 0.15, 0.2, 0.25, 0.3)
SCHEMES = ("shared", "split", "bonferroni")
TAUS = (1.0, 0.95)
#: (label, method, parameters) of the two-sided families.
FAMILIES = [
    ("threshold", "threshold", {}),
    ("threshold, normalize=component", "threshold", {"normalize": "component"}),
    ("morph (ball)", "morph", {"se": "ball", "empty_prediction": "argmax"}),
]
RWCP = ("rwcp (fallback encoder)", "rwcp", {"encoder": "fallback", "grid": 64, "steps": 5, "k": 10, "cache": False})


# ---------------------------------------------------------------------- pools
@dataclass
class Pool:
    """Cases of one structure (probs, mask, spacing; image for rwcp), their groups (the
    exchangeable unit) and, for ACDC volumes, the frame of each case (``"ED"``/``"ES"``)."""

    name: str
    cases: list[Case]
    groups: list[str]
    frames: list[str] | None = None
    draws: list[np.ndarray] | None = None  # per case: the volume of each MC-dropout draw, voxels
    note: str = ""

    @property
    def unit(self) -> str:
        return volume_unit(self.cases[0].probs.ndim, self.cases[0].spacing)[1]


def acdc_slices(root: Path, structure: str = "lv", images: bool = False) -> Pool:
    """The RW-CP slices of acdc-lv / acdc-rv (the largest-structure slice per (patient, frame): 140
    images of 70 patients), model-free probabilities (``fixed_score``, seeded by the index)."""
    from segcp.harness.datasets.tasks import get_task

    cases, groups = [], []
    for i, item in enumerate(get_task(f"acdc-{structure}", root=root).items(protocol="rwcp")):
        s = item.load()
        cases.append(Case(item.id, fixed_score(s.mask, seed=i).astype(np.float32), mask=s.mask, image=s.image if images else None))
        groups.append(item.group)
    return Pool(f"ACDC {structure.upper()} 2D (RW-CP slices)", cases, groups, note="model-free probabilities")


def acdc_volumes(root: Path, structure: str = "lv", factor: int = 1) -> Pool:
    """The 140 ACDC (patient, frame) volumes (H, W, Z) of one structure, in-plane downsampled by
    ``factor``; model-free probabilities slice by slice (``fixed_score`` of each slice, as a 2D
    model run along the slice axis would give). Spacing unknown: volumes in voxels."""
    from segcp.harness.datasets.acdc import acdc_volumes as scan_volumes
    from segcp.harness.datasets.acdc import read_acdc_volume, scan_acdc

    label = {"rv": 1, "lv": 3}[structure]
    cases, groups, frames = [], [], []
    for i, vol in enumerate(scan_volumes(scan_acdc(root))):
        mask = np.ascontiguousarray((read_acdc_volume(vol, with_image=False)[1] == label)[::factor, ::factor])
        probs = np.stack([fixed_score(mask[:, :, k], seed=1000 * i + k) for k in range(mask.shape[2])], axis=-1)
        cases.append(Case(vol.id, probs.astype(np.float32), mask=mask))
        groups.append(vol.id.split("_")[0])
        frames.append({"frame01": "ED", "frame02": "ES"}[vol.id.split("_")[1]])
    down = f", in-plane 1/{factor}" if factor > 1 else ""
    return Pool(f"ACDC {structure.upper()} 3D (stacks{down})", cases, groups, frames, note="model-free probabilities, slice by slice")


def busi_pool(root: Path, factor: int = 4) -> Pool:
    """BUSI's 647 images (masks downsampled by ``factor``), model-free probabilities, grouped by
    near-duplicate group."""
    from ltt_guarantee import busi

    probs, masks, groups, _ = busi(root, factor=factor)
    cases = [Case(str(i), p.astype(np.float32), mask=m) for i, (p, m) in enumerate(zip(probs, masks))]
    return Pool(f"BUSI (1/{factor})", cases, list(groups), note="model-free probabilities")


def model_pool(folder: Path, structure: str, root: Path | None = None) -> Pool:
    """A trained model's probabilities (and MC-dropout draw volumes) on its pool volumes, from
    benchmarks/band_models.py's output folder; truths from the task."""
    from segcp.harness.datasets.tasks import get_task

    man = json.loads((folder / "manifest.json").read_text())
    task = get_task(man["task"], root=root)
    label = man["labels"][structure]
    spacing = None if man["spacing"] is None else tuple(man["spacing"])
    cases, groups, frames, draws = [], [], [], []
    for ident in man["ids"]:
        with np.load(folder / f"{ident}.npz") as z:
            probs = z[f"probs_{structure}"]
            draws.append(z.get(f"draws_{structure}", None))
        mask = task.load(ident).mask
        mask = (mask == label) if mask.dtype != bool else mask
        cases.append(Case(ident, probs, mask=mask, spacing=spacing))
        groups.append(man["groups"][ident])
        if man["task"] == "acdc-3d":
            frames.append({"frame01": "ED", "frame02": "ES"}[ident.split("_")[1]])
    has_draws = all(d is not None for d in draws)
    name = {"acdc-3d": f"ACDC {structure.upper()} 3D", "la2018": "LA 2018"}[man["task"]]
    return Pool(
        f"{name} (UNet, pool patients)",
        cases,
        groups,
        frames or None,
        draws if has_draws else None,
        note=f"model {Path(man['model']).name}" + (f", {man['samples']} MC-dropout draws" if has_draws else ""),
    )


# ---------------------------------------------------------------------- per-case scores
@dataclass
class Scores:
    """Per case of one pool and family: band side scores per τ, band-risk curves, truth voxel
    counts, band-volume scores; per pool: the volume summaries."""

    outer: dict[float, np.ndarray]
    inner: dict[float, np.ndarray]
    risk: LossCurves
    count: np.ndarray  # |Y| in voxels
    volume_score: np.ndarray
    u: np.ndarray  # one voxel's volume in the pool's unit
    ef_score: dict[str, float] = field(default_factory=dict)  # patient → band-volume score of the EF


def signed_maps(pool: Pool, family: MaskFamily) -> Iterator[tuple[int, np.ndarray]]:
    for i, case in enumerate(pool.cases):
        yield i, family.signed_map(case)


def _counts(sorted_t: np.ndarray, lam: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(|{t ≤ λ}|, |{t < −λ}|) of one case for each λ, from its sorted t."""
    return np.searchsorted(sorted_t, lam, side="right"), np.searchsorted(sorted_t, -lam, side="left")


def ef_band_volume_score(t_ed: np.ndarray, t_es: np.ndarray, ef: float) -> float:
    """The smallest μ whose EF interval (interval arithmetic on the two frames' band volumes
    [|I_μ|, |O_μ|]) holds ``ef``: both ends move outward with μ, so a bisection over every value
    at which a count changes is exact."""
    cand = np.unique(np.concatenate([t_ed, -t_ed, t_es, -t_es]))
    cand = cand[np.isfinite(cand)]

    def holds(mu: float) -> bool:
        o_ed, i_ed = _counts(t_ed, np.array([mu]))
        o_es, i_es = _counts(t_es, np.array([mu]))
        lo, hi = ejection_fraction_bounds(i_ed, o_ed, i_es, o_es)
        return bool(lo[0] <= ef <= hi[0])

    if holds(-np.inf if cand.size == 0 else cand[0] - 1.0):
        return -np.inf
    if cand.size == 0 or not holds(cand[-1]):
        return np.inf
    lo, hi = 0, cand.size - 1  # holds(cand[hi]); the answer is the first candidate where it holds
    while lo < hi:
        mid = (lo + hi) // 2
        if holds(cand[mid]):
            hi = mid
        else:
            lo = mid + 1
    return float(cand[lo])


def pool_scores(pool: Pool, family: MaskFamily, taus: Sequence[float] = TAUS) -> Scores:
    """Every case's exact scores for ``family`` (one pass over the signed maps)."""
    n = len(pool.cases)
    outer = {tau: np.empty(n) for tau in taus}
    inner = {tau: np.empty(n) for tau in taus}
    curves, count, vscore, u = [], np.empty(n, np.int64), np.empty(n), np.empty(n)
    risk = get_loss("band-risk")
    bands = {tau: get_loss("band", tau=tau) for tau in taus}
    ef_score: dict[str, float] = {}
    held: dict[str, dict[str, tuple[np.ndarray, int]]] = {}
    for i, t in signed_maps(pool, family):
        y = pool.cases[i].mask
        for tau in taus:
            outer[tau][i], inner[tau][i] = bands[tau].side_scores(t, y)
        curves.append(risk.curve(t, y))
        count[i] = int(np.count_nonzero(y))
        vscore[i] = band_volume_score(t, count[i])
        u[i] = volume_unit(t.ndim, pool.cases[i].spacing)[0]
        if pool.frames is not None:  # the EF needs both frames of a patient: keep the first until the second comes
            g = pool.groups[i]
            held.setdefault(g, {})[pool.frames[i]] = (np.sort(t.ravel()), int(count[i]))
            if len(held[g]) == 2:
                (s_ed, c_ed), (s_es, c_es) = held[g]["ED"], held[g]["ES"]
                del held[g]
                if c_ed > 0:
                    ef_score[g] = ef_band_volume_score(s_ed, s_es, float(ejection_fraction(c_ed, c_es)))
    return Scores(outer, inner, LossCurves.concat(curves), count, vscore, u, ef_score)


def band_sizes(pool: Pool, family: MaskFamily, lams: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """|O_λ| and |I_λ| (voxels) of every case at every λ of ``lams`` (a few): (n, m) int64 each."""
    o = np.empty((len(pool.cases), lams.size), np.int64)
    i_ = np.empty_like(o)
    for i, t in signed_maps(pool, family):
        o[i], i_[i] = _counts(np.sort(t.ravel()), lams)
    return o, i_


# ---------------------------------------------------------------------- the split loops
def splits_of(groups: Sequence[str], n_cal: int, n_splits: int, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    return [(np.asarray(c), np.asarray(t)) for c, t in random_cal_test_splits(list(groups), n_cal, n_splits, seed)]


def _se(x: Sequence[float]) -> float:
    a = np.asarray(x, dtype=np.float64)
    return float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else math.nan


def band_lambda_table(
    sc: Scores,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    alphas: Sequence[float],
    schemes: Sequence[str] = SCHEMES,
    taus: Sequence[float] = TAUS,
) -> dict[tuple[str, float, float], np.ndarray]:
    """(scheme, τ, α) → (splits, 2) array of (λ_out, λ_in); NaN where calibration is impossible."""
    out = {}
    for scheme in schemes:
        for tau in taus:
            for alpha in alphas:
                lams = np.full((len(splits), 2), np.nan)
                for s, (cal, _) in enumerate(splits):
                    try:
                        r = band_lambdas(sc.outer[tau][cal], sc.inner[tau][cal], alpha, scheme=scheme, seed=s)
                    except SegcpError:
                        continue
                    lams[s] = r.lambda_out, r.lambda_in
                out[(scheme, tau, alpha)] = lams
    return out


def band_widths(
    pool: Pool,
    family: MaskFamily,
    sc: Scores,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    pairs: dict[Any, np.ndarray],
    keep: Sequence[Any] = (),
) -> tuple[dict[Any, np.ndarray], dict[Any, tuple[np.ndarray, np.ndarray]]]:
    """One pass over the cases' signed maps: for every configuration c of ``pairs`` ((splits, 2)
    arrays of (λ_out, λ_in), NaN: none), the mean over each split's test cases with a structure of
    |O \\ I| / |Y|, |I| / |Y| and |O| / |Y| (c → (3, splits)); and for the configurations in
    ``keep`` every case's (|I|, |O|) in voxels at each split's λ's (c → two (n, splits) arrays)."""
    n, n_s = len(pool.cases), len(splits)
    member = np.zeros((n_s, n), bool)
    for k, (_, test) in enumerate(splits):
        member[k, test] = True
    member &= (sc.count > 0)[None, :]
    sums = {c: np.zeros((3, n_s)) for c in pairs}
    kept = {c: (np.zeros((n, n_s), np.int64), np.zeros((n, n_s), np.int64)) for c in keep}
    for i, t in signed_maps(pool, family):
        st = np.sort(t.ravel())
        m = max(int(sc.count[i]), 1)
        on = member[:, i]
        for c, lam in pairs.items():
            ok = np.isfinite(lam[:, 0])
            o = np.searchsorted(st, np.where(ok, lam[:, 0], 0.0), side="right")
            inn = np.searchsorted(st, -np.where(ok, lam[:, 1], 0.0), side="left")
            w = on & ok
            sums[c][0] += np.where(w, (o - inn) / m, 0.0)
            sums[c][1] += np.where(w, inn / m, 0.0)
            sums[c][2] += np.where(w, o / m, 0.0)
            if c in kept:
                kept[c][0][i], kept[c][1][i] = inn, o
    per_split = member.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = {c: v / per_split[None, :] for c, v in sums.items()}
    return means, kept


def band_rows(
    pool: Pool,
    family_label: str,
    family: MaskFamily,
    sc: Scores,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    alphas: Sequence[float] = ALPHAS,
    *,
    schemes: Sequence[str] = SCHEMES,
    taus: Sequence[float] = TAUS,
    sweep: Sequence[float] = (),
    widths: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The band and band-risk rows of one pool and family, and what the volume rows reuse: the
    band's λ's, and each case's (|I|, |O|) at the λ's of the one-λ band (τ = 1), of band-risk and of
    the band-volume score (``aux["sizes"]``: key → two (n, splits) arrays)."""
    table = band_lambda_table(sc, splits, sorted(set(alphas) | set(sweep)), schemes, taus)
    feasible = [a for a in alphas if len(splits[0][0]) >= min_calibration_size(a)]
    risk_lams = {a: np.array([crc_lambda(sc.risk.take(cal), a, lambda_min=0.0).lambda_ for cal, _ in splits]) for a in feasible}
    vol_q = {a: np.array([max(0.0, conformal_quantile(sc.volume_score[cal], a)) for cal, _ in splits]) for a in feasible}
    pairs: dict[Any, np.ndarray] = dict(table)
    pairs.update({("risk", a): np.repeat(v[:, None], 2, axis=1) for a, v in risk_lams.items()})
    pairs.update({("volume", a): np.repeat(v[:, None], 2, axis=1) for a, v in vol_q.items()})
    keep = [("shared", 1.0, a) for a in feasible] + [("volume", a) for a in feasible]
    means, kept = band_widths(pool, family, sc, splits, pairs, keep) if widths else ({}, {})

    def avg(c: Any, k: int) -> float:
        return float(np.nanmean(means[c][k])) if c in means and np.isfinite(means[c][k]).any() else math.nan

    rows = []
    for (scheme, tau, alpha), lams in table.items():
        cover = [
            float(np.mean((sc.outer[tau][test] <= lams[s, 0]) & (sc.inner[tau][test] <= lams[s, 1])))
            for s, (_, test) in enumerate(splits)
            if np.isfinite(lams[s, 0])
        ]  # no λ: n too small for α (never data-dependent)
        if not cover:
            continue
        c = np.asarray(cover)
        key = (scheme, tau, alpha)
        rows.append(
            {
                "pool": pool.name,
                "family": family_label,
                "loss": "band",
                "scheme": scheme,
                "tau": tau,
                "alpha": alpha,
                "splits": int(c.size),
                "n_cal": len(splits[0][0]),
                "coverage": float(c.mean()),
                "se": _se(c),
                "valid": bool(c.mean() >= 1 - alpha - 3 * _se(c)),
                "infeasible": int(np.isnan(lams[:, 0]).sum()),
                "lambda_out": float(np.nanmean(lams[:, 0])),
                "lambda_in": float(np.nanmean(lams[:, 1])),
                "width": avg(key, 0),
                "inner_fraction": avg(key, 1),
                "outer_fraction": avg(key, 2),
                "sweep_only": alpha not in alphas,
            }
        )
    for alpha in feasible:
        m = np.array([float(sc.risk.evaluate(lam)[test].mean()) for lam, (_, test) in zip(risk_lams[alpha], splits)])
        rows.append(
            {
                "pool": pool.name,
                "family": family_label,
                "loss": "band-risk",
                "scheme": "shared",
                "tau": math.nan,
                "alpha": alpha,
                "splits": len(splits),
                "n_cal": len(splits[0][0]),
                "risk": float(m.mean()),
                "se": _se(m),
                "valid": bool(m.mean() <= alpha + 3 * _se(m)),
                "lambda_out": float(np.mean(risk_lams[alpha])),
                "width": avg(("risk", alpha), 0),
                "inner_fraction": avg(("risk", alpha), 1),
                "outer_fraction": avg(("risk", alpha), 2),
                "sweep_only": False,
            }
        )
    return rows, {"table": table, "vol_q": vol_q, "sizes": kept}


def equal_coverage_widths(rows: Sequence[dict[str, Any]], target: float) -> dict[tuple[str, str, float], float]:
    """(family, scheme, τ) → the band width at joint coverage ``target``, interpolated linearly over
    the α sweep's (coverage, width) points (NaN when the sweep does not reach it)."""
    out = {}
    keys = {(r["family"], r["scheme"], r["tau"]) for r in rows if r["loss"] == "band"}
    for key in keys:
        pts = sorted((r["coverage"], r["width"]) for r in rows if r["loss"] == "band" and (r["family"], r["scheme"], r["tau"]) == key)
        cov = np.array([p[0] for p in pts])
        wid = np.array([p[1] for p in pts])
        out[key] = float(np.interp(target, cov, wid)) if cov.min() <= target <= cov.max() else math.nan
    return out


# ---------------------------------------------------------------------- volume intervals
@dataclass
class VolumeInputs:
    """Per case: the truth's volume and what the probabilities (and draws) say, in the pool's unit."""

    truth: np.ndarray
    estimate: np.ndarray
    sd: np.ndarray
    var: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    draws: list[np.ndarray] | None
    unit: str


def volume_inputs(pool: Pool, gamma: float = 0.25) -> VolumeInputs:
    est = [probability_volume(c.probs, c.spacing, gamma=gamma) for c in pool.cases]
    u = np.array([volume_unit(c.probs.ndim, c.spacing)[0] for c in pool.cases])
    truth = np.array([np.count_nonzero(c.mask) for c in pool.cases]) * u
    draws = None if pool.draws is None else [d * uu for d, uu in zip(pool.draws, u)]
    return VolumeInputs(truth, *(np.array([getattr(e, k) for e in est]) for k in ("estimate", "sd", "var", "lower", "upper")), draws, est[0].unit)


def direct_candidates(v: VolumeInputs, u: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
    """Candidate name → the inputs of :func:`fit_interval` (score and arrays), per case."""
    c: dict[str, dict[str, Any]] = {
        "abs: |V - V^|": {"score": "abs", "estimate": v.estimate},
        "scaled: sqrt(sum p(1-p))": {"score": "scaled", "estimate": v.estimate, "spread": v.sd},
        "scaled: sum p(1-p)": {"score": "scaled", "estimate": v.estimate, "spread": v.var},
        "scaled: V^ (relative)": {"score": "scaled", "estimate": v.estimate, "spread": np.maximum(v.estimate, u)},
        "cqr: [vol(p>=.75), vol(p>=.25)]": {"score": "cqr", "lower": v.lower, "upper": v.upper},
    }
    if v.draws is not None:
        d = np.stack(v.draws)
        c["samples, scaled: sd of draws"] = {"score": "scaled", "estimate": d.mean(1), "spread": np.maximum(d.std(1, ddof=1), u)}
        lo, hi = np.quantile(d, [0.25, 0.75], axis=1)
        c["samples, cqr: draws' quartiles"] = {"score": "cqr", "lower": lo, "upper": hi}
    return c


def _interval_row(
    pool: Pool, name: str, family: str, alpha: float, covered: list[float], widths: list[np.ndarray], unit: str, n_cal: int, scale: float = 1.0
) -> dict[str, Any]:
    c = np.asarray(covered)
    w = np.concatenate(widths) * scale if widths else np.zeros(0)
    med = [float(np.median(x)) * scale for x in widths if x.size]
    return {
        "pool": pool.name,
        "candidate": name,
        "family": family,
        "alpha": alpha,
        "unit": unit,
        "splits": int(c.size),
        "n_cal": n_cal,
        "coverage": float(c.mean()),
        "se": _se(c),
        "valid": bool(c.mean() >= 1 - alpha - 3 * _se(c)),
        "median_width": float(np.mean(med)) if med else math.nan,
        "mean_width": float(w[np.isfinite(w)].mean()) if w.size else math.nan,
        "infinite": float(np.mean(~np.isfinite(w))) if w.size else math.nan,
    }


def volume_rows(
    pool: Pool,
    splits: Sequence[tuple[np.ndarray, np.ndarray]],
    alphas: Sequence[float] = ALPHAS,
    band: dict[str, tuple[Scores, dict[str, Any]]] | None = None,
) -> list[dict[str, Any]]:
    """Coverage and width of every volume-interval candidate (direct; band-derived per family in ``band``)."""
    v = volume_inputs(pool)
    u = np.array([volume_unit(c.probs.ndim, c.spacing)[0] for c in pool.cases])
    rows = []
    n_cal = len(splits[0][0])
    for alpha in [a for a in alphas if n_cal >= min_calibration_size(a)]:
        for name, spec in direct_candidates(v, u).items():
            covered, widths = [], []
            score = spec["score"]
            arrays = {k: x for k, x in spec.items() if k != "score"}
            for cal, test in splits:
                fit = fit_interval(v.truth[cal], alpha=alpha, score=score, **{k: x[cal] for k, x in arrays.items()})
                lo, hi = fit.bounds(**{k: x[test] for k, x in arrays.items()})
                covered.append(float(np.mean((v.truth[test] >= lo) & (v.truth[test] <= hi))))
                widths.append(hi - lo)
            rows.append(_interval_row(pool, name, "-", alpha, covered, widths, v.unit, n_cal))
        for label, (_sc, aux) in (band or {}).items():
            for name, key in (
                ("band: [vol(I), vol(O)], I in Y in O", ("shared", 1.0, alpha)),
                ("band-volume: [vol(I), vol(O)] calibrated on the volume", ("volume", alpha)),
            ):
                if key not in aux["sizes"]:
                    continue
                inner, outer = aux["sizes"][key]
                lams = aux["table"].get(key)
                covered, widths = [], []
                for s, (_, test) in enumerate(splits):
                    if lams is not None and not np.isfinite(lams[s, 0]):
                        continue
                    lo_v, hi_v = inner[test, s] * u[test], outer[test, s] * u[test]
                    covered.append(float(np.mean((v.truth[test] >= lo_v) & (v.truth[test] <= hi_v))))
                    widths.append(hi_v - lo_v)
                rows.append(_interval_row(pool, name, label, alpha, covered, widths, v.unit, n_cal))
    return rows


# ---------------------------------------------------------------------- the ejection fraction
def ef_rows(
    pool: Pool,
    n_cal_patients: int,
    n_splits: int,
    seed: int,
    alphas: Sequence[float] = ALPHAS,
    band: dict[str, tuple[Scores, dict[str, Any]]] | None = None,
    family_of: dict[str, MaskFamily] | None = None,
) -> list[dict[str, Any]]:
    """The EF interval's coverage and width (percentage points) per candidate, patients as units."""
    assert pool.frames is not None
    v = volume_inputs(pool)
    patients = sorted({g for g in pool.groups})
    idx = {(g, f): i for i, (g, f) in enumerate(zip(pool.groups, pool.frames))}
    ed = np.array([idx[(p, "ED")] for p in patients])
    es = np.array([idx[(p, "ES")] for p in patients])
    keep = v.truth[ed] > 0
    ed, es, patients = ed[keep], es[keep], [p for p, k in zip(patients, keep) if k]
    truth = ejection_fraction(v.truth[ed], v.truth[es])
    est = ejection_fraction(v.estimate[ed], v.estimate[es])
    lo_raw, hi_raw = ejection_fraction_bounds(v.lower[ed], v.upper[ed], v.lower[es], v.upper[es])
    cands: dict[str, dict[str, Any]] = {
        "abs: |EF - EF^|": {"score": "abs", "estimate": est},
        "scaled: delta method, sqrt(sum p(1-p))": {
            "score": "scaled",
            "estimate": est,
            "spread": np.maximum(ejection_fraction_spread(v.estimate[ed], v.estimate[es], v.sd[ed], v.sd[es]), 1e-4),
        },
        "cqr: interval arithmetic on [vol(p>=.75), vol(p>=.25)]": {"score": "cqr", "lower": np.maximum(lo_raw, -1e6), "upper": hi_raw},
    }
    if v.draws is not None:
        d_ed, d_es = np.stack(v.draws)[ed], np.stack(v.draws)[es]
        ef_d = ejection_fraction(d_ed, d_es)  # draw k of ED with draw k of ES
        cands["samples, scaled: sd of the draws' EF"] = {"score": "scaled", "estimate": ef_d.mean(1), "spread": np.maximum(ef_d.std(1, ddof=1), 1e-4)}
        lo_d, hi_d = np.quantile(ef_d, [0.25, 0.75], axis=1)
        cands["samples, cqr: the draws' EF quartiles"] = {"score": "cqr", "lower": lo_d, "upper": hi_d}
    splits = splits_of(patients, n_cal_patients, n_splits, seed)
    feasible = [a for a in alphas if len(splits[0][0]) >= min_calibration_size(a)]
    rows = []
    for alpha in feasible:
        for name, spec in cands.items():
            arrays = {k: x for k, x in spec.items() if k != "score"}
            covered, widths = [], []
            for cal, test in splits:
                fit = fit_interval(truth[cal], alpha=alpha, score=spec["score"], **{k: x[cal] for k, x in arrays.items()})
                lo, hi = fit.bounds(**{k: x[test] for k, x in arrays.items()})
                covered.append(float(np.mean((truth[test] >= lo) & (truth[test] <= hi))))
                widths.append(hi - lo)
            rows.append(_interval_row(pool, name, "-", alpha, covered, widths, "percentage points", len(splits[0][0]), 100.0))
    for label, (sc, _) in (band or {}).items():
        pscore = np.maximum(np.maximum(sc.outer[1.0][ed], sc.inner[1.0][ed]), np.maximum(sc.outer[1.0][es], sc.inner[1.0][es]))
        vscore = np.array([sc.ef_score[p] for p in patients])
        named = (
            ("band: EF of [vol(I), vol(O)] of both frames, I in Y in O per patient", pscore),
            ("band-volume: the EF interval of the band calibrated on the EF", vscore),
        )
        qs = {(name, a): np.array([max(0.0, conformal_quantile(score[cal], a)) for cal, _ in splits]) for name, score in named for a in feasible}
        lam_all = np.unique(np.concatenate(list(qs.values())))
        outer_n, inner_n = band_sizes(pool, (family_of or {})[label], lam_all)
        for (name, alpha), q in qs.items():
            covered, widths = [], []
            for qq, (_, test) in zip(q, splits):
                j = int(np.searchsorted(lam_all, qq))
                o, i_ = outer_n[:, j], inner_n[:, j]
                lo, hi = ejection_fraction_bounds(i_[ed[test]], o[ed[test]], i_[es[test]], o[es[test]])
                covered.append(float(np.mean((truth[test] >= lo) & (truth[test] <= hi))))
                widths.append(hi - lo)
            rows.append(_interval_row(pool, name, label, alpha, covered, widths, "percentage points", len(splits[0][0]), 100.0))
    return rows


# ---------------------------------------------------------------------- the run
def run_pool(pool: Pool, families: Sequence[tuple[str, str, dict[str, Any]]], args: argparse.Namespace, n_cal: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    splits = splits_of(pool.groups, n_cal, args.splits, args.seed)
    out: dict[str, Any] = {
        "pool": pool.name,
        "note": pool.note,
        "n_cases": len(pool.cases),
        "n_groups": len(set(pool.groups)),
        "n_empty": int(sum(not c.mask.any() for c in pool.cases)),
        "unit": pool.unit,
        "n_cal": len(splits[0][0]),
        "band": [],
        "volumes": [],
        "ef": [],
    }
    band: dict[str, tuple[Scores, dict[str, Any]]] = {}
    fams: dict[str, MaskFamily] = {}
    for label, method, params in families:
        fam = get_method(method, **params)
        assert isinstance(fam, MaskFamily)
        sc = pool_scores(pool, fam)
        rows, aux = band_rows(pool, label, fam, sc, splits, ALPHAS, sweep=SWEEP)
        out["band"] += rows
        band[label], fams[label] = (sc, aux), fam
        for r in rows:
            if not r["sweep_only"] and r["alpha"] == 0.1 and (r["loss"] == "band-risk" or r["tau"] == 1.0):
                what = f"coverage {r['coverage']:.3f}" if r["loss"] == "band" else f"risk {r['risk']:.4f}"
                print(f"  {pool.name} | {label} | {r['loss']} {r['scheme']}: {what} (se {r['se']:.4f}) width {r['width']:.3f}", flush=True)
    eq = equal_coverage_widths(out["band"], 0.9)
    out["equal_coverage_0.9"] = [{"family": k[0], "scheme": k[1], "tau": k[2], "width": w} for k, w in sorted(eq.items())]
    out["volumes"] = volume_rows(pool, splits, ALPHAS, band=band)
    if pool.frames is not None:
        n_pat = max(10, len(set(pool.groups)) // 2)
        out["ef"] = ef_rows(pool, n_pat, args.splits, args.seed, ALPHAS, band={k: band[k] for k in ("threshold",)}, family_of=fams)
        out["n_cal_patients"] = n_pat
    out["seconds"] = time.perf_counter() - t0
    print(f"{pool.name}: {out['seconds']:.0f} s", flush=True)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    result: dict[str, Any] = {
        "splits": args.splits,
        "seed": args.seed,
        "alphas": list(ALPHAS),
        "sweep": list(SWEEP),
        "load": list(os.getloadavg()),
        "pools": [],
    }
    jobs: dict[str, tuple[Any, ...]] = {}
    if args.acdc:
        for s in ("lv", "rv"):
            jobs[f"acdc-2d-{s}"] = (lambda s=s: acdc_slices(args.acdc, s, images=True), FAMILIES + [RWCP], 40)
            jobs[f"acdc-3d-{s}"] = (lambda s=s: acdc_volumes(args.acdc, s, factor=args.acdc_factor), FAMILIES, 40)
    if args.busi:
        jobs["busi"] = (lambda: busi_pool(args.busi, factor=4), FAMILIES, 100)
    for name, folder, structure, n_cal, data in [
        ("acdc-model", args.acdc_model, "lv", 28, args.acdc),
        ("la-model", args.la_model, "la", 10, args.la),
    ]:
        if folder is not None and (folder / "manifest.json").is_file():
            jobs[name] = (lambda f=folder, s=structure, d=data: model_pool(f, s, d), FAMILIES, n_cal)
    chosen = [jobs[k] for k in (args.pools or list(jobs)) if k in jobs]
    for load, families, n_cal in chosen:
        t0 = time.perf_counter()
        pool = load()
        print(f"{pool.name}: {len(pool.cases)} cases loaded in {time.perf_counter() - t0:.0f} s", flush=True)
        result["pools"].append(run_pool(pool, families, args, n_cal))
        del pool
    return result


def _fmt(x: float, d: int = 3) -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{d}f}"


def write(out: Path, result: dict[str, Any]) -> None:
    from segcp.io import write_json, write_text

    write_json(out / "results.json", result)
    L = [
        f"# Two-sided sets and volume intervals ({result['splits']} random group-level splits, seed {result['seed']})",
        "",
        "Produced by `benchmarks/band_guarantee.py`; read with docs/band.md. Load during the run: "
        f"{', '.join(f'{x:.1f}' for x in result['load'])} (2 cores).",
        "",
    ]
    for p in result["pools"]:
        L += [
            f"## {p['pool']}",
            "",
            f"{p['n_cases']} cases ({p['n_empty']} without the structure), {p['n_groups']} groups, "
            f"n_cal = {p['n_cal']} cases per split; {p['note']}; volumes in {p['unit']}.",
            "",
            "### band (joint coverage) and band-risk",
            "",
            "| family | loss | scheme | τ | α | coverage ± SE (or risk) | valid | mean λ_out / λ_in | width \\|O \\ I\\| / \\|Y\\| | \\|I\\| / \\|Y\\| | \\|O\\| / \\|Y\\| | infeasible |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in p["band"]:
            if r["sweep_only"]:
                continue
            val = f"{r['coverage']:.3f} ± {r['se']:.3f}" if r["loss"] == "band" else f"{r['risk']:.4f} ± {r['se']:.4f}"
            lam = f"{r['lambda_out']:.3f} / {r['lambda_in']:.3f}" if r["loss"] == "band" else f"{r['lambda_out']:.3f}"
            tau = "" if r["loss"] != "band" else f"{r['tau']:g}"
            L.append(
                f"| {r['family']} | {r['loss']} | {r['scheme']} | {tau} | {r['alpha']:g} | {val} | "
                f"{'yes' if r['valid'] else '**no**'} | {lam} | {_fmt(r['width'])} | {_fmt(r.get('inner_fraction', math.nan))} | "
                f"{_fmt(r.get('outer_fraction', math.nan))} | {r.get('infeasible', 0)} |"
            )
        L += [
            "",
            f"Band width at the same joint coverage 0.9 (interpolated over the α sweep {', '.join(f'{a:g}' for a in result['sweep'])}):",
            "",
            "| family | τ | shared | split | bonferroni |",
            "|---|---|---|---|---|",
        ]
        eq = {(e["family"], e["scheme"], e["tau"]): e["width"] for e in p["equal_coverage_0.9"]}
        for fam, tau in sorted({(k[0], k[2]) for k in eq}):
            L.append(f"| {fam} | {tau:g} | " + " | ".join(_fmt(eq.get((fam, s, tau), math.nan)) for s in SCHEMES) + " |")
        L += [
            "",
            f"### volume intervals ({p['unit']})",
            "",
            "| candidate | band family | α | coverage ± SE | valid | median width | mean width |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in p["volumes"]:
            L.append(
                f"| {r['candidate']} | {r['family']} | {r['alpha']:g} | {r['coverage']:.3f} ± {r['se']:.3f} | {'yes' if r['valid'] else '**no**'} | "
                f"{_fmt(r['median_width'], 2)} | {_fmt(r['mean_width'], 2)} |"
            )
        if p["ef"]:
            L += [
                "",
                f"### ejection fraction (percentage points; patients as units, n_cal = {p['n_cal_patients']} patients)",
                "",
                "| candidate | band family | α | coverage ± SE | valid | median width (pp) | mean width (pp) | infinite |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for r in p["ef"]:
                L.append(
                    f"| {r['candidate']} | {r['family']} | {r['alpha']:g} | {r['coverage']:.3f} ± {r['se']:.3f} | {'yes' if r['valid'] else '**no**'} | "
                    f"{_fmt(r['median_width'], 1)} | {_fmt(r['mean_width'], 1)} | {_fmt(r['infinite'], 2)} |"
                )
        L.append("")
    write_text(out / "report.md", "\n".join(L) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    data = ROOT.parent / "shared" / "data"
    ap.add_argument("--acdc", type=Path, default=data / "acdc")
    ap.add_argument("--busi", type=Path, default=data / "busi")
    ap.add_argument("--la", type=Path, default=data / "la2018")
    ap.add_argument("--acdc-model", type=Path, default=None, help="benchmarks/band_models.py's output for acdc-3d")
    ap.add_argument("--la-model", type=Path, default=None, help="benchmarks/band_models.py's output for la2018")
    ap.add_argument("--acdc-factor", type=int, default=1, help="in-plane downsampling of the ACDC volumes")
    ap.add_argument(
        "--pools",
        nargs="*",
        default=None,
        help="acdc-2d-lv acdc-2d-rv acdc-3d-lv acdc-3d-rv busi acdc-model la-model (default: every one whose data is found)",
    )
    ap.add_argument("--splits", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    for name in ("acdc", "busi", "la"):
        if not getattr(args, name).is_dir():
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
