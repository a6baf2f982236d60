"""Reading user files: arrays in any registered format (:mod:`segcp.io.formats`), and JSON.

Every failure becomes a :class:`~segcp.errors.SegcpError` whose one-line message names the
file and the problem. (The writers are in :mod:`segcp.io.writers`.)

Axis order. NIfTI arrays are returned as nibabel gives them, in voxel order (x, y, z);
nnU-Net's ``.npz`` probabilities are turned into that order (see
:mod:`segcp.io.formats.nnunet`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from numpy.typing import NDArray

from segcp.errors import SegcpError
from segcp.io.files import check_regular_file, open_regular
from segcp.io.formats import Geometry, format_of, read_geometry, split_ext, suffixes

__all__ = ["Geometry", "check_regular_file", "read_array", "read_geometry", "read_json", "read_probabilities", "split_ext"]


def read_array(path: str | os.PathLike[str], *, color: bool = False) -> tuple[NDArray[Any], tuple[float, ...] | None]:
    """Read one array file, in the format its suffix names (:mod:`segcp.io.formats`).

    Parameters
    ----------
    path : a file in a registered format (``.npy``, ``.npz`` (nnU-Net), ``.png``, ``.nii``,
        ``.nii.gz``, ...).
    color : a colour PNG is returned as (H, W, 3) instead of refused (images of image-aware
        methods; probabilities and masks are single-channel).

    Returns
    -------
    (array, spacing)
        ``array`` as stored (PNG: uint8/uint16 (H, W); NIfTI: the data array in voxel
        order; nnU-Net NPZ: the probabilities (C, *spatial) in nibabel's voxel order);
        ``spacing`` the voxel size per axis in the file's units (NIfTI: mm), or None when
        the format has none (NPY, NPZ, PNG).
    """
    p = path if isinstance(path, Path) else Path(path)
    hit = format_of(p.name)
    if hit is None:
        raise SegcpError(f"{p}: unsupported file type; expected one of {', '.join(suffixes())}")
    fmt, _, ext = hit
    if not fmt.opens_regular:
        check_regular_file(p)
    try:
        return fmt.read(p, color=color)
    except SegcpError:
        raise
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise SegcpError(f"{p}: no such file") from None
    except Exception as exc:  # any reader failure: one clear line naming the file
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise SegcpError(f"{p}: unreadable {ext.lower()} file ({reason})") from None


#: Largest JSON file segcp reads (a calibration of a million images is ~25 MB).
MAX_JSON_BYTES = 256 * 2**20
#: Deepest nesting of lists/objects segcp accepts in a JSON file (its own are ≤ 4 deep).
MAX_JSON_DEPTH = 32


def _depth(obj: Any) -> int:
    depth, level = 0, [obj]
    while level:
        depth += 1
        level = [v for o in level for v in (o.values() if isinstance(o, dict) else o if isinstance(o, list) else ()) if isinstance(v, (dict, list))]
    return depth


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON object file with one-line errors (size and nesting are bounded)."""
    p = Path(path)
    f, st = open_regular(p)  # what is read is what was checked: no FIFO swapped in between
    try:
        with f:
            if st.st_size > MAX_JSON_BYTES:
                raise SegcpError(f"{p}: larger than {MAX_JSON_BYTES // 2**20} MiB; not a segcp JSON file")
            obj = json.loads(f.read().decode("utf-8"))  # JSON's encoding (RFC 8259); segcp writes ASCII
    except RecursionError:
        raise SegcpError(f"{p}: JSON nested too deeply") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SegcpError(f"{p}: not valid JSON ({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(obj, dict):
        raise SegcpError(f"{p}: expected a JSON object at the top level")
    if _depth(obj) > MAX_JSON_DEPTH:
        raise SegcpError(f"{p}: JSON nested more than {MAX_JSON_DEPTH} levels deep")
    return obj


def read_probabilities(path: str | os.PathLike[str]) -> tuple[NDArray[Any], tuple[float, ...] | None]:
    """Read a file of probabilities (any shape), as values in [0, 1] by its format's rule.

    An 8-bit PNG holds probability × 255 and a 16-bit PNG probability × 65535; NPY and NIfTI
    are returned as stored (the caller validates the range). Returns (array, spacing).
    """
    arr, spacing = read_array(path)
    hit = format_of(path)
    return (arr if hit is None else hit[0].probabilities(arr)), spacing
