"""The tasks of a directory job: what they carry, and how workers read through them.

A directory job (``calibrate``, ``predict``, ``evaluate``, ``compare``) maps over the ids of a
data directory. On an :class:`~segcp.parallel.Executor` with workers (a process pool, a Dask
cluster) each task carries a :class:`Job` — file paths and method parameters, never arrays —
and a chunk of ids; the worker reads the files itself. Per-process caches hold what is costly
to rebuild (the directory's index, the case reader; an encoder's weights live in the family's
own cache), so each is built once per worker and job, not once per task.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from segcp._version import __version__
from segcp.cases import Case
from segcp.errors import SegcpError
from segcp.parallel.local import Executor, LocalExecutor, chunk_ranges, resolve_jobs, worker_threads
from segcp.io import CaseReader, DataDir
from segcp.io.datadir import DataSpec

__all__ = ["Job", "datadir", "draw_seed", "holds_label", "map_ids", "mapped_executor", "worker_family"]


@functools.lru_cache(maxsize=4)
def datadir(data: DataSpec, token: str) -> DataDir:
    """The inputs' index, once per process and job (``token``: files may change between jobs)."""
    return DataDir(data)


@functools.lru_cache(maxsize=4)
def _reader(job: Job) -> CaseReader:
    return datadir(job.data, job.token).reader(job.family, label=job.label, with_truth=job.with_truth, channels=job.channels)


@dataclass(frozen=True)
class Job:
    """What every task of one directory job carries: where the files are and how to read them.

    ``data`` is the job's :class:`~segcp.io.datadir.DataSpec` (a data directory, or per-kind
    folders and name patterns such as an nnU-Net layout); ``family`` is a :class:`~segcp.methods.SetFamily` (it pickles as its parameters);
    ``label``, ``channels``, ``with_truth`` as for :meth:`DataDir.reader`. ``token``
    identifies the job, so that a worker indexes the directory once per job; ``version`` is
    the client's segcp, which every worker must run.
    """

    data: DataSpec
    family: Any = field(compare=False)
    label: int | None = None
    channels: bool | str | None = False
    with_truth: bool = True
    token: str = field(default_factory=lambda: uuid.uuid4().hex)
    version: str = __version__

    def reader(self) -> CaseReader:
        """The job's case reader in this process (built once per process and job)."""
        if self.version != __version__:
            raise SegcpError(f"a worker runs segcp {__version__} but the client runs {self.version}: install the same segcp on every worker")
        return _reader(self)


def draw_seed(seed: int, k: int) -> int:
    """The seed of the draws of the k-th id (sorted order) of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(k)]).generate_state(1)[0])



def worker_family(family: Any) -> Any:
    """The family as a worker runs it: an unset run-time ``threads`` option (an encoder's
    threads) becomes the worker's own thread count, so that N worker processes on N cores do
    not each start a thread per core. A run-time option: the sets and λ̂ are the same."""
    n = worker_threads()
    return family if n is None else family.with_threads(n)


def mapped_executor(executor: Executor | None, n_jobs: int = 1) -> tuple[Executor | None, bool]:
    """(the executor of a job's map step, whether the caller must close it).

    None means the plain loop in this process (the single-process path, unchanged): no
    executor and ``n_jobs`` ≤ 1, or a one-process :class:`LocalExecutor`.
    """
    if executor is None:
        return (LocalExecutor(n_jobs), True) if resolve_jobs(n_jobs) > 1 else (None, False)
    if isinstance(executor, LocalExecutor) and executor.workers <= 1:
        return None, False
    return executor, False


def holds_label(case: Case) -> bool:
    """Whether the case's mask holds the selected structure (for ``--label`` checks)."""
    return bool(case.mask is not None and case.mask.any())


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
    ranges = chunk_ranges(len(items), executor.workers, chunk_size)
    parts: list[list[Any]] = [[] for _ in ranges]
    tasks = [(*head, list(items[r.start : r.stop])) for r in ranges]
    for i, part in executor.imap(fn, tasks, description=description, show_progress=show_progress, weights=[len(r) for r in ranges]):
        parts[i] = part
    return [x for part in parts for x in part]
