"""Pixel-wise APS: the baseline of CONSIGN, a product set of per-pixel class sets.

The family behind ``--method aps``. Per pixel, the classes are added in order of the mean
softmax μ_p until their cumulative mass reaches λ (the top class always in); the set of
segmentations is the product of the pixel sets, and it contains the truth up to β when the
mean per-label recall of its best member exceeds β — exactly, so the score of a case is read
off its sorted entry levels (no search). Same 0/1 loss, same calibration as CONSIGN. The maths
is in :mod:`segcp.segsets.aps`.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from segcp.cases import Case
from segcp.errors import SegcpError
from segcp.methods.base import Prepared, SegmentationSetFamily, agreement_param, param, register
from segcp.segsets.aps import APS_MODES, aps_draw, aps_score

__all__ = ["SOURCES", "APSMethod"]

#: Where the class probabilities come from: the mean of samples/ when it exists (``auto``).
SOURCES = ("auto", "samples", "probs")


@register
@dataclass(repr=False, eq=False)
class APSMethod(SegmentationSetFamily):
    """Pixel-wise APS on the mean softmax of a case's ``samples`` (or its ``class_probs``).

    Examples
    --------
    >>> import numpy as np
    >>> from segcp.cases import Case
    >>> mu = np.array([[[0.9, 0.4]], [[0.1, 0.6]]])          # L = 2, a 1 × 2 image
    >>> APSMethod(beta=0.5).score(Case("a", class_probs=mu, label_map=np.array([[0, 0]])))
    0.6
    """

    name: ClassVar[str] = "aps"
    summary: ClassVar[str] = "pixel-wise APS on the mean softmax, same 0/1 loss as CONSIGN (reads samples/ or probs/)"
    lambda_max: ClassVar[float] = 1.0
    inputs: ClassVar[tuple[str, ...]] = ("samples",)

    beta: float = agreement_param()
    mode: str = param(
        "uniform", "how a draw picks each uncertain pixel: uniform in its set, or by its renormalised probabilities", kind="choice", choices=APS_MODES
    )
    source: str = param("auto", "class probabilities from the mean of samples/ (auto: when it exists) or from probs/", kind="choice", choices=SOURCES)

    def folders(self, available: Collection[str]) -> list[str]:
        if self.source == "samples" or (self.source == "auto" and "samples" in available):
            return ["samples"]
        return ["probs"]

    def check_case(self, case: Case) -> None:
        if case.samples is None and case.class_probs is None:
            raise SegcpError(
                f"{case.where or 'case ' + case.id}: aps needs samples or class probabilities (Case(samples=...) or Case(class_probs=...))"
            )

    def case_from_arrays(self, x: NDArray[Any], truth: NDArray[Any] | None, ident: str) -> Case:
        """(N, L, *S) samples, or (L, *S) class probabilities when the truth has one axis fewer."""
        if truth is not None and np.ndim(x) == np.ndim(truth) + 1:
            return Case(ident, class_probs=x, label_map=truth)
        return Case(ident, samples=x, label_map=truth)

    def compute_state(self, case: Case) -> NDArray[np.float64]:
        self.check_case(case)
        if self.source == "probs" and case.class_probs is not None:
            return case.class_probs
        return case.mean_class_probs()

    def score(self, item: Case | Prepared, truth: NDArray[Any] | None = None) -> float:
        y = self.truth_of(self._case(item)) if truth is None else truth
        return float(aps_score(self._state(item), y, self.beta))

    def sample(self, item: Case | Prepared, lam: float, n_draws: int, seed: int | np.random.Generator | None = 0) -> NDArray[np.int64]:
        return aps_draw(self._state(item), float(lam), int(n_draws), seed, self.mode)
