"""MONAI tensors → segcp cases: which channels a calibration covers, and each channel-first item's
probabilities, truth, spacing and id.

MONAI post-processing works on channel-first items (after ``decollate_batch``): a model's
probabilities (C, *S), a label map (1, *S), S the 2D (H, W) or 3D (D, H, W) grid. A
:class:`Target` says how a calibration reads them, as a directory job reads a class stack: one
case per structure (``--labels``: channel l, truth ``label == l``, through
:func:`segcp.jobs.structures.split_case`), one structure (``--label L``), or a single foreground
channel (C = 1: a sigmoid output, a binary truth).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from monai.data import MetaTensor, decollate_batch
from monai.data.utils import affine_to_spacing
from monai.utils import convert_to_numpy
from numpy.typing import NDArray

from segcp.cases import Case, binarize_mask
from segcp.errors import SegcpError
from segcp.io.formats import GRID_ATOL, split_ext
from segcp.jobs.structures import split_case
from segcp.record import Calibration, Structure

__all__ = ["Target", "case_id", "channel_first_items", "item_arrays", "iter_items", "spacing_of", "to_numpy"]


def to_numpy(x: Any) -> NDArray[Any]:
    """A tensor, MetaTensor or array as a numpy array (on the CPU; MONAI's own conversion)."""
    return np.asarray(convert_to_numpy(x))


def spacing_of(x: Any, ndim: int) -> tuple[float, ...] | None:
    """The voxel size (mm) of a MetaTensor's grid; None for a plain tensor or array (1 per axis).

    On the grid of the NIfTI file it was read from (its affine the ``original_affine`` of its metadata, within
    :data:`segcp.io.formats.GRID_ATOL`: as read, or after ``Invertd``), the file's own ``pixdim`` — the
    spacing segcp's reader gives ``segcp calibrate`` and ``segcp predict`` for that file, bit for bit; on any
    other grid (resampled), the spacing of its affine (MONAI's ``affine_to_spacing``)."""
    if not isinstance(x, MetaTensor):
        return None
    affine = to_numpy(x.affine)
    pixdim, original = x.meta.get("pixdim"), x.meta.get("original_affine")
    if pixdim is not None and original is not None:
        original = to_numpy(original)
        if original.shape == affine.shape and np.allclose(affine, original, rtol=0.0, atol=GRID_ATOL):
            return tuple(float(v) for v in to_numpy(pixdim)[1 : 1 + ndim])
    return tuple(float(v) for v in to_numpy(affine_to_spacing(x.affine, r=ndim)))


def case_id(x: Any, k: int) -> str:
    """The id of an item: the name of the file its metadata comes from (``filename_or_obj``, the image a
    prediction was made from), without its format's suffix; ``str(k)`` (its place in the stream) without one."""
    name = x.meta.get("filename_or_obj") if isinstance(x, MetaTensor) else None
    if isinstance(name, (str, os.PathLike)) and str(name):
        base = os.path.basename(os.fspath(name))
        split = split_ext(base)
        return split[0] if split is not None else base
    return str(k)


def channel_first_items(x: Any) -> list[Any]:
    """Channel-first items from what MONAI passes around: a list of them (after ``decollate_batch``), or a
    batch-first tensor (decollated here, each item keeping its own metadata)."""
    if isinstance(x, (list, tuple)):
        return list(x)
    return list(decollate_batch(x, detach=True))


@dataclass(frozen=True)
class Target:
    """Which channels of a (C, *S) probability output a calibration covers.

    ``structures``: one set per structure (a per-structure calib.json, or ``labels`` when calibrating);
    ``label``: one structure of a class stack; neither: a one-channel foreground output (C = 1).
    """

    structures: tuple[Structure, ...] = ()
    label: int | None = None

    @classmethod
    def of(cls, cal: Calibration) -> Target:
        """What a calib.json calibrated: its structures, its label, or one foreground channel."""
        if cal.per_structure:
            return cls(tuple(cal.structures))
        if cal.channels:
            return cls((), cal.label)
        return cls()

    @property
    def channels(self) -> bool:
        """Whether the output is a class stack (several channels) rather than one foreground map."""
        return bool(self.structures) or self.label is not None

    @property
    def names(self) -> list[str]:
        """One name per set channel: the structures' folder names (``segcp predict``'s sub-folders),
        ``label<L>`` for one structure, ``foreground`` for a one-channel output."""
        if self.structures:
            return [s.name for s in self.structures]
        return [f"label{self.label}"] if self.label is not None else ["foreground"]

    @property
    def labels(self) -> list[int] | None:
        """The label value (= channel) of each set channel; None for a one-channel output."""
        if self.structures:
            return [s.value for s in self.structures]
        return None if self.label is None else [self.label]

    def cases(
        self,
        ident: str,
        probs: NDArray[Any],
        truth: NDArray[Any] | None = None,
        *,
        spacing: Sequence[float] | None = None,
        image: NDArray[Any] | None = None,
        where: str | None = None,
    ) -> list[Case]:
        """The cases of one item, one per set channel: ``probs`` (C, *S) in [0, 1]; ``truth`` a label map
        (1, *S) or (*S), binary for a one-channel output; ``image`` on the same grid (image-aware families)."""
        where = where or f"case {ident}"
        if probs.ndim not in (3, 4):
            raise SegcpError(f"{where}: expected channel-first probabilities (C, *S) of a 2D or 3D image, got shape {probs.shape}")
        if truth is not None:
            truth = truth[0] if truth.ndim == probs.ndim and truth.shape[0] == 1 else truth
            if truth.shape != probs.shape[1:]:
                raise SegcpError(
                    f"{where}: the label of shape {truth.shape} is not a label map (1, *S) of the probabilities' grid {probs.shape[1:]} "
                    f"(a one-hot label: AsDiscreted(argmax=True) first)"
                )
        sp = None if spacing is None else tuple(spacing)
        if not self.channels:
            if probs.shape[0] != 1:
                raise SegcpError(f"{where}: the calibration is for a one-channel foreground map, got {probs.shape[0]} channels")
            mask = None if truth is None else binarize_mask(truth, None, where)
            return [Case(ident, probs=probs[0], mask=mask, image=image, spacing=sp, where=where)]
        stack = Case(ident, class_probs=probs, label_map=truth, image=image, spacing=sp, where=where)
        structures = self.structures or (Structure.make(int(self.label), f"label{self.label}"),)  # type: ignore[arg-type]
        return split_case(stack, structures)


def item_arrays(pred: Any, k: int, image: Any = None) -> tuple[str, NDArray[Any], tuple[float, ...] | None, NDArray[Any] | None]:
    """(id, probabilities as numpy, spacing, image as numpy) of one channel-first prediction item."""
    probs = to_numpy(pred)
    return case_id(pred, k), probs, spacing_of(pred, probs.ndim - 1), None if image is None else to_numpy(image)


def iter_items(pred: Any, label: Any = None, image: Any = None) -> Iterator[tuple[Any, Any, Any]]:
    """(prediction, label, image) of each channel-first item of a batch or list (label, image optional)."""
    preds = channel_first_items(pred)
    labels = [None] * len(preds) if label is None else channel_first_items(label)
    images = [None] * len(preds) if image is None else channel_first_items(image)
    if not len(preds) == len(labels) == len(images):
        raise SegcpError(f"{len(preds)} predictions but {len(labels)} labels and {len(images)} images in one batch")
    yield from zip(preds, labels, images)
