"""Benchmark: segcp's exact CRC calibration against MAPIE's SemanticSegmentationController.

Both calibrate the standard threshold family on the *same* arrays (float32 probability
maps and boolean masks of synthetic phantoms) so that E[per-image FNR] <= alpha:

* segcp: ``ConformalSegmenter("threshold", alpha).calibrate(cases)`` with
  C_lambda = {p : 1 - prob_p <= lambda}, lambda_hat the exact smallest lambda with
  n/(n+1) R_hat(lambda) + 1/(n+1) <= alpha (computed from the breakpoints, no grid).
  Timed from the arrays to lambda_hat: building the ``Case`` objects (validation, float64
  conversion), the score maps, the per-image loss curves and ``crc_lambda``.
* MAPIE 1.6: ``SemanticSegmentationController(risk="recall", method="crc",
  predict_params=np.arange(0, 1, 0.01))`` with C_t = {p : prob_p > t}; it evaluates
  the per-image recall at every grid threshold and keeps the largest t before the first
  grid point whose bound n/(n+1) R_hat(t) + 1/(n+1) reaches alpha.

MAPIE's ``calibrate`` materialises an (n, H*W, n_grid) float32 array plus its int64
copy (about 13 bytes * n * H * W * 100 = 85 GB for 1000 images of 256 x 256), so it is
run the way MAPIE documents for high-dimensional data: ``compute_risks`` batch by batch,
then ``compute_best_predict_param``. ``compute_risks`` does not depend on alpha, so one
pass serves all alphas; the per-alpha MAPIE time is that pass plus the alpha's own
``compute_best_predict_param`` (exactly the two steps of ``calibrate`` for one alpha).

Images with an empty mask are dropped before both runs: MAPIE refuses them
("All observations should contain at least one label"), segcp would count them with
loss 0.

Run (about 4 minutes on 2 cores)::

    python benchmarks/bench_calibration.py --n 1000 --size 256 --repeats 3
    python benchmarks/bench_calibration.py --quick      # n = 100 smoke run

Exit status: 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
import warnings
from collections.abc import Callable, Iterator
from typing import Any, Self

import numpy as np
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

import segcp
from segcp import Case, ConformalSegmenter
from segcp.synthetic import make_phantoms

ALPHAS = (0.2, 0.1, 0.05)
GRID = np.arange(0, 1, 0.01)  # MAPIE's default predict_params: 0.00, 0.01, ..., 0.99
LV_CAVITY = 3  # label of the phantoms' structure whose probability map is ``probs``

console = Console() if sys.stdout.isatty() else Console(width=170)


# ---------------------------------------------------------------------------- data
def make_data(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray, int]:
    """n phantoms with a non-empty LV cavity: probs (n, H, W) float32, masks (n, H, W) bool.

    Phantom case i never depends on the number generated, so generating a few extra and
    keeping the first n non-empty ones is reproducible. Returns also the number dropped.
    """
    n_gen = int(np.ceil(n * 1.06)) + 5  # about 2.5 % of phantom slices have no LV cavity
    while True:
        cases = make_phantoms(n=n_gen, shape=(size, size), seed=seed)
        keep = [c for c in cases if (c.label == LV_CAVITY).any()]
        if len(keep) >= n:
            break
        n_gen = int(n_gen * 1.2) + 10
    dropped = sum(1 for c in cases[: cases.index(keep[n - 1]) + 1] if not (c.label == LV_CAVITY).any())
    keep = keep[:n]
    probs = np.stack([c.probs for c in keep]).astype(np.float32, copy=False)
    masks = np.stack([c.label == LV_CAVITY for c in keep])
    return probs, masks, dropped


# ---------------------------------------------------------------------------- memory
def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset VmHWM (Linux: write 5 to /proc/self/clear_refs). False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class PeakRSS:
    """Peak resident memory above the level at entry (MiB), or None where unsupported."""

    def __enter__(self) -> Self:
        gc.collect()
        self.ok = _reset_peak_rss()
        self.base = _status_kb("VmRSS")
        self.mib: float | None = None
        return self

    def __exit__(self, *exc: object) -> None:
        hwm = _status_kb("VmHWM")
        if self.ok and hwm is not None and self.base is not None:
            self.mib = max(0, hwm - self.base) / 1024


def traced_peak_mib(fn: Callable[[], Any]) -> float:
    """tracemalloc peak (MiB) of one call; numpy reports its buffers to tracemalloc."""
    gc.collect()
    tracemalloc.start()
    try:
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return peak / 2**20


# ---------------------------------------------------------------------------- segcp
def cases(probs: np.ndarray, masks: np.ndarray) -> Iterator[Case]:
    """segcp cases built lazily from the arrays (only one float64 copy alive at a time)."""
    for i in range(len(probs)):
        yield Case(f"img{i:04d}", probs=probs[i], mask=masks[i])


def segcp_one(probs: np.ndarray, masks: np.ndarray, alpha: float) -> ConformalSegmenter:
    return ConformalSegmenter("threshold", alpha).calibrate(cases(probs, masks))


def segcp_all(probs: np.ndarray, masks: np.ndarray, alphas: tuple[float, ...]) -> tuple[list[ConformalSegmenter], float, float]:
    """All alphas from one set of curves. Returns (segmenters, curve time, crc time)."""
    t0 = time.perf_counter()
    curves = ConformalSegmenter("threshold", alphas[0]).curves(cases(probs, masks))
    t1 = time.perf_counter()
    out = [ConformalSegmenter("threshold", a).calibrate_curves(curves) for a in alphas]
    t2 = time.perf_counter()
    return out, t1 - t0, t2 - t1


# ---------------------------------------------------------------------------- MAPIE
def _identity(x: np.ndarray) -> np.ndarray:
    return x


def mapie_controller(alphas: tuple[float, ...]) -> Any:
    from mapie.risk_control import SemanticSegmentationController

    return SemanticSegmentationController(
        predict_function=_identity,  # X is already the (n, 1, H, W) probability array
        risk="recall",
        method="crc",
        target_level=[1.0 - a for a in alphas],
        predict_params=GRID,
    )


def mapie_risks(ctl: Any, probs: np.ndarray, masks: np.ndarray, batch: int, progress: Progress | None = None) -> None:
    """MAPIE's documented batched path: compute_risks on consecutive batches."""
    task = progress.add_task("  MAPIE compute_risks", total=len(probs)) if progress else None
    for i in range(0, len(probs), batch):
        sl = slice(i, i + batch)
        ctl.compute_risks(probs[sl, None], masks[sl, None].view(np.uint8), _refit=(i == 0))
        if progress is not None:
            progress.advance(task, min(batch, len(probs) - i))
    if progress is not None:
        progress.remove_task(task)


def mapie_best(ctl: Any) -> tuple[np.ndarray, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ctl.compute_best_predict_param()
    return np.atleast_1d(ctl.best_predict_param).astype(np.float64), [str(w.message) for w in caught]


# ---------------------------------------------------------------------------- set statistics
def set_stats(probs: np.ndarray, masks: np.ndarray, in_set: Callable[[np.ndarray], np.ndarray], chunk: int = 64) -> dict[str, Any]:
    """Total set size, per-image-mean FNR and pooled FNR of a thresholding rule."""
    size = 0
    fnr = np.empty(len(probs))
    tp_all = pos_all = 0
    for i in range(0, len(probs), chunk):
        s = in_set(probs[i : i + chunk])
        m = masks[i : i + chunk]
        tp = (s & m).sum(axis=(1, 2))
        pos = m.sum(axis=(1, 2))
        fnr[i : i + chunk] = 1.0 - tp / pos
        size += int(s.sum())
        tp_all += int(tp.sum())
        pos_all += int(pos.sum())
    n = len(probs)
    risk = float(fnr.mean())
    return {"set_pixels": size, "risk": risk, "pooled_fnr": 1.0 - tp_all / pos_all, "bound": (n * risk + 1.0) / (n + 1)}


def segcp_rule(lam: float) -> Callable[[np.ndarray], np.ndarray]:
    # The exact expression of ThresholdMethod: r = 1 - float64(prob), set = r <= lambda.
    return lambda p: (1.0 - p.astype(np.float64)) <= lam


def segcp_rule_open(lam: float) -> Callable[[np.ndarray], np.ndarray]:
    # The set just below lambda_hat: r < lambda_hat (for the minimality check).
    return lambda p: (1.0 - p.astype(np.float64)) < lam


def mapie_rule(t: float) -> Callable[[np.ndarray], np.ndarray]:
    # MAPIE compares the float32 map with a float64 array of thresholds: float64 compare.
    t64 = np.float64(t)
    return lambda p: p > t64


def subset_everywhere(probs: np.ndarray, lam: float, t: float, chunk: int = 64) -> bool:
    ok = True
    for i in range(0, len(probs), chunk):
        p = probs[i : i + chunk]
        ok &= not np.any(segcp_rule(lam)(p) & ~mapie_rule(t)(p))
    return ok


# ---------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1000, help="calibration images (default 1000)")
    ap.add_argument("--size", type=int, default=256, help="image side in pixels (default 256)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats; medians are reported (default 3)")
    ap.add_argument("--quick", action="store_true", help="smoke run: n = 100")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mapie-batch", type=int, default=4, help="images per MAPIE compute_risks call (default 4)")
    ap.add_argument("--json", type=str, default=None, help="also write the results to this JSON file")
    args = ap.parse_args(argv)
    if args.quick:
        args.n = 100
    n, size, R = args.n, args.size, max(1, args.repeats)
    alphas = ALPHAS

    import mapie

    console.rule("[bold]segcp vs MAPIE: CRC calibration of a threshold on probabilities")
    console.print(
        f"n = {n} images of {size} x {size}, alphas = {list(alphas)}, repeats = {R} (medians), "
        f"MAPIE batch = {args.mapie_batch}, grid = 0.00:0.01:0.99\n"
        f"segcp {segcp.__version__}, MAPIE {mapie.__version__}, numpy {np.__version__}, "
        f"Python {platform.python_version()}, {os.cpu_count()} CPU(s), "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )

    t0 = time.perf_counter()
    with console.status(f"generating {n} phantoms of {size} x {size} (not timed)..."):
        probs, masks, dropped = make_data(n, size, args.seed)
    fg = masks.sum(axis=(1, 2))
    console.print(
        f"data: probs {probs.shape} {probs.dtype}, masks {masks.dtype}; {dropped} empty-mask phantom(s) "
        f"skipped; foreground {int(fg.min())}..{int(fg.max())} px/image (mean {fg.mean():.0f}); "
        f"generated in {time.perf_counter() - t0:.1f} s"
    )

    # ------------------------------------------------------------ segcp
    segcp_one(probs[: min(n, 50)], masks[: min(n, 50)], 0.2)  # warm-up (imports, page faults)
    seg_alpha = {a: [] for a in alphas}
    seg_all, seg_curves, seg_crc = [], [], []
    seg_rss: dict[str, float | None] = {}
    results: dict[float, ConformalSegmenter] = {}
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True
    ) as progress:
        task = progress.add_task("segcp calibration", total=R * (len(alphas) + 1))
        for _r in range(R):
            for a in alphas:
                with PeakRSS() as mem:
                    t = time.perf_counter()
                    cs = segcp_one(probs, masks, a)
                    seg_alpha[a].append(time.perf_counter() - t)
                seg_rss.setdefault("one", mem.mib)
                results[a] = cs
                progress.advance(task)
            with PeakRSS() as mem:
                t = time.perf_counter()
                all_cs, tc, tl = segcp_all(probs, masks, alphas)
                seg_all.append(time.perf_counter() - t)
            seg_rss.setdefault("all", mem.mib)
            seg_curves.append(tc)
            seg_crc.append(tl)
            for a, cs in zip(alphas, all_cs):
                assert cs.lambda_ == results[a].lambda_, "segcp: all-alpha and per-alpha lambda differ"
            progress.advance(task)
    seg_trace = traced_peak_mib(lambda: segcp_one(probs, masks, alphas[1]))

    # ------------------------------------------------------------ MAPIE
    mapie_controller(alphas)  # import MAPIE's modules outside the timed region

    mapie_risk_t, mapie_best_all_t = [], []
    mapie_best_t = {a: [] for a in alphas}
    mapie_rss: float | None = None
    mapie_warn: list[str] = []
    t_hat: dict[float, float] = {}
    r_hat_grid = None
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), console=console, transient=True
    ) as progress:
        rep = progress.add_task("MAPIE calibration (repeats)", total=R)
        for _r in range(R):
            ctl = mapie_controller(alphas)
            with PeakRSS() as mem:
                t = time.perf_counter()
                mapie_risks(ctl, probs, masks, args.mapie_batch, progress)
                mapie_risk_t.append(time.perf_counter() - t)
            if mapie_rss is None:
                mapie_rss = mem.mib
            t = time.perf_counter()
            best, w = mapie_best(ctl)
            mapie_best_all_t.append(time.perf_counter() - t)
            mapie_warn += w
            r_hat_grid = ctl.r_hat
            for j, a in enumerate(alphas):
                one = mapie_controller((a,))
                one._risks = ctl._risks  # the alpha-independent output of compute_risks
                t = time.perf_counter()
                b1, w = mapie_best(one)
                mapie_best_t[a].append(time.perf_counter() - t)
                mapie_warn += w
                assert b1[0] == best[j], "MAPIE: single-alpha and multi-alpha thresholds differ"
                t_hat[a] = float(best[j])
            progress.advance(rep)
        # Consistency of the batched path with MAPIE's own calibrate()/predict() on a few images.
        k = min(n, 8)
        full = mapie_controller(alphas).calibrate(probs[:k, None], masks[:k, None].view(np.uint8))
        part = mapie_controller(alphas)
        mapie_risks(part, probs[:k], masks[:k], max(1, k // 3))
        batched_ok = np.array_equal(full._risks, part._risks)
        pred = full.predict(probs[:k, None])  # (k, n_alpha, H, W)
        predict_ok = all(np.array_equal(pred[:, j], mapie_rule(float(full.best_predict_param[j]))(probs[:k])) for j in range(len(alphas)))
    mapie_trace = traced_peak_mib(
        lambda: mapie_controller(alphas).compute_risks(probs[: args.mapie_batch, None], masks[: args.mapie_batch, None].view(np.uint8))
    )

    # ------------------------------------------------------------ sets, risks, checks
    med = statistics.median
    rows: list[dict[str, Any]] = []
    checks: list[tuple[str, bool, str]] = []
    tol = 1e-9 / (n + 1)  # segcp accepts a total loss up to 1e-9 over the target (crc.TOL)
    for a in alphas:
        cs = results[a]
        lam = cs.lambda_
        s = set_stats(probs, masks, segcp_rule(lam))
        s_below = set_stats(probs, masks, segcp_rule_open(lam))
        m = set_stats(probs, masks, mapie_rule(t_hat[a]))
        j = int(np.argmin(np.abs(GRID - t_hat[a])))
        # MAPIE keeps the grid point before the first one whose bound reaches alpha.
        m_next = set_stats(probs, masks, mapie_rule(GRID[j + 1])) if j + 1 < len(GRID) else None
        t_seg = med(seg_alpha[a])
        t_map = med(mapie_risk_t) + med(mapie_best_t[a])
        row = {
            "alpha": a,
            "segcp_s": t_seg,
            "mapie_s": t_map,
            "ratio": t_map / t_seg,
            "segcp_lambda": lam,
            "segcp_prob_threshold": 1.0 - lam,
            "mapie_prob_threshold": t_hat[a],
            "segcp_set_pixels": s["set_pixels"],
            "mapie_set_pixels": m["set_pixels"],
            "segcp_risk": s["risk"],
            "segcp_bound": s["bound"],
            "segcp_pooled_fnr": s["pooled_fnr"],
            "mapie_risk": m["risk"],
            "mapie_bound": m["bound"],
            "mapie_pooled_fnr": m["pooled_fnr"],
            "mapie_r_hat_at_t": float(r_hat_grid[j]),
            "bound_just_below_segcp_lambda": s_below["bound"],
            "mapie_bound_next_grid_point": None if m_next is None else m_next["bound"],
        }
        rows.append(row)
        checks += [
            (f"alpha={a}: segcp >= 10x faster than MAPIE", row["ratio"] >= 10, f"{row['ratio']:.0f}x"),
            (
                f"alpha={a}: segcp sets never larger than MAPIE's",
                s["set_pixels"] <= m["set_pixels"] and subset_everywhere(probs, lam, t_hat[a]),
                f"{s['set_pixels']:,} <= {m['set_pixels']:,} px, and inside MAPIE's set pixel by pixel",
            ),
            (
                f"alpha={a}: segcp CRC bound holds on calibration",
                s["bound"] <= a + tol,
                f"n/(n+1)*{s['risk']:.5f} + 1/(n+1) = {s['bound']:.7f} <= {a}",
            ),
            (
                f"alpha={a}: segcp lambda_hat is the smallest admissible",
                s_below["bound"] > a + tol and abs(s["risk"] - cs.result_.empirical_risk) < 1e-9,
                f"bound just below lambda_hat = {s_below['bound']:.9f} > {a}; recomputed risk = segcp's",
            ),
            (
                f"alpha={a}: MAPIE's risk is the per-image mean FNR",
                abs(m["risk"] - r_hat_grid[j]) < 1e-9,
                f"MAPIE r_hat(t) = {r_hat_grid[j]:.6f}, mean per-image FNR = {m['risk']:.6f}, pooled FNR = {m['pooled_fnr']:.6f}",
            ),
            (
                f"alpha={a}: MAPIE t_hat is the largest admissible grid point",
                m["bound"] < a and (m_next is None or (m_next["bound"] >= a and 1 - lam <= GRID[j + 1] + 1e-12)) and 1 - lam > t_hat[a],
                f"bound at t_hat = {m['bound']:.7f} < {a}"
                + ("" if m_next is None else f", at t_hat + 0.01: {m_next['bound']:.7f} >= {a}")
                + f"; segcp's exact threshold {1 - lam:.6f} lies in (t_hat, t_hat + 0.01]",
            ),
        ]
    t_seg_all = med(seg_all)
    t_map_all = med(mapie_risk_t) + med(mapie_best_all_t)
    checks += [
        ("all alphas: segcp >= 10x faster than MAPIE", t_map_all / t_seg_all >= 10, f"{t_map_all / t_seg_all:.0f}x"),
        ("MAPIE batched compute_risks == calibrate() (first images)", batched_ok, ""),
        ("MAPIE predict() == prob > t_hat (first images)", predict_ok, ""),
    ]

    # ------------------------------------------------------------ report
    tab = Table(title=f"Calibration of n = {n} images of {size} x {size} (median of {R})")
    for col in (
        "alpha",
        "segcp (s)",
        "MAPIE (s)",
        "ratio",
        "segcp: prob >=",
        "MAPIE: prob >",
        "segcp set px",
        "MAPIE set px",
        "segcp/MAPIE",
        "segcp risk",
        "MAPIE risk",
    ):
        tab.add_column(col, justify="right")
    for row in rows:
        tab.add_row(
            f"{row['alpha']:g}",
            f"{row['segcp_s']:.3f}",
            f"{row['mapie_s']:.2f}",
            f"{row['ratio']:.0f}x",
            f"{row['segcp_prob_threshold']:.6f}",
            f"{row['mapie_prob_threshold']:.2f}",
            f"{row['segcp_set_pixels']:,}",
            f"{row['mapie_set_pixels']:,}",
            f"{row['segcp_set_pixels'] / row['mapie_set_pixels']:.4f}",
            f"{row['segcp_risk']:.5f}",
            f"{row['mapie_risk']:.5f}",
        )
    tab.add_section()
    tab.add_row("all 3", f"{t_seg_all:.3f}", f"{t_map_all:.2f}", f"{t_map_all / t_seg_all:.0f}x", *[""] * 7)
    console.print(tab)
    console.print(
        f"segcp all-alpha split: curves {med(seg_curves):.3f} s + 3 x crc_lambda {med(seg_crc):.3f} s "
        f"({med(seg_curves) / n * 1e3:.2f} ms/image for the curves)\n"
        f"MAPIE split: compute_risks {med(mapie_risk_t):.2f} s ({med(mapie_risk_t) / n * 1e3:.1f} ms/image, "
        f"alpha-independent, shared by all alphas) + compute_best_predict_param "
        f"{med(mapie_best_all_t) * 1e3:.1f} ms (all alphas), "
        + ", ".join(f"{med(mapie_best_t[a]) * 1e3:.1f} ms (alpha={a:g})" for a in alphas)
        + "\nper-alpha MAPIE time = compute_risks + that alpha's compute_best_predict_param "
        "(what calibrate() runs for one target level); all-alpha = one compute_risks + one "
        "compute_best_predict_param with target_level=[0.8, 0.9, 0.95]\n"
        f"all timings: {', '.join(f'{x:.3f}' for x in seg_all)} s (segcp all-alpha), "
        f"{', '.join(f'{x:.1f}' for x in mapie_risk_t)} s (MAPIE compute_risks)"
    )

    def fmt(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.0f} MiB"

    mapie_full = 13 * n * size * size * len(GRID) / 2**30
    console.print(
        f"memory (peak RSS above the resident data, first repeat): segcp per-alpha {fmt(seg_rss.get('one'))}, "
        f"segcp all-alpha {fmt(seg_rss.get('all'))}, MAPIE batched compute_risks {fmt(mapie_rss)}\n"
        f"memory (tracemalloc peak): segcp calibrate {seg_trace:.0f} MiB, one MAPIE compute_risks batch of "
        f"{args.mapie_batch} images {mapie_trace:.0f} MiB; MAPIE calibrate() on all {n} images at once would "
        f"allocate about {mapie_full:.1f} GiB (float32 repeat + bool + int64 copies of n x H*W x 100)\n"
        f"resident input data: probs {probs.nbytes / 2**20:.0f} MiB + masks {masks.nbytes / 2**20:.0f} MiB"
    )
    if mapie_warn:
        console.print(f"[yellow]MAPIE warnings: {sorted(set(mapie_warn))}")

    console.rule("checks")
    for name, ok, detail in checks:
        tag = "[bold green]PASS[/]" if ok else "[bold red]FAIL[/]"
        console.print(f"{tag} {name}" + (f"  ({detail})" if detail else ""))
    all_ok = all(ok for _, ok, _ in checks)

    if args.json:
        out = {
            "n": n,
            "size": size,
            "repeats": R,
            "seed": args.seed,
            "mapie_batch": args.mapie_batch,
            "empty_dropped": dropped,
            "cpus": os.cpu_count(),
            "segcp_version": segcp.__version__,
            "mapie_version": mapie.__version__,
            "numpy_version": np.__version__,
            "rows": rows,
            "segcp_all_s": t_seg_all,
            "mapie_all_s": t_map_all,
            "segcp_all_runs_s": seg_all,
            "segcp_curves_s": med(seg_curves),
            "segcp_crc3_s": med(seg_crc),
            "mapie_compute_risks_runs_s": mapie_risk_t,
            "mapie_best_all_s": med(mapie_best_all_t),
            "segcp_per_alpha_runs_s": {str(a): v for a, v in seg_alpha.items()},
            "peak_rss_mib": {"segcp_one": seg_rss.get("one"), "segcp_all": seg_rss.get("all"), "mapie": mapie_rss},
            "tracemalloc_mib": {"segcp": seg_trace, "mapie_one_batch": mapie_trace},
            "checks": [{"name": c, "pass": bool(ok), "detail": d} for c, ok, d in checks],
        }
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)
    console.print("[bold green]all checks PASS" if all_ok else "[bold red]some checks FAIL")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
