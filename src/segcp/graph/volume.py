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
builder and only the cross-slice distances are computed here, one slice pair at a time
(memory: one slice's upsampled features, not the volume's).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError
from segcp.graph.knn import NeighbourGraph, _select, knn_window_tokens, normalise_rows, window_offsets
from segcp.graph.resize import resize2d

__all__ = ["knn_volume"]


def _upsampled(T: NDArray[Any], shape: tuple[int, int]) -> NDArray[np.float32]:
    """Unit-norm features of every pixel of the graph grid, (H·W, d) float32."""
    U = resize2d(np.asarray(T, dtype=np.float32), shape, "bilinear")  # (d, H, W)
    return np.ascontiguousarray(normalise_rows(U.reshape(U.shape[0], -1).T))


def knn_volume(
    tokens: Sequence[NDArray[Any]],
    shape: tuple[int, int],
    k: int,
    radius: int,
    *,
    depth: int = 1,
    depth_radius: int = 1,
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
    spatial: float = 0.0,
) -> NeighbourGraph:
    """The kNN graph of a volume from its slices' token features.

    Parameters
    ----------
    tokens : per slice z (Z of them), token features (d, h, w) of that slice.
    shape : (H, W), the in-plane graph grid (every slice's features are upsampled to it).
    k, radius : neighbours per node; the in-plane window is (2·radius + 1)².
    depth : slices on each side that are candidates (0: no edges across slices).
    depth_radius : the window in those slices is (2·depth_radius + 1)² around the same position.
    spacing : (slice, row, column) voxel size of the graph grid, in physical units.
    spatial : weight of the physical-distance term (0: features only).

    Returns
    -------
    NeighbourGraph over Z·H·W nodes, node (z, y, x) at index (z·H + y)·W + x; ``grid`` (Z, H, W).
    """
    Z = len(tokens)
    if Z == 0:
        raise SegcpError("knn_volume: no slices")
    H, W = int(shape[0]), int(shape[1])
    depth, rz = int(depth), int(depth_radius)
    if depth < 0 or rz < 0:
        raise SegcpError(f"knn_volume: depth and depth_radius must be >= 0, got {depth}, {depth_radius}")
    sz, sy, sx = (float(s) for s in spacing)
    L = max(H * sy, W * sx)
    # in-plane: the 2D builder; its spatial term counts pixels of the long side, which is the
    # physical one when pixels are square (sy == sx); rescale it for the mm-based total
    plane_spatial = spatial * (max(H, W) * min(sy, sx) / L) if spatial else 0.0
    n_plane = H * W
    offs = window_offsets(rz) if rz > 0 else np.zeros((1, 2), dtype=np.int64)
    pix = np.arange(n_plane, dtype=np.int64).reshape(H, W)
    cols_out, dist_out = [], []
    counts = np.zeros(Z * n_plane, dtype=np.int64)
    U_cache: dict[int, NDArray[np.float32]] = {}

    def U(z: int) -> NDArray[np.float32]:
        if z not in U_cache:
            U_cache[z] = _upsampled(tokens[z], (H, W)).reshape(H, W, -1)
            for old in [q for q in U_cache if q < z - depth]:  # keep only the slices still needed
                del U_cache[old]
        return U_cache[z]

    for z in range(Z):
        g = knn_window_tokens(tokens[z], (H, W), k, radius, spatial=plane_spatial)  # one slice's graph at a time
        deg = np.diff(g.indptr)
        kmax = int(deg.max(initial=0))
        # the in-plane k nearest, padded into a dense (n_plane, kmax) block
        cand_d = np.full((n_plane, kmax), np.inf, dtype=np.float32)
        cand_i = np.zeros((n_plane, kmax), dtype=np.int64)
        pos = np.arange(g.indices.size) - np.repeat(g.indptr[:-1], deg)
        row = np.repeat(np.arange(n_plane), deg)
        cand_d[row, pos] = g.distances
        cand_i[row, pos] = g.indices + z * n_plane
        blocks_d, blocks_i = [cand_d], [cand_i]
        Uz = U(z)
        for dz in [d for d in range(-depth, depth + 1) if d != 0 and 0 <= z + d < Z]:
            Uq = U(z + dz)
            bd = np.full((H, W, len(offs)), np.inf, dtype=np.float32)
            bi = np.zeros((H, W, len(offs)), dtype=np.int64)
            for j, (dy, dx) in enumerate(offs):
                # pixels (y, x) whose (y + dy, x + dx) is inside: shifted views, no copies
                y0, y1, x0, x1 = max(0, -dy), min(H, H - dy), max(0, -dx), min(W, W - dx)
                if y0 >= y1 or x0 >= x1:
                    continue
                d = 1.0 - np.einsum("ijk,ijk->ij", Uz[y0:y1, x0:x1], Uq[y0 + dy : y1 + dy, x0 + dx : x1 + dx])
                if spatial:
                    d = d + spatial * np.sqrt((dz * sz) ** 2 + (dy * sy) ** 2 + (dx * sx) ** 2) / L
                bd[y0:y1, x0:x1, j] = d
                bi[y0:y1, x0:x1, j] = pix[y0 + dy : y1 + dy, x0 + dx : x1 + dx] + (z + dz) * n_plane
            bd, bi = bd.reshape(n_plane, -1), bi.reshape(n_plane, -1)
            blocks_d.append(bd)
            blocks_i.append(bi)
        D = np.concatenate(blocks_d, axis=1)
        I = np.concatenate(blocks_i, axis=1)
        indptr, r_, c_, dist = _select(D, k)
        cols_out.append(I[r_, c_])
        dist_out.append(dist)
        counts[z * n_plane : (z + 1) * n_plane] = np.diff(indptr)
    indptr = np.zeros(Z * n_plane + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    return NeighbourGraph(indptr, np.concatenate(cols_out), np.concatenate(dist_out).astype(np.float32), (Z, H, W))
