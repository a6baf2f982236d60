"""Run a benchmark plan: every task × method × α × split × calibration size, cached by content.

The plan (:class:`Plan`) lists, per task, the rows (methods, their ablation variants, the base
model) and what each must measure: a *need* is one (calibration size, α, split, metrics). A
need whose record is in the cache costs nothing. For the others, a family's loss curves are
read from the cache or computed (score maps through ``ConformalSegmenter.prepare``, curves
through ``ConformalSegmenter.curves``), each split is calibrated on ``LossCurves.take`` of its
calibration images (``ConformalSegmenter.calibrate_curves``: exact CRC, the same code as
``segcp calibrate``), and each test image is measured once at every λ̂ it needs
(:class:`~segcp.engine.measure.MaskEvaluator`). One progress bar (``segcp.progress.Bar``)
counts the whole plan's work, with an ETA.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.engine.cache import MAP_SECONDS, BenchmarkCache, digest
from segcp.engine.config import BenchmarkConfig
from segcp.engine.measure import OVERLAP, MaskEvaluator
from segcp.engine.tasks import Task, TaskView, open_task
from segcp.calibration import LossCurves
from segcp.data.splits import random_cal_test_splits
from segcp.errors import SegcpError
from segcp.metrics import (
    METRICS,
    chao1,
    evaluate_set,
    mean_abs_correlation,
    sampled_coverage,
)
from segcp.progress import Bar
from segcp.specs import MethodSpec, TunedSpec

__all__ = ["Need", "Plan", "Row", "run_plan"]

#: Keep at most this many bytes of score maps in memory (all families; the rest: disk cache or recompute).
MAP_MEMORY = 1_500_000_000


@dataclass(frozen=True)
class Need:
    """One thing a row must measure: a split of a calibration size at one α."""

    n_cal: int
    alpha: float
    split: int
    level: str  # "all" (every metric) or "overlap" (coverage, FNR, stretch, Dice)


@dataclass
class Row:
    """One row of a task's tables: a method setting (or an ablation variant of one)."""

    label: str
    spec: MethodSpec | TunedSpec
    kind: str  # "mask" or "sets"
    main: bool = True
    ablation: tuple[str, Any] | None = None  # (parameter, value) of an ablation variant
    base: str | None = None  # the row it varies
    needs: list[Need] = field(default_factory=list)


@dataclass
class TaskPlan:
    task: Task
    rows: list[Row]
    mask_view: TaskView | None
    sets_view: TaskView | None
    splits: dict[int, list[tuple[NDArray[np.int64], NDArray[np.int64]]]]
    sets_splits: list[tuple[NDArray[np.int64], NDArray[np.int64]]]
    notes: list[str]
    n_cal_values: list[int]


def _families(spec: MethodSpec | TunedSpec) -> list[MethodSpec]:
    return list(spec.candidates) if isinstance(spec, TunedSpec) else [spec]


def _kind_of(spec: MethodSpec | TunedSpec) -> str:
    return "sets" if _families(spec)[0].build().truth == "label_map" else "mask"


def _num(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _nanmean(values: Sequence[float]) -> float:
    a = np.asarray(values, dtype=float)
    a = a[np.isfinite(a)]
    return float(a.mean()) if a.size else float("nan")


# ---------------------------------------------------------------------------- the plan
class Plan:
    """Everything a config asks for, per task, and what of it is already cached."""

    def __init__(self, cfg: BenchmarkConfig) -> None:
        self.cfg = cfg
        self.tasks: list[TaskPlan] = []
        for tcfg in cfg.tasks:
            self.tasks.append(self._task_plan(open_task(tcfg)))

    def _task_plan(self, task: Task) -> TaskPlan:
        cfg = self.cfg
        notes: list[str] = []
        rows: list[Row] = []
        mask_view = sets_view = None
        for entry in cfg.methods_for(task.name):
            kind = _kind_of(entry.spec)
            fam = _families(entry.spec)[0].build()
            why = task.can(fam)
            if why is not None:
                notes.append(f"{entry.label}: not run on this task ({why})")
                continue
            rows.append(Row(entry.label, entry.spec, kind))
            if kind == "mask" and mask_view is None:
                mask_view = self._widest_view(task, [e.spec for e in cfg.methods_for(task.name) if _kind_of(e.spec) == "mask"])
            if kind == "sets" and sets_view is None:
                sets_view = task.view(fam, cfg.sets.max_images)
        splits: dict[int, list[Any]] = {}
        n_cal_values: list[int] = []
        mask_rows = [r for r in rows if r.kind == "mask"]
        if mask_rows and mask_view is not None:
            n = len(mask_view)
            splits[cfg.n_cal] = list(random_cal_test_splits(mask_view.groups, cfg.n_cal, cfg.splits, cfg.seed))
            for r in mask_rows:
                r.needs = [Need(cfg.n_cal, a, s, "all") for a in cfg.alphas for s in range(cfg.splits)]
                r.needs += [Need(cfg.n_cal, a, s, "overlap") for a in cfg.curve_alphas if a not in cfg.alphas for s in range(cfg.splits)]
            ab = cfg.ablation
            if ab is not None:
                for v in ab.n_cal:
                    if v >= n - 1:
                        notes.append(f"calibration size n = {v}: not run (the pool has {n} images; a split needs test images too)")
                        continue
                    n_cal_values.append(v)
                    if v not in splits:
                        splits[v] = list(random_cal_test_splits(mask_view.groups, v, cfg.splits, cfg.seed))
                    for r in mask_rows:
                        if ab.n_cal_methods is None or r.label in ab.n_cal_methods:
                            r.needs += [Need(v, ab.alpha, s, "all") for s in range(cfg.splits)]
                if ab.params:
                    base = self._ablation_base(mask_rows, ab.method)
                    if base is None:
                        notes.append("ablations of parameters: no RW-CP row (or ablation.method) on this task")
                    else:
                        rows += self._variants(base, ab, notes)
            for r in rows:
                r.needs = list(dict.fromkeys(r.needs))
        sets_splits: list[Any] = []
        if sets_view is not None:
            sc = cfg.sets
            sets_splits = list(random_cal_test_splits(sets_view.groups, sc.n_cal or cfg.n_cal, sc.splits or cfg.splits, cfg.seed))
        return TaskPlan(task, rows, mask_view, sets_view, splits, sets_splits, notes, n_cal_values)

    @staticmethod
    def _widest_view(task: Task, specs: list[MethodSpec | TunedSpec]) -> TaskView:
        views = []
        for s in specs:
            for c in _families(s):
                if task.can(c.build()) is None:
                    views.append(task.view(c.build()))
        return max(views, key=lambda v: len(v.folders))

    @staticmethod
    def _ablation_base(rows: list[Row], label: str | None) -> Row | None:
        for r in rows:
            if (label is None and isinstance(r.spec, MethodSpec) and r.spec.method == "rwcp") or r.label == label:
                return r if isinstance(r.spec, MethodSpec) else None
        return None

    def _variants(self, base: Row, ab: Any, notes: list[str]) -> list[Row]:
        assert isinstance(base.spec, MethodSpec)
        out = []
        base_key = base.spec.build().key
        for param, values in ab.params.items():
            for v in values:
                spec = MethodSpec(f"{base.label} ({param}={v})", base.spec.method, {**base.spec.params, param: v}, base.spec.guarantee, base.spec.tau)
                try:
                    fam = spec.build()
                except SegcpError as exc:
                    notes.append(f"ablation {param}={v}: {exc}")
                    continue
                needs = [Need(self.cfg.n_cal, ab.alpha, s, "all") for s in range(self.cfg.splits)]
                if fam.key == base_key:  # the base setting itself: measured as the base row
                    base.needs = list(dict.fromkeys(base.needs + needs))
                    out.append(Row(base.label, base.spec, "mask", main=False, ablation=(param, v), base=base.label, needs=[]))
                    continue
                out.append(Row(spec.label, spec, "mask", main=False, ablation=(param, v), base=base.label, needs=needs))
        return out


# ---------------------------------------------------------------------------- one family's data
class FamilyData:
    """One pixel-set family on one task view: its cache key, curves and score maps."""

    def __init__(self, spec: MethodSpec, view: TaskView, cache: BenchmarkCache, runner: Runner) -> None:
        self.spec = spec
        self.view = view
        self.cache = cache
        self.runner = runner
        self.est = spec.estimator()
        self.fam = self.est.family
        self.guarantee = self.fam.check_guarantee(spec.guarantee)
        self.fkey = cache.family_key([self.fam.key, self.fam.cache_identity(), self.guarantee, float(spec.tau)])
        self.curves: LossCurves | None = None
        self.seconds: list[float] = []
        self.maps: dict[int, NDArray[np.float64]] = {}
        self.map_bytes = 0

    def missing_curves(self) -> int:
        if not self.cache.enabled:
            return len(self.view)
        return sum(not (self.cache.root / "curves" / self.fkey / f"{k[:40]}.npz").is_file() for k in self.view.keys)

    def ensure_curves(self, bar: Bar) -> LossCurves:
        if self.curves is not None:
            return self.curves
        parts: list[LossCurves | None] = []
        seconds: list[float] = []
        todo: list[int] = []
        for i, key in enumerate(self.view.keys):
            hit = self.cache.get_curve(self.fkey, key)
            if hit is None:
                parts.append(None)
                seconds.append(math.nan)
                todo.append(i)
            else:
                parts.append(hit[0])
                seconds.append(hit[1])
        if todo:
            if self.runner.jobs <= 1 or self.fam.shares_state_on_disk:  # features shared through the disk cache
                self.runner.precompute(self.fam, self.view, todo, bar)
            bar.update(description=f"{self.view.task.name} · {self.spec.label}: score maps")
            jobs = ((self.spec, self.view.case(i)) for i in todo)
            for i, (curve, scores, secs) in zip(todo, self.runner.imap(_score_job, jobs)):
                parts[i], seconds[i] = curve, secs
                self.cache.put_curve(self.fkey, self.view.keys[i], curve, secs)
                if secs > MAP_SECONDS:
                    self.cache.put_map(self.fkey, self.view.keys[i], scores)
                self._keep(i, scores)
                bar.advance()
        self.curves = LossCurves.concat(parts)  # type: ignore[arg-type]
        self.seconds = seconds
        return self.curves

    def _keep(self, i: int, scores: NDArray[np.float64]) -> None:
        if self.runner.map_bytes + scores.nbytes <= MAP_MEMORY:
            self.maps[i] = scores
            self.map_bytes += scores.nbytes
            self.runner.map_bytes += scores.nbytes

    def scores(self, i: int) -> NDArray[np.float64]:
        if i in self.maps:
            return self.maps[i]
        m = self.cache.get_map(self.fkey, self.view.keys[i]) if self.cache.has_map(self.fkey, self.view.keys[i]) else None
        if m is None:
            m = self.fam.scores(self.est.prepare([self.view.case(i)])[0])
        self._keep(i, m)
        return m

    def release(self) -> None:
        self.maps.clear()
        self.runner.map_bytes -= self.map_bytes
        self.map_bytes = 0


def _score_job(job: tuple[MethodSpec, Any]) -> tuple[LossCurves, NDArray[np.float64], float]:
    """One image's score map (timed) and loss curve, for a pixel-set family (runs in a worker too)."""
    spec, case = job
    est = spec.estimator()
    t0 = time.process_time()  # CPU time: stable on a shared machine (the score maps are single-threaded)
    prepared = est.prepare([case])
    scores = est.family.scores(prepared[0])
    secs = time.process_time() - t0
    return est.curves(prepared), scores, secs


def _sets_score_job(job: tuple[Any, float, str | None, Any]) -> tuple[LossCurves | None, float, str | None]:
    """One image's 0/1 curve (its score λ*) for a set-of-segmentations family; an internal error is returned, not raised."""
    from segcp.conformal import ConformalSegmenter

    fam, alpha, guarantee, case = job
    t0 = time.process_time()
    try:
        curve = ConformalSegmenter(fam, alpha, guarantee=guarantee).curves([case])
    except SegcpError:
        raise
    except Exception as exc:  # noqa: BLE001 - a bug in the family's search: reported, counted as never in the set
        return None, time.process_time() - t0, f"{type(exc).__name__}: {exc}"
    return curve, time.process_time() - t0, None


def _calibrate(est: Any, curves: LossCurves, alphas: Sequence[float]) -> dict[float, float | str]:
    """λ̂ per α on ``curves`` (several α share one sort), or the reason there is none."""
    out: dict[float, float | str] = {}
    try:
        est.set_params(alpha=list(alphas)).calibrate_curves(curves)
        return {a: float(est.lambdas_[a]) for a in alphas}
    except SegcpError:
        pass
    for a in alphas:
        try:
            out[a] = float(est.set_params(alpha=a).calibrate_curves(curves).lambda_)
        except SegcpError as exc:
            out[a] = str(exc)
    return out


def curve_values(curves: LossCurves, lams: NDArray[np.float64]) -> NDArray[np.float64]:
    """L_i(λ_j) for every image i and every λ_j, shape (n, len(lams)) (binary searches)."""
    out = np.empty((curves.n, lams.size))
    for i in range(curves.n):
        lo, hi = curves.offsets[i], curves.offsets[i + 1]
        cum = np.concatenate([[0.0], np.cumsum(curves.drops[lo:hi])])
        out[i] = curves.starts[i] - cum[np.searchsorted(curves.breakpoints[lo:hi], lams, side="right")]
    return out


def zero_one_scores(curves: LossCurves) -> NDArray[np.float64]:
    """λ*_i of 0/1 curves (+inf: never in the set, -inf: always)."""
    counts = np.diff(curves.offsets)
    out = np.where(curves.starts == 0.0, -np.inf, np.inf)
    has = counts >= 1
    out[has] = curves.breakpoints[curves.offsets[:-1][has]]
    return out


# ---------------------------------------------------------------------------- the runner
class Runner:
    """Executes a :class:`Plan` against a :class:`BenchmarkCache`."""

    def __init__(self, plan: Plan, cache: BenchmarkCache, *, show_progress: bool = True, jobs: int | None = None) -> None:
        self.plan = plan
        self.jobs = int(jobs or plan.cfg.jobs)
        self._pool: Any = None
        self.map_bytes = 0
        self.cfg = plan.cfg
        self.cache = cache
        self.show_progress = show_progress
        self.timings: dict[str, float] = defaultdict(float)
        self.cpu: dict[str, float] = defaultdict(float)  # CPU seconds of this process per stage
        self.features: dict[str, dict[str, Any]] = {}

    # ------------------------------------------------------------------ record keys
    def mask_rkey(self, view: TaskView, tp: TaskPlan, need: Need, level: str, extra: Any = None) -> str:
        cal, test = tp.splits[need.n_cal][need.split]
        return digest(["mask", need.alpha, level, [view.keys[i] for i in cal], [view.keys[i] for i in test], extra])

    def family_key(self, spec: MethodSpec | TunedSpec) -> str:
        if isinstance(spec, TunedSpec):
            return self.cache.family_key(["tuned", spec.criterion, spec.folds, spec.seed, [self._spec_key(c) for c in spec.candidates]])
        return self._spec_key(spec)

    def _spec_key(self, spec: MethodSpec) -> str:
        if not hasattr(self, "_spec_keys"):
            self._spec_keys: dict[Any, str] = {}
        k = (spec.method, digest(spec.params), spec.guarantee, spec.tau)
        if k not in self._spec_keys:
            est = spec.estimator()
            fam = est.family
            self._spec_keys[k] = self.cache.family_key([fam.key, fam.cache_identity(), fam.check_guarantee(spec.guarantee), float(spec.tau)])
        return self._spec_keys[k]

    def _keys(self, view: TaskView, tp: TaskPlan, need: Need, tuned: TunedSpec | None) -> tuple[str, str]:
        extra = need.split if tuned is not None else None  # a tuned row's folds are seeded by the split index
        return self.mask_rkey(view, tp, need, "all", extra), self.mask_rkey(view, tp, need, "overlap", extra)

    def _has(self, fkey: str, view: TaskView, tp: TaskPlan, need: Need, tuned: TunedSpec | None) -> bool:
        k_all, k_overlap = self._keys(view, tp, need, tuned)
        return self.cache.has_record(fkey, k_all) or (need.level == "overlap" and self.cache.has_record(fkey, k_overlap))

    def _lookup(self, fkey: str, view: TaskView, tp: TaskPlan, need: Need, tuned: TunedSpec | None) -> dict[str, Any] | None:
        """The cached record of a need (an every-metric record also serves an overlap-only need)."""
        k_all, k_overlap = self._keys(view, tp, need, tuned)
        if need.level == "overlap" and not self.cache.has_record(fkey, k_all):
            return self.cache.get_record(fkey, k_overlap)
        return self.cache.get_record(fkey, k_all)

    # ------------------------------------------------------------------ features
    def precompute(self, fam: Any, view: TaskView, todo: list[int], bar: Bar) -> None:
        """Encoder features of the images about to be scored, in batches (families that have them)."""
        if not fam.slow_state:
            return
        ident = digest(fam.cache_identity())
        done = self.features.setdefault(ident, {"images": 0, "seconds": 0.0, "encoder": fam.cache_identity()})
        bar.update(description=f"{view.task.name}: encoder features")
        t0 = time.perf_counter()
        cases = [view.case(i) for i in todo]
        fam.precompute(cases)
        done["images"] += len(cases)
        done["seconds"] += time.perf_counter() - t0

    # ------------------------------------------------------------------ worker processes
    def imap(self, fn: Any, jobs: Any) -> Any:
        """``fn`` over ``jobs`` in order: in this process, or over ``jobs`` worker processes (a bounded window)."""
        if self.jobs <= 1:
            for j in jobs:
                yield fn(j)
            return
        if self._pool is None:
            from concurrent.futures import ProcessPoolExecutor

            from segcp.execution import _limit_threads

            self._pool = ProcessPoolExecutor(max_workers=self.jobs, initializer=_limit_threads)
        from collections import deque

        window: deque[Any] = deque()
        for j in jobs:
            window.append(self._pool.submit(fn, j))
            if len(window) >= 3 * self.jobs:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    # ------------------------------------------------------------------ counting the work
    def count_work(self) -> int:
        total = 0
        for tp in self.plan.tasks:
            for row in tp.rows:
                if row.kind == "mask" and row.needs:
                    fkey = self.family_key(row.spec)
                    missing = [n for n in row.needs if not self._has(fkey, tp.mask_view, tp, n, row.spec if isinstance(row.spec, TunedSpec) else None)]
                    if missing:
                        for c in _families(row.spec):
                            total += FamilyData(c, tp.mask_view, self.cache, self).missing_curves()
                        total += len({int(i) for n in missing for i in tp.splits[n.n_cal][n.split][1]})
                elif row.kind == "sets":
                    total += len(tp.sets_view) + len(tp.sets_splits) * len(self.cfg.sets.alphas)
        return total

    # ------------------------------------------------------------------ execution
    def run(self) -> list[dict[str, Any]]:
        t0 = time.perf_counter()
        total = self.count_work()
        self.timings["planning"] = time.perf_counter() - t0
        out = []
        try:
            with Bar("segcp benchmark", max(total, 2), enabled=self.show_progress) as bar:
                for tp in self.plan.tasks:
                    out.append(self.run_task(tp, bar))
        finally:
            self.close()
        return out

    def run_task(self, tp: TaskPlan, bar: Bar) -> dict[str, Any]:
        res: dict[str, Any] = {"records": [], "sets_records": [], "validity": [], "sets_validity": [], "seconds_per_image": {}, "lambdas": {}}
        for row in tp.rows:
            t0, c0 = time.perf_counter(), time.process_time()
            if row.kind == "mask" and row.needs:
                res["records"] += self.run_mask_row(tp, row, bar, res)
            elif row.kind == "sets":
                self.run_sets_row(tp, row, bar, res)
            self._time(f"{tp.task.name}: {row.label}", t0, c0)
        if tp.mask_view is not None:
            t0, c0 = time.perf_counter(), time.process_time()
            res["model"] = self.model_rows(tp)
            self._time(f"{tp.task.name}: model row", t0, c0)
        return res

    def _time(self, stage: str, t0: float, c0: float) -> None:
        self.timings[stage] += time.perf_counter() - t0
        self.cpu[stage] += time.process_time() - c0

    def _base(self, need: Need, tp: TaskPlan) -> dict[str, Any]:
        cal, test = tp.splits[need.n_cal][need.split]
        return {"n_cal_actual": len(cal), "n_test": len(test)}

    def run_mask_row(self, tp: TaskPlan, row: Row, bar: Bar, res: dict[str, Any]) -> list[dict[str, Any]]:
        view = tp.mask_view
        assert view is not None
        tuned = row.spec if isinstance(row.spec, TunedSpec) else None
        fkey = self.family_key(row.spec)
        found: dict[Need, dict[str, Any]] = {}
        missing: list[Need] = []
        for need in row.needs:
            rec = self._lookup(fkey, view, tp, need, tuned)
            if rec is None:
                missing.append(need)
            else:
                found[need] = rec
        cands = [FamilyData(c, view, self.cache, self) for c in _families(row.spec)]
        if missing:
            for fd in cands:
                fd.ensure_curves(bar)
            found.update(self._measure(tp, row, cands, missing, bar))
        # time per image of the score map (cached with the curves)
        secs = self._seconds(cands[0], view) if tuned is None else math.nan
        res["seconds_per_image"][row.label] = secs
        for fd in cands:
            fd.release()
        out = []
        for need in row.needs:
            rec = dict(found[need])
            rec.update(task=tp.task.name, method=row.label, n_cal=need.n_cal, alpha=need.alpha, split=need.split)
            for m in (*METRICS, "lambda"):
                if m in rec:
                    rec[m] = _num(rec[m])
            out.append(rec)
        # the guarantee over many more splits, from the loss curves only
        if row.main and tuned is None and self.cfg.validity_splits:
            res["validity"] += self._validity(tp, row, cands[0], fkey, bar)
        return out

    def _seconds(self, fd: FamilyData, view: TaskView) -> float:
        if fd.seconds:
            return _nanmean(fd.seconds)
        vals = []
        for key in view.keys[: min(len(view.keys), 64)]:
            hit = self.cache.get_curve(fd.fkey, key)
            if hit is not None:
                vals.append(hit[1])
        return _nanmean(vals) if vals else math.nan

    def _measure(self, tp: TaskPlan, row: Row, cands: list[FamilyData], missing: list[Need], bar: Bar) -> dict[Need, dict[str, Any]]:
        """Calibrate every missing need and measure its test sets (each image once)."""
        view = tp.mask_view
        assert view is not None
        tuned = row.spec if isinstance(row.spec, TunedSpec) else None
        fkey = self.family_key(row.spec)
        lam_of: dict[Need, tuple[int, float | str, str | None]] = {}  # need -> (candidate, λ or why, chosen)
        by_split: dict[tuple[int, int], list[Need]] = defaultdict(list)
        for need in missing:
            by_split[(need.n_cal, need.split)].append(need)
        bar.update(description=f"{tp.task.name} · {row.label}: calibrating")
        for (n_cal, s), needs in by_split.items():
            cal, test = tp.splits[n_cal][s]
            alphas = list(dict.fromkeys(n.alpha for n in needs))
            if tuned is None:
                lams = _calibrate(cands[0].est, cands[0].curves.take(cal), alphas)  # type: ignore[union-attr]
                for n in needs:
                    lam_of[n] = (0, lams[n.alpha], None)
                continue
            from segcp.tuning import select

            cal_cases = [view.case(int(i)) for i in cal]
            for a in alphas:
                k, table = select(
                    [[fd.scores(int(i)) for i in cal] for fd in cands],
                    [fd.curves.take(cal) for fd in cands],  # type: ignore[union-attr]
                    [fd.fam.lambda_min for fd in cands],
                    cal_cases,
                    [view.groups[int(i)] for i in cal],
                    a,
                    criterion=tuned.criterion,
                    folds=tuned.folds,
                    seed=tuned.seed + s,
                )
                scored = any(math.isfinite(t["value"]) for t in table)
                chosen = cands[k].spec.label if scored else f"{cands[k].spec.label} (fallback: no fold feasible at this α)"
                lam = _calibrate(cands[k].est, cands[k].curves.take(cal), [a])[a]  # type: ignore[union-attr]
                for n in needs:
                    if n.alpha == a:
                        lam_of[n] = (k, lam, chosen)
        # every (candidate, image): the λ values it is measured at, and whether with surface metrics
        work: dict[tuple[int, int], dict[float, bool]] = defaultdict(dict)
        for n, (k, lam, _) in lam_of.items():
            if isinstance(lam, str):
                continue
            for i in tp.splits[n.n_cal][n.split][1]:
                d = work[(k, int(i))]
                d[lam] = d.get(lam, False) or n.level == "all"
        bar.update(description=f"{tp.task.name} · {row.label}: measuring sets")
        measured: dict[tuple[int, int], dict[float, dict[str, float]]] = {}
        images_done: set[int] = set()
        for (k, i) in sorted(work):
            case = view.case(i)
            ev = MaskEvaluator(cands[k].scores(i), case.mask, case.model_mask, case.spacing)
            measured[(k, i)] = {lam: ev.evaluate(lam, surface=surf) for lam, surf in sorted(work[(k, i)].items())}
            if i not in images_done:
                images_done.add(i)
                bar.advance()
        out: dict[Need, dict[str, Any]] = {}
        for n, (k, lam, chosen) in lam_of.items():
            rec: dict[str, Any] = self._base(n, tp)
            if chosen is not None:
                rec["chosen"] = chosen
            if isinstance(lam, str):
                rec.update({"lambda": math.nan, "infeasible": lam, "level": n.level} | {m: math.nan for m in METRICS})
            else:
                test = tp.splits[n.n_cal][n.split][1]
                per = [measured[(k, int(i))][lam] for i in test]
                rec["lambda"] = lam
                rec["level"] = n.level
                keys = [m for m in METRICS if n.level == "all" or m in OVERLAP]
                for m in keys:
                    rec[m] = _nanmean([p[m] for p in per])
                rec["undefined"] = {m: int(sum(not math.isfinite(p[m]) for p in per)) for m in keys if any(not math.isfinite(p[m]) for p in per)}
                rec["set_size"] = _nanmean([p["set_size"] for p in per])
                # images whose set is empty while the structure is there (HD95 / ASSD undefined)
                rec["empty_sets"] = int(sum(p["set_size"] == 0 and p["fnr"] > 0 for p in per))
            extra = n.split if tuned is not None else None
            self.cache.put_record(fkey, self.mask_rkey(view, tp, n, n.level, extra), rec)
            out[n] = rec
        return out

    def _validity(self, tp: TaskPlan, row: Row, fd: FamilyData, fkey: str, bar: Bar) -> list[dict[str, Any]]:
        view = tp.mask_view
        assert view is not None
        cfg = self.cfg
        rkey = digest(["validity", list(cfg.alphas), cfg.n_cal, cfg.validity_splits, cfg.seed, view.keys])
        rec = self.cache.get_record(fkey, rkey, what="validity")
        if rec is None:
            curves = fd.ensure_curves(bar)
            splits = list(random_cal_test_splits(view.groups, cfg.n_cal, cfg.validity_splits, cfg.seed + 1))
            lam = {a: np.full(len(splits), np.nan) for a in cfg.alphas}
            infeasible = {a: 0 for a in cfg.alphas}
            for s, (cal, _) in enumerate(splits):
                for a, v in _calibrate(fd.est, curves.take(cal), cfg.alphas).items():
                    if isinstance(v, str):
                        infeasible[a] += 1
                    else:
                        lam[a][s] = v
            rows = []
            for a in cfg.alphas:
                idx = np.flatnonzero(np.isfinite(lam[a]))
                vals = curve_values(curves, lam[a][idx])
                m = np.asarray([vals[splits[s][1], j].mean() for j, s in enumerate(idx)])
                rows.append({
                    "alpha": a, "splits": len(splits), "infeasible": infeasible[a],
                    "fnr": float(m.mean()) if m.size else math.nan,
                    "fnr_se": float(m.std(ddof=1) / math.sqrt(m.size)) if m.size > 1 else math.nan,
                })
            rec = {"rows": rows}
            self.cache.put_record(fkey, rkey, rec)
        return [dict(r, method=row.label, task=tp.task.name, fnr=_num(r["fnr"]), fnr_se=_num(r["fnr_se"])) for r in rec["rows"]]

    # ------------------------------------------------------------------ the base model's row
    def model_rows(self, tp: TaskPlan) -> list[dict[str, Any]]:
        """The model's own mask (p ≥ 0.5) on each split's test images (every calibration size)."""
        view = tp.mask_view
        assert view is not None
        fkey = self.cache.family_key(["model mask (p >= 0.5)"])
        per: dict[int, dict[str, float]] = {}
        needed = sorted({int(i) for splits in tp.splits.values() for _, test in splits for i in test})
        for i in needed:
            rec = self.cache.get_record(fkey, view.keys[i], what="model")
            if rec is None:
                c = view.case(i)
                rec = evaluate_set(c.model_mask, c.mask, c.model_mask, c.spacing)
                self.cache.put_record(fkey, view.keys[i], rec)
            per[i] = {m: _num(rec.get(m)) for m in METRICS}
        out = []
        for n_cal, splits in tp.splits.items():
            for s, (cal, test) in enumerate(splits):
                row = {m: _nanmean([per[int(i)][m] for i in test]) for m in METRICS}
                out.append(row | {"task": tp.task.name, "method": "model (p ≥ 0.5)", "n_cal": n_cal, "split": s, "n_cal_actual": len(cal), "n_test": len(test)})
        return out

    # ------------------------------------------------------------------ sets of segmentations
    def run_sets_row(self, tp: TaskPlan, row: Row, bar: Bar, res: dict[str, Any]) -> None:
        assert tp.sets_view is not None and isinstance(row.spec, MethodSpec)
        from segcp.conformal import ConformalSegmenter

        sc = self.cfg.sets
        for a in sc.alphas:
            fam = row.spec.estimator(a).family.bind_alpha(a)
            view = tp.task.view(fam, sc.max_images)
            if view.ids != tp.sets_view.ids:
                raise SegcpError(f"{tp.task.name}: {row.label} reads other images than the first sets-of-segmentations row")
            est = ConformalSegmenter(fam, a, guarantee=row.spec.guarantee)
            fkey = self.cache.family_key([fam.key, fam.cache_identity(), fam.check_guarantee(row.spec.guarantee), float(row.spec.tau)])
            parts: list[LossCurves] = []
            seconds: list[float] = []
            bar.update(description=f"{tp.task.name} · {row.label} (α={a:g}): scores λ*")
            hits = [self.cache.get_curve(fkey, key) for key in view.keys]
            todo = [i for i, h in enumerate(hits) if h is None]
            jobs = ((fam, a, row.spec.guarantee, view.case(i)) for i in todo)
            for i, (curve, secs, failure) in zip(todo, self.imap(_sets_score_job, jobs)):
                if curve is None:
                    curve = LossCurves.single([], [], 1.0)
                    res.setdefault("failures", []).append({"method": row.label, "alpha": a, "image": view.ids[i], "error": failure})
                else:
                    self.cache.put_curve(fkey, view.keys[i], curve, secs)
                hits[i] = (curve, secs)
                bar.advance()
            bar.advance(len(view.keys) - len(todo))
            for curve, secs in hits:  # type: ignore[misc]
                parts.append(curve)
                seconds.append(secs)
            curves = LossCurves.concat(parts)
            scores = zero_one_scores(curves)
            res["seconds_per_image"][f"{row.label} (α={a:g})"] = _nanmean(seconds)
            beta = float(fam.agreement_level)
            for s, (cal, test) in enumerate(tp.sets_splits):
                rkey = digest(["sets", a, sc.draws, list(sc.sizes), sc.draw_images, self.cfg.seed, s, [view.keys[i] for i in cal], [view.keys[i] for i in test]])
                rec = self.cache.get_record(fkey, rkey)
                if rec is None:
                    bar.update(description=f"{tp.task.name} · {row.label} (α={a:g}): split {s}, draws")
                    rec = self._sets_split(view, fam, est, curves, scores, cal, test, s, beta)
                    self.cache.put_record(fkey, rkey, rec)
                rec = dict(rec, task=tp.task.name, method=row.label, alpha=a, split=s)
                rec["lambda"] = _num(rec.get("lambda"))
                res["sets_records"].append(rec)
                bar.advance()
            res["sets_validity"].append(self._sets_validity(view, row, est, curves, scores, a, tp))
            res["lambdas"][(row.label, a)] = [r["lambda"] for r in res["sets_records"] if r["method"] == row.label and r["alpha"] == a]

    def _sets_split(self, view: TaskView, fam: Any, est: Any, curves: LossCurves, scores: NDArray[np.float64], cal: Any, test: Any,
                    s: int, beta: float) -> dict[str, Any]:
        sc = self.cfg.sets
        rec: dict[str, Any] = {"n_cal_actual": len(cal), "n_test": len(test)}
        try:
            lam = float(est.calibrate_curves(curves.take(cal)).lambda_)
        except SegcpError as exc:
            return rec | {"lambda": math.nan, "infeasible": str(exc)}
        rec["lambda"] = lam
        rec["coverage"] = float(np.mean(scores[test] <= lam))
        rng = np.random.default_rng([self.cfg.seed, s])
        pick = sorted(int(i) for i in rng.choice(np.asarray(test), size=min(sc.draw_images, len(test)), replace=False))
        per: list[dict[str, float]] = []
        t_draw = 0.0
        for i in pick:
            case = view.case(i)
            prepared = fam.prepare(case)
            t0 = time.process_time()
            draws = fam.sample(prepared, lam, sc.draws, np.random.default_rng([self.cfg.seed, s, int(view.keys[i][:12], 16)]))
            t_draw += time.process_time() - t0
            n_labels = int(case.samples.shape[1]) if case.samples is not None else None
            m: dict[str, float] = {}
            for S in sc.sizes:
                d = draws[:S]
                m[f"chao@{S}"] = chao1(d)
                m[f"sec@{S}"] = sampled_coverage(d, case.label_map, beta)
                m[f"correlation@{S}"] = mean_abs_correlation(d, n_labels)
            per.append(m)
        for key in per[0] if per else []:
            rec[key] = _nanmean([p[key] for p in per])
        rec["draw_images"] = [view.ids[i] for i in pick]
        rec["draw_cpu_seconds_per_image"] = t_draw / max(len(pick), 1)
        return rec

    def _sets_validity(self, view: TaskView, row: Row, est: Any, curves: LossCurves, scores: NDArray[np.float64], a: float, tp: TaskPlan) -> dict[str, Any]:
        sc = self.cfg.sets
        n_cal = sc.n_cal or self.cfg.n_cal
        out: dict[str, Any] = {"task": tp.task.name, "method": row.label, "alpha": a, "splits": sc.validity_splits, "never": int(np.sum(~np.isfinite(scores) & (scores > 0)))}
        if not sc.validity_splits:
            return out
        covs, marginal, infeasible = [], [], 0
        for cal, test in random_cal_test_splits(view.groups, n_cal, sc.validity_splits, self.cfg.seed + 1):
            try:
                lam = float(est.calibrate_curves(curves.take(cal)).lambda_)
            except SegcpError:
                infeasible += 1
                marginal.append(float(np.mean(np.isfinite(scores[test]) | (scores[test] < 0))))
                continue
            c = float(np.mean(scores[test] <= lam))
            covs.append(c)
            marginal.append(c)
        c, mg = np.asarray(covs), np.asarray(marginal)
        out.update(
            infeasible=infeasible,
            coverage=float(c.mean()) if c.size else math.nan,
            coverage_se=float(c.std(ddof=1) / math.sqrt(c.size)) if c.size > 1 else math.nan,
            coverage_all=float(mg.mean()) if mg.size else math.nan,
            coverage_all_se=float(mg.std(ddof=1) / math.sqrt(mg.size)) if mg.size > 1 else math.nan,
        )
        return out


def run_plan(plan: Plan, cache: BenchmarkCache, show_progress: bool = True, jobs: int | None = None) -> tuple[list[dict[str, Any]], Runner]:
    """Run every task of ``plan``; returns the per-task results and the runner (timings, cache use)."""
    runner = Runner(plan, cache, show_progress=show_progress, jobs=jobs)
    return runner.run(), runner
