"""CONSIGN (K = 2, 5) and pixel-wise APS on real MC-dropout samples: λ̂ per split, coverage,
and Chao1 / SEC / |correlation| against the number of draws S.

Input: a data directory written by ``segcp infer --samples N`` (``samples/<id>.npy`` of shape
(N, L, H, W), ``masks/<id>.npy`` label maps, ``segcp_export.json`` with the patient / near-
duplicate groups). Every image's score λ*_i is computed once per method (it does not depend on
the split); each split then takes the conformal quantile of its calibration scores (λ̂), counts
the test images whose score is ≤ λ̂ (coverage), and draws ``--draws`` segmentations per test
image from each calibrated set (metrics at S = 10, 100, ... from the first S of them, which are
i.i.d.). Test images for the draw metrics are capped by ``--max-draw-images`` (a seeded random
subset per split; coverage always uses every test image).

CONSIGN uses the paper's box by default; ``--boxes paper,normalized`` adds the normalised box
(segcp before issue 16) as further methods ("CONSIGN K=2 normalized", …) on the same splits, and
``--strategies lines,adam`` issue 16's membership search ("CONSIGN K=2 adam", …; the default is
the exact line searches of issue 28).

Usage (see docs/consign.md for the runs reported there)::

    python benchmarks/consign_real.py --data out/probs/acdc --out docs/results/consign-acdc \
        --splits 5 --n-cal 20 --alpha 0.1 --beta 0.9 --n-jobs 2

Writes ``results.json`` (every score, split and metric), ``report.md`` and ``diversity.png``.
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

from segcp import Case, ConformalSegmenter
from segcp.calibration import LossCurves, zero_one_curve
from segcp.cases import check_label_map, check_samples
from segcp.compare import load_groups
from segcp.engine.splits import random_cal_test_splits
from segcp.errors import SegcpError
from segcp.io import index_folder, read_array
from segcp.methods import SegmentationSetFamily, get_method
from segcp.metrics.diversity import chao1, mean_abs_correlation, sampled_coverage
from segcp.parallel import open_executor
from segcp.segsets.consign import SEARCH_STRATEGIES

METHODS: dict[str, dict[str, Any]] = {
    "CONSIGN K=2": {"method": "consign", "K": 2, "box": "paper"},
    "CONSIGN K=5": {"method": "consign", "K": 5, "box": "paper"},
    "APS": {"method": "aps"},
}


def set_boxes(boxes: list[str], strategies: tuple[str, ...] = ("lines",)) -> None:
    """The methods compared: CONSIGN K = 2, 5 for each box convention and membership-search
    strategy (``lines``, the default, unnamed; ``adam``: issue 16's search), then APS."""
    METHODS.clear()
    for box in boxes:
        for strategy in strategies:
            for K in (2, 5):
                name = f"CONSIGN K={K}" + ("" if box == "paper" else f" {box}") + ("" if strategy == "lines" else f" {strategy}")
                METHODS[name] = {"method": "consign", "K": K, "box": box} | ({} if strategy == "lines" else {"strategy": strategy})
    METHODS["APS"] = {"method": "aps"}


def make(name: str, alpha: float, beta: float) -> SegmentationSetFamily:
    """The set family of ``name``, bound to α (CONSIGN's box quantiles default to α)."""
    spec = dict(METHODS[name])
    method = spec.pop("method")
    return get_method(method, beta=beta, **spec).bind_alpha(alpha)  # type: ignore[return-value]


def calibrate_scores(family: SegmentationSetFamily, alpha: float, scores: np.ndarray) -> float:
    """λ̂ from calibration scores λ*_i (exact CRC on their 0/1 curves = the conformal quantile);
    a one-line SegcpError when too many are infinite or n is too small for α."""
    curves = LossCurves.concat([zero_one_curve(float(v)) for v in scores])
    return ConformalSegmenter(family, alpha).calibrate_curves(curves).lambda_


def load(sample_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray]:
    m, _ = read_array(mask_path)
    raw, _ = read_array(sample_path)
    x = check_samples(raw, str(sample_path), tuple(np.asarray(m).shape))
    return x, check_label_map(m, str(mask_path), x.shape[1])


def load_case(image_id: str, sample_path: Path, mask_path: Path) -> Case:
    x, truth = load(sample_path, mask_path)
    return Case(image_id, samples=x, label_map=truth)


def score_job(job: tuple[str, float, float, str, str, dict[str, Any]]) -> dict[str, Any]:
    """Scores of one image for every method, with timings (seconds)."""
    image_id, alpha, beta, sp, mp, methods = job
    METHODS.clear()
    METHODS.update(methods)
    case = load_case(image_id, Path(sp), Path(mp))
    out: dict[str, Any] = {"id": image_id, "shape": list(case.label_map.shape), "scores": {}, "seconds": {}}
    for name in METHODS:
        fam = make(name, alpha, beta)
        t0 = time.perf_counter()
        out["scores"][name] = float(fam.score(case))
        out["seconds"][name] = time.perf_counter() - t0
    return out


def draw_job(job: tuple[str, float, float, float, str, str, int, list[int], int, dict[str, Any]]) -> dict[str, Any]:
    """Draw metrics of one (method, image) at λ̂ for S in ``sizes``."""
    name, alpha, beta, lam, sp, mp, n_draws, sizes, seed, methods = job
    METHODS.clear()
    METHODS.update(methods)
    case = load_case("image", Path(sp), Path(mp))
    x, truth = case.samples, case.label_map
    fam = make(name, alpha, beta)
    t0 = time.perf_counter()
    draws = fam.sample(case, lam, n_draws, seed)
    t_draw = time.perf_counter() - t0
    res: dict[str, Any] = {"draw_seconds": t_draw}
    for s in sizes:
        d = draws[:s]
        res[str(s)] = {"chao": chao1(d), "sec": sampled_coverage(d, truth, beta), "correlation": mean_abs_correlation(d, x.shape[1])}
    return res


def _mean_sd(v: list[float]) -> tuple[float, float]:
    a = np.asarray([x for x in v if x is not None and math.isfinite(x)], dtype=float)
    if a.size == 0:
        return math.nan, math.nan
    return float(a.mean()), float(a.std(ddof=1)) if a.size > 1 else 0.0


def check_coverage(scores: dict[str, np.ndarray], groups: list[str], a: argparse.Namespace) -> dict[str, Any]:
    """The guarantee check: many more splits, from the per-image scores alone (cheap)."""
    coverage_check: dict[str, Any] = {}
    many = list(random_cal_test_splits(groups, a.n_cal, a.coverage_splits, seed=a.seed + 1))
    for name in METHODS:
        covs, lams, infeasible, marginal = [], [], 0, []
        for cal, test in many:
            try:
                lam = calibrate_scores(make(name, a.alpha, a.beta), a.alpha, scores[name][cal])
            except SegcpError:
                infeasible += 1
                # the largest set the method has (λ = ∞) still misses the unreachable truths
                marginal.append(float(np.mean(np.isfinite(scores[name][test]))))
                continue
            marginal.append(float(np.mean(scores[name][test] <= lam)))
            lams.append(lam)
            covs.append(float(np.mean(scores[name][test] <= lam)))
        c = np.asarray(covs)
        coverage_check[name] = {
            "splits": len(many),
            "infeasible": infeasible,
            "coverage": float(c.mean()) if c.size else math.nan,
            "coverage_se": float(c.std(ddof=1) / math.sqrt(c.size)) if c.size > 1 else math.nan,
            "lambda_median": float(np.median(lams)) if lams else math.nan,
            "coverage_marginal": float(np.mean(marginal)),
            "coverage_marginal_se": float(np.std(marginal, ddof=1) / math.sqrt(len(marginal))),
            "n_infinite_scores": int(np.sum(~np.isfinite(scores[name]))),
        }
        print(f"coverage check ({len(many)} splits): {name}: {coverage_check[name]}", flush=True)
    return coverage_check


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--splits", type=int, default=5)
    ap.add_argument("--n-cal", type=int, default=20)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--beta", type=float, default=0.9)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--sizes", default="10,100,1000")
    ap.add_argument("--max-draw-images", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--n-jobs", type=int, default=1)
    ap.add_argument("--coverage-splits", type=int, default=500, help="extra splits for the coverage check (scores only)")
    ap.add_argument("--title", default=None)
    ap.add_argument("--boxes", default="paper", help="CONSIGN box conventions, comma-separated: paper, normalized")
    ap.add_argument(
        "--strategies", default="lines", help="CONSIGN membership searches, comma-separated: lines (default), adam (issue 16's; rows marked adam)"
    )
    ap.add_argument("--report-only", action="store_true", help="re-run the coverage check and rewrite the report from OUT/results.json")
    a = ap.parse_args(argv)
    sizes = [int(s) for s in a.sizes.split(",")]
    boxes = [b.strip() for b in a.boxes.split(",") if b.strip()]
    if not boxes or any(b not in ("paper", "normalized") for b in boxes):
        print(f"consign_real: error: --boxes must list paper and/or normalized, got {a.boxes!r}", file=sys.stderr)
        return 2
    strategies = tuple(x.strip() for x in a.strategies.split(",") if x.strip())
    if not strategies or any(x not in SEARCH_STRATEGIES for x in strategies):
        print(f"consign_real: error: --strategies must list {' and/or '.join(SEARCH_STRATEGIES)}, got {a.strategies!r}", file=sys.stderr)
        return 2
    set_boxes(boxes, strategies)
    try:
        samples = index_folder(a.data / "samples")
        masks = index_folder(a.data / "masks")
    except (SegcpError, OSError) as e:
        print(f"consign_real: error: {e}", file=sys.stderr)
        return 2
    ids = sorted(samples)
    groups, group_source = load_groups(a.data, ids)
    if a.report_only:
        result = json.loads((a.out / "results.json").read_text())
        if [r["id"] for r in result["per_image"]] != ids:
            print(f"consign_real: error: {a.out / 'results.json'}: ids differ from {a.data}", file=sys.stderr)
            return 2
        a.seed, a.n_cal, a.alpha, a.beta = result["seed"], result["splits"][0]["n_cal"], result["alpha"], result["beta"]
        METHODS.clear()
        METHODS.update(
            result.get("methods")
            or {  # results written before the box option: normalised box
                "CONSIGN K=2": {"method": "consign", "K": 2, "box": "normalized"},
                "CONSIGN K=5": {"method": "consign", "K": 5, "box": "normalized"},
                "APS": {"method": "aps"},
            }
        )
        scores = {name: np.array([r["scores"][name] if r["scores"][name] is not None else math.inf for r in result["per_image"]]) for name in METHODS}
        result["coverage_check"] = check_coverage(scores, groups, a)
        (a.out / "results.json").write_text(json.dumps(result, indent=1))
        write_report(a.out, result, a.title or f"CONSIGN and APS on {a.data}")
        print(f"wrote {a.out / 'report.md'}")
        return 0
    t_start = time.perf_counter()
    print(f"{len(ids)} images; scores for {', '.join(METHODS)} ...", flush=True)
    jobs = [(i, a.alpha, a.beta, str(samples[i]), str(masks[i]), dict(METHODS)) for i in ids]
    with open_executor(workers=a.n_jobs, dask=False) as ex:  # n_jobs local processes (ordered results)
        per_image = [r for _, r in sorted(ex.imap(score_job, jobs, show_progress=False), key=lambda t: t[0])]
    t_scores = time.perf_counter() - t_start
    scores = {name: np.array([r["scores"][name] for r in per_image]) for name in METHODS}
    print(f"scores done in {t_scores:.0f} s", flush=True)

    coverage_check = check_coverage(scores, groups, a)

    rng = np.random.default_rng(a.seed)
    splits = list(random_cal_test_splits(groups, a.n_cal, a.splits, seed=a.seed))
    split_records = []
    for k, (cal, test) in enumerate(splits):
        rec: dict[str, Any] = {"split": k, "n_cal": len(cal), "n_test": len(test), "methods": {}}
        draw_idx = np.sort(rng.choice(test, size=min(len(test), a.max_draw_images), replace=False))
        for name in METHODS:
            try:
                lam = calibrate_scores(make(name, a.alpha, a.beta), a.alpha, scores[name][cal])
            except SegcpError as e:
                rec["methods"][name] = {"infeasible": str(e)}
                print(f"split {k}: {name}: infeasible ({e})", flush=True)
                continue
            covered = scores[name][test] <= lam
            m: dict[str, Any] = {"lambda": lam, "coverage": float(covered.mean())}
            djobs = [
                (name, a.alpha, a.beta, lam, str(samples[ids[i]]), str(masks[ids[i]]), a.draws, sizes, a.seed * 100003 + int(i), dict(METHODS))
                for i in draw_idx
            ]
            t0 = time.perf_counter()
            with open_executor(workers=a.n_jobs, dask=False) as ex:
                dres = [r for _, r in sorted(ex.imap(draw_job, djobs, show_progress=False), key=lambda t: t[0])]
            m["draw_wall_seconds"] = time.perf_counter() - t0
            m["draw_seconds_per_image"] = float(np.mean([d["draw_seconds"] for d in dres]))
            for s in sizes:
                for key in ("chao", "sec", "correlation"):
                    vals = [d[str(s)][key] for d in dres]
                    m[f"{key}@{s}"] = float(np.nanmean(vals)) if np.any(np.isfinite(vals)) else math.nan
            rec["methods"][name] = m
            print(
                f"split {k}: {name}: lambda {lam:.4f} coverage {m['coverage']:.3f} " + " ".join(f"SEC@{s} {m[f'sec@{s}']:.2f}" for s in sizes),
                flush=True,
            )
        split_records.append(rec)

    result = {
        "data": str(a.data),
        "methods": dict(METHODS),
        "n_images": len(ids),
        "groups": group_source,
        "alpha": a.alpha,
        "beta": a.beta,
        "draws": a.draws,
        "sizes": sizes,
        "max_draw_images": a.max_draw_images,
        "seed": a.seed,
        "n_jobs": a.n_jobs,
        "cpu_count": os.cpu_count(),
        "score_wall_seconds": t_scores,
        "per_image": per_image,
        "coverage_check": coverage_check,
        "splits": split_records,
        "total_seconds": time.perf_counter() - t_start,
    }
    a.out.mkdir(parents=True, exist_ok=True)
    tmp = a.out / "results.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(a.out / "results.json")
    write_report(a.out, result, a.title or f"CONSIGN and APS on {a.data}")
    print(f"wrote {a.out / 'report.md'}")
    return 0


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for name in METHODS:
        ms = [s["methods"][name] for s in result["splits"]]
        ok = [m for m in ms if "infeasible" not in m]
        row: dict[str, Any] = {"method": name, "infeasible": len(ms) - len(ok)}
        row["lambda"] = _mean_sd([m["lambda"] for m in ok])
        row["lambdas"] = [m["lambda"] for m in ok]
        row["coverage"] = _mean_sd([m["coverage"] for m in ok])
        for s in result["sizes"]:
            for key in ("chao", "sec", "correlation"):
                row[f"{key}@{s}"] = _mean_sd([m[f"{key}@{s}"] for m in ok])
        secs = [r["seconds"][name] for r in result["per_image"]]
        row["score_seconds"] = (float(np.mean(secs)), float(np.median(secs)))
        row["draw_seconds"] = _mean_sd([m["draw_seconds_per_image"] for m in ok])
        rows.append(row)
    return rows


def write_report(out: Path, result: dict[str, Any], title: str) -> None:
    rows = summary_rows(result)
    sizes = result["sizes"]
    n_test = [s["n_test"] for s in result["splits"]]
    n_cal = [s["n_cal"] for s in result["splits"]]
    alpha = result["alpha"]
    # Binomial SE of the mean coverage over splits (test sets overlap, so this is optimistic).
    lines = [
        f"# {title}",
        "",
        f"{result['n_images']} images (groups: {result['groups']}); {len(result['splits'])} random calibration/test "
        f"splits (calibration {min(n_cal)}–{max(n_cal)} images, test {min(n_test)}–{max(n_test)}), whole groups, "
        f"seed {result['seed']}; α = {alpha}, β = {result['beta']}. Coverage = fraction of test images whose "
        f"λ*_i ≤ λ̂ (every test image); Chao1 / SEC / |correlation| from {result['draws']} draws per image on "
        f"at most {result['max_draw_images']} test images per split, metrics at S draws from the first S. "
        "Mean ± std over splits. CONSIGN's box: "
        + ("the paper's (eq. 4–6; λ̂ on the scale of the paper's Table 3)" if "methods" in result else "segcp's old normalised box")
        + (
            "; the rows marked normalized use segcp's old normalised box (a different family, λ̂ ≈ Σ_11 × larger)"
            if any(v.get("box") == "normalized" for v in (result.get("methods") or {}).values())
            else ""
        )
        + (
            "; the rows marked adam use issue 16's membership search (projected Adam), the others the exact line searches of issue 28"
            if any(v.get("strategy") == "adam" for v in (result.get("methods") or {}).values())
            else ""
        )
        + ".",
        "",
        "| method | λ̂ | λ̂ per split | coverage | "
        + " | ".join(f"SEC@{s}" for s in sizes)
        + " | "
        + " | ".join(f"Chao@{s}" for s in sizes)
        + " | "
        + " | ".join(f"corr@{s}" for s in sizes)
        + " |",
        "|---|---|---|---|" + "---|" * (3 * len(sizes)),
    ]

    def pm(t: tuple[float, float], d: int = 3) -> str:
        return "–" if not math.isfinite(t[0]) else f"{t[0]:.{d}f} ± {t[1]:.{d}f}"

    for r in rows:
        cells = [
            r["method"] + (f" (infeasible in {r['infeasible']} splits)" if r["infeasible"] else ""),
            pm(r["lambda"]),
            ", ".join(f"{v:.3f}" for v in r["lambdas"]),
            pm(r["coverage"]),
        ]
        cells += [pm(r[f"sec@{s}"], 2) for s in sizes]
        cells += [pm(r[f"chao@{s}"], 0) for s in sizes]
        cells += [pm(r[f"correlation@{s}"], 3) for s in sizes]
        lines.append("| " + " | ".join(cells) + " |")
    cc = result.get("coverage_check")
    if cc:
        first = next(iter(cc.values()))
        lines += [
            "",
            f"**Guarantee check** over {first['splits']} further random splits (scores only; same n): mean test "
            f"coverage ± SE over the feasible splits (the guarantee: ≥ {1 - alpha:g} within 3 SE); infeasible = "
            "more than α(n+1) − 1 calibration truths are never in the set at any λ, so no finite λ̂ exists "
            "(segcp refuses to calibrate).",
            "",
            "| method | truths never in the set (of all images) | infeasible splits | coverage ± SE (feasible splits) | coverage ± SE (all splits, λ̂ = ∞ when infeasible) | median λ̂ |",
            "|---|---|---|---|---|---|",
        ]
        for name, c in cc.items():
            lines.append(
                f"| {name} | {c['n_infinite_scores']} / {result['n_images']} | {c['infeasible']} / {c['splits']} | "
                f"{c['coverage']:.3f} ± {c['coverage_se']:.3f} | "
                + (f"{c['coverage_marginal']:.3f} ± {c['coverage_marginal_se']:.3f}" if "coverage_marginal" in c else "–")
                + f" | {c['lambda_median']:.3f} |"
            )
    lines += [
        "",
        "Time per image (one process): λ*_i search mean / median "
        + "; ".join(f"{r['method']} {r['score_seconds'][0]:.2f} / {r['score_seconds'][1]:.2f} s" for r in rows)
        + f"; {result['draws']} draws "
        + "; ".join(f"{r['method']} {r['draw_seconds'][0]:.2f} s" for r in rows)
        + f". All scores: {result['score_wall_seconds']:.0f} s wall with {result['n_jobs']} process(es).",
        "",
        "![diversity](diversity.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    for r in rows:
        for ax, key in zip(axes, ("sec", "chao", "correlation")):
            m = [r[f"{key}@{s}"][0] for s in sizes]
            sd = [r[f"{key}@{s}"][1] for s in sizes]
            ax.errorbar(sizes, m, yerr=sd, marker="o", capsize=3, label=r["method"])
    axes[0].axhline(1 - alpha, color="k", ls=":", lw=1, label="1 − α")
    axes[0].set_ylabel("SEC (sampled empirical coverage)")
    axes[1].set_ylabel("Chao1 (distinct segmentations)")
    axes[1].set_yscale("log")
    axes[2].set_ylabel("mean |Pearson| between draws")
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("draws per image S")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out / "diversity.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
