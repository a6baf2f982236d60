"""Where per-case work runs: in this process, over a pool of worker processes, or on a Dask cluster.

:class:`Executor` maps a module-level function over tasks and yields ``(task index, result)``
as they finish (:mod:`segcp.parallel.local`); :class:`DaskExecutor` runs the tasks on a Dask
cluster (:mod:`segcp.parallel.cluster`, dask imported lazily); :func:`open_executor` chooses.
"""

from segcp.parallel.cluster import ENV_SCHEDULER, DaskExecutor, open_executor, require_dask
from segcp.parallel.local import Executor, LocalExecutor, _limit_threads, chunk_ranges, parallel_map, resolve_jobs, worker_threads

__all__ = [
    "ENV_SCHEDULER",
    "DaskExecutor",
    "Executor",
    "LocalExecutor",
    "_limit_threads",
    "chunk_ranges",
    "open_executor",
    "parallel_map",
    "require_dask",
    "resolve_jobs",
    "worker_threads",
]
