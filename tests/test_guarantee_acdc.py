"""Statistical test of the CRC guarantee on real data (ACDC, split by patient).

Probability maps come from a fixed score that uses no calibration data (a blurred, noised
version of the mask: any fixed score gives a valid guarantee). Over many random
calibration/test splits with n = 20 calibration images, the mean test FNR must stay below
α within sampling error (mean ≤ α + 3·SE, SE the standard error over splits), and CRC must
not be trivially conservative (mean ≥ α − 2/(n+1) − 3·SE, the lower bound of Angelopoulos
et al., Thm. 2, for losses without large jumps).
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from scipy import ndimage

from segcp.calibration import LossCurves, crc_lambda
from segcp.data.tasks import get_task
from segcp.methods import Case, ThresholdMethod

pytestmark = pytest.mark.data

N_CAL = 20
N_SPLITS = 1000
ALPHAS = (0.2, 0.1, 0.05)


def fixed_score(mask: np.ndarray, seed: int) -> np.ndarray:
    """A model-free probability map: blurred mask, shifted boundary, smooth logit noise."""
    rng = np.random.default_rng(seed)
    blurred = ndimage.gaussian_filter(mask.astype(float), sigma=2.0)
    noise = ndimage.gaussian_filter(rng.normal(0, 1, mask.shape), sigma=4.0)
    noise /= noise.std() + 1e-12
    logit = 10.0 * (blurred - 0.55) + 1.5 * noise
    return 1.0 / (1.0 + np.exp(-logit))


@pytest.fixture(scope="module")
def lv_cases(acdc_dir: Path) -> tuple[list[Case], list[str]]:
    """RW-CP protocol images of acdc-lv: the largest-LV slice per (patient, frame)."""
    items = get_task("acdc-lv", root=acdc_dir).items(protocol="rwcp")
    cases, groups = [], []
    for i, item in enumerate(items):
        mask = item.load().mask
        cases.append(Case(item.id, fixed_score(mask, seed=i), mask=mask))
        groups.append(item.group)
    return cases, groups


def test_crc_guarantee_holds_on_acdc_lv(lv_cases):
    cases, groups = lv_cases
    assert len(cases) == 140 and len(set(groups)) == 70
    method = ThresholdMethod()
    curves = [method.loss_curve(c) for c in cases]
    everyone = LossCurves.concat(curves)
    by_patient: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by_patient[g].append(i)
    patients = sorted(by_patient)
    rng = np.random.default_rng(2024)
    for alpha in ALPHAS:
        means = []
        for _ in range(N_SPLITS):
            order = rng.permutation(len(patients))
            cal = [i for p in order[: N_CAL // 2] for i in by_patient[patients[p]]]
            test = [i for p in order[N_CAL // 2 :] for i in by_patient[patients[p]]]
            assert len(cal) == N_CAL and not {groups[i] for i in cal} & {groups[i] for i in test}
            lam = crc_lambda(LossCurves.concat([curves[i] for i in cal]), alpha, lambda_min=0.0).lambda_
            means.append(everyone.evaluate(lam)[test].mean())
        m = float(np.mean(means))
        se = float(np.std(means, ddof=1) / math.sqrt(N_SPLITS))
        assert m <= alpha + 3 * se, f"alpha={alpha}: mean test FNR {m:.4f} > alpha + 3 se ({se:.4f})"
        assert m >= alpha - 2 / (N_CAL + 1) - 3 * se, f"alpha={alpha}: CRC too conservative, mean FNR {m:.4f}"
