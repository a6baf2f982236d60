"""The reference calibration procedure of CONSIGN, re-implemented for speed comparisons.

As the paper and the project's issue describe it (its GPL-3.0 code was not read): for each
image, scan λ = 0, 0.01, 0.02, … and at every λ re-optimise c from scratch with torch Adam
for ``epochs`` epochs on the whole image, projecting c onto the box after every step; the
first λ at which the optimised c's argmax agrees with the truth up to β is the image's λ*.
λ̂ is then the conformal quantile of the λ*_i, as in :mod:`segcp.multiclass.estimators`.

To compare like with like, the objective (soft agreement with an annealed temperature), the
parametrisation (c = centre + λ s ⊙ t, t ∈ [−1, 1]^K) and the exact membership check are the
ones of :mod:`segcp.multiclass.consign`; what differs is the *procedure*: a λ grid instead of
bracketing + bisection, one start at the box centre instead of screening + multi-start with
warm starts, the whole image instead of the pixels that can change, and a fixed number of
epochs (optionally ``check_every`` epochs an exact check that may stop early; the default
checks only at the end of each run, as a fixed-epoch loop does).

torch is imported lazily: only this module (used by benchmarks and tests) needs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

from segcp.multiclass.agreement import check_beta, check_label_map, truth_weights
from segcp.multiclass.consign import Decomposition

__all__ = ["ReferenceResult", "reference_score"]


@dataclass
class ReferenceResult:
    """λ* on the grid (inf: not found up to ``lambda_max``), λ values tried, Adam epochs run."""

    lambda_: float
    grid_steps: int
    epochs: int


def reference_score(
    dec: Decomposition,
    truth: ArrayLike,
    beta: float = 0.9,
    *,
    step: float = 0.01,
    epochs: int = 10_000,
    lr: float = 0.01,
    temperature: float = 0.3,
    lambda_max: float = 64.0,
    check_every: int | None = None,
    lambda_min: float = 0.0,
) -> ReferenceResult:
    """λ* of one image by the reference grid scan (see the module docstring).

    ``lambda_min`` starts the scan at that grid point instead of 0 (for spot checks).
    """
    import torch

    b = check_beta(beta)
    y = check_label_map(truth, "truth", dec.n_labels)
    L, P, K = dec.n_labels, dec.mean.shape[1], dec.K
    g = dec.geometry
    base_np = dec.mean + np.tensordot(dec.centre, dec.directions, axes=1)
    G_np = dec.unit_half_width[:, None, None] * dec.directions
    base = torch.from_numpy(base_np)  # (L, P), whole image
    G = torch.from_numpy(G_np.reshape(K, -1))  # (K, L·P)
    yt = torch.from_numpy(y.ravel())
    w = torch.from_numpy(truth_weights(y).ravel())
    onehot = torch.nn.functional.one_hot(yt, L).T.to(torch.float64)  # (L, P)
    check = int(check_every) if check_every else int(epochs)
    n_grid = math.floor(lambda_max / step + 1e-9) + 1
    total_epochs = 0

    def agree(t: torch.Tensor, lam: float) -> float:
        z = base + lam * (t @ G).reshape(L, P)
        return float(((z.argmax(dim=0) == yt).to(torch.float64) * w).sum())

    for i in range(math.ceil(lambda_min / step - 1e-9), n_grid):
        lam = round(i * step, 10)
        t = torch.zeros(K, dtype=torch.float64, requires_grad=True)
        if lam == 0.0:
            if agree(t.detach(), 0.0) > b:
                return ReferenceResult(0.0, i + 1, total_epochs)
            continue
        active = (g.act <= lam).sum()
        swing = float(np.median(g.swing[:active])) * lam if active else 1.0
        tau0 = max(temperature * swing, 1e-6)
        opt = torch.optim.Adam([t], lr=lr)
        for e in range(1, int(epochs) + 1):
            tau = tau0 * 10.0 ** (-(e - 1) / max(int(epochs) - 1, 1))
            z = (base + lam * (t @ G).reshape(L, P)) / tau
            soft = (torch.softmax(z, dim=0) * onehot).sum(dim=0)
            loss = -(soft * w).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                t.clamp_(-1.0, 1.0)
            total_epochs += 1
            if e % check == 0 and agree(t.detach(), lam) > b:
                return ReferenceResult(lam, i + 1, total_epochs)
    return ReferenceResult(math.inf, n_grid, total_epochs)
