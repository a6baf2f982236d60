"""NRRD (``.nrrd``, and ``.nhdr`` with its detached data), 3D Slicer's native format, read and
written with pynrrd.

Axis order: pynrrd's ``index_order="F"``, the file's own axis order (the fastest axis first):
(x, y, z) for a volume, as nibabel gives a NIfTI volume, so that an nnU-Net ``.npz`` beside a
``.nrrd`` lines up voxel for voxel. Geometry: voxel (i, j, k) lies at ``space origin + i·d_i +
j·d_j + k·d_k`` (``space directions`` d), in the frame ``space`` names; the affine of
:class:`~segcp.io.formats.base.Geometry` is turned into NIfTI's RAS+ frame (LPS: x and y negated)
so that a NRRD output and a NIfTI mask of the same grid compare equal. Spacing: the length of
each direction (``spacings`` when the file has no directions). Axes whose direction is ``none``
(a channel axis of a class-probability stack) are not spatial: spacing 1, no place in the affine.

Sets are written on the input's grid: the spatial axes' ``space``, ``space directions``,
``space origin``, ``space units`` and ``measurement frame`` of the input, uint8 data, gzip.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError
from segcp.io.formats.base import Format, Geometry, register

__all__ = ["NRRD"]

#: Sign of each world axis to go from a NRRD ``space`` to NIfTI's RAS+ (spaces not listed: as they are).
_TO_RAS = {
    "left-posterior-superior": (-1.0, -1.0, 1.0),
    "lps": (-1.0, -1.0, 1.0),
    "right-anterior-superior": (1.0, 1.0, 1.0),
    "ras": (1.0, 1.0, 1.0),
    "left-anterior-superior": (-1.0, 1.0, 1.0),
    "las": (-1.0, 1.0, 1.0),
}
#: Header fields that describe the world frame (carried over as they are).
_FRAME_FIELDS = ("space", "space dimension", "space units", "measurement frame")


def _spatial_axes(header: dict[str, Any], ndim: int) -> list[int]:
    """The axes with a direction (all of them when the file has no ``space directions``)."""
    dirs = header.get("space directions")
    if dirs is None:
        spacings = header.get("spacings")
        if spacings is None:
            return list(range(ndim))
        return [a for a in range(ndim) if np.isfinite(np.asarray(spacings, dtype=np.float64)[a])]
    d = np.asarray(dirs, dtype=np.float64)
    return [a for a in range(ndim) if np.all(np.isfinite(d[a]))]


def _spacing(path: Path, header: dict[str, Any], ndim: int) -> tuple[float, ...] | None:
    """Voxel size per axis (1 on the non-spatial axes); None when the file gives none."""
    dirs, spacings = header.get("space directions"), header.get("spacings")
    if dirs is None and spacings is None:
        return None
    spatial = _spatial_axes(header, ndim)
    if dirs is not None:
        d = np.asarray(dirs, dtype=np.float64)
        size = [float(np.linalg.norm(d[a])) if a in spatial else 1.0 for a in range(ndim)]
    else:
        size = [float(np.asarray(spacings, dtype=np.float64)[a]) if a in spatial else 1.0 for a in range(ndim)]
    if not all(np.isfinite(s) and s > 0 for s in size):
        raise SegcpError(f"{path}: voxel spacing {tuple(size)} (NRRD space directions) must be positive and finite")
    return tuple(size)


def _affine(path: Path, header: dict[str, Any], ndim: int) -> NDArray[np.float64]:
    """4 × 4 voxel → world (RAS+, the file's units) over the spatial axes (up to 3)."""
    spatial = _spatial_axes(header, ndim)
    if len(spatial) > 3:
        raise SegcpError(f"{path}: {len(spatial)} spatial axes; segcp reads 2D and 3D grids")
    affine = np.eye(4)
    dirs = header.get("space directions")
    if dirs is not None:
        d = np.asarray(dirs, dtype=np.float64)
        if d.shape[1] > 3:
            raise SegcpError(f"{path}: a {d.shape[1]}-dimensional space; segcp reads 2D and 3D grids")
        for col, a in enumerate(spatial):
            affine[: d.shape[1], col] = d[a]
        origin = header.get("space origin")
        if origin is not None:
            o = np.asarray(origin, dtype=np.float64)
            affine[: o.shape[0], 3] = o
    elif header.get("spacings") is not None:
        sp = np.asarray(header["spacings"], dtype=np.float64)
        for col, a in enumerate(spatial):
            affine[col, col] = sp[a]
    if not np.all(np.isfinite(affine)):
        raise SegcpError(f"{path}: NRRD space directions / origin must be finite")
    signs = _TO_RAS.get(str(header.get("space", "")).lower())
    if signs is not None:
        affine[:3] *= np.asarray(signs)[:, None]
    return affine


@register
class NRRD(Format):
    """NRRD images (pynrrd): the array in the file's axis order, spacing and geometry from
    ``space directions`` / ``space origin`` / ``space``."""

    name = "NRRD"
    suffixes = (".nrrd", ".nhdr")
    has_geometry = True

    def read(self, path: Path, *, color: bool = False) -> tuple[NDArray[Any], tuple[float, ...] | None]:
        import nrrd

        if not path.is_file():
            raise FileNotFoundError(path)
        data, header = nrrd.read(str(path), index_order="F")
        arr = np.asarray(data)
        spacing = _spacing(path, header, arr.ndim)
        _affine(path, header, arr.ndim)  # a grid segcp cannot place is refused on reading
        # Drop trailing singleton axes (a 2D image stored as (X, Y, 1)), keeping spacing aligned.
        while arr.ndim > 2 and arr.shape[-1] == 1:
            arr = arr[..., 0]
            spacing = None if spacing is None else spacing[:-1]
        return arr, spacing

    def geometry(self, path: Path) -> Geometry | None:
        import nrrd

        header = nrrd.read_header(str(path))
        sizes = tuple(int(n) for n in header["sizes"])
        spatial = _spatial_axes(header, len(sizes))
        return Geometry(_affine(path, header, len(sizes)), dict(header), path, self, tuple(sizes[a] for a in spatial))

    def write(self, path: Path, array: NDArray[Any], geometry: Geometry) -> None:
        import nrrd

        header = geometry.header
        sizes = tuple(int(n) for n in header["sizes"])
        spatial = _spatial_axes(header, len(sizes))
        grid = tuple(sizes[a] for a in spatial)
        data = np.asarray(array)
        if data.dtype == bool:
            data = data.astype(np.uint8)
        if data.shape != grid:
            if tuple(n for n in data.shape) + (1,) * (len(grid) - data.ndim) != grid:
                raise SegcpError(f"{path}: array of shape {data.shape} does not lie on the grid {grid} of {geometry.source.name}")
            data = data.reshape(grid)  # the trailing singleton axes the reader dropped
        out: dict[str, Any] = {k: header[k] for k in _FRAME_FIELDS if k in header}
        if header.get("space directions") is not None:
            out["space directions"] = np.asarray(header["space directions"], dtype=np.float64)[spatial]
            if header.get("space origin") is not None:
                out["space origin"] = np.asarray(header["space origin"], dtype=np.float64)
        elif header.get("spacings") is not None:
            out["spacings"] = np.asarray(header["spacings"], dtype=np.float64)[spatial]
        kinds = header.get("kinds")
        out["kinds"] = [kinds[a] for a in spatial] if kinds is not None and len(kinds) == len(sizes) else ["domain"] * len(spatial)
        out["encoding"] = "gzip"
        nrrd.write(str(path), data, out, index_order="F", compression_level=1)
