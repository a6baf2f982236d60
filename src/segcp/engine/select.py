"""λ̂ of a split, and the choice of a setting by group K-fold cross-validation — through the estimator.

:func:`calibrate` is the one "λ̂ or why there is none" of every split of the engine (main
rows, the curves-only guarantee check, the folds of a tuned row): the estimator's
``calibrate_curves`` on ``LossCurves.take`` of the calibration images, the same code as
``segcp calibrate``. :func:`select` picks a candidate setting on some (calibration) images:
for each candidate, the images are split into K folds by group; on each fold λ̂ is calibrated
on the other folds and the sets it gives on the held-out fold are scored (a criterion of
:data:`segcp.specs.CRITERIA`); the best mean over all images wins (ties: the earlier candidate).
The scores come from a callback, so the held-out sets can be measured wherever the engine maps
its work (:meth:`segcp.engine.run.Engine.measure`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from segcp.calibration import LossCurves, min_calibration_size
from segcp.engine.splits import group_folds
from segcp.errors import SegcpError
from segcp.specs import CRITERIA

__all__ = ["calibrate", "check_criterion", "chosen_label", "select"]

#: values(requests) → one criterion value per request (candidate, image, λ): the held-out sets' scores.
Values = Callable[[list[tuple[int, int, float]]], list[float]]


def calibrate(est: Any, curves: LossCurves, alphas: Sequence[float]) -> dict[float, float | str]:
    """λ̂ per α of the estimator ``est`` on ``curves`` (several α share one call), or the
    one-line reason there is none (too few images for α, a bound no λ meets)."""
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


def check_criterion(criterion: str) -> bool:
    """Whether higher is better for ``criterion``, or a one-line error for an unknown one."""
    if criterion not in CRITERIA:
        raise SegcpError(f"unknown tuning criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    return CRITERIA[criterion][0]


def _cv_table(curves: Sequence[LossCurves], estimators: Sequence[Any], fold_idx: Sequence[np.ndarray], alpha: float, values: Values,
              higher: bool) -> list[dict[str, Any]]:
    """Per candidate: the CV value at ``alpha``, its infeasible folds and the per-fold λ̂."""
    requests: list[tuple[int, int, float]] = []
    table: list[dict[str, Any]] = []
    for c in range(len(curves)):
        lambdas: list[float] = []
        for f, held in enumerate(fold_idx):
            train = np.concatenate([fold_idx[g] for g in range(len(fold_idx)) if g != f])
            lam = calibrate(estimators[c], curves[c].take(train), [alpha])[alpha]
            lambdas.append(math.nan if isinstance(lam, str) else lam)
            if not isinstance(lam, str):
                requests += [(c, int(i), lam) for i in held]
        table.append({"candidate": c, "value": math.nan, "infeasible_folds": sum(map(math.isnan, lambdas)), "fold_lambdas": lambdas, "alpha": alpha})
    got = values(requests)
    for row in table:
        v = np.asarray([x for (c, _, _), x in zip(requests, got) if c == row["candidate"]], dtype=float)
        v = v[np.isfinite(v)]
        value = float(v.mean()) if v.size else math.nan
        row["value"] = (-math.inf if higher else math.inf) if row["infeasible_folds"] or not math.isfinite(value) else value
    return table


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
    """Pick a candidate by group K-fold CV on the given (calibration) images.

    Parameters
    ----------
    curves : per candidate, the images' loss curves (one :class:`LossCurves`, or one per image).
    estimators : per candidate, its :class:`~segcp.conformal.ConformalSegmenter` (what calibrates each fold).
    groups : the images' groups (patients); every fold holds whole groups.
    values : the criterion's value of each held-out image's set: ``values([(candidate, image, λ), ...])``.

    Returns
    -------
    (index of the best candidate, table) where the table has, per candidate, the CV ``value``,
    the number of infeasible folds (no λ met the bound on the other folds: counted as the worst
    value), the per-fold λ̂ and ``alpha``, the level the folds were calibrated at.

    When the training parts are too small for α (exact CRC needs n ≥ 1/α − 1 images: 19 at
    α = 0.05, while 5-fold CV of 20 images trains on 16) and no candidate could be scored, the
    folds are calibrated at the smallest level they admit, 1/(n + 1) with n the smallest
    training part (0.059 for 16), and the table's ``alpha`` says so; the chosen candidate is
    still calibrated at α afterwards.
    """
    higher = check_criterion(criterion)
    fold_idx = group_folds(groups, folds, seed)
    all_curves = [cv if isinstance(cv, LossCurves) else LossCurves.concat(cv) for cv in curves]
    table = _cv_table(all_curves, estimators, fold_idx, alpha, values, higher)
    n_train = min(len(groups) - len(held) for held in fold_idx) if len(fold_idx) > 1 else 0
    if not any(math.isfinite(t["value"]) for t in table) and 1 <= n_train < min_calibration_size(alpha):
        table = _cv_table(all_curves, estimators, fold_idx, 1.0 / (n_train + 1), values, higher)
    vals = np.array([t["value"] for t in table])
    best = int(np.argmax(vals) if higher else np.argmin(vals))  # first of ties; all infeasible → 0
    return best, table


def chosen_label(label: str, table: Sequence[dict[str, Any]], alpha: float) -> str:
    """How a record names the candidate :func:`select` chose at ``alpha``, with why when the
    choice is not a plain CV win: no candidate could be scored (the first is used), or the folds
    were calibrated at another level."""
    if not any(math.isfinite(t["value"]) for t in table):
        return f"{label} (fallback: no fold feasible)"
    if table[0]["alpha"] != alpha:
        return f"{label} (CV at α = {table[0]['alpha']:.3g})"
    return label
