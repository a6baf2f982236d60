"""Learn then Test: risk control with high probability, for losses that need not be monotone.

Learn then Test (Angelopoulos, Bates, Candès, Jordan, Lei 2021, "Learn then Test: calibrating
predictive algorithms to achieve risk control") turns risk control into multiple testing. For
each candidate λ the null hypothesis is H_λ : R(λ) > α, R(λ) = E[L(λ)] the risk of a new case;
a valid p-value p(λ) is computed from the n calibration losses L_i(λ) ∈ [0, B]; a procedure that
controls the family-wise error rate at δ rejects a set of λ, all of which are *certified*:

    P( R(λ) ≤ α for every certified λ ) ≥ 1 − δ,   hence   P( R(λ̂) ≤ α ) ≥ 1 − δ

for any λ̂ chosen among them, however it uses the calibration data (the probability is over the
calibration set; the risk R is the expectation over a new case). Unlike conformal risk control
nothing here needs L to be monotone in λ, so precision (1 − FDR) of a set can be controlled.

What is implemented
-------------------
p-values (:data:`PVALUES`), for losses in [0, B] (divided by B internally):

* ``"hb"`` — Hoeffding–Bentkus, the p-value of the LTT paper (its Prop. 3; MAPIE's
  ``compute_hoeffding_bentkus_p_value``): min(exp(−n h₁(R̂ ∧ α, α)), e · P(Bin(n, α) ≤ ⌈n R̂⌉)),
  h₁(a, b) = a log(a/b) + (1 − a) log((1 − a)/(1 − b)); with ``binary=True`` (0/1 losses) the
  exact binomial tail, without the factor e. Depends on the losses through their mean only.
* ``"wsr"`` — the betting p-value of Waudby-Smith & Ramdas (2024, "Estimating means of bounded
  random variables by betting"; the LTT paper's appendix, and the bound MAPIE's RCPS uses):
  the capital K_i = Π_{j ≤ i} (1 − ν_j (L_j − α)) of a gambler betting that the mean is below
  α is a non-negative supermartingale under H_λ, so p = min(1, 1 / max_i K_i) is valid by
  Ville's inequality. The bets are WSR's predictable plug-in ν_j = min(1, √(2 log(1/δ) /
  (n σ̂²_{j−1}))) with σ̂², μ̂ their running estimates (σ̂²₀ = 1/4, μ̂₀ = 1/2). It adapts to
  the losses' variance: much tighter than HB when the per-case losses are spread narrowly
  (per-image FDR), no better for 0/1 losses. The capital reads the cases one after another,
  so their order must not depend on the losses: segcp reads them in a seeded random order
  (``seed``; a calibration set listed by class or site is not in a random order).

Family-wise error control (:data:`PROCEDURES`):

* ``"fixed-sequence"`` — test the hypotheses in a fixed order at level δ each, stop at the first
  that is not rejected (LTT's fixed-sequence testing). The order runs from the most conservative
  λ: ``"ascending"`` (from the smallest sets up; a risk that grows with the set, such as FDR) or
  ``"descending"`` (from the largest sets down; a risk that shrinks as the set grows, such as
  FNR). It pays nothing for the number of candidates.
* ``"bonferroni"`` — each of m hypotheses at δ/m.
* ``"holm"`` — Holm's step-down (the smallest p-value at δ/m, the next at δ/(m−1), …): never
  rejects less than Bonferroni; MAPIE's default (``bonferroni_holm``).

Exact candidates. A calibration loss L_i is a right-continuous step function of λ, so every
p-value above is constant between consecutive breakpoints of the n curves. Fixed-sequence
testing over the *continuum* of λ (a data-independent order: all λ ascending, or descending) is
valid — if the first null λ₀ in the order is itself null, rejecting it has probability ≤ δ;
if it is a limit of nulls, the p-values there are limits of valid p-values (right-continuity,
Fatou) — and evaluating it only needs one λ per interval between breakpoints (its left end,
where the loss takes the interval's value). :func:`ltt_steps` does exactly that: no λ grid, and
λ̂ is the last certified interval's left end. Bonferroni and Holm need a finite candidate set
fixed before the calibration data are seen (a grid the user states, as MAPIE's ``np.arange(0,
1, 0.01)``): :func:`ltt_grid`. Over the data's own breakpoints they would not be valid (the
number of hypotheses would depend on the data), so only fixed-sequence testing runs on them.

Several risks at once. For risks j = 1..J with levels α_j over a family with a second,
finite parameter θ ∈ {θ_1..θ_K} (C_{λ,θ}; e.g. the normalisation of the probability map), the
null of a configuration is "some R_j > α_j". :func:`ltt_chains` runs one fixed sequence per
(θ_k, risk j) in that risk's direction at level δ/(J·K) (Bonferroni across the J·K chains: the
simplest graph of the graphical approach, Bretz et al. 2009, each chain passing its level down
its own sequence): a configuration is certified when every risk's chain certifies it.
:func:`ltt_grid` with several risks takes p = max_j p_j (an intersection-union test) on a stated
grid of configurations, with Bonferroni, Holm, or fixed-sequence testing along a path the user
orders (e.g. learnt on other data). The choice among certified configurations (any of them
carries the guarantee) is documented in :class:`MultiLTTResult`.

Everything is numpy/scipy, float64; losses are given, never computed here.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from segcp.calibration.crc import check_alpha, check_level
from segcp.calibration.curves import LossCurves
from segcp.errors import SegcpError

__all__ = [
    "ORDERS",
    "PROCEDURES",
    "PVALUES",
    "LTTResult",
    "MultiLTTResult",
    "StepLosses",
    "certified",
    "check_delta",
    "hb_pvalue",
    "ltt_chains",
    "ltt_grid",
    "ltt_steps",
    "pvalues",
    "unit_losses",
    "wsr_bets",
    "wsr_log_capital",
    "wsr_pvalue",
]

PVALUES = ("hb", "wsr")
PROCEDURES = ("fixed-sequence", "bonferroni", "holm")
ORDERS = ("ascending", "descending")

#: Candidates evaluated at once by :func:`ltt_steps` (a block of the union of breakpoints).
_BLOCK = 8192


# ---------------------------------------------------------------------- per-case step losses
@dataclass(frozen=True)
class StepLosses:
    """The losses of n cases as right-continuous step functions of λ (any shape, not only
    non-increasing as :class:`~segcp.calibration.LossCurves`).

    Case i has breakpoints ``breakpoints[i]`` (float64, shape (k_i,), non-decreasing, finite) and
    levels ``levels[i]`` (float64, shape (k_i + 1,)): L_i(λ) = levels[i][j] where j is the number
    of breakpoints ≤ λ (``levels[i][0]`` before the first, ``levels[i][-1]`` from the last on).
    The levels are stored, not their differences, so a loss computed as an exact ratio (e.g.
    FP / |C|) is returned bit for bit.
    """

    breakpoints: tuple[NDArray[np.float64], ...]
    levels: tuple[NDArray[np.float64], ...]

    @classmethod
    def single(cls, breakpoints: ArrayLike, levels: ArrayLike) -> StepLosses:
        """One case: breakpoints (k,) non-decreasing and finite, levels (k + 1,) finite."""
        b = np.asarray(breakpoints, dtype=np.float64).ravel()
        v = np.asarray(levels, dtype=np.float64).ravel()
        if v.size != b.size + 1:
            raise SegcpError(f"step losses: {b.size} breakpoints need {b.size + 1} levels, got {v.size}")
        if not (np.all(np.isfinite(b)) and np.all(np.isfinite(v))):
            raise SegcpError("step losses: breakpoints and levels must be finite")
        if b.size > 1 and np.any(b[1:] < b[:-1]):
            raise SegcpError("step losses: breakpoints must be sorted ascending")
        return cls((b,), (v,))

    @classmethod
    def from_curves(cls, curves: LossCurves) -> StepLosses:
        """The same n functions as monotone :class:`LossCurves` (levels = start − running drops)."""
        bs, vs = [], []
        for i in range(curves.n):
            lo, hi = curves.offsets[i], curves.offsets[i + 1]
            bs.append(curves.breakpoints[lo:hi].copy())
            vs.append(np.concatenate([[curves.starts[i]], curves.starts[i] - np.cumsum(curves.drops[lo:hi])]))
        return cls(tuple(bs), tuple(vs))

    @classmethod
    def concat(cls, parts: Iterable[StepLosses]) -> StepLosses:
        """The cases of several parts, in order (the reduce step)."""
        parts = list(parts)
        return cls(tuple(b for p in parts for b in p.breakpoints), tuple(v for p in parts for v in p.levels))

    def __add__(self, other: StepLosses) -> StepLosses:
        return StepLosses.concat([self, other])

    @property
    def n(self) -> int:
        """Number of cases."""
        return len(self.levels)

    def __len__(self) -> int:
        return self.n

    def take(self, indices: Sequence[int] | NDArray[np.integer]) -> StepLosses:
        """The cases ``indices``, in that order (a calibration subset)."""
        idx = [int(i) for i in np.asarray(indices, dtype=np.int64).ravel()]
        return StepLosses(tuple(self.breakpoints[i] for i in idx), tuple(self.levels[i] for i in idx))

    def evaluate(self, lam: float | ArrayLike) -> NDArray[np.float64]:
        """Each case's loss at each λ: shape (n,) for a scalar λ, else (n, len(λ)).

        For m values of λ the work is O(Σ_i k_i' log m + n·m), k_i' the breakpoints of case i
        within the λ range: each case's breakpoints in the range are placed among the sorted λ
        and counted by one cumulative sum over the (n, m) table, instead of n searches of m
        values (the LTT blocks: 10× faster for n = 300).
        """
        lams = np.atleast_1d(np.asarray(lam, dtype=np.float64)).ravel()
        if np.any(np.isnan(lams)):
            raise SegcpError("step losses: lambda is NaN")
        n, m = self.n, lams.size
        if m <= 2 or n == 0:
            out = np.empty((n, m))
            for i, (b, v) in enumerate(zip(self.breakpoints, self.levels)):
                out[i] = v[np.searchsorted(b, lams, side="right")]
            return out[:, 0] if np.ndim(lam) == 0 else out
        with np.errstate(invalid="ignore"):  # inf − inf (several λ = +∞): NaN, sorted neither way
            d = np.diff(lams)
        if np.all(d >= 0):  # the LTT blocks come sorted (ascending, or descending)
            order, srt = None, lams
        elif np.all(d <= 0):
            return self.evaluate(lams[::-1])[:, ::-1]
        else:
            order = np.argsort(lams, kind="stable")
            srt = lams[order]
        first, last = srt[0], srt[-1]
        base = np.empty(n, dtype=np.int64)
        rows, cols, pieces, offsets = [], [], [], np.zeros(n + 1, dtype=np.int64)
        for i, (b, v) in enumerate(zip(self.breakpoints, self.levels)):
            lo = int(np.searchsorted(b, first, side="right"))  # breakpoints ≤ the smallest λ
            hi = int(np.searchsorted(b, last, side="right"))
            base[i] = lo
            if hi > lo:  # each breakpoint in (first, last] counts from the first λ ≥ it on
                cols.append(np.searchsorted(srt, b[lo:hi], side="left"))
                rows.append(np.full(hi - lo, i, dtype=np.int64))
            pieces.append(v[lo : hi + 1])
            offsets[i + 1] = offsets[i] + hi + 1 - lo
        if cols:
            idx = np.bincount(np.concatenate(rows) * m + np.concatenate(cols), minlength=n * m).reshape(n, m)
            np.cumsum(idx, axis=1, out=idx)  # breakpoints of case i in (first, λ_j]
        else:
            idx = np.zeros((n, m), dtype=np.int64)
        idx += offsets[:-1, None]
        got = np.take(np.concatenate(pieces), idx)
        if order is None:
            return got
        out = np.empty((n, m))
        out[:, order] = got
        return out

    def candidates(self, low: float = -np.inf, high: float = np.inf) -> NDArray[np.float64]:
        """The sorted distinct breakpoints of all cases within [low, high]: where a loss changes."""
        if self.n == 0:
            return np.zeros(0)
        b = np.unique(np.concatenate(self.breakpoints))
        return b[(b >= low) & (b <= high)]


# ---------------------------------------------------------------------- p-values
def check_delta(delta: float) -> float:
    """δ as a float, or a one-line error if it is not in (0, 1)."""
    return check_level(delta, "delta")


def _scaled(alpha: float, B: float) -> float:
    """α / B, checked: the level on the losses' [0, 1] scale."""
    if not (math.isfinite(B) and B > 0):
        raise SegcpError(f"the loss bound B must be a positive number, got {B!r}")
    if B == 1.0:
        return check_alpha(alpha)
    try:
        a = float(alpha)
    except (TypeError, ValueError):
        raise SegcpError(f"alpha must be a number in (0, {B:g}), got {alpha!r}") from None
    if not 0.0 < a < B:
        raise SegcpError(f"alpha must be in (0, {B:g}) (the loss bound B), got {alpha!r}")
    return a / B


def unit_losses(losses: ArrayLike, B: float, what: str = "losses") -> NDArray[np.float64]:
    """Losses in [0, B] divided by B: float64 in [0, 1] (rounding below 1e-12 clipped), or a
    one-line error (NaN, outside the bound, B not a positive number)."""
    if not (math.isfinite(B) and B > 0):
        raise SegcpError(f"the loss bound B must be a positive number, got {B!r}")
    x = np.asarray(losses, dtype=np.float64) / B
    if np.any(np.isnan(x)) or np.any(x < -1e-12) or np.any(x > 1 + 1e-12):
        raise SegcpError(f"{what} must lie in [0, {B:g}]")
    return np.clip(x, 0.0, 1.0)


def hb_pvalue(mean_loss: ArrayLike, n: int, alpha: float, *, B: float = 1.0, binary: bool = False) -> NDArray[np.float64]:
    """Hoeffding–Bentkus p-values of H: R > α from mean calibration losses (LTT, Prop. 3).

    Parameters
    ----------
    mean_loss : array_like, float, shape (m,)
        R̂(λ), the mean of the n calibration losses at each candidate, in [0, B].
    n : int
        Number of calibration cases.
    alpha : float
        Risk level, in (0, B).
    B : float
        The losses' bound.
    binary : bool
        The losses are 0/1 (then B must be 1): the exact binomial tail replaces Bentkus' bound
        (no factor e), as in MAPIE's ``binary=True``.

    Returns
    -------
    ndarray, float64, shape (m,): min(1, Hoeffding, Bentkus), the same numbers as MAPIE's
    ``compute_hoeffding_bentkus_p_value`` (below 1).
    """
    if n < 1:
        raise SegcpError("Learn then Test needs at least one calibration case")
    a = _scaled(alpha, B)
    r = unit_losses(mean_loss, B, "mean losses")
    x = np.minimum(r, a)
    with np.errstate(divide="ignore", invalid="ignore"):
        h1 = np.where(x > 0, x * np.log(x / a), 0.0) + (1 - x) * np.log((1 - x) / (1 - a))
    hoeffding = np.exp(-n * h1)
    from scipy.stats import binom  # here: importing segcp.calibration stays free of scipy

    bentkus = (1.0 if binary else math.e) * binom.cdf(np.ceil(n * r), n, a)
    return np.minimum(np.minimum(hoeffding, bentkus), 1.0)


def wsr_bets(x: NDArray[np.float64], log_term: float, horizon: int | None = None, cap: float = 1.0) -> NDArray[np.float64]:
    """WSR's predictable bets ν_j for losses x (shape (n,) or (n, m), in [0, 1], rows = cases).

    ν_j = min(cap, √(2·log_term / (h_j σ̂²_{j−1}))) with the running estimates
    μ̂_j = (1/2 + Σ_{l ≤ j} x_l)/(j + 1), σ̂²_j = (1/4 + Σ_{l ≤ j} (x_l − μ̂_l)²)/(j + 1), σ̂²₀ = 1/4,
    and h_j = ``horizon`` (a fixed n: the p-value) or j·log(1 + j) (``horizon=None``: the
    time-uniform confidence sequence of WSR, Sec. 3). ν_j uses cases before j only.
    """
    n = x.shape[0]
    steps = np.arange(1, n + 1, dtype=np.float64).reshape((n,) + (1,) * (x.ndim - 1))
    mu = (0.5 + np.cumsum(x, axis=0)) / (steps + 1)
    var = (0.25 + np.cumsum((x - mu) ** 2, axis=0)) / (steps + 1)
    prev = np.concatenate([np.full((1,) + x.shape[1:], 0.25), var[:-1]], axis=0)
    h = float(horizon) if horizon is not None else steps * np.log1p(steps)
    return np.minimum(cap, np.sqrt(2.0 * log_term / (h * prev)))


def wsr_log_capital(x: NDArray[np.float64], m: float | NDArray[np.float64], bets: NDArray[np.float64], side: int = -1) -> NDArray[np.float64]:
    """log K_i, the running log-capital of betting on the mean of x against m (shape of x).

    ``side=-1``: K_i = Π_{j ≤ i} (1 − ν_j (x_j − m)), large when the mean is *below* m (evidence
    against "mean ≥ m"); ``side=+1``: Π (1 + ν_j (x_j − m)), evidence against "mean ≤ m". Every
    factor is positive for x, m ∈ [0, 1] and ν ≤ 1 (m ∈ (0, 1)), so the capital is a test
    supermartingale under the null and P(max_i K_i ≥ 1/δ) ≤ δ (Ville).
    """
    return np.cumsum(np.log1p(side * bets * (x - m)), axis=0)


def wsr_pvalue(losses: ArrayLike, alpha: float, delta: float, *, B: float = 1.0, seed: int | None = 0) -> NDArray[np.float64]:
    """Waudby-Smith–Ramdas betting p-values of H: R > α, one per candidate.

    Parameters
    ----------
    losses : array_like, float, shape (n, m)
        L_i(λ_j) in [0, B]: n calibration cases (rows, in an order independent of the losses)
        at m candidates.
    alpha : float
        Risk level, in (0, B).
    delta : float
        The level the bets are tuned for (ν uses log(1/δ)); any δ gives a valid p-value.
    B : float
        The losses' bound.
    seed : int or None
        The cases are read in the order of a random permutation drawn with this seed (the
        capital process needs an order that does not depend on the losses: a calibration set
        listed by class or by site is not); None: in the given order.

    Returns
    -------
    ndarray, float64, shape (m,): min(1, 1 / max_i K_i).
    """
    L = np.asarray(losses, dtype=np.float64)
    if L.ndim != 2 or L.shape[0] < 1:
        raise SegcpError(f"losses must be a (cases, candidates) array with at least one case, got shape {L.shape}")
    a = _scaled(alpha, B)
    x = unit_losses(L, B)
    if seed is not None:
        x = x[np.random.default_rng(seed).permutation(x.shape[0])]
    bets = wsr_bets(x, math.log(1.0 / check_delta(delta)), horizon=x.shape[0])
    log_k = wsr_log_capital(x, a, bets).max(axis=0)
    return np.minimum(1.0, np.exp(-np.maximum(log_k, 0.0)))


def pvalues(
    losses: ArrayLike, alpha: float, delta: float, *, pvalue: str = "hb", B: float = 1.0, binary: bool = False, seed: int | None = 0
) -> NDArray[np.float64]:
    """The p-values of H_λ: R(λ) > α for losses (n, m): ``pvalue`` ``"hb"`` or ``"wsr"`` (``seed``:
    WSR's order of the cases, :func:`wsr_pvalue`)."""
    L = np.asarray(losses, dtype=np.float64)
    if L.ndim != 2 or L.shape[0] < 1:
        raise SegcpError(f"losses must be a (cases, candidates) array with at least one case, got shape {L.shape}")
    if pvalue == "hb":
        return hb_pvalue(L.mean(axis=0), L.shape[0], alpha, B=B, binary=binary)
    if pvalue == "wsr":
        return wsr_pvalue(L, alpha, delta, B=B, seed=seed)
    raise SegcpError(f"unknown p-value {pvalue!r}; choose one of {', '.join(PVALUES)}")


# ---------------------------------------------------------------------- FWER procedures
def certified(p: ArrayLike, delta: float, procedure: str = "fixed-sequence") -> NDArray[np.bool_]:
    """Which hypotheses a procedure rejects at family-wise error rate δ.

    Parameters
    ----------
    p : array_like, float, shape (m,)
        p-values, in the testing order for ``"fixed-sequence"`` (the first is tested first).
    delta : float
        Family-wise error rate, in (0, 1).
    procedure : ``"fixed-sequence"``, ``"bonferroni"`` or ``"holm"``.

    Returns
    -------
    ndarray of bool, shape (m,): True where H is rejected (the candidate is certified).
    """
    d = check_delta(delta)
    q = np.asarray(p, dtype=np.float64).ravel()
    m = q.size
    out = np.zeros(m, dtype=bool)
    if m == 0:
        return out
    if procedure == "fixed-sequence":
        fail = np.flatnonzero(~(q <= d))
        out[: fail[0] if fail.size else m] = True
    elif procedure == "bonferroni":
        out = q <= d / m
    elif procedure == "holm":
        order = np.argsort(q, kind="stable")
        ok = q[order] <= d / (m - np.arange(m))
        k = int(np.argmin(ok)) if not ok.all() else m
        out[order[:k]] = True
    else:
        raise SegcpError(f"unknown procedure {procedure!r}; choose one of {', '.join(PROCEDURES)}")
    return out


# ---------------------------------------------------------------------- results
@dataclass(frozen=True)
class LTTResult:
    """Outcome of Learn then Test for one risk.

    Attributes
    ----------
    lambda_ : float or None
        λ̂: the last certified candidate in the testing order (the largest certified λ for
        ``ascending``, the smallest for ``descending``, the same rule for Bonferroni/Holm); None
        when no candidate is certified (no λ has the guarantee: more data, or larger α or δ).
    alpha, delta : float
        Risk level and family-wise error rate: P(R(λ̂) ≤ α) ≥ 1 − δ.
    n : int
        Number of calibration cases.
    pvalue, procedure, order : str
        What was used.
    certified : ndarray, float64, shape (k,)
        The certified candidates (ascending). With :func:`ltt_steps` each stands for the
        interval from it to the next breakpoint.
    low, high : float
        :func:`ltt_steps`: every λ with ``low`` ≤ λ < ``high`` is certified (NaN for a grid or
        when none).
    empirical_risk : float
        R̂(λ̂), the mean calibration loss at λ̂ (NaN when none).
    p_value : float
        p(λ̂) (NaN when none).
    tested : int
        How many hypotheses were evaluated.
    """

    lambda_: float | None
    alpha: float
    delta: float
    n: int
    pvalue: str
    procedure: str
    order: str
    certified: NDArray[np.float64]
    low: float = math.nan
    high: float = math.nan
    empirical_risk: float = math.nan
    p_value: float = math.nan
    tested: int = 0

    @property
    def feasible(self) -> bool:
        """True when some λ is certified."""
        return self.lambda_ is not None


def _check_order(order: str) -> None:
    if order not in ORDERS:
        raise SegcpError(f"unknown order {order!r}; choose one of {', '.join(ORDERS)}")


def _check_losses_matrix(losses: ArrayLike, m: int, n_risks: int) -> NDArray[np.float64]:
    L = np.asarray(losses, dtype=np.float64)
    if L.ndim == 2:
        L = L[None]
    if L.ndim != 3 or L.shape[0] != n_risks or L.shape[2] != m or L.shape[1] < 1:
        raise SegcpError(
            f"losses must have shape (cases, {m}) or ({n_risks}, cases, {m}) for {n_risks} risk(s) and {m} candidates, got {np.shape(losses)}"
        )
    return L


def ltt_grid(
    losses: ArrayLike,
    lambdas: ArrayLike,
    alpha: float | Sequence[float],
    delta: float,
    *,
    pvalue: str = "hb",
    procedure: str = "fixed-sequence",
    order: str = "ascending",
    B: float | Sequence[float] = 1.0,
    binary: bool = False,
    seed: int | None = 0,
) -> LTTResult:
    """Learn then Test over a stated, finite set of candidates (a grid, or a path).

    Parameters
    ----------
    losses : array_like, float, shape (n, m), or (J, n, m) for J risks
        L_i(λ_j) of n calibration cases at the m candidates (for J risks: one matrix per risk).
    lambdas : array_like, float, shape (m,)
        The candidates, fixed before the calibration data are seen (any order). They are tested
        by increasing value (``order="ascending"``) or decreasing value (``"descending"``); λ̂ is
        the last certified one in that order (for Bonferroni and Holm too: the largest certified
        λ when ascending, the smallest when descending). For a path through a two-parameter
        family, pass the configurations' positions along the path (0..m−1) and keep the mapping.
    alpha : float or sequence of J floats
        Risk level(s).
    delta : float
        Family-wise error rate.
    pvalue, procedure : see :data:`PVALUES`, :data:`PROCEDURES`.
    B : float or J floats
        The losses' bound(s).
    binary : bool
        0/1 losses (HB's exact binomial tail).
    seed : int or None
        WSR's order of the cases (:func:`wsr_pvalue`).

    Returns
    -------
    LTTResult; with J risks a candidate is certified when p = max_j p_j is rejected, and
    ``empirical_risk`` is the first risk's.
    """
    lam = np.asarray(lambdas, dtype=np.float64).ravel()
    alphas = [float(a) for a in np.atleast_1d(np.asarray(alpha, dtype=np.float64))]
    bounds = [float(b) for b in np.broadcast_to(np.asarray(B, dtype=np.float64), (len(alphas),))]
    L = _check_losses_matrix(losses, lam.size, len(alphas))
    d = check_delta(delta)
    _check_order(order)
    p = np.max([pvalues(L[j], alphas[j], d, pvalue=pvalue, B=bounds[j], binary=binary, seed=seed) for j in range(len(alphas))], axis=0)
    seq = np.argsort(lam, kind="stable")
    if order == "descending":
        seq = seq[::-1]
    ok = np.zeros(lam.size, dtype=bool)
    ok[seq] = certified(p[seq], d, procedure)
    n = L.shape[1]
    if not ok.any():
        return LTTResult(None, alphas[0], d, n, pvalue, procedure, order, np.zeros(0), tested=lam.size)
    hits = np.flatnonzero(ok)
    pick = int(seq[np.flatnonzero(ok[seq])[-1]])  # the last certified one in the testing order
    return LTTResult(
        float(lam[pick]),
        alphas[0],
        d,
        n,
        pvalue,
        procedure,
        order,
        np.sort(lam[hits]),
        empirical_risk=float(L[0, :, pick].mean()),
        p_value=float(p[pick]),
        tested=lam.size,
    )


def _union_blocks(parts: Sequence[NDArray[np.float64]], low: float, high: float) -> Iterator[NDArray[np.float64]]:
    """The sorted distinct values of the arrays ``parts`` (each sorted ascending) within
    (low, high], in ascending blocks, computed lazily (fixed-sequence testing usually stops
    early). Each block is every value in (previous end, horizon]; the horizon is chosen so that
    the parts hold about ``_BLOCK`` values there (between half and twice that, by bisection on
    the count, unless a single value repeats more often)."""
    starts = np.array([int(np.searchsorted(b, low, side="right")) for b in parts], dtype=np.int64)
    ends = np.array([int(np.searchsorted(b, high, side="right")) for b in parts], dtype=np.int64)
    live = [i for i in range(len(parts)) if starts[i] < ends[i]]

    def upto(h: float) -> NDArray[np.int64]:
        return np.array([int(np.searchsorted(parts[i], h, side="right")) for i in live], dtype=np.int64)

    lo = low
    while live:
        begin, stop = starts[live], ends[live]
        remaining = int((stop - begin).sum())
        if remaining <= 2 * _BLOCK:
            horizon = high
        else:  # bisection on the value between lo and the largest value left
            a, b = lo, max(float(parts[i][e - 1]) for i, e in zip(live, stop))
            for _ in range(64):
                mid = a + (b - a) / 2
                if not a < mid < b:  # the bracket is two adjacent floats: one value repeats often
                    break
                count = int((np.minimum(upto(mid), stop) - begin).sum())
                if count < _BLOCK // 2:
                    a = mid
                elif count > 2 * _BLOCK:
                    b = mid
                else:
                    b = mid
                    break
            horizon = b
        cut = np.minimum(upto(horizon), stop) if horizon < high else stop
        vals = np.unique(np.concatenate([parts[i][s:e] for i, s, e in zip(live, begin, cut)]))
        if vals.size:
            yield vals
        starts[live] = cut
        live = [i for i in live if starts[i] < ends[i]]
        lo = horizon


def _hypotheses(losses: StepLosses, order: str, low: float, high: float) -> Iterator[NDArray[np.float64]]:
    """The representatives of the intervals on which every loss is constant, within [low, high],
    in testing order, in blocks: each interval [b, b') between consecutive distinct breakpoints
    is represented by its left end b, where every loss takes the interval's value; the first
    interval starts at ``low`` (−∞ allowed: the losses before any breakpoint)."""
    if order == "ascending":
        yield np.array([low])
        yield from _union_blocks(losses.breakpoints, low, high)
    else:
        mirrored = [-b[::-1] for b in losses.breakpoints]
        # descending from ``high``: its interval's left end is the largest breakpoint <= high
        # (or low when there is none), then every breakpoint below it down to ``low``
        top = [b[np.searchsorted(b, high, side="right") - 1] for b in losses.breakpoints if np.searchsorted(b, high, side="right") > 0]
        first = max([t for t in top if t > low], default=low)
        yield np.array([first])
        if first > low:
            for blk in _union_blocks(mirrored, -first, -low):
                vals = -blk
                vals = vals[vals > low]
                if vals.size:
                    yield vals
            yield np.array([low])


def ltt_steps(
    losses: StepLosses | LossCurves,
    alpha: float,
    delta: float,
    *,
    pvalue: str = "hb",
    order: str = "ascending",
    B: float = 1.0,
    binary: bool = False,
    lambda_min: float = -np.inf,
    lambda_max: float = np.inf,
    seed: int | None = 0,
) -> LTTResult:
    """Exact Learn then Test by fixed-sequence testing over every λ (no grid).

    The hypotheses are all λ ∈ [``lambda_min``, ``lambda_max``] in the order ``order``; they are
    evaluated on the intervals between consecutive breakpoints of the n calibration losses (on
    each, every p-value is constant), block by block until the first interval that is not
    rejected, so the work grows with how far the sequence gets, not with the number of
    breakpoints.

    Parameters
    ----------
    losses : StepLosses or LossCurves
        The n calibration cases' losses, in [0, B], in an order independent of their values.
    alpha, delta : float
        Risk level and family-wise error rate: P(R(λ̂) ≤ α) ≥ 1 − δ.
    pvalue : ``"hb"`` or ``"wsr"``.
    order : ``"ascending"`` (start at ``lambda_min``: the smallest sets) or ``"descending"``
        (start at ``lambda_max``).
    B : float
        The losses' bound.
    binary : bool
        0/1 losses (HB's exact binomial tail).
    lambda_min, lambda_max : float
        The family's range of λ.
    seed : int or None
        WSR's order of the cases (:func:`wsr_pvalue`).

    Returns
    -------
    LTTResult: ``certified`` holds the left ends of the certified intervals; λ̂ is the last one
    in the testing order (ascending: the largest certified left end, whose interval reaches up
    to ``high``, the first uncertified breakpoint; descending: ``low``, the smallest λ from which
    on everything up to ``lambda_max`` is certified).

    Examples
    --------
    >>> import numpy as np
    >>> fdr = StepLosses.concat([StepLosses.single([0.1, 0.5], [0.0, 0.02, 0.4])] * 200)
    >>> ltt_steps(fdr, alpha=0.1, delta=0.1).lambda_   # certified up to 0.5, where FDR = 0.4
    0.1
    """
    steps = StepLosses.from_curves(losses) if isinstance(losses, LossCurves) else losses
    d = check_delta(delta)
    a = float(alpha)
    _check_order(order)
    if pvalue not in PVALUES:
        raise SegcpError(f"unknown p-value {pvalue!r}; choose one of {', '.join(PVALUES)}")
    if not lambda_min <= lambda_max:
        raise SegcpError(f"lambda_min ({lambda_min}) must not exceed lambda_max ({lambda_max})")
    n = steps.n
    if n < 1:
        raise SegcpError("Learn then Test needs at least one calibration case")
    passed: list[NDArray[np.float64]] = []
    tested, stop, last_p, last_r = 0, math.nan, math.nan, math.nan
    for reps in _hypotheses(steps, order, float(lambda_min), float(lambda_max)):
        L = steps.evaluate(reps)
        p = pvalues(L, a, d, pvalue=pvalue, B=B, binary=binary, seed=seed)
        ok = certified(p, d, "fixed-sequence")
        k = int(ok.sum())
        tested += reps.size if k == reps.size else k + 1
        if k:
            passed.append(reps[:k])
            last_p, last_r = float(p[k - 1]), float(L[:, k - 1].mean())
        if k < reps.size:
            stop = float(reps[k])
            break
    if not passed:
        return LTTResult(None, a, d, n, pvalue, "fixed-sequence", order, np.zeros(0), tested=tested)
    cert = np.concatenate(passed)
    lam = float(cert[-1])
    end = math.nextafter(float(lambda_max), math.inf)  # every λ ≤ lambda_max
    if order == "ascending":
        low, high = float(lambda_min), (stop if not math.isnan(stop) else end)
    else:
        low, high = lam, end
    return LTTResult(
        lam, a, d, n, pvalue, "fixed-sequence", order, np.sort(cert), low=low, high=high, empirical_risk=last_r, p_value=last_p, tested=tested
    )


# ---------------------------------------------------------------------- several risks
@dataclass(frozen=True)
class MultiLTTResult:
    """Outcome of :func:`ltt_chains`: several risks over a two-parameter family (θ_k, λ).

    Attributes
    ----------
    config : int or None
        k̂, the index of the chosen θ (None: no configuration is certified).
    lambda_ : float or None
        λ̂ for θ_k̂.
    alphas : tuple of float
        The risks' levels α_j.
    delta : float
        Family-wise error rate: P(R_j(θ_k̂, λ̂) ≤ α_j for every j) ≥ 1 − δ.
    regions : list of (low, high) per θ
        Every λ with low ≤ λ < high is certified for θ_k (every risk's chain certifies it); NaN
        when none. Each chain ran at level δ / (J·K).
    front : ndarray, float64, shape (q, 2 + J)
        The certified configurations on the Pareto front of the empirical risks: rows (k, λ,
        R̂_1, …, R̂_J), none of them beaten in every risk by another certified configuration.
    risks : ndarray, float64, shape (J,)
        R̂_j(θ_k̂, λ̂), the chosen configuration's mean calibration losses.
    objective : int
        The risk minimised by the choice.

    The choice (documented): any certified configuration carries the guarantee, so the choice may
    use the calibration data freely. segcp takes, among the certified ones, the configuration
    with the smallest empirical risk ``objective`` (by default the first risk — e.g. the FNR,
    asking for the most complete set among those whose FDR is also certified), ties broken by
    the other risks in order, then by the smaller λ and θ index. It is on the Pareto front.
    """

    config: int | None
    lambda_: float | None
    alphas: tuple[float, ...]
    delta: float
    regions: list[tuple[float, float]]
    front: NDArray[np.float64]
    risks: NDArray[np.float64]
    objective: int = 0
    chains: list[list[LTTResult]] = field(default_factory=list, repr=False)

    @property
    def feasible(self) -> bool:
        return self.config is not None


def _pareto(points: NDArray[np.float64]) -> NDArray[np.bool_]:
    """Rows of ``points`` (q, J) not dominated by another (≤ in all, < in one); lower is better."""
    keep = np.ones(points.shape[0], dtype=bool)
    for i in range(points.shape[0]):
        if keep[i]:
            dominated = np.all(points <= points[i], axis=1) & np.any(points < points[i], axis=1)
            if dominated.any():
                keep[i] = False
    return keep


def ltt_chains(
    losses: Sequence[Sequence[StepLosses | LossCurves]],
    alphas: Sequence[float],
    delta: float,
    *,
    orders: Sequence[str],
    pvalue: str = "hb",
    B: Sequence[float] | float = 1.0,
    lambda_min: float = -np.inf,
    lambda_max: float = np.inf,
    objective: int = 0,
    seed: int | None = 0,
) -> MultiLTTResult:
    """Several risks at once over a family with a finite second parameter θ (exact in λ).

    Parameters
    ----------
    losses : K sequences of J step losses
        ``losses[k][j]``: the n calibration cases' losses of risk j for θ_k, as functions of λ
        (the same n cases, in the same order, everywhere).
    alphas : J floats
        The levels α_j.
    delta : float
        Family-wise error rate over all configurations and risks.
    orders : J of ``"ascending"``/``"descending"``
        Each risk's testing direction (from where it is smallest: ascending for a risk that
        grows with the set, FDR; descending for one that shrinks, FNR).
    pvalue : ``"hb"`` or ``"wsr"``.
    B : the risks' bounds.
    lambda_min, lambda_max : the range of λ.
    objective : int
        The risk whose empirical value the choice minimises (see :class:`MultiLTTResult`).
    seed : int or None
        WSR's order of the cases (:func:`wsr_pvalue`).

    Returns
    -------
    MultiLTTResult. Each (θ_k, risk j) chain is a fixed sequence in λ at level δ/(J·K); by the
    union bound the probability that any certified configuration has some R_j > α_j is ≤ δ.
    """
    K = len(losses)
    J = len(alphas)
    if K == 0 or J == 0 or any(len(row) != J for row in losses):
        raise SegcpError(f"losses must hold, for each of the K >= 1 configurations, one step-loss set per risk ({J})")
    if len(orders) != J:
        raise SegcpError(f"orders must give one direction per risk ({J}), got {len(orders)}")
    if not 0 <= objective < J:
        raise SegcpError(f"objective must be a risk index in [0, {J}), got {objective}")
    bounds = [float(b) for b in np.broadcast_to(np.asarray(B, dtype=np.float64), (J,))]
    d = check_delta(delta)
    level = d / (J * K)
    regions: list[tuple[float, float]] = []
    chains: list[list[LTTResult]] = []
    rows: list[NDArray[np.float64]] = []
    for k, row in enumerate(losses):
        steps = [StepLosses.from_curves(s) if isinstance(s, LossCurves) else s for s in row]
        if len({s.n for s in steps}) != 1:
            raise SegcpError(f"configuration {k}: every risk needs the same calibration cases")
        res = [
            ltt_steps(s, alphas[j], level, pvalue=pvalue, order=orders[j], B=bounds[j], lambda_min=lambda_min, lambda_max=lambda_max, seed=seed)
            for j, s in enumerate(steps)
        ]
        chains.append(res)
        if not all(r.feasible for r in res):
            regions.append((math.nan, math.nan))
            continue
        lo = max(r.low for r in res)
        hi = min(r.high for r in res)
        if not lo < hi:
            regions.append((math.nan, math.nan))
            continue
        regions.append((lo, hi))
        reps = np.unique(np.concatenate([[lo], *[s.candidates(lo, hi) for s in steps]]))
        reps = reps[reps < hi]
        risks = np.stack([s.evaluate(reps).mean(axis=0) for s in steps], axis=1)  # (q, J)
        rows.append(np.column_stack([np.full(reps.size, k, dtype=np.float64), reps, risks]))
    if not rows:
        return MultiLTTResult(None, None, tuple(float(a) for a in alphas), d, regions, np.zeros((0, 2 + J)), np.full(J, np.nan), objective, chains)
    table = np.concatenate(rows)
    front = table[_pareto(table[:, 2:])]
    keys = [table[:, 2 + objective]] + [table[:, 2 + j] for j in range(J) if j != objective]
    # np.lexsort sorts by its last key first: objective, then the other risks, then λ, then k
    best = int(np.lexsort([table[:, 0], table[:, 1], *keys[::-1]])[0])
    return MultiLTTResult(
        int(table[best, 0]), float(table[best, 1]), tuple(float(a) for a in alphas), d, regions, front, table[best, 2:].copy(), objective, chains
    )
