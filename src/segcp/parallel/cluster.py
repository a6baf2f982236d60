"""Running a map step on a Dask cluster (``pip install "segcp[dask]"``); dask is imported here only, lazily.

:class:`DaskExecutor` submits one future per task to a ``dask.distributed`` cluster and
yields the results as they complete (the progress bar follows the futures). Tasks carry
file paths and method parameters, never arrays: the workers read the files themselves and
send back only what the reduce needs (a chunk's loss curves, or compact curves, or metrics).

Two clusters (:func:`segcp.parallel.open_executor` chooses):

* :meth:`DaskExecutor.local` (``--workers N`` with dask installed): a ``LocalCluster`` of N
  worker processes with one thread each (BLAS/OpenMP limited to one thread per process),
  started for the job and closed after. Its scratch space (Dask's lock files and spill
  folders) lives in a private temporary folder, removed with the cluster, so nothing is left
  in ``$TMPDIR/dask-scratch-space``;
* :meth:`DaskExecutor.connect` (``--scheduler ADDRESS``, or ``$DASK_SCHEDULER_ADDRESS``): an
  existing cluster (``dask scheduler`` and ``dask worker``, dask-jobqueue, Kubernetes), left
  running after the job; its workers need the same segcp version (checked by every task) and
  the data paths (a shared file system). The address is checked by its syntax before any
  connection (:func:`check_address`), and a scheduler that does not answer within
  :data:`CONNECT_TIMEOUT_S` seconds ends the job with one line.

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
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from segcp.errors import SegcpError
from segcp.parallel.base import Executor

__all__ = ["CONNECT_TIMEOUT_S", "ENV_SCHEDULER", "DaskExecutor", "check_address", "require_dask"]

R = TypeVar("R")

#: The usual environment variable of an existing Dask scheduler's address.
ENV_SCHEDULER = "DASK_SCHEDULER_ADDRESS"

#: Seconds to wait for an existing scheduler to answer before giving up with one line.
CONNECT_TIMEOUT_S = 10.0

#: The transports a Dask scheduler listens on (``inproc`` exists only inside one process).
SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")

_HOST = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]"  # [IPv6]
    r"|(?P<name>[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*))"
)


def check_address(address: str, where: str = "--scheduler") -> str:
    """``address`` if it is a scheduler address, ``[SCHEME://]HOST:PORT`` (scheme tcp, tls,
    ws, wss or ucx; host a DNS name, an IPv4 address or a bracketed IPv6 one; port 1–65535),
    else a one-line error naming ``where`` — before any connection is tried."""
    text = str(address).strip()
    example = "expected [tcp://]HOST:PORT, e.g. tcp://10.0.0.5:8786"
    if not text:
        raise SegcpError(f"{where}: an empty scheduler address; {example}")
    if len(text) > 300 or not text.isascii() or not text.isprintable():
        raise SegcpError(f"{where}: not a scheduler address ({text[:40]!r}); {example}")
    scheme, sep, rest = text.partition("://")
    if not sep:
        scheme, rest = "tcp", text
    if scheme not in SCHEMES:
        raise SegcpError(f"{where}: unknown transport {scheme!r} in {text!r} (one of {', '.join(SCHEMES)}); {example}")
    host, colon, port = rest.rpartition(":")
    m = _HOST.fullmatch(host)
    if not colon or m is None or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise SegcpError(f"{where}: {text!r} is not a scheduler address; {example}")
    if m.group("v6") is not None:
        import ipaddress

        try:
            ipaddress.IPv6Address(m.group("v6"))
        except ValueError:
            raise SegcpError(f"{where}: {host!r} in {text!r} is not an IPv6 address; {example}") from None
    return f"{scheme}://{rest}"


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
        self._scratch: str | None = None  # its private scratch folder
        self.workers = max(1, len(client.scheduler_info().get("workers", {})))
        self.where = where or f"the Dask cluster at {client.scheduler.address}"

    @classmethod
    def local(cls, n_workers: int) -> DaskExecutor:
        """A ``LocalCluster`` of ``n_workers`` processes, one thread each, its HTTP server on a
        free local port, its scratch space in a private temporary folder; all closed and removed
        with the executor."""
        import logging
        import tempfile

        distributed = require_dask()
        import dask

        if int(n_workers) < 1:
            raise SegcpError(f"--workers must be at least 1, got {n_workers}")
        scratch = tempfile.mkdtemp(prefix="segcp-dask-")
        cluster = client = None
        try:
            with dask.config.set({"temporary-directory": scratch}):  # the scheduler's and the workers' lock files
                cluster = distributed.LocalCluster(
                    n_workers=int(n_workers),
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address="127.0.0.1:0",  # its HTTP server runs anyway: a free local port, never "port 8787 is in use"
                    local_directory=scratch,
                    silence_logs=logging.CRITICAL,  # faults reach the user as one line, not as worker logs
                )
                client = distributed.Client(cluster, set_as_default=False)
            executor = cls(client, own=True, where=f"a local Dask cluster of {int(n_workers)} workers")
        except BaseException:
            for obj in (client, cluster):
                if obj is not None:
                    with contextlib.suppress(Exception):
                        obj.close()
            shutil.rmtree(scratch, ignore_errors=True)
            raise
        executor._cluster, executor._scratch = cluster, scratch
        return executor

    @classmethod
    def connect(cls, address: str, *, timeout: float | None = None) -> DaskExecutor:
        """A client of the existing scheduler at ``address`` (the cluster stays up afterwards);
        one line when the address is malformed or nothing answers within ``timeout`` seconds
        (default :data:`CONNECT_TIMEOUT_S`)."""
        address = check_address(address)
        timeout = CONNECT_TIMEOUT_S if timeout is None else float(timeout)
        distributed = require_dask()
        try:
            client = distributed.Client(address, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise SegcpError(f"{address}: cannot reach the Dask scheduler within {timeout:g} s ({type(exc).__name__}: {reason})") from None
        return cls(client, own=True, where=f"the Dask cluster at {address}")

    def _completed(self, fn: Callable[[Any], R], tasks: Iterable[Any], description: str) -> Iterator[tuple[int, R]]:
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
            self._cluster = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
            self._scratch = None
