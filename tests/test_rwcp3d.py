"""RW-CP on volumes: the slice axis, one 3D graph, depth=0 = slice-wise 2D RW-CP, calibration."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segcp import ConformalSegmenter
from segcp.errors import SegcpError
from segcp.graph import knn_volume, knn_window_tokens, resize2d
from segcp.methods import Case, RWCPMethod, get_method
from segcp.methods.rwcp import slice_axis

FAST = {"encoder": "fallback", "k": 6, "steps": 4, "radius": 2, "cache": False}


def _volume(shape=(5, 16, 18), seed=0):
    """A blob with an image that outlines it, and noisy probabilities."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    c = rng.normal(0, 0.15, 3)
    r = np.sqrt(sum((g - ci) ** 2 for g, ci in zip(grids, c)))
    mask = r < 0.6
    image = np.clip(np.where(mask, 0.75, 0.25) + 0.08 * rng.normal(size=shape), 0, 1).astype(np.float32)
    probs = np.clip(np.where(mask, 0.7, 0.2) + 0.25 * rng.normal(size=shape), 0, 1).astype(np.float32)
    return probs, image, mask


def test_slice_axis_rule():
    from segcp.cases import slice_axis as the_rule

    assert slice_axis is the_rule  # the UNet's rule too (one function)
    assert slice_axis((183, 140, 88), (0.625, 0.625, 0.625)) == 2  # isotropic: fewest slices
    assert slice_axis((88, 140, 183), (0.625, 0.625, 0.625)) == 0  # also when they are not last
    assert slice_axis((10, 256, 216), (10.0, 1.5, 1.5)) == 0
    assert slice_axis((256, 216, 10), (1.5, 1.5, 10.0)) == 2
    assert slice_axis((40, 30, 50), (1.0, 3.0, 3.0 * (1 + 1e-8))) == 1  # float32 zooms: a tie, fewest voxels
    assert slice_axis((8, 8, 8), None) == 0 and slice_axis((9, 8, 7)) == 2


def _old_slice_wise(m: RWCPMethod, probs, image):
    """Slice-wise RW-CP as it was before depth existed (axis 0, one 2D graph per slice), from the primitives."""
    from segcp.graph import diffuse, transition_matrix

    feats = m.get_encoder().features(list(image), m.feature_cache())
    out = []
    for p, f in zip(probs, feats):
        p = np.asarray(p, dtype=np.float64)
        g = knn_window_tokens(m._tokens(f), m.graph_shape(p.shape, f.shape[1:]), m.k, m.radius)
        P = transition_matrix(g, m.kernel_beta)
        s = diffuse(P, resize2d(p, g.grid, "area").reshape(-1), m.steps).reshape(g.grid)
        out.append(np.clip(resize2d(s, p.shape, "bilinear") if g.grid != p.shape else s, 0.0, 1.0))
    return np.stack(out)


@pytest.mark.parametrize("grid", [None, 12])
def test_depth_zero_is_slice_wise_2d_rwcp_bit_for_bit(grid):
    probs, image, _ = _volume()
    m = RWCPMethod(depth=0, grid=grid, **FAST)
    vol = m.foreground(Case("v", probs, image=image))
    assert np.array_equal(vol, _old_slice_wise(m, probs, image))
    for d in range(probs.shape[0]):
        assert np.array_equal(vol[d], m.foreground(Case(f"s{d}", probs[d], image=image[d])))
    # 3D differs, and depth is ignored on 2D images
    assert not np.array_equal(vol, RWCPMethod(depth=1, grid=grid, **FAST).foreground(Case("v", probs, image=image)))
    two_d = Case("s", probs[0], image=image[0])
    assert np.array_equal(RWCPMethod(depth=3, **FAST).score_map(two_d), RWCPMethod(depth=0, **FAST).score_map(two_d))


@pytest.mark.parametrize("depth", [0, 1, 2])
def test_the_coarse_axis_is_sliced_and_axis_permutations_commute(depth):
    probs, image, _ = _volume((6, 16, 18), seed=1)
    spacing = (3.0, 1.0, 1.2)
    m = RWCPMethod(depth=depth, spatial=1.0, **FAST)
    ref = m.foreground(Case("v", probs, image=image, spacing=spacing))
    # the same volume stored with its axes permuted (the in-plane order kept): the permuted result
    for perm in [(1, 0, 2), (1, 2, 0)]:
        sp = tuple(spacing[a] for a in perm)
        out = m.foreground(Case("p", np.transpose(probs, perm), image=np.transpose(image, perm), spacing=sp))
        assert out.shape == tuple(probs.shape[a] for a in perm)
        assert np.array_equal(out, np.transpose(ref, perm))
    # anisotropic spacing picks the coarse axis even when it has the most voxels
    sp2 = (1.0, 1.0, 4.0)
    got = RWCPMethod(depth=0, **FAST).foreground(Case("a", probs, image=image, spacing=sp2))
    along2 = _old_slice_wise(RWCPMethod(depth=0, **FAST), np.moveaxis(probs, 2, 0), np.moveaxis(image, 2, 0))
    assert np.array_equal(got, np.moveaxis(along2, 0, 2))


@pytest.mark.parametrize("grid,spatial,depth", [(None, 0.0, 1), (None, 2.0, 2), (7, 0.5, 1)])
def test_3d_diffusion_equals_a_dense_computation(grid, spatial, depth):
    probs, image, _ = _volume((4, 8, 9), seed=2)
    spacing = (2.5, 0.8, 1.0)  # (z, y, x); z is the coarse axis
    m = RWCPMethod(depth=depth, depth_radius=1, grid=grid, spatial=spatial, kernel_beta=30.0, **{**FAST, "steps": 3})
    got = m.foreground(Case("v", probs, image=image, spacing=spacing))

    # by hand: features of every z-slice, knn_volume's graph, a dense P, P^steps, resize back
    feats = m.get_encoder().encode(list(image))
    gshape = m.graph_shape((8, 9), feats[0].shape[1:])
    gsp = (2.5, 0.8 * 8 / gshape[0], 1.0 * 9 / gshape[1])
    g = knn_volume([m._tokens(f) for f in feats], gshape, m.k, m.radius, depth=depth, depth_radius=1, spacing=gsp, spatial=spatial)
    n = g.n
    Wd = np.zeros((n, n))
    for p in range(n):
        q, d = g.neighbours(p)
        Wd[p, q] = np.exp(-30.0 * d.astype(np.float64))
        Wd[p, p] += 1.0  # self-loop, d = 0
    Pd = Wd / Wd.sum(axis=1, keepdims=True)
    s = resize2d(probs.astype(np.float64), gshape, "area").reshape(-1)
    for _ in range(3):
        s = Pd @ s
    s = s.reshape(4, *gshape)
    ref = np.clip(resize2d(s, (8, 9), "bilinear") if gshape != (8, 9) else s, 0, 1)
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    # edges cross slices, never further than depth
    src = np.repeat(np.arange(n), np.diff(g.indptr))
    dz = np.abs(g.indices // (gshape[0] * gshape[1]) - src // (gshape[0] * gshape[1]))
    assert dz.max() == depth


def test_depth_parameters_are_declared_recorded_and_checked():
    m = get_method("rwcp", encoder="fallback", depth=2, depth_radius=0)
    p = m.params()
    assert p["depth"] == 2 and p["depth_radius"] == 0
    json.dumps(p)
    assert RWCPMethod(**p).params() == p
    assert RWCPMethod(encoder="fallback").params()["depth"] == 1  # RW-CP-3D by default on volumes
    assert '"depth": 2' in m.key and m.key != RWCPMethod(encoder="fallback").key
    for bad in ({"depth": -1}, {"depth_radius": -1}, {"depth": 1.5}):
        with pytest.raises(SegcpError):
            RWCPMethod(encoder="fallback", **bad)
    probs, image, _ = _volume((3, 10, 10))
    with pytest.raises(SegcpError, match="scale=token .* depth=0"):
        RWCPMethod(scale="token", **FAST).score_map(Case("v", probs, image=image))
    with pytest.raises(SegcpError, match="intensity term is 2D only"):
        RWCPMethod(intensity=1.0, **FAST).score_map(Case("v", probs, image=image))
    assert RWCPMethod(scale="token", depth=0, **FAST).score_map(Case("v", probs, image=image)).shape == probs.shape
    assert RWCPMethod(dims=3, center=True, **FAST).score_map(Case("v", probs, image=image)).shape == probs.shape  # one basis


def test_timings_and_graph_size():
    probs, image, _ = _volume((4, 12, 12))
    t: dict[str, float] = {}
    m = RWCPMethod(**FAST)
    from bench_volumes import score_map_timed  # benchmarks/bench_volumes.py

    r = score_map_timed(m, Case("v", probs, image=image), t)
    assert np.array_equal(r, m.score_map(Case("v", probs, image=image)))
    assert {"encoder", "knn", "weights", "diffusion", "resize", "normalize"} <= set(t)
    assert t["nodes"] == probs.size and t["edges"] > probs.size * m.k


def test_calibration_on_3d_volumes_is_nested_and_valid(tmp_path):
    nib = pytest.importorskip("nibabel")
    from segcp.jobs import calibrate_dir

    vols = [_volume((4, 14, 12), seed=10 + i) for i in range(12)]
    spacing = (1.0, 1.0, 2.5)  # stored (x, y, z): slices along the last axis
    vols = [tuple(np.moveaxis(a, 0, 2) for a in v) for v in vols]
    cases = [Case(f"v{i}", p, mask=mk, image=im, spacing=spacing) for i, (p, im, mk) in enumerate(vols)]
    cs = ConformalSegmenter("rwcp", alpha=[0.2, 0.1], method_params=FAST).calibrate(cases)
    fam = cs.family_
    for a in (0.2, 0.1):
        res = cs.results_[a]
        n = cs.n_
        assert n / (n + 1) * res.empirical_risk + 1 / (n + 1) <= a + 1e-12  # exact CRC's bound at λ̂
    assert cs.lambdas_[0.1] >= cs.lambdas_[0.2]
    c0 = cases[0]
    sets = [fam.predict(c0, lam) for lam in (0.2, 0.4, 0.6, 0.8)]
    assert all((a <= b).all() for a, b in zip(sets, sets[1:]))  # nested
    assert sets[0].shape == c0.probs.shape

    # the same through calibrate_dir on NIfTI volumes: the same λ̂, depth recorded
    for sub in ("probs", "masks", "images"):
        (tmp_path / sub).mkdir()
    aff = np.diag([*spacing, 1.0])
    for c in cases:
        nib.save(nib.Nifti1Image(c.probs.astype(np.float32), aff), str(tmp_path / "probs" / f"{c.id}.nii.gz"))
        nib.save(nib.Nifti1Image(c.mask.astype(np.uint8), aff), str(tmp_path / "masks" / f"{c.id}.nii.gz"))
        nib.save(nib.Nifti1Image(c.image.astype(np.float32), aff), str(tmp_path / "images" / f"{c.id}.nii.gz"))
    rec = calibrate_dir(tmp_path, method="rwcp", alpha=[0.2, 0.1], method_params=FAST, out=tmp_path / "calib.json", show_progress=False)
    assert rec["params"]["depth"] == 1 and rec["params"]["depth_radius"] == 1
    assert rec["lambda"] == pytest.approx([cs.lambdas_[0.2], cs.lambdas_[0.1]])


@pytest.mark.parametrize("depth", [0, 1])
def test_precompute_encodes_the_slices_the_score_map_reads(tmp_path, monkeypatch, depth):
    """The engine's batch encoding (`precompute`) of volumes: the 2D slices along the slice axis that
    the score map encodes, no more (a slice out of the diffusion's reach is not encoded) — then the
    score maps read every feature from the cache, and equal those computed without it. (It once
    handed whole volumes to the encoder: every `segcp compare`/`benchmark` of RW-CP on volumes failed.)"""
    vols = [_volume((6, 14, 12), seed=20 + i) for i in range(3)]
    probs0 = vols[0][0].copy()
    probs0[4:] = 0.0  # out of reach at depth 1 with 1 step: slice 5 is never encoded; at depth 0 slices 4 and 5
    vols[0] = (probs0, vols[0][1], vols[0][2])
    spacing = (3.0, 1.0, 1.0)  # slices along the first axis
    cases = [Case(f"v{i}", p, mask=mk, image=im, spacing=spacing) for i, (p, im, mk) in enumerate(vols)]
    params = {**FAST, "steps": 1, "depth": depth, "depth_radius": 0}
    encoded: list[int] = []

    fresh = RWCPMethod(**params)  # no cache: each score map encodes what it reads
    real = fresh.get_encoder().encode

    def counting(imgs, *a, **k):
        encoded.append(len(imgs))
        return real(imgs, *a, **k)

    monkeypatch.setattr(fresh.get_encoder(), "encode", counting)
    direct = [fresh.score_map(c) for c in cases]
    reads = sum(encoded)
    assert reads < 18 if depth == 0 else reads <= 18  # slices 4 and 5 of v0 are empty: not encoded slice by slice
    m = RWCPMethod(**{**params, "cache": True, "cache_dir": str(tmp_path)})
    assert m.get_encoder() is fresh.get_encoder()  # one shared encoder: counted once
    encoded.clear()
    m.precompute(cases)
    assert sum(encoded) == reads  # the same slices, in batches
    encoded.clear()
    maps = [m.score_map(c) for c in cases]
    assert sum(encoded) == 0  # every slice's features from the cache
    for got, want in zip(maps, direct):
        assert np.array_equal(got, want)


def test_compare_runs_rwcp_on_volumes(tmp_path):
    """`segcp compare` (the engine, with its batch encoding) on a folder of NIfTI volumes, RW-CP-3D beside
    Standard CRC: every split calibrated, λ̂ of the first split equal to a direct calibration's."""
    nib = pytest.importorskip("nibabel")
    from segcp.compare import MethodSpec, compare_dir
    from segcp.engine.splits import random_cal_test_splits

    vols = [_volume((6, 14, 12), seed=40 + i) for i in range(12)]  # 6 slices: not mistaken for channels
    spacing = (2.5, 1.0, 1.0)
    for sub in ("probs", "masks", "images"):
        (tmp_path / "d" / sub).mkdir(parents=True)
    aff = np.diag([*spacing, 1.0])
    for i, (p, im, mk) in enumerate(vols):
        for sub, a in (("probs", p), ("masks", mk.astype(np.uint8)), ("images", im)):
            nib.save(nib.Nifti1Image(a, aff), str(tmp_path / "d" / sub / f"v{i:02d}.nii.gz"))
    params = {**FAST, "cache": True, "cache_dir": str(tmp_path / "features")}
    specs = [MethodSpec("Standard CRC", "threshold"), MethodSpec("RW-CP-3D", "rwcp", params)]
    res = compare_dir(tmp_path / "d", specs, alphas=(0.2,), n_cal=9, n_splits=2, seed=3, show_progress=False)
    rows = sorted((s for s in res["splits"] if s["method"] == "RW-CP-3D"), key=lambda s: s["split"])
    assert len(rows) == 2 and all(np.isfinite(r["lambda"]) for r in rows)
    ids = [f"v{i:02d}" for i in range(12)]  # each volume its own group, in the folder's order
    cal, _ = next(iter(random_cal_test_splits(ids, 9, 2, 3)))
    cases = [Case(ids[i], vols[i][0], mask=vols[i][2], image=vols[i][1], spacing=spacing) for i in cal]
    assert rows[0]["lambda"] == ConformalSegmenter("rwcp", alpha=0.2, method_params=FAST).calibrate(cases).lambda_
