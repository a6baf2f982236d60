"""The K = 2 arrangement search with and without the skip of the box an earlier test showed empty
(issue 28): segcp's default CONSIGN search (``consign_score``, strategy ``lines``) per image, the
search before the change loaded from a file (``--old``, e.g. ``git show ba5e129:src/segcp/segsets/consign.py``),
both on every image of a ``segcp infer --samples`` folder, interleaved per image in one process
(one BLAS thread), K = 2, β = 0.8 and 0.9, the paper's box at quantile level 0.1 — the settings of
benchmarks/consign_compare.py. Prints and writes (``--out``) the time per image of each, their ratio
and whether λ* is the same; then the proofs of absence up to the authors' last grid point
(λ = 500) that consign_compare.py's ``prove_absent`` runs for the truths no search reaches: the
chain of tests against one test at λ = 500, each within the same work budget."""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import importlib.util
import json
import math
import sys
import time

import numpy as np

from segcp.segsets import consign as new

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_consign import load_real_cases

BUDGET = 2_000_000_000  # consign_compare.ABSENT_BUDGET, per test


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True)
    ap.add_argument("--old", required=True, help="consign.py of the commit before the change")
    ap.add_argument("--stride", type=int, default=1)
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    spec = importlib.util.spec_from_file_location("consign_old", a.old)
    old = importlib.util.module_from_spec(spec)
    sys.modules["consign_old"] = old  # (its dataclasses look their module up)
    spec.loader.exec_module(old)
    rows = []
    for c in load_real_cases(a.data, None, None, a.stride):
        for beta in (0.8, 0.9):
            row = {"id": c.id, "beta": beta}
            for name, mod in (("old", old), ("new", new)):
                dec = mod.decompose(c.samples, K=2, box_alpha=0.1, box="paper")
                t0 = time.perf_counter()
                r = mod.consign_score(dec, c.truth, beta)
                row[name] = {"seconds": time.perf_counter() - t0, "lambda": r.lambda_ if math.isfinite(r.lambda_) else None, "tests": r.tests}
            if row["new"]["lambda"] is None:  # the proof up to λ = 500: one test there (before) against the chain (now)
                dec = new.decompose(c.samples, K=2, box_alpha=0.1, box="paper")
                t0 = time.perf_counter()
                s = new._Search(dec, c.truth, beta, new.SearchOptions(exhaustive=BUDGET))
                found = s.test(500.0, [])[0]
                row["proof_one_test"] = {"seconds": time.perf_counter() - t0, "settled": s.settled, "member": found}
                t0 = time.perf_counter()
                r = new.consign_score(dec, c.truth, beta, options=new.SearchOptions(lambda_max=500.0, exhaustive=BUDGET))
                row["proof_chain"] = {
                    "seconds": time.perf_counter() - t0,
                    "settled": r.proven >= 500.0,
                    "member_at": r.lambda_ if math.isfinite(r.lambda_) else None,
                    "tests": r.tests,
                }
            rows.append(row)
            print(json.dumps(row), flush=True)
    old_s = np.array([r["old"]["seconds"] for r in rows])
    new_s = np.array([r["new"]["seconds"] for r in rows])
    same = sum(r["old"]["lambda"] == r["new"]["lambda"] for r in rows)
    proofs = [r for r in rows if "proof_chain" in r]
    summary = {
        "data": a.data,
        "rows": len(rows),
        "same_lambda": same,
        "seconds_old": float(old_s.sum()),
        "seconds_new": float(new_s.sum()),
        "ratio_total": float(old_s.sum() / new_s.sum()),
        "ratio_median": float(np.median(old_s / new_s)),
        "proofs": len(proofs),
        "proofs_one_test_decided": sum(r["proof_one_test"]["settled"] or r["proof_one_test"]["member"] for r in proofs),
        "proofs_chain_decided": sum(r["proof_chain"]["settled"] or r["proof_chain"]["member_at"] is not None for r in proofs),
    }
    print(json.dumps(summary, indent=1))
    with open(a.out, "w") as f:
        json.dump({"summary": summary, "rows": rows, "command": "python benchmarks/bench_consign_skip.py " + " ".join(sys.argv[1:])}, f, indent=1)


if __name__ == "__main__":
    main()
