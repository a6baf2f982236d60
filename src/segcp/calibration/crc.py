"""Exact conformal risk control and the conformal quantile.

Conformal risk control (Angelopoulos et al., 2024) with losses bounded by B:

    λ̂ = inf{ λ : n/(n+1) · R̂_n(λ) + B/(n+1) ≤ α },   R̂_n(λ) = (1/n) Σ_i L_i(λ),

gives E[L_{n+1}(λ̂)] ≤ α for exchangeable data. Because every L_i is a step function, the
total Σ_i L_i(λ) only changes at the breakpoints, and λ̂ is the first breakpoint at which
the total reaches α(n+1) − B: a weighted selection over all breakpoints
(:func:`first_breakpoint_reaching`, O(P) expected; no full sort). No λ grid, no root
finding, and λ̂ is exactly the smallest admissible λ.

Floating point: totals are sums of P drops, so they carry a relative error of order
P·1e-16. Comparisons use an absolute tolerance of ``TOL`` (1e-9 in loss units, i.e. a
billionth of one image's maximal loss): a λ whose total exceeds the target by less than
that is accepted. This is far below any statistical resolution, and it makes λ̂ agree with
the textbook quantile on 0/1 losses where α(n+1) is an integer up to rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from segcp.calibration.curves import LossCurves
from segcp.errors import SegcpError

__all__ = [
    "TOL",
    "CRCResult",
    "check_alpha",
    "check_calibration_size",
    "check_level",
    "conformal_quantile",
    "crc_lambda",
    "first_breakpoint_reaching",
    "min_calibration_size",
]

TOL = 1e-9


@dataclass(frozen=True)
class CRCResult:
    """Outcome of a calibration.

    Attributes
    ----------
    lambda_ : float
        The calibrated parameter λ̂.
    alpha : float
        Target risk level.
    n : int
        Number of calibration images.
    empirical_risk : float
        R̂_n(λ̂), the mean calibration loss at λ̂.
    bound : float
        n/(n+1)·R̂_n(λ̂) + B/(n+1), which is ≤ α (up to ``TOL``).
    """

    lambda_: float
    alpha: float
    n: int
    empirical_risk: float
    bound: float


def check_level(value: float, what: str) -> float:
    """A level (α, δ, a test's level) as a float, or a one-line error naming it (``what``) if it is
    not a number in (0, 1) (NaN included)."""
    try:
        a = float(value)
    except (TypeError, ValueError):
        raise SegcpError(f"{what} must be a number in (0, 1), got {value!r}") from None
    if not 0.0 < a < 1.0:
        raise SegcpError(f"{what} must be in (0, 1), got {value!r}")
    return a


def check_alpha(alpha: float) -> float:
    """Return α as a float, or raise a one-line error if it is not in (0, 1)."""
    return check_level(alpha, "alpha")


def min_calibration_size(alpha: float, B: float = 1.0) -> int:
    """Smallest n for which some λ can satisfy the CRC bound (losses reaching 0).

    The bound needs α(n+1) − B ≥ 0, i.e. n ≥ B/α − 1 (for B = 1 the same condition as
    ⌈(n+1)(1−α)⌉ ≤ n for the conformal quantile).
    """
    a = check_alpha(alpha)
    need = B / a - 1.0 - 1e-9
    if not need < 2.0**53:  # a subnormal α: B/α overflows (no machine holds that many images anyway)
        raise SegcpError(f"alpha={alpha!r} is too small: the guarantee would need more than 2^53 calibration images")
    return max(1, math.ceil(need))


def check_calibration_size(n: int, alpha: float, B: float = 1.0) -> None:
    """Raise a clear error when n calibration images cannot give the guarantee at α."""
    if n <= 0:
        raise SegcpError("the calibration set is empty: at least one labelled image is needed")
    need = min_calibration_size(alpha, B)
    if n < need:
        raise SegcpError(
            f"alpha={alpha:g} needs at least {need} calibration images "
            f"(n >= 1/alpha - 1), got {n}: no lambda can give the guarantee; "
            f"use more images or a larger alpha"
        )


def crc_lambda(curves: LossCurves, alpha: float, *, B: float = 1.0, lambda_min: float = -np.inf) -> CRCResult:
    """Exact conformal-risk-control threshold over step-function loss curves.

    Parameters
    ----------
    curves : LossCurves
        The n calibration curves, losses in [0, B].
    alpha : float
        Target risk in (0, 1).
    B : float
        Upper bound of the loss (1 for FNR and 0/1 losses).
    lambda_min : float
        The smallest λ of the method's domain, returned when the bound already holds
        before any breakpoint (e.g. every calibration mask empty).

    Returns
    -------
    CRCResult with ``lambda_`` the smallest λ satisfying the bound.

    Raises
    ------
    SegcpError
        α outside (0, 1); n = 0; n < B/α − 1; or no λ satisfies the bound because some
        curves never reach 0 (sets that never cover the truth).

    Examples
    --------
    >>> from segcp.calibration import LossCurves, fnr_curve
    >>> curves = LossCurves.concat([fnr_curve([0.1, 0.3]), fnr_curve([0.2])] * 10)
    >>> res = crc_lambda(curves, alpha=0.3)   # target: 0.3·21 − 1 = 5.3 ≥ 10·0.5
    >>> res.lambda_, res.n
    (0.2, 20)
    """
    a = check_alpha(alpha)
    n = curves.n
    check_calibration_size(n, a, B)
    target = a * (n + 1) - B  # Σ_i L_i(λ) must be ≤ target
    if np.any(curves.starts > B + TOL) or np.any(curves.ends() < -TOL):
        raise SegcpError(f"losses must lie in [0, {B:g}] for conformal risk control")
    total0 = float(curves.starts.sum())
    b, d = curves.breakpoints, curves.drops

    def total_at(lam: float) -> float:
        """Σ_i L_i(λ), all drops at breakpoints ≤ λ applied."""
        return total0 - float(d[b <= lam].sum())

    limit = target + TOL
    if total_at(lambda_min) <= limit:
        lam = float(lambda_min)
    else:
        final = total0 - float(d.sum())
        if not final <= limit:
            raise SegcpError(
                f"no lambda satisfies the risk bound at alpha={a:g}: even the largest sets "
                f"leave a mean calibration loss of {final / n:.4g} (some sets never cover "
                f"their ground truth)"
            )
        # The total is non-increasing in λ and reaches the target at the largest breakpoint:
        # λ̂ is the smallest breakpoint where it does (and λ̂ > lambda_min here).
        lam = first_breakpoint_reaching(b, d, total0, limit)
    risk = total_at(lam) / n
    return CRCResult(lam, a, n, risk, (n * risk + B) / (n + 1))


#: Below this many candidate breakpoints the selection sorts what is left.
_SORT_BELOW = 4096
#: The bracketing first round: a strided sample of this many breakpoints estimates where λ̂ lies
#: and the candidates within ``_MARGIN`` sample positions of that estimate are kept.
_SAMPLE = 4096
_MARGIN = 96


def first_breakpoint_reaching(breakpoints: NDArray[np.float64], drops: NDArray[np.float64], total0: float, limit: float) -> float:
    """The smallest breakpoint v with ``total0 − Σ_{b_j ≤ v} d_j ≤ limit``; O(P) expected.

    ``breakpoints`` (P,) float64 in any order, ``drops`` (P,) float64 ≥ 0; the caller has
    checked that the largest breakpoint qualifies. A weighted quickselect: the median of the
    remaining candidates (``np.partition``, linear) splits them into those below, equal to and
    above it; the drops below (plus every drop already known to lie below all candidates)
    decide which side holds the answer; the pivot's value itself is the answer when the drops
    up to and including its ties reach the limit. Each round at least halves the candidates
    (ties only help), so the work is ~2P element operations against P·log P for sorting all
    breakpoints, which is what the exact reduce did before (the answer is the same breakpoint;
    the totals are float64 sums in another order, equal to within P·1e-16 relative, far below
    ``TOL``).

    A first round brackets the answer instead of halving: a strided sample of ``_SAMPLE``
    breakpoints, sorted, with its drops scaled by the stride, estimates the answer; the two
    sample values ``_MARGIN`` positions either side of the estimate split the candidates into
    three parts, and two comparisons and two masked sums over P say which part holds it (most
    often the middle one, a few per cent of P). It only chooses which candidates the rounds
    keep — a wrong estimate keeps a larger part — so the answer is the same breakpoint.
    """
    vals, w = breakpoints, drops
    below = 0.0  # Σ drops of the breakpoints below every remaining candidate
    if vals.size > max(_SORT_BELOW, 4 * _SAMPLE):
        vals, w, below = _bracket(vals, w, total0, limit)
    while vals.size > _SORT_BELOW:
        mid = vals.size // 2
        pivot = np.partition(vals, mid)[mid]
        lo = vals < pivot
        with_lo = below + float(w[lo].sum())
        if total0 - with_lo <= limit:  # reached strictly below the pivot
            vals, w = vals[lo], w[lo]
            continue
        eq = vals == pivot
        with_eq = with_lo + float(w[eq].sum())
        if total0 - with_eq <= limit:
            return float(pivot)
        below = with_eq
        hi = vals > pivot
        vals, w = vals[hi], w[hi]
    order = np.argsort(vals, kind="stable")
    hit = np.flatnonzero(total0 - (below + np.cumsum(w[order])) <= limit)
    # the first candidate where the running total reaches the limit (its ties only lower the
    # total); none only if this sum's rounding differs from the caller's check: the largest
    return float(vals[order][hit[0] if hit.size else -1])


def _bracket(
    vals: NDArray[np.float64], w: NDArray[np.float64], total0: float, limit: float
) -> tuple[NDArray[np.float64], NDArray[np.float64], float]:
    """The bracketing round of :func:`first_breakpoint_reaching`: (the candidates that hold the
    answer, their drops, Σ drops of the breakpoints below them all)."""
    step = vals.size // _SAMPLE
    order = np.argsort(vals[::step], kind="stable")
    sample = vals[::step][order]
    reached = np.searchsorted(step * np.cumsum(w[::step][order]), total0 - limit)  # the estimate's sample position
    last = sample.size - 1  # the estimate is past the sample when its drops do not reach the limit
    lo_v = sample[min(max(int(reached) - _MARGIN, 0), last)]
    hi_v = sample[min(int(reached) + _MARGIN, last)]
    lo = vals < lo_v
    with_lo = float(np.add.reduce(w, where=lo))
    if total0 - with_lo <= limit:  # reached strictly below lo_v
        return vals[lo], w[lo], 0.0
    hi = vals <= hi_v
    with_hi = float(np.add.reduce(w, where=hi))
    if total0 - with_hi <= limit:  # in [lo_v, hi_v]: the usual case
        keep = hi & ~lo
        return vals[keep], w[keep], with_lo
    return vals[~hi], w[~hi], with_hi


def conformal_quantile(scores: ArrayLike, alpha: float) -> float:
    """The conformal quantile: the ⌈(n+1)(1−α)⌉-th smallest of n scores.

    With C_λ ∋ Y ⇔ λ ≥ s(Y), thresholding at this value gives P(Y ∈ C) ≥ 1 − α.
    Scores may be ±inf (a truth never/always covered); NaN is an error.

    Examples
    --------
    >>> conformal_quantile(range(1, 20), alpha=0.1)   # n = 19: the 18th smallest
    18.0
    """
    a = check_alpha(alpha)
    s = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    if np.any(np.isnan(s)):
        raise SegcpError("conformal quantile: a calibration score is NaN")
    n = s.size
    check_calibration_size(n, a)
    k = math.ceil((n + 1) * (1.0 - a) - TOL)
    return float(s[k - 1])
