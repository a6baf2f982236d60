"""The engine's controlled-loss rows against the Learn then Test benchmark (docs/ltt.md, issue 25).

`benchmarks/ltt_guarantee.py` measured precision by Learn then Test on ACDC LV with its own split loop
(`ltt_steps` on the step functions of each split's calibration images). This script gives the engine the
same images, maps, groups, splits and settings through `segcp compare`'s code (`compare_dir` with the rows
`threshold:loss=fdr,delta=0.1` and `...,pvalue=wsr` at α = 0.1: ACDC LV n = 70, 500 splits; BUSI with masks
downsampled 4×, n = 300, 200 splits; seed 0) and compares
the mean λ̂, the mean test FDR and the fraction of splits whose test FDR exceeds α with the committed
results (`docs/results/ltt/results.json`). The data directory is written with ids that sort in the
benchmark's image order, so `random_cal_test_splits` draws the same splits.

    python benchmarks/ltt_engine_check.py --acdc /work/shared/data/acdc [--busi /work/shared/data/busi] --work /tmp/ltt-engine \
        --out docs/results/ltt/engine_check.md
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from ltt_guarantee import acdc_lv, busi  # (the benchmark's own loaders: same maps, same order)

from segcp.compare import compare_dir
from segcp.specs import parse_spec

ROWS = {
    "segcp: breakpoints, HB, fixed sequence": "threshold:loss=fdr,delta=0.1@FDR, LTT HB",
    "segcp: breakpoints, WSR, fixed sequence": "threshold:loss=fdr,delta=0.1,pvalue=wsr@FDR, LTT WSR",
}


def write_data(root: Path, probs: list[np.ndarray], masks: list[np.ndarray], groups: list[str]) -> None:
    """probs/, masks/ and groups.json, ids ``img0000``… in the benchmark's order."""
    for sub in ("probs", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    ids = [f"img{i:04d}" for i in range(len(probs))]
    for i, p, m in zip(ids, probs, masks, strict=True):
        np.save(root / "probs" / f"{i}.npy", p)
        np.save(root / "masks" / f"{i}.npy", m)
    (root / "groups.json").write_text(json.dumps(dict(zip(ids, groups, strict=True))))


def check(task: str, data: Path, load: Any, n_cal: int, n_splits: int, seed: int, ref: dict[str, Any], cache: Path) -> list[str]:
    """Run the engine's rows on ``data`` (written by ``load()`` when absent) and one table against ``ref``."""
    if not (data / "groups.json").is_file():
        write_data(data, *load()[:3])
    t0 = time.perf_counter()
    res = compare_dir(data, [parse_spec(s) for s in ROWS.values()], alphas=(0.1,), n_cal=n_cal, n_splits=n_splits, seed=seed, cache_dir=cache)
    seconds = time.perf_counter() - t0
    summary = {s["method"]: s for s in res["summary"]}
    lines = [
        f"**{task}** ({res['n_images']} images in {res['n_groups']} groups, n = {n_cal}, α = δ = 0.1, {n_splits} splits, seed {seed}; "
        f"the engine: {seconds:.0f} s):",
        "",
        "| procedure | mean λ̂ engine / benchmark | mean test FDR engine / benchmark | mean test FNR engine / benchmark | "
        "splits with FDR > α engine / benchmark | infeasible |",
        "|---|---|---|---|---|---|",
    ]
    for label, text in ROWS.items():
        s, r = summary[text.split("@")[1]], ref[label]
        lines.append(
            f"| {label} | {s['lambda']:.10f} / {r['lambda_mean']:.10f} | {s['risk']:.10f} / {r['mean_test_risk']:.10f} | "
            f"{s['fnr']:.10f} / {r['mean_test_fnr']:.10f} | {s['risk_exceeds']:.4f} / {r['violations']:.4f} | {s['infeasible']} / {r['infeasible']} |"
        )
    return [*lines, ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--acdc", type=Path, required=True, help="the ACDC folder (/work/shared/data/acdc)")
    ap.add_argument("--busi", type=Path, default=None, help="the BUSI folder (/work/shared/data/busi): its rows too")
    ap.add_argument("--work", type=Path, required=True, help="where the data directories and the engine's cache go")
    ap.add_argument("--out", type=Path, default=None, help="a Markdown table of the comparison")
    a = ap.parse_args(argv)
    committed = json.loads((ROOT / "docs" / "results" / "ltt" / "results.json").read_text())
    seed = committed["seed"]
    ref = {(r["task"], r["procedure_label"]): r for r in committed["precision"]}
    lines = ["`segcp compare` (the engine) against `benchmarks/ltt_guarantee.py` (docs/results/ltt/results.json) on the same data:", ""]
    tasks = [("ACDC LV", "acdc-lv-ltt", lambda: acdc_lv(a.acdc), committed["n_cal_ltt"], committed["splits"])]
    if a.busi is not None:
        tasks.append(("BUSI (masks 4x downsampled)", "busi-ltt", lambda: busi(a.busi, factor=4), committed["n_cal_busi"], committed["busi_splits"]))
    for task, folder, load, n_cal, n_splits in tasks:
        mine = {label: r for (t, label), r in ref.items() if t == task}
        lines += check(task, a.work / folder, load, n_cal, n_splits, seed, mine, a.work / "cache")
        print("\n".join(lines), flush=True)
    if a.out is not None:
        a.out.write_text("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
