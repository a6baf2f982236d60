"""Set methods and the ConformalSegmenter estimator."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from segcp import ConformalSegmenter
from segcp.errors import SegcpError
from segcp.methods import Case, ThresholdMethod, available_methods, binarize_mask, get_method
from segcp.metrics import fnr

shapes = st.one_of(st.tuples(st.integers(2, 12), st.integers(2, 12)), st.tuples(st.integers(2, 6), st.integers(2, 6), st.integers(2, 6)))


@st.composite
def cases(draw):
    shape = draw(shapes)
    probs = draw(arrays(np.float32, shape, elements=st.floats(0, 1, width=32)))
    mask = draw(arrays(np.bool_, shape))
    return Case("c", probs, mask=mask)


@settings(max_examples=150, deadline=None)
@given(cases(), st.lists(st.floats(-0.2, 1.2), min_size=2, max_size=6))
def test_threshold_sets_are_nested(case, lams):
    method = ThresholdMethod()
    lams = sorted(lams)
    sets = [method.predict(case, lam) for lam in lams]
    for small, big in zip(sets, sets[1:]):
        assert not np.any(small & ~big)
    assert method.predict(case, 1.0).all()  # λ = 1 is the whole image


@settings(max_examples=150, deadline=None)
@given(cases())
def test_fnr_curve_matches_the_sets_it_describes(case):
    method = ThresholdMethod()
    curve = method.loss_curve(case)
    # At every breakpoint, just below it and at the ends, the curve equals the FNR of C_λ.
    b = curve.breakpoints
    lams = np.concatenate([b, np.nextafter(b, -np.inf), [-1.0, 0.0, 1.0]])
    for lam in lams:
        assert curve.evaluate(lam)[0] == pytest.approx(fnr(method.predict(case, lam), case.mask), abs=1e-12)


def test_threshold_semantics_and_probability_dtypes():
    probs = np.array([[0.9, 0.5], [0.49, 0.0]], dtype=np.float32)
    case = Case("x", probs, mask=np.array([[1, 1], [0, 0]], bool))
    # λ = 0.5 → prob ≥ 0.5 (the float32 value 0.49 stays out).
    assert ThresholdMethod().predict(case, 0.5).tolist() == [[True, True], [False, False]]
    cs = ConformalSegmenter("threshold", alpha=0.5).calibrate([case] * 3)
    # Two truth pixels with r = 0.1 and 0.5; n = 3, target 0.5·4 − 1 = 1 → FNR ≤ 1/3 → λ̂ = 0.5.
    assert cs.lambda_ == pytest.approx(0.5)


def test_case_validation_messages():
    with pytest.raises(SegcpError, match="case a: probability map contains NaN"):
        Case("a", np.array([[0.1, np.nan]]))
    with pytest.raises(SegcpError, match=r"must lie in \[0, 1\]"):
        Case("a", np.array([[0.1, 1.5]]))
    with pytest.raises(SegcpError, match="does not match"):
        Case("a", np.zeros((3, 3)), mask=np.zeros((3, 4), bool))
    with pytest.raises(SegcpError, match="2D or 3D"):
        Case("a", np.zeros(5))
    with pytest.raises(SegcpError, match="spacing"):
        Case("a", np.zeros((3, 3)), spacing=(1.0,))


def test_binarize_mask():
    assert binarize_mask(np.array([0, 255]), None, "m").tolist() == [False, True]
    assert binarize_mask(np.array([0, 1, 1]), None, "m").tolist() == [False, True, True]
    assert binarize_mask(np.array([0, 1, 3]), 3, "m").tolist() == [False, False, True]
    with pytest.raises(SegcpError, match=r"m: mask is not binary \(values \{0, 1, 2, 3\}\); pass --label"):
        binarize_mask(np.array([0, 1, 2, 3]), None, "m")
    with pytest.raises(SegcpError, match="non-integer"):
        binarize_mask(np.array([0.0, 0.5]), None, "m")
    for empty in (np.zeros(0), np.zeros((3, 0), dtype=bool)):
        with pytest.raises(SegcpError, match=r"m: the mask is empty \(shape"):
            binarize_mask(empty, None, "m")


def test_registry_and_repr():
    assert "threshold" in available_methods()
    assert repr(get_method("threshold")) == "ThresholdMethod(normalize='none', norm_floor=0.1, norm_quantile=1.0, norm_level=0.5)"
    with pytest.raises(SegcpError, match="unknown method 'nope'"):
        get_method("nope")
    with pytest.raises(SegcpError, match="bad parameters"):
        get_method("threshold", k=3)


def test_segmenter_round_trip_and_guarantees():
    rng = np.random.default_rng(0)
    cases_ = []
    for i in range(40):
        mask = np.zeros((16, 16), bool)
        mask[4:10, 5:12] = True
        probs = np.clip(mask * 0.8 + rng.normal(0, 0.2, mask.shape), 0, 1)
        cases_.append(Case(f"c{i}", probs, mask=mask))
    cs = ConformalSegmenter("threshold", alpha=0.1).calibrate(cases_)
    assert cs.n_ == 40 and 0.0 <= cs.lambda_ <= 1.0
    assert cs.result_.bound <= 0.1 + 1e-9
    again = ConformalSegmenter.from_dict(cs.to_dict())
    for c in cases_[:5]:
        np.testing.assert_array_equal(again.predict(c), cs.predict(c))
    q = ConformalSegmenter("threshold", alpha=0.1, guarantee="quantile", tau=0.9).calibrate(cases_)
    covered = np.mean([(q.predict(c) & c.mask).sum() / c.mask.sum() >= 0.9 for c in cases_])
    assert covered >= 0.9 - 1e-12  # the quantile is an upper order statistic of the calibration scores
    assert "P(coverage >= 0.9) >= 0.9" in q.to_dict()["statement"]
    with pytest.raises(SegcpError, match="not calibrated"):
        ConformalSegmenter().predict(cases_[0])
    with pytest.raises(SegcpError, match="unknown guarantee"):
        ConformalSegmenter(guarantee="mean").calibrate(cases_)
    with pytest.raises(SegcpError, match="missing field 'lambda'"):
        ConformalSegmenter.from_dict({"method": "threshold", "alpha": 0.1, "n": 3})


def test_declared_capabilities_of_families():
    """What code outside methods/ may ask a family, declared on SetFamily (no getattr/hasattr)."""
    from dataclasses import dataclass
    from typing import ClassVar

    from segcp.methods import SegmentationSetFamily

    thr, morph, aps = get_method("threshold"), get_method("morph"), get_method("aps", beta=0.7)
    assert thr.agreement_level is None and morph.agreement_level is None
    assert aps.agreement_level == 0.7
    assert thr.lambda_is_threshold and not morph.lambda_is_threshold and not aps.lambda_is_threshold
    assert not thr.slow_state and not thr.shares_state_on_disk
    thr.precompute([])  # nothing to do, and no error
    assert thr.with_threads(3) is thr  # no run-time threads: unchanged
    rw = get_method("rwcp", encoder="fallback")
    assert rw.slow_state and rw.shares_state_on_disk and not get_method("rwcp", encoder="fallback", cache=False).shares_state_on_disk
    assert rw.with_threads(2).threads == 2 and rw.with_threads(2).params() == rw.params()
    assert get_method("rwcp", encoder="fallback", threads=1).with_threads(2).threads == 1  # the user's choice stays

    @dataclass(repr=False)
    class NoBeta(SegmentationSetFamily):
        name: ClassVar[str] = "nobeta"

        def score(self, item, truth=None):
            return 0.0

        def sample(self, item, lam, n_draws, seed=0):
            return np.zeros((n_draws, 1), np.int64)

    with pytest.raises(TypeError, match="declares its agreement level 'beta'"):
        NoBeta()
