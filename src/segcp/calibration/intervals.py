"""Split-conformal intervals for a scalar per exchangeable unit: a structure's volume per case, or a
quantity made of several volumes per patient (the ejection fraction of ED and ES).

Given, per calibration unit, the true value V and what the model says — an estimate V̂, a
spread σ̂ > 0, or a raw interval [l, h] — a nonconformity score s(V) is computed for each; with q
the conformal quantile of the n scores (the ⌈(n+1)(1−α)⌉-th smallest,
:func:`~segcp.calibration.conformal_quantile`), the interval {V : s(V) ≤ q} of a new unit holds its
true value with probability ≥ 1 − α (exchangeable units):

=========  ===========================  ===========================
``score``  s(V)                         interval
=========  ===========================  ===========================
``abs``    |V − V̂|                      [V̂ − q, V̂ + q]
``scaled`` |V − V̂| / σ̂                  [V̂ − q σ̂, V̂ + q σ̂]
``cqr``    max(l − V, V − h)            [l − q, h + q]   (Romano et al. 2019)
=========  ===========================  ===========================

``scaled`` takes any positive spread: the Bernoulli standard deviation of the probabilities,
their variance, the estimate itself (a relative error), the sampled volumes' standard deviation
(:mod:`segcp.volumes`); ``cqr`` any raw interval (probability thresholds, sampled quantiles, a
band's [vol(I), vol(O)]). Which one is tightest is a matter of measurement (docs/band.md). The
unit of exchangeability is whatever one row is: a case (image, volume) for a structure's volume;
a patient for a patient-level quantity. Numbers only: no images here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from segcp.calibration.crc import check_alpha, conformal_quantile
from segcp.errors import SegcpError

__all__ = ["INTERVAL_SCORES", "IntervalFit", "fit_interval", "interval_bounds", "interval_scores"]

#: The nonconformity scores (module docstring).
INTERVAL_SCORES = ("abs", "scaled", "cqr")


def _arr(x: ArrayLike | None, name: str, n: int | None = None) -> NDArray[np.float64]:
    if x is None:
        raise SegcpError(f"volume interval: this score needs {name}")
    a = np.asarray(x, dtype=np.float64).ravel()
    if n is not None and a.size != n:
        raise SegcpError(f"volume interval: {a.size} values of {name} for {n} units")
    if np.isnan(a).any():
        raise SegcpError(f"volume interval: a value of {name} is NaN")
    return a


def _inputs(
    score: str, estimate: ArrayLike | None, spread: ArrayLike | None, lower: ArrayLike | None, upper: ArrayLike | None, n: int | None
) -> tuple[NDArray[np.float64], ...]:
    if score not in INTERVAL_SCORES:
        raise SegcpError(f"unknown interval score {score!r}; choose one of {', '.join(INTERVAL_SCORES)}")
    if score == "cqr":
        lo = _arr(lower, "lower", n)
        hi = _arr(upper, "upper", lo.size)
        if np.any(lo > hi):
            raise SegcpError("volume interval: a raw interval has lower > upper")
        return lo, hi
    est = _arr(estimate, "estimate", n)
    if score == "abs":
        return (est,)
    sd = _arr(spread, "spread", est.size)
    if np.any(~(sd > 0)):
        raise SegcpError("volume interval: spreads must be positive (floor them, e.g. at one voxel)")
    return est, sd


def interval_scores(
    truth: ArrayLike,
    estimate: ArrayLike | None = None,
    *,
    score: str = "scaled",
    spread: ArrayLike | None = None,
    lower: ArrayLike | None = None,
    upper: ArrayLike | None = None,
) -> NDArray[np.float64]:
    """The nonconformity score of each unit (shape (n,), float64) from its true value."""
    v = _arr(truth, "truth")
    parts = _inputs(score, estimate, spread, lower, upper, v.size)
    if score == "abs":
        return np.abs(v - parts[0])
    if score == "scaled":
        return np.abs(v - parts[0]) / parts[1]
    return np.maximum(parts[0] - v, v - parts[1])


def interval_bounds(
    q: float,
    estimate: ArrayLike | None = None,
    *,
    score: str = "scaled",
    spread: ArrayLike | None = None,
    lower: ArrayLike | None = None,
    upper: ArrayLike | None = None,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The intervals {V : s(V) ≤ q} of units given what the model says: (lower, upper), float64
    arrays of one shape (n,)."""
    parts = _inputs(score, estimate, spread, lower, upper, None)
    if score == "abs":
        return parts[0] - q, parts[0] + q
    if score == "scaled":
        return parts[0] - q * parts[1], parts[0] + q * parts[1]
    return parts[0] - q, parts[1] + q


@dataclass(frozen=True)
class IntervalFit:
    """A calibrated interval: the score, the level α, n and the conformal quantile q of the scores."""

    score: str
    alpha: float
    n: int
    q: float

    def bounds(
        self, estimate: ArrayLike | None = None, *, spread: ArrayLike | None = None, lower: ArrayLike | None = None, upper: ArrayLike | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(lower, upper) of new units (:func:`interval_bounds` at this fit's q)."""
        return interval_bounds(self.q, estimate, score=self.score, spread=spread, lower=lower, upper=upper)

    @property
    def guarantee(self) -> str:
        """The statement, in words."""
        return f"P(value in [lower, upper]) >= {1 - self.alpha:g} (split conformal, marginal over exchangeable units)"


def fit_interval(
    truth: ArrayLike,
    estimate: ArrayLike | None = None,
    alpha: float = 0.1,
    *,
    score: str = "scaled",
    spread: ArrayLike | None = None,
    lower: ArrayLike | None = None,
    upper: ArrayLike | None = None,
) -> IntervalFit:
    """Calibrate an interval on n units: q = the conformal quantile of their scores at α.

    Examples
    --------
    >>> v = np.arange(1.0, 21.0); est = v + np.tile([-1.0, 1.0], 10) * np.arange(20) / 8
    >>> fit = fit_interval(v, est, 0.1, score="abs")
    >>> fit.q                                             # the 19th smallest |V - V_hat| of 20
    2.25
    >>> [b.tolist() for b in fit.bounds([10.0])]
    [[7.75], [12.25]]
    """
    a = check_alpha(alpha)
    s = interval_scores(truth, estimate, score=score, spread=spread, lower=lower, upper=upper)
    q = conformal_quantile(s, a)
    return IntervalFit(score, a, int(s.size), q)
