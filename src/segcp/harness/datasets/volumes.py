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
from segcp.io.formats import GRID_ATOL, format_of, read_geometry

__all__ = ["GRID_ATOL", "check_same_grid", "volume_affine", "volume_slices", "write_nifti"]


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


def check_same_grid(reference: str | os.PathLike[str], other: str | os.PathLike[str]) -> None:
    """Refuse ``other`` unless it lies on the grid of ``reference``: same spatial shape and affine.

    Both are files of a format with a geometry (NIfTI, NRRD; headers only are read,
    :func:`segcp.io.read_geometry`). The affines must agree to :data:`GRID_ATOL` per entry.
    One error line names ``other``.
    """
    ref, oth = read_geometry(reference), read_geometry(other)
    for path, g in ((reference, ref), (other, oth)):
        if g is None:
            raise SegcpError(f"{path}: no grid in the world to compare (expected a NIfTI or NRRD file)")
    assert ref is not None and oth is not None
    rs, os_ = tuple(ref.shape or ())[:3], tuple(oth.shape or ())[:3]
    if rs != os_:
        raise SegcpError(f"{other}: shape {tuple(oth.shape or ())} does not match {Path(reference).name} {tuple(ref.shape or ())}")
    diff = float(np.max(np.abs(ref.affine - oth.affine)))
    if not diff <= GRID_ATOL:
        raise SegcpError(f"{other}: affine differs from {Path(reference).name} by up to {diff:.3g} mm; the volume and its mask must share one grid")


def write_nifti(
    dest: str | os.PathLike[str], array: NDArray[Any], *, spacing: Sequence[float] | None = None, units: str = "mm", slice_dim: int | None = None
) -> Path:
    """Write a 3D array as a new NIfTI volume on a regular grid at the origin, atomically;
    returns the path. (An array on an existing file's grid is written with
    :func:`segcp.io.write_on_grid`.)

    Parameters
    ----------
    dest : ``.nii.gz`` (compressed) or ``.nii``.
    array : (X, Y, Z) in nibabel's axis order; its dtype is kept (bool is written as uint8).
    spacing, units, slice_dim : the affine diag(spacing, 1) (qform and sform, code
        "aligned"), the spatial unit ("mm" or "unknown") and the slice axis recorded in
        ``dim_info`` (None: not recorded).
    """
    import nibabel as nib

    from segcp.io.writers import atomic_path

    dest = Path(dest)
    hit = format_of(dest)
    if hit is None or hit[0].name != "NIfTI":
        raise SegcpError(f"{dest}: a NIfTI file name must end in .nii.gz or .nii")
    arr = np.asarray(array)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8)
    affine = volume_affine(spacing)
    img = nib.Nifti1Image(arr, affine)
    img.set_data_dtype(arr.dtype)
    img.set_qform(affine, code="aligned")
    img.set_sform(affine, code="aligned")
    img.header.set_xyzt_units(xyz=units)
    if slice_dim is not None:
        img.header.set_dim_info(slice=int(slice_dim))
    with atomic_path(dest, suffix=hit[2].lower()) as tmp:
        nib.save(img, str(tmp))
    return dest
