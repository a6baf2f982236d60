"""`segcp compare`: a one-task plan of the engine (:mod:`segcp.engine`) from its flags — the records and
numbers of `segcp benchmark` on the same plan; :func:`compare_dir` also writes its report folder.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from segcp._version import __version__
from segcp.calibration import check_alpha
from segcp.cases import Case
from segcp.engine.band import BAND_SPLIT, is_band
from segcp.engine.cache import BenchmarkCache
from segcp.engine.config import MethodEntry, PlanConfig, TaskConfig, unique_labels
from segcp.engine.plan import Plan
from segcp.engine.run import Engine
from segcp.engine.tasks import CasesTask, Task, load_groups, open_task
from segcp.errors import SegcpError
from segcp.io import check_output
from segcp.io.datadir import data_inputs, describe_data
from segcp.io.writers import check_dir_target
from segcp.jobs.tasks import check_seed
from segcp.parallel import IN_PROCESS, Executor
from segcp.report.compare import REPORT_FILES, markdown_summary, write_report
from segcp.report.summaries import model_summary, summarize
from segcp.specs import MethodSpec, TunedSpec

__all__ = ["MethodSpec", "TunedSpec", "compare_dir", "comparison", "load_groups", "markdown_summary", "run_comparison", "write_report"]


def comparison(
    task: Task,
    specs: Sequence[MethodSpec | TunedSpec],
    *,
    alphas: Sequence[float] = (0.2, 0.1, 0.05),
    n_cal: int = 20,
    n_splits: int = 20,
    seed: int = 0,
    show_progress: bool = True,
    executor: Executor = IN_PROCESS,
    cache: BenchmarkCache | None = None,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """Every method at every α over ``n_splits`` group splits of ``task`` (``n_cal`` calibration images):
    ``splits`` (the records), ``model`` and ``summary`` (wins against the first method)."""
    alphas = [check_alpha(a) for a in alphas]
    seed = check_seed(seed)
    unique_labels([s.label for s in specs], "compare: -m")
    entries = tuple(MethodEntry(s.label, s) for s in specs)
    tasks = (task.cfg,) if task.cfg is not None else ()
    cfg = PlanConfig(seed=seed, splits=n_splits, n_cal=n_cal, alphas=tuple(alphas), validity_splits=0, methods=entries, tasks=tasks)
    plan = Plan(cfg, [task])
    tp = plan.tasks[0]
    for r in tp.rows:
        if r.kind != "mask":
            raise SegcpError(f"compare: {r.label} makes sets of segmentations; compare measures pixel sets (use segcp benchmark)")
    if len(tp.rows) < len(specs):
        raise SegcpError(f"compare: {tp.notes[0]}")
    if tp.mask_view is None:
        raise SegcpError("compare: give at least one method")
    res = Engine(cache or BenchmarkCache(enabled=False), executor, show_progress=show_progress, chunk_size=chunk_size).run(plan)[0]
    view = tp.mask_view
    band = {s.label: str(s.candidates[0].guarantee) for s in specs if is_band(s)}  # two-sided rows: their own summary
    one_sided = [r for r in res["records"] if r["method"] not in band]
    baseline = next((s.label for s in specs if s.label not in band), None)
    two_sided = {
        "band_guarantees": band,
        "band_summary": summarize([r for r in res["records"] if r["method"] in band], metrics=BAND_SPLIT, risk="risk"),
    }
    return {
        "segcp_version": __version__,
        "methods": [s.to_dict() for s in specs],
        "alphas": list(alphas),
        "n_cal": n_cal,
        "n_splits": n_splits,
        "seed": seed,
        "n_images": len(view),
        "n_groups": len(set(view.groups)),
        "n_empty_truth": sum(n == 0 for n in res["truth_sizes"]),
        "units": task.units,
        "model": model_summary(res["model"], n_cal),
        "splits": res["records"],
        "summary": summarize(one_sided, baseline=baseline),
    } | (two_sided if band else {})


def run_comparison(cases: Sequence[Case], groups: Sequence[str], specs: Sequence[MethodSpec | TunedSpec], **kw: Any) -> dict[str, Any]:
    """:func:`comparison` of labelled cases held in memory (``kw``: its options; this process only)."""
    return comparison(CasesTask(cases, groups), specs, **kw)


def compare_dir(
    data: str | os.PathLike[str] | Any,
    specs: Sequence[MethodSpec | TunedSpec],
    *,
    label: int | None = None,
    out: str | os.PathLike[str] | None = None,
    title: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """A :func:`comparison` of a data directory; ``out``: its report folder; ``cache_dir``: the engine's cache."""
    if out is not None:
        check_output(out, data_inputs(data))
        check_dir_target(Path(out), "merge", REPORT_FILES)
    name = Path(describe_data(data)).name
    task = open_task(TaskConfig(name=name or "data", data=data if not isinstance(data, str) else Path(data), label=label))
    cache = BenchmarkCache(cache_dir) if cache_dir is not None else None
    result = comparison(task, specs, cache=cache, **kw)
    result["data"] = describe_data(data)
    result["groups_from"] = task.provenance.get("groups_from", "none (each image its own group)")
    if out is not None:
        write_report(out, result, title or f"segcp comparison on {name}", notes=f"Groups: {result['groups_from']}.")
    return result
