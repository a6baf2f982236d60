"""Voxel-counting metrics of a prediction set: FNR, coverage, stretch, Dice.

All functions take 2D ``(H, W)`` or 3D ``(D, H, W)`` masks, ``bool`` or 0/1 of any
numeric dtype; the two masks of a call must have the same shape. They return a
Python ``float``.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from segcp.errors import SegcpError

__all__ = ["coverage", "dice", "fnr", "stretch"]


def as_mask(x: ArrayLike, name: str) -> np.ndarray:
    """Return ``x`` as a 2D or 3D ``bool`` array, or raise :class:`SegcpError`."""
    arr = np.asarray(x)
    if arr.ndim not in (2, 3):
        raise SegcpError(f"{name} must be a 2D or 3D mask, got an array with {arr.ndim} dimension(s)")
    if arr.dtype == bool:
        return arr
    if not (np.issubdtype(arr.dtype, np.number) and np.isin(arr, (0, 1)).all()):
        raise SegcpError(f"{name} must be a binary mask (bool or 0/1 values)")
    return arr.astype(bool)


def as_mask_pair(a: ArrayLike, b: ArrayLike, names: tuple[str, str]) -> tuple[np.ndarray, np.ndarray]:
    """Validate two masks of the same shape; return them as ``bool`` arrays."""
    a_arr, b_arr = as_mask(a, names[0]), as_mask(b, names[1])
    if a_arr.shape != b_arr.shape:
        raise SegcpError(f"{names[0]} and {names[1]} must have the same shape, got {a_arr.shape} and {b_arr.shape}")
    return a_arr, b_arr


def fnr(pred_set: ArrayLike, truth: ArrayLike) -> float:
    """False-negative rate of a prediction set: the fraction of the truth it misses.

    Parameters
    ----------
    pred_set : array_like of bool or {0, 1}, shape (H, W) or (D, H, W)
        The prediction set (voxels inside the set are True).
    truth : array_like of bool or {0, 1}, same shape as `pred_set`
        The ground-truth foreground.

    Returns
    -------
    float
        ``|truth \\ pred_set| / |truth|`` in [0, 1]; 0.0 when `truth` is empty (an image
        with no foreground has nothing to miss).

    Raises
    ------
    SegcpError
        If the masks are not 2D/3D binary arrays of the same shape.

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.array([[1, 1, 1, 1], [0, 0, 0, 0]])
    >>> pred_set = np.array([[1, 1, 1, 0], [1, 0, 0, 0]])
    >>> fnr(pred_set, truth)
    0.25
    >>> fnr(pred_set, np.zeros((2, 4)))
    0.0
    """
    s, t = as_mask_pair(pred_set, truth, ("pred_set", "truth"))
    n_truth = np.count_nonzero(t)
    if n_truth == 0:
        return 0.0
    return float(np.count_nonzero(t & ~s) / n_truth)


def coverage(pred_set: ArrayLike, truth: ArrayLike) -> float:
    """Fraction of the truth inside the prediction set, ``1 - fnr(pred_set, truth)``.

    Same arguments as :func:`fnr`; returns ``|truth ∩ pred_set| / |truth|`` in [0, 1], 1.0
    when `truth` is empty.
    """
    return 1.0 - fnr(pred_set, truth)


def stretch(pred_set: ArrayLike, model_mask: ArrayLike) -> float:
    """Size of the prediction set relative to the model's own mask, ``|set| / |mask|``.

    Parameters
    ----------
    pred_set : array_like of bool or {0, 1}, shape (H, W) or (D, H, W)
        The prediction set.
    model_mask : array_like of bool or {0, 1}, same shape as `pred_set`
        The model's point prediction (probability >= 0.5).

    Returns
    -------
    float
        ``|pred_set| / |model_mask|`` (>= 0, 1 means no enlargement); NaN when
        `model_mask` is empty (undefined).

    Examples
    --------
    >>> import numpy as np
    >>> model_mask = np.zeros((4, 4), bool); model_mask[1:3, 1:3] = True
    >>> pred_set = np.zeros((4, 4), bool); pred_set[1:3, 0:3] = True
    >>> stretch(pred_set, model_mask)
    1.5
    """
    s, m = as_mask_pair(pred_set, model_mask, ("pred_set", "model_mask"))
    n_mask = np.count_nonzero(m)
    if n_mask == 0:
        return float("nan")
    return float(np.count_nonzero(s) / n_mask)


def dice(a: ArrayLike, b: ArrayLike) -> float:
    """Dice coefficient ``2 |a ∩ b| / (|a| + |b|)`` of two masks.

    Parameters
    ----------
    a, b : array_like of bool or {0, 1}, shape (H, W) or (D, H, W)
        The two masks (same shape).

    Returns
    -------
    float
        Dice in [0, 1]; 1.0 when both masks are empty.

    Examples
    --------
    >>> import numpy as np
    >>> dice(np.array([[1, 1, 0, 0]]), np.array([[0, 1, 1, 0]]))
    0.5
    >>> dice(np.zeros((2, 2)), np.zeros((2, 2)))
    1.0
    """
    a_m, b_m = as_mask_pair(a, b, ("a", "b"))
    total = np.count_nonzero(a_m) + np.count_nonzero(b_m)
    if total == 0:
        return 1.0
    return float(2 * np.count_nonzero(a_m & b_m) / total)
