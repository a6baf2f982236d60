"""RW-CP does only the work that can change the set, and its volume path holds a few slices at a time.

- P made slice by slice (:func:`segcp.graph.diffusion.transition_rows`) has the rows of
  :func:`segcp.graph.transition_matrix`, and the wavefront diffusion (:func:`diffuse_rows`) the
  values of :func:`segcp.graph.diffuse`, bit for bit;
- slices that no diffusion step reaches from a non-zero slice are neither encoded nor diffused,
  and the maps are bit for bit those of the whole computation;
- ``skip_below`` = ε > 0 changes every value by at most ε (the bound ``docs/rwcp.md`` proves).
"""

from __future__ import annotations

import numpy as np
import pytest

from segcp.graph import diffuse, knn_volume, transition_matrix
from segcp.graph.diffusion import diffuse_rows, transition_rows
from segcp.graph.volume import volume_rows
from segcp.methods import Case, RWCPMethod

FAST = {"encoder": "fallback", "k": 6, "steps": 3, "radius": 2, "cache": False}


def _tokens(Z=6, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(5, 3, 4))
    return [(base + 0.5 * rng.normal(size=base.shape)).astype(np.float32) for _ in range(Z)]


@pytest.mark.parametrize("depth,self_loop,lazy", [(1, True, 0.0), (2, False, 0.0), (1, True, 0.3), (0, True, 0.0), (1, False, 0.2)])
def test_rows_and_wavefront_equal_the_whole_matrix_bit_for_bit(depth, self_loop, lazy):
    tokens, shape, Z = _tokens(), (7, 9), 6
    n = shape[0] * shape[1]
    g = knn_volume(tokens, shape, 5, 2, depth=depth, depth_radius=1, spacing=(2.0, 1.0, 1.0), spatial=0.5)
    P = transition_matrix(g, 40.0, self_loop=self_loop, lazy=lazy)
    values = np.random.default_rng(1).random((Z, n))
    ref = diffuse(P, values.reshape(-1), 4).reshape(Z, n)

    def blocks():
        for z, indptr, cols, dist in volume_rows(tokens, shape, 5, 2, depth=depth, depth_radius=1, spacing=(2.0, 1.0, 1.0), spatial=0.5):
            c0 = max(0, z - depth)
            Pz = transition_rows(
                indptr, cols, dist, 40.0, self_loop=self_loop, lazy=lazy, row0=z * n, col0=c0 * n, ncols=(min(Z, z + depth + 1) - c0) * n
            )
            rowsP = P[z * n : (z + 1) * n, c0 * n : c0 * n + Pz.shape[1]]
            assert np.array_equal(Pz.toarray(), rowsP.toarray())
            assert P[z * n : (z + 1) * n].nnz == Pz.nnz  # nothing outside the block
            yield z, Pz, c0

    got = diffuse_rows(blocks(), values, 4, depth, range(Z))
    assert np.array_equal(got, ref)


def _volume(Z=9, shape=(14, 12), empty=(0, 1, 2, 8), seed=3):
    rng = np.random.default_rng(seed)
    probs = rng.random((Z, *shape)) * (rng.random((Z, *shape)) > 0.3)
    probs[list(empty)] = 0.0
    image = rng.random((Z, *shape)).astype(np.float32)
    return probs, image


@pytest.mark.parametrize("depth,steps", [(1, 1), (1, 2), (2, 1), (0, 3), (1, 0)])
def test_unreachable_slices_are_skipped_and_the_maps_are_bit_for_bit(monkeypatch, depth, steps):
    probs, image = _volume()
    m = RWCPMethod(depth=depth, **{**FAST, "steps": steps})
    rows, encoded = m.volume_work(probs)
    reach = steps * depth
    if steps:
        assert rows == range(max(0, 3 - reach), min(9, 7 + reach + 1))  # active slices 3..7
        assert encoded == range(max(0, rows.start - depth), min(9, rows.stop + depth))
    else:
        assert rows == encoded == range(0)
    seen: list[int] = []
    enc = m.get_encoder()
    real = enc.features

    def counting(images, cache=None):
        seen.append(len(images))
        return real(images, cache)

    monkeypatch.setattr(enc, "features", counting)
    t: dict[str, float] = {}
    got = m.foreground(Case("v", probs, image=image), t)
    asked = list(seen)
    # the whole computation: every slice encoded, every row made
    monkeypatch.setattr(RWCPMethod, "volume_work", lambda self, p, depth=None: (range(p.shape[0]), range(p.shape[0])))
    if depth == 0:
        monkeypatch.setattr(RWCPMethod, "empty", lambda self, p: False)
    full = m.foreground(Case("v", probs, image=image))
    assert np.array_equal(got, full)
    if depth:
        assert asked == ([len(encoded)] if len(encoded) else []) and t["encoded"] == len(encoded)
    else:  # slice by slice: only the non-empty slices
        assert asked == [5] and t["encoded"] == 5
    outside = [z for z in range(9) if z not in rows and depth]
    assert np.array_equal(got[outside], probs[outside])  # their diffused map is their input (0, or p when steps = 0)


def test_an_empty_volume_needs_no_encoder():
    probs, image = _volume(empty=range(9))

    class Boom(RWCPMethod):
        def get_encoder(self):
            raise AssertionError("the encoder was asked")

    assert np.array_equal(Boom(**FAST).score_map(Case("v", probs, image=image)), np.ones_like(probs))
    assert np.array_equal(Boom(**FAST).score_map(Case("s", probs[0], image=image[0])), np.ones_like(probs[0]))


@pytest.mark.parametrize("eps", [0.05, 0.2])
def test_skip_below_changes_every_value_by_at_most_eps(eps):
    probs, image = _volume(empty=(0,))
    probs[1] *= 0.5 * eps / probs[1].max()  # a slice of near-zero probabilities
    probs[2] *= eps / probs[2].max()  # at the tolerance: counts as empty
    exact = RWCPMethod(depth=1, **FAST).foreground(Case("v", probs, image=image))
    got = RWCPMethod(depth=1, skip_below=eps, **FAST).foreground(Case("v", probs, image=image))
    assert 0 < np.abs(got - exact).max() <= eps
    assert RWCPMethod(skip_below=eps, **FAST).params()["skip_below"] == eps
    assert "skip_below" in RWCPMethod(**FAST).params()  # recorded: it changes the maps


def test_non_local_options_keep_the_whole_volume():
    probs, _ = _volume()
    for opts in ({"symmetrize": "max"}, {"beta_scale": "median"}, {"center": True}, {"dims": 3}):
        assert RWCPMethod(**FAST, **opts).volume_work(probs) == (range(9), range(9))


@pytest.mark.parametrize("depth", [1, 2, 0])
def test_the_rows_do_not_depend_on_the_number_of_threads(depth):
    tokens, shape = _tokens(Z=7), (9, 8)
    opts = {"depth": depth, "depth_radius": 1, "spacing": (2.0, 1.0, 1.0), "spatial": 0.3}
    one = list(volume_rows(tokens, shape, 5, 2, **opts))
    for threads in (2, 3):
        many = list(volume_rows(tokens, shape, 5, 2, threads=threads, **opts))
        assert [z for z, *_ in many] == list(range(7))
        for a, b in zip(one, many):
            assert all(np.array_equal(x, y) for x, y in zip(a[1:], b[1:]))
    part = list(volume_rows(tokens, shape, 5, 2, rows=range(2, 5), threads=2, **opts))
    assert [z for z, *_ in part] == [2, 3, 4] and all(np.array_equal(x, y) for x, y in zip(part[1][1:], one[3][1:]))


def test_the_feature_cache_memory_layer_is_bounded_in_bytes(tmp_path):
    from segcp.encoders import FeatureCache

    c = FeatureCache(tmp_path, disk=False, memory_items=100, memory_mib=1.0)
    maps = [np.full((16, 64, 64), i, np.float32) for i in range(6)]  # 256 KiB each
    for i, m in enumerate(maps):
        c.put("enc", f"k{i}", m)
    kept = [i for i in range(6) if c.get("enc", f"k{i}") is not None]
    assert kept == [2, 3, 4, 5] and c._bytes == 4 * maps[0].nbytes  # the 4 most recent fit in 1 MiB
    c.put("enc", "k5", maps[5])  # a second put of a key does not count it twice
    assert c._bytes == 4 * maps[0].nbytes
    big = FeatureCache(tmp_path, disk=False, memory_mib=0.1)
    big.put("enc", "x", maps[0])  # larger than the whole layer: not kept
    assert big.get("enc", "x") is None
