"""3D volumes: axis order, spacing, the slice axis of a 2D model, and NIfTI geometry.

Conventions (every 3D array segcp's data and model code writes or reads):

- **Axis order: nibabel's.** A NIfTI volume is the array nibabel gives, indexed by voxel
  (i, j, k); voxel (i, j, k) lies at ``affine @ (i, j, k, 1)`` in world coordinates (mm).
  Exported datasets follow the same order: LA 2018 as stored, (X, Y, Z); ACDC stacks of
  (H, W) slices as (H, W, Z), slice k + 1 at ``[:, :, k]``. Class-probability stacks are
  channel-first, (L, X, Y, Z); samples (N, L, X, Y, Z).
- **Spacing**: the voxel size per axis, from the NIfTI header's zooms (pixdim), in mm when
  the header's spatial unit is mm. Exported ACDC volumes have none (their HDF5 stores no
  spacing): they are written with pixdim (1, 1, 1), spatial unit "unknown" and the slice
  axis marked in the header (``dim_info`` slice = 2) and in ``segcp_export.json``; distances
  computed on them are in voxels, not mm.
- **Slice axis** (:func:`segcp.cases.slice_axis`, the one rule of the UNet and RW-CP alike): a
  2D model runs slice by slice along the axis with the **coarsest spacing**; ties (an isotropic
  volume such as LA 2018, or unknown spacing) go to the tied axis with the **fewest voxels**
  (LA 2018: Z, 88 slices), then the first.

Writers go through :func:`segcp.io.writers.atomic_path` (a temporary file renamed into place).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError

__all__ = [
    "GRID_ATOL",
    "check_same_grid",
    "nifti_ext",
    "read_nifti_header",
    "volume_affine",
    "volume_slices",
    "write_nifti",
]

#: Largest difference (mm, per affine entry) between two NIfTI affines of "the same grid".
GRID_ATOL = 1e-4



def volume_slices(volume: NDArray[Any], axis: int) -> list[NDArray[Any]]:
    """The 2D slices of a 3D array along ``axis``, in order (contiguous copies).

    ``volume_slices(v, 2)[k]`` is ``v[:, :, k]``; ``np.stack(slices, axis)`` inverts it.
    """
    v = np.asarray(volume)
    if v.ndim != 3:
        raise SegcpError(f"expected a 3D volume, got shape {v.shape}")
    if not 0 <= axis < 3:
        raise SegcpError(f"slice axis {axis}: must be 0, 1 or 2")
    return [np.ascontiguousarray(s) for s in np.moveaxis(v, axis, 0)]



def volume_affine(spacing: Sequence[float] | None) -> NDArray[np.float64]:
    """The 4 × 4 affine of a volume on a regular grid at the origin: diag(spacing, 1) (None: voxels)."""
    sp = (1.0, 1.0, 1.0) if spacing is None else tuple(float(s) for s in spacing)
    if len(sp) != 3 or not all(math.isfinite(s) and s > 0 for s in sp):
        raise SegcpError(f"spacing {sp}: need 3 positive numbers")
    return np.diag([*sp, 1.0])


def nifti_ext(path: str | os.PathLike[str]) -> str | None:
    """``".nii.gz"`` or ``".nii"`` for a NIfTI file name, else None."""
    low = Path(path).name.lower()
    for ext in (".nii.gz", ".nii"):
        if low.endswith(ext):
            return ext
    return None


def read_nifti_header(path: str | os.PathLike[str]) -> Any:
    """The nibabel image of a NIfTI file, header only (the data is not read); one-line errors."""
    import logging

    import nibabel as nib

    p = Path(path)
    log = logging.getLogger("nibabel.global")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        return nib.load(str(p))
    except FileNotFoundError:
        raise SegcpError(f"{p}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - any nibabel failure: one line naming the file
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise SegcpError(f"{p}: unreadable NIfTI file ({reason})") from None
    finally:
        log.setLevel(level)


def check_same_grid(reference: str | os.PathLike[str], other: str | os.PathLike[str]) -> None:
    """Refuse ``other`` unless it lies on the grid of ``reference``: same spatial shape and affine.

    Both are NIfTI files (headers only are read). The affines must agree to :data:`GRID_ATOL`
    per entry. One error line names ``other``.
    """
    ref, oth = read_nifti_header(reference), read_nifti_header(other)
    rs, os_ = tuple(ref.shape[:3]), tuple(oth.shape[:3])
    if rs != os_:
        raise SegcpError(f"{other}: shape {tuple(oth.shape)} does not match {Path(reference).name} {tuple(ref.shape)}")
    diff = float(np.max(np.abs(np.asarray(ref.affine) - np.asarray(oth.affine))))
    if not diff <= GRID_ATOL:
        raise SegcpError(
            f"{other}: affine differs from {Path(reference).name} by up to {diff:.3g} mm; "
            "the volume and its mask must share one grid"
        )


def write_nifti(
    dest: str | os.PathLike[str],
    array: NDArray[Any],
    *,
    like: Any = None,
    spacing: Sequence[float] | None = None,
    units: str = "mm",
    slice_dim: int | None = None,
) -> Path:
    """Write a 3D array as NIfTI, atomically; returns the path.

    Parameters
    ----------
    dest : ``.nii.gz`` (compressed) or ``.nii``.
    array : (X, Y, Z) in nibabel's axis order; its dtype is kept (bool is written as uint8).
    like : a nibabel image (e.g. from :func:`read_nifti_header`) whose grid and header the
        output takes — affine, qform/sform and their codes, pixdim, units, dim_info — with
        only the data type (and the intensity scaling, reset to none) changed. The array's
        spatial shape must equal its.
    spacing, units, slice_dim : without ``like``: the affine diag(spacing, 1) (qform and
        sform, code "aligned"), the spatial unit ("mm" or "unknown") and the slice axis
        recorded in ``dim_info`` (None: not recorded).
    """
    import nibabel as nib

    from segcp.io.writers import atomic_path

    dest = Path(dest)
    ext = nifti_ext(dest)
    if ext is None:
        raise SegcpError(f"{dest}: a NIfTI file name must end in .nii.gz or .nii")
    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    if like is not None:
        if tuple(like.shape[: arr.ndim]) != arr.shape:
            raise SegcpError(f"{dest}: array of shape {arr.shape} does not lie on the grid {tuple(like.shape)} of its reference")
        img = like.__class__(arr, like.affine, header=like.header)
        img.set_data_dtype(arr.dtype)
        img.header.set_slope_inter(1.0, 0.0)
    else:
        affine = volume_affine(spacing)
        img = nib.Nifti1Image(arr, affine)
        img.set_data_dtype(arr.dtype)
        img.set_qform(affine, code="aligned")
        img.set_sform(affine, code="aligned")
        img.header.set_xyzt_units(xyz=units)
        if slice_dim is not None:
            img.header.set_dim_info(slice=int(slice_dim))
    with atomic_path(dest, suffix=ext) as tmp:
        nib.save(img, str(tmp))
    return dest
