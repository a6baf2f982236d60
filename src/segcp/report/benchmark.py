"""The benchmark's report: per task its tables and figures in one document, and the tidy rows (results.csv).
Which rows a figure contrasts is a plan choice (the baseline, the ablation's base row), never a method name.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from segcp._version import __version__
from segcp.cases import Case, slice_axis
from segcp.engine.band import BAND_SPLIT, is_band
from segcp.engine.config import PlanConfig
from segcp.engine.measure import EXTRAS, LOSS_EXTRAS, MaskEvaluator
from segcp.engine.plan import Plan, TaskPlan
from segcp.engine.run import Engine, bound_family
from segcp.jobs.band import band_metrics
from segcp.metrics import METRICS, mean_std
from segcp.report import figures as F
from segcp.report.html import Cell, Document, Figure, Table
from segcp.report.summaries import model_summary, summarize
from segcp.report.tables import (
    BEST,
    NOTE_LOSS,
    SUMMARY_HEADER,
    alpha_set,
    band_table,
    best_cells,
    chosen_note,
    fmt,
    fnr_cell,
    ms_text,
    results_table,
    summary_cells,
    volume_table,
)
from segcp.specs import MethodSpec

__all__ = ["TIDY_COLUMNS", "build_documents", "tidy_csv", "tidy_rows"]

Row = dict[str, Any]  # a record, summary or tidy row
Rows = list[Row]

#: The columns of the tidy results (results.csv, and results.json's "results").
TIDY_COLUMNS = ["task", "method", "family", "n_cal", "alpha", "split", "metric", "value", "note"]
#: The RW-CP paper's numbers of its ablation tables, by the parameter varied.
PAPER_NUMBERS = {"beta": "Table 3", "kernel_beta": "Table 3", "steps": "Table 4", "k": "Fig. 3 data"}

NOTE_FAILURES = (
    "**{n} image score(s) failed with an internal error** and count as never in the set (score +∞; this can only make the calibrated sets "
    "larger and the measured coverage lower):"
)
NOTE_TABLE1 = (
    "Mean ± std over {splits} random calibration/test splits (n = {n_cal} calibration images, whole groups) of the per-split mean over test "
    "images. Bold: best of the α block (lowest stretch, ASSD, HD95; highest DSC) among the rows feasible on every split; coverage is set by α "
    "and has no best. missed: fraction of test images with the structure whose set is empty (HD95 and ASSD are undefined there and left out "
    "of their means). test FNR ± SE: over the splits; ✓ when ≤ α + 3 SE (the guarantee E[FNR] ≤ α), ⚠ otherwise. FNR, {validity} splits: "
    "the same check (± SE) over many more random splits, from the loss curves alone. win: fraction of splits in which the row's DSC is "
    "higher / HD95 lower than the baseline row's ({baseline}) at the same α. Infeasible splits (no λ meets the bound) are left out of the "
    "means, so such a row's check is conditional on feasibility. λ̂ is in each family's units (one minus a probability level, or dilation "
    "steps). Tuned rows choose their setting per split on the calibration images, so the curves-only check (which needs no images) is not "
    "made for them. {loss}{chosen}"
)
NOTE_PARAMS = (
    "Mean ± std over {splits} splits (n = {n_cal}). Time: CPU seconds per image to compute the score map (graph and diffusion, "
    "single-threaded; the encoder features were computed before, once for every row), measured when the map was first computed (CPU time, "
    "so that a shared machine's load does not enter it)."
)
NOTE_OVERLAYS = (
    "{title}. Columns: the image, the truth, each method's calibrated set (blue), the model's raw probability and, for the rows that "
    "threshold another map (one minus the score: diffused or rescaled), that map. Rows: test images of split 0 {how}."
)
NOTE_SET_SIZE = (
    "{title}. |C_λ| relative to the model's mask (p ≥ 0.5), for the families whose λ is one minus a probability level (left: λ; right: the "
    "probability level 1 − λ on a log scale). Where a curve is steep, the small changes of λ̂ from one calibration set to another change the "
    "set a lot: the sensitivity that diffusing the probabilities is meant to remove. Dotted: λ̂ of split 0 at α ∈ {alphas}."
)
NOTE_SETS = (
    "λ̂: the calibrated box scale (CONSIGN) or class-mass level (APS); mean ± std over splits. coverage (test): fraction of a split's test "
    "images whose truth is in the set up to β (exact membership). coverage over many splits: the guarantee P(truth in set) ≥ 1 − α, from the "
    "scores alone (✓: mean ≥ 1 − α − 3 SE), over the feasible splits; a split is infeasible when more than α(n+1) − 1 calibration truths are "
    "never in the set at any λ. CPU seconds per image: the score λ* (membership search) and {draws} draws."
)
NOTE_BAND_FIGURE = (
    "{title}. Columns: the image with the truth's contour (yellow), then each two-sided row's sets at λ̂ of split 0: the certain region I "
    "(green, solid contour) and the possible region O \\ I (orange; dashed: the contour of O). Rows: the test images of split 0 with the "
    "narrowest, median and widest band (|O \\ I| / |Y|) of {ref}{slice}; a row without λ̂ on split 0 (infeasible) is left out."
)
NOTE_VOLUME_FIGURE = (
    "{title}. Each test image of split 0 (sorted by its true volume, black dots) with its direct volume interval (gray) and, one panel per "
    "two-sided row, its [vol(I), vol(O)] at λ̂ of split 0; log scale, lower ends at 0 drawn at the bottom."
)
NOTE_DRAWS = (
    "Mean ± std over splits of the mean over {images} test images per split: SEC, whether a draw among the first S agrees with the truth up "
    "to β; Chao1, the estimated number of distinct segmentations; |corr|, the mean absolute correlation between draws (CONSIGN's Figs. 2–4)."
)


def _chosen(picks: tuple[int, int, int], names: tuple[str, str, str], k: int) -> list[tuple[int, str]]:
    """Three images of a figure (e.g. best, median, worst) with why, each once (its first reason), at most ``k``."""
    return list({i: why for i, why in reversed(list(zip(picks, names, strict=True)))}.items())[::-1][:k]


def _plane(case: Case) -> tuple[Any, str]:
    """The index of the 2D plane a figure shows of a case (all of a 2D case; of a volume, its slice along the one
    slicing rule's axis, :func:`segcp.cases.slice_axis`, where the truth is largest) and a note saying which."""
    m = np.asarray(case.mask if case.mask is not None else case.probs)
    if m.ndim != 3:
        return (), ""
    ax = slice_axis(m.shape, case.spacing)
    k = int(np.argmax(np.moveaxis(m, ax, 0).reshape(m.shape[ax], -1).sum(axis=1)))
    return (slice(None),) * ax + (k,), f"; volumes cut along axis {ax} where the truth is largest"


def _image_plane(case: Case, pick: Any) -> Any:
    """The case's image (float) on the plane ``pick`` of its grid (None without an image; a volume's image not
    on the truth's grid is left out)."""
    if case.image is None:
        return None
    img = np.asarray(case.image, dtype=float)
    return img if pick == () else (img[pick] if case.mask is not None and img.shape == case.mask.shape else None)


class TaskReport:
    """One task's part of the document, from its records (figures through the engine; ``draw`` False: none)."""

    def __init__(self, doc: Document, cfg: PlanConfig, tp: TaskPlan, res: dict[str, Any], engine: Engine, draw: bool = True) -> None:
        self.doc, self.cfg, self.tp, self.res, self.engine, self.draw = doc, cfg, tp, res, engine, draw
        self.task, self.units, self.records = tp.task, tp.task.units, res["records"]
        self.slug = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in tp.task.name)
        self.mask_main = [r for r in tp.rows if r.kind == "mask" and r.main and not is_band(r.spec)]
        self.band_main = [r for r in tp.rows if r.kind == "mask" and r.main and is_band(r.spec)]  # two-sided rows: their own tables
        self.sets_rows = [r for r in tp.rows if r.kind == "sets"]
        self.summary_rows: list[dict[str, Any]] = []
        labels = [r.label for r in self.mask_main]
        self.baseline = cfg.baseline_label if cfg.baseline_label in labels else (labels[0] if labels else None)

    def write(self) -> None:
        doc, name, ab = self.doc, self.task.name, self.cfg.ablation
        doc.section("task")
        doc.h(2, f"{name}: {self.task.title}", anchor=f"task-{self.slug}")
        if self.mask_main:
            self.table1()
            if self.draw:
                self.overlays()
                self.dice_curve()
                self.validity_fig()
        if self.band_main:
            doc.h(3, f"{name}: two-sided sets and volume intervals")
            self.band_tables()
            if self.draw:
                self.band_figures()
        if ab is not None and (ab.n_cal or any(r.ablation is not None for r in self.tp.rows)):
            doc.h(3, f"{name}: ablations")
            self.table_ncal()
            self.param_tables()
        if self.sets_rows:
            doc.h(3, f"{name}: sets of segmentations")
            self.sets_tables()
            if self.draw:
                self.sets_figures()
        fails = self.res.get("failures", [])
        if fails:
            doc.p(NOTE_FAILURES.format(n=len(fails)))
            doc.items([f"{f['method']} (α = {f['alpha']:g}), {f['image']}: {f['error']}" for f in fails])
        doc.items([f"note: {n}" for n in self.tp.notes])

    def fig(self, name: str, png: bytes, caption: str) -> None:
        self.doc.figure(Figure(f"{self.slug}-{name}.png", png, caption))

    def summary(self, n_cal: int, methods: Sequence[str], alphas: Sequence[float], baseline: str | None = None) -> dict[tuple[str, float], Row]:
        """The summaries (:func:`summarize`) of these rows at calibration size ``n_cal``, by (row, α)."""
        recs = [r for r in self.records if r["n_cal"] == n_cal and r["method"] in methods and r["alpha"] in alphas]
        return {(s["method"], s["alpha"]): s for s in summarize(recs, baseline)}

    def table1(self) -> None:
        cfg = self.cfg
        summ = self.summary(cfg.n_cal, [r.label for r in self.mask_main], cfg.alphas, self.baseline)
        validity = {(v["method"], v["alpha"]): v for v in self.res["validity"]}
        rows = [s for a in cfg.alphas for s in summ.values() if s["alpha"] == a]
        self.summary_rows += [dict(s, task=self.task.name, n_cal=cfg.n_cal, validity=validity.get((s["method"], s["alpha"]))) for s in rows]
        note = NOTE_TABLE1.format(
            splits=cfg.splits,
            n_cal=cfg.n_cal,
            validity=cfg.validity_splits,
            baseline=self.baseline,
            chosen=chosen_note(rows),
            loss=NOTE_LOSS if any("controlled" in s for s in rows) else "",
        )
        caption = f"Table 1 — {self.task.name}: sets at α ∈ {alpha_set(cfg.alphas)}"
        model = model_summary(self.res.get("model", []), cfg.n_cal)
        self.doc.table(results_table(caption, rows, model, cfg.alphas, self.units, self.baseline, note.strip(), validity, cfg.validity_splits))

    def _split0(self, alpha: float) -> dict[str, tuple[float, MethodSpec]]:
        """Per main row: λ̂ of split 0 at ``alpha`` and the setting it calibrated (a tuned row's choice)."""
        rows = {x.label: x for x in self.mask_main}
        out = {}
        for r in self.records:
            if r["method"] in rows and (r["n_cal"], r["split"], r["alpha"]) == (self.cfg.n_cal, 0, alpha) and math.isfinite(r.get("lambda", np.nan)):
                spec = rows[r["method"]].spec
                out[r["method"]] = (r["lambda"], spec.candidates[int(r.get("candidate", 0))])
        return out

    def overlays(self) -> None:
        """RW-CP's Fig. 1 (sets on three test images of split 0) and the set size against λ of the first."""
        cfg, view = self.cfg, self.tp.mask_view
        assert view is not None
        alpha = min(sorted(set(cfg.alphas) | set(cfg.curve_alphas)), key=lambda a: abs(a - cfg.figures.overlay_alpha))
        lams = self._split0(alpha)
        methods = [r.label for r in self.mask_main if r.label in lams]
        if not methods:
            return
        cases = {int(i): view.case(int(i)) for i in self.tp.splits[cfg.n_cal][0][1]}
        truths = {i: c.mask for i, c in cases.items() if c.mask is not None and c.mask.any()}
        maps = {m: {i: self.engine.scores(view, lams[m][1], i) for i in truths} for m in methods}
        dice = {m: {i: MaskEvaluator(maps[m][i], t, cases[i].model_mask).overlap(lams[m][0])["dice"] for i, t in truths.items()} for m in methods}
        ref = self.baseline if self.baseline in methods else methods[0]
        base = next((r.base for r in self.tp.rows if r.ablation is not None), None)  # the ablation's base row: the contrast
        cmp_ = base if base in methods and base != ref else None
        if cmp_ is not None:
            order, names = sorted(truths, key=lambda i: dice[cmp_][i] - dice[ref][i]), ("largest gain", "median", "largest loss")
        else:
            order, names = sorted(truths, key=lambda i: dice[ref][i]), ("best", "median", "worst")
        chosen = _chosen((order[-1], order[len(order) // 2], order[0]), names, cfg.figures.overlay_images)
        # the maps thresholded other than the raw probability (diffused, normalised): shown beside it
        probs = {i: np.asarray(cases[i].probs, dtype=float) for i, _ in chosen}
        raw = {m for m in methods if all(np.allclose(maps[m][i], 1.0 - probs[i], rtol=0, atol=1e-12) for i, _ in chosen)}
        shown = [m for m in methods if lams[m][1].build().lambda_is_threshold and m not in raw]
        panels: list[dict[str, Any]] = []
        cut = ""
        for i, why in chosen:
            pick, cut = _plane(cases[i])
            sets = {m: (maps[m][i] <= lams[m][0])[pick] for m in methods}
            panel = {"id": cases[i].id, "note": why, "image": _image_plane(cases[i], pick), "truth": truths[i][pick], "probs": probs[i][pick]}
            panels.append(panel | {"sets": sets, "maps": {m: (1.0 - maps[m][i])[pick] for m in shown}, "dice": {m: dice[m][i] for m in methods}})
        title = f"Fig. 1 — {self.task.name}: sets at α = {alpha:g} (split 0), truth contour in yellow"
        how = f"with the best, median and worst Dice of {ref}{cut}"
        if cmp_:
            how = f"chosen by the Dice difference {cmp_} − {ref} (largest gain, median, largest loss){cut}"
        self.fig("overlays", F.overlay_figure(panels, methods, shown, cfg.figures.dpi, title), NOTE_OVERLAYS.format(title=title, how=how))
        # set size against λ for the first image: the sensitivity diffusion is meant to remove
        i = chosen[0][0]
        n_model = int(np.count_nonzero(cases[i].model_mask)) or int(np.count_nonzero(truths[i]))
        grid = np.unique(np.concatenate([np.linspace(0, 1, 201), 1 - np.logspace(-4, -1, 120)]))
        curves, marks = {}, {}
        for m in methods:
            if lams[m][1].build().lambda_is_threshold:
                curves[m] = (grid, np.searchsorted(np.sort(maps[m][i], axis=None), grid, side="right") / n_model)
                marks[m] = [(a, lm[0]) for a in cfg.alphas if (lm := self._split0(a).get(m)) is not None]
        if curves:
            title = f"{self.task.name} · {cases[i].id}: set size against λ"
            png = F.set_size_figure(curves, marks, cfg.figures.dpi, title)
            self.fig("set-size-vs-lambda", png, NOTE_SET_SIZE.format(title=title, alphas=alpha_set(cfg.alphas)))
        self.engine.release()

    def dice_curve(self) -> None:
        cfg = self.cfg
        alphas = sorted(set(cfg.alphas) | set(cfg.curve_alphas))
        if len(alphas) < 2:
            return
        methods = [r.label for r in self.mask_main]
        summ = self.summary(cfg.n_cal, methods, alphas)
        curves = {m: [(a, summ[(m, a)]["dice"], summ[(m, a)]["dice_std"]) for a in alphas if (m, a) in summ] for m in methods}
        title = f"Fig. 2 — {self.task.name}: mean Dice against 1 − α (base model: {model_summary(self.res.get('model', []), cfg.n_cal)['dice']:.3f})"
        self.fig("dice-vs-alpha", F.dice_curve_figure(curves, cfg.figures.dpi, title), f"{title}. Shaded: ± std over {cfg.splits} splits.")

    def validity_fig(self) -> None:
        if not self.res["validity"]:
            return
        rows: dict[str, list[tuple[float, float, float]]] = {}
        one_sided = {r.label for r in self.mask_main}
        for v in self.res["validity"]:
            if v["method"] in one_sided and "fnr" in v:  # a two-sided row's check is in its own table, a controlled loss's in Table 1
                rows.setdefault(v["method"], []).append((v["alpha"], v["fnr"], v["fnr_se"]))
        if not rows:
            return
        title = f"{self.task.name}: mean test FNR over {self.cfg.validity_splits} random splits"
        note = f"{title} (from the loss curves; bars ± 3 SE). The guarantee is E[FNR] ≤ α: points on or below the dashed line."
        self.fig("validity", F.validity_figure(rows, self.cfg.figures.dpi, title), note)

    def band_tables(self) -> None:
        """The two-sided rows at every α (:func:`band_table`) and their volume intervals (:func:`volume_table`)."""
        cfg, labels = self.cfg, [r.label for r in self.band_main]
        recs = [r for r in self.records if r["n_cal"] == cfg.n_cal and r["method"] in labels and r["alpha"] in cfg.alphas]
        summ = summarize(recs, metrics=BAND_SPLIT, risk="risk")
        validity = {(v["method"], v["alpha"]): v for v in self.res["validity"] if v["method"] in labels}
        guarantees = {r.label: str(r.spec.candidates[0].guarantee) for r in self.band_main}
        self.summary_rows += [dict(s, task=self.task.name, n_cal=cfg.n_cal, validity=validity.get((s["method"], s["alpha"]))) for s in summ]
        caption = f"{self.task.name}: two-sided sets at α ∈ {alpha_set(cfg.alphas)} ({cfg.splits} splits, n = {cfg.n_cal})"
        self.doc.table(band_table(caption, summ, cfg.alphas, guarantees, validity if cfg.validity_splits else None, cfg.validity_splits))
        unit = next((r["volume_unit"] for r in recs if r.get("volume_unit")), "voxels")
        caption = f"{self.task.name}: volume intervals at α ∈ {alpha_set(cfg.alphas)}, direct and [vol(I), vol(O)]"
        self.doc.table(volume_table(caption, summ, cfg.alphas, guarantees, unit))

    def band_figures(self) -> None:
        """The certain / possible regions of each two-sided row on test images of split 0, and the volume plot."""
        cfg, view = self.cfg, self.tp.mask_view
        assert view is not None
        alpha = min(sorted(set(cfg.alphas) | set(cfg.curve_alphas)), key=lambda a: abs(a - cfg.figures.overlay_alpha))
        rec0 = {r["method"]: r for r in self.records if (r["n_cal"], r["split"], r["alpha"]) == (cfg.n_cal, 0, alpha) and math.isfinite(r["lambda"])}
        rows = [r for r in self.band_main if r.label in rec0]
        if not rows:
            return
        test = [int(i) for i in self.tp.splits[cfg.n_cal][0][1]]
        cases = {i: c for i in test if (c := view.case(i)).mask is not None and c.mask.any()}
        bands: dict[str, dict[int, tuple[Any, Any]]] = {}
        for r in rows:
            fam = r.spec.candidates[0].build()
            bands[r.label] = {i: fam.predict_band(self.engine.scores(view, r.spec.candidates[0], i), rec0[r.label]["lambda"]) for i in cases}
        width = {m: {i: band_metrics(cases[i], *b, alpha, None)["band_width"] for i, b in per.items()} for m, per in bands.items()}
        ref = rows[0].label
        order = sorted(cases, key=lambda i: width[ref][i])
        if order:
            chosen = _chosen((order[0], order[len(order) // 2], order[-1]), ("narrowest band", "median", "widest band"), cfg.figures.overlay_images)
            panels, cut = [], ""
            for i, why in chosen:
                c = cases[i]
                assert c.mask is not None
                pick, cut = _plane(c)
                panel = {
                    "id": c.id,
                    "note": why,
                    "image": _image_plane(c, pick),
                    "truth": c.mask[pick],
                    "probs": np.asarray(c.probs, dtype=float)[pick],
                }
                panel["bands"] = {m: (per[i][0][pick], per[i][1][pick]) for m, per in bands.items()}
                panels.append(panel | {"width": {m: width[m][i] for m in bands}})
            title = f"{self.task.name}: certain (I) and possible (O \\ I) regions at α = {alpha:g} (split 0)"
            png = F.band_figure(panels, list(bands), cfg.figures.dpi, title)
            self.fig("band-overlays", png, NOTE_BAND_FIGURE.format(title=title, ref=ref, slice=cut))
        vols = rec0[ref].get("volumes")
        if vols and vols["truth"]:
            intervals = {f"[vol(I), vol(O)] {r.label}": rec0[r.label]["volumes"]["band"] for r in rows}
            title = f"{self.task.name}: true volume and its intervals per test image (α = {alpha:g}, split 0)"
            png = F.volume_figure(vols["truth"], vols["direct"], intervals, rec0[ref].get("volume_unit", "voxels"), cfg.figures.dpi, title)
            self.fig("volumes", png, NOTE_VOLUME_FIGURE.format(title=title))
        self.engine.release()

    def table_ncal(self) -> None:
        ab = self.cfg.ablation
        if ab is None or not ab.n_cal:
            return
        rows: list[list[Cell | str]] = []
        for m in [r.label for r in self.mask_main if ab.n_cal_methods is None or r.label in ab.n_cal_methods]:
            for n in self.tp.n_cal_values:
                if (s := self.summary(n, [m], [ab.alpha]).get((m, ab.alpha))) is not None:
                    name = m + (f" (infeasible in {s['infeasible']}/{s['splits']})" if s["infeasible"] else "")
                    rows.append([name, str(n), *summary_cells(s, set(), self.units), fnr_cell(s, ab.alpha)])
        header = ["method", "n", *(h.format(u=self.units) for h in SUMMARY_HEADER), "test FNR ± SE"]
        skipped = " ".join(x for x in self.tp.notes if x.startswith("calibration size"))
        note = f"Mean ± std over {self.cfg.splits} splits with n calibration images each (the rest is the test part). {skipped}"
        self.doc.table(Table(f"Table 2 — {self.task.name}: calibration size n at α = {ab.alpha:g}", header, rows, note))

    def param_tables(self) -> None:
        ab = self.cfg.ablation
        assert ab is not None
        for param in ab.params:
            varied = [r for r in self.tp.rows if r.ablation is not None and r.ablation[0] == param]
            summ = [(r, s) for r in varied if (s := self.summary(self.cfg.n_cal, [r.label], [ab.alpha]).get((r.label, ab.alpha))) is not None]
            if not varied:
                continue
            bold = best_cells([s for _, s in summ], BEST)
            secs = [self.res["seconds_per_image"].get(r.label, math.nan) for r, _ in summ]
            values = [r.ablation[1] for r, _ in summ]  # type: ignore[index]  # an ablation row
            rows: list[list[Cell | str]] = []
            for j, (r, s) in enumerate(summ):
                rows.append([str(values[j]), "base row" if r.label == r.base else r.label, *summary_cells(s, bold[j], self.units)])
                rows[-1] += [fnr_cell(s, ab.alpha), fmt(secs[j])]
            header = [param, "row", *(h.format(u=self.units) for h in SUMMARY_HEADER), "test FNR ± SE", "score map, CPU s / image"]
            caption = f"{PAPER_NUMBERS.get(param, 'Table')} — {self.task.name}: {varied[0].base} with {param} varied, α = {ab.alpha:g}"
            self.doc.table(Table(caption, header, rows, NOTE_PARAMS.format(splits=self.cfg.splits, n_cal=self.cfg.n_cal)))
            if len(summ) >= 2 and self.draw:
                stats = {k: [s.get(k, math.nan) for _, s in summ] for k in ("dice", "dice_std", "hd95", "hd95_std")} | {"seconds": secs}
                title = f"{'Fig. 3 — ' if param == 'k' else ''}{self.task.name}: {varied[0].base}, {param} varied (α = {ab.alpha:g})"
                png = F.ablation_figure(param, values, stats, self.units, self.cfg.figures.dpi, title)
                self.fig(f"ablation-{param}", png, f"{title}: mean Dice and HD95 (± std over splits) and the time per image of the score map.")

    def _sets_records(self, label: str, alpha: float) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """A row's split records at α: all, and the feasible ones."""
        rr = [x for x in self.res["sets_records"] if x["method"] == label and x["alpha"] == alpha]
        return rr, [x for x in rr if "infeasible" not in x]

    def sets_tables(self) -> None:
        sc, name = self.cfg.sets, self.task.name
        val = {(v["method"], v["alpha"]): v for v in self.res["sets_validity"]}
        n_splits, n_images = len(self.tp.sets_splits), len(self.tp.sets_view or ())
        rows: list[list[Cell | str]] = []
        div_rows: list[list[Cell | str]] = []
        lam_rows: list[list[Cell | str]] = []
        for r in self.sets_rows:
            for a in sc.alphas:
                rr, ok = self._sets_records(r.label, a)

                def stat(key: str, digits: int = 3) -> str:
                    return ms_text(*mean_std([x.get(key) for x in ok]), digits)  # used at once

                v = val.get((r.label, a), {})
                cov, se = v.get("coverage", math.nan), v.get("coverage_se", math.nan)
                cov_cell = "–"
                if math.isfinite(cov):
                    cov_cell = f"{cov:.3f} ± {se:.3f} {'✓' if cov >= 1 - a - 3 * se else '⚠'}"
                    cov_cell += f" ({v['infeasible']} infeasible; all splits, λ̂ = ∞ there: {v['coverage_all']:.3f})" if v.get("infeasible") else ""
                secs = fmt(self.res["seconds_per_image"].get(f"{r.label} (α={a:g})"), 2)
                rows.append([r.label, f"{a:g}", stat("lambda"), stat("coverage"), f"{len(rr) - len(ok)}/{len(rr)}", cov_cell])
                rows[-1] += [f"{v.get('never', 0)}/{n_images}", secs, stat("draw_cpu_seconds_per_image", 2)]
                div_rows += [[r.label, f"{a:g}", str(S), stat(f"sec@{S}", 2), stat(f"chao@{S}", 0), stat(f"correlation@{S}")] for S in sc.sizes]
                lams = [fmt(x.get("lambda")) if "infeasible" not in x else "infeasible" for x in sorted(rr, key=lambda x: x["split"])]
                lam_rows.append([r.label, f"{a:g}", *lams])
        header = ["method", "α", "λ̂ (mean ± std)", "coverage (test)", "infeasible splits", f"coverage over {sc.validity_splits} splits ± SE"]
        header += ["truths never in the set", "λ* CPU s / image", "draws CPU s / image"]
        caption = f"{name}: sets of segmentations (CONSIGN, pixel-wise APS), {n_splits} splits of {n_images} images"
        self.doc.table(Table(caption, header, rows, NOTE_SETS.format(draws=sc.draws)))
        caption = f"{name}: the drawn segmentations against the number of draws S"
        self.doc.table(Table(caption, ["method", "α", "S", "SEC", "Chao1", "|corr|"], div_rows, NOTE_DRAWS.format(images=sc.draw_images)))
        self.doc.table(Table(f"{name}: λ̂ per split (CONSIGN's Tables 3/4)", ["method", "α"] + [f"split {s}" for s in range(n_splits)], lam_rows))

    def sets_figures(self) -> None:
        sc = self.cfg.sets
        a = sc.alphas[0]
        curves: dict[str, dict[str, list[tuple[int, float, float]]]] = {}
        for r in self.sets_rows:
            ok = self._sets_records(r.label, a)[1]
            stats = {(key, S): mean_std([x.get(f"{key}@{S}") for x in ok]) for key in ("chao", "sec", "correlation") for S in sc.sizes}
            curves[r.label] = {}
            for (key, S), (m, s) in stats.items():
                if math.isfinite(m):
                    curves[r.label].setdefault(key, []).append((S, m, s if math.isfinite(s) else 0.0))
        title = f"{self.task.name}: drawn segmentations against the number of draws S (α = {a:g})"
        note = f"{title} — CONSIGN's Figs. 2–4: Chao1, SEC and mean |correlation|, mean ± std over splits; CONSIGN (K = 2, 5) against pixel-wise"
        self.fig("sets-diversity", F.diversity_figure(curves, self.cfg.figures.dpi, title), note + " APS when all are in the plan.")
        # a row of draws from each calibrated set, for one test image of split 0
        view = self.tp.sets_view
        assert view is not None
        rec0 = {x["method"]: x for x in self.res["sets_records"] if x["alpha"] == a and "infeasible" not in x and x["split"] == 0}
        if not rec0:
            return
        drawn = next(iter(rec0.values()))["draw_images"]
        ident = next((c for c in drawn if np.any(np.asarray(view.case(view.ids.index(c)).label_map) > 0)), drawn[0])  # the first with a structure
        case = view.case(view.ids.index(ident))
        draws = {}
        for r in self.sets_rows:
            if r.label in rec0:
                assert isinstance(r.spec, MethodSpec)
                fam = bound_family(r.spec, a)
                draws[r.label] = fam.sample(fam.prepare(case), rec0[r.label]["lambda"], sc.show_draws, np.random.default_rng([self.cfg.seed, 5]))
        x = case.samples if case.samples is not None else case.class_probs
        assert x is not None and case.label_map is not None  # a sets-of-segmentations case, read with its truth
        mean = (x.mean(axis=0) if case.samples is not None else x).argmax(axis=0)
        title = f"{self.task.name} · {ident}: draws from each calibrated set (α = {a:g}, split 0)"
        png = F.draws_figure(self.task.image_of(ident), case.label_map, mean, draws, case.n_labels or 0, self.cfg.figures.dpi, title)
        self.fig("sets-draws", png, f"{title} — CONSIGN's Fig. 5: the truth, the argmax of the mean softmax and {sc.show_draws} draws per set.")


def _provenance_lines(tp: TaskPlan) -> list[str]:
    p = tp.task.provenance
    lines = [f"**{tp.task.name}** — {tp.task.title}", f"data: `{p.get('data')}` ({p.get('kind')})"]
    view = tp.mask_view or tp.sets_view
    if view is not None:
        lines.append(f"{len(view)} images in {len(set(view.groups))} groups; groups from {p.get('groups_from', 'none (each image its own group)')}")
    if tp.sets_view is not None and tp.mask_view is not None and len(tp.sets_view) != len(tp.mask_view):
        lines.append(f"sets of segmentations on the first {len(tp.sets_view)} images (whole groups)")
    inf = p.get("infer") or {}
    if src := inf.get("source") or {}:
        samples = f", {inf['samples'].get('n')} {inf['samples'].get('scheme')} samples" if inf.get("samples") else ""
        run = f"`segcp infer --task {src.get('task')} --split {src.get('split')}` (split seed {src.get('split_seed')})"
        lines.append(f"model outputs: {run}{samples}")
    for m in p.get("models", []):
        lines.append(f"model: `{m.get('path')}` (task {m.get('task')}, dropout {m.get('dropout')}, seed {m.get('seed')}, validation Dice ")
        lines[-1] += f"{fmt(m.get('val_dice'))}, segcp {m.get('segcp_version')})"
    if d := p.get("model_dice") or {}:
        lines.append("model Dice (segcp infer): " + ", ".join(f"{k} {fmt(v)}" for k, v in d.items()))
    if ex := p.get("export") or {}:
        lines.append(f"images and truth: `segcp` export of task {ex.get('task')} ({ex.get('dataset')}, label {ex.get('label')}) from ")
        lines[-1] += f"`{ex.get('root')}`, part {ex.get('part')}, seed {ex.get('seed')}"
    lines.append(f"distances in {tp.task.units}" + (" (the files store no spacing)" if tp.task.units == "pixels" else " (the data's spacing)"))
    return lines + [f"note: {n}" for n in tp.notes]


def build_documents(cfg: PlanConfig, plan: Plan, results: Rows, engine: Engine, meta: dict[str, Any], draw: bool = True) -> tuple[Document, Rows]:
    """(the report: one :class:`Document`, every task; the summary rows of results.json)."""
    doc = Document(cfg.title)
    doc.section("first")
    doc.h(1, cfg.title)
    if cfg.description:
        doc.p(cfg.description)
    commit, cache = meta["commit"], meta["cache"]
    ctext = (commit.get("commit") or f"unknown ({commit.get('note')})") + (" with uncommitted changes" if commit.get("dirty") else "")
    reuse = f"(cache `{cache['root']}`: {cache['hits']['records']} split records reused, {cache['misses']['records']} computed)."
    doc.p(f"segcp {__version__}, commit `{ctext}`; run {meta['started']} on {meta['machine']}; computed in {meta['seconds']:.0f} s {reuse}")
    doc.p(f"Command: `{meta['command']}`")
    doc.h(3, "Data")
    for tp in plan.tasks:
        doc.items(_provenance_lines(tp))
    doc.h(3, "Plan")
    ab = cfg.ablation
    items = [f"{cfg.splits} random calibration/test splits per task (seed {cfg.seed}), whole groups on one side; calibration size n = {cfg.n_cal}"]
    items.append(f"α ∈ {alpha_set(cfg.alphas)} (Table 1); Dice curve at α ∈ {alpha_set(sorted(set(cfg.alphas) | set(cfg.curve_alphas)))}")
    items.append("methods: " + "; ".join(f"`{m.text}`" for m in cfg.methods) + f"; baseline: {cfg.baseline_label}")
    if ab:
        items.append(f"ablations at α = {ab.alpha:g}: n ∈ {list(ab.n_cal)}; " + "; ".join(f"{k} ∈ {list(v)}" for k, v in ab.params.items()))
    doc.items(items)
    doc.pre(cfg.text, None)
    summaries: Rows = []
    for tp, res in zip(plan.tasks, results, strict=True):
        tr = TaskReport(doc, cfg, tp, res, engine, draw)
        tr.write()
        summaries += tr.summary_rows
    doc.section("appendix")
    doc.h(2, "Run", anchor="run")
    doc.p(f"Seconds per stage in this run (on {meta['executor']}; CPU: this process only; work found in the cache costs only its reading):")
    doc.table(Table("timings", ["stage", "wall s", "CPU s"], [[k, f"{v:.1f}", fmt(meta["cpu"].get(k), 1)] for k, v in meta["timings"].items()]))
    if meta.get("features"):
        done = "; ".join(f"{v['images']} images in {v['seconds']:.1f} s" for v in meta["features"].values())
        doc.p(f"Encoder features computed or read in this run: {done}")
    return doc, summaries


def tidy_rows(results: Rows, plan: Plan) -> Rows:
    """One row per (task, method, calibration size, α, split, metric)."""
    out: list[dict[str, Any]] = []
    rows = [(tp.task.name, r) for tp in plan.tasks for r in tp.rows]
    fam_of = {(t, r.label): ("" if isinstance(r.spec, MethodSpec) else "tuned:") + r.spec.candidates[0].method for t, r in rows}

    def add(r: dict[str, Any], family: str, n_cal: Any, alpha: Any, metrics: Sequence[str], note: str) -> None:
        out.extend(dict(zip(TIDY_COLUMNS, (r["task"], r["method"], family, n_cal, alpha, r["split"], m, r[m], note), strict=True)) for m in metrics)

    for res in results:
        for r in res["records"]:
            metrics = [m for m in ("lambda", *METRICS, "set_size", *EXTRAS, *LOSS_EXTRAS, *BAND_SPLIT) if m in r]
            note = r.get("chosen") or ("infeasible" if "infeasible" in r else "")
            add(r, fam_of.get((r["task"], r["method"]), ""), r["n_cal"], r["alpha"], metrics, note)
        for r in res.get("model", []):
            add(r, "model", r["n_cal"], "", (*METRICS, "set_size", *EXTRAS), "")
        for r in res["sets_records"]:
            metrics = [m for m in r if m in ("lambda", "coverage") or "@" in m or m == "draw_cpu_seconds_per_image"]
            add(r, fam_of.get((r["task"], r["method"]), ""), r["n_cal_actual"], r["alpha"], metrics, "infeasible" if "infeasible" in r else "")
    return out


def tidy_csv(rows: Rows) -> str:
    """The tidy rows as CSV text (floats written exactly: ``repr``)."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=TIDY_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        v = r["value"]
        text = "" if v is None or (isinstance(v, float) and not math.isfinite(v)) else repr(float(v)) if isinstance(v, float) else v
        w.writerow(r | {"value": text})
    return buf.getvalue()
