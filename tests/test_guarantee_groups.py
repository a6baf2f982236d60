"""Per-group (Mondrian) calibration on real data (fast subset of benchmarks/group_guarantee.py).

BUSI (647 images, split by near-duplicate group, n_cal = 300, model-free scores on masks downsampled
4×), E[FNR] ≤ α by exact CRC through :class:`segcp.risk.RiskSegmenter` with each image's class
(benign / malignant) as its group, over 100 random splits: under the per-class λ̂ the mean test FNR
of *each* class is ≤ α + 3·SE; under the marginal λ̂ the benign class (the harder one with these
scores: smaller lesions, a larger share of boundary) is above α + 3·SE — the subgroup a marginal
guarantee hides (docs/results/ltt/groups.md: 0.113 ± 0.001 at α = 0.1 over 300 splits).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from group_guarantee import group_splits
from ltt_guarantee import busi

from segcp.losses import get_loss


@pytest.mark.data
def test_per_class_lambda_is_valid_in_each_busi_class_and_the_marginal_is_not(busi_dir: Path):
    probs, masks, dup_groups, classes = busi(busi_dir, factor=4)
    assert sorted(set(classes)) == ["benign", "malignant"] and classes.count("malignant") == 210
    fnr = get_loss("fnr")
    curves = [fnr.curve(np.subtract(1.0, p, dtype=np.float64), m) for p, m in zip(probs, masks)]
    r = group_splits(curves, classes, dup_groups, 0.1, n_cal=300, n_splits=100, seed=25)
    for g, e in r["groups"].items():
        assert e["own"]["valid"], f"{g}: per-class lambda, mean test FNR {e['own']['mean_test_fnr']:.4f} (se {e['own']['se']:.4f})"
        # CRC's lower bound alpha - 2/(n_g + 1): each class holds about 97 (malignant) or 203 of the 300 calibration images
        assert e["own"]["mean_test_fnr"] >= 0.1 - 2 / (80 + 1) - 3 * e["own"]["se"], f"{g}: per-class lambda too conservative"
    benign = r["groups"]["benign"]["marginal"]
    assert benign["mean_test_fnr"] > 0.1 + 3 * benign["se"], f"marginal lambda on benign: {benign['mean_test_fnr']:.4f}"
