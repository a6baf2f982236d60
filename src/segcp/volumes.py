"""Volumes of one structure in one case — from a mask, the model's probabilities, its samples or a
two-sided set — in physical units, and the quantities made of several volumes (ejection fraction).

Units (:func:`volume_unit`): a 3D grid with a voxel spacing in mm gives **mL** (mm³ / 1000); a 2D
grid with a spacing, **mm2** (an area); without a spacing, **voxels** (pixels in 2D). Every
function here returns numbers in the unit of its grid; :mod:`segcp.calibration.intervals` turns
them into conformal intervals.

What a model's output says about a volume V (:func:`probability_volume`):

* the estimate V̂ = Σ_p prob_p · u (u = one voxel's volume): the expected volume when each voxel
  is in the structure with its probability;
* a spread σ̂ = √(Σ_p prob_p (1 − prob_p)) · u: the standard deviation of that volume if the
  voxels were independent Bernoulli variables (too small for real, spatially correlated errors,
  but it grows with the uncertain boundary, which is what a normalised score needs); also the
  variance form Σ_p prob_p (1 − prob_p) · u, which grows with the boundary's area rather than
  its square root (:attr:`VolumeEstimate.var`);
* a raw interval [vol{prob ≥ 1 − γ}, vol{prob ≥ γ}] (γ = ``gamma``, 0.25 by default) for the
  conformalised-quantile (CQR) form;
* with sampled outputs (MC dropout, an ensemble; :func:`sampled_volumes`): the volume of each
  draw, whose standard deviation and quantiles replace the spread and the raw interval.

Spreads are floored at one voxel (u), so a map with only 0 and 1 still has a positive scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from segcp.calibration.intervals import fit_interval
from segcp.errors import SegcpError

__all__ = [
    "VOLUME_SCORE",
    "VolumeEstimate",
    "band_volume_score",
    "band_volumes",
    "ejection_fraction",
    "ejection_fraction_bounds",
    "ejection_fraction_spread",
    "interval_inputs",
    "mask_volume",
    "probability_volume",
    "sampled_volumes",
    "volume_record",
    "volume_unit",
    "voxel_volume",
]


def voxel_volume(spacing: float | Sequence[float] | None, ndim: int) -> float:
    """The volume of one voxel in mm³ (mm² in 2D) from ``spacing`` (one number, or one per axis);
    1 (voxel units) when ``spacing`` is None."""
    if spacing is None:
        return 1.0
    sp = np.broadcast_to(np.asarray(spacing, dtype=np.float64), (ndim,)) if np.ndim(spacing) == 0 else np.asarray(spacing, dtype=np.float64)
    if sp.shape != (ndim,) or not np.all(np.isfinite(sp)) or np.any(sp <= 0):
        raise SegcpError(f"spacing must be {ndim} positive numbers (one per axis), got {spacing!r}")
    return float(np.prod(sp))


def volume_unit(ndim: int, spacing: float | Sequence[float] | None) -> tuple[float, str]:
    """(u, unit): one voxel's volume in ``unit`` — ``"mL"`` (3D with a spacing in mm),
    ``"mm2"`` (2D with a spacing) or ``"voxels"`` (no spacing: u = 1).

    Examples
    --------
    >>> volume_unit(3, (1.0, 1.0, 2.0)), volume_unit(2, (0.5, 0.5)), volume_unit(3, None)
    ((0.002, 'mL'), (0.25, 'mm2'), (1.0, 'voxels'))
    """
    if ndim not in (2, 3):
        raise SegcpError(f"volumes need a 2D or 3D grid, got {ndim} dimension(s)")
    v = voxel_volume(spacing, ndim)
    if spacing is None:
        return 1.0, "voxels"
    return (v / 1000.0, "mL") if ndim == 3 else (v, "mm2")


def mask_volume(mask: ArrayLike, spacing: float | Sequence[float] | None = None) -> float:
    """The volume of a binary mask (2D or 3D, bool or 0/1) in its grid's unit (:func:`volume_unit`)."""
    m = np.asarray(mask)
    u, _ = volume_unit(m.ndim, spacing)
    if m.dtype != bool and not np.isin(m, (0, 1)).all():
        raise SegcpError("mask volume: the mask must be binary (bool or 0/1)")
    return float(np.count_nonzero(m)) * u


@dataclass(frozen=True)
class VolumeEstimate:
    """What one probability map (or a stack of samples) says about the structure's volume, in
    ``unit``.

    Attributes
    ----------
    estimate : V̂ = Σ prob · u (with samples: the mean of the sampled volumes).
    sd : the spread σ̂ = √(Σ prob (1 − prob)) · u (with samples: the sampled volumes' standard
        deviation), at least one voxel.
    var : Σ prob (1 − prob) · u, at least one voxel (the variance form; NaN with samples).
    lower, upper : the raw interval: vol{prob ≥ 1 − γ}, vol{prob ≥ γ} (with samples: the
        sampled volumes' γ and 1 − γ quantiles).
    unit : ``"mL"``, ``"mm2"`` or ``"voxels"``.
    """

    estimate: float
    sd: float
    var: float
    lower: float
    upper: float
    unit: str


def _check_gamma(gamma: float) -> float:
    g = float(gamma)
    if not 0.0 < g < 0.5:
        raise SegcpError(f"gamma must be in (0, 0.5), got {gamma!r}")
    return g


def probability_volume(probs: ArrayLike, spacing: float | Sequence[float] | None = None, *, gamma: float = 0.25) -> VolumeEstimate:
    """The volume estimate, spread and raw interval of one foreground probability map (2D or 3D,
    values in [0, 1]; module docstring).

    Examples
    --------
    >>> p = np.array([[0.9, 0.5], [0.2, 0.0]])
    >>> v = probability_volume(p)
    >>> round(v.estimate, 6), round(v.sd, 6), v.lower, v.upper, v.unit
    (1.6, 1.0, 1.0, 2.0, 'voxels')
    """
    p = np.asarray(probs, dtype=np.float64)
    u, unit = volume_unit(p.ndim, spacing)
    if p.size and (np.isnan(p).any() or p.min() < 0 or p.max() > 1):
        raise SegcpError("probability volume: probabilities must lie in [0, 1]")
    g = _check_gamma(gamma)
    bern = float(np.sum(p * (1.0 - p)))
    return VolumeEstimate(
        estimate=float(p.sum()) * u,
        sd=max(float(np.sqrt(bern)), 1.0) * u,
        var=max(bern, 1.0) * u,
        lower=float(np.count_nonzero(p >= 1.0 - g)) * u,
        upper=float(np.count_nonzero(p >= g)) * u,
        unit=unit,
    )


def sampled_volumes(
    samples: ArrayLike, spacing: float | Sequence[float] | None = None, *, gamma: float = 0.25
) -> tuple[NDArray[np.float64], VolumeEstimate]:
    """The volume of each draw of a stack of sampled foreground maps (S, *grid), float in [0, 1]
    (a draw's volume is Σ its probabilities · u, so that the mean draw is the mean map's V̂), and
    their summary: mean, standard deviation (at least one voxel), γ and 1 − γ quantiles."""
    s = np.asarray(samples, dtype=np.float64)
    if s.ndim not in (3, 4) or s.shape[0] < 2:
        raise SegcpError(f"sampled volumes: need a stack (S >= 2, *grid) of 2D or 3D maps, got shape {s.shape}")
    u, unit = volume_unit(s.ndim - 1, spacing)
    g = _check_gamma(gamma)
    vols = s.reshape(s.shape[0], -1).sum(axis=1) * u
    lo, hi = np.quantile(vols, [g, 1.0 - g])
    return vols, VolumeEstimate(float(vols.mean()), max(float(vols.std(ddof=1)), u), float("nan"), float(lo), float(hi), unit)


#: The direct volume interval ``segcp calibrate --guarantee band`` fits beside the band
#: (:func:`interval_inputs`): ``cqr`` on [vol{p ≥ ¾}, vol{p ≥ ¼}], the narrowest valid candidate
#: without samples on 4 of the 5 pools of docs/band.md (``scaled`` by √Σp(1−p): 1.1–8.5× wider
#: there; 9 % narrower on LA 2018's 15 volumes).
VOLUME_SCORE = "cqr"


def interval_inputs(estimates: Sequence[VolumeEstimate], score: str = VOLUME_SCORE) -> dict[str, NDArray[np.float64]]:
    """What a split-conformal volume interval (:func:`segcp.calibration.fit_interval`,
    :meth:`~segcp.calibration.IntervalFit.bounds`) reads for ``score`` from n volume estimates:
    ``abs`` the estimates V̂, ``scaled`` V̂ and the spread σ̂ = √Σp(1−p)·u, ``cqr`` the raw
    interval [vol{p ≥ 1 − γ}, vol{p ≥ γ}]; float64 arrays of shape (n,), in the estimates' unit."""
    col = {name: np.array([getattr(e, name) for e in estimates], dtype=np.float64) for name in ("estimate", "sd", "lower", "upper")}
    if score == "abs":
        return {"estimate": col["estimate"]}
    if score == "scaled":
        return {"estimate": col["estimate"], "spread": col["sd"]}
    if score == "cqr":
        return {"lower": col["lower"], "upper": col["upper"]}
    raise SegcpError(f"unknown volume interval score {score!r}; choose one of abs, scaled, cqr")


def volume_record(volumes: Sequence[tuple[float, VolumeEstimate]], alphas: Sequence[float], score: str = VOLUME_SCORE) -> dict[str, Any]:
    """The direct volume interval of a structure fitted on n calibration cases' (true volume,
    estimate) at each α: ``{"score", "unit", "n", "q", "statement"}`` (``q`` ≥ 0 and ``statement`` one per α,
    a bare value for one α) — calib.json's ``volume`` field of two-sided sets
    (:func:`segcp.record.read_volume`); the interval of a new case is
    ``IntervalFit(score, α, n, q).bounds(**interval_inputs([estimate], score))``."""
    truth = np.array([v for v, _ in volumes], dtype=np.float64)
    inputs = interval_inputs([e for _, e in volumes], score)
    fits = [fit_interval(truth, alpha=a, score=score, **inputs) for a in alphas]
    qs = [max(f.q, 0.0) for f in fits]  # cqr's q may be < 0 (a raw interval wider than needed): kept at 0, never inverted
    units = {e.unit for _, e in volumes}
    if len(units) != 1:
        raise SegcpError(f"volume intervals: the calibration cases mix units ({', '.join(sorted(units))}): some have a spacing, some not")
    one = len(fits) == 1
    return {
        "score": score,
        "unit": units.pop(),
        "n": len(volumes),
        "q": qs[0] if one else qs,
        "statement": fits[0].guarantee if one else [f.guarantee for f in fits],
    }


def band_volumes(inner: ArrayLike, outer: ArrayLike, spacing: float | Sequence[float] | None = None) -> tuple[float, float]:
    """(vol(I), vol(O)) of a two-sided set: I ⊆ Y ⊆ O implies vol(I) ≤ vol(Y) ≤ vol(O), so the
    band's guarantee is the interval's (valid by containment)."""
    return mask_volume(inner, spacing), mask_volume(outer, spacing)


def band_volume_score(t: ArrayLike, count: int) -> float:
    """The smallest μ whose band volumes hold a volume of ``count`` voxels: |I_μ| ≤ count ≤ |O_μ|
    for the two-sided sets I_μ = {t < −μ}, O_μ = {t ≤ μ} of a signed score map t (any shape).

    Both conditions only get easier as μ grows, so [vol(I_μ), vol(O_μ)] is a nested family of
    volume intervals and this is its conformal score: with q the conformal quantile of the
    calibration cases' scores (their truth's voxel count), [vol(I_q), vol(O_q)] (q clipped at 0)
    holds a new case's volume with probability ≥ 1 − α — the band's sets calibrated for the
    volume itself, not for containment (much narrower; docs/band.md). −inf: any μ; +inf: none.

    Examples
    --------
    >>> t = np.array([-0.4, -0.2, 0.1, 0.3])
    >>> band_volume_score(t, 2)   # O holds 2 voxels from -0.2 on; I holds at most 2 from -0.1 on
    -0.1
    >>> band_volume_score(t, 3), band_volume_score(t, 0)
    (0.1, 0.4)
    """
    v = np.asarray(t, dtype=np.float64).ravel()
    m = int(count)
    if m < 0 or m > v.size:
        raise SegcpError(f"band volume score: a count of {count} voxels on a grid of {v.size}")
    if np.isnan(v).any():
        raise SegcpError("band volume score: the signed score map holds NaN")
    upper = -np.inf if m == 0 else float(np.partition(v, m - 1)[m - 1])  # the m-th smallest t enters O
    lower = -np.inf if v.size <= m else float(-np.partition(v, m)[m])  # the (m+1)-th largest -t leaves I
    return max(upper, lower)


# ---------------------------------------------------------------------- several volumes
def ejection_fraction(edv: ArrayLike, esv: ArrayLike) -> NDArray[np.float64]:
    """EF = (EDV − ESV) / EDV (a fraction; ×100 for percent), elementwise; NaN where EDV = 0."""
    ed, es = np.asarray(edv, dtype=np.float64), np.asarray(esv, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ed > 0, (ed - es) / ed, np.nan)


def ejection_fraction_spread(edv: ArrayLike, esv: ArrayLike, sd_ed: ArrayLike, sd_es: ArrayLike) -> NDArray[np.float64]:
    """The spread of EF by the delta method from the two volumes' spreads (taken independent):
    √((ESV / EDV²)² σ_ED² + (σ_ES / EDV)²), elementwise."""
    ed, es = np.asarray(edv, dtype=np.float64), np.asarray(esv, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.sqrt((es / ed**2 * np.asarray(sd_ed)) ** 2 + (np.asarray(sd_es) / ed) ** 2)


def ejection_fraction_bounds(
    ed_lower: ArrayLike, ed_upper: ArrayLike, es_lower: ArrayLike, es_upper: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """EF's range when EDV ∈ [ed_lower, ed_upper] and ESV ∈ [es_lower, es_upper] (interval
    arithmetic: EF = 1 − ESV / EDV grows with EDV and falls with ESV): (1 − es_upper / ed_lower,
    1 − es_lower / ed_upper); −inf below when ed_lower = 0."""
    edl, edu = np.asarray(ed_lower, dtype=np.float64), np.asarray(ed_upper, dtype=np.float64)
    esl, esu = np.asarray(es_lower, dtype=np.float64), np.asarray(es_upper, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        lo = np.where(edl > 0, 1.0 - esu / np.where(edl > 0, edl, 1.0), -np.inf)
        hi = np.where(edu > 0, 1.0 - esl / np.where(edu > 0, edu, 1.0), np.inf)
    return lo, hi
