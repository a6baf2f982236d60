"""Executors on this machine: this process, or a pool of worker processes.

:class:`InProcessExecutor` runs the tasks one after another in this process, in order; it
takes the items lazily, chunk by chunk, its chunks growing while they are fast.
:class:`PoolExecutor` runs them on ``n`` processes of a ``concurrent.futures`` pool, each
limited to one BLAS/OpenMP thread (the parallelism is over images); its tasks and their
results are pickled.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from typing import Any, TypeVar

from segcp.parallel.base import MAX_CHUNK, Executor, limit_threads
from segcp.progress import Bar

__all__ = ["InProcessExecutor", "PoolExecutor"]

R = TypeVar("R")

#: A chunk in this process that takes less than this (seconds) makes the next one twice as large.
FAST_S = 0.02


class InProcessExecutor(Executor):
    """The tasks in this process, in order (the single-process path is an executor too).

    :meth:`map_chunks` takes the items lazily (a generator stays a generator: only the
    current chunk is held) and, unless told a chunk size, starts with one item per chunk
    and doubles it (up to :data:`~segcp.parallel.base.MAX_CHUNK`) while a chunk takes less
    than :data:`FAST_S`: the bar moves per image when images are slow, and the per-task cost
    vanishes when they are fast. The result does not depend on the chunking.
    """

    workers = 1
    where = "this process"

    def _chunked(self, fn: Callable[[Any], R], head: tuple[Any, ...], items: Iterable[Any], description: str, show_progress: bool,
                 chunk_size: int | None) -> Iterator[tuple[int, R]]:
        total = len(items) if isinstance(items, Sized) else 0
        size = chunk_size or 1
        it = iter(items)
        with Bar(description, total, enabled=show_progress) as bar:
            for i in itertools.count():
                chunk = list(itertools.islice(it, size))
                if not chunk:
                    return
                t0 = time.perf_counter()
                result = fn((*head, chunk))
                if chunk_size is None and size < MAX_CHUNK and time.perf_counter() - t0 < FAST_S:
                    size *= 2
                bar.advance(len(chunk))
                yield i, result

    def _completed(self, fn: Callable[[Any], R], tasks: Iterable[Any], description: str) -> Iterator[tuple[int, R]]:
        for i, task in enumerate(tasks):
            yield i, fn(task)


class PoolExecutor(Executor):
    """``n`` worker processes on this machine (``concurrent.futures.ProcessPoolExecutor``).

    The pool starts at the first map and serves every later one until :meth:`close`. A map
    of fewer than two tasks runs in this process (no pool to start for it).
    """

    def __init__(self, n: int) -> None:
        self.workers = max(1, int(n))
        self.where = f"{self.workers} local processes"
        self._pool: Any = None

    def _completed(self, fn: Callable[[Any], R], tasks: Iterable[Any], description: str) -> Iterator[tuple[int, R]]:
        tasks = tasks if isinstance(tasks, Sequence) else list(tasks)
        if len(tasks) < 2:
            yield from InProcessExecutor()._completed(fn, tasks, description)
            return
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, initializer=limit_threads)
        pending = {self._pool.submit(fn, task): i for i, task in enumerate(tasks)}
        try:
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    yield pending.pop(fut), fut.result()
        finally:
            for fut in pending:
                fut.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
