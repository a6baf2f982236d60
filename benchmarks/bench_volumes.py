"""Volumes: peak memory of calibration as the number of volumes grows, and RW-CP-3D's timings.

``memory`` — SYNTHETIC NIfTI volumes of ``--shape`` (default 256 × 256 × 128) with 4 classes
(class-probability stacks (4, *S) float32, label maps uint8; uncompressed .nii), calibrated
with ``segcp calibrate --labels all`` (threshold, one λ̂ per structure: 3) for n = 4, 8, 16
volumes; the peak RSS of each command (GNU time). One volume at a time is in memory during
calibration, only the loss curves are kept, so the peak should stay flat in n (the curves
themselves grow: one breakpoint per distinct truth score).

``rwcp`` — RW-CP on real volumes (a data directory of NIfTI volumes, e.g. LA 2018): per volume
the seconds of the encoder (every slice along the slice axis, batched; features then cached on
disk, so a second pass over the same volume reads them back), the 3D graph (``knn``), the
transition matrix (``weights``), the diffusion, the resampling and the normalisation
(:func:`score_map_timed`), the graph's size, and the peak numpy/scipy heap of the score
map (tracemalloc: the graph, P and the maps; the ONNX runtime's own arena is not in it — the
process's peak RSS is reported at the end); for RW-CP-3D (``depth=1``) and slice-by-slice 2D
RW-CP (``depth=0``) on the same volumes.

    python benchmarks/bench_volumes.py memory --out docs/benchmarks/volumes_memory.json
    python benchmarks/bench_volumes.py rwcp --data DIR --out docs/benchmarks/volumes_rwcp.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def score_map_timed(fam: Any, case: Any, timings: dict[str, float]) -> np.ndarray:
    """RW-CP's score map r = 1 − s' of one case (``fam.score_map(case)``), filling ``timings``
    with the seconds of each stage of ``fam.foreground`` plus ``normalize``."""
    s = fam.foreground(case, timings)
    t = time.perf_counter()
    r = 1.0 - fam.normalized(s, case)
    timings["normalize"] = timings.get("normalize", 0.0) + time.perf_counter() - t
    return r


def _write_volumes(root: Path, n: int, shape: tuple[int, int, int], seed: int = 0) -> None:
    import nibabel as nib

    rng = np.random.default_rng(seed)
    (root / "probs").mkdir(parents=True, exist_ok=True)
    (root / "masks").mkdir(exist_ok=True)
    X, Y, Z = shape
    xx, yy, zz = np.meshgrid(np.linspace(-1, 1, X), np.linspace(-1, 1, Y), np.linspace(-1, 1, Z), indexing="ij")
    aff = np.diag([0.8, 0.8, 2.0, 1.0])
    for i in range(n):
        c = rng.normal(0, 0.1, 3)
        r = np.sqrt((xx - c[0]) ** 2 + (yy - c[1]) ** 2 + ((zz - c[2]) * 0.7) ** 2)
        lab = np.zeros(shape, np.uint8)
        lab[r < 0.5] = 1
        lab[r < 0.35] = 2
        lab[(r < 0.25) & (xx > c[0])] = 3
        logits = np.stack([(lab == v).astype(np.float32) * 4 for v in range(4)])
        logits += rng.normal(0, 1.2, logits.shape).astype(np.float32)
        e = np.exp(logits - logits.max(axis=0))
        probs = (e / e.sum(axis=0)).astype(np.float32)
        nib.save(nib.Nifti1Image(probs, aff), str(root / "probs" / f"vol{i:03d}.nii"))
        nib.save(nib.Nifti1Image(lab, aff), str(root / "masks" / f"vol{i:03d}.nii"))


def first_volumes(root: Path, n: int) -> Path:
    """``root/n<n>``: its probs/ and masks/ link the first n volumes of ``root/all``."""
    d = root / f"n{n}"
    for sub in ("probs", "masks"):
        (d / sub).mkdir(parents=True)
        for f in sorted((root / "all" / sub).iterdir())[:n]:
            (d / sub / f.name).symlink_to(f)
    return d


def timed(cmd: list[str]) -> tuple[float, float, float]:
    """(peak RSS MiB, wall s, CPU s) of a command, run under GNU time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as f:
        t = time.perf_counter()
        subprocess.run(["/usr/bin/time", "-f", "%M %U %S", "-o", f.name, *cmd], check=True, capture_output=True)
        wall = time.perf_counter() - t
        rss, user, system = f.read().split()[-3:]
    return int(rss) / 1024, wall, float(user) + float(system)


def run_memory(args: argparse.Namespace) -> dict[str, Any]:
    shape = tuple(int(s) for s in args.shape.split("x"))
    root = Path(tempfile.mkdtemp(prefix="segcp-vol-"))
    rows = []
    try:
        _write_volumes(root / "all", max(args.n), shape)
        for n in args.n:
            d = first_volumes(root, n)
            rss, wall, cpu = timed([sys.executable, "-m", "segcp.cli", "calibrate", "--data", str(d), "--labels", "all", "--alpha", "0.2",
                                    "--out", str(d / "c.json"), "-q"])
            rec = json.loads((d / "c.json").read_text())
            rows.append({"volumes": n, "peak_rss_mib": rss, "wall_s": wall, "cpu_s": cpu, "lambdas": [s["lambda"] for s in rec["structures"]]})
            print(rows[-1], flush=True)
            shutil.rmtree(d)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    one = int(np.prod(shape)) * 4 * 4 / 2**20
    return {"shape": list(shape), "classes": 4, "structures": 3, "stack_mib": one, "rows": rows, "load": list(os.getloadavg())}


def run_rwcp(args: argparse.Namespace) -> dict[str, Any]:
    import resource
    import tracemalloc

    from segcp.io import DataDir
    from segcp.methods import get_method
    from segcp.methods.rwcp import slice_axis

    rows = []
    tracemalloc.start()
    for depth in args.depths:
        fam = get_method("rwcp", encoder=args.encoder, threads=args.threads, depth=depth)
        reader = DataDir(args.data).reader(fam)
        for ident in reader.ids[: args.volumes]:
            case = reader.read(ident)
            timings: dict[str, float] = {}
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            t = time.perf_counter()
            score_map_timed(fam, case, timings)
            total = time.perf_counter() - t
            peak = (tracemalloc.get_traced_memory()[1] - base) / 2**20
            ax = slice_axis(case.probs.shape, case.spacing)
            rows.append({"id": ident, "depth": depth, "shape": list(case.probs.shape), "spacing": case.spacing, "slice_axis": ax,
                         "slices": case.probs.shape[ax], "total_s": total, "heap_peak_mib": peak,
                         **{k: (int(v) if k in ("nodes", "edges") else v) for k, v in timings.items()}})
            print(rows[-1], flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"data": str(args.data), "encoder": args.encoder, "threads": args.threads, "rows": rows,
            "process_peak_rss_mib": rss, "load": list(os.getloadavg())}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="section", required=True)
    m = sub.add_parser("memory")
    m.add_argument("--n", type=int, nargs="+", default=[4, 8, 16])
    m.add_argument("--shape", default="256x256x128")
    m.add_argument("--out")
    r = sub.add_parser("rwcp")
    r.add_argument("--data", required=True)
    r.add_argument("--encoder", default="dinov2-small")
    r.add_argument("--threads", type=int, default=1)
    r.add_argument("--volumes", type=int, default=3)
    r.add_argument("--depths", type=int, nargs="+", default=[1, 0])
    r.add_argument("--out")
    args = ap.parse_args(argv)
    res = run_memory(args) if args.section == "memory" else run_rwcp(args)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
