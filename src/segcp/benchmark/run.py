"""`segcp benchmark`: the plan, its run, the summaries, the figures and the report files.

:func:`run_benchmark` reads a config, runs the plan against the cache
(:mod:`segcp.benchmark.runner`), summarises each table (mean ± std over splits, validity,
wins), draws the figures and writes, into one folder put in place whole:

``report.html`` (self-contained), ``report.md`` and the PNG figures it shows, ``results.json``
(everything, with the config, the provenance, the commit and the timings), ``results.csv``
(tidy: one row per task, method, calibration size, α, split and metric; the same rows are
results.json's ``results``) and ``config.toml``.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segcp._version import __version__
from segcp.benchmark import figures as F
from segcp.benchmark.cache import BenchmarkCache
from segcp.benchmark.config import BenchmarkConfig, load_config
from segcp.benchmark.report import Cell, Document, Figure, Table
from segcp.benchmark.runner import FamilyData, Plan, Runner, TaskPlan, run_plan
from segcp.compare import mean_std_text, summarize
from segcp.errors import SegcpError
from segcp.io import atomic_dir, check_output, read_json, to_jsonable, write_text
from segcp.io.datadir import data_inputs
from segcp.io.writers import check_dir_target
from segcp.metrics import METRICS
from segcp.specs import MethodSpec, TunedSpec

__all__ = ["RESULT_SCHEMA", "git_commit", "run_benchmark"]

RESULT_SCHEMA = "segcp.benchmark"
FIXED_FILES = ("report.html", "report.md", "results.json", "results.csv", "config.toml")
#: The columns of the tidy results (results.csv, and results.json's "results").
TIDY_COLUMNS = ["task", "method", "family", "n_cal", "alpha", "split", "metric", "value", "note"]


def git_commit() -> dict[str, Any]:
    """The commit of the segcp source this runs from (and whether the tree had changes)."""
    src = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], check=False, capture_output=True, text=True, timeout=10)
        if head.returncode != 0:
            return {"commit": None, "note": "not a git checkout"}
        status = subprocess.run(["git", "-C", str(src), "status", "--porcelain", "--untracked-files=no", "--", "."],
                                check=False, capture_output=True, text=True, timeout=10)
        return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "note": "git not available"}


# ---------------------------------------------------------------------------- formatting
def _f(v: Any, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return f"{v:.{digits}f}"


def _fnr_cell(row: dict[str, Any], alpha: float) -> Cell:
    f, se = row.get("fnr"), row.get("fnr_se")
    if f is None or not math.isfinite(f):
        return Cell("–")
    ok = row.get("valid")
    mark = "" if ok is None else (" ✓" if ok else " ⚠")
    return Cell(f"{f:.3f} ± {se:.3f}{mark}" if se is not None and math.isfinite(se) else f"{f:.3f}{mark}",
                title=f"mean test FNR over splits ± its standard error; ✓: ≤ α + 3 SE = {alpha + 3 * (se or 0):.3f}")


def _validity_cell(v: dict[str, Any] | None) -> Cell:
    if not v or not math.isfinite(v.get("fnr", math.nan)):
        return Cell("–")
    ok = v["fnr"] <= v["alpha"] + 3 * (v["fnr_se"] if math.isfinite(v["fnr_se"]) else 0)
    inf = f" ({v['infeasible']} infeasible)" if v.get("infeasible") else ""
    return Cell(f"{v['fnr']:.3f} ± {v['fnr_se']:.4f} {'✓' if ok else '⚠'}{inf}",
                title=f"mean test FNR over {v['splits']} random splits from the loss curves, ± its standard error")


def _best(rows: list[dict[str, Any]], key: str, higher: bool) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None and math.isfinite(r[key])]
    if not vals:
        return None
    return max(vals) if higher else min(vals)


def _is_best(r: dict[str, Any], key: str, best: float | None, digits: int) -> bool:
    v = r.get(key)
    return best is not None and v is not None and math.isfinite(v) and round(v, digits) == round(best, digits)


# ---------------------------------------------------------------------------- summaries
def _summary(records: list[dict[str, Any]], n_cal: int, methods: Sequence[str], alphas: Sequence[float] | None = None) -> dict[tuple[str, float], dict[str, Any]]:
    recs = [r for r in records if r["n_cal"] == n_cal and r["method"] in methods and (alphas is None or r["alpha"] in alphas)]
    for r in recs:
        for m in METRICS:
            r.setdefault(m, math.nan)
    return {(s["method"], s["alpha"]): s for s in summarize(recs)}


def _wins(records: list[dict[str, Any]], n_cal: int, alpha: float, methods: Sequence[str], key: str, higher: bool) -> dict[str, float]:
    """Fraction of splits in which each method has the best value of ``key`` (ties: each wins)."""
    by_split: dict[int, dict[str, float]] = {}
    for r in records:
        if r["n_cal"] == n_cal and r["alpha"] == alpha and r["method"] in methods and "infeasible" not in r and math.isfinite(r.get(key, math.nan)):
            by_split.setdefault(r["split"], {})[r["method"]] = r[key]
    wins = {m: 0 for m in methods}
    for vals in by_split.values():
        if len(vals) < 2:
            continue
        best = max(vals.values()) if higher else min(vals.values())
        for m, v in vals.items():
            wins[m] += v == best
    n = sum(len(v) >= 2 for v in by_split.values())
    return {m: (w / n if n else math.nan) for m, w in wins.items()}


def _model_summary(model: list[dict[str, Any]], n_cal: int) -> dict[str, float]:
    rows = [r for r in model if r["n_cal"] == n_cal]
    out: dict[str, float] = {}
    for m in METRICS:
        v = np.array([r[m] for r in rows], dtype=float)
        v = v[np.isfinite(v)]
        out[m] = float(v.mean()) if v.size else math.nan
        out[f"{m}_std"] = float(v.std(ddof=1)) if v.size > 1 else math.nan
    return out


# ---------------------------------------------------------------------------- the report of one task
class TaskReport:
    """Tables and figures of one task, from its records (and, for figures, its cached maps)."""

    def __init__(self, cfg: BenchmarkConfig, tp: TaskPlan, res: dict[str, Any], runner: Runner, draw: bool = True) -> None:
        self.cfg, self.tp, self.res, self.runner = cfg, tp, res, runner
        self.draw = draw  # False: tables only (no figures)
        self.task = tp.task
        self.units = tp.task.units
        self.slug = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in tp.task.name)
        self.mask_main = [r for r in tp.rows if r.kind == "mask" and r.main]
        self.sets_rows = [r for r in tp.rows if r.kind == "sets"]
        self.records = res["records"]
        self.figs: list[Figure] = []
        self.summary_rows: list[dict[str, Any]] = []

    def fig(self, name: str, png: bytes | Any, caption: str) -> Figure:
        f = Figure(f"{self.slug}-{name}.png", png, caption)
        self.figs.append(f)
        return f

    # ------------------------------------------------------------------ Table 1
    def table1(self) -> Table | None:
        if not self.mask_main:
            return None
        cfg = self.cfg
        methods = [r.label for r in self.mask_main]
        summ = _summary(self.records, cfg.n_cal, methods, cfg.alphas)
        validity = {(v["method"], v["alpha"]): v for v in self.res["validity"]}
        u = self.units
        header = ["method", "α", "λ̂", "coverage", "stretch", "DSC", f"ASSD ({u})", f"HD95 ({u})", "test FNR ± SE",
                  f"FNR, {cfg.validity_splits} splits", "wins DSC", "wins HD95"]
        rows: list[list[Cell | str]] = []
        model = _model_summary(self.res.get("model", []), cfg.n_cal)
        rows.append([Cell("base model (p ≥ 0.5)"), "–", "–", mean_std_text(model, "coverage"), "1", mean_std_text(model, "dice"), mean_std_text(model, "assd", 2),
                     mean_std_text(model, "hd95", 2), f"{model['fnr']:.3f}" if math.isfinite(model["fnr"]) else "–", "", "", ""])
        for a in cfg.alphas:
            block = [summ[(m, a)] for m in methods if (m, a) in summ]
            wd = _wins(self.records, cfg.n_cal, a, methods, "dice", True)
            wh = _wins(self.records, cfg.n_cal, a, methods, "hd95", False)
            feasible = [s for s in block if not s["infeasible"]] or block  # a row with infeasible splits has conditional means
            best = {k: _best(feasible, k, k == "dice") for k in ("stretch", "dice", "assd", "hd95")}
            for s in block:
                m = s["method"]
                name = m + (f" (infeasible in {s['infeasible']}/{s['splits']} splits)" if s["infeasible"] else "")
                ok = s in feasible
                rows.append([
                    Cell(name), f"{a:g}", mean_std_text(s, "lambda"), mean_std_text(s, "coverage"),
                    Cell(mean_std_text(s, "stretch", 2), ok and _is_best(s, "stretch", best["stretch"], 2)),
                    Cell(mean_std_text(s, "dice"), ok and _is_best(s, "dice", best["dice"], 3)),
                    Cell(mean_std_text(s, "assd", 2), ok and _is_best(s, "assd", best["assd"], 2)),
                    Cell(mean_std_text(s, "hd95", 2), ok and _is_best(s, "hd95", best["hd95"], 2)),
                    _fnr_cell(s, a), _validity_cell(validity.get((m, a))),
                    _f(100 * wd.get(m, math.nan), 0) + " %" if math.isfinite(wd.get(m, math.nan)) else "–",
                    _f(100 * wh.get(m, math.nan), 0) + " %" if math.isfinite(wh.get(m, math.nan)) else "–",
                ])
                self.summary_rows.append(dict(s, task=self.task.name, n_cal=cfg.n_cal, wins_dice=wd.get(m), wins_hd95=wh.get(m),
                                              validity=validity.get((m, a))))
        chosen = [(s["method"], s["alpha"], s["chosen"]) for s in summ.values() if s.get("chosen")]
        note = (
            f"Mean ± std over {cfg.splits} random calibration/test splits (n = {cfg.n_cal} calibration images, whole groups) of the "
            "per-split mean over test images. Bold: best of the α block (lowest stretch, ASSD, HD95; highest DSC) among the rows "
            "feasible on every split; coverage is set by α and has no best. test FNR ± SE: over the splits; ✓ when ≤ α + 3 SE (the guarantee E[FNR] ≤ α), ⚠ otherwise. "
            f"FNR, {cfg.validity_splits} splits: the same check (± SE) over many more random splits, from the loss curves alone. "
            "wins: fraction of splits in which the row has the best DSC (highest) / HD95 (lowest) of the α block. Infeasible "
            "splits (no λ meets the bound) are left out of the means, so such a row's check is conditional on feasibility. "
            "λ̂ is in each family's units: one minus a probability level (Standard CRC, RW-CP), dilation steps (Consema). Tuned "
            "rows choose their setting per split on the calibration images, so the curves-only check (which needs no images) is "
            "not made for them."
        )
        if chosen:
            note += " Settings chosen by cross-validation on the calibration images: " + "; ".join(
                f"{m} at α = {a:g}: " + ", ".join(f"{k} ({v})" for k, v in c.items()) for m, a, c in chosen) + "."
        return Table(f"Table 1 — {self.task.name}: sets at α ∈ {{{', '.join(f'{a:g}' for a in cfg.alphas)}}}", header, rows, note)

    # ------------------------------------------------------------------ ablations
    def table_ncal(self) -> Table | None:
        ab = self.cfg.ablation
        if ab is None or not ab.n_cal:
            return None
        methods = [r.label for r in self.mask_main if ab.n_cal_methods is None or r.label in ab.n_cal_methods]
        u = self.units
        header = ["method", "n", "λ̂", "coverage", "stretch", "DSC", f"ASSD ({u})", f"HD95 ({u})", "test FNR ± SE"]
        rows: list[list[Cell | str]] = []
        for m in methods:
            for n in self.tp.n_cal_values:
                s = _summary(self.records, n, [m], [ab.alpha]).get((m, ab.alpha))
                if s is None:
                    continue
                name = m + (f" (infeasible in {s['infeasible']}/{s['splits']})" if s["infeasible"] else "")
                rows.append([name, str(n), mean_std_text(s, "lambda"), mean_std_text(s, "coverage"), mean_std_text(s, "stretch", 2), mean_std_text(s, "dice"), mean_std_text(s, "assd", 2),
                             mean_std_text(s, "hd95", 2), _fnr_cell(s, ab.alpha)])
        skipped = [x for x in self.tp.notes if x.startswith("calibration size")]
        return Table(f"Table 2 — {self.task.name}: calibration size n at α = {ab.alpha:g}", header, rows,
                     f"Mean ± std over {self.cfg.splits} splits with n calibration images each (the rest is the test part). " + " ".join(skipped))

    def param_tables(self) -> list[tuple[Table, Figure | None]]:
        ab = self.cfg.ablation
        if ab is None or not ab.params:
            return []
        out = []
        u = self.units
        numbers = {"kernel_beta": "Table 3", "steps": "Table 4", "k": "Fig. 3 data"}
        for param in ab.params:
            rows_p = [r for r in self.tp.rows if r.ablation is not None and r.ablation[0] == param]
            if not rows_p:
                continue
            header = [param, "row", "λ̂", "coverage", "stretch", "DSC", f"ASSD ({u})", f"HD95 ({u})", "test FNR ± SE", "score map, CPU s / image"]
            summ = []
            for r in rows_p:
                s = _summary(self.records, self.cfg.n_cal, [r.label], [ab.alpha]).get((r.label, ab.alpha))
                summ.append((r, s))
            ok = [s for _, s in summ if s is not None and not s["infeasible"]] or [s for _, s in summ if s is not None]
            best = {k: _best(ok, k, k == "dice") for k in ("stretch", "dice", "assd", "hd95")}
            rows: list[list[Cell | str]] = []
            stats: dict[str, list[float]] = {k: [] for k in ("dice", "dice_std", "hd95", "hd95_std", "seconds")}
            vals = []
            for r, s in summ:
                secs = self.res["seconds_per_image"].get(r.label, math.nan)
                if s is None:
                    continue
                vals.append(r.ablation[1])  # type: ignore[index]
                for k in ("dice", "dice_std", "hd95", "hd95_std"):
                    stats[k].append(s.get(k, math.nan))
                stats["seconds"].append(secs)
                rows.append([str(r.ablation[1]), "base row" if r.label == r.base else r.label, mean_std_text(s, "lambda"), mean_std_text(s, "coverage"),  # type: ignore[index]
                             Cell(mean_std_text(s, "stretch", 2), _is_best(s, "stretch", best["stretch"], 2)), Cell(mean_std_text(s, "dice"), _is_best(s, "dice", best["dice"], 3)),
                             Cell(mean_std_text(s, "assd", 2), _is_best(s, "assd", best["assd"], 2)), Cell(mean_std_text(s, "hd95", 2), _is_best(s, "hd95", best["hd95"], 2)),
                             _fnr_cell(s, ab.alpha), _f(secs, 3)])
            name = numbers.get(param, "Table")
            base = rows_p[0].base
            t = Table(f"{name} — {self.task.name}: {base} with {param} varied, α = {ab.alpha:g}", header, rows,
                      f"Mean ± std over {self.cfg.splits} splits (n = {self.cfg.n_cal}). Time: CPU seconds per image to compute the score "
                      "map (graph and diffusion, single-threaded; the encoder features were computed before, once for every row), "
                      "measured when the map was first computed (CPU time, so that a shared machine's load does not enter it).")
            fig = None
            if len(vals) >= 2 and self.draw:
                title = f"{'Fig. 3 — ' if param == 'k' else ''}{self.task.name}: {base}, {param} varied (α = {ab.alpha:g})"
                fig = self.fig(f"ablation-{param}", F.ablation_figure(param, vals, stats, u, self.cfg.figures.dpi, title),
                               f"{title}: mean Dice and HD95 (± std over splits) and the time per image of the score map.")
            out.append((t, fig))
        return out

    # ------------------------------------------------------------------ figures of the main rows
    def dice_curve(self) -> Figure | None:
        if not self.draw:
            return None
        cfg = self.cfg
        alphas = sorted(set(cfg.alphas) | set(cfg.curve_alphas))
        if not self.mask_main or len(alphas) < 2:
            return None
        methods = [r.label for r in self.mask_main]
        summ = _summary(self.records, cfg.n_cal, methods, alphas)
        curves = {m: [(a, summ[(m, a)]["dice"], summ[(m, a)]["dice_std"]) for a in alphas if (m, a) in summ] for m in methods}
        model = _model_summary(self.res.get("model", []), cfg.n_cal)
        title = f"Fig. 2 — {self.task.name}: mean Dice against 1 − α (base model: {model['dice']:.3f})"
        return self.fig("dice-vs-alpha", F.dice_curve_figure(curves, cfg.figures.dpi, title),
                        f"{title}. Shaded: ± std over {cfg.splits} splits.")

    def validity_fig(self) -> Figure | None:
        if not self.draw:
            return None
        if not self.res["validity"]:
            return None
        rows: dict[str, list[tuple[float, float, float]]] = {}
        for v in self.res["validity"]:
            rows.setdefault(v["method"], []).append((v["alpha"], v["fnr"], v["fnr_se"]))
        title = f"{self.task.name}: mean test FNR over {self.cfg.validity_splits} random splits"
        return self.fig("validity", F.validity_figure(rows, self.cfg.figures.dpi, title),
                        f"{title} (from the loss curves; bars ± 3 SE). The guarantee is E[FNR] ≤ α: points on or below the dashed line.")

    def _split0_lambdas(self, alpha: float) -> dict[str, tuple[float, str | None]]:
        out = {}
        for r in self.records:
            main = r["n_cal"] == self.cfg.n_cal and r["split"] == 0 and r["alpha"] == alpha and r["method"] in [x.label for x in self.mask_main]
            if main and math.isfinite(r.get("lambda", math.nan)):
                out[r["method"]] = (r["lambda"], r.get("chosen"))
        return out

    def _family_of(self, label: str, chosen: str | None) -> FamilyData | None:
        row = next(r for r in self.mask_main if r.label == label)
        spec = row.spec
        if isinstance(spec, TunedSpec):
            name = (chosen or "").split(" (fallback")[0]
            spec = next((c for c in spec.candidates if c.label == name), spec.candidates[0])
        assert self.tp.mask_view is not None
        return FamilyData(spec, self.tp.mask_view, self.runner.cache, self.runner)

    def overlays(self) -> list[Figure]:
        if not self.draw:
            return []
        cfg = self.cfg
        view = self.tp.mask_view
        if not self.mask_main or view is None:
            return []
        alphas = sorted(set(cfg.alphas) | set(cfg.curve_alphas), key=lambda a: abs(a - cfg.figures.overlay_alpha))
        alpha = alphas[0]
        lams = self._split0_lambdas(alpha)
        methods = [r.label for r in self.mask_main if r.label in lams]
        if not methods:
            return []
        fams = {m: self._family_of(m, lams[m][1]) for m in methods}
        test = [int(i) for i in self.tp.splits[cfg.n_cal][0][1]]
        cases = {i: view.case(i) for i in test}
        test = [i for i in test if cases[i].mask.any()]
        dice: dict[str, dict[int, float]] = {m: {} for m in methods}
        for m in methods:
            fd = fams[m]
            for i in test:
                from segcp.benchmark.evaluate import MaskEvaluator

                dice[m][i] = MaskEvaluator(fd.scores(i), cases[i].mask, cases[i].model_mask).overlap(lams[m][0])["dice"]  # type: ignore[union-attr]
        ref = next((m for m in methods if _spec_method(self.mask_main, m) == "threshold"), methods[0])
        cmp_ = next((m for m in methods if _spec_method(self.mask_main, m) == "rwcp"), None)
        k = cfg.figures.overlay_images
        if cmp_ is not None and cmp_ != ref:
            gain = sorted(test, key=lambda i: dice[cmp_][i] - dice[ref][i])
            picks = [(gain[-1], "largest gain"), (gain[len(gain) // 2], "median"), (gain[0], "largest loss")]
        else:
            order = sorted(test, key=lambda i: dice[ref][i])
            picks = [(order[-1], "best"), (order[len(order) // 2], "median"), (order[0], "worst")]
        seen: list[int] = []
        chosen: list[tuple[int, str]] = []
        for i, why in picks:
            if i not in seen:
                seen.append(i)
                chosen.append((i, why))
        chosen = chosen[:k]
        diffused = [m for m in methods if _spec_method(self.mask_main, m) == "rwcp"]
        panels = []
        for i, why in chosen:
            c = cases[i]
            panels.append({
                "id": c.id, "note": why, "image": None if c.image is None else np.asarray(c.image, dtype=float),
                "truth": c.mask, "probs": np.asarray(c.probs, dtype=float),
                "sets": {m: fams[m].scores(i) <= lams[m][0] for m in methods},  # type: ignore[union-attr]
                "maps": {m: 1.0 - fams[m].scores(i) for m in diffused},  # type: ignore[union-attr]
                "dice": {m: dice[m][i] for m in methods},
            })
        title = f"Fig. 1 — {self.task.name}: sets at α = {alpha:g} (split 0), truth contour in yellow"
        out = [self.fig("overlays", F.overlay_figure(panels, methods, diffused, cfg.figures.dpi, title),
                        f"{title}. Columns: the image, the truth, each method's calibrated set (blue), the model's raw probability and the "
                        "diffused probability of each RW-CP row. Rows: test images of split 0 chosen by the Dice difference "
                        f"{cmp_ or ref} − {ref} (largest gain, median, largest loss)." if cmp_ else
                        f"{title}. Columns: the image, the truth, each method's calibrated set (blue) and the model's raw probability. "
                        f"Rows: test images of split 0 with the best, median and worst Dice of {ref}.")]
        # set size against λ for the first image: the sensitivity diffusion is meant to remove
        i = chosen[0][0]
        c = cases[i]
        n_model = int(np.count_nonzero(c.model_mask)) or int(np.count_nonzero(c.mask))
        grid = np.unique(np.concatenate([np.linspace(0, 1, 201), 1 - np.logspace(-4, -1, 120)]))
        curves = {}
        marks: dict[str, list[tuple[float, float]]] = {}
        for m in methods:
            fam = fams[m].fam  # type: ignore[union-attr]
            if getattr(fam, "lambda_max", None) != 1.0:
                continue
            srt = np.sort(fams[m].scores(i), axis=None)  # type: ignore[union-attr]
            curves[m] = (grid, np.searchsorted(srt, grid, side="right") / n_model)
            marks[m] = []
            for a in cfg.alphas:
                lm = self._split0_lambdas(a).get(m)
                if lm is not None:
                    marks[m].append((a, lm[0]))
        for fd in fams.values():
            if fd is not None:
                fd.release()
        if curves:
            title = f"{self.task.name} · {c.id}: set size against λ"
            out.append(self.fig("set-size-vs-lambda", F.set_size_figure(curves, marks, cfg.figures.dpi, title),
                                f"{title}. |C_λ| relative to the model's mask (p ≥ 0.5), for the families whose λ is one minus a "
                                "probability level (left: λ; right: the probability level 1 − λ on a log scale). Where a curve is steep, "
                                "the small changes of λ̂ from one calibration set to another change the set a lot: the sensitivity that "
                                "diffusing the probabilities is meant to remove. Dotted: λ̂ of split 0 at α ∈ "
                                f"{{{', '.join(f'{a:g}' for a in cfg.alphas)}}}."))
        return out

    # ------------------------------------------------------------------ sets of segmentations
    def sets_tables(self) -> list[Table]:
        if not self.sets_rows:
            return []
        sc = self.cfg.sets
        recs = self.res["sets_records"]
        header = ["method", "α", "λ̂ (mean ± std)", "coverage (test)", "infeasible splits", f"coverage over {sc.validity_splits} splits ± SE",
                  "truths never in the set", "λ* CPU s / image", "draws CPU s / image"]
        rows: list[list[Cell | str]] = []
        div_rows: list[list[Cell | str]] = []
        val = {(v["method"], v["alpha"]): v for v in self.res["sets_validity"]}
        lam_rows: list[list[Cell | str]] = []
        n_splits = len(self.tp.sets_splits)
        n_images = len(self.tp.sets_view) if self.tp.sets_view is not None else 0
        for r in self.sets_rows:
            for a in sc.alphas:
                rr = [x for x in recs if x["method"] == r.label and x["alpha"] == a]
                ok = [x for x in rr if "infeasible" not in x]

                def ms(key: str, digits: int = 3, ok: list[dict[str, Any]] = ok) -> str:
                    v = np.array([x.get(key, math.nan) for x in ok], dtype=float)
                    v = v[np.isfinite(v)]
                    if not v.size:
                        return "–"
                    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}" if v.size > 1 else f"{v.mean():.{digits}f}"

                v = val.get((r.label, a), {})
                cov = v.get("coverage", math.nan)
                cov_cell = "–" if not math.isfinite(cov) else (
                    f"{cov:.3f} ± {v['coverage_se']:.3f} {'✓' if cov >= 1 - a - 3 * v['coverage_se'] else '⚠'}"
                    + (f" ({v['infeasible']} infeasible; all splits, λ̂ = ∞ there: {v['coverage_all']:.3f})" if v.get("infeasible") else ""))
                rows.append([r.label, f"{a:g}", ms("lambda"), ms("coverage"), f"{len(rr) - len(ok)}/{len(rr)}", cov_cell,
                             f"{v.get('never', 0)}/{n_images}", _f(self.res["seconds_per_image"].get(f"{r.label} (α={a:g})"), 2),
                             ms("draw_cpu_seconds_per_image", 2)])
                for S in sc.sizes:
                    div_rows.append([r.label, f"{a:g}", str(S), ms(f"sec@{S}", 2), ms(f"chao@{S}", 0), ms(f"correlation@{S}")])
                lam_rows.append([r.label, f"{a:g}"] + [_f(x.get("lambda"), 3) if "infeasible" not in x else "infeasible" for x in sorted(rr, key=lambda x: x["split"])])
        t1 = Table(
            f"{self.task.name}: sets of segmentations (CONSIGN, pixel-wise APS), {n_splits} splits of {n_images} images", header, rows,
            "λ̂: the calibrated box scale (CONSIGN) or class-mass level (APS); mean ± std over splits. coverage (test): fraction of a "
            "split's test images whose truth is in the set up to β (exact membership). coverage over many splits: the guarantee "
            "P(truth in set) ≥ 1 − α, from the scores alone (✓: mean ≥ 1 − α − 3 SE), over the feasible splits; a split is infeasible "
            "when more than α(n+1) − 1 calibration truths are never in the set at any λ. CPU seconds per image: the score λ* "
            f"(membership search) and {sc.draws} draws.",
        )
        t2 = Table(f"{self.task.name}: the drawn segmentations against the number of draws S", ["method", "α", "S", "SEC", "Chao1", "|corr|"], div_rows,
                   f"Mean ± std over splits of the mean over {sc.draw_images} test images per split: SEC, whether a draw among the first S "
                   "agrees with the truth up to β; Chao1, the estimated number of distinct segmentations; |corr|, the mean absolute "
                   "correlation between draws (CONSIGN's Figs. 2–4).")
        t3 = Table(f"{self.task.name}: λ̂ per split (CONSIGN's Tables 3/4)", ["method", "α"] + [f"split {s}" for s in range(n_splits)], lam_rows)
        return [t1, t2, t3]

    def sets_figures(self) -> list[Figure]:
        if not self.draw:
            return []
        if not self.sets_rows:
            return []
        sc = self.cfg.sets
        a = sc.alphas[0]
        recs = [x for x in self.res["sets_records"] if x["alpha"] == a and "infeasible" not in x]
        curves: dict[str, dict[str, list[tuple[int, float, float]]]] = {}
        for r in self.sets_rows:
            rr = [x for x in recs if x["method"] == r.label]
            mets: dict[str, list[tuple[int, float, float]]] = {}
            for key in ("chao", "sec", "correlation"):
                for S in sc.sizes:
                    v = np.array([x.get(f"{key}@{S}", math.nan) for x in rr], dtype=float)
                    v = v[np.isfinite(v)]
                    if v.size:
                        mets.setdefault(key, []).append((S, float(v.mean()), float(v.std(ddof=1)) if v.size > 1 else 0.0))
            curves[r.label] = mets
        out = []
        title = f"{self.task.name}: drawn segmentations against the number of draws S (α = {a:g})"
        out.append(self.fig("sets-diversity", F.diversity_figure(curves, self.cfg.figures.dpi, title),
                            f"{title} — CONSIGN's Figs. 2–4: Chao1, SEC and mean |correlation|, mean ± std over splits; CONSIGN (K = 2, 5) "
                            "against pixel-wise APS when all are in the plan."))
        # a row of draws from each calibrated set, for one test image of split 0
        view = self.tp.sets_view
        assert view is not None
        rec0 = {x["method"]: x for x in recs if x["split"] == 0}
        if not rec0:
            return out
        candidates = next(iter(rec0.values()))["draw_images"]
        ident, case = candidates[0], view.case(view.ids.index(candidates[0]))
        for c_id in candidates:  # the first drawn image whose truth has a structure
            c = view.case(view.ids.index(c_id))
            if np.any(c.label_map > 0):
                ident, case = c_id, c
                break
        draws = {}
        from segcp.conformal import ConformalSegmenter  # noqa: F401

        for r in self.sets_rows:
            if r.label not in rec0:
                continue
            assert isinstance(r.spec, MethodSpec)
            fam = r.spec.estimator(a).family.bind_alpha(a)
            draws[r.label] = fam.sample(fam.prepare(case), rec0[r.label]["lambda"], sc.show_draws, np.random.default_rng([self.cfg.seed, 5]))
        x = case.samples if case.samples is not None else case.class_probs
        mean = (x.mean(axis=0) if case.samples is not None else x).argmax(axis=0)
        n_labels = int(x.shape[1] if case.samples is not None else x.shape[0])
        image = self.task.image_of(ident) if hasattr(self.task, "image_of") else None
        title = f"{self.task.name} · {ident}: draws from each calibrated set (α = {a:g}, split 0)"
        out.append(self.fig("sets-draws", F.draws_figure(image, case.label_map, mean, draws, n_labels, self.cfg.figures.dpi, title),
                            f"{title} — CONSIGN's Fig. 5: the truth, the argmax of the mean softmax and {sc.show_draws} draws per set."))
        return out


def _spec_method(rows: Sequence[Any], label: str) -> str | None:
    for r in rows:
        if r.label == label:
            spec = r.spec
            return spec.method if isinstance(spec, MethodSpec) else spec.candidates[0].method
    return None


# ---------------------------------------------------------------------------- the documents
def _provenance_lines(tp: TaskPlan) -> list[str]:
    p = tp.task.provenance
    lines = [f"**{tp.task.name}** — {tp.task.title}", f"data: `{p.get('data')}` ({p.get('kind')})"]
    view = tp.mask_view or tp.sets_view
    if view is not None:
        lines.append(f"{len(view)} images in {len(set(view.groups))} groups; groups from {p.get('groups_from', 'none (each image its own group)')}")
    if tp.sets_view is not None and tp.mask_view is not None and len(tp.sets_view) != len(tp.mask_view):
        lines.append(f"sets of segmentations on the first {len(tp.sets_view)} images (whole groups)")
    inf = p.get("infer") or {}
    src = inf.get("source") or {}
    if src:
        lines.append(f"model outputs: `segcp infer --task {src.get('task')} --split {src.get('split')}` (split seed {src.get('split_seed')})"
                     + (f", {inf['samples'].get('n')} {inf['samples'].get('scheme')} samples" if inf.get("samples") else ""))
    for m in p.get("models", []):
        lines.append(f"model: `{m.get('path')}` (task {m.get('task')}, dropout {m.get('dropout')}, seed {m.get('seed')}, "
                     f"validation Dice {_f(m.get('val_dice'))}, segcp {m.get('segcp_version')})")
    d = p.get("model_dice") or {}
    if d:
        lines.append(f"model Dice at threshold {d.get('threshold')}: pool {_f(d.get('mean'))}, calibration part {_f(d.get('calibration'))}, "
                     f"test part {_f(d.get('test'))}")
    ex = p.get("export") or {}
    if ex:
        lines.append(f"images and truth: `segcp` export of task {ex.get('task')} ({ex.get('dataset')}, label {ex.get('label')}) from "
                     f"`{ex.get('root')}`, part {ex.get('part')}, seed {ex.get('seed')}")
    lines.append(f"distances in {tp.task.units}" + (" (the files store no spacing)" if tp.task.units == "pixels" else " (the data's spacing)"))
    lines += [f"note: {n}" for n in tp.notes]
    return lines


def build_documents(cfg: BenchmarkConfig, plan: Plan, results: list[dict[str, Any]], runner: Runner, meta: dict[str, Any],
                    draw: bool = True) -> tuple[Document, list[dict[str, Any]]]:
    doc = Document(cfg.title)
    doc.section("first")
    doc.h(1, cfg.title)
    if cfg.description:
        doc.p(cfg.description)
    commit = meta["commit"]
    ctext = commit.get("commit") or f"unknown ({commit.get('note')})"
    if commit.get("dirty"):
        ctext += " with uncommitted changes"
    doc.p(f"segcp {__version__}, commit `{ctext}`; run {meta['started']} on {meta['machine']}; computed in {meta['seconds']:.0f} s "
          f"(cache `{meta['cache']['root']}`: {meta['cache']['hits']['records']} split records reused, {meta['cache']['misses']['records']} computed).")
    doc.p(f"Command: `{meta['command']}`")
    doc.h(3, "Data")
    for tp in plan.tasks:
        doc.items(_provenance_lines(tp))
    doc.h(3, "Plan")
    doc.items([
        f"{cfg.splits} random calibration/test splits per task (seed {cfg.seed}), whole groups on one side; calibration size n = {cfg.n_cal}",
        f"α ∈ {{{', '.join(f'{a:g}' for a in cfg.alphas)}}} (Table 1); Dice curve at α ∈ {{{', '.join(f'{a:g}' for a in sorted(set(cfg.alphas) | set(cfg.curve_alphas)))}}}",
        "methods: " + "; ".join(f"`{m.text}`" for m in cfg.methods),
    ] + ([f"ablations at α = {cfg.ablation.alpha:g}: n ∈ {list(cfg.ablation.n_cal)}; " + "; ".join(f"{k} ∈ {list(v)}" for k, v in cfg.ablation.params.items())]
         if cfg.ablation else []))
    doc.pre(cfg.text, None)
    summaries: list[dict[str, Any]] = []
    for tp, res in zip(plan.tasks, results):
        tr = TaskReport(cfg, tp, res, runner, draw)
        doc.section("task")
        doc.h(2, f"{tp.task.name}: {tp.task.title}", anchor=f"task-{tr.slug}")
        t1 = tr.table1()
        if t1 is not None:
            doc.table(t1)
            for f in tr.overlays():
                doc.figure(f)
            for f in (tr.dice_curve(), tr.validity_fig()):
                if f is not None:
                    doc.figure(f)
        tn = tr.table_ncal()
        pts = tr.param_tables()
        if tn is not None or pts:
            doc.h(3, f"{tp.task.name}: ablations")
            if tn is not None:
                doc.table(tn)
            for t, f in pts:
                doc.table(t)
                if f is not None:
                    doc.figure(f)
        sets_t = tr.sets_tables()
        if sets_t:
            doc.h(3, f"{tp.task.name}: sets of segmentations")
            for t in sets_t:
                doc.table(t)
            for f in tr.sets_figures():
                doc.figure(f)
        fails = res.get("failures", [])
        if fails:
            doc.p(f"**{len(fails)} image score(s) failed with an internal error** and count as never in the set (score +∞; this can "
                  "only make the calibrated sets larger and the measured coverage lower):")
            doc.items([f"{f['method']} (α = {f['alpha']:g}), {f['image']}: {f['error']}" for f in fails])
        if tp.notes:
            doc.items([f"note: {n}" for n in tp.notes])
        summaries += tr.summary_rows
    doc.section("appendix")
    doc.h(2, "Run", anchor="run")
    doc.p(f"Seconds per stage in this run ({meta['jobs']} worker process(es); CPU: this process only; work found in the cache costs "
          "only its reading):")
    doc.table(Table("timings", ["stage", "wall s", "CPU s"], [[k, f"{v:.1f}", _f(meta["cpu"].get(k), 1)] for k, v in meta["timings"].items()]))
    if meta.get("features"):
        doc.p("Encoder features computed or read in this run: " + "; ".join(
            f"{v['images']} images in {v['seconds']:.1f} s" for v in meta["features"].values()))
    return doc, summaries


def tidy_rows(results: list[dict[str, Any]], plan: Plan) -> list[dict[str, Any]]:
    """One row per (task, method, calibration size, α, split, metric)."""
    out = []
    fam_of = {}
    for tp in plan.tasks:
        for r in tp.rows:
            fam_of[(tp.task.name, r.label)] = r.spec.method if isinstance(r.spec, MethodSpec) else "tuned:" + r.spec.candidates[0].method
    for res in results:
        for r in res["records"]:
            note = r.get("chosen") or ("infeasible" if "infeasible" in r else "")
            for m in ("lambda", *METRICS, "set_size", "empty_sets"):
                if m in r:
                    out.append({"task": r["task"], "method": r["method"], "family": fam_of.get((r["task"], r["method"]), ""), "n_cal": r["n_cal"],
                                "alpha": r["alpha"], "split": r["split"], "metric": m, "value": r[m], "note": note})
        for r in res.get("model", []):
            for m in METRICS:
                out.append({"task": r["task"], "method": r["method"], "family": "model", "n_cal": r["n_cal"], "alpha": "", "split": r["split"],
                            "metric": m, "value": r[m], "note": ""})
        for r in res["sets_records"]:
            note = "infeasible" if "infeasible" in r else ""
            for m, v in r.items():
                if m in ("lambda", "coverage") or "@" in m or m == "draw_cpu_seconds_per_image":
                    out.append({"task": r["task"], "method": r["method"], "family": fam_of.get((r["task"], r["method"]), ""), "n_cal": r["n_cal_actual"],
                                "alpha": r["alpha"], "split": r["split"], "metric": m, "value": v, "note": note})
    return out


def _csv(rows: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=TIDY_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        v = r["value"]
        w.writerow(r | {"value": "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else repr(float(v)) if isinstance(v, float) else v})
    return buf.getvalue()


# ---------------------------------------------------------------------------- the command
def _check_out(out: Path, cfg: BenchmarkConfig, replaceable: Sequence[str] = ()) -> None:
    for t in cfg.tasks:
        if t.data is not None and t.data.is_dir():
            check_output(out, [*data_inputs(t.data), t.data])
    if out.is_dir() and any(out.iterdir()):
        prev = out / "results.json"
        ours = False
        if prev.is_file():
            try:
                ours = read_json(prev).get("schema") == RESULT_SCHEMA
            except SegcpError:
                ours = False
        if not ours and replaceable:
            ours = all(p.name in replaceable for p in out.iterdir())
        if not ours:
            raise SegcpError(f"{out}: exists and is not a segcp benchmark report folder; choose a new folder")
    check_dir_target(out, "overwrite")


def run_benchmark(
    config: str | os.PathLike[str] | BenchmarkConfig,
    out: str | os.PathLike[str] | None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    show_progress: bool = True,
    jobs: int | None = None,
    command: str | None = None,
    extra: dict[str, Any] | None = None,
    extend: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    replaceable: Sequence[str] = (),
) -> dict[str, Any]:
    """Run a benchmark config and (with ``out``) write its report folder; returns results.json's content.

    The folder is replaced whole at the end (``report.html``, ``report.md``, figures, results);
    an existing folder is replaced only if it is a previous benchmark report (or holds only
    ``replaceable`` files). ``extra`` and ``extend(result)`` add keys to results.json.
    """
    t_start = time.perf_counter()
    started = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    cfg = config if isinstance(config, BenchmarkConfig) else load_config(config)
    if out is not None:
        _check_out(Path(out), cfg, replaceable)
    cache = BenchmarkCache(cache_dir, enabled=use_cache)
    t0, c0 = time.perf_counter(), time.process_time()
    plan = Plan(cfg)
    t_plan, c_plan = time.perf_counter() - t0, time.process_time() - c0
    results, runner = run_plan(plan, cache, show_progress, jobs)
    runner.timings = {"reading the tasks (file hashes)": t_plan, **runner.timings}
    runner.cpu = {"reading the tasks (file hashes)": c_plan, **runner.cpu}
    meta = {
        "commit": git_commit(),
        "started": started,
        "machine": f"{platform.node() or 'unknown host'} ({os.cpu_count()} CPUs, Python {platform.python_version()})",
        "command": command or " ".join(["segcp", *sys.argv[1:]]),
        "cache": cache.stats(),
        "features": runner.features,
    }
    t0, c0 = time.perf_counter(), time.process_time()
    meta["timings"] = dict(runner.timings)
    meta["cpu"] = dict(runner.cpu)
    meta["jobs"] = runner.jobs
    meta["seconds"] = time.perf_counter() - t_start
    doc, summaries = build_documents(cfg, plan, results, runner, meta, draw=out is not None)
    meta["timings"]["report and figures"] = time.perf_counter() - t0
    meta["cpu"]["report and figures"] = time.process_time() - c0
    meta["seconds"] = time.perf_counter() - t_start
    tidy = tidy_rows(results, plan)
    result = {
        "schema": RESULT_SCHEMA,
        "schema_version": 1,
        "segcp_version": __version__,
        "title": cfg.title,
        "config": cfg.text,
        "config_path": str(cfg.path) if cfg.path else None,
        **meta,
        "tasks": [
            {
                "name": tp.task.name, "title": tp.task.title, "units": tp.task.units, "provenance": tp.task.provenance, "notes": tp.notes,
                "rows": [{"label": r.label, "kind": r.kind, "main": r.main, "ablation": r.ablation, "base": r.base, "spec": r.spec.to_dict()} for r in tp.rows],
                "records": res["records"], "model": res.get("model", []), "validity": res["validity"],
                "sets_records": res["sets_records"], "sets_validity": res["sets_validity"], "seconds_per_image": res["seconds_per_image"],
                "failures": res.get("failures", []),
            }
            for tp, res in zip(plan.tasks, results)
        ],
        "summary": summaries,
        "tidy_columns": TIDY_COLUMNS,
        "results": tidy,  # the tidy rows of results.csv
    }
    if extra:
        result.update(extra)
    if extend is not None:
        result.update(extend(result))
    if out is not None:
        out = Path(out)
        with atomic_dir(out, existing="overwrite") as tmp:
            write_text(tmp / "report.html", doc.html())
            write_text(tmp / "report.md", doc.markdown())
            for f in doc.figures():
                with open(tmp / f.name, "wb") as fh:
                    fh.write(f.png)
            write_text(tmp / "results.json", json.dumps(to_jsonable(result), allow_nan=False, separators=(",", ":")) + "\n")
            write_text(tmp / "results.csv", _csv(tidy))
            write_text(tmp / "config.toml", cfg.text)
    return result
