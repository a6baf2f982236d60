"""The one interface every set family implements, its declared parameters, and the registry.

A *set family* turns one case (a model's probabilities or samples, optionally the image)
into a nested family of prediction sets C_λ (λ larger → set larger). Against the case's
ground truth, the loss of that family is a non-increasing step function of λ — the case's
:class:`~segcp.calibration.LossCurves` — and that is all calibration ever needs: exact
conformal risk control over the curves gives λ̂ for every family alike
(:class:`segcp.conformal.ConformalSegmenter`). Two kinds of family share the interface:

* :class:`MaskFamily` — C_λ is a set of *pixels*, the sublevel set {p : r_p ≤ λ} of a
  per-pixel score map r (threshold, morph, rwcp). Guarantees ``"fnr"`` (E[FNR] ≤ α, the
  curve is the FNR at each λ) or ``"quantile"`` (P(coverage ≥ τ) ≥ 1 − α, a 0/1 curve).
  A family that declares a *signed* score t (:attr:`MaskFamily.two_sided`,
  :meth:`MaskFamily.signed_map`) also gives two-sided sets: an inner set I_μ = {t < −μ} that
  shrinks and an outer set O_μ = {t ≤ μ} that grows with μ ≥ 0, I_μ ⊆ O_μ (:func:`band_sets`).
* :class:`SegmentationSetFamily` — C_λ is a set of *segmentations* (consign, aps). The loss
  is 1{Y ∉ C_λ}, monotone in λ, so the curve is the 0/1 step at the case's score
  λ*_i = min{λ : Y ∈ C_λ} (+∞ when no λ reaches the truth); guarantee ``"contains"``. Their
  :meth:`~SegmentationSetFamily.predict` returns a :class:`SegmentationSet`: a sampler and
  a membership test, the capability that takes the place of a mask.

A family is a dataclass whose fields are its parameters, each declared once with
:func:`param` (default, meaning, range, CLI flag). The declaration gives the constructor,
the validation, ``params()`` (what calib.json records), the CLI flags and the help text.
Fields declared ``runtime=True`` (threads, batch sizes, cache locations) change how a result
is computed, never what it is: they are not recorded and not part of any cache key.

Adding a method = one new file with a registered subclass (``@register``), its tests and its
docs; nothing else is edited (docs/design.md, "How to add a method").
"""

from __future__ import annotations

import dataclasses
import json
import math
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import numpy as np
from numpy.typing import NDArray

from segcp.calibration import LossCurves, coverage_quantile_score, fnr_curve, zero_one_curve
from segcp.cases import Case, masked_values
from segcp.errors import SegcpError
from segcp.registry import Registry

__all__ = [
    "BAND_GUARANTEES",
    "GUARANTEES",
    "NOT_GIVEN",
    "MaskFamily",
    "Param",
    "Prepared",
    "SegmentationSet",
    "SegmentationSetFamily",
    "SetFamily",
    "agreement_param",
    "available_methods",
    "band_sets",
    "family_class",
    "get_method",
    "param",
    "register",
    "register_builtins",
    "register_lazy",
]

#: Guarantee name → what it states (``{alpha}``, ``{tau}``, ``{beta}`` are filled in).
GUARANTEES: dict[str, str] = {
    "fnr": "E[FNR] <= {alpha:g} (conformal risk control, marginal over exchangeable images)",
    "quantile": "P(coverage >= {tau:g}) >= {conf:g} (conformal quantile, marginal over exchangeable images)",
    "contains": (
        "P(the set contains a segmentation whose mean per-label recall of the truth exceeds "
        "{beta:g}) >= {conf:g} (conformal quantile, marginal over exchangeable images)"
    ),
    "band": "P(inner set in truth in outer set) >= {conf:g}; with tau < 1: outer recall and inner precision >= tau (conformal quantile)",
    "band-risk": "E[max(FNR of the outer set, min(1, |inner set outside the truth| / |truth|))] <= {alpha:g} (conformal risk control)",
}
#: The guarantees of two-sided sets (:attr:`MaskFamily.two_sided` families): their loss is the
#: registered loss of that name (:mod:`segcp.losses`) on the family's signed score, their set the
#: pair (inner, outer) at one λ (:func:`band_sets`).
BAND_GUARANTEES = ("band", "band-risk")

_KINDS = ("int", "float", "bool", "str", "choice", "mapping")


class _NotGiven:
    def __repr__(self) -> str:
        return "NOT_GIVEN"


#: "No value" for declaration fields where None is a value (:attr:`Param.unrecorded`).
NOT_GIVEN: Any = _NotGiven()


# ---------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class Param:
    """The declaration of one family parameter.

    Attributes
    ----------
    default : the value when the parameter is not given.
    help : one line: what it means, with units.
    kind : ``int``, ``float``, ``bool``, ``str``, ``choice`` (one of ``choices``) or ``mapping``
        (a dict of options the family validates itself, e.g. CONSIGN's search settings).
    low, high : inclusive bounds of a number (``low_open``/``high_open`` make them strict).
    optional : None is a valid value (``none_if`` lists values that also mean None, e.g. 0).
    flag : the CLI option that sets it (e.g. ``--se``), besides ``--param NAME=VALUE``.
    deprecated_flags : older spellings of ``flag``, accepted with a warning.
    deprecated_names : older names of the parameter (``-p OLD=…``, calib.json records written
        before the rename), read as this one (e.g. rwcp's ``beta`` → ``kernel_beta``).
    runtime : a run-time option (threads, cache…): not recorded in calib.json nor cache keys.
    location : the value may be a location on this machine (a checkpoint directory): a
        calibration record never supplies one — it must come from the user (``named`` lists
        the values that are names, not locations, e.g. ``dinov2-small``).
    unrecorded : the value a calibration record that lacks the parameter was calibrated with
        (records written before it existed; e.g. CONSIGN's ``box``, whose old behaviour is not
        the new default). :data:`NOT_GIVEN` (the default): such a record gets ``default``.
    """

    default: Any
    help: str
    kind: str = "float"
    choices: tuple[Any, ...] = ()
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    optional: bool = False
    none_if: tuple[Any, ...] = ()
    flag: str | None = None
    deprecated_flags: tuple[str, ...] = ()
    deprecated_names: tuple[str, ...] = ()
    runtime: bool = False
    location: bool = False
    named: tuple[str, ...] = ()
    unrecorded: Any = NOT_GIVEN

    def __post_init__(self) -> None:
        if self.kind not in _KINDS:
            raise ValueError(f"unknown parameter kind {self.kind!r}")

    def hint(self) -> str:
        """A short value hint for help texts, e.g. ``INT>=1`` or ``cross|square|ball``."""
        if self.kind == "choice":
            return "|".join(str(c) for c in self.choices)
        return {"int": "INT", "float": "NUMBER", "bool": "true|false", "str": "TEXT", "mapping": "KEY=VALUE..."}[self.kind]

    def describe(self) -> str:
        """What a valid value is, for error messages (``in [0, 1)``, ``a positive integer``…)."""
        if self.kind == "choice":
            return "one of " + ", ".join(str(c) for c in self.choices)
        if self.kind == "bool":
            return "true or false"
        if self.kind == "str":
            return "a non-empty string"
        if self.kind == "mapping":
            return "a mapping of options"
        lo, hi = self.low, self.high
        if lo is not None and hi is not None:
            return f"in {'(' if self.low_open else '['}{lo:g}, {hi:g}{')' if self.high_open else ']'}"
        if self.kind == "int":
            if lo == 1 and hi is None:
                return "a positive integer"
            if lo == 0 and hi is None:
                return "a non-negative integer"
            return "an integer" + (f" >= {lo:g}" if lo is not None else "") + (f" <= {hi:g}" if hi is not None else "")
        if lo is not None:
            return f"a number {'>' if self.low_open else '>='} {lo:g}"
        if hi is not None:
            return f"a number {'<' if self.high_open else '<='} {hi:g}"
        return "a number"

    def parse(self, family: str, name: str, value: Any) -> Any:
        """The validated value, or a one-line error naming the family, the parameter and why."""
        if value is None or (self.none_if and _is_in(value, self.none_if)):
            if self.optional:
                return None
            raise SegcpError(f"{family}: {name} must be {self.describe()}, got {value!r}")
        kind = self.kind
        if kind == "mapping":
            if isinstance(value, dict):
                return dict(value)
            raise SegcpError(f"{family}: {name} must be {self.describe()}, got {value!r}")
        if kind == "bool":
            if isinstance(value, (bool, np.bool_)):
                return bool(value)
            if isinstance(value, (int, np.integer)) and value in (0, 1):
                return bool(value)
            if isinstance(value, str) and value.strip().lower() in ("true", "false", "yes", "no", "1", "0"):
                return value.strip().lower() in ("true", "yes", "1")
            raise SegcpError(f"{family}: {name} must be {self.describe()}, got {value!r}")
        if kind == "choice":
            if isinstance(value, float) and math.isinf(value) and value > 0 and "inf" in self.choices:
                value = "inf"
            if isinstance(value, str) and value in self.choices:
                return value
            raise SegcpError(f"{family}: {name} must be {self.describe()}, got {value!r}")
        if kind == "str":
            if isinstance(value, (str, bytes)) or hasattr(value, "__fspath__"):
                text = str(value if not isinstance(value, bytes) else value.decode())
                if text:
                    return text
            raise SegcpError(f"{family}: {name} must be {self.describe()}, got {value!r}")
        # numbers
        if isinstance(value, (bool, np.bool_)):
            raise SegcpError(f"{family}: {name} must be a number, got {value!r}")
        try:
            num = float(value)
        except (TypeError, ValueError, OverflowError):
            raise SegcpError(f"{family}: {name} must be a number, got {value!r}") from None
        if not math.isfinite(num):
            raise SegcpError(f"{family}: {name} must be a finite number, got {value!r}")
        if kind == "int":
            if num != round(num):
                raise SegcpError(f"{family}: {name} must be an integer, got {value!r}")
            out: Any = round(num)
        else:
            out = num
        if self.low is not None and (out < self.low or (self.low_open and out == self.low)):
            raise SegcpError(f"{family}: {name} must be {self.describe()}, got {value!r}")
        if self.high is not None and (out > self.high or (self.high_open and out == self.high)):
            raise SegcpError(f"{family}: {name} must be {self.describe()}, got {value!r}")
        return out


def _is_in(value: Any, options: tuple[Any, ...]) -> bool:
    return any(type(value) is type(o) and value == o for o in options) or (
        not isinstance(value, (bool, np.bool_))
        and isinstance(value, (int, float))
        and any(isinstance(o, (int, float)) and not isinstance(o, bool) and value == o for o in options)
    )


def param(default: Any, help: str, **declaration: Any) -> Any:
    """Declare a family parameter: a dataclass field carrying its :class:`Param`."""
    return dataclasses.field(default=default, metadata={"segcp": Param(default, help, **declaration)})


# ---------------------------------------------------------------------------- per-case state
@dataclass(eq=False)
class Prepared:
    """A case together with what its family computed from it once (for repeated use).

    ``state`` is family-specific: the score map r of a :class:`MaskFamily`, a CONSIGN
    decomposition, APS entry levels. Made by :meth:`SetFamily.prepare`; every method of the
    family accepts a :class:`Prepared` wherever it accepts a :class:`~segcp.cases.Case`.
    """

    case: Case
    owner: str
    state: Any


# ---------------------------------------------------------------------------- the interface
@dataclass(repr=False)
class SetFamily(ABC):
    """A nested family of prediction sets C_λ built from one case (see the module docstring).

    Subclasses set the class attributes, declare their parameters with :func:`param`, and
    implement :meth:`loss_curve` and :meth:`predict`.
    """

    #: The registered name (CLI ``--method``, calib.json ``method``).
    name: ClassVar[str]
    #: One line for ``segcp methods``.
    summary: ClassVar[str] = ""
    #: The range of λ; ``lambda_min`` is λ̂ when the bound holds before any breakpoint.
    lambda_min: ClassVar[float] = -np.inf
    lambda_max: ClassVar[float] = np.inf
    #: The guarantees the family supports; the first is the default.
    guarantees: ClassVar[tuple[str, ...]] = ("fnr", "quantile")
    #: The ground truth it is calibrated against: ``"mask"`` (binary) or ``"label_map"``.
    truth: ClassVar[str] = "mask"
    #: What the family reads from a case (and from a data directory: the folder of each).
    inputs: ClassVar[tuple[str, ...]] = ("probs",)
    #: True when C_λ = {p : 1 − s_p ≤ λ} for a probability-like map s: λ is one minus a
    #: probability threshold, on [0, 1] (figures plot set size against λ for these families).
    lambda_is_threshold: ClassVar[bool] = False
    #: True when a case's state (score map) is slow to compute — an encoder runs — so that
    #: harnesses keep it (content-keyed caches) and batch it (:meth:`precompute`).
    slow_state: ClassVar[bool] = False

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            decl = f.metadata.get("segcp")
            if decl is not None:
                setattr(self, f.name, decl.parse(self.name, f.name, getattr(self, f.name)))
        self.validate()

    def validate(self) -> None:
        """Checks across parameters (after each was parsed); raise a one-line SegcpError."""

    # ------------------------------------------------------------------ declared capabilities
    @property
    def agreement_level(self) -> float | None:
        """β, the agreement level up to which a set of segmentations contains a truth (None for
        pixel sets, whose sets are masks)."""
        return None

    def precompute(self, cases: Sequence[Case]) -> None:
        """Compute, in batches, the costly per-case inputs of these cases ahead of
        :meth:`prepare` (e.g. encoder features into a shared cache). Default: nothing to do."""

    @property
    def shares_state_on_disk(self) -> bool:
        """True when what :meth:`precompute` computes is kept in a disk cache that other
        processes read (so precomputing in one process serves a pool of workers)."""
        return False

    @property
    def threads(self) -> int | None:
        """The run-time thread count: None here; a family with one declares a ``threads`` parameter."""
        return None

    def with_threads(self, threads: int) -> SetFamily:
        """This family with its run-time thread count set to ``threads`` when it has one and the
        user left it unset (a worker process of N on N cores); else itself. Never changes a set."""
        decl = self.declared().get("threads")
        if decl is None or not decl.runtime or self.threads is not None:
            return self
        changes: dict[str, Any] = {"threads": int(threads)}  # a field of the subclass (declared: checked above)
        return dataclasses.replace(self, **changes)

    @classmethod
    def normalize_params(cls, params: dict[str, Any]) -> dict[str, Any]:
        """Map user-facing parameter spellings onto the declared ones (default: the declared
        ``deprecated_names`` renamed, the rest unchanged).

        E.g. CONSIGN accepts its search settings flat (``n_screen=64``) and nests them.
        """
        p = dict(params)
        for old, key in cls.renamed_params().items():
            if old in p:
                if key in p:
                    raise SegcpError(f"{cls.name}: give {key} only ({old} is its old name)")
                p[key] = p.pop(old)
        return p

    @classmethod
    def renamed_params(cls) -> dict[str, str]:
        """Old parameter name → declared name, from the declarations' ``deprecated_names``."""
        return {old: key for key, d in cls.declared().items() for old in d.deprecated_names}

    def bind_alpha(self, alpha: float) -> SetFamily:
        """The family used to calibrate at risk level α (default: itself).

        A family whose sets depend on α (CONSIGN's box from the α/2 quantiles, by default)
        returns a copy with that dependence resolved; calibration then builds its curves per
        distinct bound family.
        """
        return self

    # ------------------------------------------------------------------ parameters
    @classmethod
    def declared(cls) -> dict[str, Param]:
        """Every declared parameter, in declaration order."""
        return {f.name: f.metadata["segcp"] for f in dataclasses.fields(cls) if "segcp" in f.metadata}

    def params(self) -> dict[str, Any]:
        """JSON-serialisable parameters that define the sets (what calib.json records)."""
        return {k: getattr(self, k) for k, d in self.declared().items() if not d.runtime}

    def identity(self) -> dict[str, Any]:
        """What must be the same at prediction time beyond the parameters (e.g. the encoder's
        weights checksum); recorded in calib.json and checked by :meth:`check_identity`."""
        return {}

    def cache_identity(self) -> dict[str, Any]:
        """What, besides :meth:`params`, decides this family's score maps bit for bit (the key of
        content-addressed caches such as ``segcp benchmark``'s; default :meth:`identity`)."""
        return self.identity()

    def check_identity(self, recorded: dict[str, Any], where: str) -> None:
        """One-line error when this family's :meth:`identity` differs from a recorded one."""
        mine = self.identity()
        for key, value in recorded.items():
            if key in mine and mine[key] != value:
                raise SegcpError(
                    f"{where}: {self.name}'s {key} here is {mine[key]!r}, but the calibration used {value!r}; "
                    "predict with the same model and weights as the calibration"
                )

    @property
    def key(self) -> str:
        """Identity of the family and its parameters (owner of :class:`Prepared` states)."""
        return json.dumps([self.name, self.params()], sort_keys=True, default=str)

    @property
    def integer_lambda(self) -> bool:
        """True when λ̂ only takes integer values (e.g. a number of dilations)."""
        return False

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"

    # ------------------------------------------------------------------ inputs
    def folders(self, available: Collection[str]) -> list[str]:
        """The data-directory folders this family reads, given those that exist."""
        return list(self.inputs)

    def spacing_advice(self, spacing: Sequence[float] | None) -> str | None:
        """A warning for data of this voxel ``spacing`` (one size per axis, mm), or None: what a
        command says once before calibrating (default: nothing)."""
        return None

    def check_case(self, case: Case) -> None:
        """One-line error when ``case`` lacks an input this family reads."""
        for what in self.inputs:
            if getattr(case, what, None) is None:
                raise SegcpError(f"{case.where or 'case ' + case.id}: {self.name} needs {what} (Case({what}=...), or {what}/ in the data directory)")

    def _case(self, item: Case | Prepared) -> Case:
        return item.case if isinstance(item, Prepared) else item

    def _state(self, item: Case | Prepared) -> Any:
        """The prepared state of ``item`` (computed now for a bare case)."""
        if isinstance(item, Prepared):
            if item.owner != self.key:
                raise SegcpError(f"case {item.case.id}: prepared by another family or parameters ({item.owner})")
            return item.state
        return self.compute_state(item)

    def compute_state(self, case: Case) -> Any:
        """The per-case state :meth:`prepare` keeps (override; default: nothing)."""
        return None

    def prepare(self, case: Case | Prepared) -> Prepared:
        """Compute the per-case state once, for repeated calibration and prediction."""
        if isinstance(case, Prepared):
            self._state(case)  # checks the owner
            return case
        self.check_case(case)
        return Prepared(case, self.key, self.compute_state(case))

    def case_from_arrays(self, x: NDArray[Any], truth: NDArray[Any] | None, ident: str) -> Case:
        """A case from a bare array of the family's first input (and its truth, if any)."""
        arrays: dict[str, Any] = {self.inputs[0]: x, self.truth: truth}
        return Case(ident, **arrays)

    def truth_of(self, case: Case) -> NDArray[Any]:
        """The case's ground truth (mask or label map), or a one-line error."""
        t = getattr(case, self.truth)
        if t is None:
            raise SegcpError(f"case {case.id}: calibration needs a ground truth ({self.truth})")
        return t

    # ------------------------------------------------------------------ the family
    @abstractmethod
    def loss_curve(self, item: Case | Prepared, guarantee: str | None = None, tau: float = 1.0) -> LossCurves:
        """The case's loss as a non-increasing step function of λ (needs its truth)."""

    @abstractmethod
    def predict(self, item: Case | Prepared, lam: float) -> Any:
        """The set C_λ of the case."""

    def statement(self, guarantee: str, alpha: float, tau: float = 1.0) -> str:
        """The guarantee, in words, for calib.json and reports."""
        beta = self.agreement_level
        return GUARANTEES[guarantee].format(alpha=alpha, conf=1 - alpha, tau=tau, beta=float("nan") if beta is None else beta)

    def check_guarantee(self, guarantee: str | None) -> str:
        """The guarantee to use (the family's default for None), or a one-line error."""
        g = self.guarantees[0] if guarantee is None else guarantee
        if g not in self.guarantees:
            raise SegcpError(f"unknown guarantee {g!r} for {self.name}; choose one of {', '.join(self.guarantees)}")
        return g

    def infeasible(self, curves: LossCurves, alpha: float) -> str | None:
        """A family-specific explanation when no λ meets the bound (None: the generic one)."""
        return None


class MaskFamily(SetFamily):
    """A nested family of pixel sets C_λ = {p : r_p ≤ λ} from a per-pixel score map r.

    Nestedness is automatic; the FNR curve of a case is read off the scores of its
    ground-truth pixels. Subclasses implement :meth:`score_map`, and may override
    :meth:`truth_scores` (when those are cheaper than the whole map) and :meth:`predict`.
    """

    def compute_state(self, case: Case) -> NDArray[np.float64]:
        return self.score_map(case)

    @abstractmethod
    def score_map(self, case: Case) -> NDArray[np.float64]:
        """Nonconformity r, float64, same shape as ``case.probs``; C_λ = {r ≤ λ}."""

    def scores(self, item: Case | Prepared) -> NDArray[np.float64]:
        """The score map of a case (the prepared one when given a :class:`Prepared`)."""
        return self._state(item) if isinstance(item, Prepared) else self.score_map(item)

    def predict(self, item: Case | Prepared, lam: float) -> NDArray[np.bool_]:
        """The set C_λ for this case, bool array shaped like ``case.probs``."""
        return self.scores(item) <= lam

    def truth_scores(self, case: Case) -> NDArray[np.float64]:
        """r at the ground-truth pixels of ``case`` (1-D; +inf = never in the set).

        Override when they can be computed more cheaply than the whole score map.
        """
        return masked_values(self.score_map(case), self.truth_of(case))

    # ------------------------------------------------------------------ two-sided sets
    #: The family declares a signed score t (:meth:`signed_map`): two-sided sets
    #: I_μ = {t < −μ} ⊆ O_μ = {t ≤ μ}, μ ≥ 0, meeting at the family's own mask at μ = 0.
    two_sided: ClassVar[bool] = False
    #: The μ from which the two-sided sets no longer change (O = every voxel with a finite t,
    #: I = ∅): ½ for the probability families, +∞ for margins.
    band_lambda_max: ClassVar[float] = np.inf

    def signed_map(self, case: Case) -> NDArray[np.float64]:
        """The signed score t of ``case``: float64, shape of ``case.probs``; the outer set is
        O_μ = {t ≤ μ} and the inner set I_μ = {t < −μ} (μ ≥ 0), so t < 0 marks the voxels the
        family's own mask holds and |t| how far μ must go to drop them from I (t < 0) or add
        them to O (t > 0). +∞: never in O; −∞: always in I. Families that declare
        :attr:`two_sided` implement it; others raise a one-line error."""
        raise SegcpError(f"{self.name}: no two-sided sets (the family declares no signed score)")

    def check_two_sided(self) -> None:
        """One-line error when the family gives no two-sided sets."""
        if not self.two_sided:
            raise SegcpError(f"{self.name}: no two-sided sets (the family declares no signed score); use threshold, morph or rwcp")

    def predict_band(
        self, item: Case | NDArray[np.float64], lam_out: float, lam_in: float | None = None
    ) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
        """The inner and outer sets (I, O) of a case (or of its signed map t, a float64 array)
        at λ_out and λ_in (λ_in = λ_out when not given: the one-λ band); bool arrays of the
        case's shape, I ⊆ O (:func:`band_sets`)."""
        self.check_two_sided()
        t = item if isinstance(item, np.ndarray) else self.signed_map(self._case(item))
        return band_sets(t, lam_out, lam_out if lam_in is None else lam_in)

    def loss_curve(self, item: Case | Prepared, guarantee: str | None = None, tau: float = 1.0) -> LossCurves:
        """This case's loss as a step function of λ.

        Two-sided guarantees (``band``, ``band-risk``) are losses of the signed score t
        (:meth:`signed_map`): the estimator takes their curves from :mod:`segcp.losses`
        (:func:`segcp.losses.guarantee_loss`), not from here.
        ``guarantee="fnr"``: L(λ) = FNR of C_λ (risk control, E[FNR] ≤ α).
        ``guarantee="quantile"``: L(λ) = 1{coverage of C_λ < τ} (conformal quantile,
        P(coverage ≥ τ) ≥ 1 − α; exact CRC on 0/1 curves is the conformal quantile).
        """
        g = self.check_guarantee(guarantee)
        case = self._case(item)
        if g in BAND_GUARANTEES:
            raise SegcpError(f"{g}: a two-sided loss of the signed score; use segcp.losses.guarantee_loss({g!r}).curve(signed_map, truth)")
        if isinstance(item, Prepared):
            truth = masked_values(self._state(item), self.truth_of(case))
        else:
            truth = self.truth_scores(case)
        if g == "fnr":
            return fnr_curve(truth)
        return zero_one_curve(coverage_quantile_score(truth, tau))


def band_sets(t: NDArray[np.float64], lam_out: float, lam_in: float) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """The two-sided sets of a signed score map t (float64, any shape): the inner set
    I = {t < −λ_in} and the outer set O = {t ≤ λ_out}, bool arrays of t's shape.

    I ⊆ O whenever λ_in, λ_out ≥ 0 (a voxel with t < −λ_in ≤ 0 ≤ λ_out is in O); both are
    refused below 0. The inner set is a strict sublevel set so that "I ⊆ Y" holds from a
    threshold on (right-continuous in λ_in, as every loss curve): I ⊆ Y ⇔ λ_in ≥ max over the
    voxels outside Y of −t.

    Examples
    --------
    >>> import numpy as np
    >>> t = np.array([-0.4, -0.1, 0.0, 0.2, 0.45])
    >>> inner, outer = band_sets(t, 0.2, 0.2)
    >>> inner.astype(int).tolist(), outer.astype(int).tolist()
    ([1, 0, 0, 0, 0], [1, 1, 1, 1, 0])
    """
    lo, li = float(lam_out), float(lam_in)
    if not (lo >= 0 and li >= 0):
        raise SegcpError(f"two-sided sets need lambda_out, lambda_in >= 0, got {lam_out!r}, {lam_in!r}")
    return t < -li, t <= lo


@dataclass(eq=False)
class SegmentationSet:
    """A calibrated set of segmentations C_λ of one case: a sampler and a membership test."""

    family: SegmentationSetFamily
    item: Case | Prepared
    lam: float

    def sample(self, n_draws: int, seed: int | np.random.Generator | None = 0) -> NDArray[np.int64]:
        """``n_draws`` segmentations (S, *spatial) drawn from the set (label maps)."""
        return self.family.sample(self.item, self.lam, n_draws, seed)

    def contains(self, truth: NDArray[Any] | None = None) -> bool:
        """Whether the set contains ``truth`` (default: the case's own) up to the family's β."""
        return self.family.contains(self.item, self.lam, truth)


def agreement_param() -> Any:
    """Declare ``beta``, the agreement level of a :class:`SegmentationSetFamily` (the same meaning,
    default, range and flag in every family that has one)."""
    return param(
        0.9,
        "agreement level: the set contains Y when a member's mean per-label recall exceeds beta",
        low=0.0,
        high=1.0,
        high_open=True,
        flag="--beta",
    )


@dataclass(repr=False)
class SegmentationSetFamily(SetFamily):
    """A nested family of sets of segmentations, calibrated through its 0/1 loss.

    The loss of a case is 1{Y ∉ C_λ}: a step from 1 to 0 at the case's score
    λ*_i = :meth:`score` (+∞ when the truth is out of reach), so exact CRC on these curves is
    the conformal quantile of the scores and P(Y ∈ C_λ̂) ≥ 1 − α. Subclasses implement
    :meth:`score` and :meth:`sample`, and declare ``beta`` (agreement level) among their
    parameters with :func:`agreement_param`.
    """

    guarantees: ClassVar[tuple[str, ...]] = ("contains",)
    truth: ClassVar[str] = "label_map"
    lambda_min: ClassVar[float] = 0.0

    def __post_init__(self) -> None:
        if "beta" not in self.declared():
            raise TypeError(f"{type(self).__name__}: a set-of-segmentations family declares its agreement level 'beta'")
        super().__post_init__()

    @property
    def agreement_level(self) -> float:
        """β: the set contains Y when one of its members' mean per-label recall of Y exceeds β."""
        return float(self.params()["beta"])  # declared by every subclass (checked in __post_init__)

    @abstractmethod
    def score(self, item: Case | Prepared, truth: NDArray[Any] | None = None) -> float:
        """λ*: the smallest λ whose set contains ``truth`` (default: the case's) up to β."""

    @abstractmethod
    def sample(self, item: Case | Prepared, lam: float, n_draws: int, seed: int | np.random.Generator | None = 0) -> NDArray[np.int64]:
        """``n_draws`` segmentations (S, *spatial) from C_λ of the case."""

    def contains(self, item: Case | Prepared, lam: float, truth: NDArray[Any] | None = None) -> bool:
        """Y ∈ C_λ up to β (the event the guarantee is about)."""
        return bool(self.score(item, truth) <= float(lam))

    def loss_curve(self, item: Case | Prepared, guarantee: str | None = None, tau: float = 1.0) -> LossCurves:
        self.check_guarantee(guarantee)
        return zero_one_curve(self.score(item))

    def predict(self, item: Case | Prepared, lam: float) -> SegmentationSet:
        return SegmentationSet(self, item, float(lam))

    def infeasible(self, curves: LossCurves, alpha: float) -> str | None:
        n_inf = int(np.sum(curves.ends() > 0.5))
        return (
            f"{self.name}: {n_inf} of {curves.n} calibration truths are never in the set "
            f"(up to lambda_max), more than alpha={alpha:g} allows: no finite lambda gives the "
            f"guarantee; lower beta, use more components K, or raise lambda_max"
        )


# ---------------------------------------------------------------------------- registry
_FAMILIES: Registry[SetFamily] = Registry("method")
F = TypeVar("F", bound=type[SetFamily])


def register(cls: F) -> F:
    """Class decorator: make a family available by its ``name`` (CLI, calib.json)."""
    _FAMILIES.register(cls)
    return cls


#: Make a name available now and import its module (which registers it) on first use.
register_lazy = _FAMILIES.register_lazy
#: A package's built-in families (name → ``"module:Class"``), each imported on first use; returns its ``__getattr__``.
register_builtins = _FAMILIES.builtins
#: Names of the registered families, sorted.
available_methods = _FAMILIES.names
#: The registered class of a name, or a one-line error listing the available ones.
family_class = _FAMILIES.get_class


def get_method(name: str, **params: Any) -> SetFamily:
    """Instantiate a registered family by name with its parameters."""
    cls = family_class(name)
    params = cls.normalize_params(params)
    unknown = sorted(set(params) - set(cls.declared()))
    if unknown:
        raise SegcpError(f"method {name!r}: bad parameters {params}: unknown {', '.join(unknown)} (known: {', '.join(cls.declared()) or 'none'})")
    return cls(**params)
