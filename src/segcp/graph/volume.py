"""A kNN graph over a volume: in-plane windows plus the neighbouring slices.

RW-CP on a volume encodes its slices with a 2D foundation model (along the axis of coarsest
spacing) and builds one graph over all voxels of the graph grid (Z, H, W). A voxel's
candidates are the (2r+1)² window of its own slice — the graph of 2D RW-CP,
:func:`~segcp.graph.knn.knn_window_tokens` — and the (2r_z+1)² window around the same
position in each slice within ``depth`` of it. Distances are the same 1 − cos of the bilinearly
upsampled token features (plus, optionally, a spatial term in physical units: ``spatial ·
‖Δ‖_mm / L_mm``, L_mm the in-plane long side); each voxel keeps its k nearest candidates, ties
at the k-th distance kept.

Exactness of the merge: the k nearest among (in-plane window ∪ slice windows) are the k
nearest among (the in-plane k nearest ∪ slice windows) — an in-plane candidate outside its
slice's k nearest has k in-plane candidates at most as far — so the in-plane part reuses the 2D
builder and only the cross-slice distances are computed here.

The cross-slice distances come from token dot products, as the in-plane ones do: with
bilinear upsampling ⟨f_z(p), f_z'(q)⟩ is a 4 × 4 combination of the dot products of the two
slices' tokens, so one cross Gram of neighbouring tokens per slice pair (float64, the full
feature dimension) is contracted with the same pair matrices as in 2D; the norms are the
in-plane ones. No (voxels × d) upsampled features are formed. Each slice pair (z, z + dz) is
computed once and serves the rows of both slices (d(p, q) = d(q, p)).

:func:`volume_rows` yields the rows slice by slice (a few slices' features and blocks in
memory), so that the transition matrix and the diffusion can be built from them without the
whole graph (:func:`segcp.graph.diffusion.diffuse_volume_rows`); :func:`knn_volume` collects
them into one :class:`~segcp.graph.knn.NeighbourGraph`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypedDict, Unpack

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError
from segcp.graph.knn import (
    NeighbourGraph,
    _cosine_distance_into,
    _finish_window,
    _mark_outside,
    _pixel_dots,
    _select,
    _spans,
    _token_gram,
    _window_extras,
    plane_distances,
    token_grid,
    window_offsets,
)
from segcp.graph.ops import NUMPY, NumpyOps, TorchOps

__all__ = ["VolumeOptions", "knn_volume", "volume_rows"]


class VolumeOptions(TypedDict, total=False):
    """How slices join a volume's graph (:func:`volume_rows`'s keywords, with its defaults): ``depth``,
    ``depth_radius``, ``spacing``, ``spatial`` (see :func:`knn_volume`)."""

    depth: int
    depth_radius: int
    spacing: tuple[float, float, float]
    spatial: float


def _cross_distances(Ta: Any, Tb: Any, inv_a: Any, inv_b: Any, shape: tuple[int, int], rz: int, xp: NumpyOps | TorchOps) -> Any:
    """1 − cos between pixel p of slice a and p + (dy, dx) of slice b, |dy|, |dx| ≤ rz.

    ``Ta``, ``Tb``: (h, w, d) float64 token grids; ``inv_a``, ``inv_b``: the upsampled features'
    inverse norms (H, W). Returns (H, W, 2rz+1, 2rz+1) float32, +inf where p + (dy, dx) is off
    the grid.
    """
    H, W = shape
    h, w = Ta.shape[0], Ta.shape[1]
    side = 2 * rz + 1
    sy, sx = _spans(h, w, H, W, rz)
    G = _token_gram(Ta, Tb, sy, sx, xp)
    B = xp.empty((H, W, side, side), xp.float32)
    for dy, blk in _pixel_dots(G, (H, W), rz, sy, sx, range(-rz, rz + 1), xp):
        _cosine_distance_into(blk, inv_a, inv_b, rz, dy, B[:, :, dy + rz, :], xp)
    _mark_outside(B, (H, W), rz, centre=False)
    return B


def _reversed(B: Any, rz: int, xp: NumpyOps | TorchOps) -> Any:
    """The distances of a slice pair seen from slice b: R[p, e] = B[p + e, −e] (+inf off the grid)."""
    H, W = B.shape[0], B.shape[1]
    R = xp.full(tuple(B.shape), np.inf, xp.float32)
    for ey in range(-rz, rz + 1):
        for ex in range(-rz, rz + 1):
            y0, y1, x0, x1 = max(0, -ey), min(H, H - ey), max(0, -ex), min(W, W - ex)
            if y0 < y1 and x0 < x1:
                R[y0:y1, x0:x1, ey + rz, ex + rz] = B[y0 + ey : y1 + ey, x0 + ex : x1 + ex, rz - ey, rz - ex]
    return R


def _check(tokens: Sequence[Any], depth: int, depth_radius: int) -> tuple[int, int, int]:
    Z = len(tokens)
    if Z == 0:
        raise SegcpError("knn_volume: no slices")
    depth, rz = int(depth), int(depth_radius)
    if depth < 0 or rz < 0:
        raise SegcpError(f"knn_volume: depth and depth_radius must be >= 0, got {depth}, {depth_radius}")
    return Z, depth, rz


class _Now:
    """A job run at once, with a future's ``result()`` (the one-thread pipeline)."""

    def __init__(self, fn: Any, *args: Any) -> None:
        self._value = fn(*args)

    def result(self) -> Any:
        return self._value


def volume_rows(
    tokens: Sequence[NDArray[Any] | None],
    shape: tuple[int, int],
    k: int,
    radius: int,
    *,
    depth: int = 1,
    depth_radius: int = 1,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    spatial: float = 0.0,
    rows: range | None = None,
    threads: int = 1,
    xp: NumpyOps | TorchOps = NUMPY,
) -> Iterator[tuple[int, Any, Any, Any]]:
    """The graph of :func:`knn_volume`, slice by slice: yields (z, indptr, columns, distances).

    ``rows``: the slices whose rows are made (default all), in increasing order; a slice within
    ``depth`` of one of them must have tokens, the others may be None (never encoded). Row
    p = (y·W + x) of slice z has columns ``columns[indptr[p]:indptr[p+1]]`` (node indices of the
    whole volume, (z'·H + y')·W + x') at ``distances`` (float32). Arrays are ``xp``'s.

    ``threads`` > 1 computes the slices' in-plane distances, the slice pairs' distances and the
    rows' selections in that many threads (numpy releases the GIL in its loops), a few slices
    ahead of the one yielded; the rows are the same whatever the number of threads (each is one
    pure function of its slices), and they are yielded in order.
    """
    Z, depth, rz = _check(tokens, depth, depth_radius)
    H, W = int(shape[0]), int(shape[1])
    n = H * W
    r = int(radius)
    sz, sy, sx = (float(s) for s in spacing)
    L = max(H * sy, W * sx)
    # in-plane: the 2D builder; its spatial term counts pixels of the long side, which is the
    # physical one when pixels are square (sy == sx); rescale it for the mm-based total
    plane_spatial = spatial * (max(H, W) * min(sy, sx) / L) if spatial else 0.0
    side = 2 * rz + 1
    offs = window_offsets(rz) if rz > 0 else np.zeros((1, 2), dtype=np.int64)
    lin = xp.asarray(offs[:, 0] * W + offs[:, 1])  # node offset of each cross-slice window entry
    extra = ((offs.astype(np.float64) * [sy, sx]) ** 2).sum(axis=1) if spatial else None  # squared in-plane mm
    base = xp.arange(n)

    def plane_job(q: int) -> tuple[Any, Any, Any]:  # (token grid, in-plane distances with extras, inverse norms)
        if tokens[q] is None:
            raise SegcpError(f"knn_volume: slice {q} is needed (within depth of a row) but has no tokens")
        D, inv = plane_distances(tokens[q], (H, W), r, xp)
        _window_extras(D, (H, W), r, plane_spatial, None, 0.0, xp)
        return token_grid(tokens[q], xp), D, inv

    def pair_job(fa: Any, fb: Any, dz: int) -> Any:  # distances of slice a's pixels to slice b's window
        (ga, _, inv_a), (gb, _, inv_b) = fa.result(), fb.result()
        B = _cross_distances(ga, gb, inv_a, inv_b, (H, W), rz, xp)
        if extra is not None:
            d = spatial * np.sqrt((dz * sz) ** 2 + extra) / L
            B += xp.asarray(d.astype(np.float32).reshape(side, side))
        return B

    def row_job(z: int, fplane: Any, fpairs: list[tuple[int, Any]]) -> tuple[Any, Any, Any]:
        g = _finish_window(fplane.result()[1], (H, W), r, k, xp=xp)  # the in-plane k nearest (the 2D graph)
        if not fpairs:
            return g.indptr, g.indices + z * n, g.distances
        deg = g.indptr[1:] - g.indptr[:-1]
        kmax = int(deg.max()) if n else 0
        cand_d = xp.full((n, kmax), np.inf, xp.float32)
        cand_i = xp.zeros((n, kmax), xp.int64)
        pos = xp.arange(g.indices.shape[0]) - xp.repeat(g.indptr[:-1], deg)
        row = xp.repeat(base, deg)
        cand_d[row, pos] = g.distances
        cand_i[row, pos] = g.indices + z * n
        blocks_d, blocks_i = [cand_d], [cand_i]
        for dz, fpair in fpairs:  # dz = -depth … depth (not 0), in order
            q = z + dz
            B = fpair.result() if dz > 0 else _reversed(fpair.result(), rz, xp)
            blocks_d.append(B.reshape(n, side * side))
            blocks_i.append(base[:, None] + lin[None, :] + q * n)  # off-grid entries: +inf, never kept
        indptr, r_, c_, dist = _select(xp.concat(blocks_d, axis=1), k, xp)
        return indptr, xp.concat(blocks_i, axis=1)[r_, c_], dist

    workers = max(1, int(threads)) if isinstance(xp, NumpyOps) else 1
    pool = ThreadPoolExecutor(workers) if workers > 1 else None

    def run(fn: Any, *args: Any) -> Any:
        # jobs only wait on jobs submitted before them (FIFO queue), so the pool never deadlocks
        return pool.submit(fn, *args) if pool is not None else _Now(fn, *args)

    planes: dict[int, Any] = {}
    pairs: dict[tuple[int, int], Any] = {}
    pending: dict[int, Any] = {}
    order = list(rows if rows is not None else range(Z))
    ahead = 0

    def submit(z: int) -> None:
        for q in range(max(0, z - depth), min(Z, z + depth + 1)):
            if q not in planes:
                planes[q] = run(plane_job, q)
        fpairs = []
        for dz in [d for d in range(-depth, depth + 1) if d != 0 and 0 <= z + d < Z]:
            a, b = min(z, z + dz), max(z, z + dz)
            if (a, b) not in pairs:
                pairs[(a, b)] = run(pair_job, planes[a], planes[b], b - a)
            fpairs.append((dz, pairs[(a, b)]))
        pending[z] = run(row_job, z, planes[z], fpairs)

    try:
        for i, z in enumerate(order):
            while ahead < len(order) and ahead <= i + (workers if pool is not None else 0):
                submit(order[ahead])
                ahead += 1
            indptr, cols, dist = pending.pop(z).result()
            yield z, indptr, cols, dist
            for old in [q for q in planes if q < z + 1 - depth]:  # keep only the slices still needed
                del planes[old]
            for pair in [p for p in pairs if p[1] <= z]:
                del pairs[pair]
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


def knn_volume(tokens: Sequence[NDArray[Any]], shape: tuple[int, int], k: int, radius: int, **options: Unpack[VolumeOptions]) -> NeighbourGraph:
    """The kNN graph of a volume from its slices' token features.

    Parameters
    ----------
    tokens : per slice z (Z of them), token features (d, h, w) of that slice.
    shape : (H, W), the in-plane graph grid (every slice's features are upsampled to it).
    k, radius : neighbours per node; the in-plane window is (2·radius + 1)².
    options : :class:`VolumeOptions`, keywords, their defaults in :func:`volume_rows`'s signature:

        - depth : slices on each side that are candidates (0: no edges across slices).
        - depth_radius : the window in those slices is (2·depth_radius + 1)² around the same position.
        - spacing : (slice, row, column) voxel size of the graph grid, in physical units.
        - spatial : weight of the physical-distance term (0: features only).

    Returns
    -------
    NeighbourGraph over Z·H·W nodes, node (z, y, x) at index (z·H + y)·W + x; ``grid`` (Z, H, W).
    """
    Z = len(tokens)
    H, W = int(shape[0]), int(shape[1])
    counts, cols, dists = [], [], []
    for _, indptr, c, d in volume_rows(tokens, (H, W), k, radius, **options):
        counts.append(np.diff(indptr))
        cols.append(c)
        dists.append(d)
    indptr = np.zeros(Z * H * W + 1, dtype=np.int64)
    np.cumsum(np.concatenate(counts), out=indptr[1:])
    return NeighbourGraph(indptr, np.concatenate(cols), np.concatenate(dists).astype(np.float32), (Z, H, W))
