"""Exact conformal risk control and the conformal quantile.

Conformal risk control (Angelopoulos et al., 2024) with losses bounded by B:

    λ̂ = inf{ λ : n/(n+1) · R̂_n(λ) + B/(n+1) ≤ α },   R̂_n(λ) = (1/n) Σ_i L_i(λ),

gives E[L_{n+1}(λ̂)] ≤ α for exchangeable data. Because every L_i is a step function, the
total Σ_i L_i(λ) only changes at the merged breakpoints: sort them once (O(P log P)),
accumulate the drops, and λ̂ is the first breakpoint at which the total reaches
α(n+1) − B. No λ grid, no root finding, and λ̂ is exactly the smallest admissible λ.

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
from numpy.typing import ArrayLike

from segcp.calibration.curves import LossCurves
from segcp.errors import SegcpError

__all__ = [
    "TOL",
    "CRCResult",
    "check_alpha",
    "min_calibration_size",
    "check_calibration_size",
    "crc_lambda",
    "conformal_quantile",
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


def check_alpha(alpha: float) -> float:
    """Return α as a float, or raise a one-line error if it is not in (0, 1)."""
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise SegcpError(f"alpha must be a number in (0, 1), got {alpha!r}") from None
    if not (0.0 < a < 1.0) or math.isnan(a):
        raise SegcpError(f"alpha must be in (0, 1), got {alpha!r}")
    return a


def min_calibration_size(alpha: float, B: float = 1.0) -> int:
    """Smallest n for which some λ can satisfy the CRC bound (losses reaching 0).

    The bound needs α(n+1) − B ≥ 0, i.e. n ≥ B/α − 1 (for B = 1 the same condition as
    ⌈(n+1)(1−α)⌉ ≤ n for the conformal quantile).
    """
    a = check_alpha(alpha)
    return max(1, math.ceil(B / a - 1.0 - 1e-9))


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


def crc_lambda(
    curves: LossCurves,
    alpha: float,
    *,
    B: float = 1.0,
    lambda_min: float = -np.inf,
) -> CRCResult:
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
    b, totals = curves.merged

    def total_at(lam: float) -> float:
        """Σ_i L_i(λ), all drops at breakpoints ≤ λ applied."""
        k = int(np.searchsorted(b, lam, side="right"))
        return total0 if k == 0 else float(totals[k - 1])

    if total_at(lambda_min) <= target + TOL:
        lam = float(lambda_min)
    else:
        ok = np.flatnonzero(totals <= target + TOL)
        if ok.size == 0:
            final = total0 - float(curves.drops.sum())
            raise SegcpError(
                f"no lambda satisfies the risk bound at alpha={a:g}: even the largest sets "
                f"leave a mean calibration loss of {final / n:.4g} (some sets never cover "
                f"their ground truth)"
            )
        # First breakpoint where the total reaches the target; the total is non-increasing
        # along b, so no smaller λ qualifies (and λ > lambda_min here).
        lam = float(b[ok[0]])
    risk = total_at(lam) / n
    return CRCResult(lam, a, n, risk, (n * risk + B) / (n + 1))


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
