"""The volume graph: in-plane windows plus neighbouring slices, against a brute force."""

from __future__ import annotations

import numpy as np
import pytest

from segcp.graph import knn_volume, resize2d
from segcp.graph.knn import normalise_rows


def _brute(tokens, shape, k, r, depth, rz, spacing, spatial):
    H, W = shape
    Z = len(tokens)
    U = [normalise_rows(resize2d(t.astype(np.float32), shape, "bilinear").reshape(t.shape[0], -1).T) for t in tokens]
    sz, sy, sx = spacing
    L = max(H * sy, W * sx)
    out = []
    for z in range(Z):
        for y in range(H):
            for x in range(W):
                cands = {}
                for dz in range(-depth, depth + 1):
                    zz = z + dz
                    if not 0 <= zz < Z:
                        continue
                    rr = r if dz == 0 else rz
                    for dy in range(-rr, rr + 1):
                        for dx in range(-rr, rr + 1):
                            qy, qx = y + dy, x + dx
                            if (dz, dy, dx) == (0, 0, 0) or not (0 <= qy < H and 0 <= qx < W):
                                continue
                            d = 1.0 - float(U[z][y * W + x] @ U[zz][qy * W + qx])
                            if spatial:
                                d += spatial * np.sqrt((dz * sz) ** 2 + (dy * sy) ** 2 + (dx * sx) ** 2) / L
                            cands[(zz * H + qy) * W + qx] = d
                vals = np.array(sorted(cands.values()))
                kth = vals[min(k, len(vals)) - 1]
                out.append({q for q, d in cands.items() if d <= kth + 1e-5})
    return out


@pytest.mark.parametrize("spatial", [0.0, 2.0])
def test_volume_graph_matches_brute_force(spatial):
    rng = np.random.default_rng(0)
    base = rng.normal(size=(6, 3, 4))
    tokens = [base + 0.4 * rng.normal(size=(6, 3, 4)) for z in range(4)]  # neighbouring slices look alike
    shape, k, r = (7, 9), 6, 2
    g = knn_volume(tokens, shape, k, r, depth=1, depth_radius=1, spacing=(3.0, 1.0, 1.0), spatial=spatial)
    assert g.grid == (4, 7, 9) and g.n == 4 * 63
    ref = _brute(tokens, shape, k, r, 1, 1, (3.0, 1.0, 1.0), spatial)
    agree = [set(g.neighbours(p)[0].tolist()) == ref[p] for p in range(g.n)]
    assert np.mean(agree) > 0.99  # float32 near-ties aside
    # some edges cross slices, and none reach two slices away
    src = np.repeat(np.arange(g.n), np.diff(g.indptr))
    dz = np.abs(g.indices // 63 - src // 63)
    assert dz.max() == 1 and (dz == 1).mean() > (0.1 if spatial == 0 else 0.0)  # far slices cost more with the spatial term


def test_depth_zero_is_the_2d_graph_per_slice():
    from segcp.graph import knn_window_tokens

    rng = np.random.default_rng(1)
    tokens = [rng.normal(size=(5, 3, 3)) for _ in range(3)]
    g = knn_volume(tokens, (6, 6), 5, 2, depth=0)
    for z, t in enumerate(tokens):
        g2 = knn_window_tokens(t, (6, 6), 5, 2)
        for p in range(36):
            assert set((g.neighbours(z * 36 + p)[0] - z * 36).tolist()) == set(g2.neighbours(p)[0].tolist())
