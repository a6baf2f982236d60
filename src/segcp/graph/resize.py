"""Separable resampling of 2D grids by small interpolation matrices.

``resize2d(a, (H, W), method)`` resamples the last two axes of ``a`` as
``My @ a @ Mxᵀ`` with ``My = resize_matrix(a.shape[-2], H, method)`` (and the same for x):

- ``"bilinear"``: half-pixel centres, source coordinate clamped to the grid, exactly
  ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)`` without
  antialiasing (each output is a convex combination of ≤ 2 × 2 inputs);
- ``"area"``: exact area averaging (each output cell is the overlap-weighted mean of the
  input cells it covers; OpenCV's INTER_AREA for downsampling, a box filter for
  upsampling). Used to bring probabilities down to a coarser graph grid.

Both matrices are row-stochastic and non-negative, so values in [0, 1] stay in [0, 1].
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from segcp.errors import SegcpError

__all__ = ["RESIZE_METHODS", "bilinear_taps", "pair_matrix", "resize2d", "resize_matrix"]

RESIZE_METHODS = ("bilinear", "area")


def bilinear_taps(n_in: int, n_out: int) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Per output index: the first input index i0 and the weight λ1 of input i0 + 1.

    Output o reads (1 − λ1)·in[i0] + λ1·in[i0 + 1]; λ1 = 0 whenever i0 + 1 would fall
    outside the grid (torch's clamping), so ``i0 + 1`` is only used with a zero weight there.
    """
    scale = n_in / n_out
    src = np.maximum((np.arange(n_out) + 0.5) * scale - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    lam = np.where(i0 < n_in - 1, src - i0, 0.0)
    return i0, lam


@lru_cache(maxsize=256)
def _matrix(n_in: int, n_out: int, method: str) -> NDArray[np.float64]:
    m = np.zeros((n_out, n_in))
    if method == "bilinear":
        i0, lam = bilinear_taps(n_in, n_out)
        rows = np.arange(n_out)
        m[rows, i0] += 1.0 - lam
        m[rows, np.minimum(i0 + 1, n_in - 1)] += lam
    elif method == "area":
        edges_out = np.arange(n_out + 1) * (n_in / n_out)
        for o in range(n_out):
            a, b = edges_out[o], edges_out[o + 1]
            lo, hi = int(np.floor(a)), min(int(np.ceil(b)), n_in)
            for i in range(lo, hi):
                m[o, i] = max(0.0, min(b, i + 1) - max(a, i))
        m /= m.sum(axis=1, keepdims=True)
    else:
        raise SegcpError(f"resize method {method!r}: expected one of {', '.join(RESIZE_METHODS)}")
    m.setflags(write=False)
    return m


def resize_matrix(n_in: int, n_out: int, method: str = "bilinear") -> NDArray[np.float64]:
    """(n_out, n_in) row-stochastic resampling matrix along one axis (read-only, cached)."""
    if n_in < 1 or n_out < 1:
        raise SegcpError(f"cannot resize an axis of {n_in} to {n_out}")
    return _matrix(int(n_in), int(n_out), method)


@lru_cache(maxsize=256)
def _sparse(n_in: int, n_out: int, method: str) -> sp.csr_matrix:
    return sp.csr_matrix(_matrix(n_in, n_out, method))


def resize2d(a: NDArray[Any], shape: tuple[int, int], method: str = "bilinear") -> NDArray[Any]:
    """Resample the last two axes of ``a`` to ``shape`` (float32 stays float32, else float64).

    Uses the sparse form of :func:`resize_matrix` (≤ a few non-zeros per row), so the cost is
    linear in the number of pixels and no multithreaded BLAS call is made for small grids.
    """
    a = np.asarray(a)
    H, W = int(shape[0]), int(shape[1])
    h, w = a.shape[-2:]
    dtype = np.float32 if a.dtype == np.float32 else np.float64
    if (h, w) == (H, W):
        return a.astype(dtype, copy=True)
    if method not in RESIZE_METHODS:
        raise SegcpError(f"resize method {method!r}: expected one of {', '.join(RESIZE_METHODS)}")
    my = _sparse(h, H, method)
    mx = _sparse(w, W, method)
    x = a.astype(dtype, copy=False)
    lead = x.shape[:-2]
    x = x.reshape(-1, h, w)
    out = np.empty((x.shape[0], H, W), dtype=dtype)
    for i in range(x.shape[0]):
        y = my @ x[i]  # (H, w)
        out[i] = (mx @ y.T).T
    return out.reshape(*lead, H, W)


@lru_cache(maxsize=512)
def pair_matrix(n_tok: int, n_pix: int, shift: int, span: int) -> sp.csr_matrix:
    """Sparse (n_pix, n_tok·(2·span+1)) weights of token pairs for pixel pairs (p, p + shift).

    Entry (i, di) of row p is Σ a_p[i] a_{p+shift}[i + di] over the ≤ 2 × 2 bilinear taps
    (upsampling n_tok → n_pix). Rows whose partner p + shift is off the grid are empty.
    Depends only on the geometry, hence cached.
    """
    i0, lam = bilinear_taps(n_tok, n_pix)
    n = i0.size
    p = np.arange(n)
    q = p + shift
    ok = (q >= 0) & (q < n)
    p, q = p[ok], q[ok]
    rows, cols, vals = [], [], []
    w_p = (1.0 - lam[p], lam[p])
    w_q = (1.0 - lam[q], lam[q])
    for a in (0, 1):
        ia = np.minimum(i0[p] + a, n_tok - 1)
        for b in (0, 1):
            ib = np.minimum(i0[q] + b, n_tok - 1)
            v = w_p[a] * w_q[b]
            di = ib - ia
            keep = v != 0.0
            if np.any(np.abs(di[keep]) > span):
                raise AssertionError("token offset outside the precomputed span")  # pragma: no cover
            rows.append(p[keep])
            cols.append(ia[keep] * (2 * span + 1) + di[keep] + span)
            vals.append(v[keep])
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n_tok * (2 * span + 1)))
