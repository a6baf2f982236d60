"""Array readers and atomic writers for the formats users hold (NPY, PNG, NIfTI).

Every failure becomes a :class:`~segcp.errors.SegcpError` whose one-line message names the
file and the problem. Writers never leave a partial file: they write a temporary file in
the destination folder and rename it into place.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError

__all__ = [
    "EXTENSIONS",
    "split_ext",
    "read_array",
    "atomic_path",
    "write_json",
    "write_npy",
    "read_json",
    "to_jsonable",
]

#: Recognised file extensions, longest first so that ``.nii.gz`` wins over ``.gz``.
EXTENSIONS = (".nii.gz", ".nii", ".npy", ".png")


def split_ext(name: str) -> tuple[str, str] | None:
    """Split a file name into (id, extension) for a recognised extension, else None."""
    low = name.lower()
    for ext in EXTENSIONS:
        if low.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], ext
    return None


def _read_png(path: Path) -> NDArray[Any]:
    from PIL import Image

    with Image.open(path) as im:
        im.load()
        if im.mode in ("RGB", "RGBA"):
            arr = np.asarray(im)[..., :3]
            if not (np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2])):
                raise SegcpError(f"{path}: colour PNG; expected a single-channel (grayscale) image")
            return arr[..., 0].copy()
        if im.mode in ("LA", "P"):
            im = im.convert("L")
        return np.asarray(im).copy()


def _read_nifti(path: Path) -> tuple[NDArray[Any], tuple[float, ...]]:
    import nibabel as nib

    img = nib.load(str(path))
    arr = np.asanyarray(img.dataobj)
    # Drop trailing singleton axes (e.g. (X, Y, 1) slices), keeping spacing aligned.
    while arr.ndim > 2 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    zooms = tuple(float(z) for z in img.header.get_zooms()[: arr.ndim])
    return np.asarray(arr), zooms


def read_array(path: str | os.PathLike[str]) -> tuple[NDArray[Any], tuple[float, ...] | None]:
    """Read one array file.

    Parameters
    ----------
    path : path to a ``.npy``, ``.png``, ``.nii`` or ``.nii.gz`` file.

    Returns
    -------
    (array, spacing)
        ``array`` as stored (PNG: uint8/uint16 (H, W); NIfTI: the data array in voxel
        order); ``spacing`` the voxel size per axis in the file's units (NIfTI: mm), or
        None when the format has none (NPY, PNG).
    """
    p = Path(path)
    parts = split_ext(p.name)
    if parts is None:
        raise SegcpError(f"{p}: unsupported file type; expected one of {', '.join(EXTENSIONS)}")
    ext = parts[1]
    if not p.is_file():
        raise SegcpError(f"{p}: no such file")
    try:
        if ext == ".npy":
            return np.load(p, allow_pickle=False), None
        if ext == ".png":
            return _read_png(p), None
        return _read_nifti(p)
    except SegcpError:
        raise
    except Exception as exc:  # any reader failure: one clear line naming the file
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise SegcpError(f"{p}: unreadable {ext} file ({reason})") from None


# ---------------------------------------------------------------------- writing
@contextmanager
def atomic_path(dest: str | os.PathLike[str], suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``dest``; rename it onto ``dest`` only on success."""
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".tmp{suffix}", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        if tmp_path.exists():  # mkstemp makes 0600; outputs get the usual mode (0666 & ~umask)
            mask = os.umask(0)
            os.umask(mask)
            os.chmod(tmp_path, 0o666 & ~mask)
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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


def write_json(dest: str | os.PathLike[str], obj: Any) -> Path:
    """Write strict JSON (NaN/inf → null) atomically; returns the path."""
    dest = Path(dest)
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(to_jsonable(obj), indent=2, allow_nan=False) + "\n")
    return dest


def write_npy(dest: str | os.PathLike[str], array: NDArray[Any]) -> Path:
    """Write one ``.npy`` file atomically; returns the path."""
    dest = Path(dest)
    with atomic_path(dest, suffix=".npy") as tmp:
        np.save(tmp, np.asarray(array), allow_pickle=False)
    return dest


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON object file with one-line errors."""
    p = Path(path)
    if not p.is_file():
        raise SegcpError(f"{p}: no such file")
    try:
        obj = json.loads(p.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SegcpError(f"{p}: not valid JSON ({' '.join(str(exc).split())})") from None
    if not isinstance(obj, dict):
        raise SegcpError(f"{p}: expected a JSON object at the top level")
    return obj
