"""``lesion-fnr``: the fraction of the truth's lesions (connected components) the set misses.

For multi-focal disease (metastases, MS lesions, nodules) the question is "was any lesion
missed?", not the fraction of voxels. The truth's connected components Y_1..Y_K
(:func:`scipy.ndimage.label` with the declared ``connectivity``; components smaller than
``min_size`` are not lesions) are each *reached* by a set C when C holds at least a fraction
``min_overlap`` of the component's voxels (⌈ω·|Y_k|⌉ of them, one at least; ω = 0: any voxel):

    L(C) = #{k : Y_k not reached by C} / K,    0 when K = 0 (no lesion, nothing to miss).

On a nested family C_λ = {r ≤ λ} component k is reached from the λ at which its ⌈ω·|Y_k|⌉-th
smallest score enters (its ``min_overlap`` coverage score) on, for every larger λ: L is
non-increasing, so exact conformal risk control gives E[lesion FNR] ≤ α. The curve drops by 1/K
at each component's breakpoint (+inf scores: a component never reached keeps its 1/K). 2D and 3D.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from segcp.calibration import LossCurves, coverage_quantile_score
from segcp.calibration.ltt import StepLosses
from segcp.errors import SegcpError
from segcp.losses.base import Loss, covers, pixel_inputs, register, set_inputs, voxel_volume
from segcp.methods.base import param

__all__ = ["LesionFNRLoss"]


@register
@dataclass(frozen=True, repr=False)
class LesionFNRLoss(Loss):
    """The fraction of the truth's connected components that the set does not reach.

    Examples
    --------
    >>> import numpy as np
    >>> y = np.zeros((5, 7), bool); y[1:3, 1:3] = True; y[2, 5] = True     # two lesions
    >>> r = np.full((5, 7), 0.9); r[1:3, 1:3] = [[0.2, 0.3], [0.6, 0.8]]; r[2, 5] = 0.5
    >>> loss = LesionFNRLoss()
    >>> loss.candidates(r, y).tolist(), loss.values(r, y, [0.1, 0.2, 0.5]).tolist()
    ([0.2, 0.5], [1.0, 0.5, 0.0])
    >>> LesionFNRLoss(min_overlap=0.5).candidates(r, y).tolist()  # 2 of the 4 voxels of the first
    [0.3, 0.5]
    """

    name: ClassVar[str] = "lesion-fnr"
    summary: ClassVar[str] = "the fraction of the truth's connected components (lesions) the set does not reach"
    risk: ClassVar[str] = "fraction of lesions missed"
    monotone: ClassVar[bool] = True

    connectivity: int = param(
        1,
        "voxels of one lesion touch by a face (1), also by an edge (2), also by a corner (3, 3D only): 4/8-connectivity in 2D, 6/18/26 in 3D",
        kind="int",
        low=1,
        high=3,
    )
    min_overlap: float = param(
        0.0, "a lesion is reached when the set holds at least this fraction of its voxels (0: one voxel is enough)", low=0.0, high=1.0
    )
    min_size: float = param(0.0, "truth components smaller than this are not lesions (mm^3, mm^2 in 2D, with a spacing; voxels without)", low=0.0)

    def lesions(self, truth: NDArray[np.bool_], spacing: float | Sequence[float] | None = None) -> tuple[NDArray[np.int32], int]:
        """The lesions of a truth mask: a label array (0 background, 1..K) and K.

        ``truth`` bool (2D or 3D); ``spacing`` voxel size per axis in mm (for ``min_size``).
        """
        if self.connectivity > truth.ndim:
            raise SegcpError(
                f"{self.name}: connectivity {self.connectivity} needs a mask with at least {self.connectivity} dimensions, got {truth.ndim}"
            )
        from scipy import ndimage  # here: listing the losses (calibrate --help) stays free of scipy

        structure = ndimage.generate_binary_structure(truth.ndim, self.connectivity)
        labels, k = ndimage.label(truth, structure=structure)
        if self.min_size > 0 and k:
            sizes = np.bincount(labels.ravel(), minlength=k + 1)[1:] * voxel_volume(spacing, truth.ndim)
            keep = np.concatenate([[0], np.cumsum(sizes >= self.min_size) * (sizes >= self.min_size)])
            labels, k = keep[labels].astype(np.int32), int((sizes >= self.min_size).sum())
        return labels.astype(np.int32, copy=False), int(k)

    def _reach(self, scores: ArrayLike, truth: ArrayLike, spacing: float | Sequence[float] | None) -> tuple[NDArray[np.float64], int]:
        """Each lesion's breakpoint (the smallest λ reaching it; +inf: never) and K."""
        r, y = pixel_inputs(scores, truth, self.name)
        labels, k = self.lesions(y, spacing)
        if k == 0:
            return np.zeros(0), 0
        from scipy import ndimage

        index = np.arange(1, k + 1)
        if self.min_overlap == 0.0:
            b = ndimage.minimum(r, labels, index)
        else:
            b = ndimage.labeled_comprehension(r, labels, index, lambda v: coverage_quantile_score(v, self.min_overlap), np.float64, np.inf)
        return np.asarray(b, dtype=np.float64).reshape(k), k

    def curve(self, scores: ArrayLike, truth: ArrayLike, spacing: float | Sequence[float] | None = None) -> LossCurves:
        b, k = self._reach(scores, truth, spacing)
        if k == 0:
            return LossCurves.single([], [], 0.0)
        b = b[np.isfinite(b)]
        return LossCurves.single(b, np.full(b.size, 1.0 / k), 1.0)

    def steps(self, scores: ArrayLike, truth: ArrayLike, spacing: float | Sequence[float] | None = None) -> StepLosses:
        """The same function with exact levels (K − reached) / K, tied breakpoints merged."""
        b, k = self._reach(scores, truth, spacing)
        if k == 0:
            return StepLosses.single([], [0.0])
        at, counts = np.unique(b[np.isfinite(b)], return_counts=True)
        return StepLosses.single(at, np.concatenate([[k], k - np.cumsum(counts)]) / k)

    def set_loss(self, pred_set: ArrayLike, truth: ArrayLike, spacing: float | Sequence[float] | None = None) -> float:
        s, y = set_inputs(pred_set, truth)
        labels, k = self.lesions(y, spacing)
        if k == 0:
            return 0.0
        missed = sum(not covers(s[labels == j], self.min_overlap) for j in range(1, k + 1))
        return missed / k
