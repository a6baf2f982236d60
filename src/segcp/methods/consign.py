"""CONSIGN: sets of segmentations spanned by the principal modes of sampled outputs.

The family behind ``--method consign`` (Viti, Karabelas & Holler, *Conformal Segmentation
Informed by Spatial Groupings via Decomposition*). Per case, from N sampled softmax maps:
the mean μ, the top-K SVD of the centred samples and a box B_λ of coefficients, and

    C_λ = { argmax_l (μ + Σ_k c_k u_k) : c ∈ B_λ },

nested in λ. The box is the paper's (eq. 4–6) by default, or segcp's older normalised one
(``box="normalized"``; docs/consign.md, "The method"). The score of a case is the smallest λ
whose set is *certified* to contain its truth up to β (an exact check of a found c);
calibration is exact CRC on the 0/1 curves, i.e. the conformal quantile of the scores. The SVD, the box, the membership search and the
sampler live in :mod:`segcp.segsets.consign`; this file makes them a set family.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from segcp.cases import Case
from segcp.methods.base import Prepared, SegmentationSetFamily, agreement_param, param, register
from segcp.segsets.consign import BOX_CONVENTIONS, SVD_METHODS, Decomposition, SearchOptions, consign_score, decompose, draw

__all__ = ["ConsignMethod"]

#: The search options of a record written before ``strategy`` existed (all of them, none other).
_ADAM_SEARCH_OPTIONS = {"n_screen", "n_starts", "max_iter", "patience", "lr", "temperature", "rtol", "atol", "lambda_max", "seed"}


@register
@dataclass(repr=False, eq=False)
class ConsignMethod(SegmentationSetFamily):
    """CONSIGN sets of segmentations from a case's ``samples`` (N, L, *S).

    Examples
    --------
    >>> import numpy as np
    >>> from segcp.cases import Case
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(0.2, 0.8, (10, 1, 6, 6)); s = np.concatenate([1 - p, p], axis=1)
    >>> y = (s.mean(0).argmax(0)).astype(int)
    >>> m = ConsignMethod(K=2, beta=0.8, box_alpha=0.1)
    >>> float(m.score(Case("a", samples=s, label_map=y)))   # the mean's argmax is the truth
    0.0
    """

    name: ClassVar[str] = "consign"
    summary: ClassVar[str] = "CONSIGN: argmax of the mean plus a box of the top-K SVD components of sampled outputs (reads samples/)"
    inputs: ClassVar[tuple[str, ...]] = ("samples",)

    K: int = param(5, "number of principal components (2 or 5 in the paper)", kind="int", low=1, flag="--K")
    beta: float = agreement_param()
    box_alpha: float | None = param(
        None,
        "quantile level of the box: a_k, b_k = box_alpha/2, 1 - box_alpha/2 quantiles (None: the calibration alpha)",
        low=0.0,
        high=1.0,
        high_open=True,
        optional=True,
    )
    svd: str = param("gram", "SVD algorithm", kind="choice", choices=SVD_METHODS)
    box: str = param(
        "paper",
        "box convention: paper (eq. 4-6: a_k, b_k from the coefficients <u_k, s_n - mu>, "
        "lambda on the scale of the paper's Table 3) or normalized (from the normalised coefficients U_nk; "
        "lambda about Sigma_11 times larger)",
        kind="choice",
        choices=BOX_CONVENTIONS,
        unrecorded="normalized",
    )
    search: dict[str, Any] = param(
        None, "membership-search settings (segcp.segsets.consign.SearchOptions; give them flat, e.g. -p n_screen=64)", kind="mapping", optional=True
    )

    def validate(self) -> None:
        self.search = dataclasses.asdict(SearchOptions.from_dict(self.search))

    @classmethod
    def normalize_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        p = dict(params)
        search = dict(p.pop("search", None) or {})
        if "strategy" not in search and set(search) >= _ADAM_SEARCH_OPTIONS:
            # every option of the Adam search and no strategy: a calibration record written
            # before the strategy existed, whose scores came from the Adam search
            search["strategy"] = "adam"
        for key in list(p):
            if key in SearchOptions.__dataclass_fields__:
                search[key] = p.pop(key)
        if search or "search" in params:
            p["search"] = search
        return p

    def bind_alpha(self, alpha: float) -> ConsignMethod:
        return self if self.box_alpha is not None else dataclasses.replace(self, box_alpha=float(alpha))

    def _box_alpha(self) -> float:
        if self.box_alpha is None:
            raise ValueError("consign: box_alpha is unresolved; calibrate through ConformalSegmenter (bind_alpha)")
        return float(self.box_alpha)

    def options(self) -> SearchOptions:
        return SearchOptions.from_dict(self.search)

    # ------------------------------------------------------------------ the family
    def compute_state(self, case: Case) -> Decomposition:
        self.check_case(case)
        assert case.samples is not None  # check_case ran
        return decompose(case.samples, self.K, self._box_alpha(), self.svd, self.box)

    def decomposition(self, item: Case | Prepared) -> Decomposition:
        """The case's decomposition (the prepared one when given a :class:`Prepared`)."""
        return self._state(item)

    def score(self, item: Case | Prepared, truth: NDArray[Any] | None = None) -> float:
        y = self.truth_of(self._case(item)) if truth is None else truth
        return float(consign_score(self.decomposition(item), y, self.beta, options=self.options()).lambda_)

    def sample(self, item: Case | Prepared, lam: float, n_draws: int, seed: int | np.random.Generator | None = 0) -> NDArray[np.int64]:
        return draw(self.decomposition(item), float(lam), int(n_draws), seed)
