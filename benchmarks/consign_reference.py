"""The authors' calibration procedure of CONSIGN, re-implemented for comparisons with segcp.

CONSIGN: Viti, Karabelas & Holler, *Conformal Segmentation Informed by Spatial Groupings via
Decomposition* (arXiv 2505.14113, ICLR 2026). Their code (github.com/onurbbruno/CONSIGN,
``code/SVD_conformal_prediction_UQ.py`` and ``code/config_cp.py``, GPL-3.0) was read for its
*behaviour* only; this module is written from that description, shares no code or structure
with it, and is used by benchmarks and tests only (not part of the segcp package).

The procedure, as the paper and that code describe it:

* the box of the paper (eq. 4–6): a_k, b_k = the α/2 and 1 − α/2 quantiles of the coefficients
  ⟨u_k, ŝ_n − μ⟩ = Σ_kk V_nk, A_k, B_k = (a_k + b_k)/2 ∓ λ Σ_kk (b_k − a_k)/2 — taken here from
  a :class:`segcp.segsets.consign.Decomposition` (``box="paper"``; any convention works);
* a λ grid from 0.01 in steps of 0.01 (up to ``lambda_max`` = 500); at each grid point every
  calibration image not yet certified is tested again, and calibration stops at the first λ
  whose empirical risk R̂ = (uncertified images)/n satisfies the CRC bound
  R̂ ≤ α − (1 − α)/n (loss bound B = 1), which is the conformal quantile of the per-image
  first-certified grid λ;
* one test of an image at λ: 1000 (= 100 × 10) Latin-hypercube points in the box, ranked by
  the loss; from the 10 best, one after the other, Adam (learning rate 1 for the medical
  data sets, 10 000 epochs at most) on the loss, projecting c onto the box by clamping after
  every step, stopping early when the loss is below 1 − β or after 50 epochs without a lower
  loss (patience); after each run the final c is checked with the argmax (the mean per-label
  recall must exceed β) and the image is certified at λ when it passes;
* the loss: 1 − the mean over the labels present in the truth of
  (Σ_p softmax(z_p/τ)[Y_p]·[Y_p = l] + 10⁻⁶)/(n_l + 10⁻⁶), τ = 10⁻⁴, z = μ + Σ_k c_k u_k
  (a nearly hard soft-argmax recall).

What differs from their code, deliberately: the Latin-hypercube points are seeded (per image,
grid point and ``seed``) so that a run is reproducible; the final check uses segcp's exact
rule (:func:`segcp.segsets.agreement.agrees`; their float comparison differs only at exact
ties); torch runs on the CPU in float64 unless ``device`` says otherwise.

torch is imported lazily.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from segcp.calibration import check_alpha
from segcp.cases import check_beta, check_label_map
from segcp.errors import SegcpError
from segcp.segsets.agreement import agrees
from segcp.segsets.consign import Decomposition, fixed_until

__all__ = ["ReferenceOptions", "ReferenceResult", "reference_calibrate", "reference_score"]


@dataclass(frozen=True)
class ReferenceOptions:
    """The authors' settings (``config_cp.py`` for the cardiac / LIDC data sets).

    step, lambda_start, lambda_max : the λ grid lambda_start, lambda_start + step, …
    n_screen : Latin-hypercube points per test (their ``init_trials * 100``).
    n_starts : Adam runs per test from the best screened points (their ``init_trials``).
    epochs, lr, patience : Adam per run (10 000, 1, 50).
    tau, smooth : soft-argmax temperature and smoothing of the loss (10⁻⁴, 10⁻⁶).
    chunk : screened points evaluated together (memory only).
    seed : of the Latin-hypercube points.
    device : torch device.
    skip_saturated : compute the loss on the pixels that can matter only (a speed-up for
        long comparisons, not in their code): a pixel whose centre label beats every other by
        more than 50 τ everywhere in B_λ has softmax(z/τ) equal to that label's one-hot to
        within e⁻⁵⁰ ≈ 2·10⁻²², i.e. it adds a constant 0 or 1 to its label's count (in float64
        exactly 1.0, and ≈ 10⁻²² instead of 0, for every c in the box) and nothing to the
        gradient; those pixels are counted once per λ instead of at every step. The loss
        changes by less than 10⁻¹⁶ (P · 2·10⁻²² / n_l); benchmarks/consign_compare.py checks
        that the λ* per image are the same with and without it on a subset.
    """

    step: float = 0.01
    lambda_start: float = 0.01
    lambda_max: float = 500.0
    n_screen: int = 1000
    n_starts: int = 10
    epochs: int = 10_000
    lr: float = 1.0
    patience: int = 50
    tau: float = 1e-4
    smooth: float = 1e-6
    chunk: int = 50
    seed: int = 0
    device: str = "cpu"
    skip_saturated: bool = False

    def grid(self, i: int) -> float:
        """The i-th grid λ (0-based), rounded to 10 decimals (no drift from repeated addition)."""
        return round(self.lambda_start + i * self.step, 10)

    def n_grid(self) -> int:
        return math.floor((self.lambda_max - self.lambda_start) / self.step + 1e-9) + 1


@dataclass
class ReferenceResult:
    """One image: λ* on the grid (inf: not certified up to the last grid point tried), the grid
    points tested, Adam epochs run, the certified c and the screened point its Adam run
    started from (None when not certified)."""

    lambda_: float
    grid_steps: int
    epochs: int
    certificate: NDArray[np.float64] | None = None
    start: NDArray[np.float64] | None = None


class _Image:
    """One image's tensors and the authors' membership test at one λ."""

    def __init__(self, dec: Decomposition, truth: ArrayLike, beta: float, opt: ReferenceOptions, image_seed: int) -> None:
        import torch

        self.torch = torch
        self.dec, self.beta, self.opt, self.image_seed = dec, float(beta), opt, int(image_seed)
        self.truth = check_label_map(truth, "truth", dec.n_labels)
        if self.truth.shape != dec.shape:
            raise SegcpError(f"truth shape {self.truth.shape} does not match the samples' spatial shape {dec.shape}")
        dev = torch.device(opt.device)
        self.L, self.P, self.K = dec.n_labels, int(np.prod(dec.shape)), dec.K
        self.mean = torch.from_numpy(np.ascontiguousarray(dec.mean.reshape(-1))).to(dev)  # (L·P,)
        self.basis = torch.from_numpy(np.ascontiguousarray(dec.directions.reshape(self.K, -1))).to(dev)  # (K, L·P)
        y = torch.from_numpy(self.truth.ravel()).to(dev)
        self.onehot = torch.nn.functional.one_hot(y, self.L).T.to(torch.float64)  # (L, P)
        size = self.onehot.sum(dim=1)
        self.present = size > 0
        self.size = size
        self.dev = dev
        self.epochs = 0
        self.pixels = (self.mean, self.basis, self.onehot, torch.zeros(self.L, dtype=torch.float64, device=dev), self.P)
        if opt.skip_saturated:
            self.saturated_until, self.lstar = fixed_until(dec, 50.0 * opt.tau)

    def _restrict(self, lam: float) -> None:
        """``skip_saturated``: the loss's pixels at λ (those not saturated everywhere in B_λ)
        and the counts the others add (their centre label, where it is the truth's)."""
        torch = self.torch
        keep = self.saturated_until <= lam
        idx = torch.from_numpy(np.flatnonzero(keep)).to(self.dev)
        y = self.truth.ravel()
        done = ~keep & (self.lstar == y)
        const = torch.from_numpy(np.bincount(y[done], minlength=self.L).astype(np.float64)).to(self.dev)
        L, P = self.L, self.P
        mean = self.mean.reshape(L, P)[:, idx].reshape(-1)
        basis = self.basis.reshape(self.K, L, P)[:, :, idx].reshape(self.K, -1)
        self.pixels = (mean, basis, self.onehot[:, idx], const, int(idx.numel()))

    def _loss(self, c: Any) -> Any:
        """The loss at c (M, K): (M,)."""
        torch, opt = self.torch, self.opt
        mean, basis, onehot, const, n = self.pixels
        z = (mean[None, :] + c @ basis).reshape(-1, self.L, n)
        soft = torch.softmax(z / opt.tau, dim=1)
        inter = (soft * onehot[None]).sum(dim=2) + const[None]  # (M, L)
        cov = (inter + opt.smooth) / (self.size[None] + opt.smooth)
        return 1.0 - cov[:, self.present].mean(dim=1)

    def test(self, lam: float, grid_index: int) -> tuple[NDArray[np.float64], NDArray[np.float64]] | None:
        """The authors' test at λ: (a certified c (K,), the screened point its Adam run started
        from), or None."""
        from scipy.stats import qmc

        torch, opt = self.torch, self.opt
        if opt.skip_saturated:
            self._restrict(lam)
        lo_np, hi_np = self.dec.box(lam)
        lo = torch.from_numpy(lo_np).to(self.dev)
        hi = torch.from_numpy(hi_np).to(self.dev)
        rng = np.random.default_rng((opt.seed, self.image_seed, grid_index))
        u = qmc.LatinHypercube(d=self.K, seed=rng).random(opt.n_screen)  # (n_screen, K) in [0, 1)
        pts = torch.from_numpy(u).to(self.dev) * (hi - lo)[None] + lo[None]
        with torch.no_grad():
            losses = torch.cat([self._loss(pts[i : i + opt.chunk]) for i in range(0, opt.n_screen, opt.chunk)])
        order = torch.argsort(losses, stable=True)
        for start in order[: opt.n_starts]:
            c = pts[start].clone().requires_grad_(True)
            adam = torch.optim.Adam([c], lr=opt.lr)
            best, stall = math.inf, 0
            for _ in range(opt.epochs):
                adam.zero_grad()
                loss = self._loss(c[None])[0]
                self.epochs += 1
                if loss.item() < 1.0 - self.beta:
                    break
                loss.backward()
                adam.step()
                with torch.no_grad():
                    c.copy_(torch.minimum(torch.maximum(c, lo), hi))  # projection onto the box
                if loss.item() < best:
                    best, stall = loss.item(), 0
                else:
                    stall += 1
                    if stall >= opt.patience:
                        break
            cert = c.detach().cpu().numpy().astype(np.float64)
            if agrees(self.dec.segment(cert), self.truth, self.beta):
                return cert, pts[start].cpu().numpy().astype(np.float64)
        return None


def reference_score(
    dec: Decomposition,
    truth: ArrayLike,
    beta: float = 0.9,
    options: ReferenceOptions | None = None,
    *,
    lambda_cap: float | None = None,
    image_seed: int = 0,
    lambda_from: float = 0.0,
) -> ReferenceResult:
    """λ* of one image: the first grid λ at which the authors' test certifies it.

    ``lambda_cap`` stops the scan after the last grid point ≤ it (λ* = inf if not certified by
    then): images above the calibrated λ̂ cannot lower it, so comparisons need not scan them.
    ``lambda_from`` skips the grid points below it, where no member exists (a proven lower bound of
    the smallest λ containing the truth: the test can only fail there); the others keep the
    seeds of a full scan. ``grid_steps`` counts the grid points tested.
    """
    opt = options or ReferenceOptions()
    img = _Image(dec, truth, check_beta(beta), opt, image_seed)
    n = opt.n_grid()
    tested = 0
    for i in range(n):
        lam = opt.grid(i)
        if lambda_cap is not None and lam > lambda_cap + 1e-12:
            return ReferenceResult(math.inf, tested, img.epochs)
        if lam < lambda_from:
            continue
        tested += 1
        found = img.test(lam, i)
        if found is not None:
            return ReferenceResult(lam, tested, img.epochs, *found)
    return ReferenceResult(math.inf, tested, img.epochs)


@dataclass
class ReferenceCalibration:
    """λ̂ of the authors' calibration loop and what it cost."""

    lambda_: float
    scores: list[float]  # per image: the grid λ at which it was certified (inf: not by λ̂)
    grid_steps: int
    epochs: int
    seconds: float
    history: list[tuple[float, float]] = field(default_factory=list)  # (λ, R̂) per grid point


def reference_calibrate(
    decs: Sequence[Decomposition],
    truths: Sequence[ArrayLike],
    alpha: float,
    beta: float,
    options: ReferenceOptions | None = None,
    progress: Callable[[str], None] | None = None,
) -> ReferenceCalibration:
    """The authors' calibration loop over a calibration set (see the module docstring).

    Raises SegcpError if R̂ never meets the bound up to ``lambda_max`` (their code exits there).
    """
    check_alpha(alpha)
    b = check_beta(beta)
    opt = options or ReferenceOptions()
    n = len(decs)
    if n == 0 or len(truths) != n:
        raise SegcpError("reference_calibrate: need as many truths as decompositions (at least one)")
    images = [_Image(d, y, b, opt, i) for i, (d, y) in enumerate(zip(decs, truths))]
    scores = [math.inf] * n
    bound = float(alpha) - (1.0 - float(alpha)) / n
    t0 = time.perf_counter()
    history: list[tuple[float, float]] = []
    for i in range(opt.n_grid()):
        lam = opt.grid(i)
        for k, img in enumerate(images):
            if math.isinf(scores[k]) and img.test(lam, i) is not None:
                scores[k] = lam
        risk = sum(math.isinf(s) for s in scores) / n
        history.append((lam, risk))
        if progress:
            progress(f"lambda {lam:.2f}: risk {risk:.3f} (bound {bound:.3f}), {time.perf_counter() - t0:.0f} s")
        if risk <= bound:
            return ReferenceCalibration(lam, scores, i + 1, sum(m.epochs for m in images), time.perf_counter() - t0, history)
    raise SegcpError(f"reference: the risk bound is not met up to lambda_max={opt.lambda_max:g}")
