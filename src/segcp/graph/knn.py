"""k-nearest-neighbour graphs by cosine distance: global, windowed, and windowed on upsampled tokens.

Distances are d(p, q) = 1 − cos(f_p, f_q) ∈ [0, 2] (features of zero norm count as
orthogonal to everything), optionally plus

- a spatial term ``spatial · ‖pos_p − pos_q‖₂ / L`` (L = the grid's long side, so the
  term is resolution independent: ``spatial = 1`` adds 1 per image width), and
- an intensity term ``intensity_weight · |I_p − I_q|`` (I an image on the same grid),

which then take part in the neighbour *selection* as well as in the weights.

**Selection and ties.** Row p keeps every candidate q ≠ p whose distance is ≤ the k-th
smallest candidate distance of p: exactly k neighbours unless distances tie at the k-th
value (constant image regions), in which case all tied candidates are kept. This makes
the graph independent of candidate order. Rows with fewer than k valid candidates keep
them all. The node itself is never a candidate (self-loops are a choice of
:func:`segcp.graph.transition_matrix`).

Three builders:

- :func:`knn_global` — exact kNN among all N nodes (chunked N × N similarities), for the
  token grid (N = h·w, e.g. 1024);
- :func:`knn_window` — exact kNN restricted to the (2r+1)² window around each pixel of a
  (d, H, W) feature map, vectorised over shifts: for each offset one array expression
  gives the similarity of every pixel with its shifted neighbour, then the per-pixel
  selection is a single ``np.partition`` over the (H·W, (2r+1)²) distance array;
- :func:`knn_window_tokens` — the same graph as ``knn_window(resize2d(T, (H, W),
  "bilinear"), ...)`` for token features T (d, h, w), without ever forming the (d, H, W)
  upsampled features. Bilinear upsampling is separable and each pixel mixes ≤ 2 × 2
  tokens, so ⟨f_p, f_q⟩ is a 4 × 4 combination of token dot products: we compute the
  token Gram matrix for neighbouring tokens once (exact, in the full feature dimension),
  contract it with the column interpolation weights (one small sparse product per
  horizontal offset) and then with the row weights (one per vertical offset). The cost no
  longer depends on d, so no dimensionality reduction is needed for speed.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError
from segcp.graph.ops import NUMPY, NumpyOps, TorchOps
from segcp.graph.resize import bilinear_taps

__all__ = ["NeighbourGraph", "knn_global", "knn_window", "knn_window_tokens", "normalise_rows", "window_offsets"]

_EPS = 1e-12


@dataclass(frozen=True)
class NeighbourGraph:
    """Directed neighbour lists in CSR layout.

    Row p's neighbours are ``indices[indptr[p]:indptr[p+1]]`` at ``distances[...]``
    (float32). ``grid`` is the node grid ((N,) or (H, W), nodes in C order).
    """

    indptr: NDArray[np.int64]
    indices: NDArray[np.int64]
    distances: NDArray[np.float32]
    grid: tuple[int, ...]

    @property
    def n(self) -> int:
        return int(self.indptr.size - 1)

    @property
    def nnz(self) -> int:
        return int(self.indices.size)

    def degrees(self) -> NDArray[np.int64]:
        return np.diff(self.indptr)

    def neighbours(self, p: int) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        s, e = self.indptr[p], self.indptr[p + 1]
        return self.indices[s:e], self.distances[s:e]


def normalise_rows(x: NDArray[Any], axis: int = -1) -> NDArray[Any]:
    """Unit-norm vectors along ``axis`` (zero vectors stay zero)."""
    n = np.sqrt(np.sum(x * x, axis=axis, keepdims=True))
    return x / np.maximum(n, _EPS)


def window_offsets(radius: int) -> NDArray[np.int64]:
    """All (dy, dx) with |dy|, |dx| ≤ radius in row-major order, shape ((2r+1)², 2)."""
    r = int(radius)
    g = np.arange(-r, r + 1)
    dy, dx = np.meshgrid(g, g, indexing="ij")
    return np.stack([dy.ravel(), dx.ravel()], axis=1)


def _check_k(k: int) -> int:
    k = int(k)
    if k < 1:
        raise SegcpError(f"k must be >= 1, got {k}")
    return k


def _check_window_input(fn: str, what: str, k: int, X: NDArray[Any], radius: int) -> tuple[int, NDArray[Any], int]:
    """(k, X as a (d, h, w) array, radius) checked for a windowed kNN, or a one-line error."""
    k = _check_k(k)
    X = np.asarray(X)
    if X.ndim != 3:
        raise SegcpError(f"{fn}: {what}, got shape {X.shape}")
    r = int(radius)
    if r < 1:
        raise SegcpError(f"{fn}: radius must be >= 1, got {radius}")
    return k, X, r


def _select(D: Any, k: int, xp: NumpyOps | TorchOps = NUMPY) -> tuple[Any, Any, Any, Any]:
    """Per row of D (N, M; +inf = not a candidate): the k smallest with ties kept.

    Returns indptr, row of each kept entry, its column in D, and its distance (arrays of ``xp``).
    """
    M = D.shape[1]
    if k >= M:
        mask = xp.isfinite(D)
    else:
        kth = xp.kth_smallest(D, k)
        mask = D <= kth[:, None]
        if xp.isinf_any(kth):
            mask &= xp.isfinite(D)
    indptr = xp.indptr(xp.count_rows(mask))
    flat = xp.flatnonzero(mask)
    rows = flat // M
    cols = flat - rows * M
    return indptr, rows, cols, D.reshape(-1)[flat]


def _grid_positions(shape: tuple[int, int]) -> NDArray[np.float64]:
    H, W = shape
    yy, xx = np.meshgrid(np.arange(H), np.arange(W), indexing="ij")
    return np.stack([yy.ravel(), xx.ravel()], axis=1).astype(np.float64) / max(H, W)


def knn_global(
    X: NDArray[Any],
    k: int,
    *,
    grid: tuple[int, int] | None = None,
    spatial: float = 0.0,
    intensity: NDArray[Any] | None = None,
    intensity_weight: float = 0.0,
    chunk: int = 2048,
) -> NeighbourGraph:
    """Exact kNN by cosine distance among the rows of X (N, d).

    ``grid`` (H, W) with H·W = N lays the nodes out on a grid (needed for ``spatial``);
    ``intensity`` (N,) or (H, W) for ``intensity_weight``.
    """
    k = _check_k(k)
    X = np.asarray(X)
    if X.ndim != 2:
        raise SegcpError(f"knn_global: features must be (N, d), got shape {X.shape}")
    N = X.shape[0]
    if grid is not None and int(np.prod(grid)) != N:
        raise SegcpError(f"knn_global: grid {grid} does not hold {N} nodes")
    if spatial and grid is None:
        raise SegcpError("knn_global: the spatial term needs the node grid")
    Xn = normalise_rows(X.astype(np.float64)).astype(np.float32)
    pos = _grid_positions(grid) if (spatial and grid is not None) else None
    inten = None
    if intensity_weight and intensity is not None:
        inten = np.asarray(intensity, dtype=np.float64).reshape(-1)
        if inten.size != N:
            raise SegcpError(f"knn_global: intensity has {inten.size} values for {N} nodes")
    indptrs, rows_all, cols_all, d_all = [np.zeros(1, np.int64)], [], [], []
    offset = 0
    for s in range(0, N, max(1, int(chunk))):
        e = min(N, s + int(chunk))
        D = Xn[s:e] @ Xn.T  # float32 Gram (BLAS); cos to ~1e-7
        np.subtract(np.float32(1.0), D, out=D)
        np.maximum(D, np.float32(0.0), out=D)
        if pos is not None:
            diff = pos[s:e, None, :] - pos[None, :, :]
            D += (float(spatial) * np.sqrt(np.sum(diff * diff, axis=-1))).astype(np.float32)
        if inten is not None:
            D += (float(intensity_weight) * np.abs(inten[s:e, None] - inten[None, :])).astype(np.float32)
        D[np.arange(e - s), np.arange(s, e)] = np.inf
        indptr, rows, cols, d = _select(D, k)
        indptrs.append(indptr[1:] + offset)
        offset += int(indptr[-1])
        rows_all.append(rows + s)
        cols_all.append(cols)
        d_all.append(d)
    return NeighbourGraph(
        np.concatenate(indptrs),
        np.concatenate(cols_all).astype(np.int64),
        np.concatenate(d_all).astype(np.float32),
        tuple(grid) if grid is not None else (N,),
    )


def _window_extras(
    D: Any,
    shape: tuple[int, int],
    radius: int,
    spatial: float,
    intensity: NDArray[Any] | None,
    intensity_weight: float,
    xp: NumpyOps | TorchOps = NUMPY,
) -> None:
    """Add the spatial and intensity terms in place to D (H, W, 2r+1, 2r+1)."""
    H, W = shape
    r = radius
    if spatial:
        off = window_offsets(r).reshape(2 * r + 1, 2 * r + 1, 2)
        D += xp.asarray((float(spatial) * np.sqrt((off.astype(np.float64) ** 2).sum(-1)) / max(H, W)).astype(np.float32))
    if intensity_weight and intensity is not None:
        img = np.asarray(intensity, dtype=np.float32)
        if img.shape != (H, W):
            raise SegcpError(f"intensity image of shape {img.shape} does not match the grid {(H, W)}")
        pad = np.pad(img, r, mode="edge")
        win = np.lib.stride_tricks.sliding_window_view(pad, (2 * r + 1, 2 * r + 1))
        D += xp.asarray(float(intensity_weight) * np.abs(win - img[:, :, None, None]))


def _finish_window(D: Any, shape: tuple[int, int], radius: int, k: int, add: float = 0.0, xp: NumpyOps | TorchOps = NUMPY) -> NeighbourGraph:
    """Select per pixel from D (H, W, 2r+1, 2r+1); the distances are ``D + add`` (clipped at 0)."""
    H, W = shape
    r = radius
    M = (2 * r + 1) ** 2
    indptr, rows, cols, d = _select(D.reshape(H * W, M), k, xp)
    if add:
        d = d + np.float32(add)
    d = xp.maximum0(d)
    off = window_offsets(r)
    lin = xp.asarray(off[:, 0] * W + off[:, 1])
    return NeighbourGraph(indptr, rows + lin[cols], d, (H, W))


def _mark_outside(D: Any, shape: tuple[int, int], radius: int, centre: bool = True) -> None:
    """+inf for window entries that fall outside the grid, and for the centre (self) with ``centre``."""
    H, W = shape
    r = radius
    for a in range(-r, r + 1):
        if a < 0:
            D[: min(-a, H), :, a + r, :] = np.inf
        elif a > 0:
            D[max(H - a, 0) :, :, a + r, :] = np.inf
        if a < 0:
            D[:, : min(-a, W), :, a + r] = np.inf
        elif a > 0:
            D[:, max(W - a, 0) :, :, a + r] = np.inf
    if centre:
        D[:, :, r, r] = np.inf


def knn_window(
    F: NDArray[Any], k: int, radius: int, *, spatial: float = 0.0, intensity: NDArray[Any] | None = None, intensity_weight: float = 0.0
) -> NeighbourGraph:
    """Exact kNN by cosine distance inside the (2r+1)² window of each pixel of F (d, H, W).

    Vectorised over shifts; half of the offsets are computed, the other half follow from
    d(p, p + o) = d(p + o, p). Memory: one float32 (H·W, (2r+1)²) array.
    """
    k, F, r = _check_window_input("knn_window", "features must be (d, H, W)", k, F, radius)
    _, H, W = F.shape
    Fn = np.ascontiguousarray(normalise_rows(F.astype(np.float64), axis=0).transpose(1, 2, 0))  # (H, W, d)
    Fp = np.pad(Fn, ((r, r), (r, r), (0, 0)))
    side = 2 * r + 1
    D = np.empty((H, W, side, side), dtype=np.float32)
    for dy in range(r + 1):
        for dx in range(-r, r + 1):
            if dy == 0 and dx <= 0:
                continue
            s = np.einsum("hwc,hwc->hw", Fn, Fp[r + dy : r + dy + H, r + dx : r + dx + W])
            d = np.maximum(1.0 - s, 0.0).astype(np.float32)
            D[:, :, dy + r, dx + r] = d
            # mirrored offset: d(p, p - o) = d(p - o, p) = d[y - dy, x - dx]
            mir = np.full((H, W), np.inf, dtype=np.float32)
            ys_dst, ys_src = slice(dy, H), slice(0, max(H - dy, 0))
            if dx >= 0:
                xs_dst, xs_src = slice(dx, W), slice(0, max(W - dx, 0))
            else:
                xs_dst, xs_src = slice(0, max(W + dx, 0)), slice(-dx, W)
            mir[ys_dst, xs_dst] = d[ys_src, xs_src]
            D[:, :, r - dy, r - dx] = mir
    _mark_outside(D, (H, W), r)
    _window_extras(D, (H, W), r, spatial, intensity, intensity_weight)
    return _finish_window(D, (H, W), r, k)


def _span(i0: NDArray[np.int64], radius: int) -> int:
    n = i0.size
    s = 0
    for d in range(1, min(radius, n - 1) + 1):
        s = max(s, int(np.max(np.abs(i0[d:] - i0[:-d]))))
    return s + 1


def knn_window_tokens(
    T: NDArray[Any],
    shape: tuple[int, int],
    k: int,
    radius: int,
    *,
    spatial: float = 0.0,
    intensity: NDArray[Any] | None = None,
    intensity_weight: float = 0.0,
    xp: NumpyOps | TorchOps = NUMPY,
) -> NeighbourGraph:
    """Window kNN on token features T (d, h, w) bilinearly upsampled to ``shape`` (H, W).

    Same graph as ``knn_window(resize2d(T, shape, "bilinear"), k, radius, ...)`` (up to
    floating-point rounding of near-ties), computed from token dot products (see the
    module docstring); cost ~ H·W·(2r+1)² independent of d. ``xp``: where it runs
    (:mod:`segcp.graph.ops`; the graph's arrays are then of that kind).
    """
    k, T, r = _check_window_input("knn_window_tokens", "tokens must be (d, h, w)", k, T, radius)
    H, W = int(shape[0]), int(shape[1])
    D, _ = plane_distances(T, (H, W), r, xp)
    _window_extras(D, (H, W), r, spatial, intensity, intensity_weight, xp)
    return _finish_window(D, (H, W), r, k, xp=xp)


def token_grid(T: Any, xp: NumpyOps | TorchOps = NUMPY) -> Any:
    """Token features (d, h, w) as a contiguous float64 (h, w, d) array of ``xp`` (the Gram's input)."""
    return xp.contiguous(xp.permute(xp.asarray(T), (1, 2, 0)), xp.float64)


def _spans(h: int, w: int, H: int, W: int, radius: int) -> tuple[int, int]:
    """Token offsets (rows, columns) that pixel pairs up to ``radius`` apart can mix."""
    iy, _ = bilinear_taps(h, H)
    jx, _ = bilinear_taps(w, W)
    return _span(iy, radius), _span(jx, radius)


def _token_gram(Ta: Any, Tb: Any, sy: int, sx: int, xp: NumpyOps | TorchOps) -> Any:
    """G[i, a + sy, j, b + sx] = <Ta[i, j], Tb[i + a, j + b]> (0 off the grid): (h, 2sy+1, w, 2sx+1) float64.

    ``Ta``, ``Tb``: (h, w, d) float64 (:func:`token_grid`).
    """
    h, w = Ta.shape[0], Ta.shape[1]
    Tp = xp.pad_hw(Tb, sy, sx)
    G = xp.empty((h, 2 * sy + 1, w, 2 * sx + 1), xp.float64)
    for a in range(-sy, sy + 1):
        for b in range(-sx, sx + 1):
            G[:, a + sy, :, b + sx] = xp.rowdot(Ta, Tp[sy + a : sy + a + h, sx + b : sx + b + w])
    return G


def _pixel_dots(G: Any, shape: tuple[int, int], r: int, sy: int, sx: int, dys: range, xp: NumpyOps | TorchOps) -> Iterator[tuple[int, Any]]:
    """Dot products of the upsampled features of pixel pairs (p, p + (dy, dx)), |dx| ≤ r, per dy in ``dys``.

    ``G`` is :func:`_token_gram` of the two token grids; yields (dy, (H, W, 2r+1) float64 array of
    ⟨f_a(p), f_b(p + (dy, dx))⟩ at [y, x, dx + r]) (entries whose partner is off the grid: 0).
    Stage 1 contracts the token columns (one product per dx), stage 2 the rows (one per dy).
    """
    H, W = shape
    h, w = G.shape[0], G.shape[2]
    side = 2 * r + 1
    Gx = xp.permute(G, (2, 3, 0, 1)).reshape(w * (2 * sx + 1), h * (2 * sy + 1))
    K = xp.empty((h * (2 * sy + 1), W, side), xp.float64)
    for dx in range(-r, r + 1):
        K[:, :, dx + r] = (xp.pair(w, W, dx, sx) @ Gx).T
    K = K.reshape(h * (2 * sy + 1), W * side)
    for dy in dys:
        yield dy, (xp.pair(h, H, dy, sy) @ K).reshape(H, W, side)


def _inverse_norms(sq: Any, xp: NumpyOps | TorchOps) -> Any:
    """1 / ‖f‖ from squared norms (zero vectors: 1/_EPS)."""
    if isinstance(xp, NumpyOps):
        return 1.0 / np.maximum(np.sqrt(np.maximum(sq, 0.0)), _EPS)
    return 1.0 / xp.torch.sqrt(sq.clamp(min=0.0)).clamp(min=_EPS)


def _cosine_distance_into(blk: Any, inv_a: Any, inv_b: Any, r: int, dy: int, out: Any, xp: NumpyOps | TorchOps) -> None:
    """out = 1 − blk · inv_a[p] · inv_b[p + (dy, dx)] (float64 products, float32 result); blk is overwritten."""
    H = blk.shape[0]
    side = 2 * r + 1
    blk *= -inv_a[:, :, None]
    invpad = xp.pad2(inv_b, r, 1.0)
    blk *= xp.windows(invpad[r + dy : r + dy + H], side, 1)
    xp.add_one_into(blk, out)


def plane_distances(T: Any, shape: tuple[int, int], r: int, xp: NumpyOps | TorchOps = NUMPY) -> tuple[Any, Any]:
    """In-plane window distances of one grid of tokens T (d, h, w) upsampled to ``shape``.

    Returns D (H, W, 2r+1, 2r+1) float32, 1 − cos of pixel p and p + (dy, dx) at
    [y, x, dy + r, dx + r] (+inf off the grid and at the centre), and the inverse feature norms
    (H, W) float64 of the upsampled pixels (for distances to other slices).
    """
    _, h, w = T.shape
    H, W = shape
    side = 2 * r + 1
    sy, sx = _spans(h, w, H, W, r)
    T64 = token_grid(T, xp)
    G = _token_gram(T64, T64, sy, sx, xp)
    D = xp.empty((H, W, side, side), xp.float32)
    inv = None
    for dy, blk in _pixel_dots(G, (H, W), r, sy, sx, range(r + 1), xp):
        if dy == 0:  # the dy = 0 block holds the norms: 1 - cos block by block
            inv = _inverse_norms(blk[:, :, r], xp)
        _cosine_distance_into(blk, inv, inv, r, dy, D[:, :, dy + r, :], xp)
    _mirror_upper(D, (H, W), r)
    _mark_outside(D, (H, W), r)
    return D, inv


def _mirror_upper(D: NDArray[np.float32], shape: tuple[int, int], radius: int) -> None:
    """Fill offsets (-a, -b), a > 0, from d(p, p - o) = d(p - o, p) (on-grid entries only)."""
    H, W = shape
    r = radius
    for a in range(1, min(r, H - 1) + 1):
        for b in range(-r, r + 1):
            if abs(b) >= W:
                continue
            if b >= 0:
                xd, xs = slice(b, W), slice(0, W - b)
            else:
                xd, xs = slice(0, W + b), slice(-b, W)
            D[a:, xd, r - a, r - b] = D[: H - a, xs, r + a, r + b]
