"""``band-risk``: the average form of the band, E[max(FNR(O), min(1, |I \\ Y| / |Y|))] ≤ α by exact CRC.

For the two-sided sets of a signed score t (I_λ = {t < −λ}, O_λ = {t ≤ λ}, λ ≥ 0):

    L(λ) = max( |Y \\ O_λ| / |Y| ,  min(1, |I_λ \\ Y| / |Y|) ),

the fraction of the truth the outer set misses, and the inner set's false positives measured in
units of the truth (capped at 1). Both terms are non-increasing in λ (O grows, I shrinks) and
bounded by 1, so their maximum is: exact conformal risk control gives E[L(λ̂)] ≤ α. An empty
truth has nothing to miss, and its inner set's false positives count as 1 if there are any
(L = 1{I_λ ≠ ∅}); it still counts in n (the project's empty-truth rule).

The step function is exact: the FNR term drops at the distinct t of the truth voxels, the inner
term at the distinct −t of the voxels outside the truth; only the |Y| + 1 largest of the latter
can move the capped term (below them it is 1), so they are found by a partial sort. Levels are
the exact ratios max(fn / m, min(1, fp / m)) of :meth:`BandRiskLoss.set_loss`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from segcp.calibration import LossCurves
from segcp.calibration.ltt import StepLosses
from segcp.losses.base import Loss, band_inputs, register, signed_inputs

__all__ = ["BandRiskLoss", "band_risk_level"]


def band_risk_level(fn: ArrayLike, fp: ArrayLike, m: int) -> NDArray[np.float64]:
    """The loss from the counts: ``fn`` truth voxels outside O, ``fp`` voxels of I outside the
    truth, ``m`` = |Y| (integer arrays of one shape → float64 array of that shape)."""
    fn_a, fp_a = np.asarray(fn), np.asarray(fp)
    if m == 0:
        return (fp_a > 0).astype(np.float64)
    return np.maximum(fn_a / m, np.minimum(1.0, fp_a / m))


def _above(sorted_values: NDArray[np.float64], lams: NDArray[np.float64]) -> NDArray[np.int64]:
    """How many of ``sorted_values`` (ascending) are > each λ."""
    return sorted_values.size - np.searchsorted(sorted_values, lams, side="right")


@register
@dataclass(frozen=True, repr=False)
class BandRiskLoss(Loss):
    """The larger of the outer set's FNR and the inner set's false positives per truth voxel
    (capped at 1); reads the signed score t (no parameters).

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([[-0.4, -0.2], [0.1, -0.3]]); y = np.array([[True, True], [True, False]])
    >>> loss = BandRiskLoss()
    >>> loss.candidates(t, y).tolist()   # truth voxels enter O at -0.4, -0.2, (0.1); I drops its false voxel at 0.3
    [-0.4, -0.2, 0.3]
    >>> loss.values(t, y, [0.0, 0.1, 0.3]).tolist()
    [0.3333333333333333, 0.3333333333333333, 0.0]
    """

    name: ClassVar[str] = "band-risk"
    summary: ClassVar[str] = "max(FNR of the outer set, the inner set's false positives / |truth|, capped at 1)"
    risk: ClassVar[str] = "max(FNR(O), |I \\ Y| / |Y|)"
    monotone: ClassVar[bool] = True
    score: ClassVar[str] = "signed"

    def set_loss(self, pred_set: Any, truth: ArrayLike, spacing: float | Sequence[float] | None = None) -> float:
        """``pred_set`` is the pair (inner, outer) of masks."""
        inner, outer, y = band_inputs(pred_set, truth)
        m = int(np.count_nonzero(y))
        return float(band_risk_level(np.count_nonzero(y & ~outer), np.count_nonzero(inner & ~y), m))

    def steps(self, scores: ArrayLike, truth: ArrayLike, spacing: float | Sequence[float] | None = None) -> StepLosses:
        """Exact levels at the union of both terms' breakpoints (changes only)."""
        t, y = signed_inputs(scores, truth, self.name)
        t, y = t.ravel(), y.ravel()
        ty = np.sort(t[y])  # fn(λ) = #{t > λ} over Y
        m = ty.size
        u = -t[~y]  # fp(λ) = #{u > λ} outside Y
        keep = m + 1  # below the (m+1)-th largest u, fp > m and the capped term is 1 (m = 0: any fp is 1)
        if u.size > keep:
            u = np.partition(u, u.size - keep)[u.size - keep :]
        u = np.sort(u)
        cand = np.unique(np.concatenate([ty, u]))
        cand = cand[np.isfinite(cand)]
        probe = np.concatenate([[-np.inf], cand])
        levels = band_risk_level(_above(ty, probe), _above(u, probe), m)
        change = levels[1:] != levels[:-1]
        return StepLosses.single(cand[change], np.concatenate([levels[:1], levels[1:][change]]))

    def curve(self, scores: ArrayLike, truth: ArrayLike, spacing: float | Sequence[float] | None = None) -> LossCurves:
        s = self.steps(scores, truth)
        b, v = s.breakpoints[0], s.levels[0]
        return LossCurves.single(b, v[:-1] - v[1:], float(v[0]))
