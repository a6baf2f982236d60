"""``band``: the truth lies between an inner and an outer set, P(I ⊆ Y ⊆ O) ≥ 1 − α (a 0/1 loss).

A family with a signed score t (:meth:`segcp.methods.MaskFamily.signed_map`) gives, for μ ≥ 0,
the inner set I_μ = {t < −μ} (shrinking) and the outer set O_μ = {t ≤ μ} (growing), I_μ ⊆ O_μ
(Davenport 2024, "Conformal confidence sets for biomedical image segmentation": inner and outer
sets from the largest transformed score outside and inside the truth). The loss of a case is

    L(μ) = 1{ not (I_μ ⊆ Y ⊆ O_μ) },

and both conditions hold from a threshold on: Y ⊆ O_μ ⇔ μ ≥ a = max_{p ∈ Y} t_p (the *outer*
score), I_μ ⊆ Y ⇔ μ ≥ b = max_{p ∉ Y} −t_p (the *inner* score). So L is a single step from 1 to 0
at the case's score max(a, b), computed exactly, and exact CRC on these 0/1 curves is the
conformal quantile of the scores: P(I ⊆ Y ⊆ O) ≥ 1 − α. An empty truth needs an empty inner
set (a = −∞, b = the largest −t): it still counts in n.

With a tolerance τ < 1 the event is "the outer set holds at least a fraction τ of the truth and
at least a fraction τ of the inner set lies in the truth" (outer recall ≥ τ and inner precision
≥ τ; ⌈τ·m⌉ voxels, as everywhere in segcp; an empty inner set claims nothing and passes). Recall
of O_μ only grows with μ, so a = the coverage-τ score of the truth's t
(:func:`~segcp.calibration.coverage_quantile_score`). The precision of I_μ is not monotone in μ
(a voxel of Y leaving I lowers it), so the inner score is made monotone by construction:
b = the smallest μ from which the precision is ≥ τ at *every* larger μ. L(μ) = 1{μ < max(a, b)}
is then ≥ the pointwise event's indicator at every μ, so the guarantee holds for the pointwise
event too; :meth:`BandLoss.set_loss` is the pointwise definition (for one given pair (I, O)),
:meth:`BandLoss.values` the monotone loss that is calibrated. For τ = 1 the two agree.

Two thresholds: :meth:`BandLoss.side_scores` gives (a, b) per case, from which
:func:`segcp.calibration.band.band_lambdas` calibrates λ_out and λ_in jointly (docs/band.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from segcp.calibration import LossCurves, coverage_quantile_score, zero_one_curve
from segcp.losses.base import Loss, band_inputs, covers, register, signed_inputs
from segcp.methods.base import param

__all__ = ["BandLoss", "inner_precision_ok"]

#: Float noise allowed in τ·n (the same guard as :func:`~segcp.calibration.coverage_quantile_score`).
_EPS = 1e-9


def inner_precision_ok(true_pos: ArrayLike, size: ArrayLike, tau: float) -> NDArray[np.bool_]:
    """Whether an inner set of ``size`` voxels, ``true_pos`` of them in the truth, has precision
    ≥ τ: true_pos ≥ ⌈τ·size⌉ (an empty set passes). Integer arrays of one shape → bool array."""
    tp = np.asarray(true_pos)
    n = np.asarray(size)
    return tp >= np.ceil(tau * n - _EPS)


@register
@dataclass(frozen=True, repr=False)
class BandLoss(Loss):
    """1 when the truth is not between the inner and the outer set (with τ: outer recall or
    inner precision below τ), else 0; reads the signed score t.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([[-0.4, -0.2], [0.1, 0.3]]); y = np.array([[True, True], [True, False]])
    >>> BandLoss().side_scores(t, y)         # O must reach t = 0.1; I must drop nothing (no -t > -0.3)
    (0.1, -0.3)
    >>> BandLoss().values(t, y, [0.0, 0.1]).tolist()
    [1.0, 0.0]
    >>> BandLoss().set_loss(BandLoss().sets_at(t, 0.1), y)
    0.0
    """

    name: ClassVar[str] = "band"
    summary: ClassVar[str] = (
        "0/1: the truth is not between the inner and the outer set (I in Y in O; with tau: outer recall or inner precision below tau)"
    )
    risk: ClassVar[str] = "1{{not I <= Y <= O}}"
    monotone: ClassVar[bool] = True
    binary: ClassVar[bool] = True
    score: ClassVar[str] = "signed"

    tau: float = param(
        1.0,
        "tolerance: the band holds when the outer set covers at least this fraction of the truth "
        "and at least this fraction of the inner set is in the truth (1: I in Y in O exactly)",
        low=0.0,
        high=1.0,
        low_open=True,
    )

    def statement(self, alpha: float, delta: float | None = None) -> str:
        if delta is not None:
            return super().statement(alpha, delta)
        if self.tau == 1.0:
            return f"P(inner set in truth in outer set) >= {1 - alpha:g} (conformal quantile, marginal over exchangeable images)"
        return (
            f"P(outer recall >= {self.tau:g} and inner precision >= {self.tau:g}) >= {1 - alpha:g} "
            "(conformal quantile, marginal over exchangeable images)"
        )

    # ------------------------------------------------------------------ scores
    def outer_score(self, t: NDArray[np.float64], y: NDArray[np.bool_]) -> float:
        """a: the smallest μ with recall(O_μ) ≥ τ (−inf for an empty truth; +inf: never)."""
        return coverage_quantile_score(t[y], self.tau)

    def inner_score(self, t: NDArray[np.float64], y: NDArray[np.bool_]) -> float:
        """b: the smallest μ from which precision(I_μ) ≥ τ at every larger μ (−inf: always)."""
        u = -t.ravel()
        inside = y.ravel()
        if self.tau == 1.0:  # I ⊆ Y: no voxel outside Y may stay in I
            out = u[~inside]
            return float(out.max()) if out.size else -np.inf
        enters = u > -np.inf  # t = +inf: never in I
        u, inside = u[enters], inside[enters]
        if u.size == 0:
            return -np.inf
        order = np.argsort(-u, kind="stable")  # I_μ = the voxels with u > μ: the largest u first
        us, tp = u[order], np.cumsum(inside[order])
        last = np.flatnonzero(np.append(us[1:] != us[:-1], True))  # the last voxel of each run of ties
        bad = ~inner_precision_ok(tp[last], last + 1, self.tau)
        if not bad.any():
            return -np.inf
        return float(us[last[int(np.argmax(bad))]])  # I holds this run (and the larger ones) for μ below it

    def side_scores(self, scores: ArrayLike, truth: ArrayLike, spacing: float | Sequence[float] | None = None) -> tuple[float, float]:
        """(a, b): the case's outer and inner scores (floats, ±inf allowed); the band holds at
        (λ_out, λ_in) ⇔ λ_out ≥ a and λ_in ≥ b."""
        t, y = signed_inputs(scores, truth, self.name)
        return self.outer_score(t, y), self.inner_score(t, y)

    def case_score(self, scores: ArrayLike, truth: ArrayLike, spacing: float | Sequence[float] | None = None) -> float:
        """max(a, b): the smallest μ of the one-λ band holding from there on."""
        a, b = self.side_scores(scores, truth)
        return max(a, b)

    # ------------------------------------------------------------------ the loss
    def curve(self, scores: ArrayLike, truth: ArrayLike, spacing: float | Sequence[float] | None = None) -> LossCurves:
        return zero_one_curve(self.case_score(scores, truth))

    def set_loss(self, pred_set: Any, truth: ArrayLike, spacing: float | Sequence[float] | None = None) -> float:
        """0 when recall(O) ≥ τ and precision(I) ≥ τ (τ = 1: I ⊆ Y ⊆ O), else 1; ``pred_set``
        is the pair (inner, outer)."""
        inner, outer, y = band_inputs(pred_set, truth)
        recall_ok = covers(outer[y], self.tau)
        precision_ok = bool(inner_precision_ok(np.count_nonzero(inner & y), np.count_nonzero(inner), self.tau))
        return 0.0 if recall_ok and precision_ok else 1.0
