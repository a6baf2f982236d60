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
a strict guarantee tune on images that are not used for calibration — e.g. ``holdout``
groups split off the calibration set (:func:`split_holdout`), or the model's validation
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

import itertools
import math
from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from segcp.calibration import LossCurves, crc_lambda
from segcp.errors import SegcpError
from segcp.methods import Case

if TYPE_CHECKING:  # pragma: no cover
    from segcp.compare import MethodSpec

__all__ = ["CRITERIA", "TunedSpec", "TuneResult", "candidate_maps", "expand_grid", "group_folds", "select", "split_holdout", "tune"]

#: criterion → (better is higher?, description)
CRITERIA: dict[str, tuple[bool, str]] = {
    "dice": (True, "mean Dice of the held-out folds' sets (higher is better)"),
    "hd95": (False, "mean HD95 of the held-out folds' sets (lower is better)"),
    "stretch": (False, "mean stretch |C| / |Y| of the held-out folds' sets (lower is better)"),
}


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
        if self.criterion not in CRITERIA:
            raise SegcpError(f"unknown tuning criterion {self.criterion!r}; choose one of {', '.join(CRITERIA)}")
        if self.folds < 2:
            raise SegcpError(f"tuning needs at least 2 folds, got {self.folds}")

    @property
    def method(self) -> str:
        return self.candidates[0].method

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "tuned": True,
            "criterion": self.criterion,
            "folds": self.folds,
            "seed": self.seed,
            "candidates": [asdict(c) for c in self.candidates],
        }


def expand_grid(base: dict[str, Any], grid: dict[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Cartesian product of ``grid`` values on top of ``base`` params (grid order kept)."""
    keys = list(grid)
    return [base | dict(zip(keys, values)) for values in itertools.product(*(grid[k] for k in keys))]


def group_folds(groups: Sequence[Hashable], folds: int, seed: int = 0) -> list[NDArray[np.int64]]:
    """Indices of ``folds`` folds with every group in one fold (groups shuffled by ``seed``, dealt
    to the currently smallest fold). Fewer groups than folds → one fold per group."""
    uniq = sorted({str(g) for g in groups})
    if len(uniq) < 2:
        raise SegcpError(f"cross-validation needs at least 2 groups in the calibration set, got {len(uniq)}")
    k = min(int(folds), len(uniq))
    order = np.random.default_rng(seed).permutation(len(uniq))
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(str(g), []).append(i)
    out: list[list[int]] = [[] for _ in range(k)]
    for j in order:
        smallest = min(range(k), key=lambda f: (len(out[f]), f))
        out[smallest].extend(members[uniq[j]])
    return [np.sort(np.asarray(f, dtype=np.int64)) for f in out]


def split_holdout(groups: Sequence[Hashable], fraction: float, seed: int = 0) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(tune, calibrate) indices: about ``fraction`` of the groups for tuning, the rest for
    calibration — tuning then never touches the images that set λ̂ (strict guarantee)."""
    if not 0 < fraction < 1:
        raise SegcpError(f"holdout fraction must be in (0, 1), got {fraction}")
    uniq = sorted({str(g) for g in groups})
    if len(uniq) < 2:
        raise SegcpError("a tuning hold-out needs at least 2 groups")
    rng = np.random.default_rng(seed)
    n_tune = min(len(uniq) - 1, max(1, round(fraction * len(uniq))))
    tune_groups = set(np.asarray(uniq)[rng.permutation(len(uniq))[:n_tune]].tolist())
    is_tune = np.array([str(g) in tune_groups for g in groups])
    return np.flatnonzero(is_tune), np.flatnonzero(~is_tune)


def _image_value(criterion: str, pred: NDArray[np.bool_], case: Case) -> float:
    mask = case.mask
    if criterion == "dice":
        inter = np.count_nonzero(pred & mask)
        denom = np.count_nonzero(pred) + np.count_nonzero(mask)
        return 1.0 if denom == 0 else 2.0 * inter / denom
    if criterion == "stretch":
        n_true = np.count_nonzero(mask)
        return math.nan if n_true == 0 else np.count_nonzero(pred) / n_true
    from segcp.metrics import evaluate_set

    return float(evaluate_set(pred, mask, case.model_mask, case.spacing)["hd95"])


def select(
    score_maps: Sequence[Sequence[NDArray[np.floating]]],
    curves: Sequence[Sequence[LossCurves]],
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
    score_maps, curves : per candidate, per image: the method's score map (the set at λ is
        ``score ≤ λ``) and its loss curve.
    lambda_mins : per candidate, the method's smallest λ (``SetMethod.lambda_min``).
    cases, groups : the calibration images (masks, spacing) and their groups.

    Returns
    -------
    (index of the best candidate, table) where the table has, per candidate, the CV value,
    the number of infeasible folds (no λ met the bound on the other folds: counted as the worst
    value) and the per-fold λ̂.
    """
    higher, _ = CRITERIA[criterion]
    fold_idx = group_folds(groups, folds, seed)
    table: list[dict[str, Any]] = []
    for c in range(len(score_maps)):
        values: list[float] = []
        lambdas: list[float] = []
        infeasible = 0
        for f, held in enumerate(fold_idx):
            train = np.concatenate([fold_idx[g] for g in range(len(fold_idx)) if g != f])
            try:
                lam = crc_lambda(LossCurves.concat([curves[c][i] for i in train]), alpha, lambda_min=lambda_mins[c]).lambda_
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
        table.append({"candidate": c, "value": value, "infeasible_folds": infeasible, "fold_lambdas": lambdas})
    vals = np.array([t["value"] for t in table])
    best = int(np.argmax(vals) if higher else np.argmin(vals))  # first of ties; all infeasible → 0
    return best, table


def candidate_maps(
    candidates: Sequence[MethodSpec], cases: Sequence[Case], what: str = "score maps", show_progress: bool = False
) -> tuple[list[list[NDArray[np.float64]]], list[list[LossCurves]], list[float]]:
    """Per candidate: every case's score map and loss curve, and the method's ``lambda_min``."""
    from segcp.pipeline import progress

    maps, curves, mins = [], [], []
    for spec in candidates:
        m = spec.build()
        label = f"{what} ({spec.label})" if len(candidates) > 1 else what
        maps.append([m.score_map(c) for c in progress(list(cases), label, show_progress)])
        curves.append([m.loss_curve(c, spec.guarantee, spec.tau) for c in cases])
        mins.append(m.lambda_min)
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
            "best": asdict(self.best),
            "best_index": self.best_index,
            "table": self.table,
        }


def tune(
    cases: Sequence[Case],
    groups: Sequence[Hashable],
    candidates: Sequence[MethodSpec],
    alpha: float,
    *,
    criterion: str = "dice",
    folds: int = 5,
    seed: int = 0,
    show_progress: bool = False,
) -> TuneResult:
    """Choose among ``candidates`` by group K-fold CV on ``cases`` (calibration images only).

    Computes every candidate's score maps and loss curves once, then :func:`select`.
    """
    from segcp.calibration import check_alpha

    check_alpha(alpha)
    if criterion not in CRITERIA:
        raise SegcpError(f"unknown tuning criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    if len(cases) != len(groups):
        raise SegcpError(f"{len(cases)} cases but {len(groups)} group labels")
    if not candidates:
        raise SegcpError("no candidate settings to tune over")
    maps, curves, mins = candidate_maps(candidates, cases, "tune", show_progress)
    best, table = select(maps, curves, mins, cases, groups, alpha, criterion=criterion, folds=folds, seed=seed)
    for row, spec in zip(table, candidates):
        row["label"] = spec.label
        row["params"] = dict(spec.params)
    return TuneResult(candidates[best], best, criterion, float(alpha), folds, table)
