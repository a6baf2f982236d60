"""Image-adaptive score normalisation: the ``normalize`` option of the probability families.

Standard CRC and RW-CP threshold a foreground map s ∈ [0, 1] (the model's probabilities, or
their diffusion) with one global level: C_λ = {s ≥ 1 − λ}. λ̂ is then set by the few
calibration images on which the model sees the structure only weakly (an RV at 20 %
probability), and the level drops for *every* image. Rescaling each image's map by its own
confidence first removes that coupling:

==============  ===========================================================================
``normalize``   s' (``m0`` = ``norm_floor``, ``ref`` = the max, or the ``norm_quantile``-th
                quantile of the values)
==============  ===========================================================================
``none``        s (the default: the scores of today, bit for bit)
``max``         min(s / max(ref(s), m0), 1), per image (2D) or per volume (3D)
``slice``       as ``max``, but each 2D slice of a volume (along
                :func:`segcp.cases.slice_axis`, the axis RW-CP and the UNet cut volumes
                along) by its own reference (the
                same as ``max`` on 2D images): for stacks of 2D slices such as ACDC volumes,
                whose slices the model sees with very different confidence
``component``   per connected component of {s ≥ ``norm_level``} (the model's own mask when
                s is the probability map and the level 0.5): each pixel is divided by
                max(ref of its nearest component, m0) (nearest in physical units), clipped
                to 1; without a component, as ``max``
==============  ===========================================================================

The floor m0 keeps a map in which the model sees nothing (an empty slice, max p = 0.03)
from being blown up to 1: with m0 > 0 such a map is multiplied by at most 1/m0, and m0 = 1
is ``none``. The families' default is m0 = 0.1 (``norm_floor``), chosen on whole ACDC stacks
(docs/results/README.md): without it, every slice where the structure is absent gets a
non-empty set, several times larger than Standard CRC's; with it, the false-positive area
there stays close to Standard CRC's while most of the gain on weakly seen structures remains. When the denominator is 0 (m0 = 0 and the reference is 0) the positive pixels
go to 1 (the limit of s/d) and the zeros stay 0; an all-zero map stays all-zero.

Why the guarantee holds. s' is a fixed function of one case's own inputs (its probability
map, and for RW-CP its image) — never of its mask, nor of other images — so the sets
{1 − s' ≤ λ} are nested in λ and every image's loss curve depends on that image alone: the
calibration and test images stay exchangeable and exact CRC gives E[FNR] ≤ α unchanged
(Angelopoulos et al., conformal risk control, holds for any such score). Only the scores
change. Choosing the option on the calibration images (the tuned rows of ``segcp compare``)
is a selection on the same data: see ``docs/tuning.md``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import NDArray

from segcp.cases import Case, slice_axis
from segcp.methods.base import BAND_GUARANTEES, MaskFamily, param

__all__ = ["NORMALIZATIONS", "ProbabilityFamily", "normalize_map", "slice_axis"]

#: The values of the ``normalize`` parameter.
NORMALIZATIONS = ("none", "max", "slice", "component")


def _reference(s: NDArray[np.float64], quantile: float) -> float:
    """The map's confidence: its max (quantile 1), or the given quantile of its values."""
    return float(s.max()) if quantile >= 1.0 else float(np.quantile(s, quantile))


def _rescale(s: NDArray[np.float64], denom: NDArray[np.float64] | float) -> NDArray[np.float64]:
    """min(s / denom, 1), with s / 0 read as its limit: 1 where s > 0, 0 where s = 0."""
    d = np.broadcast_to(np.asarray(denom, dtype=np.float64), s.shape)
    out = np.ones_like(s)
    np.divide(s, d, out=out, where=d > 0)
    out[(d <= 0) & (s <= 0)] = 0.0
    return np.minimum(out, 1.0, out=out)


def normalize_map(
    s: NDArray[np.floating],
    how: str = "none",
    *,
    floor: float = 0.0,
    quantile: float = 1.0,
    level: float = 0.5,
    spacing: Sequence[float] | None = None,
) -> NDArray[np.float64]:
    """The normalised foreground map s' ∈ [0, 1] of one image or volume (module docstring).

    ``how="none"`` returns ``s`` itself. ``floor`` is m0, ``quantile`` the reference
    (1 = the max), ``level`` the threshold whose connected components ``"component"``
    normalises separately (face connectivity), ``spacing`` the voxel size used to find
    each pixel's nearest component and, for ``"slice"``, the slice axis (:func:`slice_axis`).

    Examples
    --------
    >>> import numpy as np
    >>> s = np.array([[0.0, 0.1], [0.2, 0.4]])
    >>> normalize_map(s, "max").tolist()
    [[0.0, 0.25], [0.5, 1.0]]
    >>> normalize_map(s, "max", floor=0.8).tolist()   # the model sees little: scaled by 1/0.8 only
    [[0.0, 0.125], [0.25, 0.5]]
    >>> normalize_map(np.zeros((2, 2)), "max").tolist()
    [[0.0, 0.0], [0.0, 0.0]]
    """
    if how == "none":
        return s  # type: ignore[return-value]
    p = np.asarray(s, dtype=np.float64)
    if how == "max" or (how == "slice" and p.ndim < 3):
        return _rescale(p, max(_reference(p, quantile), floor))
    if how == "slice":
        ax = slice_axis(p.shape, None if spacing is None else tuple(spacing))
        q = np.moveaxis(p, ax, 0)
        return np.moveaxis(np.stack([_rescale(v, max(_reference(v, quantile), floor)) for v in q]), 0, ax)
    if how != "component":
        raise ValueError(f"unknown normalisation {how!r}; choose one of {', '.join(NORMALIZATIONS)}")
    from scipy import ndimage  # here, not at import: `segcp calibrate` on raw probabilities never needs scipy

    labels, n = ndimage.label(p >= level)
    if n == 0:
        return _rescale(p, max(_reference(p, quantile), floor))
    index = np.arange(1, n + 1)
    if quantile >= 1.0:
        refs = np.asarray(ndimage.maximum(p, labels, index), dtype=np.float64).reshape(n)
    else:
        refs = ndimage.labeled_comprehension(p, labels, index, lambda v: np.quantile(v, quantile), np.float64, 0.0)
    if n == 1:
        nearest = np.zeros(p.shape, dtype=np.intp)
    else:
        idx = ndimage.distance_transform_edt(labels == 0, sampling=spacing, return_distances=False, return_indices=True)
        nearest = labels[tuple(idx)] - 1
    return _rescale(p, np.maximum(refs[nearest], floor))


@dataclass(repr=False, eq=False)
class ProbabilityFamily(MaskFamily):
    """A threshold family on a foreground map s ∈ [0, 1]: C_λ = {1 − s' ≤ λ}, λ ∈ [0, 1].

    Subclasses implement :meth:`foreground` (threshold: the probabilities; rwcp: their
    diffusion); s' is :func:`normalize_map` of it under the declared ``normalize`` options,
    which every such family shares (``-p normalize=max``, ``--normalize max``). Any
    normalisation is a function of the case's own image and probabilities, so the family
    stays nested and CRC's guarantee holds unchanged (module docstring).

    Two-sided sets (:meth:`signed_map`): t = ½ − s', so for μ ∈ [0, ½] the outer set is
    O_μ = {s' ≥ ½ − μ} and the inner set I_μ = {s' > ½ + μ}: both meet at the map's own mask
    {s' ≥ ½} at μ = 0, and at μ = ½ O holds every voxel and I none. With λ = ½ + μ this is
    O = {s' ≥ 1 − λ}, I = {s' > λ}, λ ∈ [½, 1]: one threshold on one scale, mirrored about ½.
    """

    lambda_min: ClassVar[float] = 0.0
    lambda_max: ClassVar[float] = 1.0
    lambda_is_threshold: ClassVar[bool] = True
    guarantees: ClassVar[tuple[str, ...]] = ("fnr", "quantile", *BAND_GUARANTEES)
    two_sided: ClassVar[bool] = True
    band_lambda_max: ClassVar[float] = 0.5

    _: KW_ONLY
    normalize: str = param(
        "none",
        "image-adaptive rescaling of the foreground map before thresholding: none, max (per image/volume), "
        "slice (per 2D slice of a volume), component (per connected component of the map >= norm_level)",
        kind="choice",
        choices=NORMALIZATIONS,
        flag="--normalize",
    )
    norm_floor: float = param(
        0.1,
        "normalize: divide by max(reference, norm_floor), so a map the model sees nothing in "
        "is scaled by at most 1/norm_floor (0 = the pure p / max p, 1 = no rescaling)",
        low=0.0,
        high=1.0,
    )
    norm_quantile: float = param(1.0, "normalize: the reference is this quantile of the map's values (1 = its max)", low=0.0, high=1.0, low_open=True)
    norm_level: float = param(
        0.5, "normalize=component: the level whose connected components are rescaled separately", low=0.0, high=1.0, low_open=True
    )

    @abstractmethod
    def foreground(self, case: Case) -> NDArray[np.float64]:
        """The foreground map s ∈ [0, 1], float64, shape of ``case.probs``."""

    def normalized(self, s: NDArray[np.float64], case: Case) -> NDArray[np.float64]:
        """s' = :func:`normalize_map` of a foreground map ``s`` of ``case`` under the declared options."""
        return normalize_map(s, self.normalize, floor=self.norm_floor, quantile=self.norm_quantile, level=self.norm_level, spacing=case.spacing)

    def score_map(self, case: Case) -> NDArray[np.float64]:
        """r = 1 − s', float64, shape of ``case.probs``; C_λ = {r ≤ λ}."""
        return 1.0 - self.normalized(self.foreground(case), case)

    def signed_map(self, case: Case) -> NDArray[np.float64]:
        """t = ½ − s', float64, shape of ``case.probs``: O_μ = {t ≤ μ} = {s' ≥ ½ − μ} and
        I_μ = {t < −μ} = {s' > ½ + μ} (the same float64 expression at calibration and
        prediction, so a calibrated μ reproduces its sets bit for bit)."""
        return np.subtract(0.5, self.normalized(self.foreground(case), case), dtype=np.float64)
