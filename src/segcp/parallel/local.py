"""Where per-case work runs: in this process, over a pool of worker processes, or on a cluster.

The map step of calibration (case → loss curve), of prediction and of evaluation is
independent per case; :func:`parallel_map` runs it over processes and keeps the order, so
the reduce (exact CRC over the concatenated curves) gives the same λ̂ bit for bit.

Directory jobs (:mod:`segcp.jobs`) hand their map step to an :class:`Executor`: tasks
carry file paths and parameters (never arrays), ``imap`` yields ``(task index, result)`` as
results arrive, and the caller reduces them by index, so the result never depends on the
arrival order. :class:`LocalExecutor` runs in this process or a process pool;
``segcp.parallel.DaskExecutor`` runs on a Dask cluster (``segcp.parallel.open_executor``
chooses). :func:`chunk_ranges` cuts the ids into tasks.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from segcp.progress import Bar

__all__ = ["Executor", "LocalExecutor", "chunk_ranges", "parallel_map", "resolve_jobs", "worker_threads"]

T = TypeVar("T")
R = TypeVar("R")


def resolve_jobs(n_jobs: int | None) -> int:
    """Worker processes for ``n_jobs`` (None/0/1: none; -1: one per CPU)."""
    n = 1 if n_jobs in (None, 0) else int(n_jobs)
    if n == -1:
        n = os.cpu_count() or 1
    return max(n, 1)


_POOL_WORKER = False  # set in the processes of a LocalExecutor / parallel_map pool


def worker_threads() -> int | None:
    """The threads this process may use when it is a worker: 1 in a local process pool, the
    worker's thread count on a Dask worker, None elsewhere (the main process: no limit)."""
    if _POOL_WORKER:
        return 1
    distributed = sys.modules.get("distributed")  # imported in every Dask worker, never here
    if distributed is None:
        return None
    try:
        return int(distributed.get_worker().state.nthreads)
    except (ValueError, AttributeError):  # not inside a worker's task
        return None


def _limit_threads() -> None:
    """Worker initialiser: one BLAS/OpenMP thread per process (the parallelism is over cases)."""
    global _POOL_WORKER
    _POOL_WORKER = True
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        pass


def parallel_map(fn: Callable[[T], R], args: Sequence[T], n_jobs: int | None = 1) -> list[R]:
    """``[fn(a) for a in args]``, over ``n_jobs`` processes when n_jobs > 1 (order kept).

    ``fn`` must be a module-level function (it is pickled), and so must ``args``.
    """
    n = resolve_jobs(n_jobs)
    if n <= 1 or len(args) < 2:
        return [fn(a) for a in args]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(n, len(args)), initializer=_limit_threads) as ex:
        return list(ex.map(fn, args, chunksize=max(1, len(args) // (4 * n))))


def chunk_ranges(n: int, workers: int, chunk_size: int | None = None) -> list[range]:
    """Consecutive index ranges covering ``range(n)``: the tasks of a map step.

    ``chunk_size`` None: about 8 tasks per worker (load balance, and little lost when a
    worker dies), at most 64 ids per task (the memory of one task's result) and at least 1.
    """
    if n <= 0:
        return []
    size = int(chunk_size) if chunk_size else max(1, min(64, math.ceil(n / (8 * max(workers, 1)))))
    return [range(i, min(i + size, n)) for i in range(0, n, size)]


class Executor:
    """Runs a module-level function over tasks and yields ``(index, result)`` as they finish.

    Subclasses implement :meth:`_completed`; ``workers`` is the parallelism (for chunking) and
    ``where`` says, in words, where the work runs. An executor is a context manager: leaving
    it releases what it started (a pool, a local cluster), never what it was given.
    """

    workers: int = 1
    where: str = "this process"

    def imap(
        self,
        fn: Callable[[Any], R],
        tasks: Sequence[Any],
        *,
        description: str = "working",
        show_progress: bool = True,
        weights: Sequence[int] | None = None,
    ) -> Iterator[tuple[int, R]]:
        """``(i, fn(tasks[i]))`` for every task, in completion order; the bar advances by
        ``weights[i]`` (e.g. the images of a task) as each finishes. The first exception
        raised by a task stops the map (what is still running is cancelled) and propagates."""
        w = list(weights) if weights is not None else [1] * len(tasks)
        with Bar(description, int(sum(w)), enabled=show_progress) as bar:
            for i, result in self._completed(fn, tasks, description):
                bar.advance(w[i])
                yield i, result

    def _completed(self, fn: Callable[[Any], R], tasks: Sequence[Any], description: str) -> Iterator[tuple[int, R]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what this executor started."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LocalExecutor(Executor):
    """This process (``n_jobs`` = 1: tasks in order) or a pool of ``n_jobs`` processes."""

    def __init__(self, n_jobs: int | None = 1) -> None:
        self.workers = resolve_jobs(n_jobs)
        self.where = "this process" if self.workers == 1 else f"{self.workers} local processes"

    def _completed(self, fn: Callable[[Any], R], tasks: Sequence[Any], description: str) -> Iterator[tuple[int, R]]:
        if self.workers <= 1 or len(tasks) < 2:
            for i, task in enumerate(tasks):
                yield i, fn(task)
            return
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        with ProcessPoolExecutor(max_workers=min(self.workers, len(tasks)), initializer=_limit_threads) as pool:
            pending = {pool.submit(fn, task): i for i, task in enumerate(tasks)}
            try:
                while pending:
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in done:
                        yield pending.pop(fut), fut.result()
            finally:
                for fut in pending:
                    fut.cancel()
