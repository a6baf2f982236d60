"""Pixel-wise APS on the mean softmax: the baseline of CONSIGN, with the same 0/1 loss.

Per pixel p, sort the classes by μ_p descending (ties: lower label first) and let
e_p(l) = the mass of the classes ranked strictly before l (0 for the top class). The set is

    C_λ(p) = {l : e_p(l) ≤ λ},   λ ∈ [0, 1],

i.e. classes are added in rank order until the cumulative mass reaches λ; the top class is
always in (non-randomised APS). We use the closed form "≤ λ": it differs from "stop as soon as
the cumulative mass is ≥ λ" only when a cumulative sum equals λ exactly, and it makes the loss
right-continuous (the score is attained). λ = 1 gives every class at every pixel.

The set of segmentations is the product Π_p C_λ(p). It contains Y up to β when some member
agrees with Y up to β; since the recall of label l only counts pixels with Y_p = l, the best
member takes Y_p wherever Y_p ∈ C_λ(p), so

    Y ∈ C_λ  ⇔  Σ_p ω_p 1{e_p(Y_p) ≤ λ} > β

(ω from :func:`~segcp.segsets.agreement.truth_weights`): the mean over the labels present in
Y of the fraction of their pixels whose true label is in the pixel's set. This is exact, so the
score λ*(Y) = min{λ : … > β} is read off the sorted e_p(Y_p) (no search); "> β" is decided
exactly (:func:`~segcp.segsets.agreement.exceeds_beta`, the rule CONSIGN uses too).

Sampling (``mode``): ``"uniform"`` (default) draws each pixel independently and uniformly
from its set — the uniform distribution on the product set, the analogue of CONSIGN's uniform
c in the box; ``"prob"`` draws each pixel from μ_p restricted to its set (renormalised).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from segcp.cases import check_beta, check_label_map
from segcp.errors import SegcpError
from segcp.segsets.agreement import exceeds_beta, truth_labels, truth_weights

__all__ = ["APS_MODES", "aps_agreement", "aps_draw", "aps_score", "aps_sets", "entry_levels"]

APS_MODES = ("uniform", "prob")


def _ranks(mean: NDArray[np.float64]) -> NDArray[np.int64]:
    """Class order per pixel, (L, P): by μ descending, ties by label ascending."""
    return np.argsort(-mean, axis=0, kind="stable")


def entry_levels(mean: ArrayLike) -> NDArray[np.float64]:
    """e_p(l), shape (L, *S): the λ from which label l is in the set of pixel p.

    Examples
    --------
    >>> import numpy as np
    >>> entry_levels(np.array([[0.2], [0.7], [0.1]])).ravel().round(3).tolist()
    [0.7, 0.0, 0.9]
    """
    mu = np.asarray(mean, dtype=np.float64)
    L = mu.shape[0]
    flat = mu.reshape(L, -1)
    order = _ranks(flat)
    sorted_mu = np.take_along_axis(flat, order, axis=0)
    before = np.cumsum(sorted_mu, axis=0) - sorted_mu  # mass strictly before each rank
    before[0] = 0.0
    e = np.empty_like(flat)
    np.put_along_axis(e, order, before, axis=0)
    return e.reshape(mu.shape)


def aps_sets(mean: ArrayLike, lam: float) -> NDArray[np.bool_]:
    """The pixel sets C_λ(p) as a boolean (L, *S) array (top class always in)."""
    return entry_levels(mean) <= float(lam)


def _curve(mean: NDArray[np.float64], truth: NDArray[np.int64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Sorted truth levels e_p(Y_p) and the cumulative agreement at each of them."""
    e = entry_levels(mean).reshape(mean.shape[0], -1)
    y = truth.ravel()
    levels = e[y, np.arange(y.size)]
    w = truth_weights(truth).ravel()
    order = np.argsort(levels, kind="stable")
    return levels[order], np.cumsum(w[order])


def _check(mean: ArrayLike, truth: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    mu = np.asarray(mean, dtype=np.float64)
    if mu.ndim < 3:
        raise SegcpError(f"APS: class probabilities must be (L, H, W) or (L, D, H, W), got shape {mu.shape}")
    y = check_label_map(truth, "truth", mu.shape[0])
    if y.shape != mu.shape[1:]:
        raise SegcpError(f"APS: truth shape {y.shape} does not match the probabilities' spatial shape {mu.shape[1:]}")
    return mu, y


def aps_agreement(mean: ArrayLike, truth: ArrayLike, lam: float) -> float:
    """max over the product set C_λ of the agreement with the truth (exact)."""
    mu, y = _check(mean, truth)
    levels, cum = _curve(mu, y)
    k = int(np.searchsorted(levels, float(lam), side="right"))
    return float(cum[k - 1]) if k else 0.0


def aps_score(mean: ArrayLike, truth: ArrayLike, beta: float = 0.9) -> float:
    """λ*: the smallest λ whose product set contains the truth up to β (exact, ≤ 1).

    Examples
    --------
    >>> import numpy as np
    >>> mu = np.array([[[0.9, 0.4]], [[0.1, 0.6]]])        # L = 2, a 1 × 2 image
    >>> aps_score(mu, np.array([[0, 0]]), beta=0.5)          # pixel 2 needs label 0: e = 0.6
    0.6
    """
    b = check_beta(beta)
    mu, y = _check(mean, truth)
    e = entry_levels(mu).reshape(mu.shape[0], -1)
    flat = y.ravel()
    levels = e[flat, np.arange(flat.size)]
    order = np.argsort(levels, kind="stable")
    levels = levels[order]
    cum = np.cumsum(truth_weights(y).ravel()[order])
    index, sizes = truth_labels(y)
    lab = index.ravel()[order]

    def counts(rows: np.ndarray) -> np.ndarray:  # per-label counts of the first j + 1 pixels
        return np.stack([np.bincount(lab[: int(j) + 1], minlength=sizes.size) for j in rows])

    # the exact agreement grows with j and is 1 > β at the end: the first row that exceeds β
    j = int(np.flatnonzero(exceeds_beta(cum, b, counts, sizes, flat.size))[0])
    return float(levels[j])


def aps_draw(
    mean: ArrayLike, lam: float, n_draws: int, seed: int | np.random.Generator | None = 0, mode: str = "uniform", chunk: int = 4_000_000
) -> NDArray[np.int64]:
    """``n_draws`` segmentations from the product set, each pixel independently: (S, *S)."""
    if mode not in APS_MODES:
        raise SegcpError(f"unknown APS sampling mode {mode!r}; choose one of {', '.join(APS_MODES)}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    mu = np.asarray(mean, dtype=np.float64)
    L = mu.shape[0]
    flat = mu.reshape(L, -1)
    P = flat.shape[1]
    order = _ranks(flat)
    e = entry_levels(flat)
    size = (e <= float(lam)).sum(axis=0)  # members are the first `size` ranks
    out = np.empty((int(n_draws), P), np.int64)
    out[:] = order[0]
    unc = np.flatnonzero(size > 1)
    if unc.size == 0 or n_draws == 0:
        return out.reshape((int(n_draws), *mu.shape[1:]))
    m = size[unc]
    o = order[:, unc]
    if mode == "prob":
        smu = np.take_along_axis(flat[:, unc], o, axis=0)
        smu = np.where(np.arange(L)[:, None] < m[None, :], smu, 0.0)
        cum = np.cumsum(smu, axis=0)
        total = cum[-1]
    per = max(1, chunk // max(1, unc.size * (L if mode == "prob" else 1)))
    for i in range(0, int(n_draws), per):
        s = min(per, int(n_draws) - i)
        u = rng.random((s, unc.size))
        if mode == "uniform":
            k = np.minimum((u * m).astype(np.int64), m - 1)
        else:
            k = (cum[None, :, :] <= (u * total)[:, None, :]).sum(axis=1)
            k = np.minimum(k, m - 1)
        out[i : i + s, unc] = o[k, np.arange(unc.size)]
    return out.reshape((int(n_draws), *mu.shape[1:]))
