"""``quantile``: P(coverage ≥ τ) ≥ 1 − α, the conformal quantile (a 0/1 loss).

L(λ) = 1{|C_λ ∩ Y| / |Y| < τ}: a single step from 1 to 0 at the case's score, the smallest λ
covering a fraction τ of the truth (:func:`segcp.calibration.coverage_quantile_score`; −∞ for an
empty truth, which any set covers). Exact CRC on these 0/1 curves is the conformal quantile of
the scores (Consema's guarantee).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from numpy.typing import ArrayLike

from segcp.calibration import LossCurves, coverage_quantile_score, zero_one_curve
from segcp.cases import masked_values
from segcp.losses.base import Loss, covers, pixel_inputs, register, set_inputs
from segcp.methods.base import param

__all__ = ["QuantileLoss"]


@register
@dataclass(frozen=True, repr=False)
class QuantileLoss(Loss):
    """1 when the set covers less than a fraction τ of the truth, else 0.

    Examples
    --------
    >>> import numpy as np
    >>> r = np.array([0.1, 0.4, 0.7, 0.9]); y = np.array([True, True, False, True])
    >>> QuantileLoss(tau=0.6).values(r.reshape(2, 2), y.reshape(2, 2), [0.1, 0.4]).tolist()  # 2 of 3 needed
    [1.0, 0.0]
    """

    name: ClassVar[str] = "quantile"
    summary: ClassVar[str] = "0/1: the set covers less than a fraction tau of the truth (conformal quantile)"
    risk: ClassVar[str] = "1{{coverage < {tau:g}}}"
    monotone: ClassVar[bool] = True
    binary: ClassVar[bool] = True

    tau: float = param(1.0, "coverage level: the loss is 1 when the set holds less than this fraction of the truth", low=0.0, high=1.0, low_open=True)

    def statement(self, alpha: float, delta: float | None = None) -> str:
        if delta is None:
            return f"P(coverage >= {self.tau:g}) >= {1 - alpha:g} (conformal quantile, marginal over exchangeable images)"
        return super().statement(alpha, delta)

    def set_loss(self, pred_set: ArrayLike, truth: ArrayLike, spacing: float | Sequence[float] | None = None) -> float:
        s, y = set_inputs(pred_set, truth)
        return 0.0 if covers(s[y], self.tau) else 1.0

    def curve(self, scores: ArrayLike, truth: ArrayLike, spacing: float | Sequence[float] | None = None) -> LossCurves:
        r, y = pixel_inputs(scores, truth, self.name)
        return zero_one_curve(coverage_quantile_score(masked_values(r, y), self.tau))
