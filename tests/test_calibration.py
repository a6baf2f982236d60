"""Exact CRC and the conformal quantile: properties against brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from segcp.calibration import (
    TOL,
    LossCurves,
    check_calibration_size,
    conformal_quantile,
    coverage_quantile_score,
    crc_lambda,
    fnr_curve,
    min_calibration_size,
    zero_one_curve,
)
from segcp.errors import SegcpError

# Scores drawn from a small grid so that ties across and within images are frequent.
score = st.one_of(st.integers(0, 20).map(lambda k: k / 20), st.floats(0, 1, allow_nan=False))
image_scores = st.lists(score, min_size=0, max_size=12)
alphas = st.sampled_from([0.05, 0.1, 0.2, 0.25, 0.3, 0.5])


def brute_force_lambda(curves: LossCurves, alpha: float, lambda_min: float) -> float:
    """Smallest candidate λ (lambda_min or a breakpoint) whose bound holds, by counting."""
    n = curves.n
    target = alpha * (n + 1) - 1
    candidates = np.concatenate([[lambda_min], np.unique(curves.breakpoints)])
    for lam in candidates:
        total = math.fsum(curves.evaluate(lam).tolist())
        if total <= target + TOL:
            return float(lam)
    raise AssertionError("no candidate satisfies the bound")


def sorted_reduce_lambda(curves: LossCurves, alpha: float) -> float:
    """The reduce as it was before the selection (argsort of all breakpoints, cumulative totals)."""
    target = alpha * (curves.n + 1) - 1
    order = np.argsort(curves.breakpoints)
    totals = float(curves.starts.sum()) - np.cumsum(curves.drops[order])
    return float(curves.breakpoints[order][np.flatnonzero(totals <= target + TOL)[0]])


@settings(max_examples=200, deadline=None)
@given(st.lists(image_scores, min_size=19, max_size=45), alphas, st.sampled_from([1, 2, 5, 16]))
def test_selection_rounds_equal_brute_force(per_image, alpha, sort_below):
    """The weighted quickselect with its partition rounds forced (tiny sort threshold)."""
    import segcp.calibration.crc as crc

    curves = LossCurves.concat([fnr_curve(s) for s in per_image])
    if curves.n < min_calibration_size(alpha) or not curves.breakpoints.size:
        return
    old = crc._SORT_BELOW
    crc._SORT_BELOW = sort_below
    try:
        res = crc_lambda(curves, alpha, lambda_min=0.0)
    finally:
        crc._SORT_BELOW = old
    assert res.lambda_ == brute_force_lambda(curves, alpha, 0.0)


@pytest.mark.parametrize("seed", range(6))
def test_selection_equals_sorted_reduce_at_scale(seed):
    """λ̂ bit for bit the sorted reduce's on 300 images of ~2000 float32 scores (ties across images)."""
    rng = np.random.default_rng(seed)
    curves = LossCurves.concat(
        [fnr_curve(np.round(rng.random(int(rng.integers(0, 4000))), 4 if i % 3 else 7).astype(np.float32)) for i in range(300)]
    )
    assert curves.breakpoints.size > 4 * 4096  # the partition rounds run
    for alpha in (0.02, 0.1, 0.3):
        res = crc_lambda(curves, alpha)
        assert res.lambda_ == sorted_reduce_lambda(curves, alpha)
        assert res.empirical_risk == pytest.approx(curves.evaluate(res.lambda_).mean(), abs=1e-12)


def test_bracketing_round_keeps_the_answer(monkeypatch):
    """The selection's first round (a sorted strided sample brackets λ̂) with a tiny sample and margin,
    so that the estimate often misses: λ̂ still equals the brute force's, and every round returns one
    contiguous range of values holding λ̂ with the drops below it summed — the low, middle and high
    parts all seen."""
    import segcp.calibration.crc as crc

    seen: dict[str, int] = {}
    real = crc._bracket

    def watched(vals, w, total0, limit):
        kept, kw, below = real(vals, w, total0, limit)
        assert kept.size and np.array_equal(np.sort(kept), np.sort(vals[(vals >= kept.min()) & (vals <= kept.max())]))
        assert below == pytest.approx(float(w[vals < kept.min()].sum()), abs=1e-9)
        part = (
            "low"
            if kept.max() < vals.max() and kept.min() == vals.min()
            else "high"
            if kept.min() > vals.min() and kept.max() == vals.max()
            else "middle"
        )
        seen[part] = seen.get(part, 0) + 1
        return kept, kw, below

    monkeypatch.setattr(crc, "_bracket", watched)
    monkeypatch.setattr(crc, "_SORT_BELOW", 2)
    rng = np.random.default_rng(7)
    for trial in range(240):
        monkeypatch.setattr(crc, "_SAMPLE", int(rng.integers(1, 5)))
        monkeypatch.setattr(crc, "_MARGIN", int(rng.integers(0, 3)))
        per_image = [np.round(rng.random(int(rng.integers(0, 9))), int(rng.integers(1, 3))) for _ in range(int(rng.integers(19, 40)))]
        curves = LossCurves.concat([fnr_curve(s) for s in per_image])
        alpha = float(rng.choice([0.05, 0.1, 0.2, 0.3, 0.5]))
        if curves.n < min_calibration_size(alpha) or not curves.breakpoints.size:
            continue
        assert crc_lambda(curves, alpha, lambda_min=0.0).lambda_ == brute_force_lambda(curves, alpha, 0.0), trial
    assert set(seen) == {"low", "middle", "high"}, seen


@settings(max_examples=300, deadline=None)
@given(st.lists(image_scores, min_size=1, max_size=45), alphas)
def test_crc_equals_brute_force(per_image, alpha):
    curves = LossCurves.concat([fnr_curve(s) for s in per_image])
    if curves.n < min_calibration_size(alpha):
        with pytest.raises(SegcpError, match="needs at least"):
            crc_lambda(curves, alpha, lambda_min=0.0)
        return
    res = crc_lambda(curves, alpha, lambda_min=0.0)
    assert res.lambda_ == brute_force_lambda(curves, alpha, 0.0)
    assert res.bound <= alpha + TOL
    # The risk reported is the risk at λ̂.
    assert res.empirical_risk == pytest.approx(curves.evaluate(res.lambda_).mean(), abs=1e-12)
    # Minimality: the largest breakpoint strictly below λ̂ (if any) violates the bound.
    below = curves.breakpoints[curves.breakpoints < res.lambda_]
    if below.size:
        prev = below.max()
        assert math.fsum(curves.evaluate(prev).tolist()) > alpha * (curves.n + 1) - 1 + TOL


@settings(max_examples=200, deadline=None)
@given(st.lists(image_scores, min_size=1, max_size=30), st.integers(1, 4))
def test_curves_merge_by_concatenation(per_image, n_batches):
    curves = [fnr_curve(s) for s in per_image]
    whole = LossCurves.concat(curves)
    cuts = np.linspace(0, len(curves), n_batches + 1).astype(int)
    batches = [LossCurves.concat(curves[a:b]) for a, b in zip(cuts[:-1], cuts[1:])]
    merged = LossCurves.concat(batches)
    grid = np.linspace(-0.1, 1.1, 57)
    np.testing.assert_allclose(merged.evaluate(grid), whole.evaluate(grid), atol=1e-12)
    np.testing.assert_array_equal(merged.starts, whole.starts)
    assert (merged + LossCurves.empty()).n == whole.n


@settings(max_examples=200, deadline=None)
@given(image_scores, st.booleans())
def test_fnr_curve_is_non_increasing_and_correct(scores, compress):
    curve = fnr_curve(scores, compress=compress)
    grid = np.sort(np.concatenate([np.linspace(-0.5, 1.5, 41), np.asarray(scores, float)]))
    values = curve.evaluate(grid)[0]
    assert np.all(np.diff(values) <= 1e-15)
    # Against the definition: fraction of truth pixels with score > λ.
    r = np.asarray(scores, float)
    expected = [(r > lam).mean() if r.size else 0.0 for lam in grid]
    np.testing.assert_allclose(values, expected, atol=1e-12)
    assert curve.ends()[0] == pytest.approx(0.0, abs=1e-12)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.sampled_from([0.0, 0.25, 0.5, 1.0]), score, st.just(np.inf)), max_size=40))
def test_fnr_curve_compressed_is_np_unique_bit_for_bit(scores):
    """The tie compression is np.unique's (values and counts / m), bit for bit: λ̂ depends on it."""
    curve = fnr_curve(scores)
    r = np.asarray(scores, dtype=np.float64)
    if r.size == 0:
        assert curve.n == 1 and curve.starts[0] == 0.0 and curve.breakpoints.size == 0
        return
    values, counts = np.unique(r[np.isfinite(r)], return_counts=True)
    assert curve.breakpoints.tobytes() == values.tobytes()
    assert curve.drops.tobytes() == (counts.astype(np.float64) / r.size).tobytes()
    assert curve.starts[0] == 1.0


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(score, st.just(np.inf)), min_size=1, max_size=60), alphas)
def test_crc_on_zero_one_curves_is_the_conformal_quantile(scores, alpha):
    n = len(scores)
    if n < min_calibration_size(alpha):
        with pytest.raises(SegcpError):
            conformal_quantile(scores, alpha)
        return
    q = conformal_quantile(scores, alpha)
    k = math.ceil((n + 1) * (1 - alpha) - 1e-9)
    assert q == sorted(scores)[k - 1]
    curves = LossCurves.concat([zero_one_curve(s) for s in scores])
    if np.isinf(q):
        with pytest.raises(SegcpError, match="no lambda satisfies"):
            crc_lambda(curves, alpha)
    else:
        assert crc_lambda(curves, alpha).lambda_ == q


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.integers(1, 40), elements=st.floats(0, 1)), st.sampled_from([1.0, 0.999, 0.99, 0.9, 0.5]))
def test_coverage_quantile_score_is_smallest_covering_lambda(r, tau):
    s = coverage_quantile_score(r, tau)
    assert (r <= s).mean() >= tau - 1e-12
    below = r[r < s]
    if below.size:
        assert (r <= below.max()).mean() < tau


def test_known_values():
    # n = 19, α = 0.1: the 18th smallest score.
    assert conformal_quantile(np.arange(1, 20), 0.1) == 18.0
    # FNR curves: target 0.3·21 − 1 = 5.3; at λ = 0.2 the total is 10·0.5 = 5.
    curves = LossCurves.concat([fnr_curve([0.1, 0.3]), fnr_curve([0.2])] * 10)
    assert crc_lambda(curves, 0.3).lambda_ == 0.2
    assert crc_lambda(curves, 0.2).lambda_ == 0.3


def test_all_empty_truth_gives_lambda_min():
    curves = LossCurves.concat([fnr_curve([])] * 30)
    assert crc_lambda(curves, 0.1, lambda_min=0.0).lambda_ == 0.0


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5, float("nan"), "abc"])
def test_bad_alpha(alpha):
    curves = LossCurves.concat([fnr_curve([0.5])] * 50)
    with pytest.raises(SegcpError, match="alpha"):
        crc_lambda(curves, alpha)


def test_too_few_images_message():
    with pytest.raises(SegcpError, match=r"alpha=0.05 needs at least 19 calibration images .* got 10"):
        check_calibration_size(10, 0.05)
    with pytest.raises(SegcpError, match="calibration set is empty"):
        crc_lambda(LossCurves.empty(), 0.1)
    assert min_calibration_size(0.1) == 9
    assert min_calibration_size(0.2) == 4


def test_unreachable_bound_is_an_error_not_a_full_set():
    curves = LossCurves.concat([zero_one_curve(np.inf)] * 5 + [zero_one_curve(0.5)] * 15)
    with pytest.raises(SegcpError, match="no lambda satisfies"):
        crc_lambda(curves, 0.1)


def test_curve_validation():
    with pytest.raises(SegcpError):
        LossCurves.single([0.1, 0.2], [0.5], 1.0)
    with pytest.raises(SegcpError):
        LossCurves.single([0.1], [-0.5], 1.0)
    with pytest.raises(SegcpError):
        LossCurves.single([np.nan], [0.5], 1.0)
    with pytest.raises(SegcpError):
        zero_one_curve(np.nan)


def test_ends_are_per_image_sums_whatever_comes_before():
    """L_i(+inf) of the last image must not carry the rounding of every drop before it."""
    from segcp.calibration import LossCurves, fnr_curve

    rng = np.random.default_rng(0)
    many = LossCurves.concat([fnr_curve(rng.random(1000)) for _ in range(3000)] + [LossCurves.single([], [], 0.0), fnr_curve([0.5] * 3)])
    ends = many.ends()
    assert ends.shape == (3002,) and np.all(np.abs(ends) <= 1e-12)
    assert ends[-2] == 0.0 and ends[-1] == 0.0
