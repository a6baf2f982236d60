"""Two-sided sets and volume intervals hold their guarantees on real data (issue 24): many random
calibration/test splits by patient (ACDC) or near-duplicate group (BUSI), model-free probabilities
(``fixed_score``, as in the project's other guarantee tests); the fast subset of
benchmarks/band_guarantee.py (whose full run is docs/results/band/).

Tolerance from the number of splits: a split's test mean varies, so the mean over ``N_SPLITS``
splits is compared with its level within 3 standard errors (the SE over the splits).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from band_guarantee import acdc_slices, acdc_volumes, band_rows, busi_pool, ef_rows, pool_scores, splits_of, volume_rows

from segcp.methods import get_method

N_SPLITS = 200
ALPHAS = (0.2, 0.1)


@pytest.fixture(scope="module")
def acdc_lv(acdc_dir: Path):
    return acdc_slices(acdc_dir, "lv")


def _check_band(rows: list[dict], what: str, informative: bool = False) -> None:
    """Validity of every row; ``informative``: the shared band does not hold always (not vacuous)."""
    assert rows
    for r in rows:
        if r["loss"] == "band":
            assert r["coverage"] >= 1 - r["alpha"] - 3 * r["se"], (
                f"{what} {r['scheme']} tau={r['tau']} alpha={r['alpha']}: joint coverage {r['coverage']:.4f}"
            )
            if informative and r["scheme"] == "shared":
                assert r["coverage"] < 1.0, f"{what} alpha={r['alpha']}: a band that always holds is vacuous"
        else:
            assert r["risk"] <= r["alpha"] + 3 * r["se"], f"{what} band-risk alpha={r['alpha']}: mean test risk {r['risk']:.4f}"


@pytest.mark.parametrize(
    "method,params", [("threshold", {}), ("threshold", {"normalize": "component"}), ("morph", {"se": "ball", "empty_prediction": "argmax"})]
)
def test_band_and_band_risk_hold_on_acdc_lv(acdc_lv, method, params):
    fam = get_method(method, **params)
    splits = splits_of(acdc_lv.groups, 40, N_SPLITS, seed=1)
    rows, _ = band_rows(acdc_lv, method, fam, pool_scores(acdc_lv, fam), splits, ALPHAS, widths=False)
    assert {r["scheme"] for r in rows if r["loss"] == "band"} == {"shared", "split", "bonferroni"}
    _check_band(rows, f"ACDC LV {method} {params}", informative=not params)


def test_band_holds_on_busi(busi_dir: Path):
    pool = busi_pool(busi_dir, factor=8)
    fam = get_method("threshold")
    splits = splits_of(pool.groups, 100, N_SPLITS, seed=2)
    rows, _ = band_rows(pool, "threshold", fam, pool_scores(pool, fam, taus=(1.0,)), splits, ALPHAS, schemes=("shared",), taus=(1.0,), widths=False)
    _check_band(rows, "BUSI threshold", informative=True)


def test_volume_intervals_hold_on_acdc_lv(acdc_lv):
    fam = get_method("threshold")
    splits = splits_of(acdc_lv.groups, 40, N_SPLITS, seed=3)
    sc = pool_scores(acdc_lv, fam, taus=(1.0,))
    _, aux = band_rows(acdc_lv, "threshold", fam, sc, splits, ALPHAS, schemes=("shared",), taus=(1.0,))
    rows = volume_rows(acdc_lv, splits, ALPHAS, band={"threshold": (sc, aux)})
    names = {r["candidate"] for r in rows}
    assert any(n.startswith("scaled") for n in names) and any(n.startswith("band:") for n in names)
    for r in rows:
        assert r["coverage"] >= 1 - r["alpha"] - 3 * r["se"], f"{r['candidate']} alpha={r['alpha']}: coverage {r['coverage']:.4f}"
        assert math.isfinite(r["median_width"]) and r["median_width"] > 0


def test_ejection_fraction_interval_holds_on_acdc_patients(acdc_dir: Path):
    pool = acdc_volumes(acdc_dir, "lv", factor=4)
    rows = ef_rows(pool, 35, N_SPLITS, seed=4, alphas=ALPHAS)
    assert rows
    for r in rows:
        assert r["coverage"] >= 1 - r["alpha"] - 3 * r["se"], f"EF {r['candidate']} alpha={r['alpha']}: coverage {r['coverage']:.4f}"
        assert np.isfinite(r["median_width"])
