"""One image's inputs (`Case`) and the validation of every array a user hands to segcp.

A :class:`Case` holds what a set family may read for one image — the model's foreground
probabilities, its class probabilities or its sampled softmax maps, the image, the voxel
spacing — and, for calibration and evaluation, the ground truth (a binary mask or a label
map). Each array is checked once, here, with a one-line :class:`~segcp.errors.SegcpError`
naming the case (or the file, when the reader passes its path as the case's ``where``).

This module knows nothing about methods or files, so that readers (``segcp.io``) and set
families (``segcp.methods``) can both import it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from segcp.errors import SegcpError

__all__ = [
    "SLICE_AXIS_RULE",
    "Case",
    "binarize_mask",
    "channel_of",
    "check_beta",
    "check_class_probs",
    "check_label_map",
    "check_probabilities",
    "check_samples",
    "masked_values",
    "one_ndim",
    "slice_axis",
]

#: How :func:`slice_axis` chooses, in words (recorded in checkpoints and manifests).
SLICE_AXIS_RULE = "the axis with the coarsest spacing; ties (isotropic or unknown spacing) -> the fewest voxels, then the first"


def slice_axis(shape: Sequence[int], spacing: Sequence[float] | None = None, *, given: int | None = None) -> int:
    """The axis a volume is cut along into 2D slices: the coarsest spacing; ties → the axis
    with the fewest voxels, then the first.

    The one rule for every 2D model run on a volume: the UNet's training and inference
    (``segcp train`` / ``segcp infer``), RW-CP's 2D encoder and ``normalize="slice"``. Spacings
    tie within 1e-6 relative (float32 NIfTI zooms). Unknown spacing is a tie of every axis:
    the fewest voxels then finds the through-plane axis of a typical acquisition whatever the
    array order — axis 0 of a (D, H, W) array, axis 2 of nibabel's (X, Y, Z) — and for an
    isotropic volume it is the cut with the fewest slices to run.

    Parameters
    ----------
    shape : the volume's shape (its length is the number of axes).
    spacing : voxel size per axis (any unit), or None when unknown (every axis ties).
    given : an axis chosen by the user (``--slice-axis``): checked (0..ndim−1) and returned.

    Examples
    --------
    >>> slice_axis((256, 216, 10), (1.5, 1.5, 10.0)), slice_axis((10, 256, 216), (10.0, 1.5, 1.5))
    (2, 0)
    >>> slice_axis((183, 140, 88), (0.625, 0.625, 0.625)), slice_axis((88, 140, 183), (0.625, 0.625, 0.625))
    (2, 0)
    >>> slice_axis((12, 256, 216)), slice_axis((8, 8, 8))
    (0, 0)
    """
    ndim = len(shape)
    if given is not None:
        if isinstance(given, bool) or int(given) != given or not 0 <= int(given) < ndim:
            raise SegcpError(f"--slice-axis {given!r}: must be one of 0..{ndim - 1}")
        return int(given)
    sp = [1.0] * ndim if spacing is None else [float(s) for s in spacing]
    if len(sp) != ndim or not all(math.isfinite(s) and s > 0 for s in sp):
        raise SegcpError(f"spacing {tuple(sp)}: need {ndim} positive numbers to choose a slice axis")
    top = max(sp)
    coarse = [a for a in range(ndim) if sp[a] >= top * (1.0 - 1e-6)]
    return min(coarse, key=lambda a: (int(shape[a]), a))


#: Native float32/float64: the unsigned view and 1.0's bit pattern. Read as unsigned integers, the
#: non-negative floats keep their order and anything with the sign bit (negatives, -0.0), NaN or
#: inf lies above 1.0's pattern: one max over the bits checks the range (-0.0 takes the slow path).
_ONE_BITS: dict[np.dtype[Any], tuple[type[np.unsignedinteger[Any]], int]] = {
    np.dtype(np.float32): (np.uint32, int(np.float32(1.0).view(np.uint32))),
    np.dtype(np.float64): (np.uint64, int(np.float64(1.0).view(np.uint64))),
}


def check_probabilities(probs: NDArray[Any], where: str) -> NDArray[np.floating]:
    """Return validated probabilities, or raise one line naming ``where`` and the problem.

    Floating arrays keep their precision (a float32 map is not copied to float64: families
    compute their scores in float64 from it, so the values are the same); integer arrays
    become float64. The range is checked on the array as stored; NaN propagates through
    min/max, so NaN and inf are caught.
    """
    p = np.asarray(probs)
    if p.dtype.kind not in "fiu":  # not bool, complex, timedelta/datetime, strings, records
        raise SegcpError(f"{where}: probabilities must be numeric, got dtype {p.dtype}")
    if p.size == 0:
        raise SegcpError(f"{where}: the probability map is empty (shape {p.shape})")
    one = _ONE_BITS.get(p.dtype)
    if one is not None and p.view(one[0]).max() <= one[1]:
        return p  # one pass: as unsigned integers, the floats in [+0, 1] are exactly the bit patterns <= 1.0's
    lo, hi = float(p.min()), float(p.max())
    if not (lo >= 0.0 and hi <= 1.0):
        if np.isnan(lo) or np.isnan(hi):
            raise SegcpError(f"{where}: probability map contains NaN ({int(np.isnan(p).sum())} values)")
        if np.isinf(lo) or np.isinf(hi):
            raise SegcpError(f"{where}: probability map contains inf ({int(np.isinf(p).sum())} values)")
        if p.dtype.kind in "iu" and lo >= 0:
            raise SegcpError(
                f"{where}: integer labels {int(lo)}..{int(hi)}: a segmentation, not probabilities in [0, 1] "
                "(nnU-Net: rerun nnUNetv2_predict with --save_probabilities and read its .npz)"
            )
        raise SegcpError(f"{where}: probabilities must lie in [0, 1], found range [{lo:.4g}, {hi:.4g}]")
    return p if p.dtype.kind == "f" else p.astype(np.float64)


def check_beta(beta: float) -> float:
    """β as a float in [0, 1), or a one-line error."""
    try:
        b = float(beta)
    except (TypeError, ValueError):
        raise SegcpError(f"beta must be a number in [0, 1), got {beta!r}") from None
    if not 0.0 <= b < 1.0:
        raise SegcpError(f"beta must be in [0, 1) (agreement must be strictly greater than beta), got {beta!r}")
    return b


def check_samples(
    samples: ArrayLike, where: str, spatial: tuple[int, ...] | None = None, min_samples: int = 2, what: str = "samples"
) -> NDArray[np.floating]:
    """Sampled softmax maps (N, L, *S), or a one-line error naming ``where``.

    Accepts (N, L, *S) class stacks, and (N, *S) foreground probabilities (binary: stacked as
    [1 − p, p], L = 2) when ``spatial`` (the label map's shape) says the class axis is absent.
    Needs N ≥ 2 samples, L ≥ 2 labels, values in [0, 1], finite.

    A floating class stack keeps its precision, as :func:`check_probabilities` (a float16 or
    float32 stack of a large volume is not copied to float64; the families compute in float64
    from it: CONSIGN's SVD, the mean of :meth:`Case.mean_class_probs`). Integer stacks and the
    binary [1 − p, p] stack (a new array either way) are float64.
    """
    s = np.asarray(samples)
    if s.dtype.kind not in "fiu":
        raise SegcpError(f"{where}: {what} must be numeric, got dtype {s.dtype}")
    if s.dtype.kind != "f":
        s = s.astype(np.float64)
    if spatial is not None and s.ndim == len(spatial) + 1 and s.shape[1:] == tuple(spatial):
        p = s.astype(np.float64, copy=False)
        s = np.stack([1.0 - p, p], axis=1)  # binary foreground samples → two classes
    if spatial is not None and (s.ndim != len(spatial) + 2 or s.shape[2:] != tuple(spatial)):
        raise SegcpError(
            f"{where}: samples of shape {tuple(np.shape(samples))} do not match the label map {tuple(spatial)}; "
            f"expected (N, L, {', '.join(map(str, spatial))}) or (N, {', '.join(map(str, spatial))})"
        )
    if s.ndim not in (4, 5):
        raise SegcpError(f"{where}: samples must have shape (N, L, H, W) or (N, L, D, H, W), got {s.shape}")
    if s.shape[0] < min_samples:
        raise SegcpError(f"{where}: need at least {min_samples} samples, got {s.shape[0]}")
    if s.shape[1] < 2:
        raise SegcpError(f"{where}: need at least 2 labels (softmax classes), got {s.shape[1]}")
    if not np.all(np.isfinite(s)):
        raise SegcpError(f"{where}: {what} contain NaN or inf")
    lo, hi = float(s.min()), float(s.max())
    if lo < 0.0 or hi > 1.0:
        raise SegcpError(f"{where}: {what} must lie in [0, 1], found range [{lo:.4g}, {hi:.4g}]")
    return s


def check_class_probs(probs: ArrayLike, where: str, spatial: tuple[int, ...]) -> NDArray[np.floating]:
    """Class probabilities (L, *S) (precision as :func:`check_samples`); a (*S) map is binary
    foreground ([1 − p, p])."""
    p = np.asarray(probs)
    sp = tuple(spatial)
    if not (p.shape == sp or (p.ndim == len(sp) + 1 and p.shape[1:] == sp)):
        dims = ", ".join(map(str, sp))
        raise SegcpError(f"{where}: class probabilities of shape {p.shape} do not match the label map {sp}; expected (L, {dims}) or ({dims})")
    return check_samples(p[None], where, sp, min_samples=1, what="class probabilities")[0]


def channel_of(label: int, shape: tuple[int, ...], where: str) -> int:
    """The channel of structure ``label`` in a class-probability stack of ``shape`` (L, *S), or
    a one-line error: a label the stack has no channel for, or a stack of one channel (channel
    0 of a class stack is the background, so a single-channel file is a foreground map saved
    with a channel axis, not a class stack). ``--label`` and every record's label go through
    here (never Python's negative indexing)."""
    n = int(shape[0]) if len(shape) else 0
    if n < 2:
        raise SegcpError(
            f"{where}: a probability stack of one channel (shape {tuple(shape)}) is not a class stack (channel 0 would be the "
            f"background): save the foreground map without the channel axis"
        )
    if isinstance(label, bool) or not isinstance(label, (int, np.integer)) or not 0 <= int(label) < n:
        raise SegcpError(f"{where}: cannot take class {label} from a probability stack of shape {tuple(shape)} (classes 0..{n - 1})")
    return int(label)


def check_label_map(label: ArrayLike, where: str, n_labels: int | None = None) -> NDArray[np.int64]:
    """A ground-truth label map as int64 with values in [0, L), or a one-line error.

    Booleans become {0, 1}; for L = 2 a {0, 255} mask is read as {0, 1}.
    """
    m = np.asarray(label)
    if m.dtype == bool:
        return m.astype(np.int64)
    if m.dtype.kind not in "fiu":
        raise SegcpError(f"{where}: label map must be numeric or boolean, got dtype {m.dtype}")
    if np.issubdtype(m.dtype, np.floating) and not (np.all(np.isfinite(m)) and np.all(m == np.round(m))):
        raise SegcpError(f"{where}: label map must hold integer labels")
    m = m.astype(np.int64)
    if m.size == 0:
        raise SegcpError(f"{where}: label map is empty")
    if m.min() < 0:
        raise SegcpError(f"{where}: negative label {int(m.min())}")
    if n_labels is not None and m.max() >= n_labels:
        if n_labels == 2 and np.all(np.isin(m, (0, 255))):
            return (m == 255).astype(np.int64)
        raise SegcpError(f"{where}: label {int(m.max())} but the samples have only {n_labels} classes (labels must be < {n_labels})")
    return m


def masked_values(values: NDArray[Any], mask: NDArray[np.bool_]) -> NDArray[Any]:
    """``values[mask]`` for a boolean ``mask`` of the same shape: the same 1-D array, same order.

    For C-contiguous arrays (every 2D map segcp reads) it is taken through the mask's flat
    indices (``np.flatnonzero``), 1.4–2.5× faster than boolean indexing on a 256² map (the
    per-image cost of threshold calibration); other layouts use boolean indexing.
    """
    if values.flags.c_contiguous and mask.flags.c_contiguous and mask.dtype == bool and values.shape == mask.shape:
        return values.ravel().take(np.flatnonzero(mask.ravel()))
    return values[mask]


def binarize_mask(mask: NDArray[Any], label: int | None, where: str) -> NDArray[np.bool_]:
    """A boolean ground-truth mask from a binary mask or, with ``label``, a label map.

    Binary masks may be bool or hold only {0, 1} or {0, 255}. A mask with other values
    needs ``label`` (the structure is ``mask == label``).
    """
    m = np.asarray(mask)
    if m.size == 0:
        raise SegcpError(f"{where}: the mask is empty (shape {m.shape})")
    if m.dtype == bool:
        if label is not None and label not in (0, 1):
            return np.zeros(m.shape, dtype=bool)
        return m if label in (None, 1) else ~m
    if m.dtype.kind not in "fiu":
        raise SegcpError(f"{where}: mask must be numeric or boolean, got dtype {m.dtype}")
    if np.issubdtype(m.dtype, np.floating):
        if not np.all(np.isfinite(m)):
            raise SegcpError(f"{where}: mask contains NaN or inf")
        if not np.all(m == np.round(m)):
            raise SegcpError(f"{where}: mask has non-integer values; expected a binary mask or a label map")
    if label is not None:
        return m == label
    # min/max instead of a sort (the common cases are {0, 1} and {0, 255}); unsigned: one pass
    lo, hi = (0 if m.dtype.kind == "u" else m.min(initial=0)), m.max(initial=0)  # initial: an empty mask is binary
    if lo >= 0 and hi <= 1:
        return m.view(bool) if m.dtype.itemsize == 1 else m == 1  # {0, 1} bytes are bools: no pass, no copy
    if lo >= 0 and hi == 255 and not np.count_nonzero((m != 0) & (m != 255)):
        return m == 255
    values = np.unique(m)
    shown = ", ".join(str(v) for v in values[:8].tolist()) + (", ..." if values.size > 8 else "")
    raise SegcpError(f"{where}: mask is not binary (values {{{shown}}}); pass --label L to select one structure")


@dataclass
class Case:
    """One image's inputs to a set family, plus (for calibration/evaluation) its ground truth.

    Give the arrays a family reads (``segcp.methods``: ``threshold``/``morph``/``rwcp`` read
    ``probs`` (and ``image``); ``consign`` reads ``samples``; ``aps`` reads ``samples`` or
    ``class_probs``) and, to calibrate or evaluate, the matching truth (``mask`` for the binary
    families, ``label_map`` for the multi-class ones). S is the 2D (H, W) or 3D (D, H, W) grid.

    Attributes
    ----------
    id : str
        Identifier, used in messages and output file names.
    probs : ndarray, float in [0, 1], shape (*S), optional
        Foreground probability of the structure (floating arrays keep their precision;
        families compute in float64).
    mask : ndarray of bool, shape (*S), optional
        Binary ground truth of the structure.
    image : ndarray, optional
        The image itself, (*S) or (C, *S) or (*S, C), for image-aware families (RW-CP).
    spacing : tuple of float, optional
        Physical voxel size per axis of S (e.g. mm); None means 1 per axis.
    extras : dict
        Anything else a custom family needs.
    samples : ndarray, float in [0, 1], shape (N, L, *S), optional
        N sampled softmax maps over L classes (MC dropout, ensemble members); a (N, *S) array
        is read as binary foreground samples when the truth tells S (stacked as [1 − p, p]).
    class_probs : ndarray, float in [0, 1], shape (L, *S), optional
        The model's class probabilities (softmax).
    label_map : ndarray of int, shape (*S), optional
        Multi-class ground truth, labels in [0, L).
    where : str, optional
        How messages name this case (default ``"case <id>"``; readers pass the file).
    geometry : optional
        Where the case's grid lives (a :class:`segcp.io.readers.Geometry`: NIfTI affine and
        header), so that its sets are written on the same grid; set by the readers.
    """

    id: str
    probs: NDArray[Any] | None = None
    mask: NDArray[np.bool_] | None = None
    image: NDArray[Any] | None = None
    spacing: tuple[float, ...] | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    samples: NDArray[Any] | None = None
    class_probs: NDArray[Any] | None = None
    label_map: NDArray[Any] | None = None
    where: str | None = field(default=None, repr=False, compare=False)
    geometry: Any = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        where = self.where or f"case {self.id}"
        truth_shape = None if self.label_map is None else np.shape(self.label_map)
        shape: tuple[int, ...] | None = None
        if self.probs is not None:
            self.probs = check_probabilities(self.probs, where)
            if self.probs.ndim not in (2, 3):
                raise SegcpError(f"{where}: probability map must be 2D or 3D, got shape {self.probs.shape}")
            shape = self.probs.shape
        if self.samples is not None:
            self.samples = check_samples(self.samples, where, truth_shape or shape)
            shape = self._same(shape, self.samples.shape[2:], "samples", where)
        if self.class_probs is not None:
            sp = truth_shape or shape or np.shape(self.class_probs)[1:]
            self.class_probs = check_class_probs(self.class_probs, where, tuple(sp))
            shape = self._same(shape, self.class_probs.shape[1:], "class probabilities", where)
        if shape is None:
            raise SegcpError(f"{where}: no model output (give probs, samples or class_probs)")
        if self.mask is not None:
            m = np.asarray(self.mask)
            if m.shape != shape:
                raise SegcpError(f"{where}: mask shape {m.shape} does not match probability map shape {shape}")
            self.mask = m.astype(bool, copy=False)
        if self.label_map is not None:
            n_labels = self.n_labels
            self.label_map = check_label_map(self.label_map, where, n_labels)
            if self.label_map.shape != shape:
                raise SegcpError(f"{where}: label map shape {self.label_map.shape} does not match the model output's grid {shape}")
        if self.spacing is not None:
            sp = tuple(float(s) for s in self.spacing)
            if len(sp) != len(shape) or not all(np.isfinite(s) and s > 0 for s in sp):
                raise SegcpError(f"{where}: spacing {self.spacing} must give one positive size per axis of {shape}")
            self.spacing = sp

    @staticmethod
    def _same(shape: tuple[int, ...] | None, other: tuple[int, ...], what: str, where: str) -> tuple[int, ...]:
        if shape is not None and tuple(other) != tuple(shape):
            raise SegcpError(f"{where}: {what} of grid {tuple(other)} do not match the probability map's grid {tuple(shape)}")
        return tuple(other)

    # ------------------------------------------------------------------ views
    @property
    def shape(self) -> tuple[int, ...]:
        """The spatial grid S."""
        if self.probs is not None:
            return tuple(self.probs.shape)
        if self.samples is not None:
            return tuple(self.samples.shape[2:])
        assert self.class_probs is not None
        return tuple(self.class_probs.shape[1:])

    @property
    def n_labels(self) -> int | None:
        """L, the number of classes of the samples or class probabilities (None without them)."""
        if self.samples is not None:
            return int(self.samples.shape[1])
        if self.class_probs is not None:
            return int(self.class_probs.shape[0])
        return None

    @property
    def model_mask(self) -> NDArray[np.bool_]:
        """The model's own mask Ŷ = {prob ≥ 0.5}."""
        if self.probs is None:
            raise SegcpError(f"{self.where or 'case ' + self.id}: no foreground probability map (probs)")
        return self.probs >= 0.5

    def mean_class_probs(self) -> NDArray[np.float64]:
        """Class probabilities (L, *S): the mean of the samples when there are samples."""
        if self.samples is not None:
            return self.samples.mean(axis=0, dtype=np.float64)
        if self.class_probs is None:
            raise SegcpError(f"{self.where or 'case ' + self.id}: no class probabilities or samples")
        return self.class_probs


def one_ndim(dims: dict[int, tuple[int, str]]) -> int:
    """The one grid dimensionality of a calibration set, from ``dims`` = {ndim: (how many images, where the
    first was read)}: a 2-D slice among 3-D volumes is an error naming it."""
    if len(dims) > 1:
        (d, (_, where)), (big, (n, _)) = sorted(dims.items(), key=lambda kv: kv[1][0])[:2]
        raise SegcpError(
            f"{where}: a {d}-D image among {n} {big}-D ones; a calibration set holds images of one dimensionality "
            "(calibrate 2-D slices and 3-D volumes separately)"
        )
    return next(iter(dims))
