"""Per-group (Mondrian) calibration on BUSI benign / malignant, through the wired estimator.

What it measures (issue 25, "What must be shown": BUSI benign/malignant; results in
docs/results/ltt/groups.md and groups.json, discussed in docs/ltt.md):

For each of ``--splits`` random calibration/test splits of BUSI's 647 images (split by
near-duplicate group, ``n_cal`` calibration images), :class:`segcp.risk.RiskSegmenter` is fitted
once with the class of each image as its group: the marginal λ̂ (all calibration images) and one
λ̂ per class (each class's own calibration images). The test FNR of each class is the mean FNR of
the class's test images under the marginal λ̂ and under the class's own λ̂. Reported per class and
α: the mean test FNR over the splits ± its SE, whether it is ≤ α + 3·SE (valid), and the mean λ̂.

Scores are the project's model-free ones (``fixed_score`` of tests/test_guarantee_acdc.py: a blurred
mask with its boundary shifted inward, and smooth logit noise), on masks downsampled 4×: they miss
a larger fraction of a lesion with a longer boundary for its area. Which class is the harder one
depends on the scores (with these it is the benign one, whose lesions are smaller); the point is
that the marginal λ̂ averages over the classes and the per-class λ̂ does not.

    python benchmarks/group_guarantee.py --splits 500 --out docs/results/ltt
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from segcp.calibration.ltt import StepLosses
from segcp.engine.splits import random_cal_test_splits
from segcp.losses import get_loss
from segcp.progress import track
from segcp.risk import RiskSegmenter

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from ltt_guarantee import busi  # the BUSI loader of the LTT benchmark (one place)


def group_splits(
    curves: list[Any], classes: list[str], dup_groups: list[str], alpha: float, *, n_cal: int, n_splits: int, seed: int = 0
) -> dict[str, Any]:
    """Per split: the marginal and the per-class λ̂ (RiskSegmenter.fit) and each class's test FNR under both."""
    steps = StepLosses.concat([StepLosses.from_curves(c) for c in curves])
    cls = np.asarray(classes)
    names = sorted(set(classes))
    per_case = [[[c]] for c in curves]
    rows: dict[str, dict[str, list[float]]] = {g: {"marginal": [], "own": [], "lambda_own": []} for g in names}
    lam_marg = []
    splits = list(random_cal_test_splits(list(dup_groups), n_cal, n_splits, seed))
    for cal, test in track(splits, f"alpha={alpha:g}"):
        rs = RiskSegmenter("threshold", alpha, loss="fnr").fit([per_case[i] for i in cal], [classes[i] for i in cal])
        lam_marg.append(rs.lambda_)
        for g in names:
            t = test[cls[test] == g]
            sub = steps.take(t)
            rows[g]["marginal"].append(float(sub.evaluate(rs.lambda_).mean()))
            rows[g]["own"].append(float(sub.evaluate(rs.groups_[g].lambda_).mean()))
            rows[g]["lambda_own"].append(rs.groups_[g].lambda_)
    out: dict[str, Any] = {
        "alpha": alpha,
        "splits": len(splits),
        "n_cal": len(splits[0][0]),
        "mean_lambda_marginal": float(np.mean(lam_marg)),
        "groups": {},
    }
    for g in names:
        entry = {}
        for how in ("marginal", "own"):
            m = np.asarray(rows[g][how])
            se = float(m.std(ddof=1) / math.sqrt(m.size))
            entry[how] = {
                "mean_test_fnr": float(m.mean()),
                "se": se,
                "valid": bool(m.mean() <= alpha + 3 * se),
                "splits_above_alpha": int((m > alpha).sum()),
            }
        entry["mean_lambda_own"] = float(np.mean(rows[g]["lambda_own"]))
        entry["n_images"] = int((cls == g).sum())
        out["groups"][g] = entry
    return out


def write(out: Path, result: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "groups.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Per-group calibration on BUSI (benign / malignant)",
        "",
        (
            f"`benchmarks/group_guarantee.py --splits {result['splits']}` ({result['seconds']:.0f} s; load {result['load']}). "
            f"{result['n_images']} images, split by near-duplicate group, n_cal = {result['rows'][0]['n_cal']}; model-free scores "
            "on masks downsampled 4x; E[FNR] <= alpha by exact CRC, marginal lambda vs one lambda per class "
            "(`RiskSegmenter(..., loss='fnr').fit(..., groups=classes)`). Mean test FNR over the splits +- SE; "
            "valid = mean <= alpha + 3 SE."
        ),
        "",
        "| alpha | class (images) | marginal lambda: mean test FNR | valid | per-class lambda: mean test FNR | valid | mean lambda marginal / own |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        for g, e in r["groups"].items():
            m, o = e["marginal"], e["own"]
            lines.append(
                f"| {r['alpha']:g} | {g} ({e['n_images']}) | {m['mean_test_fnr']:.4f} +- {m['se']:.4f} | {'yes' if m['valid'] else '**no**'} "
                f"| {o['mean_test_fnr']:.4f} +- {o['se']:.4f} | {'yes' if o['valid'] else '**no**'} "
                f"| {r['mean_lambda_marginal']:.4f} / {e['mean_lambda_own']:.4f} |"
            )
    (out / "groups.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--busi", type=Path, default=ROOT.parent / "shared" / "data" / "busi")
    ap.add_argument("--splits", type=int, default=500)
    ap.add_argument("--n-cal", type=int, default=300)
    ap.add_argument("--alpha", type=float, action="append")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    if not args.busi.is_dir():
        print(f"group_guarantee: {args.busi}: BUSI not found", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    probs, masks, dup_groups, classes = busi(args.busi, factor=4)
    fnr = get_loss("fnr")
    curves = [fnr.curve(np.subtract(1.0, p, dtype=np.float64), m) for p, m in zip(probs, masks)]
    rows = [group_splits(curves, classes, dup_groups, a, n_cal=args.n_cal, n_splits=args.splits, seed=args.seed) for a in (args.alpha or [0.1, 0.05])]
    result = {
        "splits": args.splits,
        "n_images": len(probs),
        "rows": rows,
        "seconds": time.perf_counter() - t0,
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }
    for r in rows:
        print(json.dumps({"alpha": r["alpha"], **{g: {k: e[k]["mean_test_fnr"] for k in ("marginal", "own")} for g, e in r["groups"].items()}}))
    if args.out is not None:
        write(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
