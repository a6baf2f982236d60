"""The benchmark's report: per task its tables and figures, the document, the tidy rows.

:func:`build_documents` turns a plan's results (:meth:`segcp.engine.run.Engine.run`) into one
:class:`~segcp.report.html.Document` (written as ``report.html`` and ``report.md``) and the
summary rows of results.json; :func:`tidy_rows` / :func:`tidy_csv` are results.csv (one row per
task, method, calibration size, α, split and metric). Which rows a figure contrasts is a plan
choice — the baseline row and the ablation's base row — never a method name.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from segcp._version import __version__
from segcp.engine.config import PlanConfig
from segcp.engine.measure import EXTRAS, MaskEvaluator
from segcp.engine.plan import Plan, TaskPlan
from segcp.engine.run import Engine
from segcp.metrics import METRICS
from segcp.report import figures as F
from segcp.report.html import Cell, Document, Figure, Table
from segcp.report.summaries import model_summary, summarize
from segcp.report.tables import SUMMARY_HEADER, best_cells, chosen_note, fmt, fnr_cell, results_table, summary_cells
from segcp.specs import MethodSpec, TunedSpec

__all__ = ["TIDY_COLUMNS", "build_documents", "tidy_csv", "tidy_rows"]

#: The columns of the tidy results (results.csv, and results.json's "results").
TIDY_COLUMNS = ["task", "method", "family", "n_cal", "alpha", "split", "metric", "value", "note"]
#: The RW-CP paper's numbers of its ablation tables, by the parameter varied.
PAPER_NUMBERS = {"beta": "Table 3", "kernel_beta": "Table 3", "steps": "Table 4", "k": "Fig. 3 data"}


def _summary(records: list[dict[str, Any]], n_cal: int, methods: Sequence[str], alphas: Sequence[float], baseline: str | None = None) -> dict[tuple[str, float], dict[str, Any]]:
    recs = [r for r in records if r["n_cal"] == n_cal and r["method"] in methods and r["alpha"] in alphas]
    return {(s["method"], s["alpha"]): s for s in summarize(recs, baseline)}


class TaskReport:
    """Tables and figures of one task, from its records (and, for figures, score maps through the engine)."""

    def __init__(self, cfg: PlanConfig, tp: TaskPlan, res: dict[str, Any], engine: Engine, draw: bool = True) -> None:
        self.cfg, self.tp, self.res, self.engine = cfg, tp, res, engine
        self.draw = draw  # False: tables only (no figures)
        self.task = tp.task
        self.units = tp.task.units
        self.slug = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in tp.task.name)
        self.mask_main = [r for r in tp.rows if r.kind == "mask" and r.main]
        self.sets_rows = [r for r in tp.rows if r.kind == "sets"]
        self.records = res["records"]
        self.figs: list[Figure] = []
        self.summary_rows: list[dict[str, Any]] = []
        labels = [r.label for r in self.mask_main]
        self.baseline = cfg.baseline_label if cfg.baseline_label in labels else (labels[0] if labels else None)

    def fig(self, name: str, png: bytes, caption: str) -> Figure:
        f = Figure(f"{self.slug}-{name}.png", png, caption)
        self.figs.append(f)
        return f

    # ------------------------------------------------------------------ Table 1
    def table1(self) -> Table | None:
        if not self.mask_main:
            return None
        cfg = self.cfg
        summ = _summary(self.records, cfg.n_cal, [r.label for r in self.mask_main], cfg.alphas, self.baseline)
        validity = {(v["method"], v["alpha"]): v for v in self.res["validity"]}
        rows = [s for a in cfg.alphas for s in summ.values() if s["alpha"] == a]
        self.summary_rows += [dict(s, task=self.task.name, n_cal=cfg.n_cal, validity=validity.get((s["method"], s["alpha"]))) for s in rows]
        note = (
            f"Mean ± std over {cfg.splits} random calibration/test splits (n = {cfg.n_cal} calibration images, whole groups) of the "
            "per-split mean over test images. Bold: best of the α block (lowest stretch, ASSD, HD95; highest DSC) among the rows "
            "feasible on every split; coverage is set by α and has no best. missed: fraction of test images with the structure whose "
            "set is empty (HD95 and ASSD are undefined there and left out of their means). test FNR ± SE: over the splits; ✓ when "
            "≤ α + 3 SE (the guarantee E[FNR] ≤ α), ⚠ otherwise. "
            f"FNR, {cfg.validity_splits} splits: the same check (± SE) over many more random splits, from the loss curves alone. "
            f"win: fraction of splits in which the row's DSC is higher / HD95 lower than the baseline row's ({self.baseline}) at "
            "the same α. Infeasible splits (no λ meets the bound) are left out of the means, so such a row's check is conditional "
            "on feasibility. λ̂ is in each family's units (one minus a probability level, or dilation steps). Tuned "
            "rows choose their setting per split on the calibration images, so the curves-only check (which needs no images) is "
            "not made for them. " + chosen_note(rows)
        )
        return results_table(f"Table 1 — {self.task.name}: sets at α ∈ {{{', '.join(f'{a:g}' for a in cfg.alphas)}}}", rows,
                             model_summary(self.res.get("model", []), cfg.n_cal), cfg.alphas, self.units, baseline=self.baseline,
                             note=note.strip(), validity=validity, validity_splits=cfg.validity_splits)

    # ------------------------------------------------------------------ ablations
    def table_ncal(self) -> Table | None:
        ab = self.cfg.ablation
        if ab is None or not ab.n_cal:
            return None
        header = ["method", "n", *(h.format(u=self.units) for h in SUMMARY_HEADER), "test FNR ± SE"]
        rows: list[list[Cell | str]] = []
        for m in [r.label for r in self.mask_main if ab.n_cal_methods is None or r.label in ab.n_cal_methods]:
            for n in self.tp.n_cal_values:
                s = _summary(self.records, n, [m], [ab.alpha]).get((m, ab.alpha))
                if s is not None:
                    name = m + (f" (infeasible in {s['infeasible']}/{s['splits']})" if s["infeasible"] else "")
                    rows.append([name, str(n), *summary_cells(s, set(), self.units), fnr_cell(s, ab.alpha)])
        skipped = [x for x in self.tp.notes if x.startswith("calibration size")]
        return Table(f"Table 2 — {self.task.name}: calibration size n at α = {ab.alpha:g}", header, rows,
                     f"Mean ± std over {self.cfg.splits} splits with n calibration images each (the rest is the test part). " + " ".join(skipped))

    def param_tables(self) -> list[tuple[Table, Figure | None]]:
        ab = self.cfg.ablation
        if ab is None or not ab.params:
            return []
        out = []
        for param in ab.params:
            rows_p = [r for r in self.tp.rows if r.ablation is not None and r.ablation[0] == param]
            if not rows_p:
                continue
            header = [param, "row", *(h.format(u=self.units) for h in SUMMARY_HEADER), "test FNR ± SE", "score map, CPU s / image"]
            summ = [(r, s) for r in rows_p if (s := _summary(self.records, self.cfg.n_cal, [r.label], [ab.alpha]).get((r.label, ab.alpha))) is not None]
            bold = best_cells([s for _, s in summ], [("stretch", 2), ("dice", 3), ("assd", 2), ("hd95", 2)])
            rows: list[list[Cell | str]] = []
            stats: dict[str, list[float]] = {k: [] for k in ("dice", "dice_std", "hd95", "hd95_std", "seconds")}
            for j, (r, s) in enumerate(summ):
                secs = self.res["seconds_per_image"].get(r.label, math.nan)
                for k in ("dice", "dice_std", "hd95", "hd95_std"):
                    stats[k].append(s.get(k, math.nan))
                stats["seconds"].append(secs)
                rows.append([str(r.ablation[1]), "base row" if r.label == r.base else r.label, *summary_cells(s, bold[j], self.units),  # type: ignore[index]
                             fnr_cell(s, ab.alpha), fmt(secs)])
            base = rows_p[0].base
            t = Table(f"{PAPER_NUMBERS.get(param, 'Table')} — {self.task.name}: {base} with {param} varied, α = {ab.alpha:g}", header, rows,
                      f"Mean ± std over {self.cfg.splits} splits (n = {self.cfg.n_cal}). Time: CPU seconds per image to compute the score "
                      "map (graph and diffusion, single-threaded; the encoder features were computed before, once for every row), "
                      "measured when the map was first computed (CPU time, so that a shared machine's load does not enter it).")
            fig = None
            if len(summ) >= 2 and self.draw:
                title = f"{'Fig. 3 — ' if param == 'k' else ''}{self.task.name}: {base}, {param} varied (α = {ab.alpha:g})"
                fig = self.fig(f"ablation-{param}", F.ablation_figure(param, [r.ablation[1] for r, _ in summ], stats, self.units,  # type: ignore[index]
                                                                      self.cfg.figures.dpi, title),
                               f"{title}: mean Dice and HD95 (± std over splits) and the time per image of the score map.")
            out.append((t, fig))
        return out

    # ------------------------------------------------------------------ figures of the main rows
    def dice_curve(self) -> Figure | None:
        cfg = self.cfg
        alphas = sorted(set(cfg.alphas) | set(cfg.curve_alphas))
        if not self.draw or not self.mask_main or len(alphas) < 2:
            return None
        methods = [r.label for r in self.mask_main]
        summ = _summary(self.records, cfg.n_cal, methods, alphas)
        curves = {m: [(a, summ[(m, a)]["dice"], summ[(m, a)]["dice_std"]) for a in alphas if (m, a) in summ] for m in methods}
        model = model_summary(self.res.get("model", []), cfg.n_cal)
        title = f"Fig. 2 — {self.task.name}: mean Dice against 1 − α (base model: {model['dice']:.3f})"
        return self.fig("dice-vs-alpha", F.dice_curve_figure(curves, cfg.figures.dpi, title), f"{title}. Shaded: ± std over {cfg.splits} splits.")

    def validity_fig(self) -> Figure | None:
        if not self.draw or not self.res["validity"]:
            return None
        rows: dict[str, list[tuple[float, float, float]]] = {}
        for v in self.res["validity"]:
            rows.setdefault(v["method"], []).append((v["alpha"], v["fnr"], v["fnr_se"]))
        title = f"{self.task.name}: mean test FNR over {self.cfg.validity_splits} random splits"
        return self.fig("validity", F.validity_figure(rows, self.cfg.figures.dpi, title),
                        f"{title} (from the loss curves; bars ± 3 SE). The guarantee is E[FNR] ≤ α: points on or below the dashed line.")

    def _split0(self, alpha: float) -> dict[str, tuple[float, MethodSpec]]:
        """Per main row: λ̂ of split 0 at ``alpha`` and the setting it calibrated (a tuned row's choice)."""
        out = {}
        for r in self.records:
            row = next((x for x in self.mask_main if x.label == r["method"]), None)
            if row is not None and r["n_cal"] == self.cfg.n_cal and r["split"] == 0 and r["alpha"] == alpha and math.isfinite(r.get("lambda", math.nan)):
                spec = row.spec.candidates[int(r.get("candidate", 0))] if isinstance(row.spec, TunedSpec) else row.spec
                out[r["method"]] = (r["lambda"], spec)
        return out

    def overlays(self) -> list[Figure]:
        cfg, view = self.cfg, self.tp.mask_view
        if not self.draw or not self.mask_main or view is None:
            return []
        alpha = min(sorted(set(cfg.alphas) | set(cfg.curve_alphas)), key=lambda a: abs(a - cfg.figures.overlay_alpha))
        lams = self._split0(alpha)
        methods = [r.label for r in self.mask_main if r.label in lams]
        if not methods:
            return []
        test = [int(i) for i in self.tp.splits[cfg.n_cal][0][1]]
        cases = {i: view.case(i) for i in test}
        test = [i for i in test if cases[i].mask.any()]
        maps = {m: {i: self.engine.scores(view, lams[m][1], i) for i in test} for m in methods}
        dice = {m: {i: MaskEvaluator(maps[m][i], cases[i].mask, cases[i].model_mask).overlap(lams[m][0])["dice"] for i in test} for m in methods}
        ref = self.baseline if self.baseline in methods else methods[0]
        base = next((r.base for r in self.tp.rows if r.ablation is not None), None)  # the ablation's base row: the contrast
        cmp_ = base if base in methods and base != ref else None
        if cmp_ is not None:
            gain = sorted(test, key=lambda i: dice[cmp_][i] - dice[ref][i])
            picks = [(gain[-1], "largest gain"), (gain[len(gain) // 2], "median"), (gain[0], "largest loss")]
        else:
            order = sorted(test, key=lambda i: dice[ref][i])
            picks = [(order[-1], "best"), (order[len(order) // 2], "median"), (order[0], "worst")]
        chosen = list({i: why for i, why in reversed(picks)}.items())[::-1][: cfg.figures.overlay_images]
        # the maps thresholded other than the raw probability (diffused, normalised): shown beside it
        shown = [m for m in methods if lams[m][1].build().lambda_is_threshold
                 and not all(np.allclose(maps[m][i], 1.0 - np.asarray(cases[i].probs, dtype=float), rtol=0, atol=1e-12) for i, _ in chosen)]
        panels = [{"id": cases[i].id, "note": why, "image": None if cases[i].image is None else np.asarray(cases[i].image, dtype=float),
                   "truth": cases[i].mask, "probs": np.asarray(cases[i].probs, dtype=float),
                   "sets": {m: maps[m][i] <= lams[m][0] for m in methods}, "maps": {m: 1.0 - maps[m][i] for m in shown},
                   "dice": {m: dice[m][i] for m in methods}} for i, why in chosen]
        title = f"Fig. 1 — {self.task.name}: sets at α = {alpha:g} (split 0), truth contour in yellow"
        how = (f"chosen by the Dice difference {cmp_} − {ref} (largest gain, median, largest loss)" if cmp_ else
               f"with the best, median and worst Dice of {ref}")
        out = [self.fig("overlays", F.overlay_figure(panels, methods, shown, cfg.figures.dpi, title),
                        f"{title}. Columns: the image, the truth, each method's calibrated set (blue), the model's raw probability and, for "
                        f"the rows that threshold another map (one minus the score: diffused or rescaled), that map. Rows: test images of split 0 {how}.")]
        # set size against λ for the first image: the sensitivity diffusion is meant to remove
        i = chosen[0][0]
        c = cases[i]
        n_model = int(np.count_nonzero(c.model_mask)) or int(np.count_nonzero(c.mask))
        grid = np.unique(np.concatenate([np.linspace(0, 1, 201), 1 - np.logspace(-4, -1, 120)]))
        curves, marks = {}, {}
        for m in methods:
            if lams[m][1].build().lambda_is_threshold:
                curves[m] = (grid, np.searchsorted(np.sort(maps[m][i], axis=None), grid, side="right") / n_model)
                marks[m] = [(a, lm[0]) for a in cfg.alphas if (lm := self._split0(a).get(m)) is not None]
        if curves:
            title = f"{self.task.name} · {c.id}: set size against λ"
            out.append(self.fig("set-size-vs-lambda", F.set_size_figure(curves, marks, cfg.figures.dpi, title),
                                f"{title}. |C_λ| relative to the model's mask (p ≥ 0.5), for the families whose λ is one minus a "
                                "probability level (left: λ; right: the probability level 1 − λ on a log scale). Where a curve is steep, "
                                "the small changes of λ̂ from one calibration set to another change the set a lot: the sensitivity that "
                                "diffusing the probabilities is meant to remove. Dotted: λ̂ of split 0 at α ∈ "
                                f"{{{', '.join(f'{a:g}' for a in cfg.alphas)}}}."))
        self.engine.release()
        return out

    # ------------------------------------------------------------------ sets of segmentations
    def _sets_stat(self, rr: Sequence[dict[str, Any]], key: str, digits: int = 3) -> str:
        v = np.array([x.get(key, math.nan) for x in rr], dtype=float)
        v = v[np.isfinite(v)]
        if not v.size:
            return "–"
        return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}" if v.size > 1 else f"{v.mean():.{digits}f}"

    def sets_tables(self) -> list[Table]:
        if not self.sets_rows:
            return []
        sc = self.cfg.sets
        header = ["method", "α", "λ̂ (mean ± std)", "coverage (test)", "infeasible splits", f"coverage over {sc.validity_splits} splits ± SE",
                  "truths never in the set", "λ* CPU s / image", "draws CPU s / image"]
        rows: list[list[Cell | str]] = []
        div_rows: list[list[Cell | str]] = []
        lam_rows: list[list[Cell | str]] = []
        val = {(v["method"], v["alpha"]): v for v in self.res["sets_validity"]}
        n_splits = len(self.tp.sets_splits)
        n_images = len(self.tp.sets_view) if self.tp.sets_view is not None else 0
        for r in self.sets_rows:
            for a in sc.alphas:
                rr = [x for x in self.res["sets_records"] if x["method"] == r.label and x["alpha"] == a]
                ok = [x for x in rr if "infeasible" not in x]
                v = val.get((r.label, a), {})
                cov = v.get("coverage", math.nan)
                cov_cell = "–" if not math.isfinite(cov) else (
                    f"{cov:.3f} ± {v['coverage_se']:.3f} {'✓' if cov >= 1 - a - 3 * v['coverage_se'] else '⚠'}"
                    + (f" ({v['infeasible']} infeasible; all splits, λ̂ = ∞ there: {v['coverage_all']:.3f})" if v.get("infeasible") else ""))
                rows.append([r.label, f"{a:g}", self._sets_stat(ok, "lambda"), self._sets_stat(ok, "coverage"), f"{len(rr) - len(ok)}/{len(rr)}", cov_cell,
                             f"{v.get('never', 0)}/{n_images}", fmt(self.res["seconds_per_image"].get(f"{r.label} (α={a:g})"), 2),
                             self._sets_stat(ok, "draw_cpu_seconds_per_image", 2)])
                for S in sc.sizes:
                    div_rows.append([r.label, f"{a:g}", str(S), self._sets_stat(ok, f"sec@{S}", 2), self._sets_stat(ok, f"chao@{S}", 0),
                                     self._sets_stat(ok, f"correlation@{S}")])
                lam_rows.append([r.label, f"{a:g}", *(fmt(x.get("lambda")) if "infeasible" not in x else "infeasible" for x in sorted(rr, key=lambda x: x["split"]))])
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
        if not self.draw or not self.sets_rows:
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
        title = f"{self.task.name}: drawn segmentations against the number of draws S (α = {a:g})"
        out = [self.fig("sets-diversity", F.diversity_figure(curves, self.cfg.figures.dpi, title),
                        f"{title} — CONSIGN's Figs. 2–4: Chao1, SEC and mean |correlation|, mean ± std over splits; CONSIGN (K = 2, 5) "
                        "against pixel-wise APS when all are in the plan.")]
        # a row of draws from each calibrated set, for one test image of split 0
        view = self.tp.sets_view
        assert view is not None
        rec0 = {x["method"]: x for x in recs if x["split"] == 0}
        if not rec0:
            return out
        drawn = next(iter(rec0.values()))["draw_images"]
        ident = next((c for c in drawn if np.any(view.case(view.ids.index(c)).label_map > 0)), drawn[0])  # the first with a structure
        case = view.case(view.ids.index(ident))
        draws = {}
        for r in self.sets_rows:
            if r.label in rec0:
                assert isinstance(r.spec, MethodSpec)
                fam = r.spec.estimator(a).family.bind_alpha(a)
                draws[r.label] = fam.sample(fam.prepare(case), rec0[r.label]["lambda"], sc.show_draws, np.random.default_rng([self.cfg.seed, 5]))
        x = case.samples if case.samples is not None else case.class_probs
        mean = (x.mean(axis=0) if case.samples is not None else x).argmax(axis=0)
        n_labels = int(x.shape[1] if case.samples is not None else x.shape[0])
        title = f"{self.task.name} · {ident}: draws from each calibrated set (α = {a:g}, split 0)"
        out.append(self.fig("sets-draws", F.draws_figure(self.task.image_of(ident), case.label_map, mean, draws, n_labels, self.cfg.figures.dpi, title),
                            f"{title} — CONSIGN's Fig. 5: the truth, the argmax of the mean softmax and {sc.show_draws} draws per set."))
        return out


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
                     f"validation Dice {fmt(m.get('val_dice'))}, segcp {m.get('segcp_version')})")
    d = p.get("model_dice") or {}
    if d:
        lines.append("model Dice (segcp infer): " + ", ".join(f"{k} {fmt(v)}" for k, v in d.items()))
    ex = p.get("export") or {}
    if ex:
        lines.append(f"images and truth: `segcp` export of task {ex.get('task')} ({ex.get('dataset')}, label {ex.get('label')}) from "
                     f"`{ex.get('root')}`, part {ex.get('part')}, seed {ex.get('seed')}")
    lines.append(f"distances in {tp.task.units}" + (" (the files store no spacing)" if tp.task.units == "pixels" else " (the data's spacing)"))
    return lines + [f"note: {n}" for n in tp.notes]


def build_documents(cfg: PlanConfig, plan: Plan, results: list[dict[str, Any]], engine: Engine, meta: dict[str, Any],
                    draw: bool = True) -> tuple[Document, list[dict[str, Any]]]:
    """The report (one document, every task) and the summary rows of results.json."""
    doc = Document(cfg.title)
    doc.section("first")
    doc.h(1, cfg.title)
    if cfg.description:
        doc.p(cfg.description)
    commit = meta["commit"]
    ctext = (commit.get("commit") or f"unknown ({commit.get('note')})") + (" with uncommitted changes" if commit.get("dirty") else "")
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
        "methods: " + "; ".join(f"`{m.text}`" for m in cfg.methods) + f"; baseline: {cfg.baseline_label}",
    ] + ([f"ablations at α = {cfg.ablation.alpha:g}: n ∈ {list(cfg.ablation.n_cal)}; " + "; ".join(f"{k} ∈ {list(v)}" for k, v in cfg.ablation.params.items())]
         if cfg.ablation else []))
    doc.pre(cfg.text, None)
    summaries: list[dict[str, Any]] = []
    for tp, res in zip(plan.tasks, results):
        tr = TaskReport(cfg, tp, res, engine, draw)
        doc.section("task")
        doc.h(2, f"{tp.task.name}: {tp.task.title}", anchor=f"task-{tr.slug}")
        t1 = tr.table1()
        if t1 is not None:
            doc.table(t1)
            for f in [*tr.overlays(), tr.dice_curve(), tr.validity_fig()]:
                if f is not None:
                    doc.figure(f)
        tn, pts = tr.table_ncal(), tr.param_tables()
        if tn is not None or pts:
            doc.h(3, f"{tp.task.name}: ablations")
            for t, f in ([(tn, None)] if tn is not None else []) + pts:
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
    doc.p(f"Seconds per stage in this run (on {meta['executor']}; CPU: this process only; work found in the cache costs only its reading):")
    doc.table(Table("timings", ["stage", "wall s", "CPU s"], [[k, f"{v:.1f}", fmt(meta["cpu"].get(k), 1)] for k, v in meta["timings"].items()]))
    if meta.get("features"):
        doc.p("Encoder features computed or read in this run: " + "; ".join(f"{v['images']} images in {v['seconds']:.1f} s" for v in meta["features"].values()))
    return doc, summaries


def tidy_rows(results: list[dict[str, Any]], plan: Plan) -> list[dict[str, Any]]:
    """One row per (task, method, calibration size, α, split, metric)."""
    out = []
    fam_of = {(tp.task.name, r.label): r.spec.method if isinstance(r.spec, MethodSpec) else "tuned:" + r.spec.candidates[0].method
              for tp in plan.tasks for r in tp.rows}
    for res in results:
        for r in res["records"]:
            note = r.get("chosen") or ("infeasible" if "infeasible" in r else "")
            for m in ("lambda", *METRICS, "set_size", *EXTRAS):
                if m in r:
                    out.append({"task": r["task"], "method": r["method"], "family": fam_of.get((r["task"], r["method"]), ""), "n_cal": r["n_cal"],
                                "alpha": r["alpha"], "split": r["split"], "metric": m, "value": r[m], "note": note})
        for r in res.get("model", []):
            for m in (*METRICS, "set_size", *EXTRAS):
                out.append({"task": r["task"], "method": r["method"], "family": "model", "n_cal": r["n_cal"], "alpha": "", "split": r["split"],
                            "metric": m, "value": r[m], "note": ""})
        for r in res["sets_records"]:
            note = "infeasible" if "infeasible" in r else ""
            for m, v in r.items():
                if m in ("lambda", "coverage") or "@" in m or m == "draw_cpu_seconds_per_image":
                    out.append({"task": r["task"], "method": r["method"], "family": fam_of.get((r["task"], r["method"]), ""), "n_cal": r["n_cal_actual"],
                                "alpha": r["alpha"], "split": r["split"], "metric": m, "value": v, "note": note})
    return out


def tidy_csv(rows: list[dict[str, Any]]) -> str:
    """The tidy rows as CSV text (floats written exactly: ``repr``)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=TIDY_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        v = r["value"]
        w.writerow(r | {"value": "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else repr(float(v)) if isinstance(v, float) else v})
    return buf.getvalue()
