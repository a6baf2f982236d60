"""CONSIGN and pixel-wise APS rows of ``segcp demo`` (SYNTHETIC samples, not real data).

The demo's phantoms carry one LV probability map per image and no sampled outputs, so the
samples here are made up: N = 16 "MC-dropout-like" maps per image,
sigmoid(logit(p) + Σ_j a_nj f_j + ε_n), with f_1 … f_4 smooth random fields of the image
(spatially coherent variation, what CONSIGN's SVD picks up; two strong, two weak) and ε_n a
little white noise.
The ground truth is the binary LV map (label 3), so the sets are sets of binary
segmentations (L = 2; agreement = mean of background and LV recall).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage, special

from segcp.multiclass.diversity import draw_metrics
from segcp.multiclass.estimators import Consign, PixelAPS, SegmentationSets

__all__ = ["COLUMNS", "MC_TITLE", "phantom_samples", "run_multiclass_demo"]

COLUMNS = ["method", "alpha", "lambda", "coverage", "SEC@100", "Chao1@100", "|corr|", "seconds"]
MC_TITLE = (
    "Sets of segmentations, SYNTHETIC MC-dropout-like samples (LV vs background, beta = 0.8, "
    "first 30 calibration / 30 test images): P(truth in set up to beta) >= 1 - alpha"
)


def phantom_samples(probs: np.ndarray, rng: np.random.Generator, n: int = 16) -> np.ndarray:
    """(n, 2, H, W) float32 softmax samples around a foreground probability map."""
    p = np.clip(probs.astype(np.float64), 1e-6, 1 - 1e-6)
    z = special.logit(p)
    h, w = p.shape
    fields = ndimage.gaussian_filter(rng.standard_normal((4, h, w)), (0, 6, 6))
    fields /= fields.std(axis=(1, 2), keepdims=True)
    coef = rng.normal(0.0, 1.0, (n, 4)) * np.array([2.0, 2.0, 0.7, 0.7])
    out = np.empty((n, 2, h, w), np.float32)
    out[:, 1] = special.expit(z[None] + np.tensordot(coef, fields, axes=1) + 0.3 * rng.standard_normal((n, h, w)))
    out[:, 0] = 1.0 - out[:, 1]
    return out


def _evaluate(est: SegmentationSets, items: Sequence[tuple[Any, np.ndarray]], draws: int, seed: int) -> dict[str, float]:
    rows = []
    for k, (x, y) in enumerate(items):
        d = est.sample(x, draws, np.random.default_rng((seed, k)))
        rows.append({"covered": float(est.score(x, y) <= est.lambda_)} | draw_metrics(d, y, float(est.beta), 2))
    return {key: float(np.nanmean([r[key] for r in rows])) for key in rows[0]}


def run_multiclass_demo(
    phantoms: Sequence[Any],
    cal: Sequence[int],
    test: Sequence[int],
    *,
    alpha: float = 0.1,
    beta: float = 0.8,
    K: int = 5,
    draws: int = 100,
    seed: int = 0,
    max_images: int = 30,
) -> list[dict[str, Any]]:
    """Calibrate CONSIGN (K components) and APS at α on ``cal``, evaluate on ``test``: table rows.

    Only the first ``max_images`` calibration and test images are used (keeps the demo fast).
    β = 0.8: at 0.9 some of these truths are not of the form argmax(μ + Σ c_k u_k) at any c
    in reach (3 of the 30 calibration truths with the paper's box, 4 with the normalised one),
    more than α = 0.1 tolerates with n = 30, so CONSIGN could not be calibrated — the same
    limit as on real data (docs/consign.md).
    """
    cal, test = list(cal)[:max_images], list(test)[:max_images]
    rng = np.random.default_rng((seed, 6))
    samples = {i: phantom_samples(phantoms[i].probs, rng) for i in [*cal, *test]}
    truth = {i: (phantoms[i].label == 3).astype(np.int64) for i in [*cal, *test]}
    rows = []
    for label, est in ((f"CONSIGN (K={K})", Consign(alpha, K=K, beta=beta)), ("pixel-wise APS", PixelAPS(alpha, beta=beta))):
        t0 = time.perf_counter()
        if isinstance(est, Consign):
            x = {i: est.decompose(samples[i]) for i in samples}
        else:
            x = {i: samples[i].mean(axis=0) for i in samples}
        est.calibrate([(x[i], truth[i]) for i in cal])
        m = _evaluate(est, [(x[i], truth[i]) for i in test], draws, seed)
        rows.append({
            "method": label, "alpha": alpha, "lambda": est.lambda_, "coverage": m["covered"], "SEC@100": m["sec"],
            "Chao1@100": m["chao"], "|corr|": m["correlation"], "seconds": time.perf_counter() - t0,
        })
    return rows
