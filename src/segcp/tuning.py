"""`segcp tune`: the engine's choice of a tuned row (group K-fold CV, :meth:`Engine.choose
<segcp.engine.run.Engine.choose>`) on every image given: calibration data only. The choice looked at
the images it is then calibrated on (a union bound over the candidates at most; `segcp compare`
measures it); for a strict guarantee tune on other images (:func:`segcp.engine.splits.split_fraction`).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from segcp.calibration import check_alpha
from segcp.cases import Case
from segcp.engine.cache import BenchmarkCache
from segcp.engine.run import Engine
from segcp.engine.tasks import CasesTask, Task
from segcp.errors import SegcpError
from segcp.jobs.tasks import check_seed
from segcp.parallel import IN_PROCESS, Executor
from segcp.progress import Bar
from segcp.specs import CRITERIA, MethodSpec, TunedSpec, check_criterion

__all__ = ["CRITERIA", "TuneResult", "TunedSpec", "tune", "tune_task"]


@dataclass
class TuneResult:
    """Outcome of :func:`tune`: the best candidate and the CV table (one row per candidate)."""

    best: MethodSpec
    best_index: int
    criterion: str
    alpha: float
    folds: int
    table: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {"criterion": self.criterion, "criterion_meaning": CRITERIA[self.criterion][1], "alpha": self.alpha, "folds": self.folds}
        return out | {"best": self.best.to_dict(), "best_index": self.best_index, "table": self.table}


def tune_task(
    task: Task,
    candidates: Sequence[MethodSpec],
    alpha: float,
    *,
    criterion: str = "dice",
    folds: int = 5,
    seed: int = 0,
    show_progress: bool = False,
    executor: Executor = IN_PROCESS,
    cache: BenchmarkCache | None = None,
    chunk_size: int | None = None,
) -> TuneResult:
    """Choose among ``candidates`` by group K-fold CV on every image of ``task`` (calibration images only)."""
    check_alpha(alpha)
    check_criterion(criterion)
    seed = check_seed(seed)
    if not candidates:
        raise SegcpError("no candidate settings to tune over")
    tuned = TunedSpec("tune", tuple(candidates), criterion=criterion, folds=folds, seed=seed)
    view = max((task.view(c) for c in candidates), key=lambda v: len(v.folders))  # the widest: every candidate's inputs
    n_groups = len(set(view.groups))
    if folds > n_groups:  # group_folds would deal fewer folds than asked (one per group)
        raise SegcpError(f"--folds {folds}: more folds than the {n_groups} groups (patients) of the calibration set; give at most {n_groups}")
    engine = Engine(cache or BenchmarkCache(enabled=False), executor, show_progress=show_progress, chunk_size=chunk_size)
    with Bar("segcp tune", len(view) * len(candidates), enabled=show_progress) as engine.bar:
        best, table = engine.choose(view, tuned, range(len(view)), alpha)
    for row, spec in zip(table, candidates, strict=True):
        row["label"] = spec.label
        row["params"] = dict(spec.params)
    return TuneResult(candidates[best], best, criterion, float(alpha), folds, table)


def tune(cases: Sequence[Case], groups: Sequence[Hashable], candidates: Sequence[MethodSpec], alpha: float, **kw: Any) -> TuneResult:
    """:func:`tune_task` on labelled cases held in memory (``kw``: its options; this process only)."""
    return tune_task(CasesTask(cases, groups), candidates, alpha, **kw)
