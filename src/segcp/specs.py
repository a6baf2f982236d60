"""Labelled method settings for comparisons and tuning, and their text form on the CLI.

* :class:`MethodSpec` — one row of a comparison: a display label, a family name, its
  parameters and the guarantee — or a controlled loss (``loss``, ``loss_params``, ``delta``,
  ``pvalue``); :meth:`MethodSpec.estimator` gives the
  :class:`~segcp.conformal.ConformalSegmenter` that calibrates it (a controlled loss: the
  :class:`~segcp.risk.RiskSegmenter`).
* :class:`TunedSpec` — a row whose setting is chosen per calibration set among candidates
  (:mod:`segcp.tuning`).
* :func:`parse_params`, :func:`parse_spec` — ``KEY=VALUE`` and
  ``NAME[:KEY=VALUE,...][@LABEL]`` (a value ``V1|V2|...`` makes a tuned row; ``loss=fdr,delta=0.1``
  a controlled-loss row).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from segcp.errors import SegcpError

__all__ = [
    "CRITERIA",
    "LOSS_KEYS",
    "MethodSpec",
    "TunedSpec",
    "check_criterion",
    "expand_grid",
    "grid_candidates",
    "loss_fields",
    "parse_params",
    "parse_spec",
    "parse_value",
]

#: Tuning criterion → (better is higher?, description).
CRITERIA: dict[str, tuple[bool, str]] = {
    "dice": (True, "mean Dice of the held-out folds' sets (higher is better)"),
    "hd95": (False, "mean HD95 of the held-out folds' sets (lower is better)"),
    "stretch": (False, "mean stretch |C| / |Y_hat| (the set against the model's own mask) of the held-out folds' sets (lower is better)"),
    "truth_ratio": (False, "mean |C| / |Y| (the set against the true structure) of the held-out folds' sets (lower is better)"),
}


def check_criterion(criterion: str) -> bool:
    """Whether higher is better for ``criterion``, or a one-line error for an unknown one."""
    if criterion not in CRITERIA:
        raise SegcpError(f"unknown tuning criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    return CRITERIA[criterion][0]


@dataclass(frozen=True)
class MethodSpec:
    """One method family of a comparison: a display label and how to build it.

    ``guarantee`` None means the family's default (fnr for pixel sets, contains for sets of
    segmentations). ``loss`` names a registered loss controlled instead (a *controlled-loss
    row*, :class:`~segcp.risk.RiskSegmenter`): with its ``loss_params``, exact CRC without
    ``delta``, Learn then Test with ``delta`` (``pvalue``: ``hb`` or ``wsr``).
    """

    label: str
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    guarantee: str | None = None
    tau: float = 1.0
    loss: str | None = None
    loss_params: dict[str, Any] = field(default_factory=dict)
    delta: float | None = None
    pvalue: str = "hb"

    def estimator(self, alpha: float | Sequence[float] = 0.1) -> Any:
        """The :class:`~segcp.conformal.ConformalSegmenter` of this setting at ``alpha`` (a controlled-loss
        row: the :class:`~segcp.risk.RiskSegmenter`)."""
        if self.loss is not None:
            from segcp.risk import RiskSegmenter

            if self.guarantee is not None:
                raise SegcpError(f"{self.label}: give a guarantee or a controlled loss, not both (guarantee={self.guarantee}, loss={self.loss})")
            return RiskSegmenter(
                self.method,
                alpha,
                loss=self.loss,
                loss_params=dict(self.loss_params),
                delta=self.delta,
                pvalue=self.pvalue,
                method_params=dict(self.params),
            )
        if self.loss_params or self.delta is not None:
            raise SegcpError(f"{self.label}: delta and loss parameters are for a controlled loss; give loss=NAME")
        from segcp.conformal import ConformalSegmenter

        return ConformalSegmenter(self.method, alpha, guarantee=self.guarantee, tau=self.tau, method_params=dict(self.params))

    def build(self) -> Any:
        """The family of this setting (validated; a controlled-loss row: its loss, δ and p-value too)."""
        est = self.estimator()
        if self.loss is not None:
            est.validate()
        return est.family

    @property
    def candidates(self) -> tuple[MethodSpec, ...]:
        """The settings a row of this spec calibrates: itself (a :class:`TunedSpec`: its candidates)."""
        return (self,)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.loss is None:  # a controlled-loss row's keys only where there is one
            for k in ("loss", "loss_params", "delta", "pvalue"):
                d.pop(k)
            if d["guarantee"] is None:
                d["guarantee"] = self.build().guarantees[0]
        return d


@dataclass(frozen=True)
class TunedSpec:
    """A method family whose setting is chosen per calibration set among ``candidates``."""

    label: str
    candidates: tuple[MethodSpec, ...]
    criterion: str = "dice"
    folds: int = 5
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.candidates:
            raise SegcpError(f"{self.label}: no candidate settings to tune over")
        check_criterion(self.criterion)
        if isinstance(self.folds, bool) or not isinstance(self.folds, int) or self.folds < 2:
            raise SegcpError(f"tuning needs at least 2 folds, got {self.folds!r}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "tuned": True,
            "criterion": self.criterion,
            "folds": self.folds,
            "seed": self.seed,
            "candidates": [c.to_dict() for c in self.candidates],
        }


def expand_grid(base: dict[str, Any], grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Cartesian product of ``grid`` values on top of ``base`` params (grid order kept)."""
    keys = list(grid)
    return [base | dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def parse_value(raw: str) -> Any:
    """A command-line value: int, float, true/false, or the string itself."""
    for conv in (int, float):
        try:
            return conv(raw)
        except ValueError:
            continue
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    return raw


def parse_params(items: Sequence[str] | None, option: str = "--param") -> dict[str, Any]:
    """``KEY=VALUE`` pairs → dict, VALUE parsed by :func:`parse_value`; ``-`` in keys → ``_``."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, eq, raw = item.partition("=")
        if not eq or not key.strip():
            raise SegcpError(f"{option} {item!r}: expected KEY=VALUE")
        out[key.strip().replace("-", "_")] = parse_value(raw)
    return out


def grid_values(key: str, raw: str) -> tuple[str, list[Any]]:
    """``KEY``, ``V1|V2|...`` → (normalised key, parsed values)."""
    return key.strip().replace("-", "_"), [parse_value(v) for v in raw.split("|")]


def _tau(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SegcpError(f"{where}: tau must be a number in (0, 1], got {value!r}")
    return float(value)


def grid_candidates(name: str, params: dict[str, Any], grid: dict[str, list[Any]]) -> list[MethodSpec]:
    """One MethodSpec per combination of ``grid`` on top of ``params`` (``guarantee``/``tau`` keys
    set the guarantee; the label names the grid values)."""
    params = dict(params)
    guarantee = params.pop("guarantee", None)
    tau = _tau(params.pop("tau", 1.0), f"method {name}")
    return [
        MethodSpec(", ".join(f"{k}={p[k]}" for k in grid), name, p, None if guarantee is None else str(guarantee), tau)
        for p in expand_grid(params, grid)
    ]


#: The keys of a method's text form that make a controlled-loss row (the loss's own parameters besides).
LOSS_KEYS = ("loss", "delta", "pvalue")


def loss_fields(method: str, params: dict[str, Any], where: str) -> dict[str, Any]:
    """Take a controlled loss's keys out of ``params`` (in place): ``loss``, ``delta``, ``pvalue`` and every
    key the loss declares and the family does not (a key both declare is an error). Returns MethodSpec's
    ``loss``, ``loss_params``, ``delta``, ``pvalue`` ({} without ``loss``)."""
    if "loss" not in params:
        extra = [k for k in LOSS_KEYS if k in params]
        if extra:
            raise SegcpError(f"{where}: {extra[0]} is for a controlled loss; give loss=NAME too")
        return {}
    from segcp.losses import loss_class
    from segcp.methods import family_class

    loss = str(params.pop("loss"))
    declared, family = loss_class(loss).declared(), family_class(method).declared()
    both = sorted(k for k in params if k in declared and k in family)
    if both:
        raise SegcpError(f"{where}: {both[0]} is a parameter of both {method} and loss {loss}")
    delta = params.pop("delta", None)
    if delta is not None and (isinstance(delta, bool) or not isinstance(delta, (int, float))):
        raise SegcpError(f"{where}: delta must be a number in (0, 1), got {delta!r}")
    out = {"loss": loss, "loss_params": {k: params.pop(k) for k in list(params) if k in declared}}
    return out | {"delta": None if delta is None else float(delta), "pvalue": str(params.pop("pvalue", "hb"))}


def parse_spec(text: str) -> MethodSpec | TunedSpec:
    """``NAME[:KEY=VALUE,...][@LABEL]`` → MethodSpec (``guarantee``/``tau`` keys set the guarantee;
    ``loss``, ``delta``, ``pvalue`` and the loss's parameters a controlled loss, :func:`loss_fields`).

    A value ``V1|V2|...`` makes a tuned row (:class:`TunedSpec`): every combination of the
    ``|`` values is a candidate, chosen per split by cross-validation on the calibration
    images (``criterion=dice|hd95|stretch|truth_ratio``, ``folds=K`` set how).
    """
    label = None
    if "@" in text:
        text, label = text.split("@", 1)
    name, _, rest = text.partition(":")
    name = name.strip()
    pairs = [kv for kv in rest.split(",") if kv] if rest else []
    grid: dict[str, list[Any]] = {}
    fixed = []
    for kv in pairs:
        key, eq, raw = kv.partition("=")
        if eq and "|" in raw:
            k, values = grid_values(key, raw)
            grid[k] = values
        else:
            fixed.append(kv)
    params = parse_params(fixed, option=f"-m {name}")
    criterion = str(params.pop("criterion", "dice"))
    folds = params.pop("folds", 5)
    if isinstance(folds, bool) or not isinstance(folds, int):
        raise SegcpError(f"-m {text!r}: folds must be an integer, got {folds!r}")
    if not grid:
        shown = dict(params)  # the default label names the guarantee too: threshold and threshold:guarantee=band are two rows
        guarantee = params.pop("guarantee", None)
        tau = _tau(params.pop("tau", 1.0), f"-m {text!r}")
        controlled = loss_fields(name, params, f"-m {text!r}")
        if label is None:
            label = name + (" (" + ", ".join(f"{k}={v}" for k, v in shown.items()) + ")" if shown else "")
        return MethodSpec(label, name, params, None if guarantee is None else str(guarantee), tau, **controlled)
    if any(k in params for k in LOSS_KEYS):
        raise SegcpError(f"-m {text!r}: a controlled-loss row cannot be tuned (give fixed values, no V1|V2)")
    cands = tuple(grid_candidates(name, params, grid))
    if label is None:
        label = f"{name} (tuned: " + ", ".join(grid) + ")"
    return TunedSpec(label, cands, criterion=criterion, folds=folds)
