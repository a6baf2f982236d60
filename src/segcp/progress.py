"""Progress bars (rich) on stderr, for anything that takes more than a few seconds.

One helper for the whole package: :func:`track` wraps an iterable (a list or a lazy
generator of known length) and shows a bar with a count and an ETA when stderr is a
terminal; otherwise it yields the items unchanged (logs stay clean under nohup or CI).
:class:`Bar` is the same bar driven by hand (training loops, futures that complete out of
order).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from functools import cached_property
from typing import Any, TypeVar

__all__ = ["Bar", "track"]

T = TypeVar("T")


def _console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


class Bar:
    """A rich progress bar on stderr (a no-op when disabled or stderr is not a terminal).

    Use as a context manager; :meth:`advance` moves it, :meth:`update` sets extra fields
    shown by ``fields`` (a format string over ``task.fields``).
    """

    def __init__(self, description: str, total: int, *, enabled: bool = True, fields: str | None = None, **initial: Any) -> None:
        self.active = bool(enabled) and total >= 2 and self.console.is_terminal
        self._progress: Any = None
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

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()

    def advance(self, n: int = 1, **fields: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task, advance=n, **fields)

    def update(self, **fields: Any) -> None:
        if self._progress is not None:
            self._progress.update(self._task, **fields)


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
