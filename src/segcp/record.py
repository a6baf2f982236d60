"""The calibration record (calib.json): its schema, and reading one back safely.

A calibration record is data, not code: every field is checked for its type and range
before anything is built from it, and run-time options (threads, cache locations) are never
taken from it. Schema ``segcp.calibration`` version 2::

    schema, schema_version, segcp_version
    method          a registered family name
    params          the family's declared (non-run-time) parameters
    guarantee       fnr | quantile | contains;  tau (quantile)
    alpha, lambda   numbers, or lists of the same length (one λ̂ per α)
    n               calibration cases (≥ 1)
    empirical_risk, bound, statement   per α, as alpha
    scores          0/1 losses only: each calibration case's λ*_i (null = +inf)
    curves          only when λ̂ came from compact curves: {"form": "compact", "grid":
                    {"lo", "hi", "size"}} (λ̂ is a grid point, at most one step above exact)

Records without ``schema`` are version 1 (segcp ≤ 0.1.0 before this field): read the same
way; the multi-class records of that version carried ``guarantee: "set contains the truth up
to beta"`` (read as ``contains``) and a top-level ``beta`` (the same as ``params.beta``).
A declared parameter missing from ``params`` (added after the record was written) gets the
value the record was calibrated with: its declared ``unrecorded`` value when it has one
(CONSIGN's ``box``: ``normalized``), else its default. Pipeline-level fields (``label``, ``probs_channels``, ``source``, ``data``, ``ids``) are
read by :mod:`segcp.jobs`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from segcp.calibration.compact import Grid
from segcp.errors import SegcpError
from segcp.methods import family_class, get_method
from segcp.methods.base import NOT_GIVEN

__all__ = ["read_record"]

SCHEMA = "segcp.calibration"
VERSION = 2
_OLD_GUARANTEES = {"set contains the truth up to beta": "contains"}


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


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


def _check_version(d: dict[str, Any], where: str) -> None:
    """Refuse a record written by a newer major version of segcp."""
    from segcp._version import __version__

    written = d.get("segcp_version")
    if written is None:
        return
    if not isinstance(written, str) or not written.split(".")[0].isdigit():
        raise SegcpError(f"{where}: field 'segcp_version' must be a version string, got {_short(written)}")
    if int(written.split(".")[0]) > int(__version__.split(".")[0]):
        raise SegcpError(f"{where}: written by segcp {written}, newer than this segcp {__version__}; upgrade segcp")


def _list(value: Any, field: str, where: str) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def read_record(d: Any, where: str = "calibration record", overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate a calibration record; returns its parts (family built, numbers checked).

    Returns a dict with ``family`` (a :class:`~segcp.methods.SetFamily`), ``guarantee``,
    ``tau``, ``alphas``, ``lambdas``, ``risks``, ``bounds`` (lists, one entry per α), ``n``,
    ``scores`` (ndarray or None) and ``grid`` (the compact curves' grid, or None: exact). Raises a one-line :class:`SegcpError` naming ``where``
    and the field at fault.

    ``overrides`` are what the user gives on this machine: run-time options (threads, cache
    folder) and locations (a checkpoint directory). A record's own run-time options are
    ignored, and a location in a record is refused unless the user gives it: a calibration
    file is data and never chooses where segcp reads or writes. The record's ``identity``
    (e.g. the encoder's weights checksum) must match the family built here.
    """
    if not isinstance(d, dict):
        raise SegcpError(f"{where}: a calibration record must be a JSON object")
    schema = d.get("schema", SCHEMA)
    if schema != SCHEMA:
        raise SegcpError(f"{where}: not a segcp calibration record (schema {schema!r})")
    version = d.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise SegcpError(f"{where}: field 'schema_version' must be a positive integer, got {version!r}")
    if version > VERSION:
        raise SegcpError(f"{where}: written by a newer segcp (calibration schema {version}; this segcp reads up to {VERSION}); upgrade segcp")
    _check_version(d, where)
    for key in ("method", "alpha", "lambda", "n"):
        if key not in d:
            raise SegcpError(f"{where}: missing field {key!r}")
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
    guarantee = d.get("guarantee", family.guarantees[0])
    guarantee = _OLD_GUARANTEES.get(guarantee, guarantee) if isinstance(guarantee, str) else guarantee
    if not isinstance(guarantee, str) or guarantee not in family.guarantees:
        raise SegcpError(f"{where}: field 'guarantee' must be one of {', '.join(family.guarantees)} for {method}, got {guarantee!r}")
    tau = _number(d.get("tau", 1.0), "tau", where)
    if not 0.0 < tau <= 1.0:
        raise SegcpError(f"{where}: field 'tau' must be in (0, 1], got {tau!r}")
    n = d["n"]
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise SegcpError(f"{where}: field 'n' must be a positive integer, got {n!r}")
    alphas = [_number(a, "alpha", where) for a in _list(d["alpha"], "alpha", where)]
    if not alphas or not all(0.0 < a < 1.0 for a in alphas):
        raise SegcpError(f"{where}: field 'alpha' must be in (0, 1), got {d['alpha']!r}")
    lambdas = [_number(v, "lambda", where) for v in _list(d["lambda"], "lambda", where)]
    if len(lambdas) != len(alphas):
        raise SegcpError(f"{where}: fields 'alpha' and 'lambda' must have the same length")
    lo, hi = family.lambda_min, family.lambda_max
    for lam in lambdas:
        if not (lo <= lam <= hi):
            raise SegcpError(f"{where}: field 'lambda' = {lam!r} is outside the range of {method} [{lo:g}, {hi:g}]")
    def per_alpha(field: str) -> list[float]:
        raw = d.get(field)
        vals = _list(raw, field, where) if raw is not None else [math.nan] * len(alphas)
        if len(vals) != len(alphas):
            raise SegcpError(f"{where}: field {field!r} must have one value per alpha")
        return [math.nan if v is None else _number(v, field, where) for v in vals]

    scores = d.get("scores")
    if scores is not None:
        if not isinstance(scores, list) or len(scores) != n:
            raise SegcpError(f"{where}: field 'scores' must be a list of n = {n} numbers")
        scores = np.array([np.inf if v is None or v == math.inf else _number(v, "scores", where) for v in scores], dtype=np.float64)
    grid = None
    curves = d.get("curves")
    if curves is not None:
        if not isinstance(curves, dict) or curves.get("form") != "compact" or set(curves) != {"form", "grid"}:
            raise SegcpError(f"{where}: field 'curves' must be {{\"form\": \"compact\", \"grid\": {{...}}}}, got {_short(curves)}")
        grid = Grid.from_dict(curves["grid"], f"{where}: field 'curves.grid'")
    return {
        "family": family,
        "grid": grid,
        "guarantee": guarantee,
        "tau": tau,
        "alphas": alphas,
        "lambdas": lambdas,
        "risks": per_alpha("empirical_risk"),
        "bounds": per_alpha("bound"),
        "n": n,
        "scores": scores,
    }
