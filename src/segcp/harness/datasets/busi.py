"""BUSI-style folders: ``images/<id>.png`` and ``masks/<id>.png`` (breast ultrasound lesions).

- Images: 8-bit (or 16-bit) grayscale PNG, returned as uint8/uint16 (H, W). An RGB(A) PNG
  whose channels are equal is read as grayscale. A PNG with real colour (overlays) is an
  error by default (``colour="error"``); ``colour="luma"`` converts it with the ITU-R
  601-2 luma transform ``L = 0.299 R + 0.587 G + 0.114 B`` (Pillow's ``convert("L")``),
  which is what the shared copy of BUSI did for its 15 overlay images.
- Masks: bool (H, W); stored values must be {0, 255} or {0, 1} (lesion = nonzero). The
  mask of ``images/x.png`` is ``masks/x.png`` or, as in the original release,
  ``masks/x_mask.png``.

Near-duplicate images (the same lesion filed twice, with/without calipers, a few frames
apart) are grouped by :func:`busi_groups`, with the perceptual hash of
:func:`segcp.harness.datasets.hashes.phash` (see there for the threshold and how it was checked).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError
from segcp.harness.datasets.hashes import DEFAULT_PHASH_MAX_DISTANCE, DEFAULT_PHASH_SIZE, near_duplicate_groups, phash

__all__ = ["BusiImage", "busi_groups", "busi_hashes", "read_busi_image", "read_busi_mask", "read_busi_pair", "scan_busi"]

Colour = Literal["error", "luma"]


@dataclass(frozen=True)
class BusiImage:
    """One image/mask pair; ``cls`` is the name prefix before ``_`` (``'benign'``, ``'malignant'``) or ``''``."""

    id: str
    cls: str
    image_path: Path
    mask_path: Path


def scan_busi(root: str | os.PathLike[str]) -> list[BusiImage]:
    """Index ``root/images/*.png`` and their masks in ``root/masks/``, sorted by id.

    Raises :class:`SegcpError` when a folder is missing, empty, or an image has no mask.
    """
    root = Path(root)
    img_dir, mask_dir = root / "images", root / "masks"
    for d in (img_dir, mask_dir):
        if not d.is_dir():
            raise SegcpError(f"{d}: folder does not exist (a BUSI-style folder has images/ and masks/)")
    masks = {p.name.lower(): p for p in mask_dir.iterdir() if p.suffix.lower() == ".png" and not p.name.startswith(".")}
    out: list[BusiImage] = []
    for p in sorted(img_dir.iterdir()):
        if p.suffix.lower() != ".png" or p.name.startswith("."):
            continue
        ident = p.stem
        m = masks.get(p.name.lower()) or masks.get(f"{ident}_mask.png".lower())
        if m is None:
            raise SegcpError(f"{p}: no mask {mask_dir / p.name} (nor {ident}_mask.png)")
        cls = ident.split("_")[0] if "_" in ident else ""
        out.append(BusiImage(ident, cls, p, m))
    if not out:
        raise SegcpError(f"{img_dir}: no .png images")
    return out


def _read_png(path: Path, *, color: bool) -> NDArray[Any]:
    """A BUSI PNG through segcp's PNG reader (:class:`segcp.io.formats.png.PNG`)."""
    from segcp.io import read_array

    if not path.is_file():
        raise SegcpError(f"{path}: no such file")
    return read_array(path, color=color)[0]


def read_busi_image(path: str | os.PathLike[str], *, colour: Colour = "error") -> NDArray[Any]:
    """Grayscale image (H, W), uint8 (or uint16 for 16-bit PNGs).

    ``colour``: what to do with a PNG whose colour channels differ: ``"error"`` (default)
    raises :class:`SegcpError`; ``"luma"`` converts with L = 0.299 R + 0.587 G + 0.114 B.
    """
    if colour not in ("error", "luma"):
        raise SegcpError(f"colour={colour!r}: expected 'error' or 'luma'")
    p = Path(path)
    arr = _read_png(p, color=True)
    if arr.ndim == 2:
        return arr
    if colour == "luma":
        from PIL import Image

        return np.asarray(Image.fromarray(np.ascontiguousarray(arr).astype(np.uint8)).convert("L")).copy()
    raise SegcpError(f"{p}: colour PNG (channels differ); convert it to grayscale or read it with colour='luma'")


def read_busi_mask(path: str | os.PathLike[str]) -> NDArray[np.bool_]:
    """Lesion mask, bool (H, W). Stored values must be {0, 255} or {0, 1}."""
    p = Path(path)
    arr = _read_png(p, color=False)
    values = np.unique(arr)
    if not (set(values.tolist()) <= {0, 255} or set(values.tolist()) <= {0, 1}):
        shown = ", ".join(str(v) for v in values[:6].tolist()) + (", ..." if values.size > 6 else "")
        raise SegcpError(f"{p}: mask values must be {{0, 255}} or {{0, 1}}, found {{{shown}}}")
    return arr > 0


def read_busi_pair(item: BusiImage, *, colour: Colour = "error") -> tuple[NDArray[Any], NDArray[np.bool_]]:
    """Image (H, W) uint8 and mask (H, W) bool of one item; shapes must match."""
    image = read_busi_image(item.image_path, colour=colour)
    mask = read_busi_mask(item.mask_path)
    if image.shape != mask.shape:
        raise SegcpError(f"{item.mask_path}: mask shape {mask.shape} does not match image shape {image.shape} ({item.image_path.name})")
    return image, mask


# ----------------------------------------------------------------- near-duplicates
_HASH_CACHE: dict[tuple[str, int, int, int, str], NDArray[np.bool_]] = {}


def busi_hashes(items: list[BusiImage], *, size: int = DEFAULT_PHASH_SIZE, colour: Colour = "error") -> NDArray[np.bool_]:
    """Perceptual hashes of the items' images, bool (n, size*size); cached in memory.

    647 BUSI images take about 7 s cold (PNG decoding dominates), then nothing.
    """
    out = np.zeros((len(items), size * size), dtype=bool)
    for i, it in enumerate(items):
        st = it.image_path.stat()
        key = (str(it.image_path.resolve()), st.st_mtime_ns, st.st_size, size, colour)
        h = _HASH_CACHE.get(key)
        if h is None:
            h = phash(read_busi_image(it.image_path, colour=colour), size=size)
            _HASH_CACHE[key] = h
        out[i] = h
    return out


def busi_groups(
    items: list[BusiImage], *, max_distance: int = DEFAULT_PHASH_MAX_DISTANCE, size: int = DEFAULT_PHASH_SIZE, colour: Colour = "error"
) -> dict[str, str]:
    """Near-duplicate group of every item: id → group name.

    Two images are linked when the Hamming distance of their pHashes is ≤ ``max_distance``;
    groups are the connected components of these links (union-find). A group is named after
    its smallest member id, so a singleton's group is its own id.
    """
    hashes = busi_hashes(items, size=size, colour=colour)
    labels = near_duplicate_groups(hashes, max_distance)
    ids = [it.id for it in items]
    first: dict[int, str] = {}
    for ident, lab in sorted(zip(ids, labels.tolist())):
        first.setdefault(lab, ident)
    return {ident: first[lab] for ident, lab in zip(ids, labels.tolist())}
