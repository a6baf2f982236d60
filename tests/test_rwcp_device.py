"""RW-CP on a device: the torch path of the graph and the diffusion equals the numpy path.

The GPU runs the same code as the CPU through :mod:`segcp.graph.ops` (torch instead of
numpy/scipy). Here that torch code runs on CPU tensors, so CI (no GPU) checks it against the
numpy path; the tests marked ``cuda`` run it on a GPU and skip with a message where there is none.
``device`` is a run-time option: never in calib.json, never in a cache key.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from segcp.errors import SegcpError
from segcp.graph import diffuse, knn_volume, knn_window_tokens, transition_matrix
from segcp.graph.diffusion import diffuse_rows, transition_rows
from segcp.graph.ops import NUMPY, TorchOps, resolve_device
from segcp.graph.volume import volume_rows
from segcp.methods import Case, RWCPMethod

torch = pytest.importorskip("torch")
CPU_TORCH = TorchOps("cpu")
FAST = {"encoder": "fallback", "k": 6, "steps": 4, "radius": 2, "cache": False}
HAS_CUDA = torch.cuda.is_available()
cuda = pytest.mark.skipif(not HAS_CUDA, reason="no CUDA GPU here (torch.cuda.is_available() is False): the GPU tests skip")


def _tokens(Z=5, d=12, h=4, w=5, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.normal(size=(d, h, w))
    return [(base + 0.6 * rng.normal(size=base.shape)).astype(np.float32) for _ in range(Z)]


def _same_graph(g_np, indptr, cols, dist, tol=1e-6):
    """Neighbour sets equal except at near-ties of the k-th distance; distances within tol."""
    indptr, cols, dist = (np.asarray(CPU_TORCH.numpy(a)) for a in (indptr, cols, dist))
    differ = 0
    for p in range(len(indptr) - 1):
        a = dict(zip(g_np[1][g_np[0][p] : g_np[0][p + 1]].tolist(), g_np[2][g_np[0][p] : g_np[0][p + 1]].tolist()))
        b = dict(zip(cols[indptr[p] : indptr[p + 1]].tolist(), dist[indptr[p] : indptr[p + 1]].tolist()))
        if set(a) != set(b):
            differ += 1
            continue
        assert max(abs(a[q] - b[q]) for q in a) <= tol
    return differ


@pytest.mark.parametrize("shape,r", [((13, 11), 2), ((9, 17), 3), ((6, 5), 1)])
def test_window_graph_in_torch_equals_numpy(shape, r):
    T = _tokens(1)[0]
    g = knn_window_tokens(T, shape, 7, r)
    gt = knn_window_tokens(T, shape, 7, r, xp=CPU_TORCH)
    assert isinstance(gt.indices, torch.Tensor)
    assert _same_graph((g.indptr, g.indices, g.distances), gt.indptr, gt.indices, gt.distances) == 0


@pytest.mark.parametrize("depth,spatial", [(1, 0.0), (2, 1.5), (0, 0.0)])
def test_volume_rows_and_diffusion_in_torch_equal_numpy(depth, spatial):
    tokens, shape, Z = _tokens(), (10, 12), 5
    n = shape[0] * shape[1]
    opts = {"depth": depth, "depth_radius": 1, "spacing": (2.0, 0.7, 0.7), "spatial": spatial}
    values = np.random.default_rng(2).random((Z, n))
    ref = diffuse(transition_matrix(knn_volume(tokens, shape, 6, 2, **opts), 30.0), values.reshape(-1), 5).reshape(Z, n)
    rows_np = {z: (i, c, d) for z, i, c, d in volume_rows(tokens, shape, 6, 2, **opts)}

    def blocks():
        for z, indptr, cols, dist in volume_rows(tokens, shape, 6, 2, xp=CPU_TORCH, **opts):
            assert _same_graph(rows_np[z], indptr, cols - z * n * 0, dist) == 0
            c0 = max(0, z - depth)
            yield z, transition_rows(indptr, cols, dist, 30.0, row0=z * n, col0=c0 * n, ncols=(min(Z, z + depth + 1) - c0) * n, xp=CPU_TORCH), c0

    got = diffuse_rows(blocks(), values, 5, depth, range(Z), CPU_TORCH)
    assert isinstance(got, torch.Tensor)
    # the distances agree to float32 rounding (one ulp where float64 sums round differently), so
    # the weights to ~1e-6 relative and the diffused values to far below 1e-6
    np.testing.assert_allclose(CPU_TORCH.numpy(got), ref, rtol=0, atol=1e-6)


def _blob(shape=(6, 16, 18), seed=0):
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    mask = np.sqrt(sum(g**2 for g in grids)) < 0.6
    image = np.clip(np.where(mask, 0.75, 0.25) + 0.08 * rng.normal(size=shape), 0, 1).astype(np.float32)
    probs = np.clip(np.where(mask, 0.7, 0.2) + 0.25 * rng.normal(size=shape), 0, 1)
    probs[:1] = 0.0
    return probs, image


@pytest.mark.parametrize("depth,lazy", [(1, 0.0), (0, 0.0), (1, 0.25)])
def test_rwcp_maps_on_the_torch_path_equal_the_cpu_ones(monkeypatch, depth, lazy):
    probs, image = _blob()
    m = RWCPMethod(depth=depth, lazy=lazy, grid=12, spatial=0.5, **FAST)
    cpu = m.foreground(Case("v", probs, image=image, spacing=(2.0, 1.0, 1.0)))
    two_d = m.foreground(Case("s", probs[3], image=image[3]))
    monkeypatch.setattr(RWCPMethod, "_ops", lambda self: CPU_TORCH)  # "the GPU", on CPU tensors
    monkeypatch.setattr(RWCPMethod, "_on_gpu", lambda self: True)
    dev = m.foreground(Case("v", probs, image=image, spacing=(2.0, 1.0, 1.0)))
    np.testing.assert_allclose(dev, cpu, rtol=0, atol=1e-6)
    np.testing.assert_allclose(m.foreground(Case("s", probs[3], image=image[3])), two_d, rtol=0, atol=1e-6)


def test_device_is_a_runtime_option_never_recorded_nor_keyed():
    a, b = RWCPMethod(device="cpu", **FAST), RWCPMethod(device="auto", **FAST)
    assert "device" not in a.params() and a.params() == b.params() and a.key == b.key
    assert a.cache_identity() == b.cache_identity()
    # a command option of calibrate/predict (one meaning of --device across commands, as train/infer's), not a family flag
    assert RWCPMethod.declared()["device"].runtime and RWCPMethod.declared()["device"].flag is None
    with pytest.raises(SegcpError, match="device"):
        RWCPMethod(device="tpu", **FAST)
    json.dumps(a.params())
    assert resolve_device("cpu") == "cpu" and resolve_device("auto") == ("cuda" if HAS_CUDA else "cpu")


@pytest.mark.skipif(HAS_CUDA, reason="a CUDA GPU is here: the no-GPU error cannot be shown")
def test_cuda_without_a_gpu_is_one_clear_line():
    probs, image = _blob()
    with pytest.raises(SegcpError, match="no CUDA GPU") as exc:
        RWCPMethod(device="cuda", **FAST).score_map(Case("v", probs, image=image))
    assert "\n" not in str(exc.value)


# ---------------------------------------------------------------------------- on a GPU
@cuda
def test_gpu_graph_and_diffusion_equal_the_cpu():
    probs, image = _blob((8, 40, 36))
    m = RWCPMethod(depth=1, **FAST)
    cpu = m.foreground(Case("v", probs, image=image))
    gpu = RWCPMethod(depth=1, device="cuda", **FAST).foreground(Case("v", probs, image=image))
    np.testing.assert_allclose(gpu, cpu, rtol=0, atol=1e-6)


@cuda
def test_gpu_encoder_features_equal_the_cpu():
    from segcp.encoders import get_encoder

    try:
        cpu_enc = get_encoder("dinov2-small", input_size=224)
    except SegcpError as exc:
        pytest.skip(f"dinov2-small unavailable: {exc}")
    gpu_enc = get_encoder("dinov2-small", input_size=224, device="cuda")
    img = np.random.default_rng(0).random((96, 80)).astype(np.float32)
    a, b = cpu_enc.encode([img, img[::-1]]), gpu_enc.encode([img, img[::-1]])
    scale = max(1.0, float(np.abs(a[0]).max()))
    for x, y in zip(a, b):
        assert np.abs(x - y).max() <= 1e-4 * scale  # the backends' verification tolerance
    assert cpu_enc.cache_id.split(":backend")[0] == gpu_enc.cache_id.split(":backend")[0]


def test_numpy_ops_are_the_default():
    assert knn_window_tokens(_tokens(1)[0], (8, 8), 5, 2).indices.__class__ is np.ndarray
    assert NUMPY.name == "cpu"


def test_cli_device_option_runs_and_is_not_recorded(tmp_path, capsys):
    from segcp.cli import main

    data = tmp_path / "data"
    probs, image = _blob((8, 20, 18), seed=4)
    for sub in ("probs", "masks", "images"):
        (data / sub).mkdir(parents=True)
    for i in range(8):
        np.save(data / "probs" / f"im{i}.npy", probs[i].astype(np.float32))
        np.save(data / "masks" / f"im{i}.npy", probs[i] > 0.5)
        np.save(data / "images" / f"im{i}.npy", image[i])
    out = {}
    for dev in ("cpu", "auto"):
        calib = tmp_path / f"{dev}.json"
        with pytest.raises(SystemExit) as exc:
            main(
                [
                    "calibrate",
                    "--method",
                    "rwcp",
                    "--encoder",
                    "fallback",
                    "--k",
                    "6",
                    "--device",
                    dev,
                    "--alpha",
                    "0.2",
                    "--data",
                    str(data),
                    "--out",
                    str(calib),
                    "-q",
                ]
            )
        assert exc.value.code in (0, None), capsys.readouterr().err
        out[dev] = json.loads(calib.read_text())
        assert "device" not in out[dev]["params"]
        with pytest.raises(SystemExit) as exc:
            main(["predict", "--calib", str(calib), "--device", dev, "--data", str(data), "--out", str(tmp_path / f"sets-{dev}"), "-q"])
        assert exc.value.code in (0, None), capsys.readouterr().err
        assert len(list((tmp_path / f"sets-{dev}").glob("*.npy"))) == 8
    if not HAS_CUDA:
        assert out["cpu"]["lambda"] == out["auto"]["lambda"]
