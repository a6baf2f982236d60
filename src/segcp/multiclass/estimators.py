"""``Consign`` and ``PixelAPS``: calibrated sets of segmentations (sklearn-style).

Both follow the same recipe: a per-image score λ*_i (the smallest λ whose set contains the
truth up to β), λ̂ = the conformal quantile of the scores (the ⌈(n+1)(1−α)⌉-th smallest,
``segcp.calibration.conformal_quantile``; exact CRC on the 0/1 curves 1{λ < λ*_i} gives the
same number), and then

    P(Y_test ∈ C_λ̂(X_test) up to β) ≥ 1 − α

for exchangeable images. Scores of +∞ (a truth that no λ up to ``lambda_max`` reaches) count as
losses at every λ; if they are more than α of the calibration set, no finite λ̂ exists and
calibration fails with a one-line error (never a silent full set).

Examples
--------
>>> from segcp.multiclass import toy
>>> cases = toy.make_toy_cases(12, shape=(24, 24), n_labels=2, n_samples=8, seed=0)
>>> aps = PixelAPS(alpha=0.2, beta=0.9).calibrate([(c.samples.mean(0), c.truth) for c in cases])
>>> 0.0 <= aps.lambda_ <= 1.0, aps.n_
(True, 12)
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from segcp import __version__
from segcp.calibration import check_alpha, conformal_quantile
from segcp.errors import SegcpError
from segcp.multiclass.agreement import check_beta
from segcp.multiclass.aps import APS_MODES, aps_draw, aps_score
from segcp.multiclass.consign import (
    BOX_CONVENTIONS,
    SVD_METHODS,
    Decomposition,
    SearchOptions,
    consign_score,
    decompose,
    draw,
)

__all__ = ["MULTICLASS_METHODS", "Consign", "PixelAPS", "SegmentationSets", "from_record", "parallel_map"]

T = TypeVar("T")
R = TypeVar("R")


def _limit_threads() -> None:
    """Worker initialiser: one BLAS/OpenMP thread per process (the parallelism is over images)."""
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        pass


def parallel_map(fn: Callable[[T], R], args: Sequence[T], n_jobs: int = 1) -> list[R]:
    """``[fn(a) for a in args]``, over ``n_jobs`` processes when n_jobs > 1 (order kept).

    ``fn`` must be a module-level function (it is pickled). n_jobs = -1 uses every CPU.
    """
    n_jobs = int(n_jobs)
    if n_jobs == -1:
        n_jobs = os.cpu_count() or 1
    if n_jobs <= 1 or len(args) < 2:
        return [fn(a) for a in args]
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(max_workers=min(n_jobs, len(args)), initializer=_limit_threads) as ex:
        return list(ex.map(fn, args, chunksize=max(1, len(args) // (4 * n_jobs))))


class SegmentationSets(ABC):
    """A family of sets of segmentations C_λ calibrated by the conformal quantile of λ*_i.

    Attributes after calibration: ``lambda_`` (λ̂), ``n_``, ``scores_`` (the λ*_i).
    """

    name: ClassVar[str]

    def __init__(self, alpha: float = 0.1, *, beta: float = 0.9) -> None:
        self.alpha = alpha
        self.beta = beta

    # ---------------------------------------------------------------- per image
    @abstractmethod
    def score(self, x: Any, truth: ArrayLike) -> float:
        """λ* of one image (x: the method's input for that image)."""

    @abstractmethod
    def sample(self, x: Any, n_draws: int, seed: int | np.random.Generator | None = 0) -> NDArray[np.int64]:
        """``n_draws`` segmentations (S, *spatial) from the calibrated set of one image."""

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """JSON-serialisable hyper-parameters (β included)."""

    # ---------------------------------------------------------------- calibration
    def _validate(self) -> None:
        check_alpha(self.alpha)
        check_beta(self.beta)

    def scores(self, items: Iterable[tuple[Any, ArrayLike]], n_jobs: int = 1) -> NDArray[np.float64]:
        """λ*_i of (x_i, truth_i) pairs, over ``n_jobs`` processes."""
        self._validate()
        return np.asarray(parallel_map(_score_one, [(self, x, y) for x, y in items], n_jobs), dtype=np.float64)

    def calibrate_scores(self, scores: ArrayLike) -> SegmentationSets:
        """λ̂ = conformal quantile of the scores; sets ``lambda_``, ``n_``, ``scores_``."""
        self._validate()
        s = np.asarray(scores, dtype=np.float64).ravel()
        lam = conformal_quantile(s, float(self.alpha))
        if not math.isfinite(lam):
            n_inf = int(np.sum(~np.isfinite(s)))
            raise SegcpError(
                f"{self.name}: {n_inf} of {s.size} calibration truths are never in the set "
                f"(up to lambda_max), more than alpha={float(self.alpha):g} allows: no finite lambda gives the "
                f"guarantee; lower beta, use more components K, or raise lambda_max"
            )
        self.scores_ = s
        self.lambda_ = float(lam)
        self.n_ = int(s.size)
        return self

    def calibrate(self, items: Iterable[tuple[Any, ArrayLike]], n_jobs: int = 1) -> SegmentationSets:
        """Calibrate on (x_i, truth_i) pairs."""
        return self.calibrate_scores(self.scores(items, n_jobs))

    def _check_fitted(self) -> float:
        if not hasattr(self, "lambda_"):
            raise SegcpError(f"{self.name} is not calibrated: call calibrate() or load a calibration record")
        return self.lambda_

    def contains(self, x: Any, truth: ArrayLike) -> bool:
        """Whether the calibrated set contains the truth up to β (the event the guarantee is about)."""
        return bool(self.score(x, truth) <= self._check_fitted())

    # ---------------------------------------------------------------- persistence
    def statement(self) -> str:
        return (
            f"P(the set contains a segmentation whose mean per-label recall of the truth exceeds "
            f"{float(self.beta):g}) >= {1 - float(self.alpha):g} (conformal quantile, marginal over exchangeable images)"
        )

    def to_dict(self) -> dict[str, Any]:
        lam = self._check_fitted()
        s = self.scores_ if hasattr(self, "scores_") else np.zeros(0)
        return {
            "segcp_version": __version__,
            "method": self.name,
            "params": self.params(),
            "alpha": float(self.alpha),
            "beta": float(self.beta),
            "guarantee": "set contains the truth up to beta",
            "lambda": float(lam),
            "n": int(self.n_),
            "n_infinite": int(np.sum(~np.isfinite(s))),
            "empirical_risk": float(np.mean(s > lam)) if s.size else float("nan"),
            "scores": [float(v) for v in s],
            "statement": self.statement(),
        }

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in {"alpha": self.alpha, **self.params()}.items())
        return f"{type(self).__name__}({args})"


def _score_one(job: tuple[SegmentationSets, Any, ArrayLike]) -> float:
    est, x, y = job
    return est.score(x, y)


class Consign(SegmentationSets):
    """CONSIGN sets (see :mod:`segcp.multiclass.consign`).

    Parameters
    ----------
    alpha : risk level; P(truth in the set up to β) ≥ 1 − α.
    K : number of principal components (2 or 5 in the paper).
    beta : agreement threshold (mean per-label recall, strictly greater).
    box_alpha : quantile level of the box (a_k, b_k = box_alpha/2, 1 − box_alpha/2 quantiles
        of the coefficients); None: use ``alpha``.
    svd : ``gram`` | ``lapack`` | ``randomized``.
    box : ``"paper"`` (default): the paper's box (eq. 4–6), a_k, b_k from the coefficients
        ⟨u_k, ŝ_n − μ⟩ = Σ_kk U_nk, so λ̂ is on the scale of the paper's Table 3;
        ``"normalized"``: a_k, b_k from the normalised U_nk (segcp before issue 16; a different
        family, its λ̂ about Σ_11 times larger). Recorded in :meth:`params`; records written
        before the option existed are read as ``"normalized"``.
    search : :class:`SearchOptions` or a dict of its fields.

    ``x`` is an image's samples (N, L, *S) or its :class:`Decomposition`.
    """

    name: ClassVar[str] = "consign"

    def __init__(
        self,
        alpha: float = 0.1,
        *,
        K: int = 5,
        beta: float = 0.9,
        box_alpha: float | None = None,
        svd: str = "gram",
        box: str = "paper",
        search: SearchOptions | dict[str, Any] | None = None,
    ) -> None:
        super().__init__(alpha, beta=beta)
        self.K = K
        self.box_alpha = box_alpha
        self.svd = svd
        self.box = box
        self.search = search

    def _validate(self) -> None:
        super()._validate()
        if int(self.K) != self.K or self.K < 1:
            raise SegcpError(f"K must be a positive integer, got {self.K!r}")
        if self.svd not in SVD_METHODS:
            raise SegcpError(f"unknown svd method {self.svd!r}; choose one of {', '.join(SVD_METHODS)}")
        if self.box not in BOX_CONVENTIONS:
            raise SegcpError(f"unknown box convention {self.box!r}; choose one of {', '.join(BOX_CONVENTIONS)}")
        self._options()

    def _options(self) -> SearchOptions:
        return self.search if isinstance(self.search, SearchOptions) else SearchOptions.from_dict(self.search)

    def _box_alpha(self) -> float:
        return float(self.alpha if self.box_alpha is None else self.box_alpha)

    def decompose(self, samples: ArrayLike | Decomposition) -> Decomposition:
        if isinstance(samples, Decomposition):
            if samples.box_convention != self.box:
                raise SegcpError(
                    f"consign: the decomposition has box={samples.box_convention!r} but the estimator box={self.box!r}"
                )
            return samples
        return decompose(samples, int(self.K), self._box_alpha(), self.svd, self.box)

    def score(self, x: ArrayLike | Decomposition, truth: ArrayLike) -> float:
        return consign_score(self.decompose(x), truth, float(self.beta), options=self._options()).lambda_

    def sample(self, x: ArrayLike | Decomposition, n_draws: int, seed: int | np.random.Generator | None = 0) -> NDArray[np.int64]:
        return draw(self.decompose(x), self._check_fitted(), n_draws, seed)

    def params(self) -> dict[str, Any]:
        from dataclasses import asdict

        return {
            "K": int(self.K),
            "beta": float(self.beta),
            "box_alpha": self._box_alpha(),
            "svd": self.svd,
            "box": self.box,
            "search": asdict(self._options()),
        }


class PixelAPS(SegmentationSets):
    """Pixel-wise APS on the mean softmax (see :mod:`segcp.multiclass.aps`).

    ``x`` is an image's class probabilities (L, *S) — the mean of its samples, or the model's
    softmax. ``mode``: how :meth:`sample` draws each uncertain pixel (``uniform`` | ``prob``).
    """

    name: ClassVar[str] = "aps"

    def __init__(self, alpha: float = 0.1, *, beta: float = 0.9, mode: str = "uniform") -> None:
        super().__init__(alpha, beta=beta)
        self.mode = mode

    def _validate(self) -> None:
        super()._validate()
        if self.mode not in APS_MODES:
            raise SegcpError(f"unknown APS sampling mode {self.mode!r}; choose one of {', '.join(APS_MODES)}")

    def score(self, x: ArrayLike, truth: ArrayLike) -> float:
        return aps_score(x, truth, float(self.beta))

    def sample(self, x: ArrayLike, n_draws: int, seed: int | np.random.Generator | None = 0) -> NDArray[np.int64]:
        return aps_draw(x, self._check_fitted(), n_draws, seed, self.mode)

    def params(self) -> dict[str, Any]:
        return {"beta": float(self.beta), "mode": self.mode}


MULTICLASS_METHODS: dict[str, type[SegmentationSets]] = {"consign": Consign, "aps": PixelAPS}


def make_estimator(method: str, alpha: float, params: dict[str, Any]) -> SegmentationSets:
    """An estimator from a method name and a flat parameter dict (CLI ``--K``, ``--beta``, ``-p``)."""
    try:
        cls = MULTICLASS_METHODS[method]
    except KeyError:
        raise SegcpError(f"unknown method {method!r}; multi-class methods: {', '.join(MULTICLASS_METHODS)}") from None
    p = dict(params)
    if cls is Consign:
        search = dict(p.pop("search", {}) or {})
        for key in list(p):
            if key in SearchOptions.__dataclass_fields__:
                search[key] = p.pop(key)
        p["search"] = search
    try:
        est = cls(alpha, **p)
    except TypeError as exc:
        raise SegcpError(f"method {method!r}: bad parameters {params}: {exc}") from None
    est._validate()
    return est


def from_record(record: dict[str, Any], where: str = "calibration record") -> SegmentationSets:
    """Rebuild a calibrated estimator from :meth:`SegmentationSets.to_dict` output."""
    try:
        params = dict(record.get("params", {}))
        if record["method"] == "consign":
            params.setdefault("box", "normalized")  # records from before the option: segcp's old box
        est = make_estimator(record["method"], float(record["alpha"]), params)
        est.lambda_ = float(record["lambda"])
        est.n_ = int(record["n"])
    except KeyError as exc:
        raise SegcpError(f"{where}: missing field {exc.args[0]!r}") from None
    except (TypeError, ValueError) as exc:
        raise SegcpError(f"{where}: malformed field ({exc})") from None
    scores = record.get("scores")
    if scores is not None:
        est.scores_ = np.array([np.inf if v is None else float(v) for v in scores])
    return est
