"""nnU-Net v2's probability export: ``<case>.npz`` with the key ``probabilities``.

``nnUNetv2_predict --save_probabilities`` writes (C, *spatial) in SimpleITK's array order —
(C, z, y, x) for 3D, (C, 1, y, x) for 2D — i.e. the spatial axes reversed with respect to
nibabel's (and pynrrd's). The spatial axes are reversed back on reading, so that channel c
lines up voxel for voxel with the image files next to it (the argmax ``<case>.nii.gz`` or
``.nrrd`` and the ``labelsTr`` ground truth). Its spacing and geometry come from that file of
the same id (:attr:`~segcp.io.formats.base.Format.takes_companion_geometry`), never from
nnU-Net's ``.pkl``, which segcp never unpickles.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError
from segcp.io.formats.base import Format, register

__all__ = ["NNUNET_KEY", "NnUNetNPZ"]

#: The key of nnU-Net v2's probability exports.
NNUNET_KEY = "probabilities"


@register
class NnUNetNPZ(Format):
    """nnU-Net v2's ``.npz`` probabilities (C, *spatial), returned in nibabel's voxel order."""

    name = "nnU-Net NPZ"
    suffixes = (".npz",)
    takes_companion_geometry = True

    def read(self, path: Path, *, color: bool = False) -> tuple[NDArray[Any], tuple[float, ...] | None]:
        with np.load(path, allow_pickle=False) as f:
            if not hasattr(f, "files"):
                raise SegcpError(f"{path}: not an .npz archive")
            if NNUNET_KEY not in f.files:
                raise SegcpError(
                    f"{path}: no '{NNUNET_KEY}' array (keys: {', '.join(f.files) or 'none'}); expected nnU-Net's --save_probabilities export"
                )
            arr = np.asarray(f[NNUNET_KEY])
        if arr.ndim not in (3, 4):
            raise SegcpError(f"{path}: '{NNUNET_KEY}' of shape {arr.shape}; expected (C, z, y, x) or (C, 1, y, x)")
        arr = np.ascontiguousarray(arr.transpose(0, *range(arr.ndim - 1, 0, -1)))  # SimpleITK order → nibabel order
        while arr.ndim > 3 and arr.shape[-1] == 1:  # 2D export (C, 1, y, x) → (C, x, y)
            arr = arr[..., 0]
        return arr, None
