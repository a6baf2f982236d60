"""Coverage, FNR and stretch of prediction sets as a MONAI ``CumulativeIterationMetric``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from monai.metrics.utils import do_metric_reduction
from monai.utils import MetricReduction

from segcp.errors import SegcpError
from segcp.metrics import coverage, fnr, stretch
from segcp.monai.cases import Target, to_numpy
from segcp.record import Calibration, read_calibration

__all__ = ["SET_METRICS", "ConformalSetMetric"]

#: The metrics of :class:`ConformalSetMetric` and what each compares the sets with (``y``).
SET_METRICS = {"coverage": "truth", "fnr": "truth", "stretch": "probabilities"}
_FUNCTIONS = {"coverage": coverage, "fnr": fnr, "stretch": stretch}


class ConformalSetMetric(CumulativeIterationMetric):
    """A per-image metric of the sets of :class:`~segcp.monai.ConformalSetsd`, in MONAI's metric interface.

    ``y_pred``: the sets, (B, K, *S) batch-first or a list of (K, *S) items, one channel per structure
    (``labels[k]`` is structure k's label value). ``y`` depends on the metric:

    - ``coverage`` = |C ∩ Y| / |Y| (1 when Y is empty), ``fnr`` = 1 − coverage (0 when Y is empty): the
      label map (B, 1, *S), Y_k = ``y == labels[k]`` (``labels`` None: a binary mask);
    - ``stretch`` = |C| / |Ŷ|, Ŷ_k = {p_{labels[k]} ≥ 0.5} the model's own mask (NaN when Ŷ is empty):
      the probabilities (B, C, *S) (``labels`` None: the one foreground channel).

    The per-image values are :mod:`segcp.metrics`' (those of ``segcp evaluate``), one per image and
    structure, (B, K) float64; :meth:`aggregate` reduces them with MONAI's ``do_metric_reduction``
    (NaN values left out: ``mean`` is over the images where the metric is defined, as segcp's means).
    Wrap it in ``monai.handlers.IgniteMetricHandler(metric_fn=...)`` to report it in
    ``evaluator.state.metrics``.
    """

    def __init__(
        self,
        metric_name: str = "coverage",
        labels: Sequence[int] | None = None,
        reduction: MetricReduction | str = MetricReduction.MEAN,
        get_not_nans: bool = False,
    ) -> None:
        super().__init__()
        if metric_name not in SET_METRICS:
            raise SegcpError(f"metric_name must be one of {', '.join(SET_METRICS)}, got {metric_name!r}")
        self.metric_name = metric_name
        self.labels = None if labels is None else [int(v) for v in labels]
        self.reduction = reduction
        self.get_not_nans = get_not_nans

    @classmethod
    def from_calibration(cls, calib: str | Calibration, metric_name: str = "coverage", **kwargs: Any) -> ConformalSetMetric:
        """The metric of the sets of a calib.json (its structures' labels, in its order)."""
        cal = calib if isinstance(calib, Calibration) else read_calibration(calib)
        return cls(metric_name, Target.of(cal).labels, **kwargs)

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None, **kwargs: Any) -> torch.Tensor:
        if y is None:
            raise SegcpError(f"{self.metric_name}: give y ({SET_METRICS[self.metric_name]})")
        sets, ref = to_numpy(y_pred).astype(bool), to_numpy(y)
        if sets.ndim not in (4, 5) or ref.ndim != sets.ndim or ref.shape[0] != sets.shape[0] or ref.shape[2:] != sets.shape[2:]:
            raise SegcpError(f"{self.metric_name}: sets of shape {sets.shape} and y of shape {ref.shape} are not (B, K, *S) and (B, *, *S)")
        channels = self.labels if self.labels is not None else [0] * sets.shape[1]
        if len(channels) != sets.shape[1]:
            raise SegcpError(f"{self.metric_name}: {sets.shape[1]} set channels but {len(channels)} labels")
        fn = _FUNCTIONS[self.metric_name]
        out = np.empty(sets.shape[:2], np.float64)
        for b in range(sets.shape[0]):
            for k, v in enumerate(channels):
                if SET_METRICS[self.metric_name] == "truth":
                    other = ref[b, 0] == v if self.labels is not None else ref[b, 0].astype(bool)
                else:
                    other = ref[b, v] >= 0.5
                out[b, k] = fn(sets[b, k], other)
        return torch.as_tensor(out)

    def aggregate(self, reduction: MetricReduction | str | None = None) -> Any:
        """The reduced metric (MONAI's reductions; NaN values left out), and the counts of values that
        were not NaN when ``get_not_nans``."""
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor):
            raise SegcpError(f"{self.metric_name}: no value to aggregate (call the metric on a batch first)")
        f, not_nans = do_metric_reduction(data, reduction or self.reduction)
        return (f, not_nans) if self.get_not_nans else f
