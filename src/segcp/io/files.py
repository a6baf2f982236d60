"""Opening user files: regular files only, every other kind refused in one line naming the file.

A data directory, a ``--calib`` or a ``--sets`` folder may hold anything: a link to nothing or a
link loop, a folder, a FIFO (whose ``open`` blocks until a writer comes), a socket, a device
(``/dev/zero`` never ends). Two ways to refuse them, one set of messages:

- :func:`check_regular_file` looks before a library opens the file by name (nibabel, pynrrd,
  PIL: the formats whose readers take a path);
- :func:`open_regular` opens the file itself and checks what it opened (``fstat``): one system
  call fewer per file, and no window between the check and the open in which a FIFO could be
  put in the file's place — the file is opened non-blocking, which a regular file ignores.
"""

from __future__ import annotations

import errno
import os
import stat
from io import FileIO
from pathlib import Path

from segcp.errors import SegcpError

__all__ = ["check_regular_file", "open_regular"]

#: Opening never blocks (a FIFO without a writer) and the descriptor is not inherited.
_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)


def _cannot_open(path: Path, exc: OSError) -> SegcpError:
    """The one-line error of a file that cannot be looked at or opened."""
    if isinstance(exc, FileNotFoundError):
        return SegcpError(f"{path}: a symbolic link to a missing file" if path.is_symlink() else f"{path}: no such file")
    if exc.errno == errno.ELOOP:
        return SegcpError(f"{path}: a symbolic link loop")
    return SegcpError(f"{path}: cannot read it ({exc.strerror or type(exc).__name__})")


def _check_kind(path: Path, st: os.stat_result) -> None:
    """Refuse what ``st`` says is not a regular file."""
    if stat.S_ISDIR(st.st_mode):
        raise SegcpError(f"{path}: is a directory; expected a file")
    if not stat.S_ISREG(st.st_mode):
        raise SegcpError(f"{path}: not a regular file (a FIFO, socket or device); expected a file")


def check_regular_file(path: Path) -> None:
    """One line naming ``path`` and what it is when it is not a regular file segcp can read: missing,
    a link to nothing or a link loop, a folder, a FIFO, socket or device (``--calib /dev/zero``:
    never read, a FIFO would block)."""
    try:
        st = os.stat(path)
    except OSError as exc:
        raise _cannot_open(path, exc) from None
    _check_kind(path, st)


def open_regular(path: Path) -> tuple[FileIO, os.stat_result]:
    """``path`` opened for reading (binary, unbuffered) and its status, or the one line of
    :func:`check_regular_file` for what it is instead; the caller closes the file."""
    try:
        fd = os.open(path, _FLAGS)
    except OSError as exc:
        raise _cannot_open(path, exc) from None
    try:
        st = os.fstat(fd)
        _check_kind(path, st)
        return os.fdopen(fd, "rb", buffering=0), st
    except BaseException:
        os.close(fd)
        raise
