"""Compact loss curves: the total risk on a fixed λ grid, in memory that does not grow with n.

An exact :class:`~segcp.calibration.LossCurves` keeps one breakpoint per distinct score of
each ground-truth pixel: a 3D organ has millions, and n of them must sit in memory for the
reduce. A :class:`CompactCurves` keeps instead, for a fixed grid λ_0 < … < λ_{G−1}
(:class:`Grid`, G = 2^16 by default), how much the **total** loss Σ_i L_i drops at each
grid point: one array of at most G entries, whatever n is.

Rounding toward the larger set
    A breakpoint b (a pixel enters the set at λ = b) is moved to the first grid point ≥ b,
    so a compact curve is never below the exact one between grid points, and *at* a grid
    point g both agree: the drops counted at g are exactly those with b ≤ g. CRC over the
    grid therefore returns the smallest grid point at or above the exact λ̂:
    λ̂_exact ≤ λ̂_compact < λ̂_exact + one grid step (tested by hypothesis). This is CRC over
    the candidate set Λ = grid, so the guarantee holds as it is (sets only grow with λ).
    Breakpoints beyond the last grid point never drop inside the grid; if λ̂ lies beyond it
    the reduce says so (raise ``grid_max``, or use exact curves).

Merging by addition, bit for bit
    Losses are held as fixed-point integers: each image's remaining loss L_i(g) ∈ [0, 1] is
    rounded *up* to a multiple of 2^-52 (again toward the larger λ̂; the error, below 2^-52
    per image, is at the level of float64 rounding), and its drops are stored as two int64
    words of 26 bits (``hi · 2^-26 + lo · 2^-52``). Sums of integers do not depend on the
    order of addition, so curves merged on any number of workers, in any order and any
    grouping, give the same bits as a single process. Each word sum stays exact for
    n < 2^37 images.

Which form is used (:class:`CurveAccumulator`): ``"exact"`` always keeps every breakpoint;
``"compact"`` compacts each image's curve as soon as it is built; ``"auto"`` (the default)
stays exact while the curves hold at most :data:`EXACT_LIMIT` breakpoints (2^26 ≈ 67 M,
1 GiB of float64 pairs) and compacts everything once they would hold more — so exact stays
the default wherever it fits. 0/1 curves (the ``quantile`` and ``contains`` guarantees) have
at most one breakpoint per image and are always exact.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.calibration.crc import TOL, CRCResult, check_alpha, check_calibration_size
from segcp.calibration.curves import LossCurves
from segcp.errors import SegcpError

__all__ = [
    "CURVE_FORMS",
    "DEFAULT_SPAN",
    "EXACT_LIMIT",
    "GRID_SIZE",
    "CompactCurves",
    "CurveAccumulator",
    "Grid",
    "compact_crc_lambda",
    "default_grid",
]

#: The forms a calibration's curves can take (``auto``: exact while it fits).
CURVE_FORMS = ("auto", "exact", "compact")
#: Grid points of a compact curve (2^16: a step of 1.5e-5 on λ ∈ [0, 1]).
GRID_SIZE = 2**16
#: ``auto`` keeps exact curves up to this many breakpoints (2^26: 1 GiB of float64 pairs).
EXACT_LIMIT = 2**26
#: The grid's span for families whose λ is unbounded and continuous (morph ``ball``: mm).
DEFAULT_SPAN = 1024.0

_BITS = 52  # fixed-point resolution of one image's loss: 2^-52
_WORD = 26  # two words of 26 bits per value
_MASK = (1 << _WORD) - 1
_FULL = 1 << _BITS


@dataclass(frozen=True)
class Grid:
    """``size`` equally spaced λ values from ``lo`` to ``hi`` (``np.linspace``), float64."""

    lo: float
    hi: float
    size: int

    def __post_init__(self) -> None:
        if not (isinstance(self.size, int) and 2 <= self.size <= 2**26):
            raise SegcpError(f"compact grid: size must be an integer in [2, 2^26], got {self.size!r}")
        if not (math.isfinite(self.lo) and math.isfinite(self.hi) and self.lo < self.hi):
            raise SegcpError(f"compact grid: need finite lo < hi, got [{self.lo!r}, {self.hi!r}]")

    @cached_property
    def points(self) -> NDArray[np.float64]:
        """The grid, shape (size,), ascending."""
        return np.linspace(self.lo, self.hi, self.size)

    @property
    def step(self) -> float:
        """The largest gap between neighbouring grid points (the bound on λ̂_compact − λ̂_exact)."""
        return float(np.max(np.diff(self.points)))

    def index(self, lam: NDArray[np.float64]) -> NDArray[np.int64]:
        """The first grid index whose point is ≥ λ (``size``: beyond the grid).

        Exactly ``np.searchsorted(points, λ, side="left")``, computed by arithmetic and then
        corrected against the stored points (a binary search per value is 5× slower).
        """
        pts = self.points
        lam = np.asarray(lam, dtype=np.float64)
        k = np.ceil((lam - self.lo) * ((self.size - 1) / (self.hi - self.lo)))
        k = np.clip(np.nan_to_num(k, nan=self.size, posinf=self.size, neginf=0), 0, self.size).astype(np.int64)
        up = k < self.size
        up[up] = pts[k[up]] < lam[up]  # rounding put k one below the first point ≥ λ
        k[up] += 1
        down = k > 0
        down[down] = pts[k[down] - 1] >= lam[down]  # …or one above
        k[down] -= 1
        return k

    def to_dict(self) -> dict[str, Any]:
        return {"lo": float(self.lo), "hi": float(self.hi), "size": int(self.size)}

    @classmethod
    def from_dict(cls, d: Any, where: str = "grid") -> Grid:
        """The grid of a record, checked field by field (one-line errors)."""
        if not isinstance(d, dict) or set(d) != {"lo", "hi", "size"}:
            raise SegcpError(f"{where}: expected {{'lo', 'hi', 'size'}}, got {d!r}")
        lo, hi, size = d["lo"], d["hi"], d["size"]
        if isinstance(size, bool) or not isinstance(size, int):
            raise SegcpError(f"{where}: size must be an integer, got {size!r}")
        for name, v in (("lo", lo), ("hi", hi)):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise SegcpError(f"{where}: {name} must be a number, got {v!r}")
        return cls(float(lo), float(hi), int(size))


def default_grid(lambda_min: float, lambda_max: float, *, integer: bool = False, size: int = GRID_SIZE, grid_max: float | None = None) -> Grid:
    """The grid of a family: its λ range, or integer steps, with ``size`` points.

    Bounded λ (threshold, rwcp: [0, 1]): ``size`` points over [λ_min, λ_max]. Integer λ
    (morph cross/square: dilation steps): the integers λ_min … λ_min + size − 1, on which a
    compact curve is exact. Unbounded continuous λ (morph ball, in mm): [λ_min, ``grid_max``]
    (default λ_min + :data:`DEFAULT_SPAN`). ``grid_max`` also caps a bounded range.
    """
    lo = float(lambda_min) if math.isfinite(lambda_min) else 0.0
    if integer and grid_max is None:
        return Grid(lo, lo + size - 1, size)
    hi = float(grid_max) if grid_max is not None else (float(lambda_max) if math.isfinite(lambda_max) else lo + DEFAULT_SPAN)
    if integer:
        size = min(size, int(hi - lo) + 1)
    return Grid(lo, hi, size)


def _split(q: NDArray[np.int64]) -> NDArray[np.int64]:
    """Non-negative integers < 2^63 as two 26-bit words, shape (2, …)."""
    out = np.empty((2, *np.shape(q)), dtype=np.int64)
    np.right_shift(q, _WORD, out=out[0])
    np.bitwise_and(q, _MASK, out=out[1])
    return out


def _fixed(loss: NDArray[np.float64]) -> NDArray[np.int64]:
    """A loss in [0, 1] as the smallest multiple of 2^-52 at or above it (int64 numerator)."""
    return np.ceil(np.clip(loss, 0.0, 1.0) * _FULL).astype(np.int64)


@dataclass(frozen=True, eq=False)
class CompactCurves:
    """The summed loss of n images on a grid, as exact fixed-point integers.

    Attributes
    ----------
    grid : Grid
        The λ grid (every merged part must have the same).
    n : int
        Number of images.
    start : ndarray, shape (2,), int64
        Σ_i L_i(−∞) in two words (value = ``start[0]·2^-26 + start[1]·2^-52``).
    bins : ndarray, shape (k,), int64
        Sorted grid indices at which the total drops (k ≤ grid.size).
    drops : ndarray, shape (2, k), int64
        The total drop at each of those grid points, in two words.
    beyond : int
        Breakpoints beyond the grid's last point (they never drop inside the grid).
    """

    grid: Grid
    n: int
    start: NDArray[np.int64]
    bins: NDArray[np.int64]
    drops: NDArray[np.int64]
    beyond: int = 0

    # ------------------------------------------------------------------ construction
    @classmethod
    def empty(cls, grid: Grid) -> CompactCurves:
        """No images: the neutral element of addition."""
        return cls(grid, 0, np.zeros(2, np.int64), np.zeros(0, np.int64), np.zeros((2, 0), np.int64))

    @classmethod
    def from_curves(cls, curves: LossCurves, grid: Grid) -> CompactCurves:
        """Compact exact curves (any n); each image is rounded on its own, so the result does
        not depend on how images were batched. O(P log G) for P breakpoints.
        """
        if np.any(curves.starts > 1.0 + TOL) or np.any(curves.starts < 0.0):
            raise SegcpError("compact curves: losses must lie in [0, 1]")
        starts = _fixed(curves.starts)
        offsets = curves.offsets
        bins_parts: list[NDArray[np.int64]] = []
        drop_parts: list[NDArray[np.int64]] = []
        beyond = 0
        for i in range(curves.n):
            lo, hi = int(offsets[i]), int(offsets[i + 1])
            if lo == hi:
                continue
            idx = grid.index(curves.breakpoints[lo:hi])
            inside = int(np.searchsorted(idx, grid.size, side="left"))  # idx ascends with b
            beyond += hi - lo - inside
            if inside == 0:
                continue
            idx = idx[:inside]
            remaining = curves.starts[i] - np.cumsum(curves.drops[lo:hi])[:inside]  # the image's own cumsum: batch-independent
            last = np.empty(inside, dtype=bool)  # the last breakpoint of each grid bin
            np.not_equal(idx[1:], idx[:-1], out=last[:-1])
            last[-1] = True
            q = _fixed(remaining[last])
            dq = np.empty_like(q)
            dq[0] = starts[i] - q[0]
            np.subtract(q[:-1], q[1:], out=dq[1:])
            keep = dq > 0
            bins_parts.append(idx[last][keep])
            drop_parts.append(dq[keep])
        total_start = _split(starts).sum(axis=1)
        if not bins_parts:
            return cls(grid, curves.n, total_start, np.zeros(0, np.int64), np.zeros((2, 0), np.int64), beyond)
        if len(bins_parts) == 1:  # one image: its bins are already unique and sorted
            return cls(grid, curves.n, total_start, bins_parts[0], _split(drop_parts[0]), beyond)
        return cls._summed(grid, curves.n, total_start, np.concatenate(bins_parts), _split(np.concatenate(drop_parts)), beyond)

    @classmethod
    def _summed(cls, grid: Grid, n: int, start: NDArray[np.int64], bins: NDArray[np.int64], words: NDArray[np.int64], beyond: int) -> CompactCurves:
        """Sum word pairs that share a bin (exact integer sums) into sorted unique bins."""
        if bins.size == 0:
            return cls(grid, n, start, bins, words.reshape(2, 0), beyond)
        if bins.size > grid.size // 4:  # dense accumulation: O(G), no sort
            dense = np.zeros((2, grid.size), np.int64)
            np.add.at(dense[0], bins, words[0])
            np.add.at(dense[1], bins, words[1])
            nz = np.flatnonzero(dense[0] | dense[1])
            return cls(grid, n, start, nz.astype(np.int64), dense[:, nz], beyond)
        order = np.argsort(bins, kind="stable")
        b = bins[order]
        w = words[:, order]
        first = np.empty(b.size, dtype=bool)
        first[0] = True
        np.not_equal(b[1:], b[:-1], out=first[1:])
        at = np.flatnonzero(first)
        return cls(grid, n, start, b[at], np.add.reduceat(w, at, axis=1), beyond)

    @classmethod
    def concat(cls, parts: Iterable[CompactCurves]) -> CompactCurves:
        """Merge by addition (exact integers: any order and grouping gives the same bits)."""
        parts = list(parts)
        if not parts:
            raise SegcpError("compact curves: nothing to merge (the grid is unknown)")
        grid = parts[0].grid
        for p in parts[1:]:
            if p.grid != grid:
                raise SegcpError(f"compact curves: cannot merge curves on different grids ({grid} and {p.grid})")
        return cls._summed(
            grid,
            sum(p.n for p in parts),
            np.sum([p.start for p in parts], axis=0).astype(np.int64),
            np.concatenate([p.bins for p in parts]),
            np.concatenate([p.drops for p in parts], axis=1),
            sum(p.beyond for p in parts),
        )

    def __add__(self, other: CompactCurves) -> CompactCurves:
        return CompactCurves.concat([self, other])

    # ------------------------------------------------------------------ queries
    def __len__(self) -> int:
        return self.n

    @property
    def nbytes(self) -> int:
        """Memory held by the arrays (bytes)."""
        return int(self.start.nbytes + self.bins.nbytes + self.drops.nbytes)

    def _value(self, words: NDArray[np.int64]) -> NDArray[np.float64]:
        """Two-word fixed-point integers as float64 (each term exact; one rounding)."""
        return words[0].astype(np.float64) * 2.0**-_WORD + words[1].astype(np.float64) * 2.0**-_BITS

    @cached_property
    def totals(self) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(the grid points where the total drops, the total Σ_i L_i just after each), float64."""
        cum = np.cumsum(self.drops, axis=1)
        return self.grid.points[self.bins], self._value(self.start[:, None] - cum)

    @property
    def total_start(self) -> float:
        """Σ_i L_i before the first grid point."""
        return float(self._value(self.start[:, None])[0])

    def total_at(self, lam: float) -> float:
        """Σ_i L_i(λ) of the compact curves (drops at grid points ≤ λ applied)."""
        b, totals = self.totals
        k = int(np.searchsorted(b, lam, side="right"))
        return self.total_start if k == 0 else float(totals[k - 1])


def compact_crc_lambda(curves: CompactCurves, alpha: float, *, B: float = 1.0, lambda_min: float = -np.inf) -> CRCResult:
    """Conformal risk control over the grid of compact curves (see the module docstring).

    The same rule as :func:`~segcp.calibration.crc_lambda` with the candidate λ restricted to
    the grid: λ̂ is λ_min when the bound holds there, else the first grid point where the
    total reaches α(n+1) − B. ``risk`` and ``bound`` are those of the compact (rounded-up)
    curves, so they bound the exact ones.
    """
    a = check_alpha(alpha)
    n = curves.n
    check_calibration_size(n, a, B)
    if B != 1.0:
        raise SegcpError("compact curves hold losses in [0, 1] (B = 1)")
    target = a * (n + 1) - B
    b, totals = curves.totals
    if curves.total_at(lambda_min) <= target + TOL:
        lam = float(lambda_min)
    else:
        ok = np.flatnonzero(totals <= target + TOL)
        if ok.size == 0:
            final = float(totals[-1]) if totals.size else curves.total_start
            if curves.beyond:
                raise SegcpError(
                    f"no lambda up to {curves.grid.hi:g}, the end of the compact grid, satisfies the risk bound at "
                    f"alpha={a:g} (mean calibration loss there {final / n:.4g}; {curves.beyond} breakpoints lie beyond "
                    f"it): raise grid_max or use exact curves"
                )
            raise SegcpError(
                f"no lambda satisfies the risk bound at alpha={a:g}: even the largest sets "
                f"leave a mean calibration loss of {final / n:.4g} (some sets never cover "
                f"their ground truth)"
            )
        lam = float(b[ok[0]])
    risk = curves.total_at(lam) / n
    return CRCResult(lam, a, n, risk, (n * risk + B) / (n + 1))


class CurveAccumulator:
    """The reduce step's memory: curves added one part at a time, in any order.

    ``form``: ``"exact"`` keeps every part (concatenated in index order at the end, so the
    result is the single-process concatenation whatever the arrival order); ``"compact"``
    adds compact parts (exact parts are compacted on arrival); ``"auto"`` is exact until the
    parts hold more than ``limit`` breakpoints, then compacts what it holds and everything
    after. The result depends only on the set of parts, never on their order.
    """

    def __init__(self, form: str, grid: Grid | None, limit: int | None = None) -> None:
        if form not in CURVE_FORMS:
            raise SegcpError(f"curve form must be one of {', '.join(CURVE_FORMS)}, got {form!r}")
        if form != "exact" and grid is None:
            raise SegcpError(f"curve form {form!r} needs a grid")
        self.form = form
        self.grid = grid
        self.limit = EXACT_LIMIT if limit is None else int(limit)
        self._exact: dict[int, LossCurves] = {}
        self._points = 0
        self._dense: NDArray[np.int64] | None = None  # (2, G) word sums, once compact
        self._n = 0
        self._start = np.zeros(2, np.int64)
        self._beyond = 0

    @property
    def compact(self) -> bool:
        """True once the accumulator holds compact curves."""
        return self._dense is not None or self.form == "compact"

    def add(self, index: int, part: LossCurves | CompactCurves) -> None:
        """Add the curves of one part (``index``: its place in the single-process order)."""
        if isinstance(part, CompactCurves):
            if self.form == "exact":
                raise SegcpError("exact calibration received compact curves")
            self._add_compact(part)
            return
        if self.compact:
            self._add_compact(CompactCurves.from_curves(part, self.grid))  # type: ignore[arg-type]
            return
        if index in self._exact:
            raise SegcpError(f"curves of part {index} were added twice")
        self._exact[index] = part
        self._points += int(part.breakpoints.size)
        if self.form == "auto" and self._points > self.limit:
            held, self._exact = self._exact, {}
            for k in sorted(held):
                self._add_compact(CompactCurves.from_curves(held.pop(k), self.grid))  # type: ignore[arg-type]

    def _add_compact(self, part: CompactCurves) -> None:
        """In-place integer addition into one dense (2, G) array: O(bins of the part)."""
        if part.grid != self.grid:
            raise SegcpError(f"compact curves: cannot merge curves on different grids ({self.grid} and {part.grid})")
        if self._dense is None:
            self._dense = np.zeros((2, self.grid.size), np.int64)
        self._dense[:, part.bins] += part.drops  # bins are unique within a part
        self._n += part.n
        self._start += part.start
        self._beyond += part.beyond

    def result(self) -> LossCurves | CompactCurves:
        """The merged curves: a :class:`LossCurves` or a :class:`CompactCurves`."""
        if self.compact:
            if self._dense is None:
                return CompactCurves.empty(self.grid)  # type: ignore[arg-type]
            nz = np.flatnonzero(self._dense[0] | self._dense[1]).astype(np.int64)
            return CompactCurves(self.grid, self._n, self._start.copy(), nz, self._dense[:, nz], self._beyond)  # type: ignore[arg-type]
        return LossCurves.concat([self._exact[k] for k in sorted(self._exact)])
