"""The data-directory contract of the CLI.

A data directory holds, per image id::

    probs/<id>.<ext>     foreground probability, float in [0, 1]  (PNG: uint8/255, uint16/65535);
                         or a class-probability stack (L, *S) selected with --label
    masks/<id>.<ext>     binary mask, or a label map with --label L
    images/<id>.<ext>    optional: the image (used by image-aware methods)

with ``ext`` ∈ {npy, png, nii.gz, nii}. NIfTI spacing is read (mask first, then probs, then
image) and used by the metrics and spacing-aware methods. Ids must match across folders.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError
from segcp.io.readers import read_array, split_ext
from segcp.methods.base import Case, binarize_mask, check_probabilities

__all__ = ["DataDir", "index_folder"]

SUBDIRS = ("probs", "masks", "images")


def index_folder(folder: Path) -> dict[str, Path]:
    """Map id → file for the recognised files of one folder (hidden files ignored)."""
    out: dict[str, Path] = {}
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.is_file():
            continue
        parts = split_ext(entry.name)
        if parts is None:
            continue
        ident = parts[0]
        if ident in out:
            raise SegcpError(f"{folder}: id {ident!r} has two files ({out[ident].name}, {entry.name})")
        out[ident] = entry
    return out


@dataclass
class DataDir:
    """An indexed data directory (see the module docstring for the layout)."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise SegcpError(f"{self.root}: data directory does not exist")
        self.files: dict[str, dict[str, Path]] = {}
        for sub in SUBDIRS:
            folder = self.root / sub
            if folder.is_dir():
                self.files[sub] = index_folder(folder)

    def has(self, sub: str) -> bool:
        return sub in self.files

    def ids(self, require: Iterable[str] = ("probs",)) -> list[str]:
        """Sorted ids, checking that every required folder exists and ids match exactly."""
        require = list(require)
        for sub in require:
            if sub not in self.files:
                raise SegcpError(f"{self.root}: missing folder {sub}/")
            if not self.files[sub]:
                raise SegcpError(f"{self.root / sub}: no .npy, .png, .nii or .nii.gz files")
        base = require[0]
        ids = set(self.files[base])
        for sub in require[1:]:
            other = set(self.files[sub])
            missing = sorted(ids - other)
            if missing:
                src = self.files[base][missing[0]].name
                raise SegcpError(
                    f"{self.root / sub}: no file for id {missing[0]!r} (from {base}/{src})"
                    + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                )
            extra = sorted(other - ids)
            if extra:
                raise SegcpError(
                    f"{self.root / sub}/{self.files[sub][extra[0]].name}: no matching file in {base}/"
                    + (f" ({len(extra) - 1} more unmatched)" if len(extra) > 1 else "")
                )
        return sorted(ids)

    def path(self, sub: str, ident: str) -> Path:
        try:
            return self.files[sub][ident]
        except KeyError:
            raise SegcpError(f"{self.root / sub}: no file for id {ident!r}") from None

    # ------------------------------------------------------------------ loading
    def read(self, sub: str, ident: str) -> tuple[NDArray[Any], tuple[float, ...] | None]:
        return read_array(self.path(sub, ident))

    def load_probs(self, ident: str, *, label: int | None = None, channels: bool = False) -> tuple[NDArray[np.float64], tuple[float, ...] | None]:
        """Foreground probabilities of one id, float64 in [0, 1], and the file's spacing.

        ``channels=True``: the file is a (L, *S) stack and ``label`` picks the channel.
        """
        p = self.path("probs", ident)
        arr, spacing = read_array(p)
        if arr.dtype == np.uint8 and p.name.lower().endswith(".png"):
            arr = arr / 255.0
        elif arr.dtype == np.uint16 and p.name.lower().endswith(".png"):
            arr = arr / 65535.0
        if channels:
            if label is None:
                raise SegcpError(f"{p}: class-probability stack of shape {arr.shape}; pass --label L to pick a class")
            if arr.ndim < 3 or not 0 <= label < arr.shape[0]:
                raise SegcpError(f"{p}: cannot take class {label} from a probability stack of shape {arr.shape}")
            arr = arr[label]
            if spacing is not None:
                spacing = spacing[1:]
        return check_probabilities(arr, str(p)), spacing

    def load_mask(self, ident: str, *, label: int | None = None) -> tuple[NDArray[np.bool_], tuple[float, ...] | None]:
        p = self.path("masks", ident)
        arr, spacing = read_array(p)
        return binarize_mask(arr, label, str(p)), spacing

    def probs_have_channels(self, ident: str) -> bool:
        """True when probs/<id> has one more axis than masks/<id> (a class stack)."""
        pa, _ = read_array(self.path("probs", ident))
        ma, _ = read_array(self.path("masks", ident))
        return pa.ndim == ma.ndim + 1 and pa.shape[1:] == ma.shape

    def load_case(
        self,
        ident: str,
        *,
        label: int | None = None,
        channels: bool = False,
        with_mask: bool = True,
        with_image: bool = False,
    ) -> Case:
        """Build a :class:`Case` for one id, with one-line errors naming the files."""
        probs, spacing = self.load_probs(ident, label=label, channels=channels)
        mask = None
        if with_mask:
            mask, mspacing = self.load_mask(ident, label=label)
            if mask.shape != probs.shape:
                raise SegcpError(
                    f"{self.path('masks', ident)}: mask shape {mask.shape} does not match "
                    f"probability map shape {probs.shape} ({self.path('probs', ident).name})"
                )
            spacing = mspacing or spacing
        image = None
        if with_image:
            image, ispacing = self.read("images", ident)
            spacing = spacing or ispacing
        return Case(id=ident, probs=probs, mask=mask, image=image, spacing=spacing)
