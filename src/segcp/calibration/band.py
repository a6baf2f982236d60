"""Two-sided sets calibrated jointly: λ_out for the outer set and λ_in for the inner set.

A case's band holds at (λ_out, λ_in) — I = {t < −λ_in} ⊆ Y ⊆ O = {t ≤ λ_out} (or, with a
tolerance, outer recall and inner precision ≥ τ) — exactly when λ_out ≥ a and λ_in ≥ b, its
outer and inner scores (:meth:`segcp.losses.band.BandLoss.side_scores`). Any calibration of the
pair from the n calibration cases' (a_i, b_i) that gives P(a ≤ λ_out, b ≤ λ_in) ≥ 1 − α for an
exchangeable new case is valid. Three are implemented (``scheme``):

``shared`` (default; the issue's one λ)
    λ_out = λ_in = the conformal quantile of max(a_i, b_i) (⌈(n+1)(1−α)⌉-th smallest). Both
    sides move on the one scale of t (a probability ½ ± μ, or a margin of μ mm in and out).
``split``
    Two scales from a random part of the calibration cases (``split`` of them, seeded): w_out,
    w_in = the (1 − α/2) empirical quantiles of a and b there; then on the other cases the
    conformal quantile q of max(a_i / w_out, b_i / w_in): λ_out = q·w_out, λ_in = q·w_in. Exact
    (the scales are fixed before the quantile's cases are looked at); adapts to a side that fails
    more often or by more, at the price of the cases spent on the scales.
``bonferroni``
    λ_out = the conformal quantile of the a_i at α/2, λ_in that of the b_i at α/2 (a union bound:
    P(fail) ≤ α/2 + α/2). Exact, uses every case for both, conservative.

Which is tighter is measured in docs/band.md (mean |O \\ I| / |Y| at the same joint coverage).
λ's are never below 0 (the sets are nested only there); an infinite quantile (more than α of
the calibration cases are never inside any band) is a one-line error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from segcp.calibration.crc import check_alpha, check_calibration_size, conformal_quantile
from segcp.errors import SegcpError

__all__ = ["BAND_SCHEMES", "BandLambdas", "band_lambdas"]

#: The joint calibrations of (λ_out, λ_in); the first is the default.
BAND_SCHEMES = ("shared", "split", "bonferroni")


@dataclass(frozen=True)
class BandLambdas:
    """The calibrated pair and how it was obtained.

    Attributes
    ----------
    lambda_out, lambda_in : float ≥ 0 — O = {t ≤ λ_out}, I = {t < −λ_in}.
    scheme : one of :data:`BAND_SCHEMES`.
    alpha : the level: P(band holds) ≥ 1 − α.
    n : calibration cases given; n_quantile : those the final quantile used (``split``: the rest).
    scale_out, scale_in : the path's scales (``shared``: 1, 1; ``bonferroni``: NaN).
    """

    lambda_out: float
    lambda_in: float
    scheme: str
    alpha: float
    n: int
    n_quantile: int
    scale_out: float = 1.0
    scale_in: float = 1.0


def _scores(x: ArrayLike, what: str) -> NDArray[np.float64]:
    a = np.asarray(x, dtype=np.float64).ravel()
    if np.isnan(a).any():
        raise SegcpError(f"band calibration: a {what} score is NaN")
    return a


def _finite(lam: float, alpha: float, side: str) -> float:
    if not math.isfinite(lam):
        raise SegcpError(
            f"band calibration: no finite lambda_{side} at alpha={alpha:g}: more than alpha of the calibration "
            "cases are never inside any band (e.g. a model that predicts nothing, for morph)"
        )
    return max(float(lam), 0.0)


def _up(x: float) -> float:
    """x rounded up by a few ulps: a case with a / w ≤ q (in floating point) then has a ≤ q·w."""
    return float(np.nextafter(np.nextafter(np.nextafter(x, np.inf), np.inf), np.inf)) if math.isfinite(x) else x


def _scale(v: NDArray[np.float64], level: float) -> float:
    """The empirical ``level`` quantile of side scores (no interpolation, ±inf allowed)."""
    return float(np.quantile(v, level, method="higher"))


def band_lambdas(outer: ArrayLike, inner: ArrayLike, alpha: float, *, scheme: str = "shared", split: float = 0.5, seed: int = 0) -> BandLambdas:
    """λ_out and λ_in from the calibration cases' outer scores a_i and inner scores b_i.

    Parameters
    ----------
    outer, inner : array_like, float, shape (n,) — a_i and b_i (±inf allowed: −inf for a side
        that holds at every λ, e.g. the outer side of an empty truth; +inf: never).
    alpha : level in (0, 1): P(I ⊆ Y ⊆ O) ≥ 1 − α for a new exchangeable case.
    scheme : ``shared``, ``split`` or ``bonferroni`` (module docstring).
    split : ``split`` only: the fraction of the cases (drawn with ``seed``) that sets the scales.

    Examples
    --------
    >>> a = np.linspace(0.0, 0.19, 20); b = np.linspace(0.0, 0.38, 20)   # the inner side fails by more
    >>> r = band_lambdas(a, b, 0.1)
    >>> r.lambda_out == r.lambda_in == float(b[18])
    True
    >>> r = band_lambdas(a, b, 0.1, scheme="bonferroni")          # the 20th of 20 on each side
    >>> (r.lambda_out, r.lambda_in) == (float(a[19]), float(b[19]))
    True
    """
    a_scores, b_scores = _scores(outer, "outer"), _scores(inner, "inner")
    if a_scores.shape != b_scores.shape:
        raise SegcpError(f"band calibration: {a_scores.size} outer scores but {b_scores.size} inner scores")
    a = check_alpha(alpha)
    n = a_scores.size
    if scheme == "shared":
        q = _finite(conformal_quantile(np.maximum(a_scores, b_scores), a), a, "out")
        return BandLambdas(q, q, scheme, a, n, n)
    if scheme == "bonferroni":
        lo = _finite(conformal_quantile(a_scores, a / 2), a, "out")
        li = _finite(conformal_quantile(b_scores, a / 2), a, "in")
        return BandLambdas(lo, li, scheme, a, n, n, math.nan, math.nan)
    if scheme != "split":
        raise SegcpError(f"unknown band scheme {scheme!r}; choose one of {', '.join(BAND_SCHEMES)}")
    if not 0.0 < split < 1.0:
        raise SegcpError(f"band calibration: split must be in (0, 1), got {split!r}")
    k = round(split * n)
    check_calibration_size(n - k, a)
    if k < 1:
        raise SegcpError(f"band calibration: split={split:g} of {n} cases leaves none to set the scales")
    perm = np.random.default_rng(seed).permutation(n)
    fit, cal = perm[:k], perm[k:]
    w = [_scale(s[fit], 1.0 - a / 2) for s in (a_scores, b_scores)]
    top = max([abs(x) for x in w if math.isfinite(x)] + [1.0])
    w = [min(max(x, 1e-12 * top), 1e300) for x in w]  # a side that (almost) never fails: λ ≈ 0 there
    q = conformal_quantile(np.maximum(a_scores[cal] / w[0], b_scores[cal] / w[1]), a)
    lo = _finite(_up(q * w[0]), a, "out")
    li = _finite(_up(q * w[1]), a, "in")
    return BandLambdas(lo, li, scheme, a, n, int(cal.size), w[0], w[1])
