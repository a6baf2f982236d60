"""CONSIGN calibration: segcp's search vs the reference procedure, and online sampling.

On the same inputs (SYNTHETIC sampled softmax maps from ``segcp.multiclass.toy`` until real
MC-dropout samples are available), per K:

* **segcp**: ``Consign.calibrate`` — exact lower bound, fixed pixels skipped, screening +
  multi-start projected Adam with early stopping, bracketing + bisection to 1e-3 (relative);
  timed in one process and over ``--jobs`` processes (images in parallel);
* **reference** (``segcp.multiclass.reference``): a λ grid of 0.01 from 0 upwards, Adam
  re-optimised from the box centre at every grid point on the whole image for ``--epochs``
  epochs (checked every ``--check-every``). The reference's published setting is 10 000
  epochs; that is hours on a CPU, so it is run with ``--epochs`` and its time is also
  extrapolated linearly to 10 000 epochs (its cost is epochs × grid points). Its scan of an
  image stops at λ̂_segcp + 0.1: images above that cannot change λ̂ except by making it larger,
  and cutting them short only helps the reference's time.

Both use the same decomposition, surrogate and exact membership check; the table gives λ̂ of
both (they must agree within the 0.01 grid step), wall time and Adam steps. Then the
SVD variants and the time to draw 1 and 1000 segmentations from a calibrated set.

Run::

    python benchmarks/bench_consign.py             # about 4 minutes
    python benchmarks/bench_consign.py --quick     # smoke test (< 1 minute)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import numpy as np

from segcp.calibration import conformal_quantile
from segcp.multiclass.consign import consign_score, decompose, draw, thin_svd
from segcp.multiclass.estimators import Consign
from segcp.multiclass.toy import make_toy_cases


def bench_calibration(cases, K, alpha, beta, jobs, epochs, check_every):
    import torch

    from segcp.multiclass.reference import reference_score

    torch.set_num_threads(1)
    items = [(c.samples, c.truth) for c in cases]
    est = Consign(alpha, K=K, beta=beta)
    t0 = time.perf_counter()
    est.calibrate(items)  # includes the SVDs
    t_one = time.perf_counter() - t0
    t0 = time.perf_counter()
    est2 = Consign(alpha, K=K, beta=beta).calibrate(items, n_jobs=jobs)
    t_par = time.perf_counter() - t0
    assert np.array_equal(est2.scores_, est.scores_)
    decs = [decompose(c.samples, K, alpha) for c in cases]
    steps = sum(consign_score(d, c.truth, beta, K=K).steps for d, c in zip(decs, cases))
    cap = est.lambda_ + 0.1
    t0 = time.perf_counter()
    ref = []
    for d, c in zip(decs, cases):
        ref.append(reference_score(d, c.truth, beta, epochs=epochs, lr=0.05, lambda_max=cap, check_every=check_every))
    t_ref = time.perf_counter() - t0
    ref_scores = np.array([r.lambda_ for r in ref])
    lam_ref = conformal_quantile(ref_scores, alpha)
    ref_epochs = sum(r.epochs for r in ref)
    # linear extrapolation of the reference to 10 000 epochs per grid point (its cost ∝ epochs)
    t_ref_10k = t_ref * 10_000 / epochs
    return {
        "K": K,
        "n": len(cases),
        "lambda_segcp": est.lambda_,
        "lambda_reference": lam_ref,
        "difference": lam_ref - est.lambda_,
        "infinite_scores": int(np.sum(~np.isfinite(est.scores_))),
        "segcp_seconds_1proc": t_one,
        f"segcp_seconds_{jobs}proc": t_par,
        "segcp_adam_steps": int(steps),
        "reference_seconds_1proc": t_ref,
        "reference_epochs": int(ref_epochs),
        "reference_epochs_setting": epochs,
        "reference_seconds_1proc_at_10000_epochs": t_ref_10k,
        f"speedup_{jobs}proc_vs_reference_{jobs}proc_ideal": (t_ref / jobs) / t_par,
        f"speedup_{jobs}proc_vs_reference_10000_epochs_{jobs}proc_ideal": (t_ref_10k / jobs) / t_par,
        "per_image": [
            {"segcp": float(s), "reference": float(r.lambda_), "grid_steps": r.grid_steps}
            for s, r in zip(est.scores_, ref)
        ],
    }


def load_real_cases(data: str, n: int):
    """The first ``n`` ids (sorted) of a ``segcp infer --samples`` folder as (samples, truth) cases."""
    from pathlib import Path
    from types import SimpleNamespace

    from segcp.io import index_folder, read_array
    from segcp.multiclass.agreement import check_label_map, check_samples

    root = Path(data)
    samples, masks = index_folder(root / "samples"), index_folder(root / "masks")
    out = []
    for i in sorted(samples)[:n]:
        m, _ = read_array(masks[i])
        x = check_samples(read_array(samples[i])[0], str(samples[i]), tuple(np.asarray(m).shape))
        out.append(SimpleNamespace(id=i, samples=x, truth=check_label_map(m, str(masks[i]), x.shape[1])))
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


def bench_draws(size, K, lam=1.0):
    """Time to draw from C_λ of one image, λ = 1 (a box as wide as the samples' own spread)."""
    (case,) = make_toy_cases(1, shape=(size, size), n_labels=4, n_samples=30, seed=11)
    t0 = time.perf_counter()
    dec = decompose(case.samples, K, 0.1)
    geometry = dec.geometry
    t_dec = time.perf_counter() - t0
    out = {"size": f"{size}x{size}", "K": K, "lambda": lam, "decompose_ms": 1e3 * t_dec,
           "active_pixels": geometry.n_active(lam), "pixels": geometry.P}
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
    ap.add_argument("--epochs", type=int, default=300, help="reference: Adam epochs per grid point")
    ap.add_argument("--check-every", type=int, default=10)
    ap.add_argument("--K", type=int, nargs="+", default=[2, 5])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--data", help="real samples instead: a data directory with samples/ and masks/ (first --n ids)")
    ap.add_argument("--skip-online", action="store_true", help="calibration only (no SVD / draw timings)")
    a = ap.parse_args()
    if a.quick:
        a.n, a.epochs, a.K = 10, 20, [2]
    kind = f"REAL samples from {a.data}" if a.data else "SYNTHETIC samples"
    print(f"segcp CONSIGN benchmark — {kind}; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, numpy {np.__version__}")
    cases = load_real_cases(a.data, a.n) if a.data else make_toy_cases(a.n, shape=(a.size, a.size), n_labels=4, n_samples=30, seed=2)
    res = {"settings": vars(a), "calibration": [], "svd": [], "draws": []}
    for K in a.K:
        r = bench_calibration(cases, K, a.alpha, a.beta, a.jobs, a.epochs, a.check_every)
        res["calibration"].append(r)
        print(
            f"K={K}: n={r['n']}, lambda segcp {r['lambda_segcp']:.4f}, reference {r['lambda_reference']:.2f} "
            f"(difference {r['difference']:+.4f}; {r['infinite_scores']} infinite scores)\n"
            f"  segcp: {r['segcp_seconds_1proc']:.2f} s on 1 process, {r[f'segcp_seconds_{a.jobs}proc']:.2f} s on "
            f"{a.jobs} ({r['segcp_adam_steps']} Adam steps)\n"
            f"  reference: {r['reference_seconds_1proc']:.1f} s on 1 process at {a.epochs} epochs "
            f"({r['reference_epochs']} epochs), {r['reference_seconds_1proc_at_10000_epochs']:.0f} s extrapolated to 10000\n"
            f"  speed-up on {a.jobs} cores: {r[f'speedup_{a.jobs}proc_vs_reference_{a.jobs}proc_ideal']:.0f}x "
            f"(reference at {a.epochs} epochs), {r[f'speedup_{a.jobs}proc_vs_reference_10000_epochs_{a.jobs}proc_ideal']:.0f}x "
            f"(at 10000 epochs)"
        )
    if a.skip_online:
        sizes, draw_sizes = [], []
    else:
        sizes = [(4, 48)] if a.quick else [(4, 48), (4, 128), (4, 256), (2, 256)]
        draw_sizes = [48] if a.quick else [48, 256]
    res["svd"] = bench_svd(sizes, 30, 5)
    for r in res["svd"]:
        print(f"SVD N=30 L={r['L']} {r['size']} K=5: gram {r['gram_ms']:.1f} ms, lapack {r['lapack_ms']:.1f} ms, "
              f"randomized {r['randomized_ms']:.1f} ms")
    for size in draw_sizes:
        r = bench_draws(size, 5)
        res["draws"].append(r)
        print(f"draws {r['size']} L=4 N=30 K=5 at lambda {r['lambda']:g} ({r['active_pixels']} of {r['pixels']} pixels "
              f"can change): decomposition {r['decompose_ms']:.1f} ms, 1 draw {r['draw_1_ms']:.2f} ms, "
              f"1000 draws {r['draw_1000_ms']:.1f} ms")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2, default=lambda v: None if isinstance(v, float) and not math.isfinite(v) else v)


if __name__ == "__main__":
    main()
