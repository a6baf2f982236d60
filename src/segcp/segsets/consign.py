"""CONSIGN: conformal sets of segmentations spanned by the principal modes of sampled outputs.

CONSIGN (Viti, Karabelas & Holler, *Conformal Segmentation Informed by Spatial Groupings via
Decomposition*, arXiv 2505.14113, ICLR 2026) is re-implemented here from the paper. The
authors' published code (github.com/onurbbruno/CONSIGN, GPL-3.0) was read for its behaviour
only (which coefficients the box is built from, the reference procedure in
``benchmarks/consign_reference.py``); none of it is copied here.

Per image, from N sampled softmax maps ŝ_1 … ŝ_N ∈ R^{L×P} (L labels, P pixels):

1. the mean μ and the thin SVD of the centred samples. segcp factors the N × L·P matrix
   X = [ŝ_n − μ]_n = U Σ Vᵀ (:func:`thin_svd`), so the spatial directions u_k are the rows of
   Vᵀ (unit norm, in R^{L×P}; the paper writes the transposed matrix and calls them the columns
   of *its* U), Σ_kk are the singular values, and ŝ_n = μ + Σ_k Σ_kk U_nk u_k;
2. the box, in one of two conventions (``box``):

   * ``"paper"`` (default; eq. 4–6 of the paper, and what the authors' code computes): the
     coefficients of sample n are ⟨u_k, ŝ_n − μ⟩ = Σ_kk U_nk; a_k, b_k = their α_box/2 and
     1 − α_box/2 quantiles (``np.quantile``, linear);
   * ``"normalized"``: a_k, b_k = the same quantiles of the normalised coefficients U_nk
     (= the paper's a_k, b_k divided by Σ_kk);

   in both, A_k, B_k = (a_k + b_k)/2 ∓ λ Σ_kk (b_k − a_k)/2, and
   C_λ = { argmax_l (μ + Σ_k c_k u_k) : c ∈ B_λ = Π_k [A_k, B_k] }.

The boxes are nested in λ, so C_λ is too. In the paper's convention Σ_kk enters the width
twice: component k's box is exactly the samples' quantile range [a_k, b_k] at λ = 1/Σ_kk, so
λ weighs the components by Σ_kk² relative to each other. In the normalised convention the box
is as wide as the samples' displacements Σ_kk U_nk at λ = 1 for every component (weights Σ_kk;
its centre stays in normalised units). The normalised box at λ is therefore the paper's box at
λ/Σ_kk for each component separately — a different family, not a re-scaling of λ — and its λ̂
is not comparable with the paper's (on 12 ACDC images with K = 2: 0.0358 paper vs 1.84
normalised, about Σ_11 times larger; docs/consign.md). :attr:`Decomposition.spread_lambda` is the λ at which component k's box has the
width of the samples' own spread (1/Σ_kk, resp. 1); every scale-dependent setting of the
search below is expressed in it, so the search behaves the same in both conventions.

Membership and the per-image score
----------------------------------
Y ∈ C_λ (up to β) when some c ∈ B_λ gives a segmentation that agrees with Y up to β
(:mod:`segcp.segsets.agreement`; decided exactly, :func:`~segcp.segsets.agreement.exceeds_beta`).
The score of an image is λ*(X, Y) = the smallest λ at which this search *certifies* membership.
Certification is exact: a found c is checked with the argmax (float64), so Y ∈ C_λ for every
λ ≥ λ*; only the search for c is approximate. A missed c makes λ* larger, never smaller, and
since the score is a deterministic function of (samples, truth) computed identically on
calibration and test images, P(λ*_{n+1} ≤ λ̂) ≥ 1 − α holds for the score and therefore
P(Y ∈ C_λ̂) ≥ 1 − α for the true set. λ̂ is the conformal quantile of the λ*_i (exact CRC on
0/1 curves).

Speed (what makes calibration fast, all exact):

* **fixed pixels.** Writing c = centre + λ s ⊙ t, t ∈ [−1, 1]^K, s_k = Σ_kk (b_k − a_k)/2,
  the score difference of labels l*, l at pixel p varies over the box by at most
  λ Σ_k s_k |u_k[l*, p] − u_k[l, p]|, so a pixel whose centre argmax l* beats every other label
  by more than that is *fixed* at l* for every c in B_λ. Each pixel gets the λ at which it
  becomes active; pixels are sorted by it, the active ones at λ are a prefix, and only
  those are ever computed (typically a few % of the image). A margin of 1e-9 keeps the
  decision robust to float rounding.
* **exact lower bound.** Y_p can only be the argmax for some c if no label beats it at every
  corner: λ ≥ r_p = max_l (base_l − base_y)/Σ_k s_k|u_k[y] − u_k[l]|. So
  agree ≤ UB(λ) = Σ_p ω_p 1{r_p ≤ λ}, and λ_LB = min{λ : UB(λ) > β} ≤ λ*. If λ_LB is
  certified the score is exact; UB(∞) ≤ β proves λ* = ∞.
* **search per λ** (``strategy="lines"``, the default). Screening of t (exact agreement at every
  point: Latin-hypercube points, for components whose box is wider than the samples' spread
  also the same points inside the spread, and the box's corners), then exact line searches:
  along a line of t-space each pixel is right on an open interval whose ends are computed in
  closed form, so the agreement is piecewise constant and its best segment is found exactly
  by sorting the ends (a gradient step on it would see plateaus). Coordinate descent along the
  axes and seeded random directions from the warm starts (the best points of the neighbouring
  λ tested, rescaled to the same c), the best screened points and the best corners. For K = 2
  first an exhaustive search: branch and bound over squares of t-space, then every cell of
  the arrangement of the constraint lines in the squares left — it certifies a member or
  shows there is none (``ScoreResult.proven``), within a work budget; a box so shown empty at λ₁
  is the square [−λ₁/λ, λ₁/λ]² of t-space at every λ > λ₁, which later tests skip.
  ``strategy="adam"``: projected Adam (clip to the box) on a smooth surrogate,
  the soft agreement Σ_p ω_p softmax(z_p/τ)[Y_p], steps capped at ``lr`` × the samples' spread
  per component, τ annealed from ``temperature`` × the median swing of the active pixels.
* **λ search.** Bracketing from λ_LB (+0.25, +0.5, +1, … units of :attr:`Decomposition.lambda_unit`
  up to ``lambda_max``), then bisection to ``rtol`` (relative) — about a dozen membership tests
  instead of one per 0.01 step. A point t certified at λ is in every box from λ‖t‖∞ on (nested
  boxes): with ``lines`` the bisection's upper end drops to it at once.
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, TypedDict, Unpack

import numpy as np
from numpy.typing import ArrayLike, NDArray

from segcp.cases import check_beta, check_label_map, check_samples
from segcp.errors import SegcpError
from segcp.segsets.agreement import agrees, exceeds_beta, float_band, truth_labels, truth_weights

__all__ = [
    "BOX_CONVENTIONS",
    "SEARCH_STRATEGIES",
    "SVD_METHODS",
    "DecomposeOptions",
    "Decomposition",
    "ScoreResult",
    "SearchOptions",
    "absence_bound",
    "consign_score",
    "decompose",
    "draw",
    "fixed_until",
    "is_member",
    "latin_hypercube",
    "thin_svd",
]

SVD_METHODS = ("gram", "lapack", "randomized")
BOX_CONVENTIONS = ("paper", "normalized")
SEARCH_STRATEGIES = ("lines", "adam")
_MAY_BE_ZERO = ("n_screen", "n_directions", "exhaustive")
_CORNER_DIMS = 8  # the lines search screens the 2^K corners of the box (of the first 8 components)
_LEAF_WORK = 200_000  # the arrangement search splits a square of t-space until its lines × pixels are below this
_MAX_DEPTH = 12  # ... or its side is 2^-12 of the box's
_DELTA = 1e-7  # the arrangement search walks each line this far (in t) on the side where its constraint holds
_LAMBDA_MAX_SPREADS = 64.0  # default lambda_max: every component's box 64 × the samples' spread
_ATOL_UNITS = 1e-5  # default atol of the bisection, in units of Decomposition.lambda_unit
_MIN_RELATIVE_SV = 1e-3  # components below this × Σ_11 do not set the default lambda_max
_CHUNK = 2_000_000  # values per block in batched evaluations
_MARGIN = 1e-9  # a pixel is "fixed" only if its label wins by more than this everywhere in the box


# ---------------------------------------------------------------------------- SVD
def thin_svd(x: NDArray[np.float64], k: int, method: str = "gram", seed: int = 0) -> tuple[NDArray, NDArray, NDArray]:
    """Top-k thin SVD of an N × D matrix with N ≪ D: (U (N, k), σ (k,), Vᵀ (k, D)).

    ``gram``: eigen-decomposition of the N × N Gram matrix X Xᵀ, then Vᵀ = Σ⁻¹ Uᵀ X (two
    passes over X; the fastest for N ≈ 30, and accurate for the top singular values, which
    is all CONSIGN uses). ``lapack``: ``np.linalg.svd(full_matrices=False)`` (reference).
    ``randomized``: Halko et al. range finder with 10 oversamples and 2 power iterations.
    Signs are fixed so that the largest-magnitude entry of each row of Vᵀ is positive.
    Singular values below 1e-10·σ₁ (rank deficiency, e.g. k > N − 1) are set to 0 with zero
    vectors.
    """
    n, d = x.shape
    k = int(k)
    if method == "gram":
        g = x @ x.T
        ev, evec = np.linalg.eigh(g)
        ev, evec = ev[::-1][:k], evec[:, ::-1][:, :k]
        sig = np.sqrt(np.clip(ev, 0.0, None))
        u = evec
        vt = np.zeros((u.shape[1], d))
        ok = sig > 1e-10 * max(sig[0] if sig.size else 0.0, 1e-300)
        vt[ok] = (u[:, ok].T @ x) / sig[ok, None]
    elif method == "lapack":
        u, sig, vt = np.linalg.svd(x, full_matrices=False)
        u, sig, vt = u[:, :k], sig[:k], vt[:k]
        ok = sig > 1e-10 * max(sig[0] if sig.size else 0.0, 1e-300)
    elif method == "randomized":
        rng = np.random.default_rng(seed)
        q_dim = min(n, k + 10)
        y = x @ rng.standard_normal((d, q_dim))
        q, _ = np.linalg.qr(y)
        for _ in range(2):
            q, _ = np.linalg.qr(x.T @ q)
            q, _ = np.linalg.qr(x @ q)
        b = q.T @ x
        ub, sig, vt = np.linalg.svd(b, full_matrices=False)
        u = q @ ub
        u, sig, vt = u[:, :k], sig[:k], vt[:k]
        ok = sig > 1e-10 * max(sig[0] if sig.size else 0.0, 1e-300)
    else:
        raise SegcpError(f"unknown svd method {method!r}; choose one of {', '.join(SVD_METHODS)}")
    u, sig, vt = u.copy(), sig.copy(), vt.copy()
    sig[~ok] = 0.0
    u[:, ~ok] = 0.0
    vt[~ok] = 0.0
    if vt.shape[0]:
        flip = vt[np.arange(vt.shape[0]), np.argmax(np.abs(vt), axis=1)] < 0
        u[:, flip] *= -1
        vt[flip] *= -1
    if u.shape[1] < k:  # fewer samples than components: pad with empty components
        pad = k - u.shape[1]
        u = np.hstack([u, np.zeros((n, pad))])
        sig = np.concatenate([sig, np.zeros(pad)])
        vt = np.vstack([vt, np.zeros((pad, d))])
    return u, sig, vt


# ---------------------------------------------------------------------------- decomposition
@dataclass(frozen=True, eq=False)
class Decomposition:
    """The per-image ingredients of CONSIGN.

    Attributes
    ----------
    mean : (L, P) float64, μ.
    directions : (K, L, P) float64, unit-norm u_k (zero for a missing component).
    singular_values : (K,) float64, Σ_kk.
    coefficients : (N, K) float64, the samples' coefficients the box is built from:
        ⟨u_k, ŝ_n − μ⟩ = Σ_kk U_nk (``box="paper"``) or the normalised U_nk (``"normalized"``).
    lower, upper : (K,) float64, a_k and b_k (quantiles of ``coefficients``, same units).
    shape : the spatial shape S (P = prod(S)).
    box_convention : ``"paper"`` or ``"normalized"`` (see the module docstring).
    """

    mean: NDArray[np.float64]
    directions: NDArray[np.float64]
    singular_values: NDArray[np.float64]
    coefficients: NDArray[np.float64]
    lower: NDArray[np.float64]
    upper: NDArray[np.float64]
    shape: tuple[int, ...]
    box_convention: str

    def __post_init__(self) -> None:
        if self.box_convention not in BOX_CONVENTIONS:
            raise SegcpError(f"unknown box convention {self.box_convention!r}; choose one of {', '.join(BOX_CONVENTIONS)}")

    @property
    def n_labels(self) -> int:
        return int(self.mean.shape[0])

    @property
    def K(self) -> int:
        return int(self.singular_values.size)

    @property
    def centre(self) -> NDArray[np.float64]:
        """(a_k + b_k)/2."""
        return 0.5 * (self.lower + self.upper)

    @property
    def unit_half_width(self) -> NDArray[np.float64]:
        """s_k = Σ_kk (b_k − a_k)/2: the half width of the box per unit of λ."""
        return self.singular_values * 0.5 * (self.upper - self.lower)

    def box(self, lam: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """(A, B): the corners of B_λ, (K,) each."""
        h = float(lam) * self.unit_half_width
        return self.centre - h, self.centre + h

    @property
    def spread_lambda(self) -> NDArray[np.float64]:
        """(K,) float64: the λ at which component k's box is as wide as the samples' spread.

        ``paper``: 1/Σ_kk (B_λ is then exactly [a_k, b_k]; inf for an empty component);
        ``normalized``: 1 (the box then spans the displacements Σ_kk U_nk, whose quantile range
        is Σ_kk (b_k − a_k)). The search's step sizes, screening and λ steps are set in these
        units, so that they mean the same thing in both conventions.
        """
        if self.box_convention == "normalized":
            return np.ones(self.K)
        with np.errstate(divide="ignore"):
            return np.where(self.singular_values > 0, 1.0 / np.where(self.singular_values > 0, self.singular_values, 1.0), np.inf)

    @property
    def lambda_unit(self) -> float:
        """The scale of λ: the spread λ of the leading component (1/Σ_11 for ``paper``, 1 for
        ``normalized``; 1 when the samples do not vary at all). Bracketing steps and the
        absolute tolerance of the λ search are multiples of it."""
        finite = self.spread_lambda[np.isfinite(self.spread_lambda)]
        return float(finite.min()) if finite.size else 1.0

    @property
    def default_lambda_max(self) -> float:
        """``lambda_max`` when the search options leave it unset: the λ at which every
        component's box (those with Σ_kk ≥ 10⁻³ Σ_11) is 64 times the samples' spread —
        64 for ``normalized``, 64/Σ_kk of the smallest such component for ``paper``."""
        sv = self.singular_values
        keep = np.isfinite(self.spread_lambda) & (sv >= _MIN_RELATIVE_SV * (sv.max() if sv.size else 0.0))
        return _LAMBDA_MAX_SPREADS * (float(self.spread_lambda[keep].max()) if keep.any() else self.lambda_unit)

    def scores_at(self, c: ArrayLike) -> NDArray[np.float64]:
        """μ + Σ_k c_k u_k for c of shape (K,) or (M, K): (L, *S) or (M, L, *S)."""
        c = np.asarray(c, dtype=np.float64)
        z = self.mean.reshape(1, -1) + c.reshape(-1, self.K) @ self.directions.reshape(self.K, -1)
        z = z.reshape((-1, self.n_labels, *self.shape))
        return z[0] if c.ndim == 1 else z

    def segment(self, c: ArrayLike) -> NDArray[np.int64]:
        """The segmentation argmax_l (μ + Σ c_k u_k): (*S) or (M, *S) (full image, float64)."""
        z = self.scores_at(c)
        return np.argmax(z, axis=-1 - len(self.shape))

    @cached_property
    def geometry(self) -> _Geometry:
        """Truth-independent precomputation (fixed pixels), shared by search and sampling."""
        return _Geometry(self)


def decompose(samples: ArrayLike, K: int = 5, box_alpha: float = 0.1, svd: str = "gram", box: str = "paper") -> Decomposition:
    """Mean, top-K SVD and coefficient quantiles of N sampled softmax maps.

    Parameters
    ----------
    samples : array_like, (N, L, *S), values in [0, 1]
        The sampled softmax maps of one image (MC dropout, ensemble, …).
    K : number of principal components (K > N − 1 leaves the extra ones empty).
    box_alpha : the quantile level: a_k, b_k are the box_alpha/2 and 1 − box_alpha/2
        quantiles of the coefficients.
    svd : ``gram`` (default), ``lapack`` or ``randomized`` (see :func:`thin_svd`).
    box : ``"paper"`` (default): quantiles of the coefficients ⟨u_k, ŝ_n − μ⟩ = Σ_kk U_nk, the
        paper's eq. 5; ``"normalized"``: quantiles of the normalised U_nk.
        The box is A_k, B_k = (a_k + b_k)/2 ∓ λ Σ_kk (b_k − a_k)/2 in both.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> p = rng.uniform(0.2, 0.8, (10, 1, 4, 4)); s = np.concatenate([p, 1 - p], axis=1)
    >>> d = decompose(s, K=2)
    >>> d.directions.shape, bool(np.allclose(np.linalg.norm(d.directions.reshape(2, -1), axis=1), 1))
    ((2, 2, 16), True)
    >>> n = decompose(s, K=2, box="normalized")
    >>> bool(np.allclose(d.lower, n.lower * d.singular_values))   # a_k(paper) = Σ_kk a_k(normalized)
    True
    """
    s = check_samples(samples, "samples")
    if int(K) != K or K < 1:
        raise SegcpError(f"K must be a positive integer, got {K!r}")
    if not 0.0 <= float(box_alpha) < 1.0:
        raise SegcpError(f"box_alpha must be in [0, 1), got {box_alpha!r}")
    if box not in BOX_CONVENTIONS:
        raise SegcpError(f"unknown box convention {box!r}; choose one of {', '.join(BOX_CONVENTIONS)}")
    n, n_labels = s.shape[:2]
    shape = tuple(int(v) for v in s.shape[2:])
    flat = s.reshape(n, -1).astype(np.float64, copy=False)  # mean and SVD in float64, whatever the stored precision
    mu = flat.mean(axis=0)
    u, sig, vt = thin_svd(flat - mu, int(K), svd)
    coef = u * sig[None, :] if box == "paper" else u  # ⟨u_k, ŝ_n − μ⟩ = Σ_kk U_nk, or U_nk
    q = float(box_alpha) / 2.0
    lower = np.quantile(coef, q, axis=0)
    upper = np.quantile(coef, 1.0 - q, axis=0)
    return Decomposition(
        mean=mu.reshape(n_labels, -1),
        directions=vt.reshape(int(K), n_labels, -1),
        singular_values=sig,
        coefficients=coef,
        lower=lower,
        upper=upper,
        shape=shape,
        box_convention=box,
    )


class _Geometry:
    """Pixels sorted by the λ at which their argmax can first change within the box.

    With c = centre + λ s ⊙ t, z(t) = base + λ Σ_k t_k G_k, base = μ + Σ centre_k u_k,
    G_k = s_k u_k. Pixel p is fixed at l* = argmax base for every t ∈ [−1, 1]^K while
    λ < act_p = min_{l ≠ l*} (base_{l*} − base_l − margin) / Σ_k |G_k[l*] − G_k[l]|.
    """

    def __init__(self, dec: Decomposition) -> None:
        L, P, K = dec.n_labels, dec.mean.shape[1], dec.K
        self.L, self.P, self.K = L, P, K
        base, G, lstar, act, slope = _activation(dec, _MARGIN)
        order = np.argsort(act, kind="stable")
        self.order = order
        self.act = act[order]  # (P,) ascending
        self.base = np.ascontiguousarray(base[:, order])  # (L, P) sorted
        self.G = np.ascontiguousarray(G[:, :, order])  # (K, L, P) sorted
        self.lstar = lstar[order]
        self.lstar_image = lstar  # original pixel order
        # typical label swing per unit λ of an active pixel (for the surrogate's temperature)
        s2 = np.sort(slope + np.where(np.arange(L)[:, None] == lstar[None, :], np.inf, 0.0), axis=0)[0]
        self.swing = s2[order]

    def n_active(self, lam: float) -> int:
        return int(np.searchsorted(self.act, lam, side="right"))

    def labels(self, lam: float, t: NDArray[np.float64]) -> tuple[NDArray[np.int64], int]:
        """argmax labels of the active prefix at λ for t (M, K): ((M, n), n)."""
        n = self.n_active(lam)
        if n == 0:
            return np.zeros((t.shape[0], 0), np.int64), 0
        z = self.base[:, :n].reshape(1, -1) + lam * (t @ self.G[:, :, :n].reshape(self.K, -1))
        return np.argmax(z.reshape(t.shape[0], self.L, n), axis=1), n

    def full_labels(self, lam: float, t: NDArray[np.float64]) -> NDArray[np.int64]:
        """Whole-image segmentations (M, P) in the original pixel order."""
        act, n = self.labels(lam, t)
        out = np.empty((t.shape[0], self.P), np.int64)
        out[:] = self.lstar_image
        out[:, self.order[:n]] = act
        return out


def _activation(dec: Decomposition, margin: float) -> tuple[NDArray, NDArray, NDArray, NDArray, NDArray]:
    """(base, G, l*, act, slope): base = μ + Σ centre_k u_k (L, P), G_k = s_k u_k (K, L, P),
    l* = argmax base (P,), and act (P,) the λ below which l* beats every other label by more
    than ``margin`` everywhere in B_λ (0 when it does not at the centre), with slope (L, P) =
    Σ_k |G_k[l*] − G_k[l]|."""
    P = dec.mean.shape[1]
    base = dec.mean + np.tensordot(dec.centre, dec.directions, axes=1)  # (L, P)
    G = dec.unit_half_width[:, None, None] * dec.directions  # (K, L, P)
    lstar = np.argmax(base, axis=0)
    idx = np.arange(P)
    gap = base[lstar, idx][None, :] - base  # (L, P), ≥ 0
    slope = np.abs(G[:, lstar, idx][:, None, :] - G).sum(axis=0)  # (L, P)
    with np.errstate(divide="ignore", invalid="ignore"):
        act = np.where(slope > 0, (gap - margin) / slope, np.where(gap > margin, np.inf, -np.inf))
    act[lstar, idx] = np.inf
    return base, G, lstar, np.maximum(act.min(axis=0), 0.0), slope


def fixed_until(dec: Decomposition, margin: float) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
    """Per pixel (P,): the λ below which its centre label l* beats every other label by more
    than ``margin`` (in score units) for every c ∈ B_λ, and that label l*. The search's fixed
    pixels are those with ``margin`` = 10⁻⁹ (:class:`_Geometry`)."""
    _, _, lstar, act, _ = _activation(dec, margin)
    return act, lstar


# ---------------------------------------------------------------------------- search
def latin_hypercube(n: int, d: int, seed: int = 0) -> NDArray[np.float64]:
    """n points in [−1, 1]^d, one in each of n equal strata per axis (random order, jittered)."""
    rng = np.random.default_rng(seed)
    if n <= 0 or d <= 0:
        return np.zeros((max(n, 0), d))
    strata = np.argsort(rng.random((d, n)), axis=1).T  # (n, d): a permutation per axis
    return 2.0 * (strata + rng.random((n, d))) / n - 1.0


@dataclass(frozen=True)
class SearchOptions:
    """Settings of the membership search and of the λ bisection (all have tested defaults).

    Scale-dependent settings are relative to the samples' own spread, so that they mean the
    same in both box conventions (:attr:`Decomposition.spread_lambda`, :attr:`Decomposition.lambda_unit`).

    strategy : the local search from the screened points. ``"lines"`` (default):
        coordinate descent with an exact line search per direction (the agreement along a
        line is piecewise constant with breakpoints computed exactly, so the best segment of
        the whole line is found, not a gradient step on a plateau), then for K = 2 the
        exhaustive search over the cells of the arrangement within ``exhaustive`` work; a
        certificate at λ certifies every λ' ≥ λ ‖t‖∞, which the λ search uses.
        ``"adam"``: projected Adam on a soft agreement (gradient steps on a smooth surrogate).
    n_screen : Latin-hypercube points screened per membership test (exact agreement).
    n_starts : local searches per test from the warm starts and the best screened points
        (``lines``: and as many from the best corners of the box); ``None`` (default): 8 for
        ``lines``, 4 for ``adam``.
    max_sweeps : ``lines``: passes over the directions per start (each: the K axes and
        ``n_directions`` seeded random directions); a start stops earlier at a pass that
        improves nothing.
    n_directions : ``lines``: random directions per pass besides the K axes.
    exhaustive : ``lines``, K = 2: the largest arrangement search run, in pixel × line
        evaluations (0: never); beyond it the test rests on the descent alone.
    max_iter, patience : ``adam``: projected Adam on t ∈ [−1, 1]^K (c = centre + λ s ⊙ t).
    lr : ``adam``: the step in t, capped per component at ``lr`` × the samples' spread in c
        (``lr`` · min(1, spread_lambda_k / λ)).
    temperature : ``adam``: τ₀ of the soft agreement, relative to the median swing of the
        active pixels; annealed geometrically to τ₀/10 over ``max_iter``.
    rtol, atol : bisection stops when hi − lo ≤ rtol·hi + atol; ``atol=None`` (default):
        10⁻⁵ × :attr:`Decomposition.lambda_unit` (10⁻⁵ for the normalised box).
    lambda_max : a truth not certified at this λ gets λ* = ∞ (loss 1 at every λ);
        ``None`` (default): :attr:`Decomposition.default_lambda_max` (every component's box
        64 × the samples' spread; 64 for the normalised box).
    seed : of the Latin-hypercube points (fixed: the score must be a deterministic function).
    """

    strategy: str = "lines"
    n_screen: int = 64
    n_starts: int | None = None
    max_sweeps: int = 20
    n_directions: int = 2
    exhaustive: int = 20_000_000
    max_iter: int = 120
    patience: int = 20
    lr: float = 0.1
    temperature: float = 0.3
    rtol: float = 1e-3
    atol: float | None = None
    lambda_max: float | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.strategy not in SEARCH_STRATEGIES:
            raise SegcpError(f"search option strategy must be one of {', '.join(SEARCH_STRATEGIES)}, got {self.strategy!r}")
        for name in ("n_screen", "n_starts", "max_sweeps", "n_directions", "exhaustive", "max_iter", "patience"):
            v = getattr(self, name)
            if v is None and name == "n_starts":
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or int(v) != v or v < (0 if name in _MAY_BE_ZERO else 1):
                raise SegcpError(f"search option {name} must be a {'non-negative' if name in _MAY_BE_ZERO else 'positive'} integer, got {v!r}")
        for name in ("lr", "temperature", "rtol", "lambda_max"):
            v = getattr(self, name)
            if v is None and name == "lambda_max":
                continue
            if not (isinstance(v, (int, float)) and v > 0):
                raise SegcpError(f"search option {name} must be positive, got {v!r}")
        if self.atol is not None and not (isinstance(self.atol, (int, float)) and self.atol >= 0):
            raise SegcpError(f"search option atol must be non-negative, got {self.atol!r}")

    @property
    def starts(self) -> int:
        """``n_starts``, resolved: 8 for ``lines``, 4 for ``adam`` when unset."""
        return int(self.n_starts) if self.n_starts is not None else (8 if self.strategy == "lines" else 4)

    def resolved(self, dec: Decomposition) -> tuple[float, float]:
        """(lambda_max, atol) for one decomposition (the defaults are relative to its scale)."""
        lam_max = dec.default_lambda_max if self.lambda_max is None else float(self.lambda_max)
        atol = _ATOL_UNITS * dec.lambda_unit if self.atol is None else float(self.atol)
        return lam_max, atol

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> SearchOptions:
        d = dict(d or {})
        unknown = sorted(set(d) - set(cls.__dataclass_fields__))
        if unknown:
            raise SegcpError(f"unknown search option {unknown[0]!r}; known: {', '.join(cls.__dataclass_fields__)}")
        return cls(**d)


@dataclass
class ScoreResult:
    """The score of one image and how it was found.

    lambda_ : λ*, the smallest λ certified (inf: never within ``lambda_max``).
    lower_bound : λ_LB, the exact lower bound (λ* = λ_LB when certified there).
    certificate : c ∈ B_λ* whose argmax agrees with the truth (None when λ* = inf).
    agreement : the certificate's agreement with the truth (> β).
    tests : membership tests run; steps : Adam iterations (``adam``) or line searches
        (``lines``); evaluations : pixel-label values computed (a machine-independent
        measure of work); exhaustive : tests that ran the K = 2 arrangement search to the end.
    proven : a proven lower bound of the smallest λ whose set contains the truth: λ_LB, or
        the largest λ at which the arrangement search ran to the end without a member (no
        member up to cells of the arrangement thinner than 10⁻⁷ of the box). λ* = ∞ with
        ``proven`` = ``lambda_max``: the truth is in no set up to ``lambda_max``.
    """

    lambda_: float
    lower_bound: float
    certificate: NDArray[np.float64] | None
    agreement: float
    tests: int = 0
    steps: int = 0
    evaluations: int = 0
    exhaustive: int = 0
    proven: float = 0.0
    history: list[tuple[float, bool]] = field(default_factory=list)


class _Search:
    """Membership tests of one truth against one decomposition."""

    def __init__(self, dec: Decomposition, truth: NDArray[np.int64], beta: float, opt: SearchOptions) -> None:
        g = dec.geometry
        self.dec, self.g, self.beta, self.opt = dec, g, beta, opt
        y = truth.ravel()[g.order]
        w = truth_weights(truth).ravel()[g.order]
        self.y, self.w = y, w
        index, self.sizes = truth_labels(truth)
        self.lab = index.ravel()[g.order]  # label index (among the labels present) per sorted pixel
        self.wtab = np.zeros(self.sizes.size)
        self.wtab[self.lab] = w  # the weight of a pixel of each of those labels
        self.band = float_band(g.P)
        idx = np.arange(g.P)
        # contribution of the fixed suffix: Σ_{p ≥ n} ω_p 1{l*_p = y_p}
        self.good = g.lstar == y
        good = w * self.good
        self.fixed_suffix = np.concatenate([np.cumsum(good[::-1])[::-1], [0.0]])
        # exact upper bound: y_p reachable only from r_p on
        by = g.base[y, idx]
        Gy = g.G[:, y, idx]  # (K, P)
        slope = np.abs(Gy[:, None, :] - g.G).sum(axis=0)  # (L, P)
        diff = g.base - by[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            r = np.where(slope > 0, diff / slope, np.where(diff > 0, np.inf, -np.inf))
        r[y, idx] = -np.inf
        r = np.maximum(r.max(axis=0), 0.0)
        r[g.lstar == y] = 0.0
        self.r = r
        # ... and surely right (by more than the margin everywhere in B_λ) while λ < sure_p
        with np.errstate(divide="ignore", invalid="ignore"):
            sure = np.where(slope > 0, (-diff - _MARGIN) / slope, np.where(-diff > _MARGIN, np.inf, -np.inf))
        sure[y, idx] = np.inf
        self.sure = sure.min(axis=0)
        order = np.argsort(r, kind="stable")
        cum = np.cumsum(w[order])
        # a valid lower bound: the float sum may be low by its rounding error (float_band)
        j = np.flatnonzero(cum > beta - max(1e-12, self.band))
        self.lower_bound = float(r[order[j[0]]]) if j.size else math.inf
        self.onehot = (np.arange(g.L)[:, None] == y[None, :]).astype(np.float64)
        self.steps = 0
        self.evaluations = 0
        self.tests = 0
        self.exhaustive = 0
        self.settled = False
        self.absent_to = 0.0  # the largest λ at which the arrangement search ran to the end without a member
        self.screen = latin_hypercube(opt.n_screen, dec.K, opt.seed)
        k_c = min(dec.K, _CORNER_DIMS)  # corners of the leading components (the others at 0)
        self.corners = np.zeros((2**k_c, dec.K))
        self.corners[:, :k_c] = 1.0 - 2.0 * ((np.arange(2**k_c)[:, None] >> np.arange(k_c)) & 1)
        self.spread = dec.spread_lambda
        self.lambda_max, self.atol = opt.resolved(dec)

    # ---------------------------------------------------------------- exact and soft
    def _z(self, lam: float, t: NDArray[np.float64], n: int) -> NDArray[np.float64]:
        g = self.g
        z = g.base[:, :n].reshape(1, -1) + lam * (t @ g.G[:, :, :n].reshape(g.K, -1))
        self.evaluations += z.size
        return z.reshape(t.shape[0], g.L, n)

    def exact(self, lam: float, t: NDArray[np.float64]) -> NDArray[np.float64]:
        """Exact agreement of the segmentations at t (M, K) with the truth: (M,)."""
        n = self.g.n_active(lam)
        if n == 0:
            return np.full(t.shape[0], self.fixed_suffix[0])
        per = max(1, _CHUNK // (self.g.L * n))
        out = np.empty(t.shape[0])
        for i in range(0, t.shape[0], per):
            out[i : i + per] = self._agree(self._z(lam, t[i : i + per], n), n)
        return out

    def _agree(self, z: NDArray[np.float64], n: int) -> NDArray[np.float64]:
        """Certified agreement of the active scores z (M, L, n): a pixel counts only when its
        true label beats every other by more than the margin, so the count holds whatever the
        rounding of the arithmetic that computes z (e.g. the whole-image check)."""
        onehot = self.onehot[:, :n].astype(bool)
        zy = np.where(onehot[None], z, -np.inf).max(axis=1)
        zo = np.where(onehot[None], -np.inf, z).max(axis=1)
        return self.fixed_suffix[n] + (zy - zo > _MARGIN).astype(np.float64) @ self.w[:n]

    def _counts(self, lam: float, t: NDArray[np.float64]) -> NDArray[np.int64]:
        """Per-label certified correct-pixel counts at t (M, K): (M, m) (margin as in _agree)."""
        n = self.g.n_active(lam)
        suffix = np.bincount(self.lab[n:][self.good[n:]], minlength=self.sizes.size)
        if n == 0:
            return np.tile(suffix, (t.shape[0], 1))
        z = self._z(lam, t, n)
        onehot = self.onehot[:, :n].astype(bool)
        zy = np.where(onehot[None], z, -np.inf).max(axis=1)
        zo = np.where(onehot[None], -np.inf, z).max(axis=1)
        hits = zy - zo > _MARGIN
        return np.stack([np.bincount(self.lab[:n][h], minlength=self.sizes.size) for h in hits]) + suffix

    def certified(self, lam: float, t: NDArray[np.float64], agree: NDArray[np.float64]) -> NDArray[np.bool_]:
        """Which rows of t (M, K), with float agreements ``agree`` (M,), agree up to β — the
        exact rule of :func:`~segcp.segsets.agreement.exceeds_beta` (counts recomputed only
        for the rows within the float band of β)."""
        return exceeds_beta(agree, self.beta, lambda rows: self._counts(lam, t[rows]), self.sizes, self.g.P)

    def _soft(self, lam: float, t: NDArray[np.float64], n: int, tau: float):
        """Soft agreement (M,), its gradient wrt t (M, K), and the exact agreement (M,)."""
        g = self.g
        z = self._z(lam, t, n)  # (M, L, n)
        exact = self._agree(z, n)
        zs = z / tau
        zs -= zs.max(axis=1, keepdims=True)
        e = np.exp(zs)
        pi = e / e.sum(axis=1, keepdims=True)
        onehot = self.onehot[:, :n]
        py = (pi * onehot).sum(axis=1)  # σ_y = softmax(z/τ)[y], (M, n)
        wp = self.w[:n] * py
        soft = self.fixed_suffix[n] + py @ self.w[:n]
        gz = (onehot[None] - pi) * wp[:, None, :]  # ∂(ω σ_y)/∂(z/τ) = ω σ_y (δ_ly − π_l)
        grad = (lam / tau) * (gz.reshape(t.shape[0], -1) @ g.G[:, :, :n].reshape(g.K, -1).T)
        return soft, grad, exact

    # ---------------------------------------------------------------- one membership test
    def test(self, lam: float, warm: list[NDArray[np.float64]]) -> tuple[bool, NDArray[np.float64], float]:
        """Search t ∈ [−1, 1]^K at λ; returns (certified, best t, its exact agreement)."""
        opt, beta = self.opt, self.beta
        self.tests += 1
        self.settled = False  # set when a failed test is a proof (the arrangement search ran to the end)
        K = self.dec.K
        if 0.0 < lam <= self.absent_to:  # no member at a larger λ: none at λ (nested boxes)
            self.settled = True
            return False, np.zeros(K), -math.inf
        n = self.g.n_active(lam)
        # screen the whole box and, where a component's box is wider than the samples' own
        # spread, also the same points inside that spread, where the good region of a large
        # box usually lies (the box of λ = 1 for the normalised convention)
        shrink = np.maximum(1.0, lam / self.spread)  # (K,), 1 where the box is within the spread
        screens = [self.screen] + ([self.screen / shrink] if np.any(shrink > 1.0) else [])
        if opt.strategy == "lines":
            # the corners of the box: at λ near λ* the members left sit on its boundary
            screens.append(self.corners)
        cand = [np.zeros((1, K))] + [np.clip(np.atleast_2d(w_), -1, 1) for w_ in warm] + screens
        pts = np.vstack(cand)
        if n == 0 or K == 0 or lam == 0.0:
            a = self.exact(lam, pts[:1])
            return bool(self.certified(lam, pts[:1], a)[0]), pts[0], float(a[0])
        ex = self.exact(lam, pts)
        best = int(np.argmax(ex))
        if ex[best] > beta - self.band:
            ok = self.certified(lam, pts, ex)
            if ok.any():
                best = best if ok[best] else int(np.flatnonzero(ok)[np.argmax(ex[ok])])
                return True, pts[best], float(ex[best])
        best_t, best_a = pts[best].copy(), float(ex[best])
        # local-search starts: warm starts first, then the best screened points
        n_warm = 1 + len(warm)
        ranked = n_warm + np.argsort(-ex[n_warm:], kind="stable")
        starts = list(range(1, n_warm)) + [int(i) for i in ranked]
        starts = starts[: opt.starts] if len(starts) >= opt.starts else starts + [0]
        if opt.strategy == "lines":  # and as many from the best corners
            nc = self.corners.shape[0]
            by_corner = pts.shape[0] - nc + np.argsort(-ex[-nc:], kind="stable")
            starts += [int(i) for i in by_corner[: opt.starts] if int(i) not in starts]
        if opt.strategy == "adam":
            return self._adam(lam, n, pts[starts].copy(), best_t, best_a)
        return self._lines(lam, pts[starts].copy(), ex[starts].copy(), best_t, best_a)

    def _adam(
        self, lam: float, n: int, t: NDArray[np.float64], best_t: NDArray[np.float64], best_a: float
    ) -> tuple[bool, NDArray[np.float64], float]:
        """``strategy="adam"``: projected Adam on the soft agreement from the starts t (S, K)."""
        opt, beta = self.opt, self.beta
        swing = float(np.median(self.g.swing[:n])) * lam
        tau0 = max(opt.temperature * swing, 1e-6)
        m = np.zeros_like(t)
        v = np.zeros_like(t)
        b1, b2 = 0.9, 0.999
        # steps of at most lr × the samples' spread in c, per component
        lr = opt.lr * np.minimum(1.0, self.spread / lam)
        stall = 0
        for it in range(1, opt.max_iter + 1):
            tau = tau0 * 10.0 ** (-(it - 1) / max(opt.max_iter - 1, 1))
            _, grad, exact = self._soft(lam, t, n, tau)
            self.steps += 1
            j = int(np.argmax(exact))
            near = exact[j] > beta - self.band
            if exact[j] > best_a + 1e-12:
                best_a, best_t, stall = float(exact[j]), t[j].copy(), 0
            else:
                stall += 1
            if near and self.certified(lam, t[j : j + 1], exact[j : j + 1])[0]:
                return True, t[j].copy(), float(exact[j])
            if stall >= opt.patience:  # the exact agreement stopped improving
                break
            m = b1 * m + (1 - b1) * grad
            v = b2 * v + (1 - b2) * grad * grad
            step = lr * (m / (1 - b1**it)) / (np.sqrt(v / (1 - b2**it)) + 1e-12)
            t = np.clip(t + step, -1.0, 1.0)  # ascent on the soft agreement, projected
        return False, best_t, best_a

    # ---------------------------------------------------------------- exact line searches
    def _line_data(self, lam: float, counts: bool = False) -> _Lines | None:
        """The pixels whose correctness can change within B_λ (active, truth reachable, not
        surely right) as linear constraints in t, or None when there are none; with ``counts``,
        also the per-label counts of the other pixels that are right (:meth:`absent`'s exact test)."""
        g = self.g
        n = g.n_active(lam)
        rel = np.flatnonzero((self.r[:n] <= lam) & (self.sure[:n] <= lam))
        if rel.size == 0:
            return None
        sure = self.sure[:n] > lam
        const = float(self.fixed_suffix[n] + self.w[:n][sure].sum())
        m = self.sizes.size
        right = np.bincount(self.lab[n:][self.good[n:]], minlength=m) + np.bincount(self.lab[:n][sure], minlength=m) if counts else None
        y = self.y[rel]
        ar = np.arange(rel.size)
        other = (y[None, :] + 1 + np.arange(g.L - 1)[:, None]) % g.L  # (L − 1, m): the labels l ≠ y_p
        base = g.base[:, rel]
        a0 = base[y, ar][None, :] - base[other, ar]  # (L − 1, m): z_y − z_l at the box centre
        G = g.G[:, :, rel]
        gb = lam * (G[:, y, ar][:, None, :] - G[:, other, ar])  # (K, L − 1, m): its change per unit of t_k
        return _Lines(
            np.ascontiguousarray(a0), np.ascontiguousarray(gb.transpose(1, 0, 2)), self.w[rel], const, self.lab[rel].astype(np.int64), right
        )

    def _line_best(
        self,
        data: _Lines,
        p0: NDArray[np.float64],
        d: NDArray[np.float64],
        xlo: NDArray[np.float64],
        xhi: NDArray[np.float64],
        floor: float = -np.inf,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Exact line search: on each line p0 + x d (B, K each), x ∈ [xlo, xhi], the x of the best
        agreement and that agreement (B,) (float sums; −inf where no segment of the line is
        worth more than ``floor``). Along a line pixel p is right on an open interval of x (its
        true label beats each other label by more than the margin: one linear inequality per
        label), so the agreement is piecewise constant: the intervals' ends are sorted and the
        best open segment between two consecutive ends is found by a running sum; its midpoint
        is returned (ties: the widest segment)."""
        J, _, m = data.gb.shape
        B = p0.shape[0]
        x_out = np.zeros(B)
        v_out = np.full(B, -np.inf)
        per = max(1, _CHUNK // (J * m))
        for i in range(0, B, per):
            sl = slice(i, i + per)
            lo_ = np.broadcast_to(xlo[sl, None], (p0[sl].shape[0], m))
            hi_ = np.broadcast_to(xhi[sl, None], lo_.shape)
            lower, upper = lo_.copy(), hi_.copy()
            dead = np.zeros(lo_.shape, bool)
            for j in range(J):  # pixel p right where a + x b > margin, i.e. x b > r, for each other label
                r = p0[sl] @ data.gb[j]
                r += data.a0[j]
                np.subtract(_MARGIN, r, out=r)
                b = d[sl] @ data.gb[j]
                with np.errstate(divide="ignore", invalid="ignore"):
                    thr = r / b
                np.maximum(lower, np.where(b > 0, thr, -np.inf), out=lower)
                np.minimum(upper, np.where(b < 0, thr, np.inf), out=upper)
                dead |= (b == 0) & (r >= 0)
            np.minimum(lower, hi_, out=lower)  # empty intervals too stay within [xlo, xhi]
            np.maximum(upper, lo_, out=upper)
            self.evaluations += J * lower.size
            self.steps += lower.shape[0]
            ok = (lower < upper) & ~dead
            keep = np.flatnonzero((data.const + ok @ data.w > floor) & (xlo[sl] < xhi[sl]))
            if keep.size == 0:
                continue
            # sort the ends with their kind in the lowest mantissa bits (a shift of a few ulps,
            # 4× faster than an argsort and two gathers): 0 none, 1 + c a start of a pixel of
            # label class c, 1 + C + c an end
            C = self.wtab.size
            nbits = int(2 * C).bit_length()
            mask = np.uint64((1 << nbits) - 1)
            kind = np.concatenate(
                [np.where(ok[keep], 1 + data.cls, 0), np.where(ok[keep], 1 + C + data.cls, 0), np.zeros((keep.size, 2), np.int64)], axis=1
            ).astype(np.uint64)
            pos = np.concatenate([lower[keep], upper[keep], lo_[keep, :1], hi_[keep, :1]], axis=1)
            pos = ((pos.view(np.uint64) & ~mask) | kind).view(np.float64)
            pos.sort(axis=1)
            table = np.concatenate([[0.0], self.wtab, -self.wtab])
            cs = np.cumsum(table[(pos.view(np.uint64) & mask).astype(np.intp)], axis=1)[:, :-1]
            ps = pos
            width = ps[:, 1:] - ps[:, :-1]  # the open segment after each end: its agreement is cs
            score = np.where(width > 0, cs, -np.inf)
            top = score.max(axis=1)
            j = np.argmax(np.where(score >= top[:, None] - 1e-12, width, -1.0), axis=1)
            r = np.arange(keep.size)
            x_out[i + keep] = 0.5 * (ps[r, j] + ps[r, j + 1])
            v_out[i + keep] = data.const + top
        return x_out, v_out

    def _lines(
        self, lam: float, T: NDArray[np.float64], cur: NDArray[np.float64], best_t: NDArray[np.float64], best_a: float
    ) -> tuple[bool, NDArray[np.float64], float]:
        """``strategy="lines"``: for K = 2 the arrangement search first (it certifies a member,
        or shows there is none, unless it would exceed its work budget); then from each start
        (T (S, K), exact agreements ``cur``) exact line searches along the K axes and seeded
        random directions, moving to the best point of the line when it is better; after each
        pass the starts that did not improve stop and the worse half of the others too.
        Every candidate is certified by the exact rule."""
        opt, beta, K = self.opt, self.beta, self.dec.K
        data = self._line_data(lam)
        if data is None:  # no pixel can change: every point of the box has the centre's agreement
            return False, best_t, best_a
        if K == 2 and opt.exhaustive:
            done = self.exhaustive
            found = self._arrangement(lam, data, self.absent_to / lam)
            if found is not None:
                return True, found[0], found[1]
            if self.exhaustive > done:  # ran to the end: no member (up to cells thinner than δ)
                self.settled = True
                self.absent_to = max(self.absent_to, lam)
                return False, best_t, best_a
        rng = np.random.default_rng((opt.seed, self.tests))
        live = np.ones(T.shape[0], bool)
        for _ in range(opt.max_sweeps):
            improved = np.zeros_like(live)
            rows = np.flatnonzero(live)
            dirs = [np.broadcast_to(e, (rows.size, K)) for e in np.eye(K)]
            for _ in range(opt.n_directions):
                r_ = rng.standard_normal((rows.size, K))
                dirs.append(r_ / np.linalg.norm(r_, axis=1, keepdims=True))
            for D in dirs:
                xlo, xhi = _line_range(T[rows], D)
                x, v = self._line_best(data, T[rows], D, np.minimum(xlo, 0.0), np.maximum(xhi, 0.0))
                up = v > cur[rows] + 1e-12
                if not up.any():
                    continue
                r = rows[up]
                T[r] = np.clip(T[r] + x[up, None] * D[up], -1.0, 1.0)
                cur[r] = v[up]
                improved[r] = True
                hit = r[cur[r] > beta - self.band]
                if hit.size:
                    a = self.exact(lam, T[hit])
                    ok = self.certified(lam, T[hit], a)
                    if ok.any():
                        j = int(np.flatnonzero(ok)[np.argmax(a[ok])])
                        return True, T[hit[j]].copy(), float(a[j])
            live &= improved
            if live.sum() > 2:  # keep the better half of the starts that still move
                rows = np.flatnonzero(live)
                live[rows[np.argsort(-cur[rows], kind="stable")[(rows.size + 1) // 2 :]]] = False
            if not live.any():
                break
        a = self.exact(lam, T)
        j = int(np.argmax(a))
        if a[j] > best_a:
            best_t, best_a = T[j].copy(), float(a[j])
        return False, best_t, best_a

    def _arrangement(self, lam: float, data: _Lines, inner: float = 0.0) -> tuple[NDArray[np.float64], float] | None:
        """K = 2: every cell of the arrangement of the pixels' constraint lines within the box.

        Branch and bound over squares of t-space (best first): in a square, a pixel is surely
        right when each of its constraints holds at the square's worst corner, and possibly
        right when each holds at some corner; squares whose possible agreement is not above β
        are dropped, the surely right pixels are counted once, and a square is split in four
        until its lines are few. In a remaining square every cell of the arrangement of the
        undecided pixels' lines has an edge on one of them or on the square's border; crossing
        a line into the side where its constraint holds changes only that constraint (lines in
        general position), so the cell on that side is at least as good. So the best cell of
        the square is found by walking every line at δ (``_DELTA``) on the side where its
        constraint holds, and the border just inside, with the exact line search (every cell
        wider than δ is visited). Returns a certified (t, agreement), or None: none found
        (``exhaustive`` counts the tests where the search ran to the end) or the work exceeded
        the ``exhaustive`` budget (pixel × constraint values computed).

        ``inner``: a square [−inner, inner]² of t-space known to hold no member — at λ it is the
        box B_{λ·inner}, where an earlier test at that λ ran this search to the end (nested boxes)
        — whose squares are dropped: at a λ far above the last proof the constraint lines all pass
        close to t = 0, and without it the squares there hold every line at the finest split."""
        floor = self.beta - self.band
        J, m = data.a0.shape
        budget, work = self.opt.exhaustive, 0
        heap = [(-np.inf, 0, np.array([-1.0, -1.0]), np.array([1.0, 1.0]), np.arange(m), data.const)]
        count = 1
        while heap:
            _, _, lo, hi, idx, const = heapq.heappop(heap)
            if max(-lo.min(), hi.max()) <= inner:  # inside the part already shown empty
                continue
            work += J * idx.size
            self.evaluations += 2 * J * idx.size
            if work > budget:
                return None
            const, open_, _, top, low = _box_bound(data, idx, lo, hi, const)
            if const + float(data.w[idx[open_]].sum()) <= floor:
                continue
            idx = idx[open_]
            a0, gb, w = data.a0[:, idx], data.gb[:, :, idx], data.w[idx]
            cls = data.cls[idx]
            crossing = (low[:, open_] <= _MARGIN) & (top[:, open_] > _MARGIN)  # (J, m_c): the line meets the square
            n_lines = int(crossing.sum())
            if n_lines * J * idx.size > _LEAF_WORK and (hi - lo).min() > 2.0**-_MAX_DEPTH:
                mid = 0.5 * (lo + hi)
                for cl, ch in (
                    ((lo[0], lo[1]), (mid[0], mid[1])),
                    ((mid[0], lo[1]), (hi[0], mid[1])),
                    ((lo[0], mid[1]), (mid[0], hi[1])),
                    ((mid[0], mid[1]), (hi[0], hi[1])),
                ):
                    count += 1
                    heapq.heappush(heap, (-(const + float(w.sum())), count, np.array(cl), np.array(ch), idx, const))
                continue
            work += (n_lines + 4) * J * idx.size
            if work > budget:
                return None
            found = self._square(lam, _Lines(a0, gb, w, const, cls), lo, hi, crossing, floor)
            if found is not None:
                self.exhaustive += 1
                return found
        self.exhaustive += 1
        return None

    def _square(
        self, lam: float, data: _Lines, lo: NDArray[np.float64], hi: NDArray[np.float64], crossing: NDArray[np.bool_], floor: float
    ) -> tuple[NDArray[np.float64], float] | None:
        """The arrangement search in one square [lo, hi] of t-space (see :meth:`_arrangement`)."""
        J, m = data.a0.shape
        li, pi = np.nonzero(crossing)
        nrm = data.gb[li, :, pi]  # (N, 2): the line nrm · t = margin − a0, its constraint holds on the side of nrm
        norm = np.linalg.norm(nrm, axis=1)
        u = nrm / norm[:, None]
        foot = u * ((_MARGIN - data.a0[li, pi]) / norm)[:, None]
        along = np.stack([-u[:, 1], u[:, 0]], axis=1)
        e_lo, e_hi = lo + _DELTA, hi - _DELTA
        mid = 0.5 * (lo + hi)
        p0 = np.vstack([foot + _DELTA * u, [[e_hi[0], mid[1]], [e_lo[0], mid[1]], [mid[0], e_hi[1]], [mid[0], e_lo[1]]]])
        d = np.vstack([along, [[0.0, 1.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]]])
        xlo, xhi = _line_range(p0, d, lo, hi)
        if m == 0:  # nothing left to decide: every point of the square is worth data.const
            p0, d, xlo, xhi = p0[-4:], d[-4:], xlo[-4:], xhi[-4:]
        per = max(1, _CHUNK // max(1, J * m))
        for i in range(0, p0.shape[0], per):
            sl = slice(i, i + per)
            x, v = self._line_best(data, p0[sl], d[sl], xlo[sl], xhi[sl], floor=floor)
            near = np.flatnonzero(v > floor)
            if near.size:
                t = np.clip(p0[sl][near] + x[near, None] * d[sl][near], lo, hi)
                a = self.exact(lam, t)
                ok = self.certified(lam, t, a)
                if ok.any():
                    j = int(np.flatnonzero(ok)[np.argmax(a[ok])])
                    return t[j].copy(), float(a[j])
        return None

    def absent(self, lam: float, inner: float = 0.0, budget: int = 10**10) -> bool | None:
        """Any K: whether B_λ holds no member, by branch and bound over boxes of t-space — True: none
        (up to the margin: a pixel counts as right only when its true label wins by more than
        10⁻⁹, as for every certificate), None: undecided within ``budget`` (pixel × constraint
        values) or a box narrower than 10⁻⁶ of B_λ still open. In a box a pixel is surely right
        when each of its constraints holds at the box's worst corner and possibly right when
        each holds at its best; a box whose possible agreement is not above β holds no member,
        else it is halved across the side along which the open pixels' constraints change most.
        ``inner``: the box [−inner, inner]^K of t-space is known to hold none (B_{λ·inner}, shown
        before: nested boxes) and is skipped. Slow (minutes on a 55 000-pixel image at K = 5):
        a proof for the benchmarks, not a step of the search."""
        data = self._line_data(lam, counts=True)
        if data is None:  # no pixel can change: the centre's agreement everywhere
            return not bool(self.certified(lam, np.zeros((1, self.dec.K)), self.exact(lam, np.zeros((1, self.dec.K))))[0])
        floor = self.beta - self.band
        J, m = data.a0.shape
        K, n_labels = self.dec.K, self.sizes.size
        assert data.counts is not None  # asked for
        stack = [(-np.ones(K), np.ones(K), np.arange(m), data.const, data.counts)]
        work = 0
        while stack:
            lo, hi, idx, const, counts = stack.pop()
            if max(-lo.min(), hi.max()) <= inner:  # inside the part already shown empty
                continue
            work += J * K * idx.size
            self.evaluations += 2 * J * K * idx.size
            if work > budget:
                return None
            const, open_, sure, _, _ = _box_bound(data, idx, lo, hi, const)
            counts = counts + np.bincount(data.cls[idx[sure]], minlength=n_labels)
            top = const + float(data.w[idx[open_]].sum())
            if top <= floor:
                continue
            if top <= self.beta + self.band:  # within the float band of β: decided on the counts
                most = (counts + np.bincount(data.cls[idx[open_]], minlength=n_labels))[None]
                if not exceeds_beta(np.array([top]), self.beta, most.__getitem__, self.sizes, self.g.P)[0]:  # rows [0]: most
                    continue
            if (hi - lo).max() < 2e-6:
                return None
            idx = idx[open_]
            swing = np.abs(data.gb[:, :, idx]).sum(axis=(0, 2)) * (hi - lo)  # (K,): how far each side moves them
            k = int(np.argmax(swing))
            mid = 0.5 * (lo[k] + hi[k])
            upper, lower = lo.copy(), hi.copy()
            upper[k], lower[k] = mid, mid
            stack += [(lo, lower, idx, const, counts), (upper, hi, idx, const, counts)]
        return True

    # ---------------------------------------------------------------- λ*
    def _tighten(self, lam: float, t: NDArray[np.float64]) -> tuple[float, NDArray[np.float64]]:
        """A point certified at λ lies in every box B_λ' with λ' ≥ λ ‖t‖∞ (nested boxes): the
        smallest such λ' (up to 10⁻¹² relative, so that c is inside it whatever the rounding;
        never below the lower bound) and the same point's t there."""
        moving = self.dec.unit_half_width > 0
        reach = float(np.max(np.abs(t[moving]), initial=0.0))
        lam2 = min(lam, max(lam * reach * (1.0 + 1e-12), self.lower_bound))
        return lam2, (t * (lam / lam2) if lam2 > 0 else t)

    def score(self) -> ScoreResult:
        lam_max, atol = self.lambda_max, self.atol
        lb = self.lower_bound
        tight = self.opt.strategy == "lines"
        res = ScoreResult(math.inf, lb, None, float("nan"), proven=lb)
        if not math.isfinite(lb):
            return self._finish(res)
        ok, t, a = self.test(lb, [])
        res.history.append((lb, ok))
        if ok:
            return self._finish(res, lb, self._c(lb, t), a)
        self._settled(res, lb)
        lo, t_lo = lb, t
        t_lb = t
        if lb >= lam_max:
            return self._finish(res)
        d = 0.25 * self.dec.lambda_unit
        while True:  # bracket upwards from the lower bound: 0.25, 0.5, 1, 2, … units above it
            lam = min(lb + d, lam_max)
            ok, t, a = self.test(lam, [t_lo * lo / lam])
            res.history.append((lam, ok))
            if ok:
                hi, t_hi, a_hi, c_hi = lam, t, a, self._c(lam, t)
                break
            lo, t_lo = lam, t
            self._settled(res, lam)
            if lam >= lam_max:
                return self._finish(res)
            d *= 2.0
        if tight:
            hi, t_hi = self._tighten(hi, t_hi)
            if hi <= lo:  # the test at lo missed this point: search [lb, hi] again
                lo, t_lo = lb, t_lb
        while hi - lo > self.opt.rtol * hi + atol:
            lam = 0.5 * (lo + hi)
            ok, t, a = self.test(lam, [t_hi * hi / lam, t_lo * lo / lam])
            res.history.append((lam, ok))
            if ok:
                hi, t_hi, a_hi, c_hi = lam, t, a, self._c(lam, t)
                if tight:
                    hi, t_hi = self._tighten(hi, t_hi)
                    if hi <= lo:
                        lo, t_lo = lb, t_lb
            else:
                lo, t_lo = lam, t
                self._settled(res, lam)
        return self._finish(res, hi, c_hi, a_hi)

    def _settled(self, res: ScoreResult, lam: float) -> None:
        """After a failed test at λ: a proof of absence raises the proven lower bound."""
        if self.settled:
            res.proven = max(res.proven, lam)

    def _c(self, lam: float, t: NDArray[np.float64]) -> NDArray[np.float64]:
        """The coefficients c = centre + λ s ⊙ t of a point t at λ."""
        return self.dec.centre + lam * self.dec.unit_half_width * np.asarray(t)

    def _finish(self, res: ScoreResult, lam: float | None = None, c=None, a: float = float("nan")) -> ScoreResult:
        res.tests, res.steps, res.evaluations, res.exhaustive = self.tests, self.steps, self.evaluations, self.exhaustive
        if lam is None:
            return res
        res.lambda_, res.certificate, res.agreement = float(lam), c, float(a)
        return res


@dataclass(frozen=True)
class _Lines:
    """The pixels a line search looks at, at one λ: pixel p (of m) is right at t when
    a0[j, p] + Σ_k t_k gb[j, k, p] > margin for each of the L − 1 labels l ≠ y_p (j-th of them);
    w (m,) their weights, cls (m,) the index of their true label among the labels present (the
    weight is a function of it); const the agreement of every other pixel (the same at every t),
    and counts (of the labels present) those of its pixels that are right (None where not needed)."""

    a0: NDArray[np.float64]
    gb: NDArray[np.float64]
    w: NDArray[np.float64]
    const: float
    cls: NDArray[np.int64]
    counts: NDArray[np.int64] | None = None


def _box_bound(
    data: _Lines, idx: NDArray[np.intp], lo: NDArray[np.float64], hi: NDArray[np.float64], const: float
) -> tuple[float, NDArray[np.bool_], NDArray[np.bool_], NDArray[np.float64], NDArray[np.float64]]:
    """The pixels ``idx`` of ``data`` in the box [lo, hi] (K,) of t-space: (``const`` plus the weight of
    those surely right there, which of them are open — possibly but not surely right —, which are
    surely right, and each constraint's best and worst value in the box, (J, len(idx)) each). Surely right: every
    constraint holds at the box's worst corner; possibly: each at its best."""
    gb = data.gb[:, :, idx]
    at_lo, at_hi = gb * lo[None, :, None], gb * hi[None, :, None]
    a0 = data.a0[:, idx]
    top = a0 + np.maximum(at_lo, at_hi).sum(axis=1)
    low = a0 + np.minimum(at_lo, at_hi).sum(axis=1)
    possible = (top > _MARGIN).all(axis=0)
    sure = (low > _MARGIN).all(axis=0)
    return const + float(data.w[idx[sure]].sum()), possible & ~sure, sure, top, low


def _line_range(
    p0: NDArray[np.float64], d: NDArray[np.float64], lo: float | NDArray[np.float64] = -1.0, hi: float | NDArray[np.float64] = 1.0
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """The x with p0 + x d ∈ [lo, hi] (default [−1, 1]^K), per row of p0, d (B, K): (xlo, xhi)
    (xlo > xhi: none)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a = (lo - p0) / d
        b = (hi - p0) / d
    inside = (p0 >= lo) & (p0 <= hi)
    xlo = np.where(d != 0, np.minimum(a, b), np.where(inside, -np.inf, np.inf))
    xhi = np.where(d != 0, np.maximum(a, b), np.where(inside, np.inf, -np.inf))
    return xlo.max(axis=1), xhi.min(axis=1)


class DecomposeOptions(TypedDict, total=False):
    """:func:`decompose`'s keywords (``K``, ``box_alpha``, ``svd``, ``box``; its defaults) for the functions
    that take samples or a :class:`Decomposition`."""

    K: int
    box_alpha: float
    svd: str
    box: str


def _prepare(samples_or_dec: Decomposition | ArrayLike, truth: ArrayLike, decompose_options: DecomposeOptions):
    if isinstance(samples_or_dec, Decomposition):
        dec = samples_or_dec
    else:
        dec = decompose(samples_or_dec, **decompose_options)
    y = check_label_map(truth, "truth", dec.n_labels)
    if y.shape != dec.shape:
        raise SegcpError(f"truth shape {y.shape} does not match the samples' spatial shape {dec.shape}")
    return dec, y


def consign_score(
    samples: Decomposition | ArrayLike,
    truth: ArrayLike,
    beta: float = 0.9,
    *,
    options: SearchOptions | None = None,
    **decompose_options: Unpack[DecomposeOptions],
) -> ScoreResult:
    """λ*: the smallest λ whose set C_λ is certified to contain ``truth`` up to β.

    ``samples`` is (N, L, *S), decomposed by :func:`decompose` with ``decompose_options`` (``K``,
    ``box_alpha``, ``svd``, ``box``), or a :class:`Decomposition` (then those are the ones it was
    made with); ``truth`` a label map (*S). The certificate is
    re-checked on the whole image in float64, with the same exact rule
    (:func:`~segcp.segsets.agreement.agrees`), before returning.
    """
    b = check_beta(beta)
    dec, y = _prepare(samples, truth, decompose_options)
    res = _Search(dec, y, b, options or SearchOptions()).score()
    if res.certificate is not None:
        seg = dec.segment(res.certificate)
        if not agrees(seg, y, b):  # pragma: no cover - the fixed-pixel bookkeeping is exact
            from segcp.segsets.agreement import agreement

            raise AssertionError(f"certificate does not hold on the full image ({agreement(seg, y)!r} <= {b})")
        lo, hi = dec.box(res.lambda_)
        assert np.all(res.certificate >= lo - 1e-12) and np.all(res.certificate <= hi + 1e-12)
    return res


def is_member(
    samples: Decomposition | ArrayLike,
    truth: ArrayLike,
    lam: float,
    beta: float = 0.9,
    *,
    options: SearchOptions | None = None,
    **decompose_options: Unpack[DecomposeOptions],
) -> tuple[bool, NDArray[np.float64] | None]:
    """One membership test at λ: (certified, c) — c ∈ B_λ agreeing with the truth, or None
    (``samples``, ``decompose_options``: as for :func:`consign_score`).

    False means "not found" (exact only when λ is below the exact lower bound).
    """
    b = check_beta(beta)
    dec, y = _prepare(samples, truth, decompose_options)
    s = _Search(dec, y, b, options or SearchOptions())
    if lam < s.lower_bound:
        return False, None
    ok, t, _ = s.test(float(lam), [])
    if not ok:
        return False, None
    return True, dec.centre + float(lam) * dec.unit_half_width * t


def absence_bound(
    samples: Decomposition | ArrayLike,
    truth: ArrayLike,
    beta: float = 0.9,
    *,
    lambda_to: float = 500.0,
    budget: int = 10**10,
    rtol: float = 0.01,
    options: SearchOptions | None = None,
    **decompose_options: Unpack[DecomposeOptions],
) -> float:
    """A proven lower bound of the truth's exact score: no set C_λ with λ ≤ the returned value
    contains it (up to the certificates' margin of 10⁻⁹) — ``lambda_to`` where none up to it
    does, inf when no λ can (the exact lower bound λ_LB is inf). ``samples``, ``decompose_options``:
    as for :func:`consign_score`.

    From λ_LB (no member below it, so none in the closed box B_λ_LB either: the members form an
    open set), each step proves B_λ empty for a λ twice the last proven, skipping the box the
    step before showed empty: for K = 2 by the membership test's arrangement search, for any K
    by the box branch and bound of :meth:`_Search.absent` (``budget`` pixel × constraint values per
    step). A step whose test certifies a member, or that cannot decide within its budget, ends
    the doubling; bisection between the two then narrows the bound to ``rtol`` (relative, plus
    the search's absolute tolerance). Slow
    for K > 2 (minutes per image): a benchmark's proof, e.g. that a truth no search reaches is
    in no box of a grid up to ``lambda_to``.
    """
    b = check_beta(beta)
    dec, y = _prepare(samples, truth, decompose_options)
    s = _Search(dec, y, b, options or SearchOptions())
    proven, failed = s.lower_bound, math.inf
    while proven < lambda_to and failed - proven > rtol * min(failed, lambda_to) + s.atol:
        lam = min(lambda_to, 2.0 * proven) if math.isinf(failed) else 0.5 * (proven + failed)
        if lam <= 0.0:  # λ_LB = 0 and no member at 0: the doubling starts from the search's unit
            lam = min(lambda_to, dec.lambda_unit)
        if s.test(lam, [])[0]:
            failed = lam
        elif s.settled or s.absent(lam, proven / lam, budget):
            proven = lam
        else:
            failed = lam
    return proven


def draw(dec: Decomposition, lam: float, n_draws: int, seed: int | np.random.Generator | None = 0, chunk: int = 4_000_000) -> NDArray[np.int64]:
    """``n_draws`` segmentations from C_λ: c uniform in B_λ, then argmax. Shape (S, *shape).

    Only the pixels that can change within B_λ are computed; the rest are copied, which is
    exactly what the full computation gives (see :class:`_Geometry`).
    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    g = dec.geometry
    n = g.n_active(lam)
    t = rng.uniform(-1.0, 1.0, size=(int(n_draws), dec.K))
    per = max(1, chunk // max(1, g.L * n))
    out = np.empty((int(n_draws), g.P), np.int64)
    for i in range(0, int(n_draws), per):
        out[i : i + per] = g.full_labels(float(lam), t[i : i + per])
    return out.reshape((int(n_draws), *dec.shape))
