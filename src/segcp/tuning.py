"""`segcp tune`: hyper-parameter selection on calibration data only (group K-fold cross-validation).

The RW-CP paper picks k, β and n_step "by Dice on the calibration set". segcp makes that a
routine that never sees test data: for each candidate setting of a method, the calibration
images are split into K folds by group (patient / near-duplicate group); on each fold, λ̂ is
calibrated by exact CRC on the other folds at the target α and the sets it gives on the
held-out fold are scored (mean Dice, or mean HD95). The candidate with the best mean over all
calibration images wins (ties: the earlier candidate). Its final λ̂ is then calibrated on
the *whole* calibration set. It is the engine's choice of a tuned row
(:meth:`segcp.engine.run.Engine.choose`, :func:`segcp.engine.select.select`) on every image
given, so a tuned row of `segcp compare` chooses exactly as `segcp tune` would on its split's
calibration images.

What this does to the guarantee: λ̂ is still the exact CRC solution on the calibration set
for the chosen setting, but the choice itself looked at the same images, so the
calibration images are no longer exactly exchangeable with a test image *given the choice*.
With a handful of candidates the effect is small (a union bound over C candidates at most),
and `segcp compare` measures it (the tuned rows keep mean test FNR ≤ α in docs/results); for
a strict guarantee tune on images that are not used for calibration — e.g. groups split off
the calibration set (:func:`segcp.engine.splits.split_fraction`), or the model's validation
patients.

Examples
--------
>>> from segcp.synthetic import make_phantoms
>>> from segcp.compare import MethodSpec
>>> from segcp.methods import Case
>>> ph = make_phantoms(n=24, seed=0)
>>> cases = [Case(p.id, p.probs, mask=p.label == 3, spacing=p.spacing) for p in ph]
>>> cands = [MethodSpec("cross", "morph", {"se": "cross"}), MethodSpec("square", "morph", {"se": "square"})]
>>> res = tune(cases, [p.group for p in ph], cands, alpha=0.2, folds=4)
>>> res.best.label in ("cross", "square"), len(res.table)
(True, 2)
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from segcp.calibration import check_alpha
from segcp.cases import Case
from segcp.engine.cache import BenchmarkCache
from segcp.engine.run import IN_PROCESS, Engine
from segcp.engine.select import check_criterion
from segcp.engine.tasks import CasesTask, Task
from segcp.errors import SegcpError
from segcp.parallel import Executor
from segcp.progress import Bar
from segcp.specs import CRITERIA, MethodSpec, TunedSpec

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
        return {
            "criterion": self.criterion,
            "criterion_meaning": CRITERIA[self.criterion][1],
            "alpha": self.alpha,
            "folds": self.folds,
            "best": self.best.to_dict(),
            "best_index": self.best_index,
            "table": self.table,
        }


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
    if not candidates:
        raise SegcpError("no candidate settings to tune over")
    tuned = TunedSpec("tune", tuple(candidates), criterion=criterion, folds=folds, seed=seed)
    views = [task.view(c) for c in candidates]
    view = max(views, key=lambda v: len(v.folders))  # the widest: every candidate's inputs
    engine = Engine(cache or BenchmarkCache(enabled=False), executor, show_progress=show_progress, chunk_size=chunk_size)
    with Bar("segcp tune", len(view) * len(candidates), enabled=show_progress) as engine.bar:
        best, table = engine.choose(view, tuned, range(len(view)), alpha)
    for row, spec in zip(table, candidates):
        row["label"] = spec.label
        row["params"] = dict(spec.params)
    return TuneResult(candidates[best], best, criterion, float(alpha), folds, table)


def tune(cases: Sequence[Case], groups: Sequence[Hashable], candidates: Sequence[MethodSpec], alpha: float, **kw: Any) -> TuneResult:
    """:func:`tune_task` on labelled cases held in memory (``kw``: its options; this process only)."""
    return tune_task(CasesTask(cases, groups), candidates, alpha, **kw)
