"""The guarantee of every family on real data, split by patient (fast subset of benchmarks/guarantee.py).

ACDC LV, the largest-LV slice per (patient, frame): 140 real images of 70 patients. Inputs are
model-free (so any of them gives a valid guarantee): the probability map is a blurred, noised
version of the mask (``fixed_score``, as in test_guarantee_acdc.py), and the "sampled outputs"
of the sets-of-segmentations families are 12 smooth random perturbations of its logit (64 × 64).
For threshold, morph, rwcp, consign and aps, 300 random patient-level splits with n = 20 at
α ∈ {0.2, 0.1, 0.05}: mean test loss ≤ α + 3·SE; for the FNR families also not trivially
conservative (≥ α − 2/(n+1) − 3·SE) wherever λ̂ is an interior solution.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from guarantee import split_losses
from scipy import ndimage, special
from test_guarantee_acdc import fixed_score

from segcp import Case, ConformalSegmenter
from segcp.harness.datasets.tasks import get_task

pytestmark = pytest.mark.data

ALPHAS = (0.2, 0.1, 0.05)
SPLITS = 300
FAMILIES = {
    "threshold": {},
    "morph": {"se": "ball", "empty_prediction": "argmax"},
    "rwcp": {"encoder": "fallback", "grid": 64, "steps": 5, "k": 10, "cache": False},
    "consign": {"K": 5, "beta": 0.9, "box_alpha": 0.1},
    "aps": {"beta": 0.95},
}


def model_free_samples(p: np.ndarray, seed: int, n: int = 12) -> np.ndarray:
    """(n, 2, *S) binary softmax samples: smooth random perturbations of logit(p)."""
    rng = np.random.default_rng((7, seed))
    z = special.logit(np.clip(p, 1e-4, 1 - 1e-4))
    f = ndimage.gaussian_filter(rng.standard_normal((4, *p.shape)), (0, 2, 2))
    f /= f.std(axis=(1, 2), keepdims=True)
    fg = special.expit(z[None] + np.tensordot(rng.normal(0, 2.0, (n, 4)), f, axes=1))
    return np.stack([1 - fg, fg], axis=1)


@pytest.fixture(scope="module")
def acdc_cases(acdc_dir: Path):
    items = get_task("acdc-lv", root=acdc_dir).items(protocol="rwcp")
    pixel, sets, groups = [], [], []
    for i, item in enumerate(items):
        s = item.load()
        p = fixed_score(s.mask, seed=i)
        pixel.append(Case(item.id, p, mask=s.mask, image=s.image))
        sets.append(Case(item.id, samples=model_free_samples(p[::4, ::4], i), label_map=s.mask[::4, ::4].astype(np.int64)))
        groups.append(item.group)
    return pixel, sets, groups


@pytest.mark.parametrize("method", list(FAMILIES))
def test_guarantee_of_every_family_on_acdc(acdc_cases, method):
    pixel, sets, groups = acdc_cases
    assert len(pixel) == 140 and len(set(groups)) == 70
    cs = ConformalSegmenter(method, 0.1, method_params=FAMILIES[method])
    cases = sets if method in ("consign", "aps") else pixel
    curves = cs.curves(cases)
    for alpha in ALPHAS:
        r = split_losses(cs, curves, groups, alpha, n_cal=20, n_splits=SPLITS, seed=1)
        assert r["splits"] == SPLITS and r["n_cal"] == 20 and r["infeasible"] == 0, r
        assert r["valid"], f"{method} alpha={alpha}: mean test loss {r['mean_test_loss']:.4f} > alpha + 3 se ({r['se']:.4f})"
        if method in ("threshold", "morph", "rwcp") and r["at_lambda_min"] < 0.5:
            assert r["not_conservative"], f"{method} alpha={alpha}: trivially conservative, mean {r['mean_test_loss']:.4f}"
