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

``calibrate`` — one volume through ``segcp calibrate --method rwcp`` as a whole command (cold:
a fresh feature cache), this tree against a pristine checkout of the baseline commit (``git
archive``, default e743cc1) in the same run, interleaved, ``--repeat`` times: wall, CPU, peak RSS
(GNU time), the encoder's / graph's share (RW-CP's stage timings, recorded by wrapping
``RWCPMethod.foreground`` in the command's process), ratios, and the load (``uptime``) before and
after.

``exactness`` — the score maps of every volume of a data directory with the baseline and with
this tree (features shared through one feature cache: the encoder is the same code), then λ̂ of
``--splits`` random calibration/test splits (``--n-cal`` volumes) at each α with both, and the
test sets at λ̂: every difference counted (λ̂, voxels of the sets, score values).

``batch`` — ``segcp calibrate`` on ``--n-cal`` volumes then ``segcp predict`` on the rest (this
tree): wall, CPU, peak RSS of each command.

``settings`` — one volume, cold, per encoder setting (input size × scale): seconds per volume
and the stage timings (this tree); the λ̂/Dice/HD95 of the settings come from ``segcp compare``
(docs/benchmarks/volumes.md gives the command).

``draws`` — ``metrics.diversity.frequency_counts`` and ``draw_metrics`` on CONSIGN-like draws
(S draws of an ACDC-sized label map), baseline vs this tree in separate processes: time, peak
RSS and the values (identical).

    python benchmarks/bench_volumes.py memory --out docs/benchmarks/volumes_memory.json
    python benchmarks/bench_volumes.py rwcp --data DIR --out docs/benchmarks/volumes_rwcp.json
    python benchmarks/bench_volumes.py calibrate --data DIR --volume ID --out docs/benchmarks/volumes_calibrate.json
    python benchmarks/bench_volumes.py exactness --data DIR -p input_size=224 --out docs/benchmarks/volumes_exactness.json
    python benchmarks/bench_volumes.py batch --data DIR --out docs/benchmarks/volumes_batch.json
    python benchmarks/bench_volumes.py draws --out docs/benchmarks/volumes_draws.json
    python benchmarks/bench_volumes.py evaluate-draws --data PROBS/acdc --out docs/benchmarks/volumes_evaluate_draws.json

``evaluate-draws`` — ``segcp evaluate --calib <consign> --draws 1000`` on real MC-dropout samples
(calibration/test parts of the data's split; the baseline's calibration, which both read), baseline vs this tree as whole commands: wall, CPU,
peak RSS, and the metrics (Chao1, SEC, |corr|) compared.
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
from collections.abc import Iterator
from contextlib import contextmanager
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
            rss, wall, cpu = timed(
                [
                    sys.executable,
                    "-m",
                    "segcp.cli",
                    "calibrate",
                    "--data",
                    str(d),
                    "--labels",
                    "all",
                    "--alpha",
                    "0.2",
                    "--out",
                    str(d / "c.json"),
                    "-q",
                ]
            )
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
            rows.append(
                {
                    "id": ident,
                    "depth": depth,
                    "shape": list(case.probs.shape),
                    "spacing": case.spacing,
                    "slice_axis": ax,
                    "slices": case.probs.shape[ax],
                    "total_s": total,
                    "heap_peak_mib": peak,
                    **{k: (int(v) if k in ("nodes", "edges") else v) for k, v in timings.items()},
                }
            )
            print(rows[-1], flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {
        "data": str(args.data),
        "encoder": args.encoder,
        "threads": args.threads,
        "rows": rows,
        "process_peak_rss_mib": rss,
        "load": list(os.getloadavg()),
    }


# ---------------------------------------------------------------------------- baseline and helpers
ROOT = Path(__file__).resolve().parents[1]
BASE_COMMIT = "e743cc1"


@contextmanager
def _baseline_and_work(args: argparse.Namespace, prefix: str, work: str | None = None) -> Iterator[tuple[Path, Path]]:
    """(``src`` of a pristine checkout of the baseline commit, a work folder); what was made here is
    removed afterwards. The baseline is ``git archive <--base-commit>`` of this repository, or
    ``--base-src``; the work folder a fresh temporary one, or ``work`` (kept)."""
    made: list[Path] = []
    try:
        if getattr(args, "base_src", None):
            base = Path(args.base_src)
        else:
            d = Path(tempfile.mkdtemp(prefix="segcp-base-"))
            made.append(d)
            archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.base_commit], check=True, capture_output=True).stdout
            subprocess.run(["tar", "-x", "-C", str(d)], input=archive, check=True)
            base = d / "src"
        if work:
            w = Path(work)
        else:
            w = Path(tempfile.mkdtemp(prefix=prefix))
            made.append(w)
        yield base, w
    finally:
        for d in made:
            shutil.rmtree(d, ignore_errors=True)


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def _env(src: Path, **extra: str) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(src), HF_HUB_OFFLINE="1")
    env.update(extra)
    return env


def _timed(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run a command under GNU time: wall, user + system CPU, peak RSS (MiB); its stdout/stderr tail."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as f:
        t = time.perf_counter()
        p = subprocess.run(["/usr/bin/time", "-f", "%e %U %S %M", "-o", f.name, *cmd], env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t
        _, u, sy, rss = f.read().split()[-4:]
    if p.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr[-2000:]}")
    return {"wall_s": wall, "cpu_s": float(u) + float(sy), "peak_rss_mib": int(rss) / 1024, "stdout": p.stdout[-4000:]}


def _one_volume_dir(data: Path, ident: str, dest: Path) -> None:
    for sub in ("probs", "masks", "images"):
        (dest / sub).mkdir(parents=True, exist_ok=True)
        for f in (data / sub).iterdir():
            if f.name.split(".")[0] == ident:
                (dest / sub / f.name).symlink_to(f.resolve())


def _param_args(params: list[str]) -> list[str]:
    return [a for p in params for a in ("-p", p)]


# ---------------------------------------------------------------------------- calibrate: the whole command
def run_timed_cli(args: argparse.Namespace) -> None:
    """Internal: ``segcp`` with RW-CP's stage timings recorded (the version on PYTHONPATH)."""
    from segcp.cli import main as cli_main
    from segcp.methods.rwcp import RWCPMethod

    stages: dict[str, float] = {}
    orig = RWCPMethod.foreground

    def foreground(self: Any, case: Any, timings: Any = None) -> Any:
        return orig(self, case, stages)

    RWCPMethod.foreground = foreground  # type: ignore[method-assign]
    try:
        cli_main(args.cli)
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    finally:
        Path(args.stages).write_text(json.dumps(stages))


def run_calibrate(args: argparse.Namespace) -> dict[str, Any]:
    with _baseline_and_work(args, "segcp-cal-") as (base, work):
        _one_volume_dir(Path(args.data), args.volume, work / "data")
        rows = []
        load_before = _uptime()
        print(load_before, flush=True)
        versions = [("baseline", base), ("this tree", ROOT / "src")]
        for rep in range(args.repeat):
            for label, src in versions if rep % 2 == 0 else versions[::-1]:
                cache = work / f"cache-{rep}-{label.replace(' ', '')}"
                stages = work / "stages.json"
                cmd = [
                    sys.executable,
                    str(Path(__file__).resolve()),
                    "_timed-cli",
                    "--stages",
                    str(stages),
                    "--",
                    "calibrate",
                    "--method",
                    "rwcp",
                    "--data",
                    str(work / "data"),
                    "--alpha",
                    "0.9",
                    "-q",
                    "-p",
                    f"threads={args.threads}",
                    "-p",
                    f"cache_dir={cache}",
                    *_param_args(args.param),
                    "--out",
                    str(work / "calib.json"),
                ]
                res = _timed(cmd, _env(src))
                res.pop("stdout")
                st = json.loads(stages.read_text())
                rec = json.loads((work / "calib.json").read_text())
                row = {"version": label, "repeat": rep, **res, "lambda": rec["lambda"], "stages": st, "load": os.getloadavg()}
                rows.append(row)
                print(json.dumps(row), flush=True)
                shutil.rmtree(cache, ignore_errors=True)
        load_after = _uptime()
        print(load_after, flush=True)
    summary = {}
    for label in ("baseline", "this tree"):
        rs = [r for r in rows if r["version"] == label]
        summary[label] = {k: float(np.median([r[k] for r in rs])) for k in ("wall_s", "cpu_s", "peak_rss_mib")}
        st = rs[0]["stages"]
        summary[label]["encoder_share"] = st.get("encoder", 0.0) / rs[0]["wall_s"]
        summary[label]["graph_share"] = sum(st.get(k, 0.0) for k in ("knn", "weights", "diffusion")) / rs[0]["wall_s"]
    b, n = summary["baseline"], summary["this tree"]
    ratios = {"wall": b["wall_s"] / n["wall_s"], "cpu": b["cpu_s"] / n["cpu_s"], "peak_rss": b["peak_rss_mib"] / n["peak_rss_mib"]}
    print(json.dumps({"summary": summary, "ratios (baseline / this tree)": ratios}, indent=1), flush=True)
    return {
        "data": str(args.data),
        "volume": args.volume,
        "threads": args.threads,
        "params": args.param,
        "baseline_commit": args.base_commit,
        "rows": rows,
        "summary": summary,
        "ratios": ratios,
        "uptime_before": load_before,
        "uptime_after": load_after,
    }


# ---------------------------------------------------------------------------- exactness on a benchmark
def run_score_maps(args: argparse.Namespace) -> None:
    """Internal: the score map of every volume with the version on PYTHONPATH, saved as .npy."""
    from segcp.io import DataDir
    from segcp.methods import get_method

    params = dict(json.loads(args.params))
    fam = get_method("rwcp", **params)
    reader = DataDir(args.data).reader(fam)
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seconds = {}
    for ident in reader.ids:
        case = reader.read(ident)
        t = time.perf_counter()
        np.save(out / f"{ident}.npy", fam.score_map(case))
        seconds[ident] = time.perf_counter() - t
        print(ident, round(seconds[ident], 1), flush=True)
    (out / "seconds.json").write_text(json.dumps(seconds))


def run_exactness(args: argparse.Namespace) -> dict[str, Any]:
    from segcp.calibration import LossCurves, crc_lambda, fnr_curve
    from segcp.io import DataDir
    from segcp.methods import get_method

    with _baseline_and_work(args, "segcp-exact-", args.work) as (base, work):
        params = {"threads": args.threads, "cache_dir": str(work / "cache")}
        for p in args.param:
            k, _, v = p.partition("=")
            params[k] = json.loads(v) if v[:1] in "0123456789-[{tf" and v not in ("true", "false") else v
            if v in ("true", "false"):
                params[k] = v == "true"
        old_params = {("beta" if k == "kernel_beta" else k): v for k, v in params.items()}
        uptime = [_uptime()]
        seconds = {}
        for label, src, ps in (("baseline", base, old_params), ("this tree", ROOT / "src", params)):
            d = work / label.replace(" ", "")
            if not (d / "seconds.json").is_file():
                subprocess.run(
                    [
                        sys.executable,
                        str(Path(__file__).resolve()),
                        "_score-maps",
                        "--data",
                        str(args.data),
                        "--params",
                        json.dumps(ps),
                        "--out-dir",
                        str(d),
                    ],
                    env=_env(src),
                    check=True,
                )
            seconds[label] = json.loads((d / "seconds.json").read_text())
        uptime.append(_uptime())
        fam = get_method("rwcp", **{k: v for k, v in params.items()})
        reader = DataDir(args.data).reader(fam)
        ids = list(reader.ids)
        masks = {i: reader.read(i).mask for i in ids}
        curves: dict[str, list[LossCurves]] = {"baseline": [], "this tree": []}
        per_volume = []
        for i in ids:
            a = np.load(work / "baseline" / f"{i}.npy")
            b = np.load(work / "thistree" / f"{i}.npy")
            curves["baseline"].append(fnr_curve(a[masks[i] > 0]))
            curves["this tree"].append(fnr_curve(b[masks[i] > 0]))
            diff = np.abs(a - b)
            per_volume.append(
                {
                    "id": i,
                    "voxels": int(a.size),
                    "scores_differ": int(np.count_nonzero(diff)),
                    "scores_differ_1e-9": int(np.count_nonzero(diff > 1e-9)),
                    "max_abs_diff": float(diff.max()),
                }
            )
        rng = np.random.default_rng(args.seed)
        splits = []
        for s in range(args.splits):
            perm = rng.permutation(len(ids))
            cal, test = perm[: args.n_cal], perm[args.n_cal :]
            for alpha in args.alpha:
                lam = {}
                for label, cv in curves.items():
                    c = LossCurves.concat(cv).take(cal)
                    try:
                        lam[label] = float(crc_lambda(c, alpha, lambda_min=0.0).lambda_)
                    except Exception as exc:
                        lam[label] = f"infeasible: {type(exc).__name__}"
                row = {"split": s, "alpha": alpha, "lambda": lam, "lambda_equal": lam["baseline"] == lam["this tree"]}
                if all(isinstance(v, float) for v in lam.values()):
                    set_diff, set_size = 0, 0
                    for t in test:
                        a = np.load(work / "baseline" / f"{ids[t]}.npy") <= lam["baseline"]
                        b = np.load(work / "thistree" / f"{ids[t]}.npy") <= lam["this tree"]
                        set_diff += int(np.count_nonzero(a != b))
                        set_size += int(a.sum())
                    row.update(set_voxels_differ=set_diff, set_voxels=set_size)
                splits.append(row)
                print(json.dumps(row), flush=True)
    feasible = [r for r in splits if "set_voxels_differ" in r]
    summary = {
        "splits_x_alpha": len(splits),
        "lambda_differ": sum(not r["lambda_equal"] for r in splits),
        "max_abs_lambda_diff": max((abs(r["lambda"]["baseline"] - r["lambda"]["this tree"]) for r in feasible), default=0.0),
        "set_voxels_differ": sum(r["set_voxels_differ"] for r in feasible),
        "set_voxels": sum(r["set_voxels"] for r in feasible),
        "volumes_with_score_differences": sum(v["scores_differ"] > 0 for v in per_volume),
    }
    print(json.dumps(summary, indent=1), flush=True)
    return {
        "data": str(args.data),
        "params": args.param,
        "baseline_commit": args.base_commit,
        "n_cal": args.n_cal,
        "splits": args.splits,
        "alpha": args.alpha,
        "summary": summary,
        "per_volume": per_volume,
        "rows": splits,
        "seconds": seconds,
        "uptime": uptime,
    }


# ---------------------------------------------------------------------------- batch: calibrate 10, predict 5
def run_batch(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="segcp-batch-"))
    cache = Path(args.cache) if args.cache else work / "cache"
    try:
        ids = sorted(f.name.split(".")[0] for f in (Path(args.data) / "probs").iterdir())
        cal, test = ids[: args.n_cal], ids[args.n_cal :]
        for i in cal:
            _one_volume_dir(Path(args.data), i, work / "cal")
        for i in test:
            _one_volume_dir(Path(args.data), i, work / "test")
        env = _env(ROOT / "src")
        uptime = [_uptime()]
        common = ["-p", f"threads={args.threads}", "-p", f"cache_dir={cache}", *_param_args(args.param)]
        cal_res = _timed(
            [
                sys.executable,
                "-m",
                "segcp.cli",
                "calibrate",
                "--method",
                "rwcp",
                "--data",
                str(work / "cal"),
                "--alpha",
                str(args.alpha),
                "-q",
                *common,
                *args.device_args,
                "--out",
                str(work / "calib.json"),
            ],
            env,
        )
        pred_res = _timed(
            [
                sys.executable,
                "-m",
                "segcp.cli",
                "predict",
                "--calib",
                str(work / "calib.json"),
                "--data",
                str(work / "test"),
                "-q",
                "-p",
                f"threads={args.threads}",
                "-p",
                f"cache_dir={cache}",
                "--out",
                str(work / "sets"),
            ],
            env,
        )
        uptime.append(_uptime())
        rec = json.loads((work / "calib.json").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for r in (cal_res, pred_res):
        r.pop("stdout")
    out = {
        "data": str(args.data),
        "calibration_volumes": cal,
        "test_volumes": test,
        "params": args.param,
        "threads": args.threads,
        "calibrate": cal_res,
        "predict": pred_res,
        "lambda": rec["lambda"],
        "uptime": uptime,
    }
    print(json.dumps(out, indent=1), flush=True)
    return out


# ---------------------------------------------------------------------------- settings: input size x scale
def run_settings(args: argparse.Namespace) -> dict[str, Any]:
    from segcp.io import DataDir
    from segcp.methods import get_method

    rows = []
    uptime = [_uptime()]
    for setting in args.setting:
        params = dict(kv.split("=", 1) for kv in setting.split(",")) if setting else {}
        with tempfile.TemporaryDirectory(prefix="segcp-set-") as cache:
            fam = get_method("rwcp", threads=args.threads, cache_dir=cache, **params)
            case = DataDir(args.data).reader(fam).read(args.volume)
            t: dict[str, float] = {}
            w, c = time.perf_counter(), time.process_time()
            score_map_timed(fam, case, t)
            rows.append(
                {"setting": setting, "wall_s": time.perf_counter() - w, "cpu_s": time.process_time() - c, "stages": t, "load": os.getloadavg()}
            )
        print(json.dumps(rows[-1]), flush=True)
    uptime.append(_uptime())
    return {"data": str(args.data), "volume": args.volume, "threads": args.threads, "rows": rows, "uptime": uptime}


# ---------------------------------------------------------------------------- draws: frequency counts
def run_draws_worker(args: argparse.Namespace) -> None:
    """Internal: time the diversity metrics of the version on PYTHONPATH on saved draws."""
    import resource

    from segcp.metrics.diversity import draw_metrics, frequency_counts

    draws = np.load(args.draws, mmap_mode="r")
    truth = np.load(args.truth)
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out: dict[str, Any] = {"rss_before_mib": base_rss}
    d = np.ascontiguousarray(draws)
    t = time.perf_counter()
    counts = frequency_counts(d)
    out["frequency_counts_s"] = time.perf_counter() - t
    out["rss_after_counts_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t = time.perf_counter()
    m = draw_metrics(d, truth, 0.9, 4)
    out["draw_metrics_s"] = time.perf_counter() - t
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["counts"] = counts.tolist()
    out["metrics"] = m
    Path(args.result).write_text(json.dumps(out))


def _consign_like_draws(S: int, shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """S label maps (int64, what SegmentationSet.sample returns) of an ACDC-sized image: a 4-label
    'heart' whose boundary pixels take one of a few values per draw, so that draws repeat as
    CONSIGN's do at a small λ (a handful of modes, many duplicates)."""
    rng = np.random.default_rng(seed)
    H, W = shape
    yy, xx = np.mgrid[:H, :W]
    r = np.hypot(yy - H / 2, xx - W / 2)
    truth = np.zeros(shape, np.int64)
    truth[r < 40] = 2
    truth[r < 30] = 3
    truth[(r < 40) & (xx < W / 2 - 25)] = 1
    modes = [np.where(np.abs(r - rad) < 1.5, lab, 0) for rad, lab in ((40, 2), (30, 3), (44, 1), (26, 2))]
    draws = np.empty((S, H, W), np.int64)
    for s in range(S):
        d = truth.copy()
        for m in modes:
            if rng.random() < 0.3:
                d = np.where(m > 0, m, d)
        draws[s] = d
    return draws, truth


def run_draws(args: argparse.Namespace) -> dict[str, Any]:
    with _baseline_and_work(args, "segcp-draws-") as (base, work):
        shape = tuple(int(v) for v in args.shape.split("x"))
        draws, truth = _consign_like_draws(args.draws, shape, 0)  # type: ignore[arg-type]
        np.save(work / "draws.npy", draws)
        np.save(work / "truth.npy", truth)
        rows = []
        uptime = [_uptime()]
        for rep in range(args.repeat):
            for label, src in (("baseline", base), ("this tree", ROOT / "src")):
                res = work / "r.json"
                subprocess.run(
                    [
                        sys.executable,
                        str(Path(__file__).resolve()),
                        "_draws-worker",
                        "--draws",
                        str(work / "draws.npy"),
                        "--truth",
                        str(work / "truth.npy"),
                        "--result",
                        str(res),
                    ],
                    env=_env(src),
                    check=True,
                )
                r = json.loads(res.read_text())
                rows.append(
                    {
                        "version": label,
                        "repeat": rep,
                        **{k: v for k, v in r.items() if k != "counts"},
                        "distinct": len(r["counts"]),
                        "counts_digest": hash(tuple(r["counts"])),
                    }
                )
                print(json.dumps(rows[-1]), flush=True)
        uptime.append(_uptime())
    b = [r for r in rows if r["version"] == "baseline"]
    n = [r for r in rows if r["version"] == "this tree"]
    same = all(x["metrics"] == y["metrics"] and x["counts_digest"] == y["counts_digest"] for x, y in zip(b, n))

    def med(rs: list[dict[str, Any]], k: str) -> float:
        return float(np.median([r[k] for r in rs]))

    summary = {
        "identical_counts_and_metrics": same,
        "frequency_counts_s": {"baseline": med(b, "frequency_counts_s"), "this tree": med(n, "frequency_counts_s")},
        "draw_metrics_s": {"baseline": med(b, "draw_metrics_s"), "this tree": med(n, "draw_metrics_s")},
        "peak_rss_mib": {"baseline": med(b, "peak_rss_mib"), "this tree": med(n, "peak_rss_mib")},
    }
    summary["ratios (baseline / this tree)"] = {
        k: summary[k]["baseline"] / summary[k]["this tree"] for k in ("frequency_counts_s", "draw_metrics_s", "peak_rss_mib")
    }
    print(json.dumps(summary, indent=1), flush=True)
    return {"draws": args.draws, "shape": args.shape, "baseline_commit": args.base_commit, "rows": rows, "summary": summary, "uptime": uptime}


def run_evaluate_draws(args: argparse.Namespace) -> dict[str, Any]:
    """``segcp evaluate --calib <consign> --draws N`` on real samples: baseline vs this tree, whole commands."""
    with _baseline_and_work(args, "segcp-evd-") as (base, work):
        data = Path(args.data)
        rec = json.loads((data / "segcp_export.json").read_text())
        split = rec.get("split", {})
        ids = sorted(f.name.split(".")[0] for f in (data / "samples").iterdir())
        cal = [i for i in ids if i in set(split.get("calibration", []))] or ids[: len(ids) // 2]
        test = [i for i in ids if i not in set(cal)]
        for part, members in (("cal", cal), ("test", test)):
            for sub in ("samples", "masks"):
                (work / part / sub).mkdir(parents=True)
                for f in (data / sub).iterdir():
                    if f.name.split(".")[0] in members:
                        (work / part / sub / f.name).symlink_to(f.resolve())
        # the baseline calibrates: this tree reads its record (as a CONSIGN record of the Adam search, issue 28),
        # while the baseline cannot read this tree's (the line search's options), and both must evaluate the same sets
        env_cal = _env(base)
        subprocess.run(
            [
                sys.executable,
                "-m",
                "segcp.cli",
                "calibrate",
                "--method",
                "consign",
                *args.consign,
                "--alpha",
                str(args.alpha),
                "--data",
                str(work / "cal"),
                "--out",
                str(work / "calib.json"),
                "-q",
            ],
            env=env_cal,
            check=True,
        )
        rows = []
        uptime = [_uptime()]
        for rep in range(args.repeat):
            for label, src in (("baseline", base), ("this tree", ROOT / "src")):
                out = work / f"m-{label.replace(' ', '')}.json"
                res = _timed(
                    [
                        sys.executable,
                        "-m",
                        "segcp.cli",
                        "evaluate",
                        "--calib",
                        str(work / "calib.json"),
                        "--data",
                        str(work / "test"),
                        "--draws",
                        str(args.draws),
                        "--out",
                        str(out),
                        "-q",
                    ],
                    _env(src),
                )
                res.pop("stdout")
                rows.append({"version": label, "repeat": rep, **res})
                print(json.dumps(rows[-1]), flush=True)
        uptime.append(_uptime())
        results = {label: json.loads((work / f"m-{label.replace(' ', '')}.json").read_text()) for label in ("baseline", "this tree")}

    keys = ("score", "covered", "chao", "distinct", "correlation", "sec")  # the metrics (not their timings)

    def strip(r: dict[str, Any]) -> dict[str, Any]:  # λ̂ and every image's metrics; the params' spelling differs by version
        return {"lambda": r["lambda"], "per_image": {i: {k: m[k] for k in keys} for i, m in r["per_image"].items()}}

    same = strip(results["baseline"]) == strip(results["this tree"])
    med = {
        label: {k: float(np.median([r[k] for r in rows if r["version"] == label])) for k in ("wall_s", "cpu_s", "peak_rss_mib")}
        for label in ("baseline", "this tree")
    }
    ratios = {k: med["baseline"][k] / med["this tree"][k] for k in ("wall_s", "cpu_s", "peak_rss_mib")}
    print(json.dumps({"identical_metrics": same, "median": med, "ratios (baseline / this tree)": ratios}, indent=1), flush=True)
    return {
        "data": str(args.data),
        "calibration": len(cal),
        "test": len(test),
        "draws": args.draws,
        "consign": args.consign,
        "alpha": args.alpha,
        "baseline_commit": args.base_commit,
        "rows": rows,
        "median": med,
        "ratios": ratios,
        "identical_metrics": same,
        "metrics": {label: strip(r) | {"mean": {k: r["mean"][k] for k in keys}} for label, r in results.items()},
        "uptime": uptime,
    }


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
    for name in ("calibrate", "exactness", "draws", "evaluate-draws"):
        q = sub.add_parser(name)
        q.add_argument("--base-commit", default=BASE_COMMIT, help="the baseline commit (git archive of this repository)")
        q.add_argument("--base-src", help="or: the src folder of a baseline checkout")
        q.add_argument("--out")
        if name == "draws":
            q.add_argument("--draws", type=int, default=1000)
            q.add_argument("--shape", default="256x216")
            q.add_argument("--repeat", type=int, default=2)
            continue
        if name == "evaluate-draws":
            q.add_argument("--data", required=True, help="samples/ and masks/ (and segcp_export.json with the split)")
            q.add_argument("--draws", type=int, default=1000)
            # 0.2: K = 5, beta = 0.9 at alpha = 0.1 is infeasible on the ACDC MC-dropout calibration part (3 of 28 never covered)
            q.add_argument("--alpha", type=float, default=0.2)
            q.add_argument("--consign", nargs="*", default=["--K", "5", "--beta", "0.9"])
            q.add_argument("--repeat", type=int, default=1)
            continue
        q.add_argument("--data", required=True)
        q.add_argument("--threads", type=int, default=2)
        q.add_argument("-p", "--param", action="append", default=[], help="rwcp parameter KEY=VALUE (both versions)")
        if name == "calibrate":
            q.add_argument("--volume", required=True)
            q.add_argument("--repeat", type=int, default=1)
        else:
            q.add_argument("--n-cal", type=int, default=10)
            q.add_argument("--splits", type=int, default=20)
            q.add_argument("--alpha", type=float, nargs="+", default=[0.2, 0.1])
            q.add_argument("--seed", type=int, default=0)
            q.add_argument("--work", help="keep the score maps here (reused when present)")
    b = sub.add_parser("batch")
    b.add_argument("--data", required=True)
    b.add_argument("--n-cal", type=int, default=10)
    b.add_argument("--alpha", type=float, default=0.1)
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("-p", "--param", action="append", default=[])
    b.add_argument("--device-args", nargs="*", default=[], help="e.g. --device cuda")
    b.add_argument("--cache", help="feature cache folder (default: a fresh temporary one; give an empty one to keep it)")
    b.add_argument("--out")
    st = sub.add_parser("settings")
    st.add_argument("--data", required=True)
    st.add_argument("--volume", required=True)
    st.add_argument("--threads", type=int, default=2)
    st.add_argument("--setting", action="append", default=[], help="comma-separated rwcp parameters, e.g. input_size=224,scale=token,depth=0")
    st.add_argument("--out")
    t = sub.add_parser("_timed-cli")
    t.add_argument("--stages", required=True)
    t.add_argument("cli", nargs=argparse.REMAINDER)
    sm = sub.add_parser("_score-maps")
    sm.add_argument("--data", required=True)
    sm.add_argument("--params", required=True)
    sm.add_argument("--out-dir", required=True)
    dw = sub.add_parser("_draws-worker")
    dw.add_argument("--draws", required=True)
    dw.add_argument("--truth", required=True)
    dw.add_argument("--result", required=True)
    args = ap.parse_args(argv)
    if args.section == "_timed-cli":
        args.cli = [a for a in args.cli if a != "--"] if args.cli[:1] == ["--"] else args.cli
        run_timed_cli(args)
        return
    if args.section == "_score-maps":
        run_score_maps(args)
        return
    if args.section == "_draws-worker":
        run_draws_worker(args)
        return
    runs = {
        "memory": run_memory,
        "rwcp": run_rwcp,
        "calibrate": run_calibrate,
        "exactness": run_exactness,
        "batch": run_batch,
        "settings": run_settings,
        "draws": run_draws,
        "evaluate-draws": run_evaluate_draws,
    }
    res = runs[args.section](args)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
