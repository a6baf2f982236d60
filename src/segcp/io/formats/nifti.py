"""NIfTI (``.nii.gz``, ``.nii``): arrays in voxel order (x, y, z), spacing from pixdim, and the
affine + header that sets are written back on."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError
from segcp.io.formats.base import Format, Geometry, register

__all__ = ["NIfTI"]


@contextmanager
def _quiet_nibabel() -> Iterator[None]:
    """nibabel's header fix-ups would print; segcp refuses such headers instead."""
    import logging  # here: only a NIfTI read pays logging's import (2 ms of every command's start)

    log = logging.getLogger("nibabel.global")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        log.setLevel(level)


def _raw_pixdim(path: Path) -> NDArray[np.float64]:
    """The header's pixdim as stored (nibabel replaces 0 by 1 and negatives by |·| on load)."""
    import nibabel as nib
    from nibabel.openers import ImageOpener

    with ImageOpener(str(path)) as f:
        size = f.read(4)
        f.seek(0)
        nifti2 = size in ((540).to_bytes(4, "little"), (540).to_bytes(4, "big"))
        hdr = (nib.Nifti2Header if nifti2 else nib.Nifti1Header).from_fileobj(f, check=False)
    return np.asarray(hdr["pixdim"], dtype=np.float64)


@register
class NIfTI(Format):
    """NIfTI-1/2 images, read with nibabel: the data array in voxel order and its pixdim spacing."""

    name = "NIfTI"
    suffixes = (".nii.gz", ".nii")
    has_geometry = True

    def read(self, path: Path, *, color: bool = False) -> tuple[NDArray[Any], tuple[float, ...] | None]:
        import nibabel as nib

        with _quiet_nibabel():
            img: Any = nib.load(str(path))  # a NIfTI image (nibabel types load() as its base class)
            pixdim = _raw_pixdim(path)
        arr = np.asanyarray(img.dataobj)
        # Drop trailing singleton axes (e.g. (X, Y, 1) slices), keeping spacing aligned.
        while arr.ndim > 2 and arr.shape[-1] == 1:
            arr = arr[..., 0]
        raw = tuple(float(z) for z in pixdim[1 : 1 + arr.ndim])
        if not all(np.isfinite(z) and z > 0 for z in raw):
            raise SegcpError(f"{path}: voxel spacing {raw} (NIfTI pixdim) must be positive and finite")
        zooms = tuple(float(z) for z in img.header.get_zooms()[: arr.ndim])
        return np.asarray(arr), zooms

    def geometry(self, path: Path) -> Geometry | None:
        import nibabel as nib

        with _quiet_nibabel():
            img: Any = nib.load(str(path))
        return Geometry(img.affine, img.header, path, self, tuple(int(n) for n in img.shape))

    def write(self, path: Path, array: NDArray[Any], geometry: Geometry) -> None:
        import nibabel as nib

        data = np.asarray(array)
        if data.dtype == bool:
            data = data.astype(np.uint8)
        header = geometry.header.copy()
        header.set_data_dtype(data.dtype)
        header.set_slope_inter(1.0, 0.0)
        image = nib.Nifti2Image if isinstance(header, nib.Nifti2Header) else nib.Nifti1Image
        nib.save(image(data, geometry.affine, header=header), str(path))
