"""The one interface every loss implements, and the registry of losses.

A *loss* says what is controlled; a *set family* (:mod:`segcp.methods`) says what the sets are.
The two are separate axes that meet in the estimator: a pixel-set family gives, per case, a
score map r (float64) whose sublevel sets C_λ = {p : r_p ≤ λ} grow with λ; a loss turns r and
the case's ground truth into the case's loss as a function of λ. Each loss declares:

* ``name`` — the registered name (``--loss``, calib.json);
* ``risk`` — what it measures, in words (for the guarantee statement);
* ``monotone`` — True when the loss is non-increasing in λ on every nested family: then it
  is calibrated exactly by conformal risk control (:func:`~segcp.calibration.crc_lambda`;
  on 0/1 losses the conformal quantile) from :meth:`Loss.curve`. False: Learn then Test
  (:mod:`segcp.calibration.ltt`) from :meth:`Loss.steps`, tested in the direction ``order``;
* ``bound`` — B, the largest value the loss takes (CRC's B/(n+1) term, LTT's p-values);
* ``binary`` — the loss only takes the values 0 and 1 (LTT's exact binomial tail);
* ``truth`` — the ground truth it needs (``"mask"``: a boolean mask on the score map's grid);
* ``score`` — the score map it reads: ``"sublevel"`` (the default), the map r of a family's
  sets C_λ = {r ≤ λ} (:meth:`~segcp.methods.MaskFamily.score_map`); ``"signed"``, a family's
  signed score t (:meth:`~segcp.methods.MaskFamily.signed_map`) whose two-sided sets are the
  inner I_λ = {t < −λ} and the outer O_λ = {t ≤ λ} (``band``, ``band-risk``): for these the
  ``scores`` below are t (±inf allowed) and a "set" is the pair (I, O);
* its parameters, each declared once with :func:`~segcp.methods.base.param` (the same
  declarations as a family's: default, meaning, range; validated on construction; ``params()``
  is what a record keeps).

Per case, for a pixel-set family (``scores``: float64 array r, any shape, +inf = never in the set;
``truth``: bool array of the same shape; ``spacing``: voxel size per axis in mm, or None):

* :meth:`Loss.set_loss` — the loss of one given set (the definition; evaluation uses it);
* :meth:`Loss.sets_at` — the set (or the pair (I, O)) the scores give at λ;
* :meth:`Loss.curve` — monotone losses: the exact step function (a one-case
  :class:`~segcp.calibration.LossCurves`, breakpoints at the scores that matter);
* :meth:`Loss.steps` — every loss: the exact step function as a one-case
  :class:`~segcp.calibration.ltt.StepLosses` (levels stored exactly);
* :meth:`Loss.candidates` — where the loss can change (the step function's breakpoints);
* :meth:`Loss.values` — the loss at given λ.

Adding a loss = one new file in this package with a registered subclass (``@register``), its
tests (the brute-force check of :meth:`Loss.values` against :meth:`Loss.set_loss` at every
candidate) and one line in the built-in table of ``segcp/losses/__init__.py`` (docs/design.md, "Losses").
"""

from __future__ import annotations

import dataclasses
import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray

from segcp.calibration import LossCurves, coverage_quantile_score
from segcp.calibration.ltt import StepLosses
from segcp.errors import SegcpError
from segcp.methods.base import Param
from segcp.registry import Registry
from segcp.volumes import voxel_volume  # re-exported: the losses' spacing rule is the volumes'

__all__ = [
    "SCORES",
    "Loss",
    "available_losses",
    "band_inputs",
    "controlled_losses",
    "covers",
    "get_loss",
    "loss_class",
    "pixel_inputs",
    "register",
    "register_builtins",
    "register_lazy",
    "set_inputs",
    "signed_inputs",
    "voxel_volume",
]

#: The score maps a loss may read (:attr:`Loss.score`).
SCORES = ("sublevel", "signed")


# ---------------------------------------------------------------------------- inputs
def pixel_inputs(scores: ArrayLike, truth: ArrayLike, name: str = "loss") -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """A case's score map and truth, checked: (r float64, y bool), the same 2D or 3D shape.

    r may hold +inf (never in the set); NaN and −inf are errors (one line naming ``name``).
    """
    from segcp.metrics.overlap import as_mask  # here: segcp.metrics imports scipy (start-up)

    y = as_mask(truth, "truth")
    r = np.asarray(scores, dtype=np.float64)
    if r.shape != y.shape:
        raise SegcpError(f"{name}: the score map has shape {r.shape} but the truth {y.shape}")
    if r.size and (np.isnan(r).any() or (r == -np.inf).any()):
        raise SegcpError(f"{name}: scores must be finite or +inf (NaN or -inf found)")
    return r, y


def set_inputs(pred_set: ArrayLike, truth: ArrayLike) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """A set and a truth, checked: two bool arrays of the same 2D or 3D shape."""
    from segcp.metrics.overlap import as_mask_pair

    return as_mask_pair(pred_set, truth, ("pred_set", "truth"))


def signed_inputs(scores: ArrayLike, truth: ArrayLike, name: str = "loss") -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """A case's signed score map and truth, checked: (t float64, y bool), the same 2D or 3D
    shape. t may hold +inf (never in the outer set) and −inf (always in the inner set); NaN is
    an error (one line naming ``name``)."""
    from segcp.metrics.overlap import as_mask

    y = as_mask(truth, "truth")
    t = np.asarray(scores, dtype=np.float64)
    if t.shape != y.shape:
        raise SegcpError(f"{name}: the signed score map has shape {t.shape} but the truth {y.shape}")
    if t.size and np.isnan(t).any():
        raise SegcpError(f"{name}: signed scores must not be NaN")
    return t, y


def band_inputs(band: Any, truth: ArrayLike) -> tuple[NDArray[np.bool_], NDArray[np.bool_], NDArray[np.bool_]]:
    """A two-sided set (the pair (inner, outer) of bool masks) and a truth, checked:
    (inner, outer, y), three bool arrays of the same 2D or 3D shape."""
    from segcp.metrics.overlap import as_mask_pair

    if not (isinstance(band, (tuple, list)) and len(band) == 2):
        raise SegcpError("a two-sided set is the pair (inner, outer) of masks")
    inner, y = as_mask_pair(band[0], truth, ("inner set", "truth"))
    outer, _ = as_mask_pair(band[1], truth, ("outer set", "truth"))
    return inner, outer, y


def covers(hit: ArrayLike, tau: float) -> bool:
    """Whether a set covers at least a fraction τ of a region, given ``hit`` (bool, shape (m,):
    which of the region's m voxels are in the set); τ = 0: at least one voxel.

    The same rule as :func:`~segcp.calibration.coverage_quantile_score` (it is that function,
    applied to the scores 0 inside the set and 1 outside): at least ⌈τ·m⌉ voxels (one at
    least), with τ·m rounded as there. An empty region is covered.
    """
    h = np.asarray(hit, dtype=bool).ravel()
    if tau == 0.0:
        return bool(h.any()) or h.size == 0
    return coverage_quantile_score((~h).astype(np.float64), tau) <= 0.0


# ---------------------------------------------------------------------------- the interface
@dataclass(frozen=True, repr=False)
class Loss(ABC):
    """What is controlled: a loss of a case's set against its truth (see the module docstring).

    Subclasses set the class attributes, declare their parameters with
    :func:`~segcp.methods.base.param`, and implement :meth:`set_loss` and either :meth:`curve`
    (monotone losses) or :meth:`steps`.
    """

    #: The registered name (``--loss``, calib.json).
    name: ClassVar[str]
    #: One line for listings.
    summary: ClassVar[str] = ""
    #: What the loss measures, in words: the statement reads "E[<risk>] <= alpha".
    risk: ClassVar[str]
    #: Non-increasing in λ on every nested family (→ exact CRC); False → Learn then Test.
    monotone: ClassVar[bool]
    #: Learn then Test's testing direction: from the λ where the loss is smallest.
    order: ClassVar[str] = "descending"
    #: B: the loss lies in [0, B].
    bound: ClassVar[float] = 1.0
    #: The loss takes only the values 0 and 1.
    binary: ClassVar[bool] = False
    #: The ground truth it is computed against.
    truth: ClassVar[str] = "mask"
    #: The score map it reads (:data:`SCORES`): ``"sublevel"`` r (C_λ = {r ≤ λ}) or ``"signed"``
    #: t (I_λ = {t < −λ}, O_λ = {t ≤ λ}).
    score: ClassVar[str] = "sublevel"

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            decl = f.metadata.get("segcp")
            if decl is not None:
                object.__setattr__(self, f.name, decl.parse(self.name, f.name, getattr(self, f.name)))

    # ------------------------------------------------------------------ parameters
    @classmethod
    def declared(cls) -> dict[str, Param]:
        """Every declared parameter, in declaration order."""
        return {f.name: f.metadata["segcp"] for f in dataclasses.fields(cls) if "segcp" in f.metadata}

    def params(self) -> dict[str, Any]:
        """JSON-serialisable parameters (what a calibration record keeps)."""
        return {k: getattr(self, k) for k in self.declared()}

    @property
    def key(self) -> str:
        """Identity of the loss and its parameters."""
        return json.dumps([self.name, self.params()], sort_keys=True, default=str)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.params().items())})"

    # ------------------------------------------------------------------ the guarantee
    def statement(self, alpha: float, delta: float | None = None) -> str:
        """The guarantee in words: CRC's (``delta`` None; monotone losses only) or Learn then
        Test's with family-wise error rate ``delta``."""
        risk = self.risk.format(**self.params())
        if delta is None:
            if not self.monotone:
                raise SegcpError(f"loss {self.name!r} is not monotone in lambda: it needs Learn then Test (give delta)")
            return f"E[{risk}] <= {alpha:g} (conformal risk control, marginal over exchangeable images)"
        return f"P(E[{risk}] <= {alpha:g}) >= {1 - delta:g} over the calibration set (Learn then Test, marginal over exchangeable images)"

    # ------------------------------------------------------------------ per case
    @abstractmethod
    def set_loss(self, pred_set: Any, truth: ArrayLike, spacing: float | Sequence[float] | None = None) -> float:
        """The loss of one set (bool array; for ``score = "signed"`` the pair (inner, outer) of
        bool arrays) against the truth (bool array, same shape)."""

    def sets_at(self, scores: ArrayLike, lam: float) -> Any:
        """The set the scores give at λ, as :meth:`set_loss` takes it: {r ≤ λ} (bool array), or
        for ``score = "signed"`` the pair ({t < −λ}, {t ≤ λ})."""
        s = np.asarray(scores, dtype=np.float64)
        if self.score == "signed":
            return s < -float(lam), s <= float(lam)
        return s <= float(lam)

    def curve(self, scores: ArrayLike, truth: ArrayLike, spacing: float | Sequence[float] | None = None) -> LossCurves:
        """The case's loss as a non-increasing step function of λ (monotone losses only)."""
        raise SegcpError(f"loss {self.name!r} is not monotone in lambda: it has no CRC curve (use steps and Learn then Test)")

    def steps(self, scores: ArrayLike, truth: ArrayLike, spacing: float | Sequence[float] | None = None) -> StepLosses:
        """The case's loss as a step function of λ (any loss), as a one-case StepLosses."""
        return StepLosses.from_curves(self.curve(scores, truth, spacing))

    def candidates(self, scores: ArrayLike, truth: ArrayLike, spacing: float | Sequence[float] | None = None) -> NDArray[np.float64]:
        """The λ at which the case's loss can change, sorted, distinct, float64 (shape (k,))."""
        return np.unique(self.steps(scores, truth, spacing).breakpoints[0])

    def values(self, scores: ArrayLike, truth: ArrayLike, lambdas: ArrayLike, spacing: float | Sequence[float] | None = None) -> NDArray[np.float64]:
        """The case's loss at each λ of ``lambdas`` (shape (m,), float64)."""
        return self.steps(scores, truth, spacing).evaluate(np.atleast_1d(np.asarray(lambdas, dtype=np.float64)))[0]


# ---------------------------------------------------------------------------- registry
_LOSSES: Registry[Loss] = Registry("loss")
register = _LOSSES.register
register_lazy = _LOSSES.register_lazy
register_builtins = _LOSSES.builtins
available_losses = _LOSSES.names
loss_class = _LOSSES.get_class


def controlled_losses() -> list[str]:
    """The losses a :class:`segcp.RiskSegmenter` controls (``calibrate --loss``): those on the sublevel
    score r; the signed-score ones (``band``, ``band-risk``) are two-sided guarantees (``--guarantee``)."""
    return [n for n in available_losses() if loss_class(n).score == "sublevel"]


def get_loss(name: str, **params: Any) -> Loss:
    """Instantiate a registered loss by name with its parameters (one-line error on unknown ones)."""
    cls = loss_class(name)
    unknown = sorted(set(params) - set(cls.declared()))
    if unknown:
        raise SegcpError(f"loss {name!r}: unknown parameter(s) {', '.join(unknown)} (known: {', '.join(cls.declared()) or 'none'})")
    return cls(**params)
