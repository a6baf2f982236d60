"""Monitoring (segcp.calibration.monitor), checked statistically on synthetic streams.

Exchangeable repeats: the martingale, the two-sample test and the risk alarm must stay silent in
at least 1 − level of them (the alarm rate ≤ level + 3·SE, SE = √(level(1 − level)/R)); the
confidence sequence must hold the true risk at every t in ≥ 1 − δ of them. Under a shift each
must fire in ≥ 90 % of repeats; the number of new cases needed is recorded in docs/ltt.md.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from segcp.calibration import LossCurves, fnr_curve
from segcp.calibration.monitor import (
    case_statistics,
    conformal_pvalues,
    exchangeability_martingale,
    required_lambda,
    risk_track,
    simple_jumper,
    two_sample_shift,
)
from segcp.errors import SegcpError

REPEATS = 240


def bound(level: float, repeats: int = REPEATS) -> float:
    return level + 3 * math.sqrt(level * (1 - level) / repeats)


def test_conformal_pvalues_are_uniform_under_exchangeability():
    rng = np.random.default_rng(0)
    # heavy ties (5 values): the smoothing keeps them uniform (over the reference's draw too)
    p = np.concatenate([conformal_pvalues(rng.integers(0, 5, 50).astype(float), rng.integers(0, 5, 40).astype(float), seed=i) for i in range(100)])
    assert p.min() >= 0 and p.max() <= 1
    counts = np.histogram(p, bins=10, range=(0, 1))[0]
    expected = p.size / 10
    assert np.all(np.abs(counts - expected) < 5 * math.sqrt(expected))
    # the rank against the reference and the earlier new cases, by hand, without ties
    q = conformal_pvalues([1.0, 3.0], [2.0, 0.5, 5.0], seed=0)
    u = np.random.default_rng(0).random(3)
    assert np.allclose(q, [(1 + u[0]) / 3, (3 + u[1]) / 4, (0 + u[2]) / 5])


def test_martingale_is_silent_on_exchangeable_streams_and_fires_under_a_shift():
    level = 0.1
    false, fired, delays = 0, 0, []
    for i in range(REPEATS):
        rng = np.random.default_rng((1, i))
        ref = rng.normal(size=60)
        false += exchangeability_martingale(ref, rng.normal(size=150), level, seed=i).alarm
        shifted = exchangeability_martingale(ref, rng.normal(1.0, 1.0, size=150), level, seed=i)
        fired += shifted.alarm
        if shifted.alarm:
            delays.append(shifted.alarm_at)
    assert false / REPEATS <= bound(level), false / REPEATS
    assert fired / REPEATS >= 0.9, fired / REPEATS
    assert 5 <= np.median(delays) <= 60  # measured: median 24 cases for a one-SD shift


def test_simple_jumper_is_a_martingale_of_uniform_pvalues():
    rng = np.random.default_rng(2)
    final = np.array([simple_jumper(rng.random(50))[-1] for _ in range(2000)])
    assert abs(final.mean() - 1.0) < 4 * final.std() / math.sqrt(final.size)
    # all-small p-values: the ε = −1 bettor grows like 1.5^t
    path = simple_jumper(np.zeros(20), jump=0.01)
    assert path[-1] > 1.5**20 / 3 * 0.8 and np.all(np.diff(path) > 0)
    with pytest.raises(SegcpError, match="jump must be in"):
        simple_jumper([0.5], jump=0.0)
    with pytest.raises(SegcpError, match="p-values must lie"):
        simple_jumper([1.5])


def test_risk_confidence_sequence_holds_at_every_time_and_alarms_under_harm():
    delta, alpha, repeats = 0.1, 0.1, 150
    missed, false, fired, delays = 0, 0, 0, []
    for i in range(repeats):
        rng = np.random.default_rng((3, i))
        mu = [0.05, 0.1, 0.3][i % 3]
        x = rng.beta(1, (1 - mu) / mu, 200)  # continuous losses in [0, 1] with mean mu
        track = risk_track(x, alpha, delta)
        # a running intersection: the bounds only tighten (they need not hold the running mean)
        assert np.all(np.diff(track.upper) <= 1e-12) and np.all(np.diff(track.lower) >= -1e-12)
        assert np.all(track.lower <= track.upper)
        missed += bool(np.any((track.lower > mu) | (track.upper < mu)))
        if mu == 0.3:
            fired += track.alarm
            if track.alarm:
                delays.append(track.alarm_at)
        else:
            false += track.alarm  # only when the lower bound passed a true risk ≤ α: a miss
    assert missed / repeats <= bound(delta, repeats), missed / repeats
    assert false <= missed
    assert fired / (repeats // 3) >= 0.9
    assert np.median(delays) <= 100  # measured: median 36 cases for a risk of 0.3 against α = 0.1
    with pytest.raises(SegcpError, match="losses must lie in"):
        risk_track([1.5], 0.1)
    with pytest.raises(SegcpError, match="at least one"):
        risk_track([], 0.1)


def test_two_sample_shift_with_holm_over_statistics():
    level = 0.1
    false, fired = 0, 0
    for i in range(REPEATS):
        rng = np.random.default_rng((4, i))
        base = rng.normal(size=(3, 80))
        ref = {"relative_size": base[0], "peak_probability": base[0] * 0.5 + base[1], "score_q1": base[2]}  # dependent
        new_base = rng.normal(size=(3, 60))
        same = {"relative_size": new_base[0], "peak_probability": new_base[0] * 0.5 + new_base[1], "score_q1": new_base[2]}
        moved = dict(same, relative_size=new_base[0] * 2.0 + 0.8)  # the sets grew
        false += two_sample_shift(ref, same, level).alarm
        fired += two_sample_shift(ref, moved, level).alarm
    assert false / REPEATS <= bound(level), false / REPEATS
    assert fired / REPEATS >= 0.9, fired / REPEATS
    res = two_sample_shift({"a": [1, 2, 3, np.nan], "b": [0, 0, 1]}, {"a": [1, 2], "b": [5, 6, 7], "c": [1]}, 0.5, test="mannwhitney")
    assert res.statistics == ("a", "b") and res.pvalues.shape == (2,) and res.test == "mannwhitney"
    with pytest.raises(SegcpError, match="unknown test"):
        two_sample_shift({"a": [1]}, {"a": [1]}, test="t")
    with pytest.raises(SegcpError, match="share no statistic"):
        two_sample_shift({"a": [1]}, {"b": [1]})


def test_required_lambda_is_the_first_lambda_meeting_the_level():
    rng = np.random.default_rng(5)
    curves = LossCurves.concat([fnr_curve(rng.random(int(rng.integers(0, 30)))) for _ in range(50)])
    got = required_lambda(curves, 0.1)
    for i in range(curves.n):
        b = np.concatenate([[-np.inf], curves[i].breakpoints])
        ok = b[curves[i].evaluate(b)[0] <= 0.1 + 1e-9]
        assert got[i] == (ok[0] if ok.size else np.inf)


def test_case_statistics():
    r = np.array([[0.1, 0.2], [0.6, np.inf]])
    p = np.array([[0.9, 0.8], [0.4, 0.0]])
    s = case_statistics(r, 0.5, probs=p)
    assert s["set_fraction"] == 0.5 and s["relative_size"] == 1.0 and s["peak_probability"] == 0.9
    assert s["score_q1"] == pytest.approx(np.quantile([0.1, 0.2, 0.6], 0.01))
    assert case_statistics(r, 0.5, model_mask=np.zeros((2, 2), bool))["relative_size"] == 2.0
    assert "relative_size" not in case_statistics(r, 0.5)
