"""LA 2018: 3D LGE-MRI of the left atrium (2018 Atrial Segmentation Challenge), UA-MT layout.

Folder layout (``../shared/data/la2018``, see its MANIFEST.md)::

    ids.txt                       one volume id per line (optional: else every volumes/<id>/)
    volumes/<id>/mri_norm2.h5     image float32 (X, Y, Z), label uint8 (X, Y, Z)

- ``image``: float32 (X, Y, Z), z-score normalised per volume (roughly −1..8), cropped
  around the atrium; Z = 88 slices, X and Y about 135..232.
- ``label``: uint8 (X, Y, Z), 0 background, 1 left-atrium cavity.
- Spacing: 0.625 mm isotropic (the challenge's acquisition grid). It is **not stored** in
  the files; :data:`LA_SPACING` is the value the task reports.
- Axis order (X, Y, Z), Z last: already nibabel's order, so arrays are used as stored.
- One volume per patient: the volume id is the patient (the group of the split).

Every problem (missing file, truncated or non-HDF5 file, missing dataset, 2D or mismatched
arrays, labels other than 0/1) raises one :class:`~segcp.errors.SegcpError` line naming the file.

Cite Xiong et al., "A global benchmark of algorithms for segmenting the left atrium from late
gadolinium-enhanced cardiac magnetic resonance imaging", Medical Image Analysis 67:101832, 2021.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError
from segcp.harness.datasets._h5 import check_image, check_label, read_image_label

__all__ = ["LA_FILE", "LA_SPACING", "LaVolume", "read_la2018", "scan_la2018"]

#: Voxel size in mm along (X, Y, Z) (MANIFEST.md: isotropic 0.625 mm, not stored in the files).
LA_SPACING: tuple[float, float, float] = (0.625, 0.625, 0.625)
#: File name of a volume inside ``volumes/<id>/``.
LA_FILE = "mri_norm2.h5"


@dataclass(frozen=True)
class LaVolume:
    """One LA 2018 volume: its id (also the patient) and its HDF5 file."""

    id: str
    path: Path


def scan_la2018(root: str | os.PathLike[str]) -> list[LaVolume]:
    """The volumes of an LA 2018 folder, sorted by id.

    Ids come from ``ids.txt`` when it exists (each must have ``volumes/<id>/mri_norm2.h5``),
    else from the folders of ``volumes/`` that hold that file.
    """
    root = Path(root)
    vols = root / "volumes"
    if not vols.is_dir():
        raise SegcpError(f"{root}: no volumes/ folder (expected the LA 2018 layout volumes/<id>/{LA_FILE})")
    listing = root / "ids.txt"
    if listing.is_file():
        ids = sorted(dict.fromkeys(listing.read_text().split()))
        for i in ids:
            if not (vols / i / LA_FILE).is_file():
                raise SegcpError(f"{vols / i / LA_FILE}: no such file (volume {i!r} is listed in {listing})")
    else:
        ids = sorted(p.name for p in vols.iterdir() if not p.name.startswith(".") and (p / LA_FILE).is_file())
    if not ids:
        raise SegcpError(f"{vols}: no volumes (expected volumes/<id>/{LA_FILE})")
    return [LaVolume(i, vols / i / LA_FILE) for i in ids]


def _check_shapes(path: Path, image_shape: tuple[int, ...], label_shape: tuple[int, ...]) -> None:
    if len(label_shape) != 3:
        raise SegcpError(f"{path}: 'label' must be a 3D volume (X, Y, Z), got shape {label_shape}")
    if image_shape != label_shape:
        raise SegcpError(f"{path}: 'image' shape {image_shape} does not match 'label' shape {label_shape}")


def read_la2018(path: str | os.PathLike[str], *, with_image: bool = True) -> tuple[NDArray[np.float32] | None, NDArray[np.uint8]]:
    """Read and validate one LA 2018 volume file.

    Returns
    -------
    (image, label)
        ``image`` float32 (X, Y, Z) as stored (z-scored), or None when ``with_image`` is
        False; ``label`` uint8 (X, Y, Z) in {0, 1}. Spacing: :data:`LA_SPACING` (mm).
    """
    p = Path(path)
    image, label = read_image_label(p, _check_shapes, with_image=with_image)
    lab = check_label(p, label, 2)
    return (check_image(p, image) if image is not None else None), lab
