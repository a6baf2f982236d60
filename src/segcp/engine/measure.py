"""The metrics of one image's nested sets C_λ = {r ≤ λ} at many λ, equal to :func:`segcp.metrics.evaluate_set`.

A benchmark measures each test image at one λ̂ per (split, α) — about a hundred λ per image
for 20 splits and a handful of α. :class:`MaskEvaluator` does the work that does not depend
on λ once per image: the sorted scores (so |C_λ| and |C_λ ∩ Y| are two binary searches: the
coverage, FNR, stretch and Dice of any λ), and the distance map of the truth's surface (so
the set → truth surface distances are a lookup). Each λ then costs one erosion on the bounding box of C_λ ∪ Y
and a nearest-neighbour query of the truth's surface voxels among the set's (a k-d tree),
instead of two erosions and two distance transforms. The values are those of ``evaluate_set(scores <= λ, truth, model_mask, spacing)``
(the same integer counts; the same distances, tested).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from scipy.spatial import cKDTree

from segcp.metrics import METRICS
from segcp.metrics.surface import _spacing, _surface

__all__ = ["OVERLAP", "MaskEvaluator"]

#: The metrics that only count voxels (cheap at any λ); the others are surface distances.
OVERLAP = ("coverage", "fnr", "stretch", "dice")


class MaskEvaluator:
    """Metrics of the sets {scores ≤ λ} of one image (see the module docstring)."""

    def __init__(
        self,
        scores: NDArray[np.floating],
        truth: NDArray[np.bool_],
        model_mask: NDArray[np.bool_] | None,
        spacing: float | Sequence[float] | None = None,
    ) -> None:
        self.scores = np.asarray(scores, dtype=np.float64)
        self.truth = np.asarray(truth, dtype=bool)
        self.sampling = _spacing(spacing, self.truth.ndim)
        self.sorted_all = np.sort(self.scores, axis=None)
        self.sorted_truth = np.sort(self.scores[self.truth])
        self.n_truth = int(self.sorted_truth.size)
        self.n_model = None if model_mask is None else int(np.count_nonzero(model_mask))
        self._truth_edt: NDArray[np.float64] | None = None
        self._truth_points: NDArray[np.float64] | None = None

    def sizes(self, lam: float) -> tuple[int, int]:
        """(|C_λ|, |C_λ ∩ Y|)."""
        return int(np.searchsorted(self.sorted_all, lam, side="right")), int(np.searchsorted(self.sorted_truth, lam, side="right"))

    def overlap(self, lam: float) -> dict[str, float]:
        """coverage, FNR, stretch, Dice and set size of C_λ (voxel counts only)."""
        size, inter = self.sizes(lam)
        f = 0.0 if self.n_truth == 0 else float((self.n_truth - inter) / self.n_truth)
        total = size + self.n_truth
        return {
            "coverage": 1.0 - f,
            "fnr": f,
            "stretch": float("nan") if not self.n_model else float(size / self.n_model),
            "dice": 1.0 if total == 0 else float(2 * inter / total),
            "set_size": float(size),
        }

    def surface(self, lam: float) -> tuple[float, float]:
        """(HD95, ASSD) of C_λ against the truth (0 when both are empty, NaN when one is)."""
        s = self.scores <= lam
        has_s, has_t = bool(s.any()), self.n_truth > 0
        if not (has_s and has_t):
            return (0.0, 0.0) if not (has_s or has_t) else (float("nan"), float("nan"))
        if self._truth_edt is None:
            surf = _surface(self.truth)
            self._truth_edt = ndimage.distance_transform_edt(~surf, sampling=self.sampling)
            self._truth_points = np.argwhere(surf) * np.asarray(self.sampling)
        idx = np.nonzero(s | self.truth)
        box = tuple(slice(int(i.min()), int(i.max()) + 1) for i in idx)
        ss = _surface(s[box])
        d_set = self._truth_edt[box][ss]  # set surface -> truth surface: a lookup
        # truth surface -> set surface: nearest set-surface voxel (exact Euclidean nearest
        # neighbour in physical units), cheaper than a distance transform of the whole box
        pts = (np.argwhere(ss) + np.array([b.start for b in box])) * np.asarray(self.sampling)
        d_truth = cKDTree(pts).query(self._truth_points, k=1)[0]
        hd = max(np.percentile(d_set, 95), np.percentile(d_truth, 95))
        return float(hd), float(np.concatenate([d_set, d_truth]).mean())

    def evaluate(self, lam: float, surface: bool = True) -> dict[str, float]:
        """Every metric of ``evaluate_set`` at λ (``surface=False``: HD95 and ASSD left out)."""
        out = self.overlap(lam)
        if surface:
            out["hd95"], out["assd"] = self.surface(lam)
        return {k: out[k] for k in (*METRICS, "set_size") if k in out}
