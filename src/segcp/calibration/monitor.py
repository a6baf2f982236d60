"""Monitoring after deployment: is a new stream of cases still exchangeable with the calibration set?

Every guarantee of segcp assumes that new cases are exchangeable with the calibration cases. When
a scanner, protocol, population or model changes, that assumption (and the guarantee) can fail
silently. These functions test it, numbers in, numbers out (no images, no files):

With labels (the truth of new cases becomes available):

* :func:`risk_track` — the running mean loss at λ̂ with a **time-uniform** two-sided confidence
  sequence (Waudby-Smith & Ramdas 2024, betting with predictable plug-in bets, the same capital
  process as the WSR p-value of :mod:`segcp.calibration.ltt`): with probability ≥ 1 − δ the true
  risk lies in [lower_t, upper_t] at *every* t simultaneously, so the bound may be read after each
  new case without a multiplicity correction. An alarm is raised when lower_t > α: the risk of
  the deployed sets is then (with confidence 1 − δ) above the level they were calibrated for.
* :func:`exchangeability_martingale` — a conformal test martingale (Vovk, Gammerman & Shafer 2005,
  §7.1; the "simple jumper" that MAPIE's ``OnlineMartingaleTest`` also uses) on the new cases'
  conformal p-values against the calibration scores and the new cases before them. Under
  exchangeability the smoothed conformal p-values are independent and uniform, so the
  jumper's wealth is a non-negative martingale with mean 1 and, by Ville's inequality, it ever
  reaches 1/level with probability ≤ level: a sequential test with a type-I error ≤ level at any
  stopping time. Why a martingale and not a permutation test: the cases arrive one by one and a
  verdict is wanted after each; a permutation test is valid only at a sample size fixed in
  advance (repeated looks inflate its error), the martingale at any time. The jumper bets on
  p-values being small (scores larger than before) *or* large (smaller), and switches between
  the two at rate ``jump``, so it follows a shift in either direction.

  The per-case score must not depend on the calibration cases (it is compared with theirs):
  e.g. :func:`required_lambda`, the smallest λ at which the case's own loss is ≤ α (a conformal
  score, a function of the case alone), not the loss at λ̂ (λ̂ is fitted to the calibration
  cases, whose losses at λ̂ are therefore not exchangeable with new ones).

Without labels:

* :func:`two_sample_shift` — per-case statistics of the sets that need no truth
  (:func:`case_statistics`: the set's size relative to the model's own mask, the peak
  probability, the low quantiles of the score map) of the new cases against the calibration
  cases', each by a two-sample test (Kolmogorov–Smirnov by default, Mann–Whitney as an option),
  with Holm's correction over the statistics (valid under any dependence between them). It is a
  one-shot test at a number of new cases fixed in advance (not sequential: looking after every
  case needs the martingale). The relative set size depends on λ̂, hence slightly on the
  calibration cases; with tens of calibration cases the effect on the test's level is negligible
  (λ̂ moves by O(1/n) when one case changes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from segcp.calibration.crc import TOL, check_level
from segcp.calibration.curves import LossCurves
from segcp.calibration.ltt import certified, check_delta, unit_losses, wsr_bets, wsr_log_capital
from segcp.errors import SegcpError

__all__ = [
    "TESTS",
    "MartingaleTest",
    "RiskTrack",
    "ShiftTest",
    "case_statistics",
    "conformal_pvalues",
    "exchangeability_martingale",
    "required_lambda",
    "risk_track",
    "simple_jumper",
    "two_sample_shift",
]

#: Two-sample tests of :func:`two_sample_shift`.
TESTS = ("ks", "mannwhitney")


def _scores(x: ArrayLike, what: str) -> NDArray[np.float64]:
    s = np.asarray(x, dtype=np.float64).ravel()
    if np.any(np.isnan(s)):
        raise SegcpError(f"{what}: a score is NaN")
    return s


# ---------------------------------------------------------------------- with labels: risk
@dataclass(frozen=True)
class RiskTrack:
    """The running risk of a stream of labelled cases at a fixed λ̂.

    Attributes
    ----------
    mean, lower, upper : ndarray, float64, shape (N,)
        After t cases: the mean loss, and a time-uniform confidence sequence for the risk
        (P(lower_t ≤ R ≤ upper_t for all t) ≥ 1 − δ), in the losses' units.
    alpha, delta : float
        The calibrated level and the confidence sequence's error.
    alarm_at : int or None
        The first t (1-based: the number of cases seen) with lower_t > α: the risk is above α
        with confidence 1 − δ. None: no alarm.
    """

    mean: NDArray[np.float64]
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    alpha: float
    delta: float
    alarm_at: int | None

    @property
    def alarm(self) -> bool:
        return self.alarm_at is not None


#: Bets of the confidence sequence are capped at this (WSR's c; the LTT p-value uses 1).
_CS_CAP = 0.75
#: The confidence sequence's bounds are computed on this many steps of [0, B], rounded outward.
_CS_GRID = 2048


def _bound_sequence(x: NDArray[np.float64], bets: NDArray[np.float64], log_threshold: float, side: int) -> NDArray[np.float64]:
    """For each t, the edge of the values m not rejected by time t (a running intersection).

    ``side=-1``: the upper bound inf{m : max_{s ≤ t} K_s(m) ≥ e^threshold}, K the capital of
    betting that the mean is below m (increasing in m), which is min_{s ≤ t} u_s with u_s the
    smallest m whose capital at s reaches the threshold; ``side=+1``: the lower bound, by symmetry
    (x → 1 − x). m runs over a grid of ``_CS_GRID`` steps of [0, 1] and u_s is the first grid
    value that qualifies (rounded outward: the bound stays valid), O(N · grid).
    """
    if side == +1:
        return 1.0 - _bound_sequence(1.0 - x, bets, log_threshold, -1)
    grid = np.linspace(0.0, 1.0, _CS_GRID + 1)
    first = np.full(x.size, _CS_GRID, dtype=np.int64)  # index of u_s on the grid (1.0 when none)
    step = max(1, 2_000_000 // max(x.size, 1))
    for k0 in range(0, grid.size, step):
        m = grid[k0 : k0 + step]
        reached = wsr_log_capital(x[:, None], m[None, :], bets[:, None]) >= log_threshold  # (N, chunk)
        hit = reached.any(axis=1)
        where = k0 + np.argmax(reached, axis=1)
        first = np.where(hit & (where < first), where, first)
    return np.minimum.accumulate(grid[first])


def risk_track(losses: ArrayLike, alpha: float, delta: float = 0.05, *, B: float = 1.0) -> RiskTrack:
    """The running mean loss of new cases at λ̂ and its time-uniform confidence sequence.

    Parameters
    ----------
    losses : array_like, float, shape (N,)
        The new cases' losses at the deployed λ̂, in [0, B], in arrival order.
    alpha : float
        The level the sets were calibrated for (an alarm when the lower bound exceeds it).
    delta : float
        The confidence sequence's error (split evenly between the two sides).
    B : float
        The losses' bound.

    Returns
    -------
    RiskTrack (bounds in the losses' units).

    Examples
    --------
    >>> import numpy as np
    >>> track = risk_track(np.r_[np.zeros(40), np.ones(20)], alpha=0.1)
    >>> track.alarm_at, round(float(track.upper[39]), 3)   # 40 perfect cases, then 20 failures
    (57, 0.129)
    """
    x = unit_losses(np.ravel(losses), B)
    if x.size == 0:
        raise SegcpError("risk monitoring needs at least one labelled case")
    d = check_delta(delta)
    log_threshold = math.log(2.0 / d)
    bets = wsr_bets(x, log_threshold, horizon=None, cap=_CS_CAP)
    mean = np.cumsum(x) / np.arange(1, x.size + 1)
    upper = _bound_sequence(x, bets, log_threshold, -1) * B
    lower = _bound_sequence(x, bets, log_threshold, +1) * B
    hit = np.flatnonzero(lower > alpha)
    return RiskTrack(mean * B, lower, upper, float(alpha), d, int(hit[0]) + 1 if hit.size else None)


# ---------------------------------------------------------------------- with labels: exchangeability
def required_lambda(curves: LossCurves, level: float) -> NDArray[np.float64]:
    """Each case's conformal score for monitoring: the smallest λ with L_i(λ) ≤ ``level``.

    ``curves``: monotone loss curves (n cases); returns float64, shape (n,): −inf when the loss
    starts at or below the level, +inf when it never gets there. A function of the case alone.
    """
    out = np.empty(curves.n)
    for i in range(curves.n):
        lo, hi = curves.offsets[i], curves.offsets[i + 1]
        start = curves.starts[i]
        if start <= level + TOL:
            out[i] = -np.inf
            continue
        after = start - np.cumsum(curves.drops[lo:hi])
        ok = np.flatnonzero(after <= level + TOL)
        out[i] = curves.breakpoints[lo + ok[0]] if ok.size else np.inf
    return out


def conformal_pvalues(reference: ArrayLike, new: ArrayLike, seed: int | np.random.Generator | None = 0) -> NDArray[np.float64]:
    """Online smoothed conformal p-values of new scores (large score = unusual).

    p_t = (#{s > s_t} + U_t (#{s = s_t} + 1)) / (n + t), over the n reference scores and the t − 1
    new scores before it, U_t uniform. Under exchangeability of the whole sequence the p_t are
    independent and uniform on [0, 1] (Vovk et al. 2005, §2.3), ties included.

    ``reference``: (n,) float, the calibration cases' scores; ``new``: (N,) float, in arrival
    order. Returns float64, shape (N,).
    """
    ref = _scores(reference, "reference scores")
    cur = _scores(new, "new scores")
    rng = np.random.default_rng(seed)
    u = rng.random(cur.size)
    ref_sorted = np.sort(ref)
    out = np.empty(cur.size)
    for t, s in enumerate(cur):
        before = cur[:t]
        greater = ref.size - np.searchsorted(ref_sorted, s, side="right") + int(np.sum(before > s))
        equal = int(np.searchsorted(ref_sorted, s, side="right") - np.searchsorted(ref_sorted, s, side="left")) + int(np.sum(before == s))
        out[t] = (greater + u[t] * (equal + 1)) / (ref.size + t + 1)
    return out


def simple_jumper(pvalues: ArrayLike, jump: float = 0.01) -> NDArray[np.float64]:
    """The Simple Jumper martingale (Vovk, Gammerman & Shafer 2005, §7.1) of p-values, shape (N,).

    Three bettors with betting functions f_ε(p) = 1 + ε (p − 1/2), ε ∈ {−1, 0, 1}, each of which
    integrates to 1 over [0, 1]; before each step a fraction ``jump`` of the total wealth is
    spread evenly over them. Starts at 1; returns the wealth after each p-value.
    """
    p = np.asarray(pvalues, dtype=np.float64).ravel()
    if np.any((p < 0) | (p > 1)) or np.any(np.isnan(p)):
        raise SegcpError("p-values must lie in [0, 1]")
    if not 0.0 < jump < 1.0:
        raise SegcpError(f"jump must be in (0, 1), got {jump!r}")
    eps = np.array([-1.0, 0.0, 1.0])
    wealth = np.full(3, 1.0 / 3.0)
    out = np.empty(p.size)
    for t, pt in enumerate(p):
        total = wealth.sum()
        wealth = (1.0 - jump) * wealth + jump / 3.0 * total
        wealth = wealth * (1.0 + eps * (pt - 0.5))
        out[t] = wealth.sum()
    return out


@dataclass(frozen=True)
class MartingaleTest:
    """A conformal test martingale over a stream of new cases.

    Attributes
    ----------
    pvalues : ndarray, float64, shape (N,)
        The new cases' online conformal p-values.
    martingale : ndarray, float64, shape (N,)
        The wealth after each case.
    level : float
        The test's level: an alarm when the wealth reaches 1/level (type-I error ≤ level).
    alarm_at : int or None
        The first t (1-based: the number of new cases seen) at which it did; None: no alarm.
    """

    pvalues: NDArray[np.float64]
    martingale: NDArray[np.float64]
    level: float
    alarm_at: int | None

    @property
    def alarm(self) -> bool:
        return self.alarm_at is not None


def exchangeability_martingale(
    reference: ArrayLike, new: ArrayLike, level: float = 0.05, *, jump: float = 0.01, seed: int | np.random.Generator | None = 0
) -> MartingaleTest:
    """Test, case by case, that new scores are exchangeable with the reference (calibration) scores.

    Parameters
    ----------
    reference : array_like, float, shape (n,)
        The calibration cases' scores (e.g. :func:`required_lambda` of their loss curves).
    new : array_like, float, shape (N,)
        The new cases' scores, computed the same way, in arrival order.
    level : float
        Type-I error: under exchangeability the alarm is raised with probability ≤ ``level``,
        however long the stream.
    jump : float
        The jumper's switching rate.
    seed : the tie-breaking randomisation of the p-values.

    Returns
    -------
    MartingaleTest.
    """
    a = check_level(level, "level")
    p = conformal_pvalues(reference, new, seed)
    m = simple_jumper(p, jump)
    hit = np.flatnonzero(m >= 1.0 / a)
    return MartingaleTest(p, m, a, int(hit[0]) + 1 if hit.size else None)


# ---------------------------------------------------------------------- without labels
def case_statistics(
    scores: ArrayLike, lam: float, *, probs: ArrayLike | None = None, model_mask: ArrayLike | None = None, quantiles: tuple[float, ...] = (0.01, 0.1)
) -> dict[str, float]:
    """Label-free statistics of one case's set C = {r ≤ λ̂}, for :func:`two_sample_shift`.

    Parameters
    ----------
    scores : array_like, float, any shape
        The case's score map r (+inf allowed).
    lam : float
        The deployed λ̂.
    probs : array_like, float, same shape, optional
        The model's foreground probabilities: gives ``peak_probability`` (max p) and, without
        ``model_mask``, the model's mask {p ≥ 0.5}.
    model_mask : array_like, bool, same shape, optional
        The model's own mask.
    quantiles : the quantiles of the score map reported as ``score_q<100·q>`` (its low tail, where
        the set lives).

    Returns
    -------
    dict: ``set_fraction`` (|C| / number of voxels), ``relative_size`` (|C| / max(|Ŷ|, 1), with a
    model mask), ``peak_probability`` (with probs), ``score_q1``, ``score_q10``… (finite scores).
    """
    r = np.asarray(scores, dtype=np.float64)
    if np.any(np.isnan(r)):
        raise SegcpError("case statistics: a score is NaN")
    in_set = r <= lam
    out = {"set_fraction": float(in_set.mean()) if r.size else math.nan}
    mask = None
    if model_mask is not None:
        mask = np.asarray(model_mask, dtype=bool)
    elif probs is not None:
        mask = np.asarray(probs, dtype=np.float64) >= 0.5
    if mask is not None:
        if mask.shape != r.shape:
            raise SegcpError(f"case statistics: the model's mask has shape {mask.shape} but the scores {r.shape}")
        out["relative_size"] = float(np.count_nonzero(in_set) / max(int(np.count_nonzero(mask)), 1))
    if probs is not None:
        out["peak_probability"] = float(np.max(probs)) if np.size(probs) else math.nan
    finite = r[np.isfinite(r)]
    for q in quantiles:
        out[f"score_q{100 * q:g}"] = float(np.quantile(finite, q)) if finite.size else math.nan
    return out


@dataclass(frozen=True)
class ShiftTest:
    """A two-sample test of several per-case statistics, Holm-corrected.

    Attributes
    ----------
    statistics : tuple of str
        The statistics tested (in order).
    pvalues : ndarray, float64, shape (k,)
        Each statistic's two-sample p-value.
    rejected : ndarray of bool, shape (k,)
        Holm's step-down at ``level`` (family-wise error ≤ level over the k statistics).
    level : float
    test : str
        ``"ks"`` or ``"mannwhitney"``.
    """

    statistics: tuple[str, ...]
    pvalues: NDArray[np.float64]
    rejected: NDArray[np.bool_]
    level: float
    test: str

    @property
    def alarm(self) -> bool:
        return bool(self.rejected.any())


def two_sample_shift(reference: Mapping[str, ArrayLike], new: Mapping[str, ArrayLike], level: float = 0.05, *, test: str = "ks") -> ShiftTest:
    """Have the label-free per-case statistics of new cases shifted from the calibration cases'?

    Parameters
    ----------
    reference, new : mapping name → array_like of float, shape (n,) and (N,)
        The same statistics (e.g. from :func:`case_statistics`) of the calibration and the new
        cases; NaN values (a statistic undefined for a case) are left out.
    level : float
        Family-wise error over the statistics (Holm).
    test : ``"ks"`` (Kolmogorov–Smirnov, any change of distribution) or ``"mannwhitney"`` (a
        shift of location; more power for it).

    Returns
    -------
    ShiftTest.
    """
    from scipy import stats  # here: importing segcp.calibration stays free of scipy

    a = check_level(level, "level")
    if test not in TESTS:
        raise SegcpError(f"unknown test {test!r}; choose one of {', '.join(TESTS)}")
    names = tuple(k for k in reference if k in new)
    if not names:
        raise SegcpError("two-sample test: the reference and the new cases share no statistic")
    pvals = []
    for k in names:
        x = np.asarray(reference[k], dtype=np.float64).ravel()
        y = np.asarray(new[k], dtype=np.float64).ravel()
        x, y = x[~np.isnan(x)], y[~np.isnan(y)]
        if x.size == 0 or y.size == 0:
            raise SegcpError(f"two-sample test: statistic {k!r} has no value in the {'reference' if x.size == 0 else 'new'} cases")
        res = stats.ks_2samp(x, y) if test == "ks" else stats.mannwhitneyu(x, y, alternative="two-sided")
        pvals.append(float(res.pvalue))
    p = np.asarray(pvals)
    return ShiftTest(names, p, certified(p, a, "holm"), a, test)
