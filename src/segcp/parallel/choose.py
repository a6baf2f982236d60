"""The one function that chooses where a map step runs: :func:`open_executor`."""

from __future__ import annotations

import importlib.util
import os

from segcp.errors import SegcpError
from segcp.parallel.base import Executor
from segcp.parallel.cluster import ENV_SCHEDULER, DaskExecutor, check_address
from segcp.parallel.local import InProcessExecutor, PoolExecutor

__all__ = ["MAX_WORKERS_PER_CORE", "cores", "open_executor"]

#: ``--workers`` is capped at this many worker processes per core (each worker holds an
#: image and its curve; far more processes than cores only add memory and open files).
MAX_WORKERS_PER_CORE = 4


def cores() -> int:
    """The cores this process may run on (its CPU affinity where the system has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - macOS, Windows
        return max(1, os.cpu_count() or 1)


def _has_dask() -> bool:
    try:
        return importlib.util.find_spec("distributed") is not None
    except (ImportError, ValueError):
        return False


def open_executor(workers: int | None = None, scheduler: str | None = None, *, dask: bool = True) -> Executor:
    """The executor of a job (close it, or use it as a context manager).

    * ``scheduler`` (``--scheduler ADDRESS``; else ``$DASK_SCHEDULER_ADDRESS`` when neither
      is given): the existing Dask cluster at that address (syntax checked before connecting,
      a short connection timeout), left running after the job;
    * ``workers`` = N ≥ 2 (``--workers N``): N worker processes on this machine — a local
      Dask cluster (one thread per worker, fault tolerant: a dead worker's tasks are rerun)
      when ``dask.distributed`` is installed and ``dask`` is True, otherwise a process pool
      (``concurrent.futures``; the estimator's ``n_jobs`` asks for that with ``dask=False``).
      Either gives the single-process result bit for bit. N is capped at
      :data:`MAX_WORKERS_PER_CORE` × the cores, and ``note`` then says so;
    * neither, or ``workers`` = 1: this process (:class:`InProcessExecutor`; dask is not
      imported).
    """
    if scheduler is not None and workers is not None:
        raise SegcpError("--workers starts local worker processes and --scheduler uses an existing cluster: give one of them")
    if scheduler is None and workers is None:
        env = os.environ.get(ENV_SCHEDULER)
        if env is not None and env.strip():
            return DaskExecutor.connect(check_address(env, f"${ENV_SCHEDULER}"))
    if scheduler is not None:
        return DaskExecutor.connect(check_address(scheduler))
    n = 1 if workers is None else workers
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SegcpError(f"--workers must be a positive integer (worker processes), got {workers!r}")
    if n == 1:
        return InProcessExecutor()
    cap = MAX_WORKERS_PER_CORE * cores()
    note = None
    if n > cap:
        note = f"--workers {n} capped at {cap} ({MAX_WORKERS_PER_CORE} per core, {cores()} cores)"
        n = cap
    executor: Executor = DaskExecutor.local(n) if dask and _has_dask() else PoolExecutor(n)
    executor.note = note
    return executor
