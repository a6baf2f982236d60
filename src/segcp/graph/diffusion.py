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

from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from segcp.errors import SegcpError
from segcp.graph.knn import NeighbourGraph

__all__ = ["BETA_SCALES", "SYMMETRIZE", "block_diag", "diffuse", "effective_beta", "transition_matrix"]

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
    lazy = float(lazy)
    if not 0.0 <= lazy <= 1.0:
        raise SegcpError(f"lazy must be in [0, 1], got {lazy}")
    b = effective_beta(graph, beta, beta_scale)
    n = graph.n
    d = graph.distances.astype(np.float64)
    counts = np.diff(graph.indptr)
    if symmetrize == "none":
        # w = exp(-b (d - min_row d)): the row constant cancels in the normalisation and
        # keeps the nearest neighbour's weight at 1 however large b is (no underflow)
        has = counts > 0
        if self_loop or not np.any(has):
            x = d  # the self-loop has d = 0: the row minimum is 0
        else:
            dmin = np.zeros(n)
            dmin[has] = np.minimum.reduceat(d, graph.indptr[:-1][has])
            x = d - np.repeat(dmin, counts)
        w = np.exp((-b * x).astype(np.float32)).astype(np.float64)  # float32 exp: 2x faster, 1e-7 relative
        add = np.ones(n, dtype=bool) if self_loop else ~has
        indptr, indices, data = _with_diagonal(graph.indptr, graph.indices, w, add)
    else:
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
        indptr, indices, data = _with_diagonal(W.indptr.astype(np.int64), W.indices.astype(np.int64), W.data, add)
    deg = np.add.reduceat(data, indptr[:-1])  # no empty rows: a row with no edge got a self-loop
    zero = deg <= 0
    if np.any(zero):  # every weight underflowed (symmetrised graphs with a huge beta): self-loop only
        first = indptr[:-1][zero]
        data[first] = 1.0
        deg[zero] = 1.0
        keep = np.ones(data.size, dtype=bool)
        for p0, p1 in zip(indptr[:-1][zero], indptr[1:][zero]):
            keep[p0 + 1 : p1] = False
        data = np.where(keep, data, 0.0)
    data = data / np.repeat(deg, np.diff(indptr))
    P = sp.csr_matrix((data.astype(dtype), indices, indptr), shape=(n, n))
    if lazy > 0.0:
        P = ((1.0 - lazy) * P + lazy * sp.identity(n, format="csr", dtype=dtype)).tocsr()
    return P


def _with_diagonal(
    indptr: NDArray[np.int64], indices: NDArray[np.int64], data: NDArray[np.float64], add: NDArray[np.bool_]
) -> tuple[NDArray[np.int64], NDArray[np.int64], NDArray[np.float64]]:
    """Insert a (p, p, 1.0) entry at the start of every row p with ``add[p]``."""
    n = indptr.size - 1
    if not np.any(add):
        return indptr.astype(np.int64), indices.astype(np.int64), data.astype(np.float64)
    counts = np.diff(indptr) + add
    new_indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(counts, out=new_indptr[1:])
    pos = new_indptr[:-1][add]
    is_old = np.ones(int(new_indptr[-1]), dtype=bool)
    is_old[pos] = False
    new_indices = np.empty(int(new_indptr[-1]), dtype=np.int64)
    new_data = np.empty(int(new_indptr[-1]), dtype=np.float64)
    new_indices[is_old] = indices
    new_data[is_old] = data
    new_indices[pos] = np.flatnonzero(add)
    new_data[pos] = 1.0
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


def block_diag(mats: list[sp.spmatrix]) -> sp.csr_matrix:
    """Block-diagonal CSR of several images' P (batch diffusion in one product per step)."""
    return sp.block_diag(mats, format="csr")
