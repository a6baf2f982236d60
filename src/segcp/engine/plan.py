"""The plan of a run: per task its rows (and ablation variants), the group-aware splits of every calibration
size and each row's *needs* (calibration size, α, split, metrics) — no method named."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.engine.band import is_band
from segcp.engine.config import AblationConfig, PlanConfig
from segcp.engine.splits import random_cal_test_splits
from segcp.engine.tasks import Task, TaskView, kind_of, open_task
from segcp.errors import SegcpError
from segcp.specs import MethodSpec, TunedSpec

__all__ = ["Need", "Plan", "Row", "TaskPlan"]

Split = tuple[NDArray[np.int64], NDArray[np.int64]]


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
    kind: str  # "mask" (pixel sets) or "sets" (sets of segmentations)
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
    splits: dict[int, list[Split]]
    sets_splits: list[Split]
    notes: list[str]
    n_cal_values: list[int]


class Plan:
    """Everything a config asks for, per task (``tasks``: already open tasks, e.g. cases in memory)."""

    def __init__(self, cfg: PlanConfig, tasks: list[Task] | None = None) -> None:
        self.cfg = cfg
        self.tasks = [self._task_plan(t) for t in (tasks if tasks is not None else [open_task(c) for c in cfg.tasks])]

    def _task_plan(self, task: Task) -> TaskPlan:
        cfg = self.cfg
        notes: list[str] = []
        rows: list[Row] = []
        for entry in cfg.methods_for(task.name):
            why = task.can(entry.spec.candidates[0])
            if why is not None:
                notes.append(f"{entry.label}: not run on this task ({why})")
                continue
            rows.append(Row(entry.label, entry.spec, kind_of(entry.spec.candidates[0].build())))
        mask_rows = [r for r in rows if r.kind == "mask"]
        views = [task.view(c) for r in mask_rows for c in r.spec.candidates if task.can(c) is None]
        mask_view = max(views, key=lambda v: len(v.folders)) if views else None  # the widest: every row's inputs
        sets_row = next((r for r in rows if r.kind == "sets"), None)
        sets_view = task.view(sets_row.spec.candidates[0], cfg.sets.max_images) if sets_row is not None else None
        splits: dict[int, list[Split]] = {}
        n_cal_values: list[int] = []
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
                        if not is_band(r.spec) and (ab.n_cal_methods is None or r.label in ab.n_cal_methods):  # one-sided rows (Table 2)
                            r.needs += [Need(v, ab.alpha, s, "all") for s in range(cfg.splits)]
                if ab.params:
                    base = self._ablation_base(mask_rows, ab)
                    if base is None:
                        notes.append("ablations of parameters: no row (ablation.method) whose family has every varied parameter on this task")
                    else:
                        rows += self._variants(base, ab, notes)
            for r in rows:
                r.needs = list(dict.fromkeys(r.needs))
        sets_splits: list[Split] = []
        if sets_view is not None:
            sc = cfg.sets
            sets_splits = list(random_cal_test_splits(sets_view.groups, sc.n_cal or cfg.n_cal, sc.splits or cfg.splits, cfg.seed))
        return TaskPlan(task, rows, mask_view, sets_view, splits, sets_splits, notes, n_cal_values)

    @staticmethod
    def _ablation_base(rows: list[Row], ab: AblationConfig) -> Row | None:
        """``ablation.method``'s row, else the first row whose family declares every varied parameter."""
        for r in rows:
            declares = (
                ab.method is None
                and isinstance(r.spec, MethodSpec)
                and not is_band(r.spec)
                and set(ab.params) <= set(type(r.spec.build()).declared())
            )
            if declares or r.label == ab.method:
                return r if isinstance(r.spec, MethodSpec) else None
        return None

    def _variants(self, base: Row, ab: AblationConfig, notes: list[str]) -> list[Row]:
        assert isinstance(base.spec, MethodSpec)
        out = []
        base_key = base.spec.build().key
        for param, values in ab.params.items():
            for v in values:
                spec = replace(base.spec, label=f"{base.label} ({param}={v})", params={**base.spec.params, param: v})
                try:
                    fam = spec.build()
                except SegcpError as exc:
                    notes.append(f"ablation {param}={v}: {exc}")
                    continue
                needs = [Need(self.cfg.n_cal, ab.alpha, s, "all") for s in range(self.cfg.splits)]
                if fam.key == base_key:  # the base setting itself: measured as the base row
                    base.needs = list(dict.fromkeys(base.needs + needs))
                    spec, needs = base.spec, []
                out.append(Row(spec.label, spec, "mask", main=False, ablation=(param, v), base=base.label, needs=needs))
        return out
