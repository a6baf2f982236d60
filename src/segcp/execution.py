"""Where per-case work runs: in this process, or over a pool of worker processes.

The map step of calibration (case → loss curve), of prediction and of evaluation is
independent per case; :func:`parallel_map` runs it over processes and keeps the order, so
the reduce (exact CRC over the concatenated curves) gives the same λ̂ bit for bit.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import TypeVar

__all__ = ["parallel_map", "resolve_jobs"]

T = TypeVar("T")
R = TypeVar("R")


def resolve_jobs(n_jobs: int | None) -> int:
    """Worker processes for ``n_jobs`` (None/0/1: none; -1: one per CPU)."""
    n = 1 if n_jobs in (None, 0) else int(n_jobs)
    if n == -1:
        n = os.cpu_count() or 1
    return max(n, 1)


def _limit_threads() -> None:
    """Worker initialiser: one BLAS/OpenMP thread per process (the parallelism is over cases)."""
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
