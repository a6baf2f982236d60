"""Where per-case work runs: this process, a pool of worker processes, or a Dask cluster.

One interface (:class:`Executor`: ``imap(fn, tasks)`` yields ``(task index, result)`` as the
tasks finish; ``workers``; ``where``; a context manager), three executors
(:class:`InProcessExecutor`, :class:`PoolExecutor`, :class:`DaskExecutor` — dask imported
lazily, only there) and one function that chooses (:func:`open_executor`). Every directory job
and the estimator's ``n_jobs`` run their map step through it; the caller reduces by index, so
the result is the same bits on every executor.
"""

from segcp.parallel.base import Executor, check_chunk_size, chunk_ranges, limit_threads, map_ids, worker_threads
from segcp.parallel.choose import MAX_WORKERS_PER_CORE, cores, open_executor
from segcp.parallel.cluster import CONNECT_TIMEOUT_S, ENV_SCHEDULER, DaskExecutor, check_address, require_dask
from segcp.parallel.local import InProcessExecutor, PoolExecutor

__all__ = [
    "CONNECT_TIMEOUT_S",
    "ENV_SCHEDULER",
    "MAX_WORKERS_PER_CORE",
    "DaskExecutor",
    "Executor",
    "InProcessExecutor",
    "PoolExecutor",
    "check_address",
    "check_chunk_size",
    "chunk_ranges",
    "cores",
    "limit_threads",
    "map_ids",
    "open_executor",
    "require_dask",
    "worker_threads",
]
