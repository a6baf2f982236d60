"""Statistical test of the CRC guarantee on real data (ACDC, split by patient).

Probability maps come from a fixed score that uses no calibration data (a blurred, noised
version of the mask: any fixed score gives a valid guarantee). The second test rescales it by
a per-image confidence (some images seen at 5 % or 20 %) and adds the slices where the LV is
absent, then checks the guarantee of the *normalised* scores (``normalize=max``, with and
without a floor, and ``component``): any function of the image's own probabilities keeps it. Over many random
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
from standin_probs import fixed_score  # the model-free score (benchmarks/)

from segcp.calibration import LossCurves, crc_lambda
from segcp.harness.datasets.acdc import label_areas
from segcp.harness.datasets.tasks import get_task
from segcp.methods import Case, ThresholdMethod

pytestmark = pytest.mark.data

N_CAL = 20
N_SPLITS = 1000
N_SPLITS_NORMALISED = 500  # per normalisation (three of them)
ALPHAS = (0.2, 0.1, 0.05)


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


def split_means(curves: list[LossCurves], groups: list[str], alpha: float, n_patients: int, seed: int, n_splits: int = N_SPLITS) -> list[float]:
    """Mean test FNR of ``n_splits`` random patient-level splits (``n_patients`` calibration patients)."""
    everyone = LossCurves.concat(curves)
    by_patient: dict[str, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        by_patient[g].append(i)
    patients = sorted(by_patient)
    rng = np.random.default_rng(seed)
    means = []
    for _ in range(n_splits):
        order = rng.permutation(len(patients))
        cal = [i for p in order[:n_patients] for i in by_patient[patients[p]]]
        test = [i for p in order[n_patients:] for i in by_patient[patients[p]]]
        assert not {groups[i] for i in cal} & {groups[i] for i in test}
        lam = crc_lambda(LossCurves.concat([curves[i] for i in cal]), alpha, lambda_min=0.0).lambda_
        means.append(everyone.evaluate(lam)[test].mean())
    return means


def test_crc_guarantee_holds_on_acdc_lv(lv_cases):
    cases, groups = lv_cases
    assert len(cases) == 140 and len(set(groups)) == 70
    method = ThresholdMethod()
    curves = [method.loss_curve(c) for c in cases]
    for alpha in ALPHAS:
        means = split_means(curves, groups, alpha, N_CAL // 2, seed=2024)
        m = float(np.mean(means))
        se = float(np.std(means, ddof=1) / math.sqrt(N_SPLITS))
        assert m <= alpha + 3 * se, f"alpha={alpha}: mean test FNR {m:.4f} > alpha + 3 se ({se:.4f})"
        assert m >= alpha - 2 / (N_CAL + 1) - 3 * se, f"alpha={alpha}: CRC too conservative, mean FNR {m:.4f}"


@pytest.fixture(scope="module")
def lv_cases_varied(acdc_dir: Path, lv_cases) -> tuple[list[Case], list[str]]:
    """The RW-CP images with a per-image confidence (5 %, 20 % or 100 %, seeded by the image),
    plus, per (patient, frame), the first slice where the LV is absent (most volumes have one)."""
    cases, groups = lv_cases
    out = []
    for i, c in enumerate(cases):
        conf = np.random.default_rng(10_000 + i).choice([0.05, 0.2, 1.0], p=[0.1, 0.2, 0.7])
        out.append(Case(c.id, conf * c.probs, mask=c.mask))
    out_groups = list(groups)
    wanted = {c.id.rsplit("_slice_", 1)[0] for c in cases}
    items = get_task("acdc-lv", root=acdc_dir).items(protocol="all")
    areas = label_areas([it.source for it in items])[:, 3]
    seen: set[str] = set()
    for j, (item, area) in enumerate(sorted(zip(items, areas.tolist()), key=lambda t: (t[0].meta["slice"], t[0].id))):
        vol = item.id.rsplit("_slice_", 1)[0]
        if area == 0 and vol in wanted and vol not in seen:
            seen.add(vol)
            mask = item.load().mask
            out.append(Case(item.id, fixed_score(mask, seed=20_000 + j), mask=mask))
            out_groups.append(item.group)
    return out, out_groups


@pytest.mark.parametrize(
    "params", [{"normalize": "max"}, {"normalize": "max", "norm_floor": 0.1}, {"normalize": "component"}], ids=["max", "max-floor", "component"]
)
def test_crc_guarantee_holds_for_normalised_scores_on_acdc_lv(lv_cases_varied, params):
    cases, groups = lv_cases_varied
    n_empty = sum(not c.mask.any() for c in cases)
    assert len(cases) > 140 and n_empty == len(cases) - 140 and n_empty >= 20 and len(set(groups)) == 70
    method = ThresholdMethod(**params)
    curves = [method.loss_curve(c) for c in cases]
    for alpha in ALPHAS:
        means = split_means(curves, groups, alpha, N_CAL // 2, seed=2025, n_splits=N_SPLITS_NORMALISED)
        m = float(np.mean(means))
        se = float(np.std(means, ddof=1) / math.sqrt(N_SPLITS_NORMALISED))
        assert m <= alpha + 3 * se, f"{params}, alpha={alpha}: mean test FNR {m:.4f} > alpha + 3 se ({se:.4f})"
