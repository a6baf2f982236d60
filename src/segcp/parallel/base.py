"""The one map interface: :class:`Executor`, and the helpers every map step shares.

The map step of calibration (case → loss curve), of prediction and of evaluation is
independent per case. A job hands it to an :class:`Executor`: tasks carry what a worker needs
(file paths and parameters for the directory jobs, never arrays; the estimator's own cases when
it runs on ``n_jobs`` processes), :meth:`Executor.imap` yields ``(task index, result)`` as
results arrive, and the caller reduces them by index, so the result never depends on the
arrival order — or on the executor: this process, a pool of processes and a Dask cluster give
the same bits.

:func:`chunk_ranges` cuts ``n`` items into consecutive tasks, :meth:`Executor.map_chunks`
maps a function over chunks of items (the executor cuts them) and :func:`map_ids`
concatenates per-item results in item order.
:func:`worker_threads` tells a task how many threads its process may use and
:func:`limit_threads` is the initialiser that limits a pool worker to one BLAS/OpenMP thread.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

from segcp.errors import SegcpError
from segcp.progress import Bar

__all__ = ["Executor", "check_chunk_size", "chunk_ranges", "limit_threads", "map_ids", "worker_threads"]

R = TypeVar("R")

#: Ids per task at most, when the chunk size is chosen for the user (the memory of one result).
MAX_CHUNK = 64

_POOL_WORKER = False  # set in the processes of a process pool (limit_threads)


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


def limit_threads() -> None:
    """Process-pool initialiser: one BLAS/OpenMP thread per process (the parallelism is over
    cases), and :func:`worker_threads` says 1."""
    global _POOL_WORKER
    _POOL_WORKER = True
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        pass


def check_chunk_size(chunk_size: int | None) -> int | None:
    """``--chunk-size``: None (chosen per executor) or an integer ≥ 1, else a one-line error."""
    if chunk_size is None:
        return None
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise SegcpError(f"--chunk-size must be a positive integer (images per task), got {chunk_size!r}")
    return chunk_size


def chunk_ranges(n: int, workers: int, chunk_size: int | None = None) -> list[range]:
    """Consecutive index ranges covering ``range(n)``: the tasks of a map step.

    ``chunk_size`` None: about 8 tasks per worker (load balance, and little lost when a
    worker dies), at most :data:`MAX_CHUNK` ids per task (the memory of one task's result)
    and at least 1.
    """
    size = check_chunk_size(chunk_size) or max(1, min(MAX_CHUNK, math.ceil(n / (8 * max(workers, 1)))))
    return [range(i, min(i + size, n)) for i in range(0, max(n, 0), size)]


class Executor:
    """Runs a module-level function over tasks and yields ``(index, result)`` as they finish.

    Subclasses implement :meth:`_completed`. ``workers`` is the parallelism (for chunking),
    ``where`` says in words where the work runs, and ``note`` is what the user should know
    about how it was chosen (e.g. a capped worker count), or None. An executor is a context
    manager: leaving it releases what it started (a pool, a local cluster), never what it was
    given (a client of an existing cluster).
    """

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
    ) -> Iterator[tuple[int, R]]:
        """``(i, fn(tasks[i]))`` for every task, in completion order; the bar advances by
        ``weights[i]`` (e.g. the images of a task; default 1) as each finishes. The first
        exception raised by a task stops the map (what is still running is cancelled) and
        propagates."""
        tasks = tasks if isinstance(tasks, Sequence) else list(tasks)
        total = int(sum(weights)) if weights is not None else len(tasks)
        with Bar(description, total, enabled=show_progress) as bar:
            for i, result in self._completed(fn, tasks, description):
                bar.advance(1 if weights is None else weights[i])
                yield i, result

    def map(self, fn: Callable[[Any], R], tasks: Iterable[Any], *, description: str = "working", show_progress: bool = True) -> list[R]:
        """``[fn(t) for t in tasks]`` on this executor, in task order."""
        out: dict[int, R] = {}
        for i, result in self.imap(fn, tasks, description=description, show_progress=show_progress):
            out[i] = result
        return [out[i] for i in range(len(out))]

    def map_chunks(
        self,
        fn: Callable[[Any], R],
        head: tuple[Any, ...],
        items: Iterable[Any],
        *,
        description: str = "working",
        show_progress: bool = True,
        chunk_size: int | None = None,
    ) -> Iterator[tuple[int, R]]:
        """``fn((*head, chunk))`` over consecutive chunks of ``items``; ``(chunk index, result)``
        as the chunks finish (chunk k holds the items after those of chunks 0…k−1). Chunks of
        ``chunk_size`` items, else as this executor chooses (:func:`chunk_ranges` for its
        workers); results reduced by chunk index are the same whatever the chunking."""
        return self._chunked(fn, head, items, description, show_progress, check_chunk_size(chunk_size))

    def _chunked(self, fn: Callable[[Any], R], head: tuple[Any, ...], items: Iterable[Any], description: str, show_progress: bool,
                 chunk_size: int | None) -> Iterator[tuple[int, R]]:
        seq = items if isinstance(items, Sequence) else list(items)
        ranges = chunk_ranges(len(seq), self.workers, chunk_size)
        tasks = [(*head, list(seq[r.start : r.stop])) for r in ranges]
        yield from self.imap(fn, tasks, description=description, show_progress=show_progress, weights=[len(r) for r in ranges])

    def _completed(self, fn: Callable[[Any], R], tasks: Iterable[Any], description: str) -> Iterator[tuple[int, R]]:
        raise NotImplementedError

    def close(self) -> None:
        """Release what this executor started."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def map_ids(
    executor: Executor,
    fn: Callable[[Any], list[Any]],
    head: tuple[Any, ...],
    items: Sequence[Any],
    description: str,
    show_progress: bool,
    chunk_size: int | None,
) -> list[Any]:
    """``fn((*head, chunk))`` over chunks of ``items`` on ``executor``; the per-item results
    (each task returns a list) concatenated in the order of ``items``, whatever the order
    in which the tasks finish."""
    parts: dict[int, list[Any]] = {}
    for i, part in executor.map_chunks(fn, head, items, description=description, show_progress=show_progress, chunk_size=chunk_size):
        parts[i] = part
    return [x for i in range(len(parts)) for x in parts[i]]
