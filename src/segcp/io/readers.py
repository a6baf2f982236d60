"""Array readers for the formats users hold (NPY, PNG, NIfTI), and JSON.

Every failure becomes a :class:`~segcp.errors.SegcpError` whose one-line message names the
file and the problem. (The writers are in :mod:`segcp.io.writers`.)
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError

__all__ = ["EXTENSIONS", "read_array", "read_json", "read_probabilities", "split_ext"]

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


def read_probabilities(path: str | os.PathLike[str]) -> tuple[NDArray[Any], tuple[float, ...] | None]:
    """Read a file of probabilities (any shape): PNG integers are scaled to [0, 1].

    An 8-bit PNG holds probability × 255 and a 16-bit PNG probability × 65535; NPY and NIfTI
    are returned as stored (the caller validates the range). Returns (array, spacing).
    """
    arr, spacing = read_array(path)
    if str(path).lower().endswith(".png"):
        if arr.dtype == np.uint8:
            arr = arr / 255.0
        elif arr.dtype == np.uint16:
            arr = arr / 65535.0
    return arr, spacing
