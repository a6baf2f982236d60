"""segcp.monai's streaming calibration: peak memory and time as the number of volumes grows, against
``segcp calibrate`` on the same files in the same run.

SYNTHETIC NIfTI volumes of ``--shape`` with 4 classes (``bench_volumes._write_volumes``: class-probability
stacks (4, *S) float32, label maps uint8), calibrated for n = 4, 8, 16 volumes (threshold, one λ̂ per
structure: 3) twice, each in a fresh process under GNU time:

- ``monai``: :func:`segcp.monai.calibrate_loader` over a MONAI ``DataLoader`` (``LoadImaged`` +
  ``EnsureChannelFirstd``, batch size 2, no model: the probabilities are read from the files, so what
  is measured is the calibration, not a network);
- ``cli`` (the baseline): ``segcp calibrate --labels all`` on the same files.

Streaming keeps one batch and the loss curves, so the peak should stay flat in n (the curves grow: one
breakpoint per distinct truth score); the records must agree (λ̂ per structure). The MONAI process
also imports MONAI and torch (hundreds of MiB before any volume: measured alone, ``monai_imports_rss_mib``,
and subtracted in ``above_imports_mib``).

    python benchmarks/bench_monai.py --out docs/benchmarks/monai_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from bench_volumes import _write_volumes, first_volumes, timed

MONAI_RUN = """
import sys
from pathlib import Path
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged
from segcp.monai import calibrate_loader
d = Path(sys.argv[1])
files = [{"pred": str(p), "label": str(d / "masks" / p.name)} for p in sorted((d / "probs").iterdir())]
load = Compose([LoadImaged(["pred", "label"]), EnsureChannelFirstd("pred", channel_dim=0), EnsureChannelFirstd("label", channel_dim="no_channel")])
calibrate_loader(DataLoader(Dataset(files, load), batch_size=2), alpha=0.2, channel_axis="first", out=d / "monai.json", show_progress=False)
"""


def run(args: argparse.Namespace) -> dict[str, Any]:
    shape = tuple(int(s) for s in args.shape.split("x"))
    root = Path(tempfile.mkdtemp(prefix="segcp-monai-"))
    rows = []
    imports, _, _ = timed([sys.executable, "-c", "import monai.data, monai.transforms, segcp.monai"])  # before any volume
    try:
        _write_volumes(root / "all", max(args.n), shape)
        for n in args.n:
            d = first_volumes(root, n)
            row: dict[str, Any] = {"volumes": n}
            for name, cmd in (
                (
                    "cli",
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
                        str(d / "cli.json"),
                        "-q",
                    ],
                ),
                ("monai", [sys.executable, "-c", MONAI_RUN, str(d)]),
            ):
                rss, wall, cpu = timed(cmd)
                rec = json.loads((d / f"{name}.json").read_text())
                row[name] = {"peak_rss_mib": rss, "wall_s": wall, "cpu_s": cpu, "lambdas": [s["lambda"] for s in rec["structures"]]}
            row["same_lambdas"] = row["cli"]["lambdas"] == row["monai"]["lambdas"]
            row["monai"]["above_imports_mib"] = row["monai"]["peak_rss_mib"] - imports
            row["rss_ratio_monai_vs_cli"] = row["monai"]["peak_rss_mib"] / row["cli"]["peak_rss_mib"]
            row["cpu_ratio_monai_vs_cli"] = row["monai"]["cpu_s"] / row["cli"]["cpu_s"]
            rows.append(row)
            print(json.dumps(row), flush=True)
            shutil.rmtree(d)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    one = int(np.prod(shape)) * 4 * 4 / 2**20
    return {
        "shape": list(shape),
        "classes": 4,
        "structures": 3,
        "stack_mib": one,
        "batch_size": 2,
        "monai_imports_rss_mib": imports,
        "rows": rows,
        "load": list(os.getloadavg()),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="128x128x64")
    parser.add_argument("--n", type=int, nargs="+", default=[4, 8, 16])
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    result = run(args)
    if args.out:
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
