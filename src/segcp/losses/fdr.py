"""``fdr``: the false-discovery rate of the set, 1 − precision, by Learn then Test.

L(C) = |C \\ Y| / |C|, and ``empty_set`` (default 0) for an empty set. The convention for an
empty set is the Benjamini–Hochberg one: a set that claims nothing makes no false claim (0).
MAPIE's ``SemanticSegmentationController(risk="precision")`` counts an empty set as a failure
(1); ``empty_set=1`` reproduces it (docs/ltt.md). An empty truth makes every non-empty set's
FDR 1.

Not monotone in λ: as C_λ = {r ≤ λ} grows, each voxel that enters moves the ratio up (outside
Y) or down (inside Y). It is a step function with a breakpoint at each distinct score where the
ratio changes, so Learn then Test (:func:`segcp.calibration.ltt.ltt_steps`) controls it exactly,
testing in ``order = "ascending"``: from the smallest sets (the most confident voxels), where
it is usually smallest, upwards; λ̂ is then the largest certified set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
from numpy.typing import ArrayLike

from segcp.calibration.ltt import StepLosses
from segcp.losses.base import Loss, pixel_inputs, register, set_inputs
from segcp.methods.base import param

__all__ = ["FDRLoss"]


@register
@dataclass(frozen=True, repr=False)
class FDRLoss(Loss):
    """The fraction of the set outside the truth (1 − precision).

    Examples
    --------
    >>> import numpy as np
    >>> r = np.array([[0.1, 0.2], [0.3, 0.4]]); y = np.array([[True, False], [True, False]])
    >>> FDRLoss().candidates(r, y).tolist()   # enters: Y (FDR stays 0), not Y, Y, not Y
    [0.2, 0.3, 0.4]
    >>> FDRLoss(empty_set=1).candidates(r, y).tolist()
    [0.1, 0.2, 0.3, 0.4]
    >>> FDRLoss().values(r, y, [0.0, 0.1, 0.2, 0.3, 0.4]).tolist()
    [0.0, 0.0, 0.5, 0.3333333333333333, 0.5]
    """

    name: ClassVar[str] = "fdr"
    summary: ClassVar[str] = "false-discovery rate: the fraction of the set outside the truth (1 - precision; Learn then Test)"
    risk: ClassVar[str] = "FDR"
    monotone: ClassVar[bool] = False
    order: ClassVar[str] = "ascending"

    empty_set: float = param(
        0.0,
        "the loss of an empty set: 0 (no discovery, no false discovery; Benjamini-Hochberg) to 1 (MAPIE: an undefined precision fails)",
        low=0.0,
        high=1.0,
    )

    def set_loss(self, pred_set: ArrayLike, truth: ArrayLike, spacing: float | Sequence[float] | None = None) -> float:
        s, y = set_inputs(pred_set, truth)
        size = np.count_nonzero(s)
        return float(self.empty_set) if size == 0 else float(np.count_nonzero(s & ~y) / size)

    def steps(self, scores: ArrayLike, truth: ArrayLike, spacing: float | Sequence[float] | None = None) -> StepLosses:
        """Breakpoints at the distinct finite scores where FP/|C| changes; exact levels."""
        r, y = pixel_inputs(scores, truth, self.name)
        r, y = r.ravel(), y.ravel()
        finite = r < np.inf
        if not finite.all():
            r, y = r[finite], y[finite]
        order = np.argsort(r, kind="stable")
        rs, false_pos = r[order], np.cumsum(~y[order])
        last = np.flatnonzero(np.append(rs[1:] != rs[:-1], True))  # the last voxel of each run of ties
        levels = np.concatenate([[float(self.empty_set)], false_pos[last] / (last + 1.0)])
        change = levels[1:] != levels[:-1]  # keep a breakpoint only where the loss changes
        return StepLosses.single(rs[last][change], np.concatenate([levels[:1], levels[1:][change]]))
