"""Monitoring on ACDC: no alarm on held-out patients, an alarm under a simulated shift.

Each repeat splits the 70 ACDC patients (LV, the RW-CP slices: 2 images each) at random into 35
calibration patients and 35 "new" ones, calibrates λ̂ for E[FNR] ≤ 0.1 by exact CRC (threshold
family, model-free scores as in tests/test_guarantee_acdc.py), and streams the new images in a
random order (one image per patient, the exchangeable unit) through the three monitors of :mod:`segcp.calibration.monitor` (each at level 0.1):

* ``martingale`` — exchangeability of the new cases' scores (the smallest λ at which the
  image's own FNR is ≤ α) with the calibration cases' (simple jumper; labels needed);
* ``risk`` — the running FNR at λ̂ with its time-uniform confidence sequence; an alarm when the
  lower bound passes α (labels needed; it fires only when the shift *harms* the guarantee);
* ``two-sample`` — label-free: per-case set size relative to the model's mask, peak probability
  and the 1 % / 10 % quantiles of the score map, KS tests with Holm over the four.

The new images are either unchanged (exchangeable: an alarm is a false alarm) or pass through a
simulated change of the model's maps: ``overconfident`` (logits × 3), ``undersegmenting`` (logits
− 2: the model misses the boundary) or ``weaker`` (probabilities × 0.5, a model that sees the
structure at half its confidence).

    python benchmarks/monitor_shift.py --repeats 200 --out docs/results/ltt

writes ``monitor.json`` and ``monitor.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from ltt_guarantee import ROOT, acdc_lv
from scipy import special

from segcp.calibration import LossCurves, crc_lambda
from segcp.calibration.monitor import case_statistics, exchangeability_martingale, required_lambda, risk_track, two_sample_shift
from segcp.engine.splits import random_cal_test_splits
from segcp.losses import get_loss

SHIFTS = {
    "none": lambda p: p,
    "overconfident": lambda p: special.expit(3.0 * special.logit(np.clip(p, 1e-6, 1 - 1e-6))),
    "undersegmenting": lambda p: special.expit(special.logit(np.clip(p, 1e-6, 1 - 1e-6)) - 2.0),
    "weaker": lambda p: 0.5 * p,
}
ALPHA = 0.1
LEVEL = 0.1


def one_per_patient(indices: np.ndarray, groups: list[str], rng: np.random.Generator) -> np.ndarray:
    """One image of each patient among ``indices``, drawn at random: the monitors' exchangeable
    unit is the patient (the ED and ES images of one patient are not independent)."""
    by: dict[str, list[int]] = {}
    for i in indices:
        by.setdefault(groups[i], []).append(int(i))
    return np.array([rng.choice(members) for _, members in sorted(by.items())], dtype=np.int64)


def run(args: argparse.Namespace) -> dict[str, Any]:
    probs, masks, groups = acdc_lv(args.acdc)
    fnr = get_loss("fnr")
    shifted = {name: [f(p) for p in probs] for name, f in SHIFTS.items()}
    curves = {name: [fnr.curve(np.subtract(1.0, p, dtype=np.float64), m) for p, m in zip(ps, masks)] for name, ps in shifted.items()}
    scores = {name: required_lambda(LossCurves.concat(cs), ALPHA) for name, cs in curves.items()}
    rows: dict[str, dict[str, list[Any]]] = {name: {"martingale": [], "risk": [], "two-sample": []} for name in SHIFTS}
    base = LossCurves.concat(curves["none"])
    for rep, (cal, new) in enumerate(random_cal_test_splits(groups, args.n_cal, args.repeats, args.seed)):
        lam = crc_lambda(base.take(cal), ALPHA, lambda_min=0.0).lambda_
        rng = np.random.default_rng((args.seed, rep))
        ref, order = one_per_patient(cal, groups, rng), rng.permutation(one_per_patient(new, groups, rng))
        ref_stats = [case_statistics(np.subtract(1.0, probs[i], dtype=np.float64), lam, probs=probs[i]) for i in ref]
        for name in SHIFTS:
            m = exchangeability_martingale(scores["none"][ref], scores[name][order], LEVEL, seed=rep)
            losses = np.array([curves[name][i].evaluate(lam)[0] for i in order])
            track = risk_track(losses, ALPHA, LEVEL)
            new_stats = [case_statistics(np.subtract(1.0, shifted[name][i], dtype=np.float64), lam, probs=shifted[name][i]) for i in order]
            keys = list(ref_stats[0])
            shift = two_sample_shift({k: [s[k] for s in ref_stats] for k in keys}, {k: [s[k] for s in new_stats] for k in keys}, LEVEL)
            rows[name]["martingale"].append(m.alarm_at)
            rows[name]["risk"].append(track.alarm_at)
            rows[name]["two-sample"].append(len(order) if shift.alarm else None)
        if rep % 20 == 0:
            print(f"repeat {rep}", flush=True)
    out: dict[str, Any] = {"repeats": args.repeats, "n_cal": args.n_cal, "alpha": ALPHA, "level": LEVEL, "seed": args.seed, "rows": []}
    for name, tests in rows.items():
        for test, hits in tests.items():
            fired = [h for h in hits if h is not None]
            rate = len(fired) / len(hits)
            out["rows"].append(
                {
                    "shift": name,
                    "test": test,
                    "alarm_rate": rate,
                    "se": math.sqrt(max(rate * (1 - rate), LEVEL * (1 - LEVEL)) / len(hits)),
                    "median_cases_to_alarm": float(np.median(fired)) if fired else None,
                    "new_cases": len(set(groups)) - args.n_cal // 2,
                }
            )
            print(f"{name:<16} {test:<11} alarm rate {rate:.3f} median cases to alarm {out['rows'][-1]['median_cases_to_alarm']}", flush=True)
    return out


def write(out: Path, result: dict[str, Any]) -> None:
    from segcp.io import write_json, write_text

    write_json(out / "monitor.json", result)
    lines = [
        f"# Monitoring on ACDC LV ({result['repeats']} repeats, {result['n_cal']} calibration images, level {result['level']:g})",
        "",
        "Produced by `benchmarks/monitor_shift.py`; read with docs/ltt.md. A repeat streams the held-out patients' images;",
        "'none' is the exchangeable case (an alarm is a false alarm, allowed in at most 10 % of repeats).",
        "",
        "| shift of the new cases' maps | test | alarm rate (SE) | median new cases before the alarm |",
        "|---|---|---|---|",
    ]
    for r in result["rows"]:
        med = "–" if r["median_cases_to_alarm"] is None else f"{r['median_cases_to_alarm']:.0f}"
        lines.append(f"| {r['shift']} | {r['test']} | {r['alarm_rate']:.3f} ({r['se']:.3f}) | {med} |")
    write_text(out / "monitor.md", "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--acdc", type=Path, default=ROOT.parent / "shared" / "data" / "acdc")
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--n-cal", type=int, default=70)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    result = run(args)
    result["seconds"] = time.perf_counter() - t0
    write(args.out, result)
    print(json.dumps({"wrote": str(args.out), "seconds": round(result["seconds"], 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
