"""The 0/1 loss shared by CONSIGN and pixel-wise APS: agreement up to β.

A segmentation Ŝ *agrees with* a ground-truth label map Y *up to β* when the mean, over the
labels present in Y, of their recall is strictly greater than β:

    agree(Ŝ, Y) = (1/|ℒ_Y|) Σ_{l ∈ ℒ_Y} |{p : Y_p = l, Ŝ_p = l}| / |{p : Y_p = l}|  >  β,

with ℒ_Y the labels present in Y (background included). A *set of segmentations* C contains Y
(up to β) when some Ŝ ∈ C agrees with Y; the loss of an image is 1{Y ∉ C}. Because the recall
of a label only counts pixels of that label in Y, the agreement is a weighted count of correct
pixels, Σ_p ω_p 1{Ŝ_p = Y_p} with ω_p = 1 / (|ℒ_Y| · |{q : Y_q = Y_p}|), which is how it is
computed here (one dot product, batched over many segmentations).

**The decision "agrees up to β" is exact** (:func:`exceeds_beta`, used by the CONSIGN search and
its certificate check, by APS and by the sampled coverage alike). The agreement is the rational
number (1/|ℒ_Y|) Σ_l h_l / n_l (h_l the correct pixels of label l, n_l its pixels) and β is the
decimal it is written as (the shortest decimal that round-trips to the float: 0.8 means 4/5, not
the binary double 0.8000000000000000444…); a segmentation agrees when that rational exceeds β.
The floating-point agreement decides wherever it is farther than its own error bound from β
(a sum of at most P non-negative terms of total 1 is within P·ε of the exact value, whatever
the order of the summation); inside that band the per-label counts are compared exactly. So
a segmentation whose agreement equals β exactly is never a member, however its float sum
rounds (0.05 added sixteen times is 0.8000000000000002 in one order and 0.7999999999999999 in
another).

Also here: validation of sampled softmax stacks and label maps (one-line ``SegcpError``).
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from segcp.errors import SegcpError

__all__ = ["agreement", "agrees", "beta_fraction", "exceeds_beta", "float_band", "truth_labels", "truth_weights"]


def truth_weights(truth: NDArray[Any]) -> NDArray[np.float64]:
    """Per-pixel weights ω (same shape as ``truth``) with agree(Ŝ, Y) = Σ_p ω_p 1{Ŝ_p = Y_p}.

    ω_p = 1 / (|ℒ_Y| · n_{Y_p}), n_l the number of pixels of label l; Σ_p ω_p = 1.

    Examples
    --------
    >>> import numpy as np
    >>> truth_weights(np.array([0, 0, 0, 1])).tolist()
    [0.16666666666666666, 0.16666666666666666, 0.16666666666666666, 0.5]
    """
    y = np.asarray(truth)
    labels, inverse, counts = np.unique(y.ravel(), return_inverse=True, return_counts=True)
    if labels.size == 0:
        raise SegcpError("the ground truth is empty (no pixels)")
    w = 1.0 / (labels.size * counts.astype(np.float64))
    return w[inverse].reshape(y.shape)


def truth_labels(truth: NDArray[Any]) -> tuple[NDArray[np.intp], NDArray[np.int64]]:
    """(index, sizes): index (same shape as ``truth``) of each pixel's label among the labels
    present (0 … m − 1, sorted), and sizes (m,) the number of pixels of each."""
    y = np.asarray(truth)
    labels, inverse, counts = np.unique(y.ravel(), return_inverse=True, return_counts=True)
    if labels.size == 0:
        raise SegcpError("the ground truth is empty (no pixels)")
    return inverse.reshape(y.shape), counts.astype(np.int64)


def beta_fraction(beta: float) -> Fraction:
    """β as the rational it is written as: the shortest decimal that round-trips to the float.

    Examples
    --------
    >>> beta_fraction(0.8), beta_fraction(0.7)
    (Fraction(4, 5), Fraction(7, 10))
    """
    return Fraction(repr(float(beta)))


def float_band(n_terms: int) -> float:
    """Half width of the band around β inside which a float agreement is not trusted.

    The agreement is a sum of at most ``n_terms`` non-negative terms of total 1, each term
    rounded once; any summation order is then within (n_terms + 1)·ε/2 of the exact value
    (Higham, *Accuracy and Stability of Numerical Algorithms*, §4.2), and a split into two
    such sums added together (the CONSIGN search: active prefix + fixed suffix) within twice
    that. The band is four times the bound, plus 1e-12.
    """
    return 1e-12 + 2.0 * (int(n_terms) + 1) * float(np.finfo(np.float64).eps)


def exceeds_beta(
    values: ArrayLike, beta: float, counts: Callable[[NDArray[np.intp]], ArrayLike], sizes: ArrayLike, n_terms: int
) -> NDArray[np.bool_]:
    """The one rule for "agrees up to β": exact, for a batch of agreements.

    Parameters
    ----------
    values : (M,) float, the floating-point agreements (any summation order).
    beta : the threshold (read as :func:`beta_fraction`).
    counts : called with the indices of the rows whose float value lies within
        :func:`float_band` of β; returns their per-label correct-pixel counts, (len(rows), m) int.
    sizes : (m,) int, pixels per label present in the truth (:func:`truth_labels`).
    n_terms : how many terms the float agreement summed at most (pixels), for the band.

    Returns
    -------
    (M,) bool: Σ_l counts_l / sizes_l > m·β exactly (rows outside the band: the float value,
    which then has the same answer).
    """
    v = np.atleast_1d(np.asarray(values, dtype=np.float64))
    b = float(beta)
    band = float_band(n_terms)
    out = v > b + band
    near = np.flatnonzero(np.abs(v - b) <= band)
    if near.size:
        c = np.asarray(counts(near)).reshape(near.size, -1)
        n = [int(k) for k in np.asarray(sizes).ravel()]
        if c.shape[1] != len(n):
            raise ValueError(f"exceeds_beta: {c.shape[1]} counts per row for {len(n)} labels")
        target = len(n) * beta_fraction(b)
        for i, row in zip(near, c):
            out[i] = sum((Fraction(int(h), k) for h, k in zip(row, n)), Fraction(0)) > target
    return out


def agreement(pred: ArrayLike, truth: ArrayLike) -> NDArray[np.float64] | float:
    """Mean over the labels present in ``truth`` of their recall in ``pred``.

    Parameters
    ----------
    pred : array_like of int, shape (*S) or (M, *S)
        One segmentation or a batch of M segmentations (label maps).
    truth : array_like of int, shape (*S)
        The ground-truth label map.

    Returns
    -------
    float for one segmentation, ndarray (M,) for a batch; in [0, 1].

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([[0, 0], [1, 1]])
    >>> agreement(np.array([[0, 1], [1, 1]]), y)   # background recall 1/2, label 1 recall 1
    0.75
    """
    y = np.asarray(truth)
    p = np.asarray(pred)
    w = truth_weights(y).ravel()
    if p.shape == y.shape:
        return float(np.dot((p.ravel() == y.ravel()), w))
    if p.shape[1:] != y.shape:
        raise SegcpError(f"agreement: segmentation shape {p.shape} does not match truth shape {y.shape}")
    hits = p.reshape(p.shape[0], -1) == y.reshape(1, -1)
    return hits.astype(np.float64) @ w


def agrees(pred: ArrayLike, truth: ArrayLike, beta: float) -> NDArray[np.bool_] | bool:
    """Whether ``pred`` agrees with ``truth`` up to β (exact; see :func:`exceeds_beta`).

    ``pred`` is one segmentation (*S) (returns bool) or a batch (M, *S) (returns (M,) bool).

    Examples
    --------
    >>> import numpy as np
    >>> y = np.array([0] * 10 + [1] * 10)
    >>> pred = np.array([0] * 10 + [1] * 6 + [0] * 4)   # recall 1 and 0.6: mean exactly 0.8
    >>> agrees(pred, y, 0.8), agrees(pred, y, 0.79)
    (False, True)
    """
    y = np.asarray(truth)
    p = np.asarray(pred)
    single = p.shape == y.shape
    if not single and p.shape[1:] != y.shape:
        raise SegcpError(f"agreement: segmentation shape {p.shape} does not match truth shape {y.shape}")
    hits = p.reshape(-1, y.size) == y.reshape(1, -1)
    values = hits.astype(np.float64) @ truth_weights(y).ravel()
    index, sizes = truth_labels(y)
    idx = index.ravel()

    def counts(rows: NDArray[np.intp]) -> NDArray[np.int64]:
        return np.stack([np.bincount(idx[hits[r]], minlength=sizes.size) for r in rows])

    out = exceeds_beta(values, beta, counts, sizes, y.size)
    return bool(out[0]) if single else out
