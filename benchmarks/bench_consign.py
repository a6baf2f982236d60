"""CONSIGN calibration: segcp's search vs the authors' procedure, and online sampling.

On the same inputs (SYNTHETIC sampled softmax maps from ``benchmarks/consign_toy.py``, or real
MC-dropout samples with ``--data``), per K:

* **segcp**: ``ConformalSegmenter("consign").calibrate`` (``--box``, default the paper's) — exact lower bound, fixed
  pixels skipped, screening + exact line searches (K = 2: the arrangement search), bracketing +
  bisection to 1e-3 (relative); timed in one process and over ``--jobs`` processes; and with
  issue 16's search (``strategy="adam"``: projected Adam) in one process;
* **reference** (``benchmarks/consign_reference.py``): the authors' calibration loop as the
  paper and their code describe it — λ grid from 0.01 in steps of 0.01, at each grid point
  every not-yet-certified image tested with 1000 Latin-hypercube points ranked by the loss and
  Adam (lr 1, ≤ ``--epochs`` epochs, patience 50, early stop below 1 − β, clamping onto the box)
  from the 10 best; stops at the first λ meeting the CRC bound. Same decomposition (the box of
  ``--box``, quantile level α as in their code); one process, torch CPU, one thread.

segcp certifies members exactly and the reference can only miss them, so segcp's λ̂ should not
exceed the reference's by more than one grid step (the issue's check); the table says by how
much it is smaller. Then the SVD variants and the time to draw 1 and 1000 segmentations.

Run::

    python benchmarks/bench_consign.py                     # SYNTHETIC, about 5 minutes
    python benchmarks/bench_consign.py --quick             # smoke test (< 1 minute)
    python benchmarks/bench_consign.py --data DIR --n 12 --crop 128 --K 2 --alpha 0.2 --beta 0.8 --skip-online
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np

from segcp import Case, ConformalSegmenter
from segcp.segsets.consign import SearchOptions, consign_score, decompose, draw, thin_svd

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from consign_reference import ReferenceOptions, reference_calibrate
from consign_toy import make_toy_cases


def bench_calibration(cases, K, alpha, beta, jobs, ref_opt, box, skip_reference=False):
    import torch

    torch.set_num_threads(1)
    items = [Case(str(c.id), samples=c.samples, label_map=c.truth) for c in cases]

    def consign(n_jobs):
        return ConformalSegmenter("consign", alpha, method_params={"K": K, "beta": beta, "box": box}, n_jobs=n_jobs)

    est = consign(1)
    t0 = time.perf_counter()
    est.calibrate(items)  # includes the SVDs
    t_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    est2 = consign(jobs).calibrate(items)
    t_par = time.perf_counter() - t0
    assert np.array_equal(est2.scores_, est.scores_)
    # issue 16's search (strategy="adam") on the same images, one process
    adam = ConformalSegmenter("consign", alpha, method_params={"K": K, "beta": beta, "box": box, "strategy": "adam"})
    t0 = time.perf_counter()
    adam.calibrate(items)
    t_adam = time.perf_counter() - t0
    decs = [est.method_.decomposition(c) for c in items]
    runs = [consign_score(d, c.truth, beta) for d, c in zip(decs, cases)]
    runs_adam = [consign_score(d, c.truth, beta, options=SearchOptions(strategy="adam")) for d, c in zip(decs, cases)]
    out = {
        "K": K,
        "box": box,
        "n": len(cases),
        "lambda_segcp": est.lambda_,
        "lambda_segcp_adam": adam.lambda_,
        "infinite_scores": int(np.sum(~np.isfinite(est.scores_))),
        "infinite_scores_adam": int(np.sum(~np.isfinite(adam.scores_))),
        "segcp_seconds_1proc": t_one,
        f"segcp_seconds_{jobs}proc": t_par,
        "segcp_adam_seconds_1proc": t_adam,
        "segcp_tests": int(sum(r.tests for r in runs)),
        "segcp_line_searches": int(sum(r.steps for r in runs)),
        "segcp_exhaustive_tests": int(sum(r.exhaustive for r in runs)),
        "segcp_adam_tests": int(sum(r.tests for r in runs_adam)),
        "segcp_adam_steps": int(sum(r.steps for r in runs_adam)),
        "lambda_unit_median": float(np.median([d.lambda_unit for d in decs])),
        "sigma_1": [float(d.singular_values[0]) for d in decs],
    }
    if skip_reference:
        out["per_image"] = [{"segcp": float(v), "segcp_adam": float(a)} for v, a in zip(est.scores_, adam.scores_)]
        return out
    t0 = time.perf_counter()
    ref = reference_calibrate(decs, [c.truth for c in cases], alpha, beta, ref_opt, progress=lambda m: print(f"  reference K={K}: {m}", flush=True))
    t_ref = time.perf_counter() - t0
    out.update(
        {
            "lambda_reference": ref.lambda_,
            "reference_minus_segcp": ref.lambda_ - est.lambda_,
            "segcp_within_one_step": bool(est.lambda_ <= ref.lambda_ + ref_opt.step + 1e-12),
            "segcp_adam_within_one_step": bool(adam.lambda_ <= ref.lambda_ + ref_opt.step + 1e-12),
            "reference_seconds_1proc": t_ref,
            "reference_epochs": int(ref.epochs),
            "reference_grid_points": int(ref.grid_steps),
            "reference_options": ref_opt.__dict__,
            "speedup_1proc": t_ref / t_one,
            "speedup_adam_1proc": t_ref / t_adam,
            "per_image": [
                {"segcp": float(s), "segcp_adam": float(a), "reference": float(r)} for s, a, r in zip(est.scores_, adam.scores_, ref.scores)
            ],
        }
    )
    return out


def load_real_cases(data: str, n: int | None, crop: int | None = None, stride: int = 1):
    """The first ``n`` ids (sorted; None: all; every ``stride``-th of them) of a ``segcp infer
    --samples`` folder as (samples, truth) cases, optionally centre-cropped to ``crop`` × ``crop``
    pixels."""
    from pathlib import Path
    from types import SimpleNamespace

    from segcp.cases import check_label_map, check_samples
    from segcp.io import index_folder, read_array

    root = Path(data)
    samples, masks = index_folder(root / "samples"), index_folder(root / "masks")
    out = []
    for i in sorted(samples)[:n][::stride]:
        m, _ = read_array(masks[i])
        x = check_samples(read_array(samples[i])[0], str(samples[i]), tuple(np.asarray(m).shape))
        y = check_label_map(m, str(masks[i]), x.shape[1])
        if crop:
            h, w = y.shape[-2:]
            if h < crop or w < crop:
                raise SystemExit(f"{samples[i]}: image {h} x {w} is smaller than --crop {crop}")
            top, left = (h - crop) // 2, (w - crop) // 2
            x = np.ascontiguousarray(x[..., top : top + crop, left : left + crop])
            y = np.ascontiguousarray(y[..., top : top + crop, left : left + crop])
        out.append(SimpleNamespace(id=i, samples=x, truth=y))
    return out


def bench_svd(shapes, N, K, repeats=3):
    rng = np.random.default_rng(0)
    rows = []
    for L, H in shapes:
        D = L * H * H
        x = rng.standard_normal((N, 8)) @ rng.standard_normal((8, D)) * 0.05 + 0.01 * rng.standard_normal((N, D))
        x -= x.mean(axis=0)
        row = {"N": N, "L": L, "size": f"{H}x{H}", "K": K}
        for method in ("gram", "lapack", "randomized"):
            ts = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                thin_svd(x, K, method)
                ts.append(time.perf_counter() - t0)
            row[f"{method}_ms"] = 1e3 * min(ts)
        rows.append(row)
    return rows


def bench_draws(size, K, box="paper"):
    """Time to draw from C_λ of one image at λ = lambda_unit (the leading component's box as
    wide as the samples' own spread; for the normalised box, λ = 1: every component's)."""
    (case,) = make_toy_cases(1, shape=(size, size), n_labels=4, n_samples=30, seed=11)
    t0 = time.perf_counter()
    dec = decompose(case.samples, K, 0.1, box=box)
    geometry = dec.geometry
    t_dec = time.perf_counter() - t0
    lam = dec.lambda_unit
    out = {
        "size": f"{size}x{size}",
        "K": K,
        "box": box,
        "lambda": lam,
        "decompose_ms": 1e3 * t_dec,
        "active_pixels": geometry.n_active(lam),
        "pixels": geometry.P,
    }
    for s in (1, 1000):
        ts = []
        for r in range(5 if s == 1 else 2):
            t0 = time.perf_counter()
            draw(dec, lam, s, seed=r)
            ts.append(time.perf_counter() - t0)
        out[f"draw_{s}_ms"] = 1e3 * min(ts)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20, help="calibration images per K")
    ap.add_argument("--size", type=int, default=48)
    ap.add_argument("--alpha", type=float, default=0.2)
    ap.add_argument("--beta", type=float, default=0.85)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--box", default="paper", choices=["paper", "normalized"])
    ap.add_argument("--epochs", type=int, default=10_000, help="reference: Adam epochs per run at most (patience stops most)")
    ap.add_argument("--screen", type=int, default=1000, help="reference: Latin-hypercube points per test")
    ap.add_argument("--starts", type=int, default=10, help="reference: Adam runs per test")
    ap.add_argument("--skip-reference", action="store_true")
    ap.add_argument("--K", type=int, nargs="+", default=[2, 5])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--data", help="real samples instead: a data directory with samples/ and masks/ (first --n ids)")
    ap.add_argument("--crop", type=int, help="centre-crop real images to CROP x CROP pixels")
    ap.add_argument("--skip-online", action="store_true", help="calibration only (no SVD / draw timings)")
    a = ap.parse_args()
    if a.quick:
        a.n, a.epochs, a.screen, a.starts, a.K = 10, 50, 100, 3, [2]
    kind = f"REAL samples from {a.data}" if a.data else "SYNTHETIC samples"
    print(
        f"segcp CONSIGN benchmark — {kind}; box {a.box}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, numpy {np.__version__}"
    )
    if a.data:
        cases = load_real_cases(a.data, a.n, a.crop)
    else:
        cases = make_toy_cases(a.n, shape=(a.size, a.size), n_labels=4, n_samples=30, seed=2)
    ref_opt = ReferenceOptions(epochs=a.epochs, n_screen=a.screen, n_starts=a.starts)
    res = {"settings": vars(a), "ids": [c.id for c in cases], "shape": list(cases[0].truth.shape), "calibration": [], "svd": [], "draws": []}
    for K in a.K:
        r = bench_calibration(cases, K, a.alpha, a.beta, a.jobs, ref_opt, a.box, a.skip_reference)
        res["calibration"].append(r)
        line = (
            f"K={K}: n={r['n']}, lambda segcp {r['lambda_segcp']:.4f} ({r['infinite_scores']} infinite scores; "
            f"{r['segcp_seconds_1proc']:.2f} s on 1 process, {r[f'segcp_seconds_{a.jobs}proc']:.2f} s on {a.jobs}, "
            f"{r['segcp_tests']} membership tests, {r['segcp_line_searches']} line searches, "
            f"{r['segcp_exhaustive_tests']} settled by the arrangement search)"
            f"\n  segcp, issue 16's Adam search: lambda {r['lambda_segcp_adam']:.4f} ({r['infinite_scores_adam']} infinite; "
            f"{r['segcp_adam_seconds_1proc']:.2f} s on 1 process, {r['segcp_adam_tests']} tests, {r['segcp_adam_steps']} Adam steps)"
        )
        if not a.skip_reference:
            line += (
                f"\n  reference (authors' procedure): lambda {r['lambda_reference']:.2f} in "
                f"{r['reference_seconds_1proc']:.1f} s ({r['reference_grid_points']} grid points, {r['reference_epochs']} epochs); "
                f"reference - segcp = {r['reference_minus_segcp']:+.4f}; within one grid step: lines "
                f"{r['segcp_within_one_step']}, adam {r['segcp_adam_within_one_step']}; {r['speedup_1proc']:.0f}x faster "
                f"(adam {r['speedup_adam_1proc']:.0f}x) on 1 process"
            )
        print(line, flush=True)
    if a.skip_online:
        sizes, draw_sizes = [], []
    else:
        sizes = [(4, 48)] if a.quick else [(4, 48), (4, 128), (4, 256), (2, 256)]
        draw_sizes = [48] if a.quick else [48, 256]
    res["svd"] = bench_svd(sizes, 30, 5)
    for r in res["svd"]:
        print(
            f"SVD N=30 L={r['L']} {r['size']} K=5: gram {r['gram_ms']:.1f} ms, lapack {r['lapack_ms']:.1f} ms, randomized {r['randomized_ms']:.1f} ms"
        )
    for size in draw_sizes:
        r = bench_draws(size, 5, a.box)
        res["draws"].append(r)
        print(
            f"draws {r['size']} L=4 N=30 K=5 at lambda {r['lambda']:.4g} ({r['active_pixels']} of {r['pixels']} pixels "
            f"can change): decomposition {r['decompose_ms']:.1f} ms, 1 draw {r['draw_1_ms']:.2f} ms, "
            f"1000 draws {r['draw_1000_ms']:.1f} ms"
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(_finite(res), f, indent=2)


def _finite(v):
    """JSON-safe copy: inf / nan become null."""
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


if __name__ == "__main__":
    main()
