"""`segcp benchmark`: a TOML config (:mod:`segcp.engine.config`) run by the engine against its cache, on
any executor; the report folder is put in place whole: ``report.html``, ``report.md`` and its figures,
``results.json`` (everything), ``results.csv`` (tidy rows) and ``config.toml``.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from segcp._version import __version__
from segcp.engine.cache import BenchmarkCache
from segcp.engine.config import PlanConfig, load_config, parse_config
from segcp.engine.plan import Plan
from segcp.engine.run import Engine
from segcp.errors import SegcpError
from segcp.io import atomic_dir, check_output, read_json, to_jsonable, write_text
from segcp.io.datadir import data_inputs
from segcp.io.writers import check_dir_target
from segcp.parallel import IN_PROCESS, Executor, open_executor

__all__ = ["RESULT_SCHEMA", "git_commit", "load_config", "parse_config", "run_benchmark"]

RESULT_SCHEMA = "segcp.benchmark"


def git_commit() -> dict[str, Any]:
    """The commit of the segcp source this runs from (and whether the tree had changes)."""
    src = Path(__file__).resolve().parent

    def git(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", "-C", str(src), *args], check=False, capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return {"commit": None, "note": "not a git checkout"}
        status = git("status", "--porcelain", "--untracked-files=no", "--", ".")
        return {"commit": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "note": "git not available"}


def _ours(results: Path) -> bool:
    """Whether ``results`` is the results.json of a benchmark report."""
    try:
        return results.is_file() and read_json(results).get("schema") == RESULT_SCHEMA
    except SegcpError:
        return False


def _check_out(out: Path, cfg: PlanConfig, replaceable: Sequence[str] = ()) -> None:
    """``out`` must be new, empty, a previous report or hold only ``replaceable`` files, and no input."""
    for t in cfg.tasks:
        if isinstance(t.data, Path) and t.data.is_dir():
            check_output(out, [*data_inputs(t.data), t.data])
    foreign = out.is_dir() and any(out.iterdir()) and not _ours(out / "results.json")
    if foreign and not (replaceable and all(p.name in replaceable for p in out.iterdir())):
        raise SegcpError(f"{out}: exists and is not a segcp benchmark report folder; choose a new folder")
    check_dir_target(out, "overwrite")


def run_benchmark(
    config: str | os.PathLike[str] | PlanConfig,
    out: str | os.PathLike[str] | None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    use_cache: bool = True,
    show_progress: bool = True,
    executor: Executor = IN_PROCESS,
    chunk_size: int | None = None,
    command: str | None = None,
    extend: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    replaceable: Sequence[str] = (),
) -> dict[str, Any]:
    """Run a config and (with ``out``) write its report folder, replaced whole (an existing one only if a report,
    or of ``replaceable`` files); returns results.json's content, with ``extend(result)``'s keys. A config's
    deprecated ``jobs = N`` gives N local processes when ``executor`` is this process."""
    from segcp.report.benchmark import TIDY_COLUMNS, build_documents, tidy_csv, tidy_rows

    t_start = time.perf_counter()
    started = _dt.datetime.now().astimezone().isoformat(timespec="seconds")
    cfg = config if isinstance(config, PlanConfig) else load_config(config)
    if out is not None:
        _check_out(Path(out), cfg, replaceable)
    owned = cfg.jobs > 1 and executor.workers <= 1
    if owned:
        executor = open_executor(cfg.jobs, dask=False)
    engine = Engine(BenchmarkCache(cache_dir, enabled=use_cache), executor, show_progress=show_progress, chunk_size=chunk_size)
    with engine.stage("reading the tasks (file hashes)"):
        plan = Plan(cfg)
    try:
        results = engine.run(plan)
    finally:
        if owned:
            executor.close()
    meta: dict[str, Any] = {
        "commit": git_commit(),
        "started": started,
        "machine": f"{platform.node() or 'unknown host'} ({os.cpu_count()} CPUs, Python {platform.python_version()})",
        "command": command or " ".join(["segcp", *sys.argv[1:]]),
        "cache": engine.cache.stats(),
        "features": engine.features,
        "executor": executor.where,
        "workers": executor.workers,
        "timings": dict(engine.timings),
        "cpu": dict(engine.cpu),
        "seconds": time.perf_counter() - t_start,
    }
    with engine.stage("report and figures"):
        doc, summaries = build_documents(cfg, plan, results, engine, meta, draw=out is not None)
    meta |= {"timings": dict(engine.timings), "cpu": dict(engine.cpu), "seconds": time.perf_counter() - t_start}
    tidy = tidy_rows(results, plan)
    keys = ("records", "model", "validity", "sets_records", "sets_validity", "seconds_per_image", "failures")
    result = {
        "schema": RESULT_SCHEMA,
        "schema_version": 2,
        "segcp_version": __version__,
        "title": cfg.title,
        "config": cfg.text,
        "config_path": str(cfg.path) if cfg.path else None,
        **meta,
        "tasks": [
            {"name": tp.task.name, "title": tp.task.title, "units": tp.task.units, "provenance": tp.task.provenance, "notes": tp.notes}
            | {"rows": [{k: getattr(r, k) for k in ("label", "kind", "main", "ablation", "base")} | {"spec": r.spec.to_dict()} for r in tp.rows]}
            | {k: res.get(k, []) for k in keys}
            for tp, res in zip(plan.tasks, results, strict=True)
        ],
        "summary": summaries,
        "tidy_columns": TIDY_COLUMNS,
        "results": tidy,  # the tidy rows of results.csv
    }
    if extend is not None:
        result.update(extend(result))
    if out is not None:
        with atomic_dir(Path(out), existing="overwrite") as tmp:
            write_text(tmp / "report.html", doc.html())
            write_text(tmp / "report.md", doc.markdown())
            for f in doc.figs:
                (tmp / f.name).write_bytes(f.png)
            write_text(tmp / "results.json", json.dumps(to_jsonable(result), allow_nan=False, separators=(",", ":")) + "\n")
            write_text(tmp / "results.csv", tidy_csv(tidy))
            write_text(tmp / "config.toml", cfg.text)
    return result
