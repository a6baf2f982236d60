"""Metrics of prediction sets: overlap (FNR, coverage, stretch, Dice), surface
distances (HD95, ASSD), the diversity of sets of segmentations (Chao1, SEC, correlation)
and their aggregation over a data set.

numpy/scipy only. Masks are 2D ``(H, W)`` or 3D ``(D, H, W)`` arrays, ``bool`` or 0/1;
distances are in the physical units of ``spacing`` (one number per array axis).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike

from segcp.metrics.aggregate import aggregate, mean_se, mean_std
from segcp.metrics.diversity import chao1, draw_metrics, mean_abs_correlation, sampled_coverage
from segcp.metrics.overlap import as_mask, coverage, dice, fnr, stretch
from segcp.metrics.surface import assd, hd95, hd95_assd, surface, surface_distances

__all__ = [
    "METRICS",
    "aggregate",
    "assd",
    "chao1",
    "coverage",
    "dice",
    "draw_metrics",
    "evaluate_set",
    "fnr",
    "hd95",
    "hd95_assd",
    "mean_abs_correlation",
    "mean_se",
    "mean_std",
    "sampled_coverage",
    "stretch",
    "surface",
    "surface_distances",
]

#: Names of the per-image metrics of a prediction set (``evaluate_set`` adds ``set_size``).
METRICS = ("coverage", "fnr", "stretch", "dice", "hd95", "assd")


def evaluate_set(
    pred_set: ArrayLike, truth: ArrayLike, model_mask: ArrayLike | None = None, spacing: float | Sequence[float] | None = None
) -> dict[str, float]:
    """All per-image metrics of a prediction set against the ground truth.

    Parameters
    ----------
    pred_set : array_like of bool or {0, 1}, shape (H, W) or (D, H, W)
        The prediction set.
    truth : array_like of bool or {0, 1}, same shape
        The ground-truth foreground.
    model_mask : array_like of bool or {0, 1}, same shape, optional
        The model's own mask (probability >= 0.5), for the stretch.
    spacing : float or sequence of float, optional
        Voxel size per array axis in physical units; default 1.

    Returns
    -------
    dict of str to float
        Keys ``coverage, fnr, stretch, dice, hd95, assd, set_size`` (``METRICS`` then
        ``set_size``, the number of voxels in the set, as a float). ``stretch`` is NaN
        when `model_mask` is None or empty; ``dice``, ``hd95`` and ``assd`` compare the
        set with the truth (NaN distances when exactly one of them is empty).

    Examples
    --------
    >>> import numpy as np
    >>> truth = np.zeros((6, 6), bool); truth[2:4, 2:4] = True
    >>> pred_set = np.zeros((6, 6), bool); pred_set[1:5, 1:5] = True
    >>> r = evaluate_set(pred_set, truth, model_mask=truth)
    >>> r["coverage"], r["stretch"], r["dice"], round(r["hd95"], 4), r["set_size"]
    (1.0, 4.0, 0.4, 1.4142, 16.0)
    """
    s = as_mask(pred_set, "pred_set")
    t = as_mask(truth, "truth")
    f = fnr(s, t)
    h, a = hd95_assd(s, t, spacing)
    return {
        "coverage": 1.0 - f,
        "fnr": f,
        "stretch": float("nan") if model_mask is None else stretch(s, model_mask),
        "dice": dice(s, t),
        "hd95": h,
        "assd": a,
        "set_size": float(np.count_nonzero(s)),
    }
