"""Consema: calibrated morphological margins around the model's own mask.

Consema (Mossina & Friedrich, MICCAI 2025) grows the model's mask Ŷ = {prob ≥ 0.5} by a
calibrated number of dilations. Its public code dilates one step at a time until the
ground truth is covered; here one distance transform gives every step at once:

    n dilations of Ŷ by the structuring element B  =  {p : d_B(p, Ŷ) ≤ n},

with d_B the metric whose unit ball is B:

========  ===========================  ============================  ==================
``se``    B (2D / 3D)                  metric (scipy.ndimage)        λ
========  ===========================  ============================  ==================
cross     3×3 cross / 3D 6-neighbour   city-block (``cdt`` taxicab)  dilation steps
          cross, i.e.                                                (integer)
          ``generate_binary_structure(ndim, 1)``
square    3×3 square / 3×3×3 cube,     chessboard (``cdt``)          dilation steps
          ``generate_binary_structure(ndim, ndim)``                  (integer)
ball      Euclidean ball in physical   Euclidean in ``case.spacing`` margin in physical
          units                        units (``edt(sampling=…)``)   units (mm)
========  ===========================  ============================  ==================

So r = d_B(·, Ŷ) is the nonconformity map of the family C_λ = {r ≤ λ}; pixels of Ŷ have
r = 0 and λ_min = 0 (C_0 = Ŷ). For cross/square r holds exact integers (the transform is
integer-valued), so ``predict(case, n)`` with an integer n is *exactly* n iterated
``binary_dilation`` steps of Ŷ with B (dilations are confined to the image grid, as with
``binary_dilation``'s default ``border_value=0``; on a box-shaped grid a city-block or
chessboard path between two grid points never needs to leave the box, so the truncated
iterated dilation is the distance sublevel set). Why this is the same as iterating in 3D:
iterating the 6-neighbourhood cross n times gives the octahedron {|x|+|y|+|z| ≤ n} (the
city-block ball), iterating the 26-neighbourhood cube gives the cube {max|·| ≤ n} (the
chessboard ball).

Spacing. cross/square count *dilation steps* (pixels), whatever the voxel size: this is
what the original method does, and on anisotropic voxels a step is a different physical
length along each axis. ``se="ball"`` is the spacing-aware option: C_λ is the dilation of
Ŷ by the ball of radius λ in physical units, so a 3 mm margin is 2 voxels along an axis of
1.5 mm and 6 voxels along an axis of 0.5 mm (a margin of n mm is not n pixels). Without
spacing it is the dilation by a Euclidean disk of radius λ pixels (the original code's
"variable disk", in one transform).

Two-sided sets. The signed score (:meth:`MorphMethod.signed_map`) is the signed distance to
the boundary of Ŷ in the same metric: t = d_B(·, Ŷ) outside Ŷ (the score map above) and
t = −d_B(·, complement of Ŷ) inside it (≤ −1 step for cross/square, ≤ −the voxel size for ball),
so the outer set O_μ = {t ≤ μ} is the dilation of Ŷ by μ and the inner set I_μ = {t < −μ} its
erosion by μ: for cross/square exactly μ iterated ``binary_erosion`` steps of Ŷ with B (integer
μ), for ball the erosion by the ball of radius μ mm. Both are Ŷ at μ = 0. The image border is
not a boundary of the structure: only voxels of the grid outside Ŷ erode it (the erosion of
``binary_erosion(..., border_value=1)``; a structure cut by the field of view is not eaten from
the cut). Ŷ = the whole grid: t = −∞ (always inner); empty Ŷ (``empty_prediction="inf"``):
t = +∞ (both sets empty).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from segcp.cases import Case
from segcp.errors import SegcpError
from segcp.methods.base import BAND_GUARANTEES, MaskFamily, Prepared, param, register

__all__ = ["EMPTY_PREDICTION_RULES", "STRUCTURING_ELEMENTS", "MorphMethod", "structuring_element"]

STRUCTURING_ELEMENTS = ("cross", "square", "ball")
EMPTY_PREDICTION_RULES = ("inf", "argmax")
_CDT_METRIC = {"cross": "taxicab", "square": "chessboard"}


def structuring_element(se: str, ndim: int) -> NDArray[np.bool_]:
    """The one-step structuring element of ``se`` ("cross" or "square") in ``ndim`` dims.

    ``cross`` is ``generate_binary_structure(ndim, 1)`` (3×3 cross in 2D, 6-neighbourhood
    in 3D); ``square`` is ``generate_binary_structure(ndim, ndim)`` (3×3 square, 3×3×3
    cube). ``ball`` has no one-step element (its λ is a radius in physical units).
    """
    from scipy import ndimage  # on first use: the registry stays cheap to import

    if se == "cross":
        return ndimage.generate_binary_structure(ndim, 1)
    if se == "square":
        return ndimage.generate_binary_structure(ndim, ndim)
    raise SegcpError(f"morph: structuring element {se!r} has no one-step element; use cross or square")


@register
@dataclass(repr=False, eq=False)
class MorphMethod(MaskFamily):
    """Consema: the model's mask Ŷ = {prob ≥ threshold} grown by a calibrated margin.

    Parameters
    ----------
    se : {"cross", "square", "ball"}
        Structuring element. ``cross`` (default, as in the paper) and ``square``: λ is the
        number of dilation steps by the 3×3 cross / square (3D: 6-neighbourhood cross /
        3×3×3 cube), computed as a city-block / chessboard distance; spacing is ignored.
        ``ball``: λ is a margin in the physical units of ``case.spacing`` (pixels when the
        spacing is unknown), computed as a Euclidean distance.
    threshold : float in (0, 1]
        Ŷ = {prob ≥ threshold}; 0.5 is the model's own mask.
    empty_prediction : {"inf", "argmax"}
        What to grow from when Ŷ is empty (the model predicts nothing), a case the
        original code rejects with an error.

        ``"inf"`` (default): the distance to an empty set is +∞ everywhere, so every C_λ
        is empty. The image's FNR is 1 at every λ when its truth is non-empty (and its
        quantile score is +∞); calibration counts it honestly as an uncovered image, and
        only fails (with an error) when such images alone make the bound unreachable.
        Test images with empty Ŷ get an empty set. Nothing is invented.

        ``"argmax"``: grow from the most probable pixel(s) instead, Ŷ' = {prob = max prob}
        (all tied maxima; a constant map therefore gives the whole image at λ = 0). The
        family is still nested and a fixed function of the input, so the guarantee holds;
        the sets are useful when the model is under-confident but points at the right
        place.

        A float +inf (what ``--param empty_prediction=inf`` parses to) means ``"inf"``.

    Notes
    -----
    Empty ground truth: FNR 0 and quantile score −∞ (covered by any set), handled by the
    loss-curve code; the image still counts in n.

    Examples
    --------
    >>> import numpy as np
    >>> from segcp.methods import Case, MorphMethod
    >>> probs = np.zeros((5, 5)); probs[2, 2] = 0.9
    >>> MorphMethod("cross").score_map(Case("a", probs)).astype(int)
    array([[4, 3, 2, 3, 4],
           [3, 2, 1, 2, 3],
           [2, 1, 0, 1, 2],
           [3, 2, 1, 2, 3],
           [4, 3, 2, 3, 4]])
    >>> MorphMethod("square").predict(Case("a", probs), 1).astype(int)
    array([[0, 0, 0, 0, 0],
           [0, 1, 1, 1, 0],
           [0, 1, 1, 1, 0],
           [0, 1, 1, 1, 0],
           [0, 0, 0, 0, 0]])
    """

    name: ClassVar[str] = "morph"
    summary: ClassVar[str] = "Consema: the model's mask grown by a calibrated number of dilations (or a margin in mm)"
    lambda_min: ClassVar[float] = 0.0
    lambda_max: ClassVar[float] = np.inf

    se: str = param(
        "cross",
        "structuring element: cross/square count dilation steps, ball is a margin in physical units",
        kind="choice",
        choices=STRUCTURING_ELEMENTS,
        flag="--se",
    )
    threshold: float = param(0.5, "the seed mask is {prob >= threshold} (0.5: the model's own mask)", low=0.0, high=1.0, low_open=True)
    empty_prediction: str = param(
        "inf", "what to grow from when the seed is empty: inf (nothing: empty sets) or argmax", kind="choice", choices=EMPTY_PREDICTION_RULES
    )

    @property
    def integer_lambda(self) -> bool:
        """Cross and square distances count dilation steps: λ̂ is an integer."""
        return self.se != "ball"

    #: Voxels this many times longer along one axis than another make a step of cross/square a
    #: different margin per direction worth a warning (the issue's 10 x 1.5 x 1.5 mm is 6.7).
    ANISOTROPY_WARNING: ClassVar[float] = 2.0

    def spacing_advice(self, spacing: Sequence[float] | None) -> str | None:
        """A warning when cross/square steps are run on strongly anisotropic voxels: one step grows
        a different physical margin along each axis; ``ball`` grows a margin in mm."""
        if self.se == "ball" or spacing is None or not len(spacing) or min(spacing) <= 0:
            return None
        lo, hi = min(spacing), max(spacing)
        if hi < self.ANISOTROPY_WARNING * lo:
            return None
        coarse = [a for a, s in enumerate(spacing) if s == hi]
        size = " x ".join(f"{s:g}" for s in spacing)
        return (
            f"morph --se {self.se} on voxels of {size} mm: each dilation step grows {hi:g} mm along axis "
            f"{', '.join(map(str, coarse))} but {lo:g} mm in-plane, so the sets grow mostly through-plane; "
            "--se ball grows a margin in mm, the same in every direction"
        )

    # ------------------------------------------------------------------ the family
    def seed(self, case: Case) -> NDArray[np.bool_] | None:
        """The mask the margin grows from: Ŷ, or the ``empty_prediction`` fallback.

        Returns None when Ŷ is empty and ``empty_prediction="inf"`` (nothing to grow).
        """
        assert case.probs is not None  # check_case ran
        seed = case.probs.astype(np.float64, copy=False) >= self.threshold  # compared in float64, whatever the stored precision
        if seed.any():
            return seed
        if self.empty_prediction == "argmax":
            return case.probs == case.probs.max()
        return None

    def _distance(self, seed: NDArray[np.bool_], spacing: tuple[float, ...] | None) -> NDArray[np.float64]:
        """Distance of every pixel of ``seed``'s grid to ``seed`` (non-empty), float64."""
        from scipy import ndimage

        if self.se == "ball":
            return np.asarray(ndimage.distance_transform_edt(~seed, sampling=spacing), dtype=np.float64)
        return ndimage.distance_transform_cdt(~seed, metric=_CDT_METRIC[self.se]).astype(np.float64)

    def score_map(self, case: Case) -> NDArray[np.float64]:
        """Distance of every pixel to the seed mask (0 inside it), float64.

        Integer-valued (dilation steps) for cross/square, physical units for ball; +∞
        everywhere when Ŷ is empty and ``empty_prediction="inf"``.
        """
        seed = self.seed(case)
        if seed is None:
            return np.full(case.shape, np.inf)
        return self._distance(seed, case.spacing)

    guarantees: ClassVar[tuple[str, ...]] = ("fnr", "quantile", *BAND_GUARANTEES)
    two_sided: ClassVar[bool] = True

    def signed_map(self, case: Case) -> NDArray[np.float64]:
        """The signed distance to the boundary of the seed Ŷ (module docstring), float64:
        d(·, Ŷ) outside Ŷ, −d(·, grid \\ Ŷ) inside; integer-valued for cross/square, in the
        physical units of ``case.spacing`` for ball; +∞ everywhere without a seed, −∞ everywhere
        when the seed is the whole grid."""
        seed = self.seed(case)
        if seed is None:
            return np.full(case.shape, np.inf)
        if seed.all():
            return np.full(case.shape, -np.inf)
        t = self._distance(seed, case.spacing)
        t[seed] = -self._distance(~seed, case.spacing)[seed]
        return t

    def predict(self, item: Case | Prepared, lam: float) -> NDArray[np.bool_]:
        """C_λ = {score_map ≤ λ}: ``int(λ)`` dilations (cross/square), a λ-mm ball (ball).

        Computed on the bounding box of the seed grown by the margin λ only (the same
        distances: the seed lies inside that box, and nothing outside it is within λ); a
        :class:`Prepared` case thresholds its stored score map.
        """
        if isinstance(item, Prepared):
            return super().predict(item, lam)
        case = item
        seed = self.seed(case)
        out = np.zeros(case.shape, dtype=bool)
        lam = float(lam)
        if seed is None or lam < 0:
            return out
        steps = case.spacing if (self.se == "ball" and case.spacing is not None) else (1.0,) * seed.ndim
        margins = [math.floor(lam / s) + 1 if math.isfinite(lam) else n for s, n in zip(steps, seed.shape)]
        box = _bounding_box(seed, margins)
        out[box] = self._distance(seed[box], case.spacing) <= lam
        return out

    def truth_scores(self, case: Case) -> NDArray[np.float64]:
        """Distances of the ground-truth pixels, computed on the bounding box of Ŷ ∪ Y only.

        They are the same on that box as on the whole image (the seed is inside the box,
        and a box-shaped grid holds a shortest city-block or chessboard path between two
        of its points; Euclidean distances need no path). Pixels at distance +∞ (empty Ŷ,
        ``empty_prediction="inf"``) never enter the set: they count in |Y| and never drop.
        """
        y = self.truth_of(case)
        seed = self.seed(case) if y.any() else None
        if seed is None:
            return np.full(int(np.count_nonzero(y)), np.inf)
        box = _bounding_box(seed | y)
        return self._distance(seed[box], case.spacing)[y[box]]


def _bounding_box(mask: NDArray[np.bool_], margins: list[int] | None = None) -> tuple[slice, ...]:
    """Slices of the bounding box of a non-empty mask, grown by ``margins`` and clipped."""
    box = []
    for ax, n in enumerate(mask.shape):
        hit = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != ax)))
        m = 0 if margins is None else margins[ax]
        box.append(slice(max(int(hit[0]) - m, 0), min(int(hit[-1]) + 1 + m, n)))
    return tuple(box)
