"""Progress bars (rich) on stderr, for anything that takes more than a few seconds.

One helper for the whole package: :func:`track` wraps an iterable (a list or a lazy
generator of known length) and shows a bar with a count and an ETA when stderr is a
terminal. When stderr is not a terminal (a log file, a cluster job, nohup) long work prints
plain-text lines instead, at most one every :data:`PLAIN_INTERVAL` seconds
(``$SEGCP_PROGRESS_INTERVAL`` changes it), ``segcp: calibrating: 37/120 (31%), 1m52s
elapsed, about 4m03s left``, and a last one when it ends; work shorter than the interval
prints nothing (logs of quick runs stay clean). :class:`Bar` is the same bar driven by hand
(training loops, futures that complete out of order).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Iterator
from functools import cached_property
from typing import Any, TypeVar

__all__ = ["PLAIN_INTERVAL", "Bar", "track"]

T = TypeVar("T")

#: Seconds between two plain-text progress lines (stderr not a terminal), unless $SEGCP_PROGRESS_INTERVAL says otherwise.
PLAIN_INTERVAL = 30.0


def _interval() -> float:
    raw = os.environ.get("SEGCP_PROGRESS_INTERVAL")
    try:
        return max(0.0, float(raw)) if raw else PLAIN_INTERVAL
    except ValueError:
        return PLAIN_INTERVAL


def _clock(seconds: float) -> str:
    """``1h02m``, ``4m03s``, ``12s``."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class _Lines:
    """The plain-text form of a bar: one line on stderr at most every ``interval`` seconds."""

    def __init__(self, description: str, total: int, interval: float) -> None:
        self.description, self.total, self.interval = description, total, interval
        self.done = 0
        self.t0 = self.last = time.monotonic()
        self.printed = False

    def line(self, final: bool = False) -> None:
        elapsed = time.monotonic() - self.t0
        pct = f" ({100 * self.done / self.total:.0f}%)" if self.total else ""
        left = ""
        if not final and 0 < self.done < self.total:
            left = f", about {_clock(elapsed * (self.total - self.done) / self.done)} left"
        what = f"{self.description}: " if self.description else ""
        sys.stderr.write(f"segcp: {what}{self.done}/{self.total}{pct}, {_clock(elapsed)} elapsed{left}{', done' if final else ''}\n")
        sys.stderr.flush()
        self.last, self.printed = time.monotonic(), True

    def advance(self, n: int) -> None:
        self.done += n
        if self.done < self.total and time.monotonic() - self.last >= self.interval:  # the last one: at the end
            self.line()

    def close(self) -> None:
        if self.printed or time.monotonic() - self.t0 >= self.interval:
            self.line(final=True)


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


class Bar:
    """A rich progress bar on stderr (a no-op when disabled; plain-text lines at an interval when
    stderr is not a terminal).

    Use as a context manager; :meth:`advance` moves it, :meth:`update` sets extra fields
    shown by ``fields`` (a format string over ``task.fields``).
    """

    def __init__(self, description: str, total: int, *, enabled: bool = True, fields: str | None = None, **initial: Any) -> None:
        wanted = bool(enabled) and total >= 2
        self.active = wanted and self.console.is_terminal
        self._progress: Any = None
        self._lines = _Lines(description, int(total), _interval()) if wanted and not self.active else None
        if not self.active:
            return
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        cols: list[Any] = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
        if fields:
            cols.append(TextColumn(fields))
        cols += [TimeElapsedColumn(), TimeRemainingColumn()]
        self._progress = Progress(*cols, console=self.console, transient=True)
        self._task = self._progress.add_task(description, total=total, **initial)

    @cached_property
    def console(self) -> Any:
        """The rich console on stderr (made on first use: a disabled bar never imports rich)."""
        return _console()

    def __enter__(self) -> Bar:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()
        if self._lines is not None and exc_type is None:
            self._lines.close()

    def advance(self, n: int = 1, **fields: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=n, **fields)
        if self._lines is not None:
            self._lines.description = fields.get("description", self._lines.description)
            self._lines.advance(n)

    def update(self, **fields: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task, **fields)
        if self._lines is not None:
            self._lines.description = fields.get("description", self._lines.description)


def track(items: Iterable[T], description: str, enabled: bool = True, total: int | None = None) -> Iterator[T]:
    """Yield ``items`` with a progress bar of ``total`` steps (default ``len(items)``).

    ``items`` may be a lazy generator (give ``total``); each item is produced before the bar
    advances, so the bar counts finished work.
    """
    if total is None:
        try:
            total = len(items)  # type: ignore[arg-type]
        except TypeError:
            total = 0
    with Bar(description, int(total), enabled=enabled) as bar:
        for item in items:
            yield item
            bar.advance()
