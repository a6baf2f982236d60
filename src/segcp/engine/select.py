"""λ̂ of a split or why none (:func:`calibrate`: the estimator's ``calibrate_curves``, the code of
``segcp calibrate``), and the choice of a setting by group K-fold CV (:func:`select`)."""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from segcp.calibration import LossCurves, min_calibration_size
from segcp.calibration.ltt import StepLosses
from segcp.engine.splits import group_folds
from segcp.errors import SegcpError
from segcp.metrics import mean_std
from segcp.risk import RiskSegmenter
from segcp.specs import check_criterion

__all__ = ["calibrate", "chosen_label", "select"]

#: values(requests) → one criterion value per request (candidate, image, λ): the held-out sets' scores.
Values = Callable[[list[tuple[int, int, float]]], list[float]]


def calibrate(est: Any, curves: LossCurves | StepLosses, alphas: Sequence[float]) -> dict[float, float | str]:
    """λ̂ per α of ``est`` on ``curves`` (one call for several α; a controlled loss's
    :class:`~segcp.risk.RiskSegmenter` takes one level per loss: one call per α), or the one-line reason
    there is none."""
    if not isinstance(est, RiskSegmenter):
        try:
            est.set_params(alpha=list(alphas)).calibrate_curves(curves)
            return {a: float(est.lambdas_[a]) for a in alphas}
        except SegcpError:
            pass
    out: dict[float, float | str] = {}
    for a in alphas:
        try:
            out[a] = float(est.set_params(alpha=a).calibrate_curves(curves).lambda_)
        except SegcpError as exc:
            out[a] = str(exc)
    return out


def select(
    curves: Sequence[LossCurves | Sequence[LossCurves]],
    estimators: Sequence[Any],
    groups: Sequence[Hashable],
    alpha: float,
    values: Values,
    *,
    criterion: str = "dice",
    folds: int = 5,
    seed: int = 0,
) -> tuple[int, list[dict[str, Any]]]:
    """Pick a candidate by group K-fold CV: per candidate its curves and estimator; ``values`` scores the
    held-out sets. Returns (the best, first of ties; per candidate the CV ``value`` — the worst with an
    infeasible fold —, ``infeasible_folds``, ``fold_lambdas`` and ``alpha``). When the training parts are
    too small for α (16 images at α = 0.05) and nothing could be scored, the folds are calibrated at
    1/(n + 1) instead, and ``alpha`` says so.
    """
    higher = check_criterion(criterion)
    fold_idx = group_folds(groups, folds, seed)
    all_curves = [cv if isinstance(cv, LossCurves) else LossCurves.concat(cv) for cv in curves]

    def cv_table(alpha: float) -> list[dict[str, Any]]:
        """Per candidate: the CV value at ``alpha`` (the worst when a fold is infeasible), its infeasible folds and per-fold λ̂."""
        requests: list[tuple[int, int, float]] = []
        table: list[dict[str, Any]] = []
        for c, cand in enumerate(all_curves):
            lambdas = []
            for f, held in enumerate(fold_idx):
                lam = calibrate(estimators[c], cand.take(np.concatenate([x for g, x in enumerate(fold_idx) if g != f])), [alpha])[alpha]
                lambdas.append(math.nan if isinstance(lam, str) else lam)
                requests += [] if isinstance(lam, str) else [(c, int(i), lam) for i in held]
            bad = sum(map(math.isnan, lambdas))
            table.append({"candidate": c, "value": math.nan, "infeasible_folds": bad, "fold_lambdas": lambdas, "alpha": alpha})
        got = values(requests)
        for row in table:
            value = mean_std([x for (c, _, _), x in zip(requests, got, strict=True) if c == row["candidate"]])[0]
            row["value"] = (-math.inf if higher else math.inf) if row["infeasible_folds"] or not math.isfinite(value) else value
        return table

    table = cv_table(alpha)
    n_train = min(len(groups) - len(held) for held in fold_idx) if len(fold_idx) > 1 else 0
    if not any(math.isfinite(t["value"]) for t in table) and 1 <= n_train < min_calibration_size(alpha):
        table = cv_table(1.0 / (n_train + 1))
    vals = np.array([t["value"] for t in table])
    return int(np.argmax(vals) if higher else np.argmin(vals)), table  # first of ties; all infeasible → 0


def chosen_label(label: str, table: Sequence[dict[str, Any]], alpha: float) -> str:
    """How a record names the candidate chosen at ``alpha``, with why when it is not a plain CV win."""
    if not any(math.isfinite(t["value"]) for t in table):
        return f"{label} (fallback: no fold feasible)"
    return f"{label} (CV at α = {table[0]['alpha']:.3g})" if table[0]["alpha"] != alpha else label
