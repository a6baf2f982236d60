"""Running a directory job's map step on a Dask cluster (``pip install "segcp[dask]"``).

:class:`DaskExecutor` submits one future per task to a ``dask.distributed`` cluster and
yields the results as they complete (the progress bar follows the futures). Tasks carry
file paths and method parameters, never arrays: the workers read the files themselves and
send back only what the reduce needs (a chunk's loss curves, or compact curves, or metrics).

Where the cluster comes from (:func:`open_executor`):

* ``workers=N`` (``--workers N``): a ``LocalCluster`` of N worker processes with one thread
  each (BLAS/OpenMP limited to one thread per process), started for the job and closed after;
* ``scheduler=ADDRESS`` (``--scheduler``), or the environment variable
  ``DASK_SCHEDULER_ADDRESS`` when neither is given: an existing cluster (``dask-scheduler``
  and ``dask-worker``, dask-jobqueue, Kubernetes), left running after the job; its workers
  need the same segcp version (checked by every task) and the data paths (a shared file
  system);
* neither: :class:`~segcp.parallel.LocalExecutor` (this process, or ``n_jobs`` processes) —
  dask is then never imported.

Faults. A worker that dies (killed, out of memory) has its tasks rerun elsewhere by the
scheduler, including finished results it held that were not yet gathered; a task whose
workers die more than ``distributed.scheduler.allowed-failures`` times (default 3) ends the
job with one line. An exception in a task (a bad file: :class:`~segcp.errors.SegcpError`
naming it; an ``OSError``) cancels the remaining futures and is raised in the client as it
was raised on the worker, so the CLI prints the same one line as a local run. Exceptions are
not retried by default (``retries``): a bad file stays bad.

Heavy state (an encoder's weights, a directory index) is held in module-level caches of the
worker process (``functools.lru_cache``), so it is loaded once per worker, not once per task.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from segcp.errors import SegcpError
from segcp.parallel.local import Executor, LocalExecutor

__all__ = ["ENV_SCHEDULER", "DaskExecutor", "open_executor", "require_dask"]

R = TypeVar("R")

#: The usual environment variable of an existing Dask scheduler's address.
ENV_SCHEDULER = "DASK_SCHEDULER_ADDRESS"


def require_dask() -> Any:
    """``dask.distributed``, or a one-line error saying how to install it."""
    try:
        import distributed
    except ImportError:
        raise SegcpError('running on a Dask cluster needs dask and distributed: pip install "segcp[dask]"') from None
    return distributed


class DaskExecutor(Executor):
    """Map tasks over the workers of a ``distributed.Client``.

    Parameters
    ----------
    client : distributed.Client
        A connected client (kept open after the job unless ``own`` is True).
    own : bool
        Close the client (and its cluster) in :meth:`close`.
    retries : int
        Reruns of a task that *raised* (a dead worker's tasks are always rerun).
    """

    def __init__(self, client: Any, *, own: bool = False, retries: int = 0, where: str | None = None) -> None:
        self.client = client
        self.own = own
        self.retries = int(retries)
        self._cluster: Any = None  # a LocalCluster this executor started
        self.workers = max(1, len(client.scheduler_info().get("workers", {})))
        self.where = where or f"the Dask cluster at {client.scheduler.address}"

    @classmethod
    def local(cls, n_workers: int) -> DaskExecutor:
        """A ``LocalCluster`` of ``n_workers`` processes, one thread each, no dashboard; closed with the executor."""
        distributed = require_dask()
        if int(n_workers) < 1:
            raise SegcpError(f"--workers must be at least 1, got {n_workers}")
        cluster = distributed.LocalCluster(
            n_workers=int(n_workers),
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.CRITICAL,  # faults reach the user as one line, not as worker logs
        )
        client = distributed.Client(cluster, set_as_default=False)
        executor = cls(client, own=True, where=f"a local Dask cluster of {int(n_workers)} workers")
        executor._cluster = cluster
        return executor

    @classmethod
    def connect(cls, address: str, *, timeout: float = 30.0) -> DaskExecutor:
        """A client of the existing scheduler at ``address`` (the cluster stays up afterwards)."""
        distributed = require_dask()
        try:
            client = distributed.Client(address, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError) as exc:
            raise SegcpError(f"{address}: cannot reach the Dask scheduler ({type(exc).__name__}: {exc})") from None
        return cls(client, own=True, where=f"the Dask cluster at {address}")

    def _completed(self, fn: Callable[[Any], R], tasks: Sequence[Any], description: str) -> Iterator[tuple[int, R]]:
        distributed = require_dask()
        from distributed.scheduler import KilledWorker

        token = uuid.uuid4().hex[:12]
        name = getattr(fn, "__name__", "task").strip("_")
        futures = [
            self.client.submit(fn, task, key=f"segcp-{name}-{token}-{i}", pure=False, retries=self.retries)
            for i, task in enumerate(tasks)
        ]
        index = {f.key: i for i, f in enumerate(futures)}
        pending = {f.key: f for f in futures}
        done = distributed.as_completed(futures, with_results=True, loop=self.client.loop)
        del futures  # each result is released (on the cluster too) once gathered
        try:
            for fut, result in done:
                i = index[fut.key]
                del pending[fut.key], fut
                yield i, result
        except KilledWorker as exc:
            raise SegcpError(f"{description}: the workers running one task died too many times ({exc}); see the cluster's logs") from None
        finally:
            if pending:  # an error, or the caller stopped early: stop the rest of the work
                with contextlib.suppress(Exception):
                    done.clear()
                with contextlib.suppress(Exception):
                    self.client.cancel(list(pending.values()), force=True)

    def close(self) -> None:
        if not self.own:
            return
        with contextlib.suppress(Exception):
            self.client.close()
        if self._cluster is not None:
            with contextlib.suppress(Exception):
                self._cluster.close()


def open_executor(n_jobs: int | None = 1, workers: int | None = None, scheduler: str | None = None) -> Executor:
    """The executor of a job: an existing Dask cluster, a local one, or this machine's processes.

    ``scheduler`` (else ``$DASK_SCHEDULER_ADDRESS`` when ``workers`` is not given): connect to
    that cluster. ``workers``: start a ``LocalCluster`` of that many processes. Neither: a
    :class:`~segcp.parallel.LocalExecutor` of ``n_jobs`` processes (dask not imported).
    """
    if scheduler is not None and workers is not None:
        raise SegcpError("--workers starts a local cluster and --scheduler uses an existing one: give one of them")
    if scheduler is None and workers is None:
        scheduler = os.environ.get(ENV_SCHEDULER) or None
    if scheduler is not None:
        if not str(scheduler).strip():
            raise SegcpError("--scheduler: an empty address")
        return DaskExecutor.connect(str(scheduler))
    if workers is not None:
        return DaskExecutor.local(int(workers))
    return LocalExecutor(n_jobs)
