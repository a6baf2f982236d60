"""Scale-out benchmarks of issue 12: Dask workers, memory vs n, the serial reduce, compact curves.

Figures and the commands that reproduce them: docs/benchmarks/scale.md. Sections:

* ``throughput`` — images/s of ``calibrate_dir`` for threshold (I/O-bound: ``--n`` NPY
  phantoms of 256 × 256) and RW-CP (encoder-bound: ``--rwcp-n`` phantoms with images, the
  default DINOv2-S/14 encoder, feature cache off), ``--curves`` exact (default) or compact,
  in three modes: the single-process path, a
  local Dask cluster of 1 worker and of 2 workers, plus (threshold) a loop that only reads
  the files (``bench_speed._read_only``: the physical limit of an I/O-bound calibration).
  Each run is a fresh process (no warm in-memory cache carries over; the OS page cache is
  warm for all alike: every file is read once before the first round), the modes are
  **interleaved** round by round (``--rounds``), and the cluster's start-up is timed apart
  from the calibration. Ratios are taken within a round,
  then the median over rounds; the load average is recorded before every run.
* ``memory`` — peak RSS of the client (growth over its state before the job) and of each
  worker vs n (``--sizes``, 256 × 256 phantoms), exact vs compact curves, single process and
  2 workers; with the size of the curves the reduce holds.
* ``reduce`` — the serial part: time of the reduce alone (exact: concatenating n curves and
  the exact CRC sort; compact: adding n compact parts into one grid and CRC on it) vs n, from
  real per-image phantom curves replicated; with the client's (and LocalCluster scheduler's)
  CPU time per image during a 2-worker run, the serial fraction s of a calibration and
  Amdahl's speed-up 1 / (s + (1 − s)/p) for p = 8, 64, 512.
* ``compact-cost`` — what compact curves cost on real model outputs (docs/models.md, in
  ``--probs`` folders: ACDC LV, ACDC RV, BUSI): over ``--splits`` patient-level splits with
  ``--n-cal`` calibration images and each α, λ̂ exact vs compact (grid 2^16, and coarser
  grids), the largest difference, and the set inflation on the test images
  (|C(λ̂_compact)| / |C(λ̂_exact)| − 1 per test image: its mean and maximum; and over all the
  test pixels of a split together: Σ|C(λ̂_compact)| / Σ|C(λ̂_exact)| − 1, its mean and maximum
  over splits) and the change of test FNR.

Run (the data is generated under ``--root``, 3.3 GB for 10 000 images; removed with ``clean``)::

    python benchmarks/bench_scale.py throughput --root /tmp/segcp-scale --out docs/benchmarks/scale_throughput.json
    python benchmarks/bench_scale.py memory --root /tmp/segcp-scale --out docs/benchmarks/scale_memory.json
    python benchmarks/bench_scale.py reduce --root /tmp/segcp-scale --out docs/benchmarks/scale_reduce.json
    python benchmarks/bench_scale.py compact-cost --probs /work/artifacts/probs/acdc-lv /work/artifacts/probs/acdc-rv \\
        /work/artifacts/probs/busi --out docs/benchmarks/scale_compact_cost.json
    python benchmarks/bench_scale.py clean --root /tmp/segcp-scale
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_speed import _load, _read_only, _timed, _versions

HERE = Path(__file__).resolve().parent
MODES = ("serial", "dask1", "dask2")
RWCP = {"encoder": "dinov2-small", "cache": False}


def _rss_mib() -> float:
    """This process's peak RSS so far (MiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class _PeakRSS:
    """The largest current RSS of this process while the block runs (sampled every 10 ms), MiB."""

    def __enter__(self) -> _PeakRSS:
        import threading

        import psutil

        self._proc = psutil.Process()
        self.before = self._proc.memory_info().rss / 2**20
        self.peak = self.before
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._proc.memory_info().rss / 2**20)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss / 2**20)


# ---------------------------------------------------------------------------- data
def phantom_dir(root: Path, n: int, *, images: bool = False, name: str | None = None) -> Path:
    """``n`` phantoms of 256 × 256 (float32 probabilities of the LV cavity, uint8 masks, and
    images when asked), written once under ``root/all`` and linked into ``root/<name>``."""
    from segcp.synthetic import make_phantoms

    full = root / ("all-img" if images else "all")
    have = len(list((full / "probs").glob("*.npy"))) if (full / "probs").is_dir() else 0
    if have < n:
        subs = ("probs", "masks", "images") if images else ("probs", "masks")
        for s in subs:
            (full / s).mkdir(parents=True, exist_ok=True)
        ph = make_phantoms(n=50, shape=(256, 256), seed=0)
        for i in range(have, n):
            p = ph[i % len(ph)]
            np.save(full / "probs" / f"{i:05d}.npy", p.probs.astype(np.float32))
            np.save(full / "masks" / f"{i:05d}.npy", (p.label == 3).astype(np.uint8))
            if images:
                np.save(full / "images" / f"{i:05d}.npy", p.image.astype(np.float32))
    d = root / (name or f"{'img-' if images else ''}n{n}")
    if not d.is_dir():
        for s in [p.name for p in full.iterdir() if p.is_dir()]:
            (d / s).mkdir(parents=True)
            for i in range(n):
                (d / s / f"{i:05d}.npy").symlink_to(full / s / f"{i:05d}.npy")
    return d


def volume_dir(root: Path, n: int, side: int = 128) -> Path:
    """``n`` synthetic 3D volumes of ``side``³ voxels (an ellipsoidal organ of about 7 % of the
    volume, float32 probabilities: a noisy sigmoid of its signed distance), 10 distinct ones
    written under ``root/vol-all`` and linked into ``root/vol-n<n>``."""
    from scipy import ndimage

    full = root / f"vol-all{side}"
    if not (full / "probs" / "009.npy").is_file():
        for s in ("probs", "masks"):
            (full / s).mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        z, y, x = np.ogrid[:side, :side, :side]
        for k in range(10):
            c = side / 2 + rng.uniform(-8, 8, 3)
            r = side * np.array([0.30, 0.25, 0.22]) * rng.uniform(0.9, 1.1, 3)
            q = ((z - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((x - c[2]) / r[2]) ** 2
            mask = q < 1
            noise = ndimage.gaussian_filter(rng.standard_normal(mask.shape), 3)
            p = 1 / (1 + np.exp(-(6 * (1 - np.sqrt(q)) + 4 * noise / noise.std())))
            np.save(full / "probs" / f"{k:03d}.npy", p.astype(np.float32))
            np.save(full / "masks" / f"{k:03d}.npy", mask.astype(np.uint8))
    d = root / f"vol{side}-n{n}"
    if not d.is_dir():
        for s in ("probs", "masks"):
            (d / s).mkdir(parents=True)
            for i in range(n):
                (d / s / f"{i:05d}.npy").symlink_to(full / s / f"{i % 10:03d}.npy")
    return d


# ---------------------------------------------------------------------------- one run (own process)
def one_run(args: argparse.Namespace) -> dict[str, Any]:
    """One calibration (or the read-only loop) in this fresh process; JSON on stdout."""
    from segcp.jobs import calibrate_dir
    from segcp.parallel import DaskExecutor, InProcessExecutor

    params = json.loads(args.params)
    out: dict[str, Any] = {"mode": args.mode, "load": _load()}
    if args.mode == "read":
        _, out["seconds"], out["cpu"] = _timed(lambda: _read_only(Path(args.data)))
        out["total_cpu"] = out["cpu"]
        return out
    workers = {"serial": None, "dask1": 1, "dask2": 2}[args.mode]
    t = time.perf_counter()
    ex = InProcessExecutor() if workers is None else DaskExecutor.local(workers)  # a Dask cluster even of one worker
    out["start_seconds"] = time.perf_counter() - t
    try:
        if workers:
            ex.client.run(lambda: __import__("segcp.jobs"))  # the workers import segcp before the clock starts
            cpu0 = ex.client.run(time.process_time)
        if workers:
            out["worker_before_mib"] = sorted(ex.client.run(lambda: __import__("psutil").Process().memory_info().rss / 2**20).values())
        with _PeakRSS() as mem:
            rec, out["seconds"], out["cpu"] = _timed(
                lambda: calibrate_dir(
                    args.data, method=args.method, alpha=0.1, method_params=params, show_progress=False, executor=ex, curve_form=args.curves
                )
            )
        out["client_peak_mib"], out["client_before_mib"] = mem.peak, mem.before
        if workers and args.idle:  # the client's CPU while the cluster idles: its per-second background cost
            c0, t0 = time.process_time(), time.perf_counter()
            time.sleep(args.idle)
            out["client_idle_cpu_per_s"] = (time.process_time() - c0) / (time.perf_counter() - t0)
        out["lambda"], out["n"], out["compact"] = rec["lambda"], rec["n"], "curves" in rec
        if workers:
            peaks = ex.client.run(lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            out["worker_peak_mib"] = sorted(peaks.values())
            cpu1 = ex.client.run(time.process_time)
            out["worker_cpu"] = float(sum(cpu1[w] - cpu0[w] for w in cpu1 if w in cpu0))
        out["total_cpu"] = out["cpu"] + out.get("worker_cpu", 0.0)  # client (+ LocalCluster scheduler) and workers
    finally:
        ex.close()
    return out


def _run(
    data: Path, mode: str, method: str = "threshold", curves: str = "exact", params: dict | None = None, timeout: int = 3600, idle: float = 0.0
) -> dict[str, Any]:
    cmd = [
        sys.executable,
        str(HERE / "bench_scale.py"),
        "_one",
        "--data",
        str(data),
        "--mode",
        mode,
        "--method",
        method,
        "--curves",
        curves,
        "--params",
        json.dumps(params or {}),
        "--idle",
        str(idle),
    ]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{p.stderr[-3000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------- throughput
def run_throughput(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.root)
    jobs = {"threshold": (phantom_dir(root, args.n), "threshold", {}), "rwcp": (phantom_dir(root, args.rwcp_n, images=True), "rwcp", RWCP)}
    res: dict[str, Any] = {"versions": _versions(), "cpus": os.cpu_count(), "load_start": _load(), "curves": args.curves, "rounds": []}
    for job, (d, _, _) in jobs.items():  # warm the page cache first: else round 0's first mode alone reads from the disk
        if job == "threshold" or args.rwcp_n:
            _read_only(d)
    for r in range(args.rounds):
        row: dict[str, Any] = {}
        for job, (d, method, params) in jobs.items():
            if job == "rwcp" and args.rwcp_n == 0:
                continue
            modes = (["read"] if job == "threshold" else []) + list(MODES)
            if r % 2:
                modes = modes[::-1]  # alternate the order, so that a load change hits every mode alike
            for mode in modes:
                row[f"{job}/{mode}"] = _run(d, mode, method, args.curves, params)
                print(f"round {r} {job}/{mode}: {row[f'{job}/{mode}']['seconds']:.2f} s (load {row[f'{job}/{mode}']['load']})", flush=True)
        res["rounds"].append(row)
    res["load_end"] = _load()
    summary: dict[str, Any] = {}
    for job, (_, _, _) in jobs.items():
        n = args.n if job == "threshold" else args.rwcp_n
        if n == 0:
            continue
        lams = {rd[f"{job}/{m}"]["lambda"] for rd in res["rounds"] for m in MODES}
        s: dict[str, Any] = {"n": n, "lambda_identical_in_every_mode": len(lams) == 1}
        for m in MODES:
            secs = [rd[f"{job}/{m}"]["seconds"] for rd in res["rounds"]]
            s[m] = {
                "images_per_s": n / float(np.median(secs)),
                "seconds_median": float(np.median(secs)),
                "cluster_start_median": float(np.median([rd[f"{job}/{m}"]["start_seconds"] for rd in res["rounds"]])),
            }
            s[m]["ratio_vs_serial"] = float(np.median([rd[f"{job}/serial"]["seconds"] / rd[f"{job}/{m}"]["seconds"] for rd in res["rounds"]]))
            s[m]["cpu_seconds_median"] = float(np.median([rd[f"{job}/{m}"]["total_cpu"] for rd in res["rounds"]]))
            s[m]["cpu_ratio_vs_serial"] = float(np.median([rd[f"{job}/{m}"]["total_cpu"] / rd[f"{job}/serial"]["total_cpu"] for rd in res["rounds"]]))
        if job == "threshold":
            s["read_seconds_median"] = float(np.median([rd["threshold/read"]["seconds"] for rd in res["rounds"]]))
            for m in MODES:
                s[m]["over_read"] = float(np.median([rd[f"threshold/{m}"]["seconds"] / rd["threshold/read"]["seconds"] for rd in res["rounds"]]))
        summary[job] = s
    res["summary"] = summary
    return res


# ---------------------------------------------------------------------------- memory
def _breakpoints(d: Path) -> int:
    """P of the exact threshold curves of a directory (one per distinct truth score per image)."""
    from segcp import ConformalSegmenter
    from segcp.io import DataDir

    reader = DataDir(d).reader(ConformalSegmenter("threshold").family)
    cs = ConformalSegmenter("threshold", curve_form="exact")
    seen: dict[str, int] = {}
    total = 0
    for ident in reader.ids:
        key = os.path.realpath(reader.dd.path("probs", ident))
        if key not in seen:
            seen[key] = int(cs.curves([reader.read(ident)]).breakpoints.size)
        total += seen[key]
    return total


def run_memory(args: argparse.Namespace) -> dict[str, Any]:
    root = Path(args.root)
    res: dict[str, Any] = {"versions": _versions(), "load_start": _load(), "rows": []}
    runs = [(n, "2d", phantom_dir(root, n)) for n in args.sizes] + [(n, "3d", volume_dir(root, n)) for n in args.volumes]
    for n, kind, d in runs:
        p = _breakpoints(d)
        for curves in ("exact", "compact"):
            for mode in ("serial", "dask2"):
                r = _run(d, mode, "threshold", curves)
                row = {
                    "n": n,
                    "kind": kind,
                    "curves": curves,
                    "mode": mode,
                    "breakpoints": p,
                    "curve_mib": (16 * p + 16 * n) / 2**20 if curves == "exact" else 3 * 8 * 2**16 / 2**20,
                    "client_growth_mib": r["client_peak_mib"] - r["client_before_mib"],
                    **r,
                }
                res["rows"].append(row)
                print(
                    f"{kind} n={n} {curves} {mode}: client +{row['client_growth_mib']:.0f} MiB (peak {r['client_peak_mib']:.0f}), "
                    f"workers {r.get('worker_peak_mib')}, {r['seconds']:.1f} s, load {r['load']}",
                    flush=True,
                )
    res["load_end"] = _load()
    return res


# ---------------------------------------------------------------------------- reduce
def _reduce(form: str, grid: Any, parts: list[Any]) -> float:
    """The client's reduce: the task results ``parts`` added into one accumulator, then CRC."""
    from segcp import ConformalSegmenter
    from segcp.calibration.compact import CurveAccumulator

    acc = CurveAccumulator(form, grid)
    for k, part in enumerate(parts):
        acc.add(k, part)
    return ConformalSegmenter("threshold", alpha=0.1, curve_form=form).calibrate_curves(acc.result()).lambda_


def run_reduce(args: argparse.Namespace) -> dict[str, Any]:
    from segcp import ConformalSegmenter, LossCurves
    from segcp.calibration.compact import CompactCurves, default_grid
    from segcp.io import DataDir

    root = Path(args.root)
    d = phantom_dir(root, 50, name="n50")
    cs = ConformalSegmenter("threshold", alpha=0.1, curve_form="exact")
    reader = DataDir(d).reader(cs.family)
    per_image = [cs.curves([reader.read(i)]) for i in reader.ids]
    grid = default_grid(0.0, 1.0)
    compact_parts = [CompactCurves.from_curves(c, grid) for c in per_image]
    chunk = 64  # the default task size: the reduce receives one part per 64 images
    res: dict[str, Any] = {"versions": _versions(), "load_start": _load(), "chunk": chunk, "rows": []}
    for n in args.sizes:
        sizes = [chunk] * (n // chunk) + ([n % chunk] if n % chunk else [])  # n images in tasks of 64, the last one shorter
        exact_of = {k: LossCurves.concat([per_image[i % 50] for i in range(k)]) for k in set(sizes)}
        compact_of = {k: CompactCurves.concat([compact_parts[i % 50] for i in range(k)]) for k in set(sizes)}
        exact_parts, compact_parts_n = [exact_of[k] for k in sizes], [compact_of[k] for k in sizes]
        row: dict[str, Any] = {"n": n, "parts": len(sizes)}
        if n <= args.exact_max:
            _, row["exact_seconds"], row["exact_cpu"] = _timed(lambda ps=exact_parts: _reduce("exact", None, ps))
            row["exact_breakpoints"] = int(sum(int(p.breakpoints.size) for p in exact_parts))
        _, row["compact_seconds"], row["compact_cpu"] = _timed(lambda ps=compact_parts_n: _reduce("compact", grid, ps))
        res["rows"].append(row)
        print(row, flush=True)
    # the serial part of a real run, in CPU seconds (load-insensitive): T1 = the single process's
    # CPU; S = the client's CPU during a 2-worker run (client, reduce and, for a LocalCluster, the
    # scheduler), W = the workers' CPU. Projected: T(p) = S + W / p, speed-up T1 / T(p); Amdahl's
    # s = S / (S + W). The client's background CPU per wall second (heartbeats, monitors) is
    # measured while the cluster idles, to split S into a per-task and a per-second part.
    n = args.amdahl_n
    dn = phantom_dir(root, n)
    rows: dict[str, Any] = {}
    for form in ("exact", "compact"):
        serial = _run(dn, "serial", "threshold", form)
        cluster = _run(dn, "dask2", "threshold", form, idle=10.0)
        t1, s_cpu, w_cpu = serial["cpu"], cluster["cpu"], cluster["worker_cpu"]
        background = cluster["client_idle_cpu_per_s"] * cluster["seconds"]
        red = next((r[f"{form}_cpu"] for r in res["rows"] if r["n"] == n and f"{form}_cpu" in r), float("nan"))
        rows[form] = {
            "n": n,
            "single_process_cpu": t1,
            "single_process_seconds": serial["seconds"],
            "client_cpu": s_cpu,
            "worker_cpu": w_cpu,
            "cluster_seconds": cluster["seconds"],
            "client_idle_cpu_per_s": cluster["client_idle_cpu_per_s"],
            "client_background_cpu": background,
            "reduce_cpu": red,
            "s": s_cpu / (s_cpu + w_cpu),
            "s_without_background": max(s_cpu - background, 0.0) / (s_cpu - background + w_cpu),
            "s_reduce_only": red / t1,
            "speedup": {
                str(p): {
                    "measured_S": t1 / (s_cpu + w_cpu / p),
                    "S_without_background": t1 / (max(s_cpu - background, 0.0) + w_cpu / p),
                    "reduce_only": 1 / (red / t1 + (1 - red / t1) / p),
                }
                for p in (8, 64, 512)
            },
            "load": [serial["load"], cluster["load"]],
        }
        print(form, json.dumps(rows[form]), flush=True)
    res["amdahl"] = rows
    res["load_end"] = _load()
    return res


# ---------------------------------------------------------------------------- compact cost
def run_compact_cost(args: argparse.Namespace) -> dict[str, Any]:
    from segcp import ConformalSegmenter
    from segcp.calibration.compact import CompactCurves, Grid
    from segcp.compare import load_groups
    from segcp.engine.splits import random_cal_test_splits
    from segcp.io import DataDir

    res: dict[str, Any] = {"versions": _versions(), "splits": args.splits, "n_cal": args.n_cal, "alphas": args.alphas, "sets": []}
    for folder in args.probs:
        fam = ConformalSegmenter("threshold").family
        reader = DataDir(folder).reader(fam, label=args.label)
        exact = ConformalSegmenter("threshold", curve_form="exact")
        scores, curves = [], []
        for ident in reader.ids:
            case = reader.read(ident)
            s = np.sort(fam.score_map(case).ravel())
            scores.append(s)
            curves.append(exact.curves([case]))
        all_curves = exact.merge(curves)
        groups, source = load_groups(folder, reader.ids)
        for size in args.grids:
            grid = Grid(0.0, 1.0, size)
            parts = [CompactCurves.from_curves(c, grid) for c in curves]
            for a in args.alphas:
                e = ConformalSegmenter("threshold", a, curve_form="exact")
                c = ConformalSegmenter("threshold", a, curve_form="compact", grid_size=size)
                gaps, infl, infl_max, infl_px, dfnr = [], [], [], [], []
                for cal, test in random_cal_test_splits(groups, args.n_cal, args.splits, args.seed):
                    le = e.calibrate_curves(all_curves.take(cal)).lambda_
                    lc = c.calibrate_curves(CompactCurves.concat([parts[i] for i in cal])).lambda_
                    gaps.append(lc - le)
                    size_e = np.array([np.searchsorted(scores[i], le, side="right") for i in test], dtype=float)  # |C(λ)| in pixels
                    size_c = np.array([np.searchsorted(scores[i], lc, side="right") for i in test], dtype=float)
                    ratio = size_c[size_e > 0] / size_e[size_e > 0] - 1
                    infl.append(float(ratio.mean()) if ratio.size else 0.0)
                    infl_max.append(float(ratio.max()) if ratio.size else 0.0)
                    infl_px.append(float(size_c.sum() / size_e.sum() - 1) if size_e.sum() else 0.0)  # all test pixels together
                    dfnr.append(float(all_curves.evaluate(le)[test].mean() - all_curves.evaluate(lc)[test].mean()))
                g = np.array(gaps)
                row = {
                    "data": str(folder),
                    "images": len(reader.ids),
                    "groups_from": source,
                    "grid": size,
                    "step": grid.step,
                    "alpha": a,
                    "lambda_diff_max": float(g.max()),
                    "lambda_diff_mean": float(g.mean()),
                    "lambda_never_below_exact": bool(g.min() >= 0),
                    "within_one_step": bool(g.max() <= grid.step * (1 + 1e-12)),
                    "inflation_mean": float(np.mean(infl)),
                    "inflation_max": float(np.max(infl_max)),
                    "inflation_pixels_mean": float(np.mean(infl_px)),
                    "inflation_pixels_max": float(np.max(infl_px)),
                    "fnr_decrease_mean": float(np.mean(dfnr)),
                    "fnr_decrease_max": float(np.max(dfnr)),
                }
                res["sets"].append(row)
                print(json.dumps(row), flush=True)
    return res


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="section", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--root", required=True)
    t.add_argument("--n", type=int, default=2000)
    t.add_argument("--rwcp-n", type=int, default=16)
    t.add_argument("--rounds", type=int, default=3)
    t.add_argument("--curves", choices=("exact", "compact"), default="exact", help="curve form of the calibrations")
    t.add_argument("--out")
    m = sub.add_parser("memory")
    m.add_argument("--root", required=True)
    m.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000], help="2D images of 256 x 256")
    m.add_argument("--volumes", type=int, nargs="*", default=[10, 50, 200], help="3D volumes of 128^3")
    m.add_argument("--out")
    r = sub.add_parser("reduce")
    r.add_argument("--root", required=True)
    r.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000, 100000, 1000000])
    r.add_argument("--exact-max", type=int, default=100000, help="largest n for the exact reduce (memory)")
    r.add_argument("--amdahl-n", type=int, default=10000)
    r.add_argument("--out")
    c = sub.add_parser("compact-cost")
    c.add_argument("--probs", nargs="+", required=True)
    c.add_argument("--label", type=int, default=None)
    c.add_argument("--grids", type=int, nargs="+", default=[2**16, 2**12, 2**8])
    c.add_argument("--alphas", type=float, nargs="+", default=[0.2, 0.1, 0.05])
    c.add_argument("--splits", type=int, default=200)
    c.add_argument("--n-cal", type=int, default=20)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--out")
    cl = sub.add_parser("clean")
    cl.add_argument("--root", required=True)
    o = sub.add_parser("_one")  # internal: one run in a fresh process
    o.add_argument("--data", required=True)
    o.add_argument("--mode", choices=("read", *MODES), required=True)
    o.add_argument("--method", default="threshold")
    o.add_argument("--curves", default="exact")
    o.add_argument("--params", default="{}")
    o.add_argument("--idle", type=float, default=0.0, help="then measure the client's CPU over this many idle seconds")
    args = ap.parse_args(argv)
    if args.section == "_one":
        print(json.dumps(one_run(args)))
        return
    if args.section == "clean":
        shutil.rmtree(args.root, ignore_errors=True)
        return
    run = {"throughput": run_throughput, "memory": run_memory, "reduce": run_reduce, "compact-cost": run_compact_cost}[args.section]
    res = run(args)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
