"""The calibration record (calib.json): every form written, read and validated here.

A calibration record is data from elsewhere, not code: every field is checked for its type
and range before anything is built from it; run-time options (threads, cache locations) are
never taken from it; and this module is the ONE place that turns record fields into
anything that touches the file system or the data — structure names into folder names
(:func:`folder_name`: a fixed safe form, collisions refused) and labels into channels (checked
against the stack actually read, :func:`segcp.cases.channel_of`). A record is accepted only if
a calibration could have produced it: n and α consistent with the bound, every number finite
and in range, λ̂ inside the family's range.

Schema ``segcp.calibration`` version 2 (one estimator, written by
:meth:`ConformalSegmenter.to_dict <segcp.conformal.ConformalSegmenter.to_dict>` through
:func:`estimator_record`)::

    schema, schema_version, segcp_version
    method          a registered family name
    params          the family's declared (non-run-time) parameters
    identity        what besides the parameters must match at prediction (weights checksum)
    guarantee       fnr | quantile | contains | band | band-risk;  tau (quantile, band)
    alpha, lambda   numbers, or lists of the same length (one λ̂ per α)
    n               calibration cases (an integer, 1 ≤ n ≤ 2^31 − 1, n ≥ 1/α − 1 at each α)
    empirical_risk  R̂_n(λ̂) in [0, 1], per α
    bound           n/(n+1)·R̂_n(λ̂) + 1/(n+1) ≤ α, per α
    statement       the guarantee in words, per α
    scores          0/1 losses only: each calibration case's λ*_i (null = +inf)
    curves          only when λ̂ came from compact curves: {"form": "compact", "grid":
                    {"lo", "hi", "size"}} (λ̂ is a grid point, at most one step above exact)
    volume          two-sided sets (guarantee band | band-risk) of a directory job: the direct
                    volume interval {"score", "unit", "n", "q" (per α), "statement"}
                    (:func:`read_volume`)

A directory job (:func:`job_record`) adds ``label`` (the structure of ``--label``, or null),
``probs_channels``/``channel_axis`` (class stacks, ``"first"`` (L, *S) or ``"last"``),
``source``, ``data``, ``ids`` and ``seconds``. A per-structure record (``--labels``) holds
the fields every structure shares once (:data:`SHARED_FIELDS`) and, in ``structures``, per
structure ``label``, ``name`` (its folder name), ``images_with_structure`` and its own
``lambda``, ``empirical_risk``, ``bound``, ``statement`` (and ``scores``, ``curves``…).

Records without ``schema`` are version 1 (segcp ≤ 0.1.0 before this field): read the same
way; the multi-class records of that version carried ``guarantee: "set contains the truth up
to beta"`` (read as ``contains``) and a top-level ``beta`` (the same as ``params.beta``). A
declared parameter missing from ``params`` (added after the record was written) gets the
value the record was calibrated with: its declared ``unrecorded`` value when it has one
(CONSIGN's ``box``: ``normalized``), else its default.
"""

from __future__ import annotations

import itertools
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segcp._version import __version__
from segcp.calibration import INTERVAL_SCORES, TOL, min_calibration_size
from segcp.calibration.compact import Grid
from segcp.errors import SegcpError
from segcp.io.readers import read_json
from segcp.methods import SetFamily, family_class, get_method
from segcp.methods.base import BAND_GUARANTEES, NOT_GIVEN

__all__ = [
    "MAX_N",
    "SCHEMA",
    "SHARED_FIELDS",
    "VERSION",
    "Calibration",
    "Structure",
    "check_structures",
    "estimator_record",
    "folder_name",
    "job_record",
    "read_calibration",
    "read_record",
    "read_risk_record",
    "risk_record",
]

SCHEMA = "segcp.calibration"
VERSION = 2
_OLD_GUARANTEES = {"set contains the truth up to beta": "contains"}

#: The largest n a record may claim (what a calibration could have read; an int32 count).
MAX_N = 2**31 - 1
#: Label values of structures: what a label map of uint16 holds.
MAX_LABEL = 2**16 - 1
#: The fields every structure of a per-structure record shares (written once, at the top).
SHARED_FIELDS = ("schema", "schema_version", "segcp_version", "method", "params", "guarantee", "tau", "alpha", "n")
#: The fields a directory job adds to the estimator's record.
JOB_FIELDS = ("label", "probs_channels", "channel_axis", "source", "data", "ids", "seconds", "ndim")
_STRUCTURE_KEYS = ("label", "name", "images_with_structure")


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------------------- names and labels
#: Names Windows reserves for devices (with any extension), refused as folder names everywhere.
_RESERVED = {"con", "prn", "aux", "nul", *(f"com{i}" for i in range(10)), *(f"lpt{i}" for i in range(10))}
_MAX_NAME = 64


def folder_name(name: str, value: int) -> str:
    """The folder name of a structure called ``name`` with label ``value``: ASCII letters,
    digits, ``-``, ``_`` and inner dots only (every other character becomes ``_``), no leading
    or trailing dot, underscore or dash, at most 64 characters, never a name Windows reserves
    (``CON``, ``NUL``, ``COM1``… get a trailing ``_``); ``label<value>`` when nothing is left.
    So never a path separator, ``..``, a drive, a control character or an empty name."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", str(name))
    safe = re.sub(r"\.{2,}", ".", safe).strip("._-")[:_MAX_NAME].strip("._-")
    if not safe:
        return f"label{int(value)}"
    if safe.split(".")[0].lower() in _RESERVED:
        safe += "_"
    return safe


@dataclass(frozen=True)
class Structure:
    """One structure of a per-structure calibration: its label value and its folder name
    (always :func:`folder_name`'s safe form: build it with :meth:`make`)."""

    value: int
    name: str

    @classmethod
    def make(cls, value: int, name: str) -> Structure:
        """The structure of label ``value`` named ``name`` (made safe for a folder)."""
        return cls(int(value), folder_name(name, int(value)))

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.value, "name": self.name}


def check_structures(structures: Sequence[Structure], where: str, reserved: Sequence[str] = ()) -> list[Structure]:
    """``structures`` if their labels and folder names are distinct (names compared without
    case: case-insensitive file systems) and no name is in ``reserved`` (folders the job itself
    writes); else a one-line error naming ``where``."""
    seen_values: set[int] = set()
    seen_names: dict[str, str] = {}
    taken = {r.lower() for r in reserved}
    for s in structures:
        if s.value in seen_values:
            raise SegcpError(f"{where}: label {s.value} appears twice")
        key = s.name.lower()
        if key in seen_names:
            raise SegcpError(f"{where}: structures {seen_names[key]!r} and {s.name!r} would share the folder {s.name!r}; rename one")
        if key in taken:
            raise SegcpError(f"{where}: a structure named {s.name!r} would collide with the output's own {s.name!r}; rename it")
        seen_values.add(s.value)
        seen_names[key] = s.name
    return list(structures)


# ---------------------------------------------------------------------------- numbers
def _number(value: Any, field: str, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SegcpError(f"{where}: field {field!r} must be a number, got {_short(value)}")
    try:
        v = float(value)
    except OverflowError:
        raise SegcpError(f"{where}: field {field!r} is too large ({_short(value)})") from None
    if not math.isfinite(v):
        raise SegcpError(f"{where}: field {field!r} must be finite, got {_short(value)}")
    return v


def _integer(value: Any, field: str, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        what = "a positive integer" if lo == 1 else "a non-negative integer" if lo == 0 else f"an integer from {lo}"
        raise SegcpError(f"{where}: field {field!r} must be {what} (at most {hi}), got {_short(value)}")
    return value


_VERSION = re.compile(r"[0-9]+(\.[0-9]+)*([.+-]?[A-Za-z0-9.+-]*)?", re.ASCII)


def _check_version(d: dict[str, Any], where: str) -> None:
    """A version string of ASCII digits (``1.2.3``, ``0.1.0.dev1``); refuse a newer major version."""
    written = d.get("segcp_version")
    if written is None:
        return
    if not isinstance(written, str) or len(written) > 64 or _VERSION.fullmatch(written) is None:
        raise SegcpError(f"{where}: field 'segcp_version' must be a version string such as {__version__!r}, got {_short(written)}")
    major = int(re.match(r"[0-9]+", written, re.ASCII).group())  # type: ignore[union-attr]
    if major > int(__version__.split(".")[0]):
        raise SegcpError(f"{where}: written by segcp {written}, newer than this segcp {__version__}; upgrade segcp")


def _list(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


# ---------------------------------------------------------------------------- one estimator
def statement(family: SetFamily, guarantee: str, alpha: float, tau: float = 1.0) -> str:
    """The guarantee in words: the family's, or for two-sided sets their loss's (:mod:`segcp.losses`)."""
    if guarantee in BAND_GUARANTEES:
        from segcp.losses import guarantee_loss

        return guarantee_loss(guarantee, tau).statement(alpha)
    return family.statement(guarantee, alpha, tau)


def estimator_record(
    family: SetFamily,
    guarantee: str,
    tau: float,
    alphas: Sequence[float],
    lambdas: Sequence[float],
    risks: Sequence[float],
    bounds: Sequence[float],
    n: int,
    scores: Any = None,
    grid: Grid | None = None,
) -> dict[str, Any]:
    """The record of one calibrated estimator (one family; one entry per α)."""

    def per_alpha(vals: Sequence[Any]) -> Any:
        return vals[0] if len(vals) == 1 else list(vals)

    def lam_value(v: float) -> float | int:
        return int(v) if family.integer_lambda and float(v).is_integer() else float(v)

    rec: dict[str, Any] = {
        "schema": SCHEMA,
        "schema_version": VERSION,
        "segcp_version": __version__,
        "method": family.name,
        "params": family.params(),
        "guarantee": guarantee,
        "tau": float(tau),
        "alpha": per_alpha([float(a) for a in alphas]),
        "lambda": per_alpha([lam_value(v) for v in lambdas]),
        "n": int(n),
        "empirical_risk": per_alpha([float(r) for r in risks]),
        "bound": per_alpha([float(b) for b in bounds]),
        "statement": per_alpha([statement(family, guarantee, a, float(tau)) for a in alphas]),
    }
    identity = family.identity()
    if identity:
        rec["identity"] = identity
    if scores is not None:
        rec["scores"] = [float(v) for v in scores]
        rec["n_infinite"] = int(np.sum(~np.isfinite(scores)))
    if grid is not None:
        rec["curves"] = {"form": "compact", "grid": grid.to_dict()}
    return rec


def _read_family(d: dict[str, Any], where: str, overrides: dict[str, Any] | None) -> SetFamily:
    """The family of a record (``method``, its ``params``; run-time options and locations only from
    ``overrides``; the ``identity`` checked), or a one-line error naming ``where`` and the field."""
    method = d["method"]
    if not isinstance(method, str):
        raise SegcpError(f"{where}: field 'method' must be a method name, got {_short(method)}")
    cls = family_class(method)
    params = d.get("params", {})
    if not isinstance(params, dict):
        raise SegcpError(f"{where}: field 'params' must be an object, got {type(params).__name__}")
    params = cls.normalize_params(params)
    declared = cls.declared()
    kept = {k: v for k, v in params.items() if k in declared and not declared[k].runtime}
    for key, decl in declared.items():  # parameters added after the record was written
        if key not in params and not decl.runtime and decl.unrecorded is not NOT_GIVEN:
            kept[key] = decl.unrecorded
    unknown = sorted(k for k in params if k not in declared)
    if unknown:
        raise SegcpError(f"{where}: unknown parameter(s) {', '.join(unknown)} for method {method!r}")
    given = cls.normalize_params(dict(overrides or {}))
    bad = sorted(k for k in given if k not in declared or not (declared[k].runtime or declared[k].location))
    if bad:
        raise SegcpError(f"{where}: {', '.join(bad)} cannot be changed after calibration (only run-time options and locations)")
    for key, decl in declared.items():
        if decl.location and key in kept and key not in given and kept[key] not in decl.named:
            raise SegcpError(
                f"{where}: calibrated with a local {key} ({kept[key]!r}); a calibration file never chooses paths: "
                f"give its location on this machine (e.g. -p {key}=DIR)"
            )
    try:
        family = get_method(method, **(kept | given))
    except SegcpError as exc:
        raise SegcpError(f"{where}: {exc}") from None
    identity = d.get("identity")
    if identity is not None:
        if not isinstance(identity, dict):
            raise SegcpError(f"{where}: field 'identity' must be an object")
        family.check_identity(identity, where)
    return family


def read_record(d: Any, where: str = "calibration record", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate the record of one estimator; returns its parts (family built, numbers checked).

    Returns a dict with ``family`` (a :class:`~segcp.methods.SetFamily`), ``guarantee``,
    ``tau``, ``alphas``, ``lambdas``, ``risks``, ``bounds`` (lists, one entry per α), ``n``,
    ``scores`` (ndarray or None) and ``grid`` (the compact curves' grid, or None: exact).
    Raises a one-line :class:`SegcpError` naming ``where`` and the field at fault.

    ``overrides`` are what the user gives on this machine: run-time options (threads, cache
    folder) and locations (a checkpoint directory). A record's own run-time options are
    ignored, and a location in a record is refused unless the user gives it: a calibration
    file is data and never chooses where segcp reads or writes. The record's ``identity``
    (e.g. the encoder's weights checksum) must match the family built here.
    """
    if not isinstance(d, dict):
        raise SegcpError(f"{where}: a calibration record must be a JSON object")
    schema = d.get("schema", SCHEMA)
    if schema == RISK_SCHEMA:
        return read_risk_record(d, where, overrides)
    if schema != SCHEMA:
        raise SegcpError(f"{where}: not a segcp calibration record (schema {_short(schema)})")
    version = d.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SegcpError(f"{where}: field 'schema_version' must be a positive integer, got {_short(version)}")
    if version > VERSION:
        raise SegcpError(f"{where}: written by a newer segcp (calibration schema {version}; this segcp reads up to {VERSION}); upgrade segcp")
    _check_version(d, where)
    for key in ("method", "alpha", "lambda", "n"):
        if key not in d:
            raise SegcpError(f"{where}: missing field {key!r}")
    family = _read_family(d, where, overrides)
    method = d["method"]
    guarantee = d.get("guarantee", family.guarantees[0])
    guarantee = _OLD_GUARANTEES.get(guarantee, guarantee) if isinstance(guarantee, str) else guarantee
    if not isinstance(guarantee, str) or guarantee not in family.guarantees:
        raise SegcpError(f"{where}: field 'guarantee' must be one of {', '.join(family.guarantees)} for {method}, got {_short(guarantee)}")
    tau = _number(d.get("tau", 1.0), "tau", where)
    if not 0.0 < tau <= 1.0:
        raise SegcpError(f"{where}: field 'tau' must be in (0, 1], got {tau!r}")
    n = _integer(d["n"], "n", where, 1, MAX_N)
    alphas = [_number(a, "alpha", where) for a in _list(d["alpha"])]
    if not alphas or not all(0.0 < a < 1.0 for a in alphas):
        raise SegcpError(f"{where}: field 'alpha' must be in (0, 1), got {_short(d['alpha'])}")
    if len(set(alphas)) != len(alphas):
        raise SegcpError(f"{where}: field 'alpha' repeats a risk level")
    lambdas = [_number(v, "lambda", where) for v in _list(d["lambda"])]
    if len(lambdas) != len(alphas):
        raise SegcpError(f"{where}: fields 'alpha' and 'lambda' must have the same length")
    lo, hi = family.lambda_min, family.lambda_max
    for lam in lambdas:
        if not (lo <= lam <= hi):
            raise SegcpError(f"{where}: field 'lambda' = {lam!r} is outside the range of {method} [{lo:g}, {hi:g}]")
        if family.integer_lambda and not lam.is_integer():
            raise SegcpError(f"{where}: field 'lambda' = {lam!r} must be a whole number for {method} (a number of steps)")

    def per_alpha(field: str) -> list[float]:
        raw = d.get(field)
        if raw is None:  # records may leave it out
            return [math.nan] * len(alphas)
        vals = _list(raw)
        if len(vals) != len(alphas):
            raise SegcpError(f"{where}: field {field!r} must have one value per alpha")
        return [math.nan if v is None else _number(v, field, where) for v in vals]

    risks, bounds = per_alpha("empirical_risk"), per_alpha("bound")
    scores = d.get("scores")
    if scores is not None:
        if not isinstance(scores, list) or len(scores) != n:
            raise SegcpError(f"{where}: field 'scores' must be a list of n = {n} numbers")
        scores = np.array([np.inf if v is None or v == math.inf else _number(v, "scores", where) for v in scores], dtype=np.float64)
    grid = None
    curves = d.get("curves")
    if curves is not None:
        if not isinstance(curves, dict) or curves.get("form") != "compact" or set(curves) != {"form", "grid"}:
            raise SegcpError(f'{where}: field \'curves\' must be {{"form": "compact", "grid": {{...}}}}, got {_short(curves)}')
        grid = Grid.from_dict(curves["grid"], f"{where}: field 'curves.grid'")
        if any(not (grid.lo <= lam <= grid.hi) for lam in lambdas if lam != lo):
            raise SegcpError(f"{where}: field 'lambda' lies outside its compact grid [{grid.lo:g}, {grid.hi:g}]")
    _check_plausible(n, alphas, lambdas, risks, bounds, where)
    volume = read_volume(d.get("volume"), alphas, n, where) if guarantee in BAND_GUARANTEES else None
    if volume is None and d.get("volume") is not None:
        raise SegcpError(f"{where}: field 'volume' belongs to two-sided sets (guarantee band or band-risk), not {guarantee}")
    return {
        "volume": volume,
        "family": family,
        "grid": grid,
        "guarantee": guarantee,
        "tau": tau,
        "alphas": alphas,
        "lambdas": lambdas,
        "risks": risks,
        "bounds": bounds,
        "n": n,
        "scores": scores,
    }


def read_volume(raw: Any, alphas: list[float], n: int, where: str) -> dict[str, Any] | None:
    """Validate the ``volume`` field of a two-sided record (the direct volume interval,
    :func:`segcp.jobs.calibrate.volume_record`): ``score`` one of the interval scores, ``unit`` mL,
    mm2 or voxels, ``n`` the calibration cases, ``q`` one finite number ≥ 0 per α. None when absent."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or not {"score", "unit", "n", "q"} <= set(raw):
        raise SegcpError(f"{where}: field 'volume' must be an object with score, unit, n and q")
    if raw["score"] not in INTERVAL_SCORES:
        raise SegcpError(f"{where}: field 'volume.score' must be one of {', '.join(INTERVAL_SCORES)}, got {_short(raw['score'])}")
    if raw["unit"] not in ("mL", "mm2", "voxels"):
        raise SegcpError(f"{where}: field 'volume.unit' must be mL, mm2 or voxels, got {_short(raw['unit'])}")
    if _integer(raw["n"], "volume.n", where, 1, MAX_N) != n:
        raise SegcpError(f"{where}: field 'volume.n' must equal n = {n}")
    qs = [_number(q, "volume.q", where) for q in _list(raw["q"])]
    if len(qs) != len(alphas) or not all(math.isfinite(q) and q >= 0 for q in qs):
        raise SegcpError(f"{where}: field 'volume.q' must hold one finite number >= 0 per alpha")
    return {"score": raw["score"], "unit": raw["unit"], "n": n, "q": dict(zip(alphas, qs, strict=True))}


def _check_plausible(n: int, alphas: list[float], lambdas: list[float], risks: list[float], bounds: list[float], where: str) -> None:
    """Refuse numbers no calibration could have produced: n too small for an α (no λ meets
    the bound with n < 1/α − 1), a bound above α or not n/(n+1)·R̂ + 1/(n+1), a risk outside
    [0, 1], a λ̂ that grows with α (larger α, smaller or equal sets)."""
    for a in alphas:
        try:
            need = min_calibration_size(a)
        except SegcpError as exc:  # a subnormal α
            raise SegcpError(f"{where}: field 'alpha': {exc}") from None
        if n < need:
            raise SegcpError(f"{where}: field 'n' = {n} is too small for alpha={a:g} (a calibration needs n >= 1/alpha - 1 = {need})")
    for a, risk, bound in zip(alphas, risks, bounds):
        if not math.isnan(risk) and not 0.0 <= risk <= 1.0:
            raise SegcpError(f"{where}: field 'empirical_risk' = {risk!r} is outside [0, 1]")
        if math.isnan(bound):
            continue
        if bound > a + TOL:
            raise SegcpError(f"{where}: field 'bound' = {bound!r} exceeds alpha={a:g}: no calibration gives that")
        if not math.isnan(risk) and abs(bound - (n * risk + 1.0) / (n + 1)) > 1e-9:
            raise SegcpError(f"{where}: field 'bound' = {bound!r} is not n/(n+1)*empirical_risk + 1/(n+1) = {(n * risk + 1.0) / (n + 1)!r}")
    by_alpha = sorted(zip(alphas, lambdas))
    if any(l2 > l1 for (_, l1), (_, l2) in itertools.pairwise(by_alpha)):
        raise SegcpError(f"{where}: field 'lambda' grows with alpha; a calibration gives a larger alpha a smaller (or equal) lambda")


# ---------------------------------------------------------------------------- losses (RiskSegmenter)
#: The schema of a record of a chosen loss (or several, per group): a segcp that predates it
#: refuses the file ("not a segcp calibration record") instead of reading its λ̂ as an FNR one.
RISK_SCHEMA = "segcp.risk-control"
RISK_VERSION = 1
#: The most losses one record may hold, and values of a varied parameter.
MAX_LOSSES, MAX_CONFIGS = 8, 64
#: The most groups a calibration may hold (and a record claim); what a group name may be.
MAX_GROUPS = 4096
GROUP_NAME = re.compile(r"[^\x00-\x1f\x7f]{1,64}")


def _inf_list(values: Sequence[float]) -> list[float | str]:
    return [("+inf" if v > 0 else "-inf") if math.isinf(v) else float(v) for v in values]


def _fit_fields(fit: Any, integer: bool = False) -> dict[str, Any]:
    lam = int(fit.lambda_) if integer and float(fit.lambda_).is_integer() else float(fit.lambda_)
    out: dict[str, Any] = {"lambda": lam, "n": int(fit.n), "config": int(fit.config), "empirical_risk": [float(r) for r in fit.risks]}
    if not math.isnan(fit.bound):
        out["bound"] = float(fit.bound)
    if not math.isnan(fit.low):
        out["certified"] = _inf_list([fit.low, fit.high])
    return out


def risk_record(rs: Any) -> dict[str, Any]:
    """The record of a calibrated :class:`~segcp.risk.RiskSegmenter` (schema ``segcp.risk-control``)::

    schema, schema_version, segcp_version, method, params (the chosen configuration's), identity
    losses          [{name, params}], one per loss;  alpha  one level per loss
    calibrated_by   crc (one monotone loss, exact) | ltt (Learn then Test: delta, pvalue, procedure)
    vary            null | {param, values}: the configurations; config = the chosen one's index
    lambda, n, config, empirical_risk (per loss), bound (crc), certified [low, high] (ltt)
    statement       per loss, in words
    groups          null | {source, entries: [{group, n, lambda, config, empirical_risk, bound |
                    certified, fallback}]}: one λ̂ per group (fallback: too few cases, the marginal λ̂)
    monitor         {scores, statistics}: per calibration case, what ``segcp monitor`` compares with
    """
    fam = rs.family_
    ltt = rs.mode_ == "ltt"
    rec: dict[str, Any] = {
        "schema": RISK_SCHEMA,
        "schema_version": RISK_VERSION,
        "segcp_version": __version__,
        "method": fam.name,
        "params": fam.params(),
        "losses": [{"name": x.name, "params": x.params()} for x in rs.losses_],
        "alpha": [float(a) for a in rs.alphas_],
        "calibrated_by": rs.mode_,
        "delta": float(rs.delta) if ltt else None,
        "pvalue": rs.pvalue if ltt else None,
        "procedure": "fixed-sequence" if ltt else None,
        "vary": None if rs.vary is None else {"param": rs.vary[0], "values": list(rs.vary[1])},
    }
    rec |= _fit_fields(rs.fit_, fam.integer_lambda)
    rec["statement"] = rs.statements()
    identity = fam.identity()
    if identity:
        rec["identity"] = identity
    rec["groups"] = None
    if rs.groups_:
        rec["groups"] = {
            "source": str(getattr(rs, "group_source_", None) or "given"),
            "entries": [{"group": g} | _fit_fields(f, fam.integer_lambda) | {"fallback": bool(f.fallback)} for g, f in rs.groups_.items()],
        }
    mon = getattr(rs, "monitor_", None)
    if mon:
        rec["monitor"] = {
            "scores": _inf_list(mon["scores"]),
            "statistics": {k: [None if math.isnan(v) else float(v) for v in vals] for k, vals in mon["statistics"].items()},
        }
    return rec


def _numbers(raw: Any, field: str, where: str, length: int, infinite: bool = False, missing: bool = False) -> list[float]:
    """A list of ``length`` numbers (``infinite``: "+inf"/"-inf" allowed; ``missing``: null → NaN)."""
    if not isinstance(raw, list) or len(raw) != length:
        raise SegcpError(f"{where}: field {field!r} must be a list of {length} numbers")
    out = []
    for v in raw:
        if infinite and v in ("+inf", "-inf"):
            out.append(math.inf if v == "+inf" else -math.inf)
        elif missing and v is None:
            out.append(math.nan)
        else:
            out.append(_number(v, field, where))
    return out


def _read_fit(
    e: dict[str, Any],
    field: str,
    where: str,
    family: SetFamily,
    losses: Sequence[Any],
    alphas: Sequence[float],
    crc: bool,
    k: int,
    fallback: bool = False,
) -> dict[str, Any]:
    """The validated fields of a :class:`~segcp.risk.GroupFit`."""
    lam = _number(e.get("lambda"), f"{field}lambda", where)
    if not family.lambda_min <= lam <= family.lambda_max:
        raise SegcpError(f"{where}: field '{field}lambda' = {lam!r} is outside the range of {family.name}")
    if family.integer_lambda and not lam.is_integer():
        raise SegcpError(f"{where}: field '{field}lambda' = {lam!r} must be a whole number for {family.name} (a number of steps)")
    n = _integer(e.get("n"), f"{field}n", where, 1, MAX_N)
    config = _integer(e.get("config", 0), f"{field}config", where, 0, k - 1)
    risks = _numbers(e.get("empirical_risk", []), f"{field}empirical_risk", where, 0 if fallback else len(losses))
    for r, x in zip(risks, losses):
        if not 0.0 <= r <= x.bound:
            raise SegcpError(f"{where}: field '{field}empirical_risk' = {r!r} is outside [0, {x.bound:g}] for {x.name}")
    bound, low, high = math.nan, math.nan, math.nan
    if fallback:
        pass
    elif crc:
        need = min_calibration_size(alphas[0], losses[0].bound)
        if n < need:
            raise SegcpError(f"{where}: field '{field}n' = {n} is too small for alpha={alphas[0]:g} (n >= B/alpha - 1 = {need})")
        bound = _number(e.get("bound"), f"{field}bound", where)
        if bound > alphas[0] + TOL or abs(bound - (n * risks[0] + losses[0].bound) / (n + 1)) > 1e-9:
            raise SegcpError(f"{where}: field '{field}bound' = {bound!r} is not n/(n+1)*empirical_risk + B/(n+1) <= alpha")
    else:
        low, high = _numbers(e.get("certified"), f"{field}certified", where, 2, infinite=True)
        if not low <= lam < high:
            raise SegcpError(f"{where}: field '{field}lambda' = {lam!r} lies outside its certified interval [{low!r}, {high!r})")
        if any(r > a + TOL for r, a in zip(risks, alphas)):
            raise SegcpError(f"{where}: field '{field}empirical_risk' exceeds its alpha: Learn then Test certifies no such lambda")
    return {"lambda_": lam, "n": n, "config": config, "risks": tuple(risks), "bound": bound, "low": low, "high": high, "fallback": fallback}


def read_risk_record(d: dict[str, Any], where: str = "calibration record", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate a record of :func:`risk_record`; returns its parts for
    :meth:`RiskSegmenter.from_parts <segcp.risk.RiskSegmenter.from_parts>` (``losses``, ``alphas``,
    ``mode``, ``delta``, ``pvalue``, ``configs`` — the families, ``family`` — the chosen one,
    ``fit``, ``groups`` (group → GroupFit), ``group_source``, ``monitor``, ``n``)."""
    from segcp.calibration.ltt import PVALUES
    from segcp.losses import get_loss
    from segcp.methods.base import MaskFamily

    version = d.get("schema_version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= RISK_VERSION:
        raise SegcpError(f"{where}: field 'schema_version' must be an integer from 1 to {RISK_VERSION} for {RISK_SCHEMA} (a newer segcp wrote it?)")
    for key in ("method", "losses", "alpha", "lambda", "n", "calibrated_by"):
        if key not in d:
            raise SegcpError(f"{where}: missing field {key!r}")
    raw = d["losses"]
    if not isinstance(raw, list) or not 1 <= len(raw) <= MAX_LOSSES:
        raise SegcpError(f"{where}: field 'losses' must be a list of 1 to {MAX_LOSSES} losses")
    losses = []
    for j, e in enumerate(raw):
        if not isinstance(e, dict) or not isinstance(e.get("name"), str) or not isinstance(e.get("params", {}), dict):
            raise SegcpError(f"{where}: losses[{j}] must be an object with a 'name' and 'params'")
        try:
            losses.append(get_loss(e["name"], **e.get("params", {})))
        except SegcpError as exc:
            raise SegcpError(f"{where}: losses[{j}]: {exc}") from None
    alphas = _numbers(_list(d["alpha"]), "alpha", where, len(losses))
    for a, x in zip(alphas, losses):
        if not 0.0 < a < x.bound:
            raise SegcpError(f"{where}: field 'alpha' = {a!r} must be in (0, {x.bound:g}) for {x.name}")
    mode = d["calibrated_by"]
    delta: float | None = None
    pvalue: Any = "hb"
    if mode == "crc":
        if len(losses) != 1 or not losses[0].monotone or d.get("delta") is not None or d.get("vary") is not None:
            raise SegcpError(f"{where}: field 'calibrated_by' is crc, which is for one monotone loss without delta or vary")
    elif mode == "ltt":
        delta = _number(d.get("delta"), "delta", where)
        if not 0.0 < delta < 1.0:
            raise SegcpError(f"{where}: field 'delta' must be in (0, 1), got {delta!r}")
        pvalue = d.get("pvalue")
        if pvalue not in PVALUES:
            raise SegcpError(f"{where}: field 'pvalue' must be one of {', '.join(PVALUES)}, got {_short(pvalue)}")
        if d.get("procedure", "fixed-sequence") != "fixed-sequence":
            raise SegcpError(f"{where}: field 'procedure' must be fixed-sequence, got {_short(d.get('procedure'))}")
    else:
        raise SegcpError(f"{where}: field 'calibrated_by' must be crc or ltt, got {_short(mode)}")
    family = _read_family(d, where, overrides)
    if not isinstance(family, MaskFamily):
        raise SegcpError(f"{where}: losses are for the pixel-set methods, not {family.name}")
    vary = d.get("vary")
    configs: list[SetFamily] = [family]
    vary_spec = None
    if vary is not None:
        if (
            not isinstance(vary, dict)
            or set(vary) != {"param", "values"}
            or not isinstance(vary["values"], list)
            or not 1 <= len(vary["values"]) <= MAX_CONFIGS
            or vary["param"] not in type(family).declared()
        ):
            raise SegcpError(f'{where}: field \'vary\' must be {{"param": a parameter of {family.name}, "values": [1 to {MAX_CONFIGS} values]}}')
        configs = [_read_family(d | {"params": dict(d.get("params", {})) | {vary["param"]: v}}, where, overrides) for v in vary["values"]]
        vary_spec = (vary["param"], list(vary["values"]))
    crc = mode == "crc"
    n = _integer(d["n"], "n", where, 1, MAX_N)
    fit = _read_fit(d, "", where, family, losses, alphas, crc, len(configs))
    if configs[fit["config"]].key != family.key:
        raise SegcpError(f"{where}: field 'params' is not the configuration 'config' = {fit['config']} of 'vary'")
    groups: dict[str, Any] = {}
    source = None
    g = d.get("groups")
    if g is not None:
        if not isinstance(g, dict) or not isinstance(g.get("entries"), list) or not 1 <= len(g["entries"]) <= MAX_GROUPS:
            raise SegcpError(f'{where}: field \'groups\' must be {{"source": ..., "entries": [1 to {MAX_GROUPS} groups]}}')
        source = g.get("source")
        if not isinstance(source, str) or len(source) > 1024:
            raise SegcpError(f"{where}: field 'groups.source' must be a string")
        for k, e in enumerate(g["entries"]):
            if not isinstance(e, dict) or not isinstance(e.get("group"), str) or GROUP_NAME.fullmatch(e["group"]) is None:
                raise SegcpError(f"{where}: groups.entries[{k}] must be an object whose 'group' is a name of 1 to 64 printable characters")
            if e["group"] in groups:
                raise SegcpError(f"{where}: group {e['group']!r} appears twice")
            fb = e.get("fallback", False)
            if not isinstance(fb, bool):
                raise SegcpError(f"{where}: groups.entries[{k}].fallback must be true or false")
            gf = _read_fit(e, f"groups.entries[{k}].", where, family, losses, alphas, crc, len(configs), fallback=fb)
            if fb and (gf["lambda_"] != fit["lambda_"] or gf["config"] != fit["config"]):
                raise SegcpError(f"{where}: group {e['group']!r} falls back to the marginal lambda but records another")
            groups[e["group"]] = gf
        if sum(f["n"] for f in groups.values()) != n:
            raise SegcpError(f"{where}: the groups' n add up to {sum(f['n'] for f in groups.values())}, not n = {n}")
    monitor: dict[str, Any] = {"scores": [], "statistics": {}}
    mon = d.get("monitor")
    if mon is not None:
        if not isinstance(mon, dict) or not isinstance(mon.get("statistics", {}), dict) or len(mon.get("statistics", {})) > 64:
            raise SegcpError(f'{where}: field \'monitor\' must be {{"scores": [...], "statistics": {{name: [...]}}}}')
        monitor["scores"] = _numbers(mon.get("scores"), "monitor.scores", where, n, infinite=True)
        for name, vals in mon.get("statistics", {}).items():
            if not isinstance(name, str) or not re.fullmatch(r"[a-z0-9_.]{1,40}", name):
                raise SegcpError(f"{where}: field 'monitor.statistics' has a bad name {_short(name)}")
            monitor["statistics"][name] = _numbers(vals, f"monitor.statistics.{name}", where, n, missing=True)
    return {
        "kind": "risk",
        "family": family,
        "configs": configs,
        "vary": vary_spec,
        "losses": losses,
        "alphas": alphas,
        "mode": mode,
        "delta": delta,
        "pvalue": pvalue,
        "fit": fit,
        "groups": groups,
        "group_source": source,
        "monitor": monitor,
        "n": n,
    }


# ---------------------------------------------------------------------------- directory jobs
def job_record(
    estimators: Sequence[tuple[Structure | None, dict[str, Any], int]],
    *,
    label: int | None,
    channels: bool | str,
    source: str,
    data: str,
    ids: Sequence[str],
    seconds: float,
    labels_from: str | None = None,
    ndim: int | None = None,
) -> dict[str, Any]:
    """The calib.json of a directory job: ``estimators`` are (structure, the estimator's record,
    images holding the structure) — one with structure None (``--label`` or a binary mask), or
    one per structure (``--labels``); ``ndim``: the images' grid dimensionality (2 or 3)."""
    job = {
        "label": label,
        "probs_channels": bool(channels),
        "channel_axis": channels or None,
        "source": source,
        "data": data,
        "ids": list(ids),
        "seconds": float(seconds),
        "ndim": ndim,
    }
    if len(estimators) == 1 and estimators[0][0] is None:
        return estimators[0][1] | job
    entries = []
    shared: dict[str, Any] = {}
    for structure, rec, present in estimators:
        assert structure is not None
        shared = {k: rec[k] for k in SHARED_FIELDS if k in rec}  # a record of chosen losses has no guarantee/tau
        entries.append(structure.to_dict() | {"images_with_structure": int(present)} | {k: v for k, v in rec.items() if k not in SHARED_FIELDS})
    return shared | {"structures": entries, "labels_from": labels_from or "channels of the probability stacks"} | job


@dataclass(frozen=True)
class Calibration:
    """A validated calib.json of a directory job.

    ``parts`` holds, per structure, the validated parts of its estimator (:func:`read_record`;
    :meth:`ConformalSegmenter.from_parts <segcp.conformal.ConformalSegmenter.from_parts>`
    builds it); ``structures`` is empty for a single-structure record (``label`` then says
    which structure of a label map, or None for binary masks) and lists the structures of a
    per-structure record in its order. ``channels``: how the calibration read the
    probabilities — False (one map), ``"first"`` (L, *S) or ``"last"`` (*S, L) class stacks.
    """

    path: Path
    record: dict[str, Any]
    parts: tuple[dict[str, Any], ...]
    structures: tuple[Structure, ...]
    label: int | None
    channels: bool | str
    ndim: int | None = None  # the calibration images' grid dimensionality (None: a record from before it was kept)

    @property
    def per_structure(self) -> bool:
        return bool(self.structures)


def _job_fields(record: dict[str, Any], where: str) -> tuple[int | None, bool | str, int | None]:
    label = record.get("label")
    if label is not None:
        label = _integer(label, "label", where, 0, MAX_LABEL)
    channels = record.get("probs_channels", False)
    if not isinstance(channels, bool):
        raise SegcpError(f"{where}: field 'probs_channels' must be true or false, got {_short(channels)}")
    axis = record.get("channel_axis")
    if axis not in (None, "first", "last") or (axis is not None and not channels):
        raise SegcpError(f'{where}: field \'channel_axis\' must be "first", "last" or null (with probs_channels true), got {_short(axis)}')
    ndim = record.get("ndim")
    ndim = None if ndim is None else _integer(ndim, "ndim", where, 2, 3)
    return label, (axis or "first") if channels else False, ndim


def read_calibration(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> Calibration:
    """Read and validate any calib.json a directory job wrote (one structure or several).

    ``overrides``: run-time options and locations given on this machine (:func:`read_record`).
    """
    where = str(path)
    record = read_json(path)
    if not isinstance(record, dict):
        raise SegcpError(f"{where}: a calibration record must be a JSON object")
    label, channels, ndim = _job_fields(record, where)
    if "structures" not in record:
        return Calibration(Path(path), record, (read_record(record, where, overrides),), (), label, channels, ndim)
    entries = record["structures"]
    if not isinstance(entries, list) or not entries or len(entries) > MAX_LABEL:
        raise SegcpError(f"{where}: field 'structures' must be a non-empty list")
    if label is not None:
        raise SegcpError(f"{where}: field 'label' must be null in a per-structure record (each structure has its own)")
    if not channels:
        raise SegcpError(f"{where}: a per-structure record reads class stacks: field 'probs_channels' must be true")
    structures, parts = [], []
    for k, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("name"), str):
            raise SegcpError(f"{where}: structures[{k}] must be an object with an integer 'label' and a 'name'")
        value = _integer(e.get("label"), f"structures[{k}].label", where, 0, MAX_LABEL)
        s = Structure.make(value, e["name"])
        sub = {key: record[key] for key in SHARED_FIELDS if key in record} | {key: v for key, v in e.items() if key not in _STRUCTURE_KEYS}
        parts.append(read_record(sub, f"{where} (structure {s.name})", overrides))
        structures.append(s)
    check_structures(structures, where)
    return Calibration(Path(path), record, tuple(parts), tuple(structures), None, channels, ndim)
