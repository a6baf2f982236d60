"""The CRC guarantee on real ACDC with compact curves (tests/test_guarantee_acdc.py, repeated).

Same images (the largest-LV slice per patient and frame: 140 images, 70 patients), the same
model-free score and patient-level splits with n = 20 (benchmarks/guarantee.py
``split_losses``): λ̂ is calibrated on the *compact* curves of each split's calibration images
and the test FNR is measured exactly, at that λ̂, on its test images. Two grids: the default
(2^16 points: λ̂ within 1.5e-5 of exact) and a deliberately coarse one (64 points), where the
rounding toward the larger set is visible — the guarantee holds for both, and on every split
λ̂_exact ≤ λ̂_compact ≤ λ̂_exact + one grid step.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from guarantee import split_losses
from test_guarantee_acdc import fixed_score

from segcp import Case, ConformalSegmenter, LossCurves
from segcp.calibration.compact import CompactCurves, Grid
from segcp.engine.splits import random_cal_test_splits
from segcp.harness.datasets.tasks import get_task

pytestmark = pytest.mark.data

ALPHAS = (0.2, 0.1, 0.05)
SPLITS = 1000
N_CAL = 20


class CompactView:
    """Curves as split_losses uses them: ``take`` gives the compact curves of a calibration
    subset (each image compacted on its own, then added), ``evaluate`` the exact test losses."""

    def __init__(self, exact: LossCurves, grid: Grid) -> None:
        self.exact = exact
        self.parts = [CompactCurves.from_curves(exact[i], grid) for i in range(exact.n)]

    def take(self, idx) -> CompactCurves:
        return CompactCurves.concat([self.parts[i] for i in idx])

    def evaluate(self, lam):
        return self.exact.evaluate(lam)


@pytest.fixture(scope="module")
def lv_curves(acdc_dir: Path) -> tuple[LossCurves, list[str]]:
    items = get_task("acdc-lv", root=acdc_dir).items(protocol="rwcp")
    cases = [Case(it.id, fixed_score(it.load().mask, seed=i), mask=it.load().mask) for i, it in enumerate(items)]
    groups = [it.group for it in items]
    return ConformalSegmenter("threshold", curve_form="exact").curves(cases), groups


@pytest.mark.parametrize("size", [2**16, 64])
def test_crc_guarantee_holds_with_compact_curves_on_acdc_lv(lv_curves, size):
    exact, groups = lv_curves
    assert exact.n == 140 and len(set(groups)) == 70
    grid = Grid(0.0, 1.0, size)
    view = CompactView(exact, grid)
    for alpha in ALPHAS:
        cs = ConformalSegmenter("threshold", alpha, curve_form="compact", grid_size=size)
        res = split_losses(cs, view, groups, alpha, n_cal=N_CAL, n_splits=SPLITS, seed=2024)  # type: ignore[arg-type]
        assert res["infeasible"] == 0 and res["n_cal"] == N_CAL
        assert res["valid"], f"grid {size}, alpha={alpha}: mean test FNR {res['mean_test_loss']:.4f} > {res['upper']:.4f}"
        if size == 2**16:  # as tight as exact CRC
            assert res["not_conservative"], f"alpha={alpha}: mean test FNR {res['mean_test_loss']:.4f} < {res['lower']:.4f}"
    # on every split: never below exact, at most one grid step above
    est = ConformalSegmenter("threshold", 0.1, curve_form="exact")
    comp = ConformalSegmenter("threshold", 0.1, curve_form="compact", grid_size=size)
    gaps = []
    for cal, _ in random_cal_test_splits(groups, N_CAL, 200, 7):
        le = est.calibrate_curves(exact.take(cal)).lambda_
        lc = comp.calibrate_curves(view.take(cal)).lambda_
        assert le <= lc <= le + grid.step * (1 + 1e-12)
        gaps.append(lc - le)
    assert max(gaps) > 0 if size == 64 else max(gaps) <= grid.step
    assert np.isfinite(gaps).all()
