"""Standard CRC: threshold the model's raw probabilities.

C_λ = {p : prob_p ≥ 1 − λ}, written as the sublevel set of r = 1 − prob (in float64) so that a pixel
enters the set exactly when λ ≥ r_p (the same float64 expression is used at calibration and
prediction time, so λ̂ reproduces the calibrated sets bit for bit). With ``normalize`` the
probabilities are first rescaled by the image's own confidence (``normalize=max``: r =
1 − p / max p; :mod:`segcp.methods.normalize`), still a function of the image's own
probabilities, so the guarantee is unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from segcp.cases import Case, masked_values
from segcp.methods.base import register
from segcp.methods.normalize import ProbabilityFamily

__all__ = ["ThresholdMethod"]


@register
@dataclass(repr=False, eq=False)
class ThresholdMethod(ProbabilityFamily):
    """Standard conformal risk control on raw probabilities (λ ∈ [0, 1]).

    Parameters
    ----------
    normalize, norm_floor, norm_quantile, norm_level
        Image-adaptive rescaling of the probabilities before thresholding
        (:func:`segcp.methods.normalize.normalize_map`; default ``none``: raw probabilities).

    Examples
    --------
    >>> import numpy as np
    >>> from segcp.methods import Case, ThresholdMethod
    >>> case = Case("a", probs=np.array([[0.9, 0.6], [0.3, 0.0]]))
    >>> ThresholdMethod().predict(case, 0.5)
    array([[ True,  True],
           [False, False]])
    >>> weak = Case("b", probs=np.array([[0.2, 0.1], [0.05, 0.0]]))   # the model sees it at 20 %
    >>> ThresholdMethod(normalize="max").predict(weak, 0.5)            # p / max p >= 0.5
    array([[ True,  True],
           [False, False]])
    """

    name: ClassVar[str] = "threshold"
    summary: ClassVar[str] = "Standard CRC: threshold the raw probabilities, C = {prob >= 1 - lambda} (normalize: per-image rescaling)"

    def foreground(self, case: Case) -> NDArray[np.float64]:
        assert case.probs is not None  # check_case ran
        return case.probs.astype(np.float64, copy=False)

    def truth_scores(self, case: Case) -> NDArray[np.float64]:
        """r at the truth pixels only (the same float64 expression as :meth:`score_map`)."""
        if self.normalize != "none":  # the rescaling needs the whole map
            return super().truth_scores(case)
        assert case.probs is not None  # check_case ran
        return np.subtract(1.0, masked_values(case.probs, self.truth_of(case)), dtype=np.float64)
