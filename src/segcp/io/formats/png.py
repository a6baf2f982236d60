"""PNG: 2D images, probability maps (integers scaled to [0, 1]) and masks; no spacing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError
from segcp.io.formats.base import Format, register

__all__ = ["PNG"]


def _png_array(path: Path, im: Any, color: bool) -> NDArray[Any]:
    if im.mode in ("RGB", "RGBA"):
        arr = np.asarray(im)[..., :3]
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
            return arr[..., 0].copy()
        if color:
            return arr.copy()  # (H, W, 3): images for image-aware methods may be in colour
        raise SegcpError(f"{path}: colour PNG; expected a single-channel (grayscale) map")
    if im.mode in ("LA", "P"):
        im = im.convert("L")
    return np.asarray(im).copy()


@register
class PNG(Format):
    """PNG files: uint8/uint16 (H, W), or (H, W, 3) for a colour image read with ``color``."""

    name = "PNG"
    suffixes = (".png",)

    def read(self, path: Path, *, color: bool = False) -> tuple[NDArray[Any], tuple[float, ...] | None]:
        import warnings

        from PIL import Image

        with warnings.catch_warnings():  # Pillow's size warnings would print before our one line
            warnings.simplefilter("ignore")
            with Image.open(path) as im:
                im.load()
                return _png_array(path, im, color), None

    def probabilities(self, array: NDArray[Any]) -> NDArray[Any]:
        """An 8-bit PNG holds probability × 255, a 16-bit PNG probability × 65535."""
        if array.dtype == np.uint8:
            return array / 255.0
        if array.dtype == np.uint16:
            return array / 65535.0
        return array
