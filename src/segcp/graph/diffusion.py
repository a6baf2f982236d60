"""Row-stochastic random-walk matrices from neighbour graphs, and diffusion S ← P S.

:func:`transition_matrix` turns a :class:`~segcp.graph.knn.NeighbourGraph` into
P = D⁻¹ W with w_pq = exp(−β_eff · d_pq). Every choice the RW-CP paper leaves open is a
named option (defaults in brackets):

- ``beta_scale`` ["absolute"]: β_eff = β ("absolute", the paper's literal reading), or
  β / median (``"median"``) or β / mean (``"mean"``) of the graph's neighbour distances,
  so that β means the same thing whatever the encoder's distance scale (cosine distances
  between DINOv2 tokens of one image are ~0.004–0.02, where β = 50 weights neighbours almost
  uniformly);
- ``self_loop`` [True]: add p → p with d = 0 (weight 1) besides the k neighbours; a row
  that would otherwise be empty (or whose weights all underflow) always gets a self-loop,
  so P stays row-stochastic;
- ``symmetrize`` ["none"]: directed kNN (``"none"``); W ← max(W, Wᵀ) (``"max"``, union
  of kNN relations); (W + Wᵀ)/2 (``"mean"``); min(W, Wᵀ) (``"min"``, mutual kNN), applied
  before the row normalisation;
- ``lazy`` [0]: P ← (1 − lazy)·P + lazy·I (lazy walk).

:func:`diffuse` applies S ← P S ``steps`` times; S may hold several columns (maps), and
graphs of several images are batched with :func:`block_diag` (one sparse product per
step for the whole batch). P is row-stochastic and non-negative, so every step is a convex
combination: values stay within [min S, max S] (hence in [0, 1] for probabilities); the
result is clipped to that range to remove floating-point excursions.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from segcp.errors import SegcpError
from segcp.graph.knn import NeighbourGraph
from segcp.graph.ops import NUMPY, NumpyOps, TorchOps

__all__ = ["BETA_SCALES", "SYMMETRIZE", "block_diag", "diffuse", "diffuse_rows", "effective_beta", "transition_matrix", "transition_rows"]

from segcp.graph.options import BETA_SCALES, SYMMETRIZE


def effective_beta(graph: NeighbourGraph, beta: float, beta_scale: str = "absolute") -> float:
    """β_eff for ``beta_scale`` (see the module docstring)."""
    b = float(beta)
    if not np.isfinite(b) or b < 0:
        raise SegcpError(f"beta must be a finite number >= 0, got {beta}")
    if beta_scale == "absolute":
        return b
    if beta_scale not in BETA_SCALES:
        raise SegcpError(f"beta_scale {beta_scale!r}: expected one of {', '.join(BETA_SCALES)}")
    d = graph.distances[np.isfinite(graph.distances)]
    if d.size == 0:
        return b
    scale = float(np.median(d)) if beta_scale == "median" else float(np.mean(d))
    return b / scale if scale > 0 else b


def transition_matrix(
    graph: NeighbourGraph,
    beta: float = 50.0,
    *,
    beta_scale: str = "absolute",
    self_loop: bool = True,
    symmetrize: str = "none",
    lazy: float = 0.0,
    dtype: Any = np.float64,
) -> sp.csr_matrix:
    """Row-stochastic P (N × N, CSR) of the random walk on ``graph``."""
    if symmetrize not in SYMMETRIZE:
        raise SegcpError(f"symmetrize {symmetrize!r}: expected one of {', '.join(SYMMETRIZE)}")
    lazy = _check_lazy(lazy)
    b = effective_beta(graph, beta, beta_scale)
    n = graph.n
    if symmetrize == "none":
        indptr, indices, data = _rows(graph.indptr, graph.indices, graph.distances, b, self_loop, lazy, 0, NUMPY)
    else:
        d = graph.distances.astype(np.float64)
        W = sp.csr_matrix((np.exp(-b * d), graph.indices, graph.indptr), shape=(n, n))
        Wt = W.T.tocsr()
        if symmetrize == "max":
            W = W.maximum(Wt)
        elif symmetrize == "min":
            W = W.minimum(Wt)
        else:
            W = (W + Wt) * 0.5
        W = W.tocsr()
        W.eliminate_zeros()
        deg = np.asarray(W.sum(axis=1)).ravel()
        add = np.ones(n, dtype=bool) if self_loop else deg <= 0
        indptr, indices, data = _with_diagonal(W.indptr.astype(np.int64), W.indices.astype(np.int64), W.data, add, 0, NUMPY)
        indptr, indices, data = _lazy(indptr, indices, _normalised(indptr, data, NUMPY), lazy, add, 0, NUMPY)
    return sp.csr_matrix((data.astype(dtype), indices, indptr), shape=(n, n))


def transition_rows(
    indptr: Any,
    indices: Any,
    distances: Any,
    beta: float,
    *,
    self_loop: bool = True,
    lazy: float = 0.0,
    row0: int = 0,
    col0: int = 0,
    ncols: int,
    xp: NumpyOps | TorchOps = NUMPY,
) -> Any:
    """Rows row0, row0 + 1, … of P for the nodes whose neighbour lists are given, as a sparse block.

    For ``symmetrize="none"`` and an absolute β (every row of P depends on its own neighbour list
    only, so a graph can be turned into P block by block, bit for bit the rows of
    :func:`transition_matrix`). ``indices`` are node indices of the whole graph; the block's
    columns are ``indices − col0`` (``ncols`` of them). Arrays and the block are ``xp``'s.
    """
    lazy = _check_lazy(lazy)
    m = int(indptr.shape[0]) - 1
    ip, ix, data = _rows(indptr, indices, distances, float(beta), self_loop, lazy, row0, xp)
    return xp.sparse_rows(data, ix - col0, ip, (m, int(ncols)))


def _check_lazy(lazy: float) -> float:
    lazy = float(lazy)
    if not 0.0 <= lazy <= 1.0:
        raise SegcpError(f"lazy must be in [0, 1], got {lazy}")
    return lazy


def _rows(
    indptr: Any, indices: Any, distances: Any, b: float, self_loop: bool, lazy: float, row0: int, xp: NumpyOps | TorchOps
) -> tuple[Any, Any, Any]:
    """(indptr, indices, data) of the rows of P for ``symmetrize="none"`` (β_eff = b), self-loops inserted."""
    n = int(indptr.shape[0]) - 1
    d = xp.asarray(distances, xp.float64)
    counts = indptr[1:] - indptr[:-1]
    # w = exp(-b (d - min_row d)): the row constant cancels in the normalisation and
    # keeps the nearest neighbour's weight at 1 however large b is (no underflow)
    has = counts > 0
    if self_loop or not bool(has.any()):
        x = d  # the self-loop has d = 0: the row minimum is 0
    else:
        dmin = xp.zeros((n,), xp.float64)
        dmin[has] = xp.segment_min(d, indptr[:-1][has], indptr[1:][has])
        x = d - xp.repeat(dmin, counts)
    w = xp.exp_weights(x, b)  # float32 exp: 2x faster, 1e-7 relative
    add = xp.full((n,), True, xp.bool_) if self_loop else ~has
    ip, ix, data = _with_diagonal(indptr, indices, w, add, row0, xp)
    return _lazy(ip, ix, _normalised(ip, data, xp), lazy, add, row0, xp)


def _lazy(indptr: Any, indices: Any, data: Any, lazy: float, has_diagonal: Any, row0: int, xp: NumpyOps | TorchOps) -> tuple[Any, Any, Any]:
    """P ← (1 − lazy)·P + lazy·I, row by row: rows without their diagonal first get one of weight 0
    at their start (``has_diagonal``: rows whose first entry already is it)."""
    if lazy <= 0.0:
        return indptr, indices, data
    if not bool(has_diagonal.all()):
        indptr, indices, data = _with_diagonal(indptr, indices, data, ~has_diagonal, row0, xp, value=0.0)
    data = data * (1.0 - lazy)
    data[indptr[:-1]] += lazy
    return indptr, indices, data


def _normalised(indptr: Any, data: Any, xp: NumpyOps | TorchOps) -> Any:
    """data / row sums (no empty rows: a row with no edge got a self-loop); a row whose weights all
    underflowed (symmetrised graphs with a huge beta) keeps its self-loop only."""
    deg = xp.segment_sums(data, indptr)
    zero = deg <= 0
    if bool(zero.any()):
        first = indptr[:-1][zero]
        data[first] = 1.0
        deg[zero] = 1.0
        keep = xp.full((int(data.shape[0]),), True, xp.bool_)
        for p0, p1 in zip(xp.numpy(indptr[:-1][zero]).tolist(), xp.numpy(indptr[1:][zero]).tolist()):
            keep[p0 + 1 : p1] = False
        data = data * keep
    return data / xp.repeat(deg, indptr[1:] - indptr[:-1])


def _with_diagonal(indptr: Any, indices: Any, data: Any, add: Any, row0: int, xp: NumpyOps | TorchOps, value: float = 1.0) -> tuple[Any, Any, Any]:
    """Insert a (p, row0 + p, ``value``) entry at the start of every row p with ``add[p]``."""
    if not bool(add.any()):
        return xp.asarray(indptr, xp.int64), xp.asarray(indices, xp.int64), xp.asarray(data, xp.float64)
    counts = indptr[1:] - indptr[:-1] + add
    new_indptr = xp.indptr(counts)
    total = int(new_indptr[-1])
    pos = new_indptr[:-1][add]
    is_old = xp.full((total,), True, xp.bool_)
    is_old[pos] = False
    new_indices = xp.empty((total,), xp.int64)
    new_data = xp.empty((total,), xp.float64)
    new_indices[is_old] = indices
    new_data[is_old] = data
    new_indices[pos] = xp.flatnonzero(add) + row0
    new_data[pos] = value
    return new_indptr, new_indices, new_data


def diffuse(P: sp.spmatrix, s: NDArray[Any], steps: int) -> NDArray[np.float64]:
    """S ← P S ``steps`` times; ``s`` of shape (N,) or (N, m); returns float64 clipped to [min s, max s]."""
    steps = int(steps)
    if steps < 0:
        raise SegcpError(f"steps must be >= 0, got {steps}")
    x = np.asarray(s, dtype=np.float64)
    if x.shape[0] != P.shape[0]:
        raise SegcpError(f"diffuse: {x.shape[0]} values for a graph of {P.shape[0]} nodes")
    lo, hi = float(x.min()), float(x.max())
    y = x.astype(P.dtype, copy=True)
    for _ in range(steps):
        y = P @ y
    return np.clip(y.astype(np.float64), lo, hi)


def diffuse_rows(blocks: Iterable[tuple[int, Any, int]], values: Any, steps: int, depth: int, rows: range, xp: NumpyOps | TorchOps = NUMPY) -> Any:
    """S ← P S ``steps`` times on a volume whose P arrives one slice of rows at a time.

    ``values`` (Z, n): the map on the graph grid, one row of n nodes per slice. ``blocks``
    yields (z, P_z, c0) for z in ``rows`` in increasing order, P_z the (n × ·) rows of slice z
    whose columns are the nodes of slices c0, c0 + 1, … (at most ``depth`` slices away from z).
    Slices outside ``rows`` keep their values at every step (the caller makes sure they are
    unreachable: zero, see ``docs/rwcp.md``). A wavefront: step t of slice z is computed as soon
    as step t − 1 of slices z − depth … z + depth is, so only about steps × depth + 2 slices of P
    are held at once (not the whole volume's); every value is the same row-by-row product as
    :func:`diffuse`'s, bit for bit. Returns the (Z, n) map after ``steps`` steps, float64,
    clipped to [min, max] of ``values`` as :func:`diffuse` does.
    """
    steps, depth = int(steps), int(depth)
    if steps < 0:
        raise SegcpError(f"steps must be >= 0, got {steps}")
    x = xp.asarray(values, xp.float64)
    Z = int(x.shape[0])
    lo, hi = float(x.min()), float(x.max())
    out = x.clone() if hasattr(x, "clone") else x.copy()
    z0, z1 = rows.start, rows.stop
    if steps == 0 or z0 >= z1:
        return out
    level: list[dict[int, Any]] = [{} for _ in range(steps + 1)]
    done = [z0] * (steps + 1)
    held: dict[int, tuple[Any, int]] = {}

    def value(t: int, q: int) -> Any:
        return x[q] if t == 0 or not z0 <= q < z1 else level[t][q]

    def advance() -> None:
        for t in range(1, steps + 1):
            while done[t] < z1:
                q = done[t]
                if q not in held or (t > 1 and done[t - 1] <= min(q + depth, z1 - 1)):
                    break
                Pq, c0 = held[q]
                slab = xp.concat([value(t - 1, c) for c in range(c0, min(Z, q + depth + 1))])
                y = xp.matvec(Pq, slab)
                if t == steps:
                    out[q] = y
                else:
                    level[t][q] = y
                done[t] += 1
            for old in [c for c in level[t - 1] if c < done[t] - depth]:
                del level[t - 1][old]
        for old in [c for c in held if c < done[steps]]:
            del held[old]

    for z, Pz, c0 in blocks:
        held[z] = (Pz, c0)
        advance()
    advance()
    if done[steps] != z1:
        raise SegcpError(f"diffuse_rows: rows {z0}..{z1 - 1} not all given")  # pragma: no cover
    return xp.clip(out, lo, hi)


def block_diag(mats: list[sp.spmatrix]) -> sp.csr_matrix:
    """Block-diagonal CSR of several images' P (batch diffusion in one product per step)."""
    return sp.block_diag(mats, format="csr")
