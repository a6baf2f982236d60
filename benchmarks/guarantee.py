"""The guarantee of every method, checked over many random patient/group-level splits.

For each set family, every image's loss curve is built once (``ConformalSegmenter.curves``);
each of ``--splits`` random calibration/test splits (whole groups on one side,
``random_cal_test_splits``) then calibrates λ̂ on the calibration curves by the estimator and
measures the mean test loss at λ̂ from the test curves. Over the splits:

* validity — mean test loss ≤ α + 3·SE (SE = std over splits / √splits): E[FNR] ≤ α for the
  pixel-set families, P(truth not in the set up to β) ≤ α for the sets of segmentations;
* not trivially conservative (FNR families) — mean ≥ α − 2/(n+1) − 3·SE, the lower bound of
  conformal risk control for losses without large jumps (Angelopoulos et al., Thm. 2). It
  holds when λ̂ is an interior solution; where the family's smallest set already meets α
  (λ̂ = λ_min, e.g. Consema's model mask at a large α) the sets cannot shrink and the row says
  so (``at_lambda_min``).

A split where no λ meets the bound (a family whose sets never reach some truths) is counted
as infeasible and reported; its test loss is then 1 for every image (the family gives no set
with the guarantee), so infeasibility counts against validity rather than being dropped.

Real model outputs (the UNet probabilities and MC-dropout samples of docs/models.md)::

    python benchmarks/guarantee.py --probs out/probs/acdc-lv --samples out/probs/acdc \\
        --splits 500 --n-cal 20 --out docs/benchmarks/guarantee

writes ``guarantee.json``, ``guarantee.md`` and ``guarantee.png``. The fast subset in the test
suite (tests/test_guarantee_methods.py) uses :func:`split_losses` on real ACDC images with
model-free scores.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segcp import ConformalSegmenter, LossCurves
from segcp.engine.splits import random_cal_test_splits
from segcp.errors import SegcpError

ALPHAS = (0.2, 0.1, 0.05)
#: (label, method, parameters) of the families checked on each kind of input.
PIXEL_FAMILIES = [
    ("threshold", "threshold", {}),
    ("morph (ball)", "morph", {"se": "ball", "empty_prediction": "argmax"}),
    ("rwcp", "rwcp", {"encoder": "dinov2-small", "threads": 1}),
]
SAMPLE_FAMILIES = [("consign (K=2)", "consign", {"K": 2, "beta": 0.8}), ("aps", "aps", {"beta": 0.8})]


def split_losses(
    cs: ConformalSegmenter,
    curves: LossCurves,
    groups: Sequence[str],
    alpha: float,
    *,
    n_cal: int = 20,
    n_splits: int = 300,
    seed: int = 0,
    n_boot: int = 0,
) -> dict[str, Any]:
    """Mean test loss at the calibrated λ̂ over ``n_splits`` group splits, its SE and the bounds.

    ``cs`` is the estimator whose family made ``curves`` (one curve per image, in the order of
    ``groups``); it is re-calibrated on each split's calibration curves at ``alpha``.

    The SE over splits measures how much the mean moves between re-splits of *this* pool; the
    guarantee is about new data, and a small pool (28 patients) deviates from α by its own
    sampling error, which re-splitting cannot reveal. ``n_boot`` > 0 estimates that error by a
    patient-level bootstrap of the pool (each resample re-split ``max(20, n_splits // 10)``
    times): ``se_pool``, and ``valid_pool`` = mean ≤ α + 3·√(SE² + se_pool²).
    """
    est = ConformalSegmenter(cs.family.bind_alpha(alpha), alpha, guarantee=cs.guarantee, tau=cs.tau)
    means, lambdas, infeasible, n_used = [], [], 0, 0
    lam_min = est.family.lambda_min
    for cal, test in random_cal_test_splits(list(groups), n_cal, n_splits, seed):
        n_used = len(cal)
        try:
            lam = est.calibrate_curves(curves.take(cal)).lambda_
        except SegcpError:
            infeasible += 1
            means.append(1.0)
            continue
        lambdas.append(lam)
        means.append(float(curves.evaluate(lam)[test].mean()))
    m = np.asarray(means)
    se = float(m.std(ddof=1) / math.sqrt(m.size))
    se_pool = _pool_error(est, curves, groups, alpha, n_cal, max(20, n_splits // 10), seed, n_boot) if n_boot else float("nan")
    total = math.sqrt(se**2 + (se_pool if n_boot else 0.0) ** 2)
    return {
        "alpha": alpha,
        "splits": int(m.size),
        "n_cal": n_used,
        "mean_test_loss": float(m.mean()),
        "se": se,
        "upper": alpha + 3 * se,
        "lower": alpha - 2 / (n_used + 1) - 3 * se,
        "valid": bool(m.mean() <= alpha + 3 * se),
        "se_pool": se_pool,
        "valid_pool": bool(m.mean() <= alpha + 3 * total) if n_boot else None,
        "not_conservative": bool(m.mean() >= alpha - 2 / (n_used + 1) - 3 * se),
        "infeasible": infeasible,
        "lambda_mean": float(np.mean(lambdas)) if lambdas else float("nan"),
        # splits where the family's smallest set already met α (λ̂ = λ_min): there the lower
        # bound of CRC does not apply (the sets cannot shrink further)
        "at_lambda_min": float(np.mean([lam <= lam_min for lam in lambdas])) if lambdas else float("nan"),
    }


def _pool_error(
    est: ConformalSegmenter, curves: LossCurves, groups: Sequence[str], alpha: float, n_cal: int, n_splits: int, seed: int, n_boot: int
) -> float:
    """Std of the split-mean test loss over patient-level bootstrap resamples of the pool."""
    rng = np.random.default_rng((seed, 9))
    patients = sorted(set(groups))
    members = {g: [i for i, h in enumerate(groups) if h == g] for g in patients}
    means = []
    for b in range(n_boot):
        pick = rng.choice(len(patients), len(patients), replace=True)
        idx = [i for k in pick for i in members[patients[k]]]
        new_groups = [f"{j}" for j, k in enumerate(pick) for _ in members[patients[k]]]  # a drawn twice patient is two
        sub = curves.take(idx)
        vals = []
        for cal, test in random_cal_test_splits(new_groups, n_cal, n_splits, seed + 1000 * (b + 1)):
            try:
                lam = est.calibrate_curves(sub.take(cal)).lambda_
                vals.append(float(sub.evaluate(lam)[test].mean()))
            except SegcpError:
                vals.append(1.0)
        means.append(float(np.mean(vals)))
    return float(np.std(means, ddof=1))


def _load(data: Path, method: str, params: dict[str, Any], label: int | None) -> tuple[ConformalSegmenter, list[Any], list[str]]:
    from segcp.compare import load_groups
    from segcp.io import DataDir

    cs = ConformalSegmenter(method, 0.1, method_params=params)
    reader = DataDir(data).reader(cs.family, label=label)
    cases = [reader.read(i) for i in reader.ids]
    groups, _ = load_groups(data, reader.ids)
    return cs, cases, groups


def run(args: argparse.Namespace) -> dict[str, Any]:
    rows = []
    jobs = [(args.probs, f) for f in PIXEL_FAMILIES] if args.probs else []
    jobs += [(args.samples, f) for f in SAMPLE_FAMILIES] if args.samples else []
    for data, (label, method, params) in jobs:
        t0 = time.perf_counter()
        cs, cases, groups = _load(Path(data), method, params, args.label if method in ("threshold", "morph", "rwcp") else None)
        # CONSIGN's box depends on α unless box_alpha is fixed: curves per α then
        per_alpha_family = cs.family.bind_alpha(ALPHAS[0]).key != cs.family.bind_alpha(ALPHAS[1]).key
        curves = None if per_alpha_family else cs.curves(cases)
        for a in ALPHAS:
            est = ConformalSegmenter(cs.family.bind_alpha(a), a) if per_alpha_family else cs
            cv = curves if curves is not None else est.curves(cases)
            r = split_losses(est, cv, groups, a, n_cal=args.n_cal, n_splits=args.splits, seed=args.seed, n_boot=args.boot)
            rows.append({"method": label, "data": str(data), "n_images": len(cases), "n_groups": len(set(groups)), **r})
            print(
                f"{label:<16} alpha={a:<5} mean test loss {r['mean_test_loss']:.4f} (se {r['se']:.4f}) "
                f"valid {r['valid']} (with pool error {r['valid_pool']}, se_pool {r['se_pool']:.4f}) "
                f"not conservative {r['not_conservative']} infeasible {r['infeasible']}",
                flush=True,
            )
        print(f"  {label}: {time.perf_counter() - t0:.1f} s", flush=True)
    return {"splits": args.splits, "n_cal": args.n_cal, "seed": args.seed, "alphas": list(ALPHAS), "rows": rows}


def write(out: Path, result: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from segcp.io import write_json, write_text

    write_json(out.with_suffix(".json"), result)
    methods = list(dict.fromkeys(r["method"] for r in result["rows"]))
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for k, m in enumerate(methods):
        rs = [r for r in result["rows"] if r["method"] == m]
        x = np.array([r["alpha"] for r in rs]) * (1 + 0.03 * (k - len(methods) / 2))
        ax.errorbar(x, [r["mean_test_loss"] for r in rs], yerr=[3 * r["se"] for r in rs], marker="o", capsize=3, label=m)
    xs = np.array(result["alphas"])
    ax.plot(np.sort(xs), np.sort(xs), "k--", lw=1, label="α")
    ax.set_xlabel("α")
    ax.set_ylabel("mean test loss (FNR, or miscoverage) ± 3 SE")
    ax.set_title(f"{result['splits']} patient-level splits, n = {result['n_cal']}", fontsize=10)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    plt.close(fig)
    head = (
        "| method | α | mean test loss ± SE (splits) | SE (pool) | α + 3·SE | valid (splits) | valid (splits + pool) | "
        "α − 2/(n+1) − 3·SE | not conservative | splits with λ̂ = λ_min | infeasible splits | mean λ̂ |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in result["rows"]:
        vp = r.get("valid_pool")
        lines.append(
            f"| {r['method']} | {r['alpha']:g} | {r['mean_test_loss']:.4f} ± {r['se']:.4f} | {r.get('se_pool', float('nan')):.4f} | "
            f"{r['upper']:.4f} | {'yes' if r['valid'] else '**no**'} | {'–' if vp is None else ('yes' if vp else '**no**')} | "
            f"{r['lower']:.4f} | {'yes' if r['not_conservative'] else 'no'} | {100 * r['at_lambda_min']:.0f} % | "
            f"{r['infeasible']} | {r['lambda_mean']:.4g} |"
        )
    write_text(out.with_suffix(".md"), "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--probs", type=Path, help="data directory of probabilities (threshold, morph, rwcp)")
    ap.add_argument("--samples", type=Path, help="data directory with samples/ (consign, aps)")
    ap.add_argument("--label", type=int, default=None, help="structure of a label map for the pixel-set families")
    ap.add_argument("--splits", type=int, default=500)
    ap.add_argument("--n-cal", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--boot", type=int, default=100, help="patient-level bootstrap resamples of the pool (0: none)")
    ap.add_argument("--out", type=Path, required=True, help="output stem (writes .json, .md, .png)")
    args = ap.parse_args(argv)
    result = run(args)
    write(args.out, result)
    print(json.dumps({"wrote": str(args.out)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
