"""CONSIGN per image: segcp's λ*_i (the ``lines`` search and issue 16's ``adam`` search) against
the authors' procedure (benchmarks/consign_reference.py), on real MC-dropout samples (issue 28).

For every image of a ``segcp infer --samples`` folder and every (K, β) asked for, on the paper's
box (quantile level ``--alpha``, as in the authors' code):

* **lines**: ``consign_score`` with the default search (exact line searches, the K = 2
  arrangement search); **adam**: the same with ``strategy="adam"`` (issue 16's search);
* **reference**: the authors' test at λ = 0.01, 0.02, … (their Latin-hypercube screening,
  Adam at lr 1 with clamping and patience 50, the argmax check), from the first grid point up
  to ``max(λ*_lines, λ*_adam) + 0.01`` — far enough to see whether it certifies an image more
  than one grid step below either search — or up to ``--ref-cap`` when both are infinite
  (or larger than it). ``skip_saturated`` (pixels whose softmax at τ = 10⁻⁴ is one-hot to
  10⁻²² everywhere in the box are counted once, not recomputed) unless ``--ref-full``;
  ``--check-saturated N`` reruns the first N images of each setting without it and records
  whether the grid λ* and the Adam epochs are the same. By default the reference scans from
  its first grid point, so it also checks the lines search's ``proven`` bound (λ_LB, or where
  its K = 2 arrangement search showed that no member exists: a reference certificate below it
  would be a counter-example); ``--trust-proofs`` starts it above that bound instead (it can
  only fail below; the Latin-hypercube seeds stay those of a full scan). Where the proof
  covers the whole scan (K = 2, λ* = ∞ and no member up to ``lambda_max``) the reference is
  not run at all (``skipped_below``).

A search *misses* an image when its λ*_i exceeds the reference's grid λ* by more than one grid
step (0.01). For each miss the cause is recorded by re-running that search's membership test
at the reference's λ*: ``lambda_max`` (that λ* is beyond the search's ``lambda_max``: a
setting), ``lambda search`` (the test certifies there: the bisection went past
it), ``start`` (it certifies when the reference's own Adam start — the Latin-hypercube point
its certified run began from — is added as a warm start), else ``local search`` (from that
start its local search — Adam steps on the surrogate, or the line searches — does not reach a
member that the authors' Adam reached).

Results go to ``OUT/results.jsonl``, one line per (image, K, β), written as they come: a run
that is stopped resumes where it was (rows already there are skipped). ``OUT/summary.json``
and ``OUT/report.md`` are rewritten at the end (and by ``--summarize`` alone).

After a change of segcp's search, ``--rescore`` runs both of segcp's searches again on the rows of
``--K``/``--beta`` already there (the reference, hours, is kept), and ``--prove-absent`` runs the
proof of absence up to λ = 500 on the rows no search reaches that no proof has decided yet (K = 2: the
lines search's arrangement search; K > 2: the box branch and bound of ``absence_bound``, minutes per truth).

Run (the issue's comparison; each data set in the background, about an hour each on 2 shared cores)::

    python benchmarks/consign_compare.py --data /work/artifacts/h28/probs/acdc --out docs/results/consign-compare-acdc \\
        --K 2 5 --beta 0.8 0.9 --alpha 0.1 --jobs 2
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse
import json
import math
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

from segcp.calibration import conformal_quantile
from segcp.errors import SegcpError
from segcp.progress import Bar
from segcp.segsets.consign import SearchOptions, _Search, absence_bound, consign_score, decompose

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_consign import load_real_cases
from consign_reference import ReferenceOptions, reference_score

STEP = 0.01  # the reference's grid step
STRATEGIES = ("lines", "adam")


def _f(v: float) -> float | None:
    return None if v is None or not math.isfinite(v) else float(v)


def _inf(v: float | None) -> float:
    return math.inf if v is None else float(v)


#: The authors' last grid point: a truth in no set at this λ is in none of their grid's (nested boxes).
REF_LAMBDA_MAX = ReferenceOptions().lambda_max
#: The K = 2 arrangement search's work budget per membership test of the proof (pixel × line evaluations).
ABSENT_BUDGET = 2_000_000_000
#: K > 2: the box branch and bound's budget per step of :func:`segcp.segsets.consign.absence_bound`.
BOX_BUDGET = 20_000_000_000


def prove_absent(dec: Any, truth: np.ndarray, beta: float) -> dict[str, float | None]:
    """For a truth the lines search does not reach by its ``lambda_max``, the fields a row's ``lines``
    gets: ``absent_to``, ``member_at``, ``proven_to``, ``absent_seconds``. ``member_at``: the lines
    search's λ* with ``lambda_max`` = REF_LAMBDA_MAX, the authors' last grid point (the K = 2
    arrangement search's budget ABSENT_BUDGET per test) — a truth the authors' longer grid can
    certify and segcp, stopping at its own ``lambda_max``, calls ∞. ``proven_to``: a proof that no
    member exists below — for K = 2 that search's own (its bracketing tests λ about twice as large
    each time, and each test whose arrangement search runs to the end without a member lets the
    next skip the box it showed empty, so the chain reaches λ = 500 where one test there alone does
    not finish); for K > 2 :func:`~segcp.segsets.consign.absence_bound` (a box branch and bound,
    BOX_BUDGET per step) up to ``member_at`` or REF_LAMBDA_MAX. ``absent_to`` = REF_LAMBDA_MAX where
    no member exists there — no box of the authors' grid then contains the truth, so their λ* is ∞
    too (the proofs' resolution: the certificates' margin, and for K = 2 no cell thinner than 10⁻⁷
    of the box unexamined)."""
    t0 = time.perf_counter()
    r = consign_score(dec, truth, beta, options=SearchOptions(lambda_max=REF_LAMBDA_MAX, exhaustive=ABSENT_BUDGET))
    low = r.proven if dec.K == 2 else absence_bound(dec, truth, beta, lambda_to=min(r.lambda_, REF_LAMBDA_MAX), budget=BOX_BUDGET)
    absent = not math.isfinite(r.lambda_) and low >= REF_LAMBDA_MAX
    return {
        "absent_to": REF_LAMBDA_MAX if absent else None,
        "member_at": _f(r.lambda_),
        "proven_to": _f(low),
        "absent_seconds": time.perf_counter() - t0,
    }


def reference_at_least(row: dict[str, Any]) -> float:
    """What is known of the reference's grid λ* of a row: its value where it certified, else
    the next grid point above its scan — or above the lines search's proven bound, where that is
    higher (no member exists below it, so the reference cannot certify there) — and
    ∞ where no member exists at the authors' last grid point (:func:`prove_absent`)."""
    ref = row["reference"]
    if ref["lambda"] is not None:
        return float(ref["lambda"])
    if (row["lines"].get("absent_to") or 0.0) >= REF_LAMBDA_MAX:
        return math.inf
    low = proven(row["lines"])
    return max(float(ref["at_least"]), round(math.floor(low / STEP + 1e-9) * STEP + STEP, 10))


def proven(lines: dict[str, Any]) -> float:
    """The lines search's proof that no member exists below this λ (λ_LB, or where its K = 2
    arrangement search ran to the end without one): from the row's search, or from the longer
    one up to λ = 500 of :func:`prove_absent` where that ran."""
    return max(lines.get("proven") or 0.0, lines.get("proven_to") or 0.0)


def beyond_range(dec: Any, strategy: str, lam: float) -> bool:
    """Whether λ lies beyond the default ``lambda_max`` of ``strategy``'s search on ``dec`` (a miss there is the range setting's)."""
    return lam > SearchOptions(strategy=strategy).resolved(dec)[0]


def diagnose(dec, truth, beta: float, strategy: str, lam_ref: float, start_ref: np.ndarray) -> str:
    """Why ``strategy`` missed a member the reference certified at λ_ref (see the module docstring)."""
    if beyond_range(dec, strategy, lam_ref):
        return "lambda_max"
    s = _Search(dec, truth, beta, SearchOptions(strategy=strategy))
    if s.test(lam_ref, [])[0]:
        return "lambda search"
    t = (start_ref - dec.centre) / np.where(dec.unit_half_width > 0, lam_ref * dec.unit_half_width, 1.0)
    s = _Search(dec, truth, beta, SearchOptions(strategy=strategy))
    if s.test(lam_ref, [np.clip(t, -1, 1)])[0]:
        return "start"
    return "local search"


def search(dec: Any, truth: np.ndarray, beta: float, strategy: str) -> tuple[Any, dict[str, Any]]:
    """One of segcp's searches on one (image, K, β): its ScoreResult and the row's fields for it
    (for a truth the lines search does not reach, with :func:`prove_absent`'s)."""
    t0 = time.perf_counter()
    r = consign_score(dec, truth, beta, options=SearchOptions(strategy=strategy))
    out = {
        "lambda": _f(r.lambda_),
        "seconds": time.perf_counter() - t0,
        "tests": r.tests,
        "steps": r.steps,
        "exhaustive": r.exhaustive,
        "lower_bound": _f(r.lower_bound),
        "proven": _f(r.proven),
    }
    if strategy == "lines" and not math.isfinite(r.lambda_):
        out |= prove_absent(dec, truth, beta)
    return r, out


def rescore(args: tuple) -> dict[str, Any]:
    """A row's searches run again (after a change of one: both, so that their times are taken alike), its
    reference kept; a row where one now misses the reference below its ``lambda_max`` is computed again
    whole (that diagnosis needs the reference's start), one beyond it keeps its reference (cause ``lambda_max``)."""
    row, samples, truth, alpha, job_args = args
    dec = decompose(samples, K=row["K"], box_alpha=alpha, box="paper")
    ref = row["reference"]["lambda"]
    for strategy in STRATEGIES:
        r, row[strategy] = search(dec, truth, row["beta"], strategy)
        row[strategy]["miss"] = bool(ref is not None and r.lambda_ > ref + STEP + 1e-9)
        if row[strategy]["miss"]:
            if not beyond_range(dec, strategy, ref):
                return job(job_args)
            row[strategy]["cause"] = "lambda_max"
    return row


def job(args: tuple) -> dict[str, Any]:
    """One (image, K, β): both searches, the reference, and the diagnosis of any miss."""
    import torch

    torch.set_num_threads(1)
    (image_id, seed, samples, truth, K, beta, alpha, ref_cap, ref_full, check_full, trust) = args
    dec = decompose(samples, K=K, box_alpha=alpha, box="paper")
    row: dict[str, Any] = {"id": image_id, "K": K, "beta": beta, "shape": list(truth.shape), "sigma_1": float(dec.singular_values[0])}
    res = {}
    for strategy in STRATEGIES:
        res[strategy], row[strategy] = search(dec, truth, beta, strategy)
    top = max(res[s].lambda_ for s in STRATEGIES)
    cap = min(top + STEP, ref_cap) if math.isfinite(top) else ref_cap
    # no member below this λ (the lines search's proof): with --trust-proofs the reference does
    # not scan there (it could only fail); without, it does, and checks the proof
    low = proven(row["lines"])
    start = low if trust else 0.0
    row["skipped_below"] = _f(start) if start >= STEP else None
    if low >= cap:  # shown: no member up to the cap (K = 2, λ* = ∞): nothing to find
        start = cap
        row["skipped_below"] = cap
        cap = 0.0
    opt = ReferenceOptions(skip_saturated=not ref_full)
    t0 = time.perf_counter()
    ref = reference_score(dec, truth, beta, opt, lambda_cap=cap, image_seed=seed, lambda_from=start)
    # what is known of the reference's λ* when it did not certify: above the cap and the proof
    low = math.floor(max(cap, start) / STEP + 1e-9) * STEP + STEP
    row["reference"] = {
        "lambda": _f(ref.lambda_),
        "cap": cap,
        "at_least": _f(ref.lambda_) or round(low, 10),
        "seconds": time.perf_counter() - t0,
        "grid_points": ref.grid_steps,
        "epochs": ref.epochs,
        "skip_saturated": not ref_full,
    }
    if check_full and not ref_full:
        t0 = time.perf_counter()
        full = reference_score(dec, truth, beta, ReferenceOptions(), lambda_cap=cap, image_seed=seed, lambda_from=start)
        row["reference_full"] = {
            "lambda": _f(full.lambda_),
            "seconds": time.perf_counter() - t0,
            "epochs": full.epochs,
            "same": bool(_f(full.lambda_) == _f(ref.lambda_) and full.epochs == ref.epochs),
        }
    for strategy in STRATEGIES:
        lam = res[strategy].lambda_
        miss = math.isfinite(ref.lambda_) and lam > ref.lambda_ + STEP + 1e-9
        row[strategy]["miss"] = bool(miss)
        if miss:
            row[strategy]["cause"] = diagnose(dec, truth, beta, strategy, ref.lambda_, ref.start)
    return row


def summarize(rows: list[dict[str, Any]], alpha: float) -> dict[str, Any]:
    """Per (K, β): misses (and causes) per search, times, and λ̂ over all images (α) — the
    reference's as a lower bound when its quantile falls on an image it did not certify by the cap."""
    out: dict[str, Any] = {}
    for K, beta in sorted({(r["K"], r["beta"]) for r in rows}):
        rs = [r for r in rows if r["K"] == K and r["beta"] == beta]
        d: dict[str, Any] = {"n": len(rs)}
        ref = np.array([_inf(r["reference"]["lambda"]) for r in rs])
        # where the reference was not certified by its cap, its λ* is at least the next grid point
        ref_low = np.array([reference_at_least(r) for r in rs])
        for s in STRATEGIES:
            lam = np.array([_inf(r[s]["lambda"]) for r in rs])
            causes: dict[str, int] = {}
            for r in rs:
                if r[s]["miss"]:
                    causes[r[s]["cause"]] = causes.get(r[s]["cause"], 0) + 1
            try:
                lam_hat = float(conformal_quantile(lam, alpha))
            except SegcpError:  # fewer images than α needs: no finite λ̂
                lam_hat = math.inf
            d[s] = {
                "misses": int(sum(r[s]["miss"] for r in rs)),
                "missed_ids": [r["id"] for r in rs if r[s]["miss"]],
                "causes": causes,
                "infinite": int(np.sum(~np.isfinite(lam))),
                "lambda_hat": _f(lam_hat),
                "seconds_mean": float(np.mean([r[s]["seconds"] for r in rs])),
                "seconds_median": float(np.median([r[s]["seconds"] for r in rs])),
                "exhaustive_tests": int(sum(r[s]["exhaustive"] for r in rs)),
                "below_reference_by_step": int(sum(a < b - STEP - 1e-9 for a, b in zip(lam, ref) if math.isfinite(b))),
            }
        # truths segcp calls ∞ (not reached by its lambda_max) that have a member on the authors' grid
        d["beyond_lambda_max"] = {r["id"]: r["lines"]["member_at"] for r in rs if r["lines"].get("member_at") is not None}
        # ... and the authors' grid λ* of those, where their scan went that far (None: not scanned there)
        d["beyond_lambda_max_reference"] = {r["id"]: r["reference"]["lambda"] for r in rs if r["lines"].get("member_at") is not None}
        d["proof_violations"] = [
            r["id"] for r in rs if r["reference"]["lambda"] is not None and r["reference"]["lambda"] < proven(r["lines"]) - 1e-12
        ]
        d["lines_vs_adam"] = {
            "lower": int(sum(_inf(r["lines"]["lambda"]) < _inf(r["adam"]["lambda"]) * (1 - 1e-3) for r in rs)),
            "higher": int(sum(_inf(r["lines"]["lambda"]) > _inf(r["adam"]["lambda"]) * (1 + 1e-3) + 1e-12 for r in rs)),
        }
        try:
            ref_hat_low = float(conformal_quantile(ref_low, alpha))
        except SegcpError:  # fewer images than α needs
            ref_hat_low = math.inf
        d["reference"] = {
            "certified": int(np.sum(np.isfinite(ref))),
            "lambda_hat_at_least": _f(ref_hat_low),
            "seconds_mean": float(np.mean([r["reference"]["seconds"] for r in rs])),
            "seconds_total": float(np.sum([r["reference"]["seconds"] for r in rs])),
            "grid_points": int(sum(r["reference"]["grid_points"] for r in rs)),
            "cap_max": float(max(r["reference"]["cap"] for r in rs)),
        }
        full = [r["reference_full"] for r in rs if "reference_full" in r]
        if full:
            d["reference"]["saturated_check"] = {
                "images": len(full),
                "same": int(sum(f["same"] for f in full)),
                "seconds_full": float(np.sum([f["seconds"] for f in full])),
            }
        lam_hat = d["lines"]["lambda_hat"]
        # an infinite lower bound: the reference's calibration finds no λ̂ either (its loop exits at λ = 500)
        d["lines_lambda_hat_within_one_step"] = bool(_inf(lam_hat) <= ref_hat_low + STEP + 1e-9)
        out[f"K={K} beta={beta}"] = d
    return out


def split_summary(
    rows: list[dict[str, Any]], ids: list[str], groups: list[str], alpha: float, n_cal: int, splits: int, check_splits: int, seed: int
) -> dict[str, Any]:
    """λ̂ of both searches and the reference's lower bound on the calibration splits of
    benchmarks/consign_real.py (the same seeds: ``splits`` draw splits with ``seed``, and
    ``check_splits`` with ``seed + 1``), per (K, β); a split is infeasible (λ̂ = ∞) when too many
    of its calibration scores are ∞."""
    from segcp.engine.splits import random_cal_test_splits

    def qhat(v: np.ndarray) -> float:
        try:
            return float(conformal_quantile(v, alpha))
        except SegcpError:  # fewer images than α needs
            return math.inf

    pos = {i: k for k, i in enumerate(ids)}
    draw = [cal for cal, _ in random_cal_test_splits(groups, n_cal, splits, seed=seed)]
    many = [cal for cal, _ in random_cal_test_splits(groups, n_cal, check_splits, seed=seed + 1)]
    out: dict[str, Any] = {}
    for K, beta in sorted({(r["K"], r["beta"]) for r in rows}):
        rs = sorted((r for r in rows if r["K"] == K and r["beta"] == beta), key=lambda r: pos[r["id"]])
        if [r["id"] for r in rs] != ids:
            continue  # not every image done yet
        lam = {s: np.array([_inf(r[s]["lambda"]) for r in rs]) for s in STRATEGIES}
        ref_low = np.array([reference_at_least(r) for r in rs])
        # what the reference's λ* can be at most: its certified grid λ*, +∞ where its scan did not certify
        ref_high = np.array([_inf(r["reference"]["lambda"]) for r in rs])
        d: dict[str, Any] = {}
        for s in STRATEGIES:
            d[s] = [_f(qhat(lam[s][np.asarray(c)])) for c in draw]
        d["reference_at_least"] = [_f(qhat(ref_low[np.asarray(c)])) for c in draw]
        ok = beyond = worse = infeasible = 0
        for c in many:
            a, b = qhat(lam["lines"][np.asarray(c)]), qhat(ref_low[np.asarray(c)])
            infeasible += not math.isfinite(a)
            if a <= b + STEP + 1e-9:
                ok += 1
            elif a > qhat(ref_high[np.asarray(c)]) + STEP + 1e-9:  # above even the largest the reference's λ̂ can be
                worse += 1
            else:  # the reference's λ̂ lies between its bounds: its scans stopped before they could decide
                beyond += 1
        d["check"] = {
            "splits": len(many),
            "lines_within_one_step": ok,
            "both_beyond_the_scan": beyond,
            "lines_above": worse,
            "lines_infeasible": infeasible,
            "lines_below_adam": int(sum(qhat(lam["lines"][np.asarray(c)]) < qhat(lam["adam"][np.asarray(c)]) - 1e-12 for c in many)),
            "lines_above_adam": int(sum(qhat(lam["lines"][np.asarray(c)]) > qhat(lam["adam"][np.asarray(c)]) * (1 + 2e-3) + 1e-12 for c in many)),
        }
        out[f"K={K} beta={beta}"] = d
    return out


def report(summary: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [
        f"# CONSIGN per image: segcp's searches against the authors' procedure ({meta['data']})",
        "",
        f"{meta['n_images']} images; paper's box, box quantile level α = {meta['alpha']}; reference grid step "
        f"{STEP}; reference scanned up to max(λ*_lines, λ*_adam) + {STEP} (at most {meta['ref_cap']}). "
        "A *miss*: λ*_i above the reference's grid λ*_i + one step. Times: seconds per image, one process "
        "(2 worker processes on the shared 2-core machine); the reference's is this comparison's scan (capped, "
        "saturated pixels skipped, and with --trust-proofs started at the lines search's proven bound), not the "
        "cost of the authors' calibration (benchmarks/bench_consign.py measures that). Command: `"
        + meta["command"]
        + "`"
        + "".join(f"; rows recomputed (their own cap): `{c}`" for c in meta.get("redo", []))
        + "".join(
            f"; segcp's searches rerun on these rows (the times of both from this run, the reference's kept): `{c}`" for c in meta.get("rescore", [])
        )
        + ".",
        "",
        "| K | β | n | misses lines (causes) | misses adam (causes) | ∞ lines / adam | λ̂ lines | λ̂ adam | λ̂ reference ≥ | "
        "lines < adam / > adam | s/image lines | adam | reference |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]

    def fmt(v: float | None) -> str:
        return "∞" if v is None else f"{v:.4f}"

    for key, d in summary.items():
        K, beta = key.split()
        cs = {s: ", ".join(f"{k}: {v}" for k, v in d[s]["causes"].items()) for s in STRATEGIES}
        lines.append(
            f"| {K[2:]} | {beta[5:]} | {d['n']} | {d['lines']['misses']}{' (' + cs['lines'] + ')' if cs['lines'] else ''} | "
            f"{d['adam']['misses']}{' (' + cs['adam'] + ')' if cs['adam'] else ''} | {d['lines']['infinite']} / {d['adam']['infinite']} | "
            f"{fmt(d['lines']['lambda_hat'])} | {fmt(d['adam']['lambda_hat'])} | {fmt(d['reference']['lambda_hat_at_least'])} | "
            f"{d['lines_vs_adam']['lower']} / {d['lines_vs_adam']['higher']} | {d['lines']['seconds_mean']:.2f} | "
            f"{d['adam']['seconds_mean']:.2f} | {d['reference']['seconds_mean']:.1f} |"
        )
    if meta.get("splits"):
        sp = meta["splits"]
        lines += [
            "",
            f"λ̂ on the {len(next(iter(sp.values()))['lines'])} calibration splits of benchmarks/consign_real.py "
            f"(n_cal = {meta['n_cal']}, α = {meta['alpha']}, whole groups, seed {meta['seed']}; ∞ = infeasible), and "
            "over the further check splits (seed + 1): in how many segcp's λ̂ (lines) ≤ the reference's λ̂ + one step. "
            "The reference's λ̂ is bounded below where it did not certify an image by its scan (or, K = 2, below the "
            "lines search's proof that no member exists; ∞ where the K = 2 arrangement search finds no member at the "
            "authors' last grid point λ = 500, so that no box of their grid holds the truth and their loop, like segcp, "
            "finds no λ̂ when too many such truths are in the calibration set); *beyond the scan*: undecided, the reference's λ̂ lies between "
            "that bound and its certified λ* (+∞ where it certified nothing) and segcp's λ̂ between the two; *lines above*: "
            "segcp's λ̂ above even the largest the reference's can be.",
            "",
            "| K | β | λ̂ lines per split | λ̂ adam per split | reference ≥ | check splits: lines ≤ ref + step / beyond the scan / lines above | lines < adam / > adam |",
            "|---|---|---|---|---|---|---|",
        ]
        for key, d in sp.items():
            K, beta = key.split()
            c = d["check"]
            lines.append(
                f"| {K[2:]} | {beta[5:]} | {', '.join(fmt(v) for v in d['lines'])} | {', '.join(fmt(v) for v in d['adam'])} | "
                f"{', '.join(fmt(v) for v in d['reference_at_least'])} | {c['lines_within_one_step']} / "
                f"{c['both_beyond_the_scan']} / {c['lines_above']} (of {c['splits']}) | "
                f"{c['lines_below_adam']} / {c['lines_above_adam']} |"
            )
    lines += ["", "Missed images:", ""]
    for key, d in summary.items():
        for s in STRATEGIES:
            if d[s]["missed_ids"]:
                lines.append(f"- {key}, {s}: {', '.join(d[s]['missed_ids'])}")
        if d.get("beyond_lambda_max"):
            refs = d.get("beyond_lambda_max_reference", {})
            lines.append(
                f"- {key}, lines, beyond segcp's lambda_max (λ* = ∞ there; a member on the authors' grid, found by the "
                "lines search run to λ = 500): "
                + ", ".join(
                    f"{i} (λ* = {v:.3f} with lambda_max = 500; the authors' "
                    + ("not scanned that far" if refs.get(i) is None else f"{refs[i]:.2f}")
                    + ")"
                    for i, v in d["beyond_lambda_max"].items()
                )
            )
    checks = [(k, d["reference"]["saturated_check"]) for k, d in summary.items() if "saturated_check" in d["reference"]]
    if checks:
        lines += [
            "",
            "Reference with and without `skip_saturated` (same grid λ* and Adam epochs): "
            + "; ".join(f"{k}: {c['same']} of {c['images']}" for k, c in checks),
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="a segcp infer --samples folder (samples/, masks/)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--K", type=int, nargs="+", default=[2, 5])
    ap.add_argument("--beta", type=float, nargs="+", default=[0.8, 0.9])
    ap.add_argument("--alpha", type=float, default=0.1, help="box quantile level (and the α of λ̂)")
    ap.add_argument("--n", type=int, help="only the first N ids (sorted)")
    ap.add_argument("--stride", type=int, default=1, help="only every STRIDE-th of those ids (1st, 1 + STRIDE-th, ...)")
    ap.add_argument("--crop", type=int, help="centre-crop to CROP x CROP")
    ap.add_argument("--ref-cap", type=float, default=1.0, help="the reference scans at most up to this λ")
    ap.add_argument("--ref-full", action="store_true", help="the reference on every pixel (no skip_saturated)")
    ap.add_argument("--check-saturated", type=int, default=0, help="rerun the reference without skip_saturated on the first N images")
    ap.add_argument(
        "--trust-proofs",
        action="store_true",
        help="the reference skips the grid points below the lines search's proven bound (where it can only fail)",
    )
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--summarize", action="store_true", help="only rewrite summary.json and report.md")
    ap.add_argument("--n-cal", type=int, default=20, help="λ̂ on calibration splits of this size (0: none)")
    ap.add_argument("--splits", type=int, default=5, help="the draw splits of consign_real.py")
    ap.add_argument("--check-splits", type=int, default=500, help="the check splits of consign_real.py")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--redo",
        action="append",
        default=[],
        metavar="ID:K:BETA",
        help="recompute these rows (with this run's --ref-cap, e.g. larger, for them); the other rows and the first run's command stay",
    )
    ap.add_argument(
        "--rescore",
        action="store_true",
        help="run segcp's searches again on the rows of --K already there (after a change of a search), keeping their reference",
    )
    ap.add_argument(
        "--prove-absent",
        action="store_true",
        help="for the rows no search reaches, the proof of absence up to the authors' last grid point (new rows do it anyway)",
    )
    a = ap.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []
    redo = {(i, int(k), float(b)) for i, k, b in (r.rsplit(":", 2) for r in a.redo)}
    if redo:  # drop those rows (the file rewritten without them): they are computed again below
        rows = [r for r in rows if (r["id"], r["K"], r["beta"]) not in redo]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    meta = {
        "data": a.data,
        "alpha": a.alpha,
        "ref_cap": a.ref_cap,
        "command": "python benchmarks/consign_compare.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs",
    }
    before = json.loads((out / "summary.json").read_text())["meta"] if (out / "summary.json").exists() else {}
    if (a.summarize or redo or a.rescore) and "command" in before:
        meta["command"], meta["ref_cap"] = before["command"], before.get("ref_cap", a.ref_cap)
    if "ids" in before:  # --summarize reads no images: the ids of the run that did
        meta["ids"] = before["ids"]
    if before.get("redo") or redo:
        meta["redo"] = before.get("redo", []) + (["python benchmarks/consign_compare.py " + " ".join(sys.argv[1:])] if redo else [])
    meta["wall_seconds"] = before.get("wall_seconds", 0.0)  # of the sessions so far (a run may be resumed)
    if not a.summarize:
        cases = load_real_cases(a.data, a.n, a.crop, a.stride)
        meta["ids"] = [c.id for c in cases]
        done = {(r["id"], r["K"], r["beta"]) for r in rows}
        from segcp.io import index_folder

        # the Latin-hypercube seed of an image: its place among all the folder's ids (the same
        # whatever --n / --stride, so that runs on nested subsets share their rows)
        seeds = {i: k for k, i in enumerate(sorted(index_folder(Path(a.data) / "samples")))}
        place = {c.id: k for k, c in enumerate(cases)}
        todo = [(c, K, b) for K in a.K for b in a.beta for c in cases if (c.id, K, b) not in done]
        by_id = {c.id: c for c in cases}
        again = [k for k, r in enumerate(rows) if a.rescore and r["K"] in a.K and r["beta"] in a.beta and r["id"] in by_id]
        print(f"{len(cases)} images, {len(todo)} (image, K, beta) to do, {len(done)} done, {len(again)} to rescore", flush=True)

        def job_args(c: Any, K: int, b: float) -> tuple:
            return (c.id, seeds[c.id], c.samples, c.truth, K, b, a.alpha, a.ref_cap, a.ref_full, place[c.id] < a.check_saturated, a.trust_proofs)

        t0 = time.perf_counter()
        with ProcessPoolExecutor(max_workers=a.jobs) as ex, path.open("a") as f, Bar("compare", len(todo) + len(again)) as bar:
            where: dict[Any, int | None] = {ex.submit(job, job_args(c, K, b)): None for c, K, b in todo}
            for k in again:  # a rescored row keeps its place: the file is rewritten at the end
                r, c = rows[k], by_id[rows[k]["id"]]
                where[ex.submit(rescore, (r, c.samples, c.truth, a.alpha, job_args(c, r["K"], r["beta"])))] = k
            for fut in as_completed(where):
                row = fut.result()
                if where[fut] is None:  # appended as they come: a stopped run resumes
                    f.write(json.dumps(row) + "\n")
                    f.flush()
                    rows.append(row)
                else:
                    rows[where[fut]] = row
                bar.advance()
                print(
                    f"{row['id']} K={row['K']} beta={row['beta']}: lines {row['lines']['lambda']} "
                    f"({row['lines']['seconds']:.1f} s), adam {row['adam']['lambda']} ({row['adam']['seconds']:.1f} s), "
                    f"reference {row['reference']['lambda']} ({row['reference']['seconds']:.0f} s)"
                    + (" MISS lines" if row["lines"]["miss"] else "")
                    + (" MISS adam" if row["adam"]["miss"] else ""),
                    flush=True,
                )
        meta["wall_seconds"] += time.perf_counter() - t0
        if again:
            path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    if a.rescore or "rescore" in before:
        meta["rescore"] = before.get("rescore", []) + (["python benchmarks/consign_compare.py " + " ".join(sys.argv[1:])] if a.rescore else [])
    # the rows no search reaches and no proof has decided yet
    todo_absent = [r for r in rows if r["lines"]["lambda"] is None and not (r["lines"].get("absent_to") or r["lines"].get("proven_to"))]
    if a.prove_absent and todo_absent:
        by_id = {c.id: c for c in load_real_cases(a.data, a.n, a.crop, a.stride)}
        for r in todo_absent:
            c = by_id[r["id"]]
            dec = decompose(c.samples, K=r["K"], box_alpha=a.alpha, box="paper")
            r["lines"] |= prove_absent(dec, c.truth, r["beta"])
            print(
                f"{r['id']} K={r['K']} beta={r['beta']}: absent at lambda={REF_LAMBDA_MAX:g}: {r['lines']['absent_to'] is not None}, "
                f"none below {r['lines']['proven_to']}, "
                f"a member from lambda {r['lines']['member_at']} ({r['lines']['absent_seconds']:.1f} s)",
                flush=True,
            )
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
        meta["prove_absent"] = before.get("prove_absent", []) + ["python benchmarks/consign_compare.py " + " ".join(sys.argv[1:])]
    elif "prove_absent" in before:
        meta["prove_absent"] = before["prove_absent"]
    meta["n_images"] = len({r["id"] for r in rows})
    summary = summarize(rows, a.alpha)
    if a.n_cal:
        from segcp.compare import load_groups
        from segcp.io import index_folder

        ids = sorted(index_folder(Path(a.data) / "samples"))[: a.n][:: a.stride]
        groups, meta["groups"] = load_groups(a.data, ids)
        meta.update(n_cal=a.n_cal, seed=a.seed)
        meta["splits"] = split_summary(rows, ids, groups, a.alpha, a.n_cal, a.splits, a.check_splits, a.seed)
    (out / "summary.json").write_text(json.dumps({"meta": meta, "summary": summary}, indent=1) + "\n")
    (out / "report.md").write_text(report(summary, meta))
    print(report(summary, meta))


if __name__ == "__main__":
    main()
