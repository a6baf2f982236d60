"""Atomic writers: a result file or folder appears whole, or not at all.

Every output of segcp goes through this module:

* :func:`atomic_path` — a temporary file beside the destination, renamed onto it only when
  the block succeeds (``write_json``, ``write_text``, ``write_npy``, figures, checkpoints,
  the feature cache);
* :func:`atomic_dir` — a temporary sibling folder filled by the block and then put in place
  whole (``segcp predict``, ``segcp infer``, the converted encoder weights).

Outputs get the usual permissions (files 0666 & ~umask, folders 0777 & ~umask), not the
0600/0700 of ``mkstemp``/``mkdtemp``. A failure (or Ctrl-C) removes the temporary.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError

__all__ = ["EXISTING", "atomic_dir", "atomic_path", "to_jsonable", "umask", "write_json", "write_npy", "write_text"]

#: What :func:`atomic_dir` does when the destination folder exists and is not empty.
EXISTING = ("refuse", "overwrite", "merge")


def umask() -> int:
    """The process umask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_path(dest: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only on success.

    ``suffix`` ends the temporary name (some writers pick the format from it, e.g. ``.png``).
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{suffix}", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():
            os.chmod(tmp_path, 0o666 & ~umask())
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextmanager
def atomic_dir(dest: str | os.PathLike[str], existing: str = "refuse") -> Iterator[Path]:
    """Yield a temporary sibling folder of ``dest``; put it in place whole on success.

    ``existing`` says what happens when ``dest`` is a non-empty folder: ``"refuse"`` (one-line
    error, before any work is done), ``"overwrite"`` (the old folder is replaced in one
    rename), or ``"merge"`` (the new files are moved in, replacing same-named ones; the move is
    file by file). An empty ``dest`` folder is simply replaced.
    """
    if existing not in EXISTING:
        raise ValueError(f"existing must be one of {EXISTING}, got {existing!r}")
    dest = Path(dest)
    if dest.exists() and not dest.is_dir():
        raise SegcpError(f"{dest}: exists and is not a directory")
    if existing == "refuse" and dest.is_dir() and any(dest.iterdir()):
        raise SegcpError(f"{dest}: already exists and is not empty; choose a new folder or pass --overwrite")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.tmp-", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~umask())
    try:
        yield tmp
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        if not dest.exists():
            os.replace(tmp, dest)
        elif existing == "merge":
            for f in sorted(tmp.iterdir()):
                os.replace(f, dest / f.name)
        elif existing == "overwrite":
            trash = dest.with_name(f".{dest.name}.old-{os.getpid()}")
            os.replace(dest, trash)
            os.replace(tmp, dest)
            shutil.rmtree(trash, ignore_errors=True)
        else:  # appeared while we worked
            raise SegcpError(f"{dest}: already exists and is not empty; choose a new folder or pass --overwrite")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def to_jsonable(obj: Any) -> Any:
    """Convert numpy scalars/arrays and non-finite floats (→ None) for strict JSON."""
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (np.bool_, bool)):
        return bool(obj)
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    return obj


def write_text(dest: str | os.PathLike[str], text: str) -> Path:
    """Write a text file atomically; returns the path."""
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        tmp.write_text(text)
    return dest


def write_json(dest: str | os.PathLike[str], obj: Any) -> Path:
    """Write strict JSON (NaN/inf → null) atomically; returns the path."""
    return write_text(dest, json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")


def write_npy(dest: str | os.PathLike[str], array: NDArray[Any]) -> Path:
    """Write one ``.npy`` file atomically; returns the path."""
    dest = Path(dest)
    with atomic_path(dest, suffix=".npy") as tmp:
        np.save(tmp, np.asarray(array), allow_pickle=False)
    return dest
