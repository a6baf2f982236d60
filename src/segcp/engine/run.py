"""The one evaluation engine (:class:`Engine`): a plan's rows × calibration sizes × α × splits, cached by
content, its per-image work on an executor (tasks carry a :class:`~segcp.engine.tasks.ViewRef` and image
indices, never arrays), the same bits on any executor. The steps: docs/design.md, "The evaluation engine".
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.calibration import LossCurves
from segcp.calibration.ltt import StepLosses
from segcp.engine.band import BAND_IDENTITY, BAND_SPLIT, band_image, band_split_record, image_volume, is_band, volume_fit
from segcp.engine.cache import MAP_SECONDS, BenchmarkCache, digest
from segcp.engine.measure import (
    EXTRAS,
    LOSS_EXTRAS,
    OVERLAP,
    MaskEvaluator,
    criterion_value,
    exceedance,
    exceeds,
    loss_record,
    nanmean,
    split_record,
    split_risk,
)
from segcp.engine.plan import Need, Plan, Row, TaskPlan
from segcp.engine.select import calibrate, chosen_label, select
from segcp.engine.splits import random_cal_test_splits
from segcp.engine.tasks import TaskView, ViewRef, view_of
from segcp.errors import SegcpError
from segcp.jobs import worker_family
from segcp.methods.base import BAND_GUARANTEES
from segcp.metrics import METRICS, chao1, evaluate_set, mean_abs_correlation, mean_se, sampled_coverage
from segcp.parallel import Executor, map_ids
from segcp.progress import Bar
from segcp.specs import MethodSpec, TunedSpec

__all__ = ["MAP_MEMORY", "MODEL", "Engine", "bound_family"]

#: Keep at most this many bytes of score maps in each process's memory (the rest: disk cache or recompute).
MAP_MEMORY = 1_500_000_000
#: The label of the base model's own row.
MODEL = "model (p ≥ 0.5)"


def bound_family(spec: MethodSpec, alpha: float) -> Any:
    """The family of a sets-of-segmentations row as calibrated at ``alpha``."""
    return spec.estimator(alpha).family.bind_alpha(alpha)


def _num(v: Any) -> float:
    return math.nan if v is None else float(v)


@dataclass(frozen=True)
class FamilyRef:
    """What a worker needs to score a family: its setting, its cache key and the cache (None: off)."""

    spec: MethodSpec
    fkey: str
    cache: str | None


_MAPS: OrderedDict[tuple[str, str], NDArray[np.float64]] = OrderedDict()  # (family key, image key) → score map
_MAP_BYTES = [0]


def _keep(key: tuple[str, str], scores: NDArray[np.float64]) -> None:
    if key not in _MAPS and scores.nbytes <= MAP_MEMORY:
        _MAPS[key] = scores
        _MAP_BYTES[0] += scores.nbytes
        while _MAP_BYTES[0] > MAP_MEMORY:
            _MAP_BYTES[0] -= _MAPS.popitem(last=False)[1].nbytes


def _estimator(spec: MethodSpec) -> Any:
    """The setting's estimator as this process runs it (a worker's run-time threads; exact curves — a controlled
    loss's :class:`~segcp.risk.RiskSegmenter` has only exact step functions)."""
    est = spec.estimator()
    if spec.loss is None:
        est = est.set_params(curve_form="exact")
    return est.set_params(method=worker_family(est.family), method_params=None)


def _prepared_map(est: Any, case: Any) -> tuple[list[Any], NDArray[np.float64]]:
    """What a row's loss curve is computed from and the map its sets threshold: the prepared case and the
    family's score map; for a two-sided row (band, band-risk) the case and its signed map t."""
    if est.guarantee in BAND_GUARANTEES:
        return [case], est.family.signed_map(case)
    prepared = est.prepare([case])
    return prepared, est.family.scores(prepared[0])


def _scores(fam: FamilyRef, est: Any, key: str, view: TaskView, i: int) -> NDArray[np.float64]:
    """An image's score map: from this process's memory, the disk cache, or computed."""
    m = _MAPS.get((fam.fkey, key))
    if m is None and fam.cache is not None and BenchmarkCache(fam.cache).has("maps", fam.fkey, key):
        m = BenchmarkCache(fam.cache).get_map(fam.fkey, key)
    if m is None:
        m = _prepared_map(est, view.case(i))[1]
    _keep((fam.fkey, key), m)
    return m


def _curves_task(job: tuple[ViewRef, FamilyRef, list[tuple[int, str]]]) -> list[tuple[LossCurves | StepLosses, float, int]]:
    """Per image: its loss curve, the CPU seconds of its score map and its truth's size (voxels)."""
    ref, fam, items = job
    view, est = view_of(ref), _estimator(fam.spec)
    out = []
    for i, key in items:
        case = view.case(i)
        t0 = time.process_time()  # CPU time: stable on a shared machine (the score maps are single-threaded)
        prepared, scores = _prepared_map(est, case)
        secs = time.process_time() - t0
        if fam.cache is not None and secs > MAP_SECONDS:
            BenchmarkCache(fam.cache).put_map(fam.fkey, key, scores)
        _keep((fam.fkey, key), scores)
        assert case.mask is not None  # a pixel-set case, read with its truth
        out.append((est.curves(prepared), secs, int(np.count_nonzero(case.mask))))
    return out


def _volumes_task(job: tuple[ViewRef, list[int]]) -> list[dict[str, Any]]:
    """Per image: what its direct volume interval reads (:func:`segcp.engine.band.image_volume`)."""
    ref, items = job
    view = view_of(ref)
    return [image_volume(view.case(i)) for i in items]


def _band_task(job: tuple[ViewRef, FamilyRef, list[tuple[int, str, list[tuple[float, float, dict[str, Any]]]]]]) -> list[list[dict[str, float]]]:
    """Per image: its two-sided set measured at each (λ̂, α, direct volume interval) asked
    (:func:`segcp.engine.band.band_image`), from its signed map."""
    ref, fam, items = job
    view, est = view_of(ref), _estimator(fam.spec)
    return [[band_image(view.case(i), est.family, _scores(fam, est, key, view, i), lam, a, fit) for lam, a, fit in asked] for i, key, asked in items]


Work = dict[int, dict[float, bool]]  # per family index: the λ to measure at (value: with the surface metrics)
Metrics = dict[str, float]


def _measure_task(job: tuple[ViewRef, list[FamilyRef], list[tuple[int, str, bool, Work]]]) -> list[tuple[int, Any, dict[int, dict[float, Metrics]]]]:
    """Per image: its truth's size, the model mask's metrics (when asked) and each family's set metrics at each λ."""
    ref, fams, items = job
    view = view_of(ref)
    ests = [_estimator(f.spec) for f in fams]
    out = []
    for i, key, model, work in items:
        case = view.case(i)
        truth = case.mask
        assert truth is not None  # a pixel-set case, read with its truth
        got = {}
        for k, lams in work.items():
            ev = MaskEvaluator(_scores(fams[k], ests[k], key, view, i), truth, case.model_mask, case.spacing)
            got[k] = {lam: ev.evaluate(lam, surface=surface) for lam, surface in lams.items()}
        out.append((int(np.count_nonzero(truth)), evaluate_set(case.model_mask, truth, case.model_mask, case.spacing) if model else None, got))
    return out


def _sets_curves_task(job: tuple[ViewRef, MethodSpec, float, list[int]]) -> list[tuple[LossCurves | None, float, str | None]]:
    """Per image: its 0/1 curve (score λ*) at α; an internal error of the search is returned, not raised."""
    from segcp.conformal import ConformalSegmenter

    ref, spec, alpha, items = job
    view = view_of(ref)
    est = ConformalSegmenter(bound_family(spec, alpha), alpha, guarantee=spec.guarantee)
    out: list[tuple[LossCurves | None, float, str | None]] = []
    for i in items:
        t0 = time.process_time()
        try:
            out.append((est.curves([view.case(i)]), time.process_time() - t0, None))  # type: ignore[arg-type]  # 0/1 curves are exact
        except SegcpError:
            raise
        except Exception as exc:  # a bug in the family's search: reported, counted as never in the set
            out.append((None, time.process_time() - t0, f"{type(exc).__name__}: {exc}"))
    return out


def _draws_task(job: tuple[ViewRef, MethodSpec, float, Any, int, list[tuple[int, float, list[int], list[str]]]]) -> list[dict[str, Any]]:
    """Per split: draws from its set on a few test images (seeded by seed, split, image key) and their metrics."""
    ref, spec, alpha, sc, seed, items = job
    view = view_of(ref)
    fam = bound_family(spec, alpha)
    out = []
    for s, lam, pick, seeds in items:
        per: list[dict[str, float]] = []
        t_draw = 0.0
        for i, key in zip(pick, seeds, strict=True):
            case = view.case(i)
            prepared = fam.prepare(case)
            t0 = time.process_time()
            draws = fam.sample(prepared, lam, sc.draws, np.random.default_rng([seed, s, int(key[:12], 16)]))
            t_draw += time.process_time() - t0
            assert case.label_map is not None  # a sets-of-segmentations case, read with its truth
            m: dict[str, float] = {}
            for S in sc.sizes:
                m[f"chao@{S}"] = chao1(draws[:S])
                m[f"sec@{S}"] = sampled_coverage(draws[:S], case.label_map, float(fam.agreement_level))
                m[f"correlation@{S}"] = mean_abs_correlation(draws[:S], case.n_labels if case.samples is not None else None)
            per.append(m)
        rec: dict[str, Any] = {key: nanmean([p[key] for p in per]) for key in (per[0] if per else [])}
        out.append(rec | {"draw_images": [view.ids[i] for i in pick], "draw_cpu_seconds_per_image": t_draw / max(len(pick), 1)})
    return out


class Engine:
    """Runs plans (and the pieces front ends need) against a cache, on an executor (``chunk_size``: images per task)."""

    def __init__(self, cache: BenchmarkCache, executor: Executor, *, show_progress: bool = True, chunk_size: int | None = None) -> None:
        self.cache, self.executor, self.show_progress, self.chunk_size = cache, executor, show_progress, chunk_size
        self.timings: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)  # CPU seconds of this process per stage
        self.features: dict[str, dict[str, Any]] = {}
        self.bar = Bar("", 0, enabled=False)
        self._fkeys: dict[Any, str] = {}
        self._curves: dict[str, tuple[LossCurves | StepLosses, list[float]]] = {}
        self._held: set[str] = set()  # families whose score maps this process holds for the report

    def family_key(self, spec: MethodSpec | TunedSpec, family: Any = None) -> str:
        """The cache key of a row's records (a tuned row: its candidates and how it chooses; ``family``: bound to an α)."""
        if isinstance(spec, TunedSpec):
            return self.cache.family_key(["tuned", spec.criterion, spec.folds, spec.seed, [self.family_key(c) for c in spec.candidates]])
        k: tuple[Any, ...] = (spec.method, digest(spec.params), spec.guarantee, spec.tau, None if family is None else family.key)
        if spec.loss is not None:  # a controlled-loss row: its loss, δ and p-value too
            k += (digest([spec.loss, spec.loss_params, spec.delta, spec.pvalue]),)
        if k not in self._fkeys:
            fam = family or spec.build()
            ident = [fam.key, fam.cache_identity(), fam.check_guarantee(spec.guarantee), float(spec.tau)]
            more = ([BAND_IDENTITY] if is_band(spec) else []) + ([spec.estimator().identity()] if spec.loss is not None else [])
            self._fkeys[k] = self.cache.family_key(ident + more)
        return self._fkeys[k]

    def _ref(self, spec: MethodSpec) -> FamilyRef:
        return FamilyRef(spec, self.family_key(spec), str(self.cache.root) if self.cache.enabled else None)

    def _rkeys(self, tp: TaskPlan, need: Need, tuned: bool) -> list[str]:
        """The keys of the records that serve a need, its own level's last (an every-metric record serves any)."""
        cal, test = tp.splits[need.n_cal][need.split]
        keys = tp.mask_view.keys  # type: ignore[union-attr]
        levels = ("all", "overlap") if need.level == "overlap" else ("all",)
        return [digest(["mask", need.alpha, lv, [keys[i] for i in cal], [keys[i] for i in test], need.split if tuned else None]) for lv in levels]

    def _lookup(self, fkey: str, keys: list[str]) -> dict[str, Any] | None:
        return next(self.cache.get_record(fkey, k) for k in keys if k == keys[-1] or self.cache.has("records", fkey, k))

    def _map(self, fn: Callable[[Any], list[Any]], head: tuple[Any, ...], items: Sequence[Any], advance: bool = True) -> list[Any]:
        """``fn((*head, chunk))`` over chunks of ``items`` on the executor; the per-item results in order."""
        return map_ids(self.executor, fn, head, items, chunk_size=self.chunk_size, bar=self.bar if advance else Bar("", 0, enabled=False))

    def _cached_curves(self, fkey: str, view: TaskView) -> tuple[list[Any], list[int]]:
        """Every image's cached (curve, CPU seconds), None where absent; the images without."""
        hits: list[Any] = [self.cache.get_curve(fkey, key) for key in view.keys]
        return hits, [i for i, h in enumerate(hits) if h is None]

    def curves(self, view: TaskView, spec: MethodSpec) -> tuple[LossCurves | StepLosses, list[float]]:
        """Every image's loss curve of a setting (a controlled loss under Learn then Test: its step functions), and
        the CPU seconds of each score map (cache, else computed)."""
        fam = self._ref(spec)
        if fam.fkey not in self._curves:
            hits, todo = self._cached_curves(fam.fkey, view)
            if todo:
                family = spec.build()
                if family.slow_state and (self.executor.workers <= 1 or family.shares_state_on_disk):
                    self._precompute(family, view, todo)
                self.bar.update(description=f"{view.task.name} · {spec.label}: score maps")
                got = self._map(_curves_task, (view.ref, fam), [(i, view.keys[i]) for i in todo])
                if view.reader is not None:  # --label L: some mask must hold the structure (cached curves passed this check)
                    view.reader.label_seen |= any(n > 0 for _, _, n in got) or len(todo) < len(view)
                    view.reader.require_label_seen()
                for i, (curve, secs, _) in zip(todo, got, strict=True):
                    self.cache.put_curve(fam.fkey, view.keys[i], curve, secs)
                    hits[i] = (curve, secs)
            self._curves[fam.fkey] = (type(hits[0][0]).concat([h[0] for h in hits]), [h[1] for h in hits])
        return self._curves[fam.fkey]

    def _precompute(self, family: Any, view: TaskView, todo: list[int]) -> None:
        """Encoder features of the images about to be scored, in batches, into the shared cache."""
        done = self.features.setdefault(digest(family.cache_identity()), {"images": 0, "seconds": 0.0, "encoder": family.cache_identity()})
        self.bar.update(description=f"{view.task.name}: encoder features")
        t0 = time.perf_counter()
        family.precompute([view.case(i) for i in todo])
        done["images"] += len(todo)
        done["seconds"] += time.perf_counter() - t0

    def measure(
        self,
        view: TaskView,
        specs: Sequence[MethodSpec],
        work: dict[tuple[int, int], dict[float, bool]],
        model: Sequence[int] = (),
        advance: bool = True,
    ) -> tuple[dict[tuple[int, int], dict[float, Metrics]], dict[int, int], dict[int, Metrics]]:
        """Measure sets on the executor, each image read once: ``work[(k, i)]``: {λ: with surface metrics} of
        ``specs[k]``'s set of image ``i``; ``model``: images whose model mask to measure. Returns (metrics by
        (k, i) and λ, truth sizes, model metrics)."""
        per_image: dict[int, Work] = defaultdict(dict)
        for (k, i), lams in sorted(work.items()):
            per_image[i][k] = lams
        images = sorted(set(per_image) | set(model))
        items = [(i, view.keys[i], i in model, per_image[i]) for i in images]
        got = self._map(_measure_task, (view.ref, [self._ref(s) for s in specs]), items, advance)
        measured = {(k, i): ms for i, (_, _, per) in zip(images, got, strict=True) for k, ms in per.items()}
        return measured, {i: g[0] for i, g in zip(images, got, strict=True)}, {i: g[1] for i, g in zip(images, got, strict=True) if g[1] is not None}

    def scores(self, view: TaskView, spec: MethodSpec, i: int) -> NDArray[np.float64]:
        """One image's score map in this process (figures)."""
        fam = self._ref(spec)
        self._held.add(fam.fkey)
        return _scores(fam, _estimator(spec), view.keys[i], view, i)

    def release(self) -> None:
        """Forget the curves and score maps held for the rows run so far (in this process)."""
        for key in [k for k in _MAPS if k[0] in self._held | set(self._curves)]:
            _MAP_BYTES[0] -= _MAPS.pop(key).nbytes
        self._curves.clear()
        self._held.clear()

    def choose(self, view: TaskView, tuned: TunedSpec, images: Iterable[int], alpha: float, split: int = 0) -> tuple[int, list[dict[str, Any]]]:
        """The candidate that group K-fold CV on ``images`` (calibration images only) picks at ``alpha``, and the table."""
        cands = list(tuned.candidates)
        images = [int(i) for i in images]
        surface = tuned.criterion in ("hd95", "assd")

        def values(requests: list[tuple[int, int, float]]) -> list[float]:
            work: dict[tuple[int, int], dict[float, bool]] = defaultdict(dict)
            for c, j, lam in requests:
                work[(c, images[j])][lam] = surface
            measured, truth, _ = self.measure(view, cands, work, advance=False)
            return [criterion_value(tuned.criterion, measured[(c, images[j])][lam], truth[images[j]]) for c, j, lam in requests]

        curves = [self.curves(view, c)[0].take(images) for c in cands]
        ests, groups = [c.estimator() for c in cands], [view.groups[i] for i in images]
        return select(curves, ests, groups, alpha, values, criterion=tuned.criterion, folds=tuned.folds, seed=tuned.seed + split)  # type: ignore[arg-type]  # tuned rows: loss curves

    def run(self, plan: Plan) -> list[dict[str, Any]]:
        """Per task of ``plan``: ``records``, ``model``, ``validity``, ``sets_records``, ``sets_validity``,
        ``seconds_per_image``, ``failures``, ``truth_sizes``."""
        t0 = time.perf_counter()  # planning: what the bar counts
        total = 0
        for tp in plan.tasks:
            for row in tp.rows:
                if row.kind == "sets":
                    total += len(tp.sets_view) + len(tp.sets_splits) * len(plan.cfg.sets.alphas)  # type: ignore[arg-type]
                    continue
                fkey, tuned = self.family_key(row.spec), isinstance(row.spec, TunedSpec)
                missing = [n for n in row.needs if not any(self.cache.has("records", fkey, k) for k in self._rkeys(tp, n, tuned))]
                if missing:
                    assert tp.mask_view is not None  # a pixel-set row's view
                    total += sum(not self.cache.has("curves", self.family_key(c), k) for c in row.spec.candidates for k in tp.mask_view.keys)
                    total += len({int(i) for n in missing for i in tp.splits[n.n_cal][n.split][1]})
        self.timings["planning"] = time.perf_counter() - t0
        with Bar("segcp", max(total, 2), enabled=self.show_progress) as self.bar:
            return [self._run_task(plan, tp) for tp in plan.tasks]

    def _run_task(self, plan: Plan, tp: TaskPlan) -> dict[str, Any]:
        res: dict[str, Any] = {"records": [], "sets_records": [], "validity": [], "sets_validity": [], "seconds_per_image": {}, "failures": []}
        for row in tp.rows:
            with self.stage(f"{tp.task.name}: {row.label}"):
                if row.kind == "mask" and row.needs:
                    self._mask_row(plan, tp, row, res)
                elif row.kind == "sets":
                    self._sets_row(plan, tp, row, res)
                self.release()
        if tp.mask_view is not None and tp.splits:
            with self.stage(f"{tp.task.name}: model row"):
                res["model"], res["truth_sizes"] = self._model_rows(tp)
        return res

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the wall and CPU (this process) seconds of the block to ``timings`` and ``cpu``."""
        t0, c0 = time.perf_counter(), time.process_time()
        yield
        self.timings[name] += time.perf_counter() - t0
        self.cpu[name] += time.process_time() - c0

    def _mask_row(self, plan: Plan, tp: TaskPlan, row: Row, res: dict[str, Any]) -> None:
        view = tp.mask_view
        assert view is not None
        tuned = isinstance(row.spec, TunedSpec)
        fkey = self.family_key(row.spec)
        found = {need: self._lookup(fkey, self._rkeys(tp, need, tuned)) for need in row.needs}
        missing = [n for n, rec in found.items() if rec is None]
        if missing:
            found.update(self._measure_needs(tp, row, missing))
        res["seconds_per_image"][row.label] = math.nan if tuned else self._seconds(view, row.spec.candidates[0])
        for need in row.needs:
            numeric = (*METRICS, *EXTRAS, *LOSS_EXTRAS, *BAND_SPLIT, "lambda", "set_size")
            rec = {m: (_num(v) if m in numeric else v) for m, v in found[need].items()}  # type: ignore[union-attr]
            res["records"].append({"task": tp.task.name, "method": row.label, "n_cal": need.n_cal, "alpha": need.alpha, "split": need.split} | rec)
        if row.main and not tuned and plan.cfg.validity_splits:  # the guarantee over many more splits, from the loss curves only
            res["validity"] += self._validity(plan, tp, row, fkey)

    def _seconds(self, view: TaskView, spec: MethodSpec) -> float:
        """The mean CPU seconds of a setting's score maps (of the first 64 images, when from the cache)."""
        fkey = self.family_key(spec)
        if fkey in self._curves:
            return nanmean(self._curves[fkey][1])
        return nanmean([h[1] for key in view.keys[:64] if (h := self.cache.get_curve(fkey, key)) is not None])

    def _measure_needs(self, tp: TaskPlan, row: Row, missing: list[Need]) -> dict[Need, dict[str, Any]]:
        """Calibrate every missing need and measure its test sets (each image once)."""
        if is_band(row.spec):
            return self._band_needs(tp, row, missing)
        view = tp.mask_view
        assert view is not None
        tuned = isinstance(row.spec, TunedSpec)
        cands = list(row.spec.candidates)
        curves = [self.curves(view, c)[0] for c in cands]
        lam_of: dict[Need, tuple[int, float | str, dict[str, Any]]] = {}  # need → (candidate, λ̂ or why not, what the record adds)
        by_split: dict[tuple[int, int], list[Need]] = defaultdict(list)
        for need in missing:
            by_split[(need.n_cal, need.split)].append(need)
        self.bar.update(description=f"{tp.task.name} · {row.label}: calibrating")
        for (n_cal, s), needs in by_split.items():
            cal = tp.splits[n_cal][s][0]
            alphas = list(dict.fromkeys(n.alpha for n in needs))
            if not isinstance(row.spec, TunedSpec):
                lams = calibrate(cands[0].estimator(), curves[0].take(cal), alphas)
                lam_of.update({n: (0, lams[n.alpha], {}) for n in needs})
                continue
            for a in alphas:
                k, table = self.choose(view, row.spec, cal, a, s)
                lam = calibrate(cands[k].estimator(), curves[k].take(cal), [a])[a]
                extra = {"chosen": chosen_label(cands[k].label, table, a), "candidate": k, "cv": [t["value"] for t in table]}
                extra["cv_alpha"] = table[0]["alpha"]
                lam_of.update({n: (k, lam, extra) for n in needs if n.alpha == a})
        work: dict[tuple[int, int], dict[float, bool]] = defaultdict(dict)  # (candidate, image) → λ: with surface metrics
        for n, (k, lam, _) in lam_of.items():
            if isinstance(lam, str):  # no λ̂: nothing to measure
                continue
            for i in tp.splits[n.n_cal][n.split][1]:
                work[(k, int(i))][lam] = work[(k, int(i))].get(lam, False) or n.level == "all"
        self.bar.update(description=f"{tp.task.name} · {row.label}: measuring sets")
        measured, truth, _ = self.measure(view, cands, work)
        out: dict[Need, dict[str, Any]] = {}
        for n, (k, lam, extra) in lam_of.items():
            cal, test = tp.splits[n.n_cal][n.split]
            keys = [m for m in METRICS if n.level == "all" or m in OVERLAP]
            if isinstance(lam, str):  # e.g. sets that never cover: no valid λ on this split
                result = {"lambda": math.nan, "infeasible": lam, "level": n.level} | {m: math.nan for m in (*keys, *EXTRAS)}
            else:
                per = [measured[(k, int(i))][lam] for i in test]
                result = {"lambda": lam, "level": n.level} | split_record(per, [truth[int(i)] for i in test], keys)
            if cands[k].loss is not None:  # a controlled-loss row: its loss and test risk, from the step functions at λ̂
                nan = dict.fromkeys(LOSS_EXTRAS, math.nan)
                result |= nan if isinstance(lam, str) else loss_record(split_risk(curves[k], test, lam), n.alpha)
                extra = extra | {"controlled": cands[k].loss, "delta": cands[k].delta}
            out[n] = {"n_cal_actual": len(cal), "n_test": len(test)} | extra | result
            self.cache.put_record(self.family_key(row.spec), self._rkeys(tp, n, tuned)[-1], out[n])
        return out

    def image_volumes(self, view: TaskView) -> list[dict[str, Any]]:
        """Every image's :func:`segcp.engine.band.image_volume` (cache, else computed on the executor)."""
        fkey = self.cache.family_key(["image volumes", "probability_volume"])
        per = {i: rec for i, key in enumerate(view.keys) if (rec := self.cache.get_record(fkey, key, what="volumes")) is not None}
        todo = [i for i in range(len(view)) if i not in per]
        for i, rec in zip(todo, self._map(_volumes_task, (view.ref,), todo, advance=False), strict=True):
            self.cache.put_record(fkey, view.keys[i], rec)
            per[i] = rec
        return [per[i] for i in range(len(view))]

    def _band_needs(self, tp: TaskPlan, row: Row, missing: list[Need]) -> dict[Need, dict[str, Any]]:
        """A two-sided row (:mod:`segcp.engine.band`): calibrate every missing need through the estimator, fit
        the split's direct volume interval, measure each test image's band once per need on the executor."""
        view, spec = tp.mask_view, row.spec
        assert view is not None
        if not isinstance(spec, MethodSpec):
            raise SegcpError(f"{row.label}: tuned rows of two-sided sets (guarantee band, band-risk) are not built; give one setting")
        curves, volumes = self.curves(view, spec)[0], self.image_volumes(view)
        self.bar.update(description=f"{tp.task.name} · {row.label}: calibrating")
        by_split: dict[tuple[int, int], list[Need]] = defaultdict(list)
        for need in missing:
            by_split[(need.n_cal, need.split)].append(need)
        lam_of: dict[Need, tuple[float | str, dict[str, Any] | None]] = {}  # need → (λ̂ or why not, direct volume interval)
        for (n_cal, s), needs in by_split.items():
            cal = tp.splits[n_cal][s][0]
            lams = calibrate(spec.estimator(), curves.take(cal), list(dict.fromkeys(n.alpha for n in needs)))
            for n in needs:
                lam_of[n] = (lams[n.alpha], None if isinstance(lams[n.alpha], str) else volume_fit([volumes[int(i)] for i in cal], n.alpha))
        asked: dict[int, list[tuple[float, float, dict[str, Any]]]] = defaultdict(list)  # image → (λ̂, α, interval)
        where: dict[tuple[Need, int], int] = {}
        for n, (lam, fit) in lam_of.items():
            if not isinstance(lam, str) and fit is not None:
                for i in tp.splits[n.n_cal][n.split][1]:
                    where[(n, int(i))] = len(asked[int(i)])
                    asked[int(i)].append((lam, n.alpha, fit))
        self.bar.update(description=f"{tp.task.name} · {row.label}: measuring bands")
        images = sorted(asked)
        measured = dict(zip(images, self._map(_band_task, (view.ref, self._ref(spec)), [(i, view.keys[i], asked[i]) for i in images]), strict=True))
        out: dict[Need, dict[str, Any]] = {}
        for n, (lam, fit) in lam_of.items():
            cal, test = tp.splits[n.n_cal][n.split]
            if isinstance(lam, str) or fit is None:
                result = {"lambda": math.nan, "infeasible": str(lam), "level": n.level} | dict.fromkeys(BAND_SPLIT, math.nan)
            else:
                per = [measured[int(i)][where[(n, int(i))]] for i in test]
                result = {"lambda": lam, "level": n.level} | band_split_record(per, split_risk(curves, test, lam), fit["unit"])
            out[n] = {"n_cal_actual": len(cal), "n_test": len(test)} | result
            self.cache.put_record(self.family_key(spec), self._rkeys(tp, n, False)[-1], out[n])
        return out

    @staticmethod
    def _test_losses(
        est: Any,
        curves: LossCurves | StepLosses,
        groups: list[str],
        n_cal: int,
        n_splits: int,
        seed: int,
        alphas: Sequence[float],
        covered: bool = False,
    ) -> dict[float, list[tuple[bool, float]]]:
        """The guarantee over many splits from the curves alone: per α and split, whether λ̂ exists and the mean
        test loss at it (at λ = +∞ where none; ``covered``: of 1 − loss)."""
        splits = list(random_cal_test_splits(groups, n_cal, n_splits, seed))
        lam = {a: np.full(len(splits), np.inf) for a in alphas}
        for s, (cal, _) in enumerate(splits):
            for a, v in calibrate(est, curves.take(cal), alphas).items():
                if not isinstance(v, str):
                    lam[a][s] = v
        out = {}
        for a in alphas:
            losses = curves.evaluate(lam[a])
            means = [float(((1.0 - losses[test, s]) if covered else losses[test, s]).mean()) for s, (_, test) in enumerate(splits)]
            out[a] = [(bool(np.isfinite(lam[a][s])), m) for s, m in enumerate(means)]
        return out

    def _validity(self, plan: Plan, tp: TaskPlan, row: Row, fkey: str) -> list[dict[str, Any]]:
        view = tp.mask_view
        assert view is not None and isinstance(row.spec, MethodSpec)
        cfg = plan.cfg
        rkey = digest(["validity", list(cfg.alphas), cfg.n_cal, cfg.validity_splits, cfg.seed, view.keys])
        rec = self.cache.get_record(fkey, rkey, what="validity")
        if rec is None:
            curves = self.curves(view, row.spec)[0]
            checks = self._test_losses(row.spec.estimator(), curves, view.groups, cfg.n_cal, cfg.validity_splits, cfg.seed + 1, cfg.alphas)
            rows = []
            for a, per in checks.items():
                fnr, se = mean_se([x for ok, x in per if ok])
                rows.append({"alpha": a, "splits": len(per), "infeasible": sum(not ok for ok, _ in per), "fnr": fnr, "fnr_se": se})
                if row.spec.loss is not None or is_band(row.spec):  # its guarantee's test risk (not the FNR)
                    rows[-1] = {k: rows[-1].pop(k) for k in ("alpha", "splits", "infeasible")} | {"risk": fnr, "risk_se": se}
                if row.spec.loss is not None:  # a controlled loss: how often that risk exceeds α
                    rows[-1]["risk_exceeds"] = exceedance([exceeds(x, a) for ok, x in per if ok], len(per))
            rec = {"rows": rows}
            self.cache.put_record(fkey, rkey, rec)
        return [
            dict(r, method=row.label, task=tp.task.name, **{k: _num(r[k]) for k in ("fnr", "fnr_se", *LOSS_EXTRAS, "risk_se") if k in r})
            for r in rec["rows"]
        ]

    def _model_rows(self, tp: TaskPlan) -> tuple[list[dict[str, Any]], list[int]]:
        """The model's own mask (p ≥ 0.5) on each split's test images, and every image's truth size."""
        view = tp.mask_view
        assert view is not None
        fkey = self.cache.family_key(["model mask (p >= 0.5)"])
        per = {i: rec for i, key in enumerate(view.keys) if (rec := self.cache.get_record(fkey, key, what="model")) is not None}
        todo = [i for i in range(len(view)) if i not in per]
        if todo:
            _, truth, models = self.measure(view, [], {}, model=todo, advance=False)
            for i in todo:
                per[i] = models[i] | {"truth_size": truth[i]}
                self.cache.put_record(fkey, view.keys[i], per[i])
        per = {i: {k: (_num(v) if k != "truth_size" else int(v)) for k, v in r.items()} for i, r in per.items()}
        out = []
        for n_cal, splits in tp.splits.items():
            for s, (cal, test) in enumerate(splits):
                row = split_record([per[int(i)] for i in test], [per[int(i)]["truth_size"] for i in test])
                out.append({"task": tp.task.name, "method": MODEL, "n_cal": n_cal, "split": s, "n_cal_actual": len(cal), "n_test": len(test)} | row)
        return out, [per[i]["truth_size"] for i in range(len(view))]

    def _sets_row(self, plan: Plan, tp: TaskPlan, row: Row, res: dict[str, Any]) -> None:
        from segcp.conformal import ConformalSegmenter

        assert tp.sets_view is not None and isinstance(row.spec, MethodSpec)
        sc, seed = plan.cfg.sets, plan.cfg.seed
        view = tp.task.view(row.spec, sc.max_images)
        if view.ids != tp.sets_view.ids:
            raise SegcpError(f"{tp.task.name}: {row.label} reads other images than the first sets-of-segmentations row")
        for a in sc.alphas:
            fam = bound_family(row.spec, a)
            est = ConformalSegmenter(fam, a, guarantee=row.spec.guarantee)
            fkey = self.family_key(row.spec, fam)
            self.bar.update(description=f"{tp.task.name} · {row.label} (α={a:g}): scores λ*")
            hits, todo = self._cached_curves(fkey, view)
            for i, (curve, secs, failure) in zip(todo, self._map(_sets_curves_task, (view.ref, row.spec, a), todo), strict=True):
                if curve is None:
                    curve = LossCurves.single([], [], 1.0)
                    res["failures"].append({"method": row.label, "alpha": a, "image": view.ids[i], "error": failure})
                else:
                    self.cache.put_curve(fkey, view.keys[i], curve, secs)
                hits[i] = (curve, secs)
            self.bar.advance(len(view.keys) - len(todo))
            curves = LossCurves.concat([h[0] for h in hits])
            scores = curves.zero_one_scores()
            assert scores is not None  # 0/1 curves: one step each
            res["seconds_per_image"][f"{row.label} (α={a:g})"] = nanmean([h[1] for h in hits])
            recs: dict[int, dict[str, Any]] = {}
            todo_draws = []
            for s, (cal, test) in enumerate(tp.sets_splits):
                parts = [[view.keys[i] for i in cal], [view.keys[i] for i in test]]
                rkey = digest(["sets", a, sc.draws, list(sc.sizes), sc.draw_images, seed, s, *parts])
                rec = self.cache.get_record(fkey, rkey)
                if rec is None:
                    rec = {"n_cal_actual": len(cal), "n_test": len(test)}
                    lam = calibrate(est, curves.take(cal), [a])[a]
                    if isinstance(lam, str):
                        rec |= {"lambda": math.nan, "infeasible": lam}
                    else:
                        rec |= {"lambda": lam, "coverage": float(np.mean(scores[test] <= lam))}
                        rng = np.random.default_rng([seed, s])
                        pick = sorted(int(i) for i in rng.choice(np.asarray(test), size=min(sc.draw_images, len(test)), replace=False))
                        todo_draws.append((s, lam, pick, [view.keys[i] for i in pick]))
                recs[s] = rec | {"_rkey": rkey}
            self.bar.update(description=f"{tp.task.name} · {row.label} (α={a:g}): draws")
            for item, drawn in zip(todo_draws, self._map(_draws_task, (view.ref, row.spec, a, sc, seed), todo_draws), strict=True):
                recs[item[0]] |= drawn
            for s, rec in recs.items():
                rkey = rec.pop("_rkey")
                if not self.cache.has("records", fkey, rkey):
                    self.cache.put_record(fkey, rkey, rec)
                res["sets_records"].append(dict(rec, task=tp.task.name, method=row.label, alpha=a, split=s, **{"lambda": _num(rec.get("lambda"))}))
            # coverage (1 − the 0/1 loss) over many splits: over the feasible ones, and over all (λ̂ = ∞ where none)
            never = int(np.sum(~np.isfinite(scores) & (scores > 0)))
            out: dict[str, Any] = {"task": tp.task.name, "method": row.label, "alpha": a, "splits": sc.validity_splits, "never": never}
            if sc.validity_splits:
                per = self._test_losses(est, curves, view.groups, sc.n_cal or plan.cfg.n_cal, sc.validity_splits, seed + 1, [a], covered=True)[a]
                out["infeasible"] = sum(not ok for ok, _ in per)
                out["coverage"], out["coverage_se"] = mean_se([x for ok, x in per if ok])
                out["coverage_all"], out["coverage_all_se"] = mean_se([x for _, x in per])
            res["sets_validity"].append(out)
