"""Aggregate per-image metrics into a summary over a data set."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = ["aggregate"]


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
        values = np.array([float(m.get(name, np.nan)) for m in per_image.values()])
        defined = values[np.isfinite(values)]
        out["mean"][name] = float(defined.mean()) if defined.size else float("nan")
        out["std"][name] = float(defined.std()) if defined.size else float("nan")
        out["undefined"][name] = int(values.size - defined.size)
    return out
