"""Metrics of sets of segmentations, computed from S segmentations drawn from the set.

* :func:`chao1` — bias-corrected Chao1 estimate of the number of distinct segmentations in
  the set, from the frequency counts of the S draws: S_obs + f1(f1 − 1) / (2(f2 + 1)), f1 the
  number of segmentations drawn exactly once, f2 exactly twice (Chao, 1987; the
  bias-corrected form of Chao, 2005). With S draws all distinct it is S + S(S − 1)/2: the
  estimate says "at least of that order", and it saturates long before the true size of an
  APS product set (2^(#uncertain pixels)).
* :func:`sampled_coverage` — 1 when at least one of the S draws agrees with the truth up to β;
  the mean over images is the sampled empirical coverage (SEC). It is a lower bound of the
  set's true coverage (a draw that agrees proves membership) that grows with S.
* :func:`mean_abs_correlation` — mean over pairs of draws i < j of |Pearson(d_i, d_j)|, with
  d_i the one-hot encoding of draw i restricted to the (pixel, label) entries that vary
  across the draws (constant entries carry no information and would inflate the value).
  Pairs where a draw is constant on those entries are skipped. For S > ``max_draws`` the
  first ``max_draws`` draws are used (draws are i.i.d., so this is an unbiased subsample of
  the pairs).

The public CONSIGN code was not read (GPL-3.0); these are the definitions above, from the
paper's description. Where its implementation differs (e.g. whether
the correlation uses integer labels or one-hot entries, or all pixels) is not known here.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable

import numpy as np
from numpy.typing import ArrayLike, NDArray

from segcp.cases import check_beta
from segcp.errors import SegcpError
from segcp.segsets.agreement import agrees

__all__ = ["chao1", "chao1_from_counts", "draw_metrics", "frequency_counts", "mean_abs_correlation", "sampled_coverage"]


def frequency_counts(draws: ArrayLike) -> NDArray[np.int64]:
    """How many times each distinct segmentation occurs among the draws (S, *S): (S_obs,), descending.

    Linear time: each draw's bytes get a 128-bit BLAKE2b digest and draws are grouped by
    digest; every draw is then compared with its group's first draw, so a digest collision can
    never merge two different draws (it falls back to ``np.unique``, the lexicographic sort of
    all draws, which this replaces: ~1 s and ~1 GB for 1000 ACDC-sized draws). Integer and
    boolean draws (label maps) only; other dtypes (floats, where 0.0 and -0.0 differ in their
    bytes) take the sort.
    """
    d = np.asarray(draws)
    if d.ndim < 2:
        raise SegcpError(f"draws must have shape (S, *spatial), got {d.shape}")
    rows = d.reshape(d.shape[0], -1)
    if rows.dtype.kind in "biu" and rows.shape[1]:
        counts = _digest_counts(np.ascontiguousarray(rows))
        if counts is not None:
            return counts
    if rows.shape[1] and rows.max(initial=0) < 256 and rows.min(initial=0) >= 0:
        rows = rows.astype(np.uint8)
    _, counts = np.unique(rows, axis=0, return_counts=True)
    return np.sort(counts)[::-1].astype(np.int64)


def _digest_counts(rows: NDArray[np.generic]) -> NDArray[np.int64] | None:
    """Counts of equal rows by digest of their bytes (descending); None after a digest collision."""
    first: dict[bytes, int] = {}
    count: dict[bytes, int] = {}
    for i, row in enumerate(rows):
        key = hashlib.blake2b(memoryview(row), digest_size=16).digest()
        j = first.setdefault(key, i)
        if j != i and not np.array_equal(row, rows[j]):
            return None  # two different draws with one digest (never seen; 2^-128 per pair)
        count[key] = count.get(key, 0) + 1
    return np.sort(np.fromiter(count.values(), dtype=np.int64, count=len(count)))[::-1]


def chao1_from_counts(counts: Iterable[int]) -> float:
    """Bias-corrected Chao1 from the frequency of each observed class.

    Examples
    --------
    >>> chao1_from_counts([1, 1, 1, 2, 2, 5])   # S_obs 6, f1 3, f2 2: 6 + 3·2/(2·3)
    7.0
    >>> chao1_from_counts([1, 1, 1, 1])          # all singletons: 4 + 4·3/2
    10.0
    """
    c = np.asarray(list(counts), dtype=np.int64)
    if c.size and c.min() < 1:
        raise SegcpError("Chao1: frequency counts must be >= 1")
    f1 = int(np.sum(c == 1))
    f2 = int(np.sum(c == 2))
    return float(c.size + f1 * (f1 - 1) / (2.0 * (f2 + 1)))


def chao1(draws: ArrayLike) -> float:
    """Bias-corrected Chao1 estimate of the number of distinct segmentations in the set."""
    return chao1_from_counts(frequency_counts(draws))


def sampled_coverage(draws: ArrayLike, truth: ArrayLike, beta: float, chunk: int = 64) -> float:
    """1.0 when some draw agrees with the truth up to β (the exact rule of
    :func:`~segcp.segsets.agreement.exceeds_beta`), else 0.0.

    The draws are checked ``chunk`` at a time (stopping at the first that agrees): the agreement
    of a batch holds a float64 copy of its hits, which for 1000 ACDC-sized draws is 440 MB.
    """
    b = check_beta(beta)
    d = np.asarray(draws)
    if d.shape == np.shape(truth):
        d = d[None]
    for s in range(0, d.shape[0], max(1, int(chunk))):
        if np.any(agrees(d[s : s + int(chunk)], truth, b)):
            return 1.0
    return 0.0


def mean_abs_correlation(draws: ArrayLike, n_labels: int | None = None, max_draws: int = 256) -> float:
    """Mean |Pearson| over pairs of draws on the varying one-hot entries (NaN if none vary)."""
    d = np.asarray(draws)
    d = d[: int(max_draws)].reshape(min(d.shape[0], int(max_draws)), -1)
    S = d.shape[0]
    if S < 2:
        return math.nan
    L = int(n_labels) if n_labels is not None else int(d.max()) + 1
    varying = np.flatnonzero(np.any(d != d[:1], axis=0))
    if varying.size == 0:
        return math.nan
    sub = d[:, varying]
    onehot = (sub[:, None, :] == np.arange(L)[None, :, None]).reshape(S, -1).astype(np.float64)
    keep = np.any(onehot != onehot[:1], axis=0)
    x = onehot[:, keep]
    x -= x.mean(axis=1, keepdims=True)
    norm = np.linalg.norm(x, axis=1)
    ok = norm > 0
    x = x[ok] / norm[ok, None]
    if x.shape[0] < 2:
        return math.nan
    r = np.abs(x @ x.T)
    iu = np.triu_indices(x.shape[0], k=1)
    return float(np.clip(r[iu], 0.0, 1.0).mean())


def draw_metrics(draws: ArrayLike, truth: ArrayLike | None, beta: float, n_labels: int | None = None) -> dict[str, float]:
    """``chao``, ``sec`` (needs the truth), ``correlation`` and ``distinct`` of one image's draws."""
    counts = frequency_counts(draws)
    out = {"chao": chao1_from_counts(counts), "distinct": float(counts.size), "correlation": mean_abs_correlation(draws, n_labels)}
    if truth is not None:
        out["sec"] = sampled_coverage(draws, truth, beta)
    return out
