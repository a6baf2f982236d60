"""Standard CRC: threshold the model's raw probabilities.

C_λ = {p : prob_p ≥ 1 − λ}, written as the sublevel set of r = 1 − prob (in float64) so that a pixel
enters the set exactly when λ ≥ r_p (the same float64 expression is used at calibration and
prediction time, so λ̂ reproduces the calibrated sets bit for bit).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from segcp.cases import Case
from segcp.methods.base import MaskFamily, register

__all__ = ["ThresholdMethod"]


@register
@dataclass(repr=False, eq=False)
class ThresholdMethod(MaskFamily):
    """Standard conformal risk control on raw probabilities (λ ∈ [0, 1]).

    Examples
    --------
    >>> import numpy as np
    >>> from segcp.methods import Case, ThresholdMethod
    >>> case = Case("a", probs=np.array([[0.9, 0.6], [0.3, 0.0]]))
    >>> ThresholdMethod().predict(case, 0.5)
    array([[ True,  True],
           [False, False]])
    """

    name: ClassVar[str] = "threshold"
    summary: ClassVar[str] = "Standard CRC: threshold the raw probabilities, C = {prob >= 1 - lambda}"
    lambda_min: ClassVar[float] = 0.0
    lambda_max: ClassVar[float] = 1.0

    def score_map(self, case: Case) -> NDArray[np.float64]:
        return 1.0 - case.probs.astype(np.float64, copy=False)

    def truth_scores(self, case: Case) -> NDArray[np.float64]:
        """r at the truth pixels only (the same float64 expression as :meth:`score_map`)."""
        return 1.0 - case.probs[self.truth_of(case)].astype(np.float64, copy=False)
