"""The interface every sublevel-set method implements, and the registry.

A *sublevel-set method* maps one case (probabilities, optionally the image, spacing…) to a
per-pixel nonconformity map r (same shape as the mask, float64) and defines the nested
family

    C_λ = {p : r_p ≤ λ},   λ ∈ [lambda_min, lambda_max].

Nestedness is then automatic, the FNR curve of an image is read off the scores of its
ground-truth pixels, and calibration (``segcp.calibration``) never looks inside a method.
A new method is a new file that subclasses :class:`SetMethod` and registers itself with
:func:`register`; nothing else is edited.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar

import numpy as np
from numpy.typing import NDArray

from segcp.calibration import LossCurves, coverage_quantile_score, fnr_curve, zero_one_curve
from segcp.errors import SegcpError

__all__ = [
    "Case",
    "SetMethod",
    "GUARANTEES",
    "register",
    "get_method",
    "available_methods",
    "binarize_mask",
    "check_probabilities",
]

GUARANTEES = ("fnr", "quantile")


def check_probabilities(probs: NDArray[Any], where: str) -> NDArray[np.float64]:
    """Return probabilities as float64, or raise one line naming ``where`` and the problem."""
    p = np.asarray(probs)
    if p.dtype == bool or not (np.issubdtype(p.dtype, np.floating) or np.issubdtype(p.dtype, np.integer)):
        raise SegcpError(f"{where}: probabilities must be numeric, got dtype {p.dtype}")
    p = p.astype(np.float64, copy=False)
    if p.size == 0:
        raise SegcpError(f"{where}: the probability map is empty (shape {p.shape})")
    lo, hi = float(p.min()), float(p.max())  # NaN propagates through min/max: two passes in all
    if not (lo >= 0.0 and hi <= 1.0):
        if np.isnan(lo) or np.isnan(hi):
            raise SegcpError(f"{where}: probability map contains NaN ({int(np.isnan(p).sum())} values)")
        if np.isinf(lo) or np.isinf(hi):
            raise SegcpError(f"{where}: probability map contains inf ({int(np.isinf(p).sum())} values)")
        raise SegcpError(f"{where}: probabilities must lie in [0, 1], found range [{lo:.4g}, {hi:.4g}]")
    return p


def binarize_mask(mask: NDArray[Any], label: int | None, where: str) -> NDArray[np.bool_]:
    """A boolean ground-truth mask from a binary mask or, with ``label``, a label map.

    Binary masks may be bool or hold only {0, 1} or {0, 255}. A mask with other values
    needs ``label`` (the structure is ``mask == label``).
    """
    m = np.asarray(mask)
    if m.dtype == bool:
        if label is not None and label not in (0, 1):
            return np.zeros(m.shape, dtype=bool)
        return m if label in (None, 1) else ~m
    if not (np.issubdtype(m.dtype, np.integer) or np.issubdtype(m.dtype, np.floating)):
        raise SegcpError(f"{where}: mask must be numeric or boolean, got dtype {m.dtype}")
    if np.issubdtype(m.dtype, np.floating):
        if not np.all(np.isfinite(m)):
            raise SegcpError(f"{where}: mask contains NaN or inf")
        if not np.all(m == np.round(m)):
            raise SegcpError(f"{where}: mask has non-integer values; expected a binary mask or a label map")
    if label is not None:
        return m == label
    values = np.unique(m)
    if np.all(np.isin(values, (0, 1))):
        return m == 1
    if np.all(np.isin(values, (0, 255))):
        return m == 255
    shown = ", ".join(str(v) for v in values[:8].tolist()) + (", ..." if values.size > 8 else "")
    raise SegcpError(f"{where}: mask is not binary (values {{{shown}}}); pass --label L to select one structure")


@dataclass
class Case:
    """One image's inputs to a method, plus (for calibration/evaluation) its ground truth.

    Attributes
    ----------
    id : str
        Identifier, used in messages and output file names.
    probs : ndarray, float, shape (*S) with S the 2D or 3D grid of the mask
        Foreground probability of the structure, in [0, 1].
    mask : ndarray of bool, shape (*S), optional
        Ground truth (calibration and evaluation only).
    image : ndarray, optional
        The image itself, (*S) or (C, *S), for methods that use it (RW-CP).
    spacing : tuple of float, optional
        Physical voxel size per axis of S (e.g. mm); None means 1 per axis.
    extras : dict
        Anything else a method needs (e.g. sampled outputs).
    """

    id: str
    probs: NDArray[Any]
    mask: NDArray[np.bool_] | None = None
    image: NDArray[Any] | None = None
    spacing: tuple[float, ...] | None = None
    extras: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.probs = check_probabilities(self.probs, f"case {self.id}")
        if self.probs.ndim not in (2, 3):
            raise SegcpError(f"case {self.id}: probability map must be 2D or 3D, got shape {self.probs.shape}")
        if self.mask is not None:
            m = np.asarray(self.mask)
            if m.shape != self.probs.shape:
                raise SegcpError(
                    f"case {self.id}: mask shape {m.shape} does not match probability map shape {self.probs.shape}"
                )
            self.mask = m.astype(bool, copy=False)
        if self.spacing is not None:
            sp = tuple(float(s) for s in self.spacing)
            if len(sp) != self.probs.ndim or not all(np.isfinite(s) and s > 0 for s in sp):
                raise SegcpError(
                    f"case {self.id}: spacing {self.spacing} must give one positive size per axis of {self.probs.shape}"
                )
            self.spacing = sp

    @property
    def model_mask(self) -> NDArray[np.bool_]:
        """The model's own mask Ŷ = {prob ≥ 0.5}."""
        return self.probs >= 0.5


class SetMethod(ABC):
    """A nested family C_λ = {p : r_p ≤ λ} built from one case.

    Subclasses set ``name``, implement :meth:`score_map`, and keep their
    hyper-parameters as ``__init__`` arguments (returned by :meth:`params`).
    """

    name: ClassVar[str]
    lambda_min: ClassVar[float] = -np.inf
    lambda_max: ClassVar[float] = np.inf
    #: True for methods that read ``case.image`` (the CLI then requires ``images/``).
    needs_image: ClassVar[bool] = False

    @property
    def integer_lambda(self) -> bool:
        """True when r (and so λ̂) only takes integer values, e.g. a number of dilations."""
        return False

    @abstractmethod
    def score_map(self, case: Case) -> NDArray[np.float64]:
        """Nonconformity r, float64, same shape as ``case.probs``; C_λ = {r ≤ λ}."""

    def params(self) -> dict[str, Any]:
        """JSON-serialisable hyper-parameters (what ``calib.json`` records)."""
        return {}

    def predict(self, case: Case, lam: float) -> NDArray[np.bool_]:
        """The set C_λ for this case, bool array shaped like ``case.probs``."""
        return self.score_map(case) <= lam

    def truth_scores(self, case: Case) -> NDArray[np.float64]:
        """r at the ground-truth pixels of ``case`` (1-D; +inf = never in the set).

        Override when they can be computed more cheaply than the whole score map.
        """
        if case.mask is None:
            raise SegcpError(f"case {case.id}: calibration needs a ground-truth mask")
        return self.score_map(case)[case.mask]

    def loss_curve(self, case: Case, guarantee: str = "fnr", tau: float = 1.0) -> LossCurves:
        """This case's loss as a step function of λ.

        ``guarantee="fnr"``: L(λ) = FNR of C_λ (risk control, E[FNR] ≤ α).
        ``guarantee="quantile"``: L(λ) = 1{coverage of C_λ < τ} (conformal quantile,
        P(coverage ≥ τ) ≥ 1 − α; exact CRC on 0/1 curves is the conformal quantile).
        """
        if guarantee not in GUARANTEES:
            raise SegcpError(f"unknown guarantee {guarantee!r}; choose one of {', '.join(GUARANTEES)}")
        truth = self.truth_scores(case)
        if guarantee == "fnr":
            return fnr_curve(truth)
        return zero_one_curve(coverage_quantile_score(truth, tau))

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


_REGISTRY: dict[str, type[SetMethod]] = {}
M = TypeVar("M", bound=type[SetMethod])


def register(cls: M) -> M:
    """Class decorator: make a method available by its ``name`` (CLI, calib.json)."""
    _REGISTRY[cls.name] = cls
    return cls


def available_methods() -> list[str]:
    """Names of the registered methods."""
    return sorted(_REGISTRY)


def get_method(name: str, **params: Any) -> SetMethod:
    """Instantiate a registered method by name with its hyper-parameters."""
    try:
        cls = _REGISTRY[name]
    except KeyError:
        raise SegcpError(f"unknown method {name!r}; available: {', '.join(available_methods())}") from None
    try:
        return cls(**params)
    except TypeError as exc:
        raise SegcpError(f"method {name!r}: bad parameters {params}: {exc}") from None


MethodFactory = Callable[..., SetMethod]
