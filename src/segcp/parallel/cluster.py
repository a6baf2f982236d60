"""A map step on a Dask cluster (``segcp[dask]``; dask imported here only, lazily): a private ``LocalCluster``
(``--workers N``) or an existing scheduler (``--scheduler ADDRESS``, left running). A dead worker's tasks
are rerun; an exception in a task cancels the rest and is raised in the client as on the worker.
"""

from __future__ import annotations

import contextlib
import re
import shutil
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from segcp.errors import SegcpError
from segcp.parallel.base import Executor

__all__ = ["CONNECT_TIMEOUT_S", "ENV_SCHEDULER", "DaskExecutor", "check_address", "require_dask"]

R = TypeVar("R")

#: The usual environment variable of an existing Dask scheduler's address.
ENV_SCHEDULER = "DASK_SCHEDULER_ADDRESS"

#: Seconds to wait for an existing scheduler to answer before giving up with one line.
CONNECT_TIMEOUT_S = 10.0
#: After an error, how long the tasks already running on the workers get to finish (their writes are whole
#: or absent) before the cluster is closed under them.
STOP_WAIT_S = 120.0

#: The transports a Dask scheduler listens on (``inproc`` exists only inside one process).
SCHEMES = ("tcp", "tls", "ws", "wss", "ucx")

_HOST = re.compile(
    r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]"  # [IPv6]
    r"|(?P<name>[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*))"
)


def check_address(address: str, where: str = "--scheduler") -> str:
    """``address`` as ``SCHEME://HOST:PORT`` (tcp, tls, ws, wss, ucx; a DNS name, IPv4 or [IPv6]; port
    1–65535), else a one-line error naming ``where`` — before any connection."""
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
    """Map tasks over the workers of a ``distributed.Client``."""

    def __init__(self, client: Any, *, own: bool = False, where: str | None = None) -> None:
        """``client``: a connected ``distributed.Client`` (closed by :meth:`close` when ``own``)."""
        self.client, self.own = client, own
        self._started = contextlib.ExitStack()  # what local() started: its cluster, its scratch folder
        self.workers = max(1, len(client.scheduler_info().get("workers", {})))
        self.where = where or f"the Dask cluster at {client.scheduler.address}"

    @classmethod
    def local(cls, n_workers: int) -> DaskExecutor:
        """A ``LocalCluster`` of ``n_workers`` one-thread processes (HTTP server on a free local port, scratch
        space in a private folder), closed and removed with the executor."""
        import logging
        import tempfile

        distributed = require_dask()
        import dask

        started = contextlib.ExitStack()
        scratch = tempfile.mkdtemp(prefix="segcp-dask-")
        started.callback(shutil.rmtree, scratch, ignore_errors=True)
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
                started.callback(cluster.close)
                client = distributed.Client(cluster, set_as_default=False)
                started.callback(client.close)
            executor = cls(client, own=True, where=f"a local Dask cluster of {int(n_workers)} workers")
        except BaseException:
            with contextlib.suppress(Exception):
                started.close()
            raise
        executor._started = started
        return executor

    @classmethod
    def connect(cls, address: str, *, timeout: float | None = None, where: str = "--scheduler") -> DaskExecutor:
        """A client of the scheduler at ``address`` (left running); one line when nothing answers within
        ``timeout`` seconds (:data:`CONNECT_TIMEOUT_S`)."""
        address = check_address(address, where)
        timeout = CONNECT_TIMEOUT_S if timeout is None else float(timeout)
        distributed = require_dask()
        try:
            client = distributed.Client(address, timeout=timeout, set_as_default=False)
        except (OSError, TimeoutError, ValueError) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise SegcpError(f"{address}: cannot reach the Dask scheduler within {timeout:g} s ({type(exc).__name__}: {reason})") from None
        return cls(client, own=True, where=f"the Dask cluster at {address}")

    def _completed(self, fn: Callable[[Any], R], tasks: Sequence[Any], description: str) -> Iterator[tuple[int, R]]:
        distributed = require_dask()
        from distributed.scheduler import KilledWorker

        token = uuid.uuid4().hex[:12]
        name = getattr(fn, "__name__", "task").strip("_")
        futures = [self.client.submit(fn, task, key=f"segcp-{name}-{token}-{i}", pure=False, retries=0) for i, task in enumerate(tasks)]
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
                running: set[str] = set()
                with contextlib.suppress(Exception):  # a task a worker runs cannot be interrupted: let it end
                    running = {str(k) for keys in self.client.processing().values() for k in keys}
                with contextlib.suppress(Exception):
                    self.client.cancel([f for k, f in pending.items() if k not in running], force=True)
                with contextlib.suppress(Exception):
                    distributed.wait([f for k, f in pending.items() if k in running], timeout=STOP_WAIT_S)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            if self.own:
                self.client.close()
        with contextlib.suppress(Exception):
            self._started.close()
