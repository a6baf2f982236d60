"""PNG: 2D images, probability maps (integers scaled to [0, 1]) and masks; no spacing.

Every Pillow mode a PNG opens in gives the map a user means or one line (:func:`_png_array`):
indexed-colour (palette) masks are read by index, not by brightness.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError
from segcp.io.formats.base import Format, register

__all__ = ["PNG"]


def _transparency_is_shown(value: NDArray[Any], alpha: NDArray[Any]) -> bool:
    """True when the alpha channel says nothing the values do not: constant, or transparent
    exactly where the value is 0 (a mask exported on a transparent background)."""
    return bool(alpha.size == 0 or alpha.min() == alpha.max() or np.array_equal(alpha > 0, value > 0))


def _png_array(path: Path, im: Any, color: bool) -> NDArray[Any]:
    """The array of an opened PNG by its Pillow mode.

    Masks and probability maps (``color=False``) are single-channel: grayscale modes as
    stored (``1`` bool, ``L`` uint8, ``I;16``/``I`` uint16), an indexed-colour image (``P``) by
    its palette **index** — the label a label-map PNG stores, whatever colour the palette
    shows for it —, RGB(A) only when its channels are equal. An alpha channel (``LA``, ``PA``,
    ``RGBA``) must not carry what the values do not (see :func:`_transparency_is_shown`).
    Images of image-aware methods (``color=True``) are read by what they show: a palette's
    colours, grey (H, W) or colour (H, W, 3), alpha dropped.
    """
    mode = im.mode
    if color and mode in ("P", "PA"):
        im = im.convert("RGBA" if mode == "PA" or "transparency" in im.info else "RGB")
        mode = im.mode
    if mode in ("1", "L", "P"):
        return np.asarray(im).copy()  # P: the palette indices
    if mode.startswith("I;16"):
        return np.asarray(im).astype(np.uint16)  # native byte order
    if mode == "I":  # a 16-bit PNG, as some Pillow versions open it
        arr = np.asarray(im)
        if arr.size and (arr.min() < 0 or arr.max() > 65535):
            raise SegcpError(f"{path}: 32-bit PNG values outside 0..65535; expected an 8- or 16-bit map")
        return arr.astype(np.uint16)
    if mode in ("LA", "PA"):
        arr = np.asarray(im)
        value, alpha = arr[..., 0], arr[..., 1]
        if not color and not _transparency_is_shown(value, alpha):
            raise SegcpError(f"{path}: PNG with transparency (mode {mode}) that its values do not show; save the map without an alpha channel")
        return value.copy()
    if mode in ("RGB", "RGBA"):
        arr = np.asarray(im)
        rgb = arr[..., :3]
        gray = np.array_equal(rgb[..., 0], rgb[..., 1]) and np.array_equal(rgb[..., 0], rgb[..., 2])
        if not color and mode == "RGBA" and not _transparency_is_shown(rgb.max(axis=-1), arr[..., 3]):
            raise SegcpError(f"{path}: PNG with transparency (mode RGBA) that its values do not show; save the map without an alpha channel")
        if gray:
            return rgb[..., 0].copy()
        if color:
            return rgb.copy()  # (H, W, 3): images for image-aware methods may be in colour
        raise SegcpError(f"{path}: colour PNG (mode {mode}); expected a single-channel map (grayscale, or indexed colours read by index)")
    raise SegcpError(f"{path}: unsupported PNG mode {mode}; expected grayscale (1, L, I;16), indexed (P) or RGB(A)")


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
        """An 8-bit PNG holds probability × 255 (an indexed one: its index), a 16-bit PNG
        probability × 65535, a 1-bit PNG 0 or 1."""
        if array.dtype == bool:
            return array.astype(np.float64)
        if array.dtype == np.uint8:
            return array / 255.0
        if array.dtype == np.uint16:
            return array / 65535.0
        return array
