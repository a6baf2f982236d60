"""Every per-split quantity, defined once; :class:`MaskEvaluator` gives ``evaluate_set(scores <= λ, …)`` at many
λ (the same counts, distances to 1e-12), doing once what does not depend on λ."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage
from scipy.spatial import cKDTree

from segcp.metrics import METRICS, mean_std
from segcp.metrics.surface import _spacing, _surface

__all__ = [
    "EXTRAS",
    "LOSS_EXTRAS",
    "OVERLAP",
    "MaskEvaluator",
    "criterion_value",
    "exceedance",
    "exceeds",
    "loss_record",
    "nanmean",
    "split_record",
    "split_risk",
]

#: The metrics that only count voxels (cheap at any λ); the others are surface distances.
OVERLAP = ("coverage", "fnr", "stretch", "dice")

#: What a split records besides the metrics' means: on images with the structure, the fraction
#: whose set is empty (HD95/ASSD are left out there); on images without it, the fraction whose set
#: is not empty and its mean area.
EXTRAS: dict[str, str] = {
    "missed": "fraction of test images with a structure whose set is empty (HD95/ASSD undefined, left out of their means)",
    "empty_hit": "fraction of test images without the structure whose set is not empty",
    "empty_fp": "mean set area (pixels) on test images without the structure (false-positive area)",
}


#: What a split of a controlled-loss row (:class:`~segcp.specs.MethodSpec` ``loss``) records besides the metrics.
LOSS_EXTRAS: dict[str, str] = {
    "risk": "mean over the split's test images of the row's controlled loss at λ̂ (its test risk; for loss=fnr the mean FNR)",
    "risk_exceeds": "1 when that test risk exceeds α, else 0: over splits, the fraction Learn then Test bounds by δ (P(risk ≤ α) ≥ 1 − δ)",
}


def split_risk(curves: Any, test: Any, lam: float) -> float:
    """A split's test risk: the mean over its ``test`` images of the row's guarantee loss at λ̂, from their loss
    curves or step functions (two-sided and controlled-loss rows alike; NaN without test images)."""
    losses = curves.take(test).evaluate(lam)
    return float(np.mean(losses)) if len(losses) else math.nan


def loss_record(risk: float, alpha: float) -> dict[str, float]:
    """A split's :data:`LOSS_EXTRAS` from its :func:`split_risk`."""
    return {"risk": risk, "risk_exceeds": exceeds(risk, alpha)}


def exceeds(risk: float, alpha: float) -> float:
    """1.0 when a split's test risk exceeds α, 0.0 when not, NaN when it has none."""
    return math.nan if math.isnan(risk) else float(risk > alpha)


def exceedance(flags: Sequence[float], splits: int) -> float:
    """The fraction of ``splits`` whose test risk exceeds α, from the feasible splits' ``risk_exceeds`` flags: a
    split where nothing is certified (infeasible) claims nothing and does not exceed (docs/ltt.md's count)."""
    return float(np.nansum(np.asarray(flags, dtype=np.float64)) / splits) if splits else math.nan


def nanmean(values: Sequence[float]) -> float:
    """The mean of the finite values (NaN when there is none)."""
    return mean_std(values)[0]


def split_record(per: Sequence[dict[str, float]], truth_sizes: Sequence[int], keys: Sequence[str] = METRICS) -> dict[str, Any]:
    """A split's record from its test images' metrics (each with ``set_size``) and truth sizes (voxels): the means
    of ``keys`` where defined, ``undefined`` counts, the mean ``set_size`` and the :data:`EXTRAS`."""
    rec: dict[str, Any] = {m: nanmean([p[m] for p in per]) for m in keys}
    bad = {m: int(sum(not math.isfinite(p[m]) for p in per)) for m in keys}
    rec["undefined"] = {m: c for m, c in bad.items() if c}
    rec["set_size"] = nanmean([p["set_size"] for p in per])
    present = [p["set_size"] for p, n in zip(per, truth_sizes, strict=True) if n > 0]
    absent = [p["set_size"] for p, n in zip(per, truth_sizes, strict=True) if n == 0]
    rec["missed"] = nanmean([float(s == 0) for s in present])
    rec["empty_hit"] = nanmean([float(s > 0) for s in absent])
    rec["empty_fp"] = nanmean(absent)
    return rec


def criterion_value(criterion: str, metrics: dict[str, float], truth_size: int) -> float:
    """A tuning criterion of one image's set (``truth_ratio``: |C| / |Y|; the others: its metrics)."""
    if criterion == "truth_ratio":
        return math.nan if truth_size == 0 else metrics["set_size"] / truth_size
    return metrics[criterion]


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
