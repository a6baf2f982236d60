"""Hyper-parameter selection on calibration data only (group K-fold cross-validation).

The RW-CP paper picks k, β and n_step "by Dice on the calibration set". segcp makes that a
routine that never sees test data: for each candidate setting of a method, the calibration
images are split into K folds by group (patient / near-duplicate group); on each fold, λ̂ is
calibrated by exact CRC on the other folds at the target α and the sets it gives on the
held-out fold are scored (mean Dice, or mean HD95). The candidate with the best mean over all
calibration images wins (ties: the earlier candidate). Its final λ̂ is then calibrated on
the *whole* calibration set.

What this does to the guarantee: λ̂ is still the exact CRC solution on the calibration set
for the chosen setting, but the choice itself looked at the same images, so the
calibration images are no longer exactly exchangeable with a test image *given the choice*.
With a handful of candidates the effect is small (a union bound over C candidates at most),
and `segcp compare` measures it (the tuned rows keep mean test FNR ≤ α in docs/results); for
a strict guarantee tune on images that are not used for calibration — e.g. groups split off
the calibration set (:func:`segcp.engine.splits.split_fraction`), or the model's validation
patients.

Examples
--------
>>> from segcp.synthetic import make_phantoms
>>> from segcp.compare import MethodSpec
>>> from segcp.methods import Case
>>> ph = make_phantoms(n=24, seed=0)
>>> cases = [Case(p.id, p.probs, mask=p.label == 3, spacing=p.spacing) for p in ph]
>>> cands = [MethodSpec("cross", "morph", {"se": "cross"}), MethodSpec("square", "morph", {"se": "square"})]
>>> res = tune(cases, [p.group for p in ph], cands, alpha=0.2, folds=4)
>>> res.best.label in ("cross", "square"), len(res.table)
(True, 2)
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.calibration import LossCurves, check_alpha, crc_lambda, min_calibration_size
from segcp.cases import Case
from segcp.engine.splits import group_folds
from segcp.errors import SegcpError
from segcp.metrics import dice, hd95, stretch
from segcp.progress import track
from segcp.specs import CRITERIA, MethodSpec, TunedSpec

__all__ = ["CRITERIA", "TunedSpec", "TuneResult", "candidate_maps", "select", "tune"]


def _image_value(criterion: str, pred: NDArray[np.bool_], case: Case) -> float:
    """The criterion's value for one held-out image's set (NaN where it is undefined)."""
    mask = case.mask
    if criterion == "dice":
        return dice(pred, mask)
    if criterion == "truth_ratio":
        n_true = np.count_nonzero(mask)
        return math.nan if n_true == 0 else np.count_nonzero(pred) / n_true
    if criterion == "stretch":
        return stretch(pred, case.model_mask)
    return hd95(pred, mask, case.spacing)


def _check_criterion(criterion: str) -> bool:
    """Whether higher is better for ``criterion``, or a one-line error for an unknown one."""
    if criterion not in CRITERIA:
        raise SegcpError(f"unknown tuning criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    return CRITERIA[criterion][0]


def _cv_table(
    score_maps: Sequence[Sequence[NDArray[np.floating]]],
    all_curves: Sequence[LossCurves],
    lambda_mins: Sequence[float],
    cases: Sequence[Case],
    fold_idx: Sequence[NDArray[np.int64]],
    alpha: float,
    criterion: str,
    higher: bool,
) -> list[dict[str, Any]]:
    """Per candidate: the CV value at ``alpha``, its infeasible folds and the per-fold λ̂."""
    table: list[dict[str, Any]] = []
    for c in range(len(score_maps)):
        values: list[float] = []
        lambdas: list[float] = []
        infeasible = 0
        for f, held in enumerate(fold_idx):
            train = np.concatenate([fold_idx[g] for g in range(len(fold_idx)) if g != f])
            try:
                lam = crc_lambda(all_curves[c].take(train), alpha, lambda_min=lambda_mins[c]).lambda_
            except SegcpError:
                infeasible += 1
                lambdas.append(math.nan)
                continue
            lambdas.append(float(lam))
            values += [_image_value(criterion, score_maps[c][i] <= lam, cases[i]) for i in held]
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        value = float(v.mean()) if v.size else math.nan
        if infeasible or not math.isfinite(value):
            value = -math.inf if higher else math.inf
        table.append({"candidate": c, "value": value, "infeasible_folds": infeasible, "fold_lambdas": lambdas, "alpha": alpha})
    return table


def select(
    score_maps: Sequence[Sequence[NDArray[np.floating]]],
    curves: Sequence[LossCurves | Sequence[LossCurves]],
    lambda_mins: Sequence[float],
    cases: Sequence[Case],
    groups: Sequence[Hashable],
    alpha: float,
    *,
    criterion: str = "dice",
    folds: int = 5,
    seed: int = 0,
) -> tuple[int, list[dict[str, Any]]]:
    """Pick a candidate by group K-fold CV on the given (calibration) images.

    Parameters
    ----------
    score_maps, curves : per candidate: every image's score map (the set at λ is
        ``score ≤ λ``), and the images' loss curves (one :class:`LossCurves` of all images, or a
        list of one per image).
    lambda_mins : per candidate, the method's smallest λ (``SetMethod.lambda_min``).
    cases, groups : the calibration images (masks, spacing) and their groups.

    Returns
    -------
    (index of the best candidate, table) where the table has, per candidate, the CV value,
    the number of infeasible folds (no λ met the bound on the other folds: counted as the worst
    value), the per-fold λ̂ and ``alpha``, the level the folds were calibrated at.

    When the training parts are too small for α (exact CRC needs n ≥ 1/α − 1 images: 19 at
    α = 0.05, while 5-fold CV of 20 images trains on 16), the folds are calibrated at the
    smallest level they admit, 1/(n + 1) with n the smallest training part (0.059 for 16), and
    the table's ``alpha`` says so; the chosen candidate is still calibrated at α afterwards.
    """
    higher = _check_criterion(criterion)
    fold_idx = group_folds(groups, folds, seed)
    all_curves = [cv if isinstance(cv, LossCurves) else LossCurves.concat(cv) for cv in curves]
    table = _cv_table(score_maps, all_curves, lambda_mins, cases, fold_idx, alpha, criterion, higher)
    n_train = min(len(cases) - len(held) for held in fold_idx) if len(fold_idx) > 1 else 0
    if not any(math.isfinite(t["value"]) for t in table) and n_train >= 1 and n_train < min_calibration_size(alpha):
        table = _cv_table(score_maps, all_curves, lambda_mins, cases, fold_idx, 1.0 / (n_train + 1), criterion, higher)
    vals = np.array([t["value"] for t in table])
    best = int(np.argmax(vals) if higher else np.argmin(vals))  # first of ties; all infeasible → 0
    return best, table


def candidate_maps(
    candidates: Sequence[MethodSpec], cases: Sequence[Case], what: str = "score maps", show_progress: bool = False
) -> tuple[list[list[NDArray[np.float64]]], list[LossCurves], list[float]]:
    """Per candidate: every case's score map, the cases' loss curves and the family's ``lambda_min``.

    Each candidate's estimator prepares every case once (:meth:`ConformalSegmenter.prepare`);
    its curves are read off the prepared score maps.
    """
    maps, curves, mins = [], [], []
    for spec in candidates:
        cs = spec.estimator().set_params(curve_form="exact")  # splits take subsets of per-image curves
        label = f"{what} ({spec.label})" if len(candidates) > 1 else what
        prepared = cs.prepare(track(list(cases), label, show_progress))
        fam = cs.family
        maps.append([fam.scores(p) for p in prepared])
        curves.append(cs.curves(prepared))
        mins.append(fam.lambda_min)
    return maps, curves, mins


@dataclass
class TuneResult:
    """Outcome of :func:`tune`: the best candidate and the CV table (one row per candidate)."""

    best: MethodSpec
    best_index: int
    criterion: str
    alpha: float
    folds: int
    table: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "criterion": self.criterion,
            "criterion_meaning": CRITERIA[self.criterion][1],
            "alpha": self.alpha,
            "folds": self.folds,
            "best": self.best.to_dict(),
            "best_index": self.best_index,
            "table": self.table,
        }


def tune(
    cases: Sequence[Case],
    groups: Sequence[Hashable],
    candidates: Sequence[MethodSpec],
    alpha: float,
    *,
    show_progress: bool = False,
    **cv: Any,
) -> TuneResult:
    """Choose among ``candidates`` by group K-fold CV on ``cases`` (calibration images only).

    Computes every candidate's score maps and loss curves once, then :func:`select` (``cv``:
    its ``criterion``, ``folds`` and ``seed``).
    """
    check_alpha(alpha)
    _check_criterion(cv.get("criterion", "dice"))
    if len(cases) != len(groups):
        raise SegcpError(f"{len(cases)} cases but {len(groups)} group labels")
    if not candidates:
        raise SegcpError("no candidate settings to tune over")
    maps, curves, mins = candidate_maps(candidates, cases, "tune", show_progress)
    best, table = select(maps, curves, mins, cases, groups, alpha, **cv)
    for row, spec in zip(table, candidates):
        row["label"] = spec.label
        row["params"] = dict(spec.params)
    return TuneResult(candidates[best], best, cv.get("criterion", "dice"), float(alpha), cv.get("folds", 5), table)
