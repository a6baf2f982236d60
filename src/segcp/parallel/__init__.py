"""Where per-case work runs: one interface (:class:`Executor`), three executors (this process, a process
pool, a Dask cluster: dask imported lazily, only there) and one function that chooses (:func:`open_executor`).
"""

from __future__ import annotations

import importlib.util
import os

from segcp.errors import SegcpError
from segcp.parallel.base import IN_PROCESS, Executor, InProcessExecutor, PoolExecutor, check_chunk_size, map_ids, worker_threads
from segcp.parallel.cluster import ENV_SCHEDULER, DaskExecutor, check_address

__all__ = ["IN_PROCESS", "MAX_WORKERS_PER_CORE", "DaskExecutor", "Executor", "InProcessExecutor", "PoolExecutor", "check_address"]
__all__ += ["check_chunk_size", "cores", "map_ids", "open_executor", "worker_threads"]

#: ``--workers`` is capped at this many worker processes per core (each holds an image and its
#: curve; far more processes than cores only add memory and open files).
MAX_WORKERS_PER_CORE = 4


def cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def open_executor(workers: int | None = None, scheduler: str | None = None, *, dask: bool = True) -> Executor:
    """The executor of a job: ``scheduler`` (else ``$DASK_SCHEDULER_ADDRESS`` when neither is given), an
    existing Dask cluster; ``workers`` = N ≥ 2, N processes here (at most :data:`MAX_WORKERS_PER_CORE` per
    core): a local Dask cluster when installed and ``dask``, else a process pool; else this process.
    """
    if scheduler is not None and workers is not None:
        raise SegcpError("--workers starts local worker processes and --scheduler uses an existing cluster: give one of them")
    env = os.environ.get(ENV_SCHEDULER, "").strip() if workers is None and scheduler is None else ""
    if scheduler is not None or env:
        return DaskExecutor.connect(scheduler or env, where="--scheduler" if scheduler is not None else f"${ENV_SCHEDULER}")
    n = 1 if workers is None else workers
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SegcpError(f"--workers must be a positive integer (worker processes), got {workers!r}")
    if n == 1:
        return InProcessExecutor()
    cap = MAX_WORKERS_PER_CORE * cores()
    note = f"--workers {n} capped at {cap} ({MAX_WORKERS_PER_CORE} per core, {cores()} cores)" if n > cap else None
    n = min(n, cap)
    executor: Executor = DaskExecutor.local(n) if dask and importlib.util.find_spec("distributed") is not None else PoolExecutor(n)
    executor.note = note
    return executor
