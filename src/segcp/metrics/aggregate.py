"""Aggregate per-image metrics into a summary over a data set."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import numpy as np

__all__ = ["aggregate", "mean_se", "mean_std"]


def mean_std(values: Iterable[float | None], ddof: int = 1) -> tuple[float, float]:
    """Mean and standard deviation (``ddof``) of the finite values (None, NaN and ±inf left
    out); NaN when there are too few."""
    v = np.array([math.nan if x is None else x for x in values], dtype=float)
    v = v[np.isfinite(v)]
    return (float(v.mean()) if v.size else math.nan), (float(v.std(ddof=ddof)) if v.size > ddof else math.nan)


def mean_se(values: Iterable[float | None]) -> tuple[float, float]:
    """Mean of the finite values and its standard error (NaN with fewer than two)."""
    v = [x for x in values if x is not None and math.isfinite(x)]
    m, s = mean_std(v)
    return m, s / math.sqrt(len(v)) if len(v) > 1 else math.nan


def aggregate(per_image: Mapping[str, Mapping[str, float]]) -> dict:
    """Mean and spread of each metric over images, counting undefined values apart.

    Parameters
    ----------
    per_image : mapping of str to mapping of str to float
        ``{image_id: {metric_name: value}}``, e.g. the outputs of
        :func:`segcp.metrics.evaluate_set`. NaN (or inf) marks an undefined value
        (HD95 with one empty mask, stretch with an empty model mask); an image that
        lacks a metric counts as undefined for it.

    Returns
    -------
    dict
        ``{"mean": {metric: float}, "std": {metric: float}, "undefined": {metric: int},
        "n": int}``. Mean and (population, ``ddof=0``) standard deviation are over the
        images where the metric is defined (finite); they are NaN when it is defined on
        none. ``undefined`` counts the other images and ``n`` is the number of images.
        Metrics appear in the order they are first met.

    Examples
    --------
    >>> nan = float("nan")
    >>> summary = aggregate({"a": {"dice": 0.5, "hd95": 2.0}, "b": {"dice": 1.0, "hd95": nan}})
    >>> summary["mean"], summary["undefined"], summary["n"]
    ({'dice': 0.75, 'hd95': 2.0}, {'dice': 0, 'hd95': 1}, 2)
    """
    names = list(dict.fromkeys(k for metrics in per_image.values() for k in metrics))
    out: dict = {"mean": {}, "std": {}, "undefined": {}, "n": len(per_image)}
    for name in names:
        values = [float(m.get(name, np.nan)) for m in per_image.values()]
        out["mean"][name], out["std"][name] = mean_std(values, ddof=0)
        out["undefined"][name] = sum(not math.isfinite(v) for v in values)
    return out
