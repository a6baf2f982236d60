"""``segcp view`` on real prediction folders: LA 2018 (3D LGE-MRI, one structure, 0.625 mm) and
ACDC (3D cine-MRI volumes, RV / MYO / LV, no spacing in the files).

From a data directory written by ``segcp infer`` (the model outputs of a task's pool part: see
docs/models.md) this script splits the cases by patient into calibration and test folders
(symbolic links, under ``--work``), runs ``segcp calibrate`` (threshold, α = 0.1; ``--labels
all`` for ACDC) and ``segcp predict`` on the test folder, then times ``segcp view`` on the
prediction folder (wall clock of the command, best of ``--repeat``), reports the file's size,
opens it in headless chromium in its ``#check`` mode (every case decoded and drawn) and takes a
screenshot into ``--shots``. The same again with ``--max-mb`` small enough to force
downsampling.

    python benchmarks/view_real.py --la2018 DIR --acdc DIR --work /work/artifacts/NAME/view --shots docs \\
        --out docs/benchmarks/view_real.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_report_browser import BROWSERS, FLAGS  # the one chromium command line of the tests

NAMES = {"la2018": None, "acdc": {"background": 0, "RV": 1, "MYO": 2, "LV": 3}}


def group_of(ident: str) -> str:
    """The patient of a case id (ACDC's ``patientXXX_frameYY``; LA 2018's ids are patients)."""
    return ident.split("_frame")[0]


def split(data: Path, work: Path, calib_groups: int, labels: dict[str, int] | None) -> tuple[Path, Path, int, int]:
    """Calibration and test folders of symbolic links to ``data``'s files, split by patient."""
    ids = sorted(p.name.split(".")[0] for p in (data / "masks").iterdir())
    groups = sorted({group_of(i) for i in ids})
    parts = {"calib": set(groups[:calib_groups]), "test": set(groups[calib_groups:])}
    for part, members in parts.items():
        for kind in ("images", "probs", "masks"):
            (work / part / kind).mkdir(parents=True, exist_ok=True)
            for f in sorted((data / kind).iterdir()):
                if group_of(f.name.split(".")[0]) in members:
                    (work / part / kind / f.name).symlink_to(f.resolve())
        if labels is not None:
            (work / part / "dataset.json").write_text(json.dumps({"labels": labels}))
    n = {part: sum(group_of(i) in members for i in ids) for part, members in parts.items()}
    return work / "calib", work / "test", n["calib"], n["test"]


def segcp(*args: Any) -> tuple[float, float]:
    """Run one segcp command: (wall seconds, CPU seconds of the command: user + system)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    subprocess.run(["segcp", *map(str, args)], check=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def browser() -> str:
    for name in BROWSERS:
        if shutil.which(name):
            return name
    raise SystemExit("no chromium found")


def chromium(*args: str, profile: Path) -> str:
    cmd = [browser(), *FLAGS, f"--user-data-dir={profile}", "--virtual-time-budget=120000", *args]
    return subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=600).stdout


def view(name: str, pred: Path, test: Path, calib: Path, out: Path, work: Path, repeat: int, extra: list[str]) -> dict[str, Any]:
    runs = []
    for _ in range(repeat):
        out.unlink(missing_ok=True)
        runs.append(segcp("view", "--sets", pred, "--data", test, "--calib", calib, "--out", out, "-q", *extra))
    seconds = [w for w, _ in runs]
    cpu = [c for _, c in runs]
    html = out.read_text()
    meta = json.loads(re.search(r'<script id="segcp-meta" type="application/json">(.*?)</script>', html, re.S).group(1).replace("<\\/", "</"))
    dom = chromium("--dump-dom", out.as_uri() + "#check", profile=work / "profile")
    check = json.loads(re.search(r'<pre id="segcp-check">(.*?)</pre>', dom, re.S).group(1))
    return {
        "dataset": name,
        "file": str(out),
        "bytes": out.stat().st_size,
        "MiB": round(out.stat().st_size / 2**20, 2),
        "seconds_best": round(min(seconds), 2),
        "seconds_all": [round(s, 2) for s in seconds],
        "cpu_seconds_best": round(min(cpu), 2),
        "cpu_seconds_all": [round(c, 2) for c in cpu],
        "load_after": os.getloadavg()[0],
        "cases": len(meta["cases"]),
        "factor": meta["factor"],
        "shape_shown": meta["cases"][0]["shape"],
        "shape_full": meta["cases"][0]["full"],
        "max_mb": extra[1] if extra else "32 (default)",
        "chromium_loaded": check["loaded"],
        "chromium_failed": check["failed"],
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--la2018", type=Path, required=True, help="segcp infer output of la2018 (pool)")
    ap.add_argument("--acdc", type=Path, required=True, help="segcp infer output of acdc-3d (pool)")
    ap.add_argument("--work", type=Path, required=True, help="a new folder for the splits, sets and pages")
    ap.add_argument("--shots", type=Path, required=True, help="folder for the screenshots (docs/)")
    ap.add_argument("--out", type=Path, required=True, help="results JSON")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    args.work.mkdir(parents=True)
    results: list[dict[str, Any]] = []
    plan = [
        ("la2018", args.la2018, 10, ["--method", "threshold"], "5FKQL4K14KCB72Y8YMC2", "4"),
        ("acdc", args.acdc, 18, ["--method", "threshold", "--labels", "all"], "patient079_frame01", "2"),
    ]
    for name, data, n_calib, method, shown, small in plan:
        w = args.work / name
        calib_dir, test_dir, n_cal, n_test = split(data, w, n_calib, NAMES[name])
        calib = w / "calib.json"
        t_cal, _ = segcp("calibrate", "--data", calib_dir, *method, "--alpha", "0.1", "--out", calib, "-q")
        t_pred, _ = segcp("predict", "--calib", calib, "--data", test_dir, "--out", w / "pred", "-q")
        print(f"{name}: {n_cal} calibration / {n_test} test cases; calibrate {t_cal:.1f} s, predict {t_pred:.1f} s", flush=True)
        for extra in ([], ["--max-mb", small]):
            r = view(name, w / "pred", test_dir, calib, w / f"view{'-small' if extra else ''}.html", w, args.repeat, extra)
            results.append(r | {"calibration_cases": n_cal, "seconds_calibrate": round(t_cal, 1), "seconds_predict": round(t_pred, 1)})
            print(json.dumps(results[-1]), flush=True)
        shot = args.shots / f"viewer-{name}.png"
        chromium("--window-size=1500,1000", f"--screenshot={shot}", (w / "view.html").as_uri() + f"#case={shown}&mode=both", profile=w / "profile")
        print(f"screenshot: {shot}", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"load": os.getloadavg(), "cpus": os.cpu_count(), "results": results}, indent=2) + "\n")


if __name__ == "__main__":
    main()
