"""``fnr``: the false-negative rate of the set, E[FNR] ≤ α by exact conformal risk control.

L(λ) = |Y \\ C_λ| / |Y| (0 for an empty truth: nothing to miss, and the image still counts in n).
Non-increasing in λ on any nested family; the curve drops by 1/|Y| at the score of each truth
voxel (ties merged), exactly :func:`segcp.calibration.fnr_curve` of the truth's scores — the
curve every pixel-set family builds today (bit for bit). :meth:`FNRLoss.steps` gives the same
function with exact levels (|Y| − covered) / |Y| (the curve's are 1 − Σ drops, within 1e-15).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike

from segcp.calibration import LossCurves, fnr_curve
from segcp.calibration.ltt import StepLosses
from segcp.cases import masked_values
from segcp.losses.base import Loss, pixel_inputs, register

__all__ = ["FNRLoss"]


@register
@dataclass(frozen=True, repr=False)
class FNRLoss(Loss):
    """The fraction of the truth outside the set (no parameters).

    Examples
    --------
    >>> import numpy as np
    >>> r = np.array([[0.1, 0.4], [0.7, 0.9]]); y = np.array([[True, True], [False, True]])
    >>> FNRLoss().values(r, y, [0.0, 0.4, 0.9]).tolist()   # 3 truth pixels enter at 0.1, 0.4, 0.9
    [1.0, 0.3333333333333333, 0.0]
    """

    name: ClassVar[str] = "fnr"
    summary: ClassVar[str] = "false-negative rate: the fraction of the truth outside the set"
    risk: ClassVar[str] = "FNR"
    monotone: ClassVar[bool] = True

    def set_loss(self, pred_set: ArrayLike, truth: ArrayLike, spacing: float | Sequence[float] | None = None) -> float:
        from segcp.metrics.overlap import fnr  # here: segcp.metrics imports scipy (start-up)

        return fnr(pred_set, truth)

    def curve(self, scores: ArrayLike, truth: ArrayLike, spacing: float | Sequence[float] | None = None) -> LossCurves:
        r, y = pixel_inputs(scores, truth, self.name)
        return fnr_curve(masked_values(r, y))

    def steps(self, scores: ArrayLike, truth: ArrayLike, spacing: float | Sequence[float] | None = None) -> StepLosses:
        r, y = pixel_inputs(scores, truth, self.name)
        t = masked_values(r, y)
        m = t.size
        if m == 0:
            return StepLosses.single([], [0.0])
        at, counts = np.unique(t[t < np.inf], return_counts=True)
        return StepLosses.single(at, np.concatenate([[m], m - np.cumsum(counts)]) / m)
