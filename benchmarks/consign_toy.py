"""SYNTHETIC sampled softmax outputs for the CONSIGN / APS tests and benchmarks (not real data).

A cartoon short-axis slice with ``n_labels`` classes (4: background, RV cavity, myocardium,
LV cavity; 2: background, LV cavity) and N "MC-dropout-like" softmax samples whose
variation is spatially coherent (a few global modes: the radii of the structures, a shift of
the heart, the sharpness of the boundaries) plus a little smooth per-pixel noise. The ground
truth differs from the model's mean by a per-image error of the same kind (and a boundary
wobble the samples never show), so some truths lie inside the sample spread and others far
outside it. Everything is analytic (no distance transforms), about 2 ms per 48 × 48 image.

This is a mechanics check, not a model of any network: real MC-dropout samples of a trained
UNet replace it for every reported figure.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from segcp.errors import SegcpError

__all__ = ["ToyCase", "make_toy_cases"]


@dataclass(frozen=True, eq=False)
class ToyCase:
    """One synthetic image: ``samples`` (N, L, H, W) float32 softmax, ``truth`` (H, W) int64."""

    id: str
    samples: np.ndarray
    truth: np.ndarray


def _scores(yy, xx, cy, cx, r_cav, thick, rv_r, rv_dx, wob, n_labels):
    """Per-class region scores (pixels; larger = deeper inside that class), shape (L, H, W)."""
    rho = np.hypot(yy - cy, xx - cx)
    ang = np.arctan2(yy - cy, xx - cx)
    wobble = wob[0] * np.cos(2 * ang + wob[1]) + wob[2] * np.cos(3 * ang + wob[3])
    d_cav = rho - (r_cav + wobble)  # negative inside the LV cavity
    d_epi = rho - (r_cav + thick + 0.7 * wobble)
    if n_labels == 2:
        return np.stack([d_cav, -d_cav])
    d_rv = np.hypot(yy - cy, xx - (cx - rv_dx)) - rv_r
    s0 = np.minimum(d_epi, d_rv)  # outside the heart
    s1 = np.minimum(-d_rv, d_epi)  # RV: inside its disc, outside the epicardium
    s2 = np.minimum(d_cav, -d_epi)  # myocardium ring
    s3 = -d_cav
    return np.stack([s0, s1, s2, s3])


def make_toy_cases(
    n: int = 20, shape: tuple[int, int] = (48, 48), n_labels: int = 4, n_samples: int = 30, seed: int = 0, spread: float = 1.0, error: float = 1.0
) -> list[ToyCase]:
    """``n`` synthetic images with sampled softmax maps (see the module docstring).

    Parameters
    ----------
    n : number of images.
    shape : (H, W), each ≥ 24.
    n_labels : 4 (background, RV, myocardium, LV cavity) or 2 (background, LV cavity).
    n_samples : N, the number of softmax samples per image (≥ 2).
    seed : images are reproducible; image ``i`` draws from ``default_rng((seed, i))``.
    spread : scale of the sample-to-sample variation (pixels of boundary movement).
    error : scale of the model's error (truth vs the samples' centre), in pixels.
    """
    if n_labels not in (2, 4):
        raise SegcpError(f"toy samples: n_labels must be 2 or 4, got {n_labels}")
    if n_samples < 2 or min(shape) < 24:
        raise SegcpError("toy samples: need n_samples >= 2 and shape >= 24 pixels per axis")
    H, W = shape
    s = min(shape) / 48.0
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    out = []
    for i in range(n):
        rng = np.random.default_rng((seed, i))
        cy, cx = H / 2 + rng.normal(0, 2 * s), W / 2 + 3 * s + rng.normal(0, 2 * s)
        r_cav = rng.uniform(5.0, 9.0) * s
        thick = rng.uniform(2.5, 4.0) * s
        rv_r = rng.uniform(6.0, 9.0) * s
        rv_dx = r_cav + thick + 0.4 * rv_r
        wob_t = np.array([rng.normal(0, 0.3 * s), rng.uniform(0, 6.3), rng.normal(0, 0.2 * s), rng.uniform(0, 6.3)])
        truth = np.argmax(_scores(yy, xx, cy, cx, r_cav, thick, rv_r, rv_dx, wob_t, n_labels), axis=0)
        # the model's centre: the truth moved by a per-image error (hard images: larger)
        e = error * s * (3.0 if rng.random() < 0.1 else 1.0)
        m_cy, m_cx = cy + rng.normal(0, 0.6 * e), cx + rng.normal(0, 0.6 * e)
        m_rc, m_th, m_rv = r_cav + rng.normal(0, e), thick + rng.normal(0, 0.5 * e), rv_r + rng.normal(0, e)
        sp = spread * s * rng.uniform(0.5, 1.5)
        soft = rng.uniform(0.8, 1.4) * s
        samples = np.empty((n_samples, n_labels, H, W), np.float32)
        no_wobble = np.zeros(4)
        for k in range(n_samples):
            a = rng.normal(0, 1, 6)
            sc = _scores(
                yy,
                xx,
                m_cy + 0.5 * sp * a[0],
                m_cx + 0.5 * sp * a[1],
                m_rc + sp * a[2],
                max(m_th + 0.5 * sp * a[3], 1.0),
                max(m_rv + sp * a[4], 2.0),
                rv_dx,
                no_wobble,
                n_labels,
            )
            noise = ndimage.gaussian_filter(rng.normal(0, 1, (n_labels, H, W)), (0, 2 * s, 2 * s))
            z = sc / (soft * np.exp(0.15 * a[5])) + 0.6 * noise / max(noise.std(), 1e-12)
            z -= z.max(axis=0, keepdims=True)
            e_z = np.exp(z)
            samples[k] = e_z / e_z.sum(axis=0, keepdims=True)
        out.append(ToyCase(f"toy_{i:03d}", samples, truth.astype(np.int64)))
    return out
