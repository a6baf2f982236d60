"""Per-image loss curves: non-increasing, right-continuous step functions of λ.

Every segcp method builds, per image, a nested family of sets C_λ (λ larger → set larger).
Against a ground-truth mask the loss of that family is a non-increasing step function of λ,

    L(λ) = start − Σ_{j : b_j ≤ λ} d_j,     d_j ≥ 0,

with breakpoints b_j (where a ground-truth pixel enters the set) and drops d_j. That is all
calibration ever needs. A :class:`LossCurves` holds the curves of n images in one flat
(CSR-like) layout, so that curves computed on different machines or batches merge by
concatenation (map: image → curve; reduce: curves → λ̂).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cached_property

import numpy as np
from numpy.typing import ArrayLike, NDArray

from segcp.errors import SegcpError

__all__ = ["LossCurves", "coverage_quantile_score", "fnr_curve", "zero_one_curve"]


@dataclass(frozen=True)
class LossCurves:
    """The loss curves of n images, stored flat.

    Attributes
    ----------
    starts : ndarray, shape (n,), float64
        L_i(−∞): the loss of image i before any breakpoint.
    offsets : ndarray, shape (n + 1,), int64
        Image i owns ``breakpoints[offsets[i]:offsets[i + 1]]``.
    breakpoints : ndarray, shape (P,), float64
        λ values at which the loss drops, sorted ascending within each image.
    drops : ndarray, shape (P,), float64
        The (non-negative) size of each drop.

    The loss is right-continuous: at λ = b_j the drop d_j has happened, matching sets of
    the form C_λ = {p : r_p ≤ λ}.
    """

    starts: NDArray[np.float64]
    offsets: NDArray[np.int64]
    breakpoints: NDArray[np.float64]
    drops: NDArray[np.float64]

    # ------------------------------------------------------------------ construction
    @classmethod
    def single(cls, breakpoints: ArrayLike, drops: ArrayLike, start: float) -> LossCurves:
        """One image's curve from its breakpoints (any order) and drops (same length)."""
        b = np.asarray(breakpoints, dtype=np.float64).ravel()
        d = np.asarray(drops, dtype=np.float64).ravel()
        if b.shape != d.shape:
            raise SegcpError(f"loss curve: {b.size} breakpoints but {d.size} drops")
        if not (np.all(np.isfinite(b)) and np.all(np.isfinite(d)) and np.isfinite(start)):
            raise SegcpError("loss curve: breakpoints, drops and start must be finite")
        if np.any(d < 0):
            raise SegcpError("loss curve: drops must be non-negative (the loss is non-increasing)")
        order = np.argsort(b, kind="stable")
        return cls(starts=np.array([float(start)]), offsets=np.array([0, b.size], dtype=np.int64), breakpoints=b[order], drops=d[order])

    @classmethod
    def _sorted_single(cls, b: NDArray[np.float64], d: NDArray[np.float64], start: float) -> LossCurves:
        """One curve from already sorted, validated breakpoints (internal fast path)."""
        return cls(np.array([float(start)]), np.array([0, b.size], dtype=np.int64), b, d)

    @classmethod
    def empty(cls) -> LossCurves:
        """No images (n = 0): the neutral element of :meth:`concat`."""
        return cls(starts=np.zeros(0), offsets=np.zeros(1, dtype=np.int64), breakpoints=np.zeros(0), drops=np.zeros(0))

    @classmethod
    def concat(cls, parts: Iterable[LossCurves]) -> LossCurves:
        """Merge the curves of several batches (the reduce step); order is kept."""
        parts = list(parts)
        if not parts:
            return cls.empty()
        # each part's offsets past its first, shifted by the breakpoints of the parts before it
        # (one repeat of the shifts instead of one addition per part: a chunk holds many one-image parts)
        ends = np.concatenate([p.offsets[1:] for p in parts])
        sizes = np.fromiter((p.breakpoints.size for p in parts), dtype=np.int64, count=len(parts))
        counts = np.fromiter((p.offsets.size - 1 for p in parts), dtype=np.int64, count=len(parts))
        shifts = np.repeat(np.cumsum(sizes) - sizes, counts)
        return cls(
            starts=np.concatenate([p.starts for p in parts]),
            offsets=np.concatenate([[0], ends + shifts]).astype(np.int64),
            breakpoints=np.concatenate([p.breakpoints for p in parts]),
            drops=np.concatenate([p.drops for p in parts]),
        )

    def __add__(self, other: LossCurves) -> LossCurves:
        return LossCurves.concat([self, other])

    # ------------------------------------------------------------------ queries
    @property
    def n(self) -> int:
        """Number of images."""
        return int(self.starts.size)

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> LossCurves:
        if not -self.n <= i < self.n:
            raise IndexError(i)
        i %= self.n
        lo, hi = self.offsets[i], self.offsets[i + 1]
        return LossCurves.single(self.breakpoints[lo:hi], self.drops[lo:hi], self.starts[i])

    def take(self, indices: Sequence[int] | NDArray[np.integer]) -> LossCurves:
        """The curves of the images ``indices`` (in that order): a calibration subset.

        The same arrays as concatenating ``self[i]`` for each index, built in one gather.
        """
        idx = np.asarray(indices, dtype=np.int64).ravel()
        if idx.size and (idx.min() < -self.n or idx.max() >= self.n):
            raise IndexError(f"image index out of range for {self.n} curves")
        idx %= max(self.n, 1)
        lo, hi = self.offsets[idx], self.offsets[idx + 1]
        sizes = hi - lo
        pos = np.repeat(lo - np.concatenate([[0], np.cumsum(sizes)[:-1]]), sizes) + np.arange(int(sizes.sum()))
        return LossCurves(
            starts=self.starts[idx].astype(np.float64),
            offsets=np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
            breakpoints=self.breakpoints[pos],
            drops=self.drops[pos],
        )

    def ends(self) -> NDArray[np.float64]:
        """L_i(+∞) for each image, shape (n,).

        Each image's drops are summed on their own (``np.add.reduceat``): a difference of one
        global cumulative sum would carry the rounding error of all P drops before it (about
        1e-5 for 10 000 images of 256², far above ``TOL``).
        """
        sums = np.zeros(self.n)
        counts = np.diff(self.offsets)
        full = counts > 0
        if full.any():
            sums[full] = np.add.reduceat(self.drops, self.offsets[:-1][full])
        return self.starts - sums

    @cached_property
    def owners(self) -> NDArray[np.intp]:
        """Image index of every breakpoint, shape (P,)."""
        return np.repeat(np.arange(self.n), np.diff(self.offsets))

    def evaluate(self, lam: float | ArrayLike) -> NDArray[np.float64]:
        """Each image's loss at each λ: shape (n,) for a scalar λ, else (n, len(λ)).

        Evaluated from the definition (the drops with b ≤ λ, summed in order per image, as
        a running sum): per image one cumulative sum and a binary search per λ, so many λ
        (a guarantee check over a thousand splits) cost little more than one.
        """
        lams = np.atleast_1d(np.asarray(lam, dtype=np.float64))
        out = np.empty((self.n, lams.size))
        for i in range(self.n):
            lo, hi = self.offsets[i], self.offsets[i + 1]
            cum = np.concatenate([[0.0], np.cumsum(self.drops[lo:hi])])
            out[i] = self.starts[i] - cum[np.searchsorted(self.breakpoints[lo:hi], lams, side="right")]
        return out[:, 0] if np.ndim(lam) == 0 else out

    def zero_one_scores(self) -> NDArray[np.float64] | None:
        """The step location of each 0/1 curve — its score: L_i(λ) = 1{λ < score_i} (+inf: never
        reaches 0, −inf: 0 from the start); None when the curves are not all 0/1 steps."""
        counts = np.diff(self.offsets)
        if np.any(counts > 1) or not np.all(np.isin(self.starts, (0.0, 1.0))):
            return None
        out = np.where(self.starts == 0.0, -np.inf, np.inf)
        has = counts == 1
        out[has] = self.breakpoints[self.offsets[:-1][has]]
        return out


# ---------------------------------------------------------------------- common curves
def fnr_curve(truth_scores: ArrayLike, *, compress: bool = True) -> LossCurves:
    """The false-negative-rate curve of one image.

    Parameters
    ----------
    truth_scores : array_like, float, shape (m,)
        The nonconformity score r_p of every ground-truth pixel, for a family
        C_λ = {p : r_p ≤ λ}. +inf marks a pixel that never enters the set (it counts in
        |Y| and never drops). m = 0 (empty ground truth) gives the constant curve 0: the
        FNR of an image without foreground is 0 and the image still counts in n.
    compress : bool
        Merge tied scores into one breakpoint (smaller, same function).

    Returns
    -------
    LossCurves with n = 1: L(λ) = |{p ∈ Y : r_p > λ}| / |Y|.
    """
    r = np.sort(np.asarray(truth_scores, dtype=np.float64).ravel())  # one sort; the checks read its ends
    m = r.size
    if m == 0:
        return LossCurves.single([], [], 0.0)
    last = float(r[-1])
    if last != last or r[0] == -np.inf:  # NaN sorts last, -inf first
        raise SegcpError("FNR curve: ground-truth scores must be finite or +inf")
    if last == np.inf:
        r = r[: np.searchsorted(r, np.inf, side="left")]  # +inf: counts in |Y|, never drops
    if not compress:
        return LossCurves._sorted_single(r, np.full(r.size, 1.0 / m), 1.0)
    if r.size == 0:
        return LossCurves._sorted_single(r, np.zeros(0), 1.0)
    # tied scores merged into one breakpoint: the first of each run (np.unique, minus its overhead)
    first = np.empty(r.size + 1, dtype=bool)  # first[i]: r[i] starts a run; first[-1]: the end
    first[0] = first[-1] = True
    np.not_equal(r[1:], r[:-1], out=first[1:-1])
    bounds = np.flatnonzero(first)
    counts = np.subtract(bounds[1:], bounds[:-1], dtype=np.float64)  # run lengths, exact in float64
    counts /= m
    return LossCurves._sorted_single(r[bounds[:-1]], counts, 1.0)


def zero_one_curve(score: float) -> LossCurves:
    """The 0/1 curve L(λ) = 1{λ < score}: loss 1 until λ reaches the image's score.

    An infinite score (the set never contains the truth) gives the constant curve 1.
    """
    s = float(score)
    if np.isnan(s):
        raise SegcpError("0/1 loss curve: the score is NaN")
    if s == np.inf:
        return LossCurves.single([], [], 1.0)
    if s == -np.inf:
        return LossCurves.single([], [], 0.0)
    return LossCurves.single([s], [1.0], 1.0)


def coverage_quantile_score(truth_scores: ArrayLike, tau: float) -> float:
    """Smallest λ with coverage |C_λ ∩ Y| / |Y| ≥ τ, for C_λ = {p : r_p ≤ λ}.

    This is the per-image score of quantile-style guarantees (Consema's
    P(coverage ≥ τ) ≥ 1 − α). Empty Y is covered by any set: −∞.
    """
    if not 0.0 < tau <= 1.0:
        raise SegcpError(f"tau must be in (0, 1], got {tau}")
    r = np.sort(np.asarray(truth_scores, dtype=np.float64).ravel())
    if r.size == 0:
        return -np.inf
    # k pixels covered ⇔ λ ≥ r[k−1]; need k ≥ τ m. Guard float noise in τ·m.
    k = int(np.ceil(tau * r.size - 1e-9))
    return float(r[max(k, 1) - 1])
