"""Reproducible splits by group: the one place that splits by group.

Conformal guarantees need exchangeable calibration and test images. Slices of one patient,
or near-duplicate images of one lesion, are not exchangeable with each other, so every split
here keeps a *group* (a patient for ACDC, a near-duplicate group for BUSI) on one side.

- :func:`split_groups` / :func:`split_ids`: one train / calibration / test partition of the
  groups (seeded); pool = calibration ∪ test, for repeated CP splits.
- :func:`random_cal_test_splits`: repeated calibration/test splits of the pool with about
  ``n_cal`` calibration images, whole groups only.
- :func:`group_folds`: K folds of whole groups (cross-validation on calibration data);
  :func:`split_fraction`: a fraction of the groups on one side (a tuning hold-out of whole groups).

The near-duplicate groups of BUSI are found by perceptual hash in
:mod:`segcp.harness.datasets.hashes`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError

__all__ = ["DEFAULT_FRACTIONS", "Split", "group_folds", "random_cal_test_splits", "split_fraction", "split_groups", "split_ids"]

#: Default fractions of *groups* in (train, calibration, test); pool = calibration + test.
DEFAULT_FRACTIONS: tuple[float, float, float] = (0.6, 0.2, 0.2)

PARTS = ("train", "calibration", "test", "pool")


# ------------------------------------------------------------------------ splits
@dataclass(frozen=True)
class Split:
    """A partition of item ids by group.

    Attributes
    ----------
    train, calibration, test : sorted item ids of each part.
    groups : item id → group, for every id in the split.
    seed : the seed that produced it; fractions : (train, calibration, test) of groups.
    meta : free-form provenance (e.g. task name and protocols), copied into :meth:`to_dict`.
    """

    train: tuple[str, ...]
    calibration: tuple[str, ...]
    test: tuple[str, ...]
    groups: Mapping[str, Hashable] = field(repr=False)
    seed: int | None = None
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def pool(self) -> tuple[str, ...]:
        """Calibration ∪ test, sorted: the images that repeated CP splits redraw from."""
        return tuple(sorted(self.calibration + self.test))

    def part(self, name: str) -> tuple[str, ...]:
        """Ids of ``"train"``, ``"calibration"``, ``"test"`` or ``"pool"``."""
        if name not in PARTS:
            raise SegcpError(f"split part {name!r}: expected one of {', '.join(PARTS)}")
        return self.pool if name == "pool" else getattr(self, name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record (ids per part, group per id, seed, fractions)."""
        return {
            **dict(self.meta),
            "seed": self.seed,
            "fractions": dict(zip(("train", "calibration", "test"), self.fractions, strict=True)),
            "train": list(self.train),
            "calibration": list(self.calibration),
            "test": list(self.test),
            "groups": {k: str(v) for k, v in sorted(self.groups.items())},
        }


def _check_fractions(train: float, calibration: float, test: float) -> tuple[float, float, float]:
    fr = (float(train), float(calibration), float(test))
    if any(not math.isfinite(f) or f < 0 for f in fr):
        raise SegcpError(f"split fractions must be non-negative numbers, got train={train}, calibration={calibration}, test={test}")
    if abs(sum(fr) - 1.0) > 1e-6:
        raise SegcpError(f"split fractions must sum to 1, got train={train} + calibration={calibration} + test={test} = {sum(fr):g}")
    return fr


def _sorted_unique(groups: Sequence[Hashable] | NDArray[Any]) -> list[Hashable]:
    uniq = set(np.asarray(groups, dtype=object).tolist()) if len(groups) else set()
    return sorted(uniq, key=lambda g: (type(g).__name__, str(g)))


def split_groups(
    groups: Sequence[Hashable] | NDArray[Any],
    *,
    train: float = DEFAULT_FRACTIONS[0],
    calibration: float = DEFAULT_FRACTIONS[1],
    test: float = DEFAULT_FRACTIONS[2],
    seed: int = 0,
) -> dict[str, list[Hashable]]:
    """Partition the distinct groups into train / calibration / test (seeded).

    Parameters
    ----------
    groups : group labels (one per item, repeats allowed; only the distinct values matter).
    train, calibration, test : fractions of *groups*, summing to 1. Counts are
        ``round(train·G)`` and ``round(calibration·G)``; test takes the rest.
    seed : seed of ``numpy.random.default_rng``; the same seed and groups give the same
        partition whatever the order of ``groups``.

    Returns
    -------
    ``{"train": [...], "calibration": [...], "test": [...]}``, each a sorted list of groups.
    """
    fr = _check_fractions(train, calibration, test)
    uniq = _sorted_unique(groups)
    n = len(uniq)
    if n == 0:
        raise SegcpError("cannot split an empty set of groups")
    order = np.random.default_rng(seed).permutation(n)
    n_train = round(fr[0] * n)
    n_cal = min(round(fr[1] * n), n - n_train)
    shuffled = [uniq[i] for i in order]
    parts = {"train": shuffled[:n_train], "calibration": shuffled[n_train : n_train + n_cal], "test": shuffled[n_train + n_cal :]}
    return {k: sorted(v, key=lambda g: (type(g).__name__, str(g))) for k, v in parts.items()}


def split_ids(
    groups: Mapping[str, Hashable],
    *,
    train: float = DEFAULT_FRACTIONS[0],
    calibration: float = DEFAULT_FRACTIONS[1],
    test: float = DEFAULT_FRACTIONS[2],
    seed: int = 0,
) -> Split:
    """Partition item ids (``id → group``) by group; see :func:`split_groups`."""
    parts = split_groups(list(groups.values()), train=train, calibration=calibration, test=test, seed=seed)
    where = {g: name for name, gs in parts.items() for g in gs}
    ids: dict[str, list[str]] = {"train": [], "calibration": [], "test": []}
    for ident, g in groups.items():
        ids[where[g]].append(ident)
    return Split(
        tuple(sorted(ids["train"])),
        tuple(sorted(ids["calibration"])),
        tuple(sorted(ids["test"])),
        dict(groups),
        seed,
        _check_fractions(train, calibration, test),
    )


def random_cal_test_splits(
    groups: Mapping[str, Hashable] | Sequence[Hashable] | NDArray[Any], n_cal: int, n_splits: int, seed: int = 0
) -> Iterator[tuple[Any, Any]]:
    """Repeated calibration/test splits of a pool, keeping every group on one side.

    Parameters
    ----------
    groups : the pool: a mapping ``id → group``, or a sequence of group labels (one per image).
    n_cal : wanted number of calibration images.
    n_splits : number of splits to yield.
    seed : seed of ``numpy.random.default_rng``; the same seed gives the same sequence.

    Yields
    ------
    (calibration, test)
        Sorted id lists for a mapping; sorted int64 index arrays for a sequence.

    Notes
    -----
    Each split shuffles the groups, then walks them in that order, taking a group whenever
    the groups after it can still complete the target exactly (a subset-sum table over
    group sizes), so the calibration part has exactly ``n_cal`` images whenever some set of
    whole groups has that size (always with one image per group; with all groups of one
    image this is a uniformly random subset). Otherwise the target is the smallest
    reachable size above ``n_cal`` (e.g. ACDC with the RW-CP protocol, 2 images per
    patient, odd ``n_cal``: ``n_cal + 1``). The choice depends on group sizes and the
    random order only, never on image content. At least one group is always left for test.

    Examples
    --------
    >>> splits = random_cal_test_splits(["a", "a", "b", "c", "c", "d"], n_cal=3, n_splits=2, seed=0)
    >>> [len(cal) for cal, test in splits]
    [3, 3]
    """
    if isinstance(groups, Mapping):
        keys: list[Any] = sorted(groups)
        labels = [groups[k] for k in keys]
    else:
        labels = list(np.asarray(groups, dtype=object).tolist())
        keys = list(range(len(labels)))
    n = len(labels)
    if isinstance(n_cal, bool) or not isinstance(n_cal, (int, np.integer)) or not 1 <= n_cal < n:
        raise SegcpError(f"n_cal={n_cal!r}: must be an integer in 1..{n - 1} for a pool of {n} images")
    if isinstance(n_splits, bool) or not isinstance(n_splits, (int, np.integer)) or n_splits < 1:
        raise SegcpError(f"n_splits={n_splits!r}: must be a positive integer")
    uniq = _sorted_unique(labels)
    if len(uniq) < 2:
        raise SegcpError(f"the pool has {len(uniq)} group(s); at least 2 are needed to split it")
    index = {g: i for i, g in enumerate(uniq)}
    members: list[list[int]] = [[] for _ in uniq]
    for pos, g in enumerate(labels):
        members[index[g]].append(pos)
    sizes = np.array([len(m) for m in members])
    rng = np.random.default_rng(seed)
    for _ in range(int(n_splits)):
        order = rng.permutation(len(uniq)).tolist()
        sz = [int(sizes[gi]) for gi in order]
        # reach[k]: bitset of the sizes reachable with the groups order[k:]
        reach = [0] * (len(order) + 1)
        reach[-1] = 1
        for k in range(len(order) - 1, -1, -1):
            reach[k] = reach[k + 1] | (reach[k + 1] << sz[k])
        target = next((t for t in range(n_cal, n) if (reach[0] >> t) & 1), None)
        if target is None:
            raise SegcpError(f"n_cal={n_cal}: the calibration part would take every group; no test image left")
        chosen: list[int] = []
        need = target
        for k, gi in enumerate(order):
            if need == 0:
                break
            if sz[k] <= need and (reach[k + 1] >> (need - sz[k])) & 1:
                chosen.append(int(gi))
                need -= sz[k]
        in_cal = np.zeros(n, dtype=bool)
        for gi in chosen:
            in_cal[members[gi]] = True
        cal_pos = np.flatnonzero(in_cal)
        test_pos = np.flatnonzero(~in_cal)
        if isinstance(groups, Mapping):
            yield [keys[i] for i in cal_pos], [keys[i] for i in test_pos]
        else:
            yield cal_pos.astype(np.int64), test_pos.astype(np.int64)


def _group_members(groups: Sequence[Hashable]) -> tuple[list[str], dict[str, list[int]]]:
    """(sorted distinct groups as strings, group → positions)."""
    members: dict[str, list[int]] = {}
    for i, g in enumerate(groups):
        members.setdefault(str(g), []).append(i)
    return sorted(members), members


def group_folds(groups: Sequence[Hashable], folds: int, seed: int = 0) -> list[NDArray[np.int64]]:
    """Indices of ``folds`` folds with every group in one fold (groups shuffled by ``seed``, dealt
    to the currently smallest fold). Fewer groups than folds → one fold per group."""
    uniq, members = _group_members(groups)
    if len(uniq) < 2:
        raise SegcpError(f"cross-validation needs at least 2 groups in the calibration set, got {len(uniq)}")
    if isinstance(folds, bool) or int(folds) != folds or folds < 2:
        raise SegcpError(f"cross-validation needs at least 2 folds, got {folds!r}")
    k = min(int(folds), len(uniq))
    order = np.random.default_rng(seed).permutation(len(uniq))
    out: list[list[int]] = [[] for _ in range(k)]
    for j in order:
        smallest = min(range(k), key=lambda f: (len(out[f]), f))
        out[smallest].extend(members[uniq[j]])
    return [np.sort(np.asarray(f, dtype=np.int64)) for f in out]


def split_fraction(groups: Sequence[Hashable], fraction: float, rng: int | np.random.Generator = 0) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """(first, rest) indices: ``round(fraction · G)`` of the G groups (at least 1, at most G − 1)
    on the first side, drawn by ``rng`` (a seed or a generator, for a sequence of splits)."""
    try:
        f = float(fraction)
    except (TypeError, ValueError):
        f = math.nan
    if not 0 < f < 1:
        raise SegcpError(f"split fraction must be in (0, 1), got {fraction!r}")
    uniq, _ = _group_members(groups)
    if len(uniq) < 2:
        raise SegcpError(f"a split by group needs at least 2 groups, got {len(uniq)}")
    gen = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    n_first = min(len(uniq) - 1, max(1, round(f * len(uniq))))
    first = set(np.asarray(uniq)[gen.permutation(len(uniq))[:n_first]].tolist())
    is_first = np.array([str(g) in first for g in groups])
    return np.flatnonzero(is_first), np.flatnonzero(~is_first)
