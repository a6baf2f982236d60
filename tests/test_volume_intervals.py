"""Volumes (segcp.volumes) and their conformal intervals (segcp.calibration.intervals).

* the volume of a mask, of a probability map (estimate, spread, raw interval) and of samples, in
  mL / mm² / voxels from the grid and its spacing;
* every interval score: a value is inside the interval at q exactly when its score is ≤ q
  (hypothesis), so the conformal quantile's guarantee is the interval's;
* validity by simulation: exchangeable synthetic units with heteroscedastic errors, coverage
  ≥ 1 − α within 3 standard errors for each score (and the scaled score adapts its width);
* the ejection fraction: its interval-arithmetic bounds hold every EF of volumes inside the
  volumes' intervals, and its delta-method spread matches a finite difference.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_band import candidates_of, probes_of, scanned_score, signed_case

from segcp.calibration import INTERVAL_SCORES, fit_interval, interval_bounds, interval_scores
from segcp.errors import SegcpError
from segcp.volumes import (
    band_volume_score,
    band_volumes,
    ejection_fraction,
    ejection_fraction_bounds,
    ejection_fraction_spread,
    mask_volume,
    probability_volume,
    sampled_volumes,
    volume_unit,
    voxel_volume,
)


def test_units_and_mask_volumes():
    m = np.zeros((4, 5, 6), bool)
    m[1:3, 1:4, 2:6] = True  # 24 voxels
    assert mask_volume(m) == 24.0 and volume_unit(3, None) == (1.0, "voxels")
    assert mask_volume(m, (2.0, 1.5, 1.0)) == pytest.approx(24 * 3.0 / 1000)  # mL
    assert mask_volume(m[1], (0.5, 0.5)) == pytest.approx(12 * 0.25) and volume_unit(2, (0.5, 0.5))[1] == "mm2"
    assert voxel_volume(2.0, 3) == 8.0
    with pytest.raises(SegcpError, match="binary"):
        mask_volume(np.full((2, 2), 2))
    with pytest.raises(SegcpError, match="2D or 3D"):
        volume_unit(1, None)
    with pytest.raises(SegcpError, match="positive"):
        mask_volume(m, (1.0, -1.0, 1.0))


def test_probability_and_sampled_volumes():
    rng = np.random.default_rng(0)
    p = rng.random((6, 7, 8))
    v = probability_volume(p, (1.0, 2.0, 0.5), gamma=0.2)
    u = 1e-3
    assert v.unit == "mL"
    assert v.estimate == pytest.approx(p.sum() * u)
    assert v.sd == pytest.approx(math.sqrt((p * (1 - p)).sum()) * u)
    assert v.var == pytest.approx((p * (1 - p)).sum() * u)
    assert v.lower == (p >= 0.8).sum() * u and v.upper == (p >= 0.2).sum() * u
    crisp = probability_volume(np.array([[1.0, 0.0], [1.0, 1.0]]))
    assert crisp.estimate == 3.0 and crisp.sd == 1.0 and crisp.var == 1.0  # floored at one voxel
    draws = rng.random((5, 6, 7))
    vols, summary = sampled_volumes(draws, (2.0, 2.0))
    assert vols.shape == (5,) and summary.unit == "mm2"
    assert summary.estimate == pytest.approx(draws.mean(axis=0).sum() * 4.0)
    assert summary.sd == pytest.approx(vols.std(ddof=1)) and summary.lower <= summary.estimate <= summary.upper
    with pytest.raises(SegcpError, match="in \\[0, 1\\]"):
        probability_volume(np.full((2, 2), 1.5))
    with pytest.raises(SegcpError, match="gamma"):
        probability_volume(p, gamma=0.5)
    with pytest.raises(SegcpError, match="S >= 2"):
        sampled_volumes(draws[:1])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), three=st.booleans())
def test_band_volumes_contain_the_truth_volume(seed, three):
    rng = np.random.default_rng(seed)
    shape = (4, 5, 6) if three else (7, 8)
    y = rng.random(shape) < 0.4
    inner = y & (rng.random(shape) < 0.6)
    outer = y | (rng.random(shape) < 0.3)
    spacing = tuple(rng.uniform(0.3, 3.0, len(shape)))
    lo, hi = band_volumes(inner, outer, spacing)
    assert lo <= mask_volume(y, spacing) <= hi


@pytest.mark.parametrize("score", INTERVAL_SCORES)
@settings(max_examples=50, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_inside_the_interval_exactly_when_the_score_is_below_q(score, seed):
    rng = np.random.default_rng(seed)
    n = 30
    est = rng.uniform(10, 100, n)
    spread = rng.uniform(0.5, 5, n)
    lo = est - rng.uniform(0, 5, n)
    hi = est + rng.uniform(0, 5, n)
    truth = est + rng.normal(0, 4, n)
    s = interval_scores(truth, est, score=score, spread=spread, lower=lo, upper=hi)
    for q in (0.0, float(np.median(s)), float(s.max()), 2.5):
        a, b = interval_bounds(q, est, score=score, spread=spread, lower=lo, upper=hi)
        inside = (truth >= a) & (truth <= b)
        near = np.isclose(s, q, rtol=0, atol=1e-9)  # rounding at the edge only
        assert np.array_equal(inside[~near], (s <= q)[~near])


@pytest.mark.parametrize("score", INTERVAL_SCORES)
def test_split_conformal_volume_intervals_are_valid(score):
    """Heteroscedastic volumes (the error grows with the boundary, as a model's does): coverage
    ≥ 1 − α over many random calibration sets, within 3 SE."""
    rng = np.random.default_rng(11)
    alpha, n, reps, m_test = 0.1, 30, 1500, 20
    covered, widths = [], []
    for _ in range(reps):
        size = rng.uniform(20, 200, n + m_test)
        sd = 0.05 * size + 1
        truth = size + rng.normal(0, 1, size.size) * sd * rng.choice([0.5, 1.5], size.size)
        est, lo, hi = size, size - sd, size + sd
        fit = fit_interval(truth[:n], est[:n], alpha, score=score, spread=sd[:n], lower=lo[:n], upper=hi[:n])
        a, b = fit.bounds(est[n:], spread=sd[n:], lower=lo[n:], upper=hi[n:])
        covered.append(np.mean((truth[n:] >= a) & (truth[n:] <= b)))
        widths.append(np.corrcoef(size[n:], b - a)[0, 1] if score != "abs" else 0.0)
    cover = float(np.mean(covered))
    se = float(np.std(covered, ddof=1) / math.sqrt(reps))
    assert cover >= 1 - alpha - 3 * se, f"{score}: coverage {cover:.4f} (se {se:.4f})"
    assert cover < 1 - alpha + 2 / (n + 1) + 3 * se  # the conformal upper bound: not vacuous
    if score != "abs":
        assert np.mean(widths) > 0.9  # the width follows the size of the structure


def test_interval_errors_and_statement():
    with pytest.raises(SegcpError, match="unknown interval score"):
        fit_interval([1.0] * 20, [1.0] * 20, 0.1, score="log")
    with pytest.raises(SegcpError, match="needs spread"):
        fit_interval([1.0] * 20, [1.0] * 20, 0.1, score="scaled")
    with pytest.raises(SegcpError, match="positive"):
        fit_interval([1.0] * 20, [1.0] * 20, 0.1, spread=[0.0] * 20)
    with pytest.raises(SegcpError, match="lower > upper"):
        fit_interval([1.0] * 20, score="cqr", lower=[2.0] * 20, upper=[1.0] * 20)
    with pytest.raises(SegcpError, match="19 values of estimate for 20"):
        fit_interval([1.0] * 20, [1.0] * 19, 0.1, score="abs")
    with pytest.raises(SegcpError, match="needs at least 9"):
        fit_interval([1.0] * 5, [1.0] * 5, 0.1, score="abs")
    fit = fit_interval(np.arange(20.0), np.arange(20.0) + 1, 0.1, score="abs")
    assert fit.q == 1.0 and fit.guarantee.startswith("P(value in [lower, upper]) >= 0.9")


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_ejection_fraction_bounds_hold_every_ef_inside(seed):
    rng = np.random.default_rng(seed)
    edl, esl = rng.uniform(50, 150), rng.uniform(10, 60)
    edu, esu = edl + rng.uniform(0, 40), esl + rng.uniform(0, 40)
    lo, hi = ejection_fraction_bounds(edl, edu, esl, esu)
    for _ in range(20):
        ef = ejection_fraction(rng.uniform(edl, edu), rng.uniform(esl, esu))
        assert lo - 1e-12 <= ef <= hi + 1e-12
    assert ejection_fraction_bounds(0.0, 10.0, 1.0, 2.0)[0] == -np.inf


def test_ejection_fraction_and_its_spread():
    assert ejection_fraction(100.0, 40.0) == pytest.approx(0.6)
    assert np.isnan(ejection_fraction(0.0, 0.0))
    ed, es, s_ed, s_es = 120.0, 50.0, 3.0, 2.0
    h = 1e-4  # the delta method's gradient is EF's
    d_ed = (ejection_fraction(ed + h, es) - ejection_fraction(ed - h, es)) / (2 * h)
    d_es = (ejection_fraction(ed, es + h) - ejection_fraction(ed, es - h)) / (2 * h)
    want = math.sqrt((d_ed * s_ed) ** 2 + (d_es * s_es) ** 2)
    assert ejection_fraction_spread(ed, es, s_ed, s_es) == pytest.approx(want, rel=1e-6)


@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.sampled_from([(6, 7), (3, 4, 5)]),
    ties=st.booleans(),
    inf=st.booleans(),
    frac=st.sampled_from([0.0, 0.1, 0.5, 1.0]),
)
def test_band_volume_score_is_the_scanned_smallest_lambda(seed, shape, ties, inf, frac):
    t, _ = signed_case(seed, shape, ties, inf, 0.3)
    count = round(frac * t.size)
    v = candidates_of(t)
    probes = probes_of(v)
    ok = np.array([np.count_nonzero(t < -lam) <= count <= np.count_nonzero(t <= lam) for lam in probes])
    assert band_volume_score(t, count) == scanned_score(ok, probes, v)
    with pytest.raises(SegcpError, match="a count of"):
        band_volume_score(t, t.size + 1)
