"""The one map interface, :class:`Executor`, and this machine's executors. Tasks carry paths and parameters,
never arrays; the caller reduces ``(task index, result)`` by index, so the bits never depend on the
arrival order, the chunking or the executor.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence, Sized
from typing import Any, TypeVar

from segcp.errors import SegcpError
from segcp.progress import Bar

__all__ = ["IN_PROCESS", "Executor", "InProcessExecutor", "PoolExecutor", "check_chunk_size", "chunk_ranges", "map_ids", "worker_threads"]

R = TypeVar("R")

#: Ids per task at most, when the chunk size is chosen for the user (the memory of one result).
MAX_CHUNK = 64
#: A chunk in this process that takes less than this (seconds) makes the next one twice as large.
FAST_S = 0.02

_POOL_WORKER = False  # set in the processes of a process pool (limit_threads)


def worker_threads() -> int | None:
    """A worker's threads: 1 in a process pool, the worker's on Dask, None elsewhere (no limit)."""
    if _POOL_WORKER:
        return 1
    distributed = sys.modules.get("distributed")  # imported in every Dask worker, never here
    try:
        return None if distributed is None else int(distributed.get_worker().state.nthreads)
    except (ValueError, AttributeError):  # not inside a worker's task
        return None


def limit_threads() -> None:
    """Process-pool initialiser: one BLAS/OpenMP thread per process (the parallelism is over cases)."""
    global _POOL_WORKER
    _POOL_WORKER = True
    with contextlib.suppress(ImportError):  # threadpoolctl ships with scikit-learn
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)


def check_chunk_size(chunk_size: int | None) -> int | None:
    """``--chunk-size``: None (chosen per executor) or an integer ≥ 1, else a one-line error."""
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise SegcpError(f"--chunk-size must be a positive integer (images per task), got {chunk_size!r}")
    return chunk_size


def chunk_ranges(n: int, workers: int, chunk_size: int | None = None) -> list[range]:
    """Consecutive ranges covering ``range(n)``: ``chunk_size`` each, else ~8 per worker of at most :data:`MAX_CHUNK`."""
    size = check_chunk_size(chunk_size) or max(1, min(MAX_CHUNK, math.ceil(n / (8 * max(workers, 1)))))
    return [range(i, min(i + size, n)) for i in range(0, max(n, 0), size)]


def _bar(bar: Bar | None, description: str, total: int, show_progress: bool) -> contextlib.AbstractContextManager[Bar]:
    """The given (running) bar, or a new one."""
    return contextlib.nullcontext(bar) if bar is not None else Bar(description, total, enabled=show_progress)


#: Opens the bar of a :meth:`Executor.map_chunks` call, given its total.
_Opener = Callable[[int], contextlib.AbstractContextManager[Bar]]


class Executor:
    """Runs a module-level function over tasks; a context manager releasing what it started (never what it was
    given). ``workers``: for chunking; ``where``: in words; ``note``: how it was chosen (a capped count), or None."""

    workers: int = 1
    where: str = "this process"
    note: str | None = None

    def imap(
        self,
        fn: Callable[[Any], R],
        tasks: Iterable[Any],
        *,
        description: str = "working",
        show_progress: bool = True,
        weights: Sequence[int] | None = None,
        bar: Bar | None = None,
    ) -> Iterator[tuple[int, R]]:
        """``(i, fn(tasks[i]))`` as tasks finish; the bar advances by ``weights[i]`` (default 1). A task's
        exception cancels the rest and propagates."""
        tasks = tasks if isinstance(tasks, Sequence) else list(tasks)
        with _bar(bar, description, int(sum(weights)) if weights is not None else len(tasks), show_progress) as b:
            for i, result in self._completed(fn, tasks, description):
                b.advance(1 if weights is None else weights[i])
                yield i, result

    def map_chunks(
        self,
        fn: Callable[[Any], R],
        head: tuple[Any, ...],
        items: Iterable[Any],
        *,
        description: str = "working",
        show_progress: bool = True,
        chunk_size: int | None = None,
        bar: Bar | None = None,
    ) -> Iterator[tuple[int, R]]:
        """``(k, fn((*head, chunk_k)))`` over consecutive chunks of ``items`` as they finish; the bar advances by
        each chunk's items."""
        size = check_chunk_size(chunk_size)
        yield from self._map_chunks(fn, head, items, size, description, functools.partial(_bar, bar, description, show_progress=show_progress))

    def _map_chunks(
        self, fn: Callable[[Any], R], head: tuple[Any, ...], items: Iterable[Any], chunk_size: int | None, description: str, bar: _Opener
    ) -> Iterator[tuple[int, R]]:
        """:meth:`map_chunks` on :func:`chunk_ranges` of the items, through :meth:`imap`; ``bar(total)`` opens the bar."""
        seq = items if isinstance(items, Sequence) else list(items)
        ranges = chunk_ranges(len(seq), self.workers, chunk_size)
        tasks = [(*head, list(seq[r.start : r.stop])) for r in ranges]
        with bar(len(seq)) as b:
            yield from self.imap(fn, tasks, description=description, weights=[len(r) for r in ranges], bar=b)

    def _completed(self, fn: Callable[[Any], R], tasks: Sequence[Any], description: str) -> Iterator[tuple[int, R]]:
        yield from enumerate(map(fn, tasks))

    def close(self) -> None:
        """Release what this executor started."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def map_ids(executor: Executor, fn: Callable[[Any], list[Any]], head: tuple[Any, ...], items: Sequence[Any], **kw: Any) -> list[Any]:
    """``fn((*head, chunk))`` over chunks of ``items`` (``kw``: :meth:`Executor.map_chunks`'s); the per-item results in item order."""
    parts = dict(executor.map_chunks(fn, head, items, **kw))
    return [x for i in range(len(parts)) for x in parts[i]]


class InProcessExecutor(Executor):
    """The tasks here, in order; :meth:`map_chunks` takes items lazily in chunks from one doubling up to
    :data:`MAX_CHUNK` while a chunk takes < :data:`FAST_S` (unless ``chunk_size`` is given)."""

    def _map_chunks(
        self, fn: Callable[[Any], R], head: tuple[Any, ...], items: Iterable[Any], chunk_size: int | None, description: str, bar: _Opener
    ) -> Iterator[tuple[int, R]]:
        size = chunk_size or 1
        it = iter(items)
        with bar(len(items) if isinstance(items, Sized) else 0) as b:
            for i in itertools.count():
                chunk = list(itertools.islice(it, size))
                if not chunk:
                    return
                t0 = time.perf_counter()
                result = fn((*head, chunk))
                if chunk_size is None and size < MAX_CHUNK and time.perf_counter() - t0 < FAST_S:
                    size *= 2
                b.advance(len(chunk))
                yield i, result


#: This process: the executor of a job that asks for no workers (it holds no state).
IN_PROCESS = InProcessExecutor()


class PoolExecutor(Executor):
    """``n`` processes of a ``concurrent.futures`` pool (one BLAS thread each), kept until :meth:`close`."""

    def __init__(self, n: int) -> None:
        self.workers = max(1, int(n))
        self.where = f"{self.workers} local processes"
        self._pool: Any = None

    def _completed(self, fn: Callable[[Any], R], tasks: Sequence[Any], description: str) -> Iterator[tuple[int, R]]:
        if len(tasks) < 2:
            yield from enumerate(map(fn, tasks))
            return
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        if self._pool is None:
            self._pool = ProcessPoolExecutor(max_workers=self.workers, initializer=limit_threads)
        pending = {self._pool.submit(fn, task): i for i, task in enumerate(tasks)}
        try:
            while pending:
                for fut in wait(pending, return_when=FIRST_COMPLETED)[0]:
                    yield pending.pop(fut), fut.result()
        finally:
            for fut in pending:
                fut.cancel()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None
