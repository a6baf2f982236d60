"""Atomic writers: a result file or folder appears whole, or not at all — and never over an input.

Every output of segcp goes through this module, and the rules of what happens on a bad
output path are written here once:

* :func:`atomic_path` — a temporary file beside the destination, renamed onto it only when
  the block succeeds (``write_json``, ``write_text``, ``write_npy``, figures, checkpoints,
  the feature cache);
* :func:`atomic_dir` — a temporary sibling folder filled by the block and then put in place
  whole (``segcp predict``, ``segcp infer``, ``segcp compare``, the converted encoder weights);
* :func:`check_output` — refuse an output that is, or is inside, a file or folder the command
  reads (``predict --out data/probs`` would replace the inputs), or that contains one.

Refused with one line (:class:`SegcpError`), before any work: an empty path or ``.`` for a
folder output, a symbolic link, a destination that is not a regular file (a device, a folder
where a file is expected, a file where a folder is expected), a parent that is a file, a
folder output that exists and is not empty (unless ``overwrite``). Any ``OSError`` while
writing (permissions, a read-only or full disk, a name too long) becomes one line naming the
path. Temporary names are short (``.segcp-tmp-<pid>-<random>``), so a 250-character
destination name still works. A failure, Ctrl-C or SIGTERM (the CLI turns it into an
exception) removes the temporary; after a SIGKILL the next write into the same folder removes
the temporaries of processes that no longer exist. Outputs get the usual permissions (files
0666 & ~umask, folders 0777 & ~umask), not the 0600/0700 of ``mkstemp``/``mkdtemp``.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError

__all__ = [
    "EXISTING",
    "TMP_PREFIX",
    "atomic_dir",
    "atomic_path",
    "check_dir_target",
    "check_output",
    "check_replaceable",
    "filled_in_place",
    "remove_stale_temporaries",
    "to_jsonable",
    "umask",
    "write_json",
    "write_npy",
    "write_on_grid",
    "write_set",
    "write_text",
    "written_set",
]

#: What :func:`atomic_dir` does when the destination folder exists and is not empty.
EXISTING = ("refuse", "overwrite", "merge")
#: Every temporary file or folder segcp makes starts with this (then the writer's pid).
TMP_PREFIX = ".segcp-tmp-"


def umask() -> int:
    """The process umask (read without changing it)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the temporaries that dead segcp processes left in ``folder`` (after a SIGKILL)."""
    removed: list[Path] = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(TMP_PREFIX):
            continue
        pid_text = entry.name[len(TMP_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or _alive(int(pid_text)) or int(pid_text) == os.getpid():
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            removed.append(entry)
        except OSError:
            pass
    return removed


def _prefix() -> str:
    return f"{TMP_PREFIX}{os.getpid()}-"


def _oserror(path: Path, exc: OSError) -> SegcpError:
    reason = exc.strerror or type(exc).__name__
    return SegcpError(f"{path}: cannot write ({reason})")


def _check_parent(dest: Path) -> None:
    """One line naming the part of ``dest``'s path that blocks its parent folders (checked
    before any work; the folders themselves are made only when the output is written)."""
    for anc in reversed(dest.parents):
        if anc.exists() and not anc.is_dir():
            raise SegcpError(f"{dest}: its parent {anc} is not a directory")


def _make_parents(dest: Path) -> list[Path]:
    """Create the missing parent folders of ``dest``; the ones made, outermost first (so that
    a failed write can remove them again: nothing is left for an output that was not written)."""
    _check_parent(dest)
    made = [anc for anc in reversed(dest.parents) if not anc.exists()]
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _remove_made(made)
        raise _oserror(dest.parent, exc) from None
    return made


def _remove_made(made: Sequence[Path]) -> None:
    """Remove the folders :func:`_make_parents` made, innermost first, when they are empty."""
    for folder in reversed(made):
        try:
            folder.rmdir()
        except OSError:  # not empty (another writer's output), or gone: leave it
            return


def _check_file_target(dest: Path, make_parents: bool = True) -> None:
    try:
        _file_target_checks(dest, make_parents)
    except OSError as exc:  # e.g. a name too long to stat
        raise _oserror(dest, exc) from None


def _file_target_checks(dest: Path, make_parents: bool = True) -> None:
    if str(dest) in ("", "."):
        raise SegcpError("--out: an empty path; give a file name")
    if dest.is_symlink():
        raise SegcpError(f"{dest}: is a symbolic link; refusing to replace it (give the real path)")
    if dest.exists():
        if dest.is_dir():
            raise SegcpError(f"{dest}: is a directory; expected a file path")
        if not stat.S_ISREG(dest.stat().st_mode):
            raise SegcpError(f"{dest}: exists and is not a regular file; refusing to replace it")
    if make_parents:
        _check_parent(dest)
    elif not dest.parent.is_dir():
        raise SegcpError(f"{dest}: its folder {dest.parent} does not exist (any more)")


@contextmanager
def atomic_path(dest: str | os.PathLike[str], suffix: str = "", *, clean_stale: bool = True, make_parents: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only on success.

    ``suffix`` ends the temporary name (some writers pick the format from it, e.g. ``.png``).
    ``clean_stale=False`` skips the scan of the folder for dead writers' temporaries (for
    folders of many small files, such as the feature cache). ``make_parents=False``: the
    folder must exist (it is never created).
    """
    dest = Path(dest)
    _check_file_target(dest, make_parents)
    made = _make_parents(dest) if make_parents else []
    done = False
    try:
        if clean_stale:
            remove_stale_temporaries(dest.parent)
        try:
            fd, tmp = tempfile.mkstemp(prefix=_prefix(), suffix=f".tmp{suffix}", dir=dest.parent)
        except OSError as exc:
            raise _oserror(dest, exc) from None
        os.close(fd)
        tmp_path = Path(tmp)
        try:
            try:
                yield tmp_path
                if tmp_path.exists():
                    os.chmod(tmp_path, 0o666 & ~umask())
                _check_file_target(dest, make_parents)  # nothing appeared there while we worked
                os.replace(tmp_path, dest)
                done = True
            except OSError as exc:
                raise _oserror(dest, exc) from None
        finally:
            if tmp_path.exists():
                tmp_path.unlink()
    finally:
        if not done:
            _remove_made(made)


def check_dir_target(dest: Path, existing: str = "refuse", expect: Sequence[str] = ()) -> None:
    """The checks :func:`atomic_dir` makes before any work (see the module docstring)."""
    try:
        _dir_target_checks(Path(dest), existing, expect)
    except OSError as exc:
        raise _oserror(Path(dest), exc) from None


def check_replaceable(dest: str | os.PathLike[str], marker: str, command: str) -> None:
    """What ``--overwrite`` may replace: a folder that ``command`` wrote (``marker``, the file it leaves in
    every output folder, is there) or an empty one; anything else is one line, before any work."""
    dest = Path(dest)
    check_dir_target(dest, "overwrite")
    try:
        foreign = dest.is_dir() and any(not p.name.startswith(TMP_PREFIX) for p in dest.iterdir()) and not (dest / marker).is_file()
    except OSError as exc:
        raise _oserror(dest, exc) from None
    if foreign:
        raise SegcpError(
            f"{dest}: not a folder that {command} wrote (no {marker}); --overwrite replaces only a previous {command} output: choose a new folder"
        )


def _dir_target_checks(dest: Path, existing: str, expect: Sequence[str]) -> None:
    if str(dest) in ("", "."):
        raise SegcpError("--out: an empty path or '.'; give a new folder")
    try:
        if dest.resolve() == Path.cwd().resolve() or dest.resolve() == Path(dest.resolve().anchor):
            raise SegcpError(f"{dest}: is the current or the root folder; give a new folder")
    except OSError as exc:
        raise _oserror(dest, exc) from None
    if dest.is_symlink():
        raise SegcpError(f"{dest}: is a symbolic link; refusing to replace it (give the real path)")
    if dest.exists() and not dest.is_dir():
        raise SegcpError(f"{dest}: exists and is not a directory")
    if dest.is_dir():
        try:
            entries = [p for p in dest.iterdir() if not p.name.startswith(TMP_PREFIX)]
        except OSError as exc:
            raise _oserror(dest, exc) from None
        if entries and existing == "refuse":
            raise SegcpError(f"{dest}: already exists and is not empty; choose a new folder or pass --overwrite")
        for name in expect:
            target = dest / name
            if target.is_symlink() or (target.exists() and not target.is_file()):
                raise SegcpError(f"{target}: exists and is not a regular file; refusing to replace it")
    _check_parent(dest)


@contextmanager
def atomic_dir(dest: str | os.PathLike[str], existing: str = "refuse", expect: Sequence[str] = ()) -> Iterator[Path]:
    """Yield a temporary sibling folder of ``dest``; put it in place whole on success.

    ``existing`` says what happens when ``dest`` is a non-empty folder: ``"refuse"`` (one-line
    error, before any work is done), ``"overwrite"`` (the old folder is replaced in one
    rename), or ``"merge"`` (the new files are moved in, replacing same-named regular files;
    other files of ``dest`` stay). ``expect`` names the files the block will write, so that a
    merge that would replace something else (a folder called ``report.md``) is refused before
    any work. An empty ``dest`` folder is simply replaced.
    """
    if existing not in EXISTING:
        raise ValueError(f"existing must be one of {EXISTING}, got {existing!r}")
    dest = Path(dest)
    check_dir_target(dest, existing, expect)
    made = _make_parents(dest)
    done = False
    try:
        remove_stale_temporaries(dest.parent)
        try:
            tmp = Path(tempfile.mkdtemp(prefix=_prefix(), dir=dest.parent))
            os.chmod(tmp, 0o777 & ~umask())
        except OSError as exc:
            raise _oserror(dest, exc) from None
        try:
            yield tmp
            _put_in_place(tmp, dest, existing)
            done = True
        finally:
            _remove_dir(tmp)
    finally:
        if not done:
            _remove_made(made)


@contextmanager
def filled_in_place(dest: str | os.PathLike[str], scaffolding: Sequence[str] = ()) -> Iterator[Path]:
    """Make the folder ``dest`` (and its missing parents) for an output written into it file by file
    (``predict --resume``: each file atomic, finished ones kept for the next run). When the block fails
    and ``dest`` was new or empty and still holds no file besides the ``scaffolding`` (a manifest, a
    legend) and folders, all of it and the folders made for it are removed: no hollow output is left."""
    dest = Path(dest)
    check_dir_target(dest, "merge")
    try:
        was_hollow = not dest.is_dir() or not any(p for p in dest.iterdir() if not p.name.startswith(TMP_PREFIX))
        made = _make_parents(dest) + ([] if dest.is_dir() else [dest])
        dest.mkdir(exist_ok=True)
    except OSError as exc:
        raise _oserror(dest, exc) from None
    try:
        yield dest
    except BaseException:
        entries = sorted(dest.rglob("*"), key=lambda p: len(p.parts), reverse=True)
        if was_hollow and all(p.is_dir() or p.name in scaffolding or p.name.startswith(TMP_PREFIX) for p in entries):
            for p in entries:  # innermost first
                with suppress(OSError):
                    if p.is_dir():
                        p.rmdir()
                    else:
                        p.unlink()
            _remove_made(made)
        raise


def _put_in_place(tmp: Path, dest: Path, existing: str) -> None:
    """Move the finished temporary folder ``tmp`` onto ``dest`` as :func:`atomic_dir` promises."""
    try:
        check_dir_target(dest, existing, [f.name for f in tmp.iterdir()] if existing == "merge" else ())
        if dest.is_dir() and not any(dest.iterdir()):
            dest.rmdir()
        if not dest.exists():
            os.replace(tmp, dest)
        elif existing == "merge":
            for f in sorted(tmp.iterdir()):
                os.replace(f, dest / f.name)
        else:  # overwrite
            trash = Path(tempfile.mkdtemp(prefix=_prefix(), dir=dest.parent))
            os.replace(dest, trash / "old")
            os.replace(tmp, dest)
            shutil.rmtree(trash, ignore_errors=True)
    except OSError as exc:
        raise _oserror(dest, exc) from None


def _remove_dir(folder: Path) -> None:
    """Remove a job's temporary folder even while straggling tasks still write into it: it is
    first renamed away (a task that then writes by its old path fails), so no new file can
    appear in it while it is removed."""
    if not folder.exists():
        return
    try:
        trash = Path(tempfile.mkdtemp(prefix=_prefix(), dir=folder.parent))
        os.replace(folder, trash / "dead")
    except OSError:
        trash = folder
    shutil.rmtree(trash, ignore_errors=True)


def _real(p: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(os.path.abspath(p)))


def check_output(out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str]]) -> None:
    """Refuse an output that is an input, lies inside an input folder, or contains an input.

    ``inputs`` are the files and folders a command reads (the data directory's probs/,
    masks/, images/, samples/, a calib.json, a sets folder…). Symbolic links are resolved.
    """
    o = _real(out)
    for raw in inputs:
        i = _real(raw)
        if o == i:
            raise SegcpError(f"{out}: is an input of this command ({raw}); refusing to overwrite it")
        if i in o.parents:
            raise SegcpError(f"{out}: is inside the input folder {raw}; write the output elsewhere")
        if o in i.parents:
            raise SegcpError(f"{out}: contains the input {raw}; write the output elsewhere")


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


def write_set(folder: str | os.PathLike[str], ident: str, array: NDArray[Any], geometry: Any = None, *, clean_stale: bool = True) -> Path:
    """Write one prediction set: on ``geometry``'s grid when there is one — ``<id>`` plus the
    suffix of the input's format (``.nii.gz``, ``.nrrd``, ...), uint8 (or uint16 for wide bit
    codes), with the input's affine and header, so that a viewer overlays it — else
    ``<id>.npy`` as it is. Atomic; returns the path.

    ``folder`` must exist (it is never created: a straggling task of a cluster job that has
    ended, its temporary folder removed, fails instead of recreating it); a present file is
    replaced whole. ``clean_stale=False``: no scan of the folder for dead writers'
    temporaries (a job's own output folder, written by many tasks at once)."""
    folder = Path(folder)
    a = np.asarray(array)
    if geometry is None:
        return write_npy(folder / f"{ident}.npy", a, clean_stale=clean_stale, make_parents=False)
    data = a.astype(np.uint16 if a.dtype.kind in "iu" and a.size and a.max() > 255 else np.uint8)
    return write_on_grid(folder / f"{ident}{geometry.format.suffixes[0]}", data, geometry, clean_stale=clean_stale, make_parents=False)


def written_set(folder: str | os.PathLike[str], ident: str) -> Path | None:
    """The set :func:`write_set` wrote on an input's grid for ``ident`` in ``folder``, if any
    (such files are only ever written by an atomic rename: present means whole)."""
    from segcp.io.formats import formats

    for fmt in formats():
        if fmt.has_geometry and (Path(folder) / f"{ident}{fmt.suffixes[0]}").is_file():
            return Path(folder) / f"{ident}{fmt.suffixes[0]}"
    return None


def write_on_grid(dest: str | os.PathLike[str], array: NDArray[Any], geometry: Any, *, clean_stale: bool = True, make_parents: bool = True) -> Path:
    """Write ``array`` (its dtype kept; bool as uint8) to ``dest`` on ``geometry``'s grid (a
    :class:`~segcp.io.formats.Geometry`), in the format that read it and with its header,
    atomically; ``dest`` must end in a suffix of that format. Returns the path."""
    dest = Path(dest)
    fmt = geometry.format
    suffix = next((x for x in fmt.suffixes if dest.name.lower().endswith(x)), None)
    if suffix is None:
        raise SegcpError(f"{dest}: a {fmt.name} file name must end in {' or '.join(fmt.suffixes)}")
    a = np.asarray(array)
    grid = None if geometry.shape is None else tuple(geometry.shape)
    if grid is not None and a.ndim == len(grid) and a.shape != grid:
        raise SegcpError(f"{dest}: array of shape {a.shape} does not lie on the grid {grid} of {Path(geometry.source).name}")
    with atomic_path(dest, suffix=suffix, clean_stale=clean_stale, make_parents=make_parents) as tmp:
        fmt.write(tmp, a, geometry)
    return dest


def write_npy(dest: str | os.PathLike[str], array: NDArray[Any], *, clean_stale: bool = True, make_parents: bool = True) -> Path:
    """Write one ``.npy`` file atomically; returns the path (``atomic_path``'s options)."""
    dest = Path(dest)
    with atomic_path(dest, suffix=".npy", clean_stale=clean_stale, make_parents=make_parents) as tmp:
        np.save(tmp, np.asarray(array), allow_pickle=False)
    return dest
