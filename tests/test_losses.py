"""The loss registry (segcp.losses): every loss's step function against its definition.

For each loss, :meth:`Loss.values` at every candidate λ (and between candidates, and below the
first) must equal :meth:`Loss.set_loss` of the set {r ≤ λ} (of the pair {t < −λ}, {t ≤ λ} for
the losses that read a signed score t) (brute force over random 2D/3D maps
with ties and +inf scores); ``candidates`` must be exactly where the loss changes; monotone
losses' CRC curves must be non-increasing and agree with ``values``. ``set_loss`` itself is
checked against a naive count written here. ``fnr`` and ``quantile`` must give today's curves
bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from segcp.calibration import LossCurves, coverage_quantile_score, fnr_curve, zero_one_curve
from segcp.calibration.ltt import StepLosses
from segcp.cases import masked_values
from segcp.errors import SegcpError
from segcp.losses import available_losses, covers, get_loss, loss_class
from segcp.methods import Case, ThresholdMethod

SHAPES = [(6, 7), (9, 5), (3, 4, 5), (2, 6, 6)]
LOSSES = [
    ("fnr", {}),
    ("quantile", {"tau": 0.7}),
    ("quantile", {"tau": 1.0}),
    ("lesion-fnr", {}),
    ("lesion-fnr", {"connectivity": 2, "min_overlap": 0.5}),
    ("lesion-fnr", {"min_overlap": 1.0, "min_size": 2.0}),
    ("fdr", {}),
    ("fdr", {"empty_set": 1.0}),
    ("band", {}),  # tau < 1: its monotone loss is above the pointwise one by design (tests/test_band.py)
    ("band-risk", {}),
]


def random_case(seed: int, shape: tuple[int, ...], ties: bool, inf: bool, density: float) -> tuple[np.ndarray, np.ndarray]:
    """A score map (float64, with ties from a few levels and some +inf) and a blobby truth mask."""
    rng = np.random.default_rng(seed)
    r = rng.integers(0, 6, shape).astype(np.float64) / 5 if ties else rng.random(shape)
    if inf:
        r[rng.random(shape) < 0.15] = np.inf
    y = rng.random(shape) < density
    return r, y


def probe_lambdas(r: np.ndarray, cand: np.ndarray) -> np.ndarray:
    """Every candidate, a point between each pair, one below all and one above all."""
    finite = r[np.isfinite(r)]
    lo = min(finite.min() if finite.size else 0.0, cand.min() if cand.size else 0.0) - 1.0
    hi = max(finite.max() if finite.size else 0.0, cand.max() if cand.size else 0.0) + 1.0
    mids = (cand[1:] + cand[:-1]) / 2 if cand.size > 1 else np.zeros(0)
    return np.unique(np.concatenate([[lo, hi], cand, mids]))


@pytest.mark.parametrize("name,params", LOSSES, ids=[f"{n}{p}" for n, p in LOSSES])
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.sampled_from(SHAPES),
    ties=st.booleans(),
    inf=st.booleans(),
    density=st.sampled_from([0.0, 0.1, 0.4, 0.9]),
)
def test_values_match_the_definition_at_every_candidate(name, params, seed, shape, ties, inf, density):
    loss = get_loss(name, **params)
    r, y = random_case(seed, shape, ties, inf, density)
    if loss.score == "signed":  # a signed score t in [-1, 1], -inf too: the sets are (t < -lam, t <= lam)
        r = np.where(np.isinf(r), np.where(np.arange(r.size).reshape(r.shape) % 2 == 0, np.inf, -np.inf), 2 * r - 1)
    cand = loss.candidates(r, y)
    assert cand.dtype == np.float64 and np.all(np.diff(cand) > 0) and np.all(np.isfinite(cand))
    lams = probe_lambdas(r, cand)
    got = loss.values(r, y, lams)
    want = np.array([loss.set_loss(loss.sets_at(r, lam), y) for lam in lams])
    np.testing.assert_array_equal(got, want)  # exact: the levels are the same integer ratios
    assert np.all((got >= 0) & (got <= loss.bound))
    # candidates are exactly where the loss changes: it differs just before each of them ...
    before = np.array([loss.set_loss(loss.sets_at(r, np.nextafter(c, -np.inf)), y) for c in cand])
    at = np.array([loss.set_loss(loss.sets_at(r, c), y) for c in cand])
    assert np.all(at != before)
    # ... and nowhere else: constant between consecutive candidates (the midpoints above)
    if loss.monotone:
        assert np.all(np.diff(got) <= 0)
        curve = loss.curve(r, y)
        assert curve.n == 1 and np.all(curve.drops >= 0)
        np.testing.assert_allclose(curve.evaluate(lams)[0], got, rtol=0, atol=1e-12)


def naive_lesion_fnr(pred: np.ndarray, y: np.ndarray, connectivity: int, min_overlap: float, min_size: float) -> float:
    """The definition, counted component by component with the ⌈ω·m⌉ rule spelled out."""
    labels, k = ndimage.label(y, structure=ndimage.generate_binary_structure(y.ndim, connectivity))
    lesions = [labels == j for j in range(1, k + 1) if (labels == j).sum() >= min_size]
    if not lesions:
        return 0.0
    missed = 0
    for comp in lesions:
        m, hit = int(comp.sum()), int((pred & comp).sum())
        need = max(1, math.ceil(min_overlap * m - 1e-9))
        missed += hit < need
    return missed / len(lesions)


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.sampled_from(SHAPES),
    conn=st.integers(1, 2),
    omega=st.sampled_from([0.0, 0.3, 0.5, 1.0]),
    min_size=st.sampled_from([0.0, 2.0, 3.0]),
)
def test_lesion_set_loss_is_the_naive_count(seed, shape, conn, omega, min_size):
    rng = np.random.default_rng(seed)
    y = rng.random(shape) < 0.3
    pred = rng.random(shape) < 0.5
    loss = get_loss("lesion-fnr", connectivity=conn, min_overlap=omega, min_size=min_size)
    assert loss.set_loss(pred, y) == naive_lesion_fnr(pred, y, conn, omega, min_size)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shape=st.sampled_from(SHAPES), empty=st.sampled_from([0.0, 1.0]))
def test_fdr_set_loss_is_the_naive_count(seed, shape, empty):
    rng = np.random.default_rng(seed)
    y = rng.random(shape) < 0.3
    pred = rng.random(shape) < rng.choice([0.0, 0.5])
    size = int(pred.sum())
    want = empty if size == 0 else sum(bool(p and not t) for p, t in zip(pred.ravel(), y.ravel())) / size
    assert get_loss("fdr", empty_set=empty).set_loss(pred, y) == want


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), shape=st.sampled_from(SHAPES), tau=st.sampled_from([0.3, 0.5, 0.9, 1.0]))
def test_fnr_and_quantile_give_todays_curves_bit_for_bit(seed, shape, tau):
    rng = np.random.default_rng(seed)
    probs = rng.random(shape)
    y = rng.random(shape) < 0.3
    case = Case("c", probs, mask=y)
    family = ThresholdMethod()
    r = family.score_map(case)
    for mine, today in [
        (get_loss("fnr").curve(r, y), family.loss_curve(case, "fnr")),
        (get_loss("fnr").curve(r, y), fnr_curve(masked_values(r, y))),
        (get_loss("quantile", tau=tau).curve(r, y), family.loss_curve(case, "quantile", tau=tau)),
        (get_loss("quantile", tau=tau).curve(r, y), zero_one_curve(coverage_quantile_score(masked_values(r, y), tau))),
    ]:
        for field in ("starts", "offsets", "breakpoints", "drops"):
            a, b = getattr(mine, field), getattr(today, field)
            assert a.dtype == b.dtype and np.array_equal(a, b), field


def test_registry_and_declarations():
    assert {"fnr", "quantile", "lesion-fnr", "fdr"} <= set(available_losses())
    for name in ("fnr", "quantile", "lesion-fnr", "fdr"):
        cls = loss_class(name)
        assert cls.name == name and cls.bound == 1.0 and cls.truth == "mask" and cls.summary and cls.risk
        assert cls.order in ("ascending", "descending")
    assert [loss_class(n).monotone for n in ("fnr", "quantile", "lesion-fnr", "fdr")] == [True, True, True, False]
    assert loss_class("quantile").binary and not loss_class("fdr").binary
    assert loss_class("fdr").order == "ascending"
    lesion = get_loss("lesion-fnr", connectivity=2, min_overlap=0.25)
    assert lesion.params() == {"connectivity": 2, "min_overlap": 0.25, "min_size": 0.0}
    assert repr(lesion) == "LesionFNRLoss(connectivity=2, min_overlap=0.25, min_size=0.0)"
    assert get_loss("lesion-fnr", connectivity=2.0).connectivity == 2
    with pytest.raises(SegcpError, match="unknown loss 'dice'; available: band, band-risk, fdr, fnr, lesion-fnr, quantile"):
        get_loss("dice")
    with pytest.raises(SegcpError, match="unknown parameter"):
        get_loss("fnr", tau=0.5)
    with pytest.raises(SegcpError, match="connectivity must be in"):
        get_loss("lesion-fnr", connectivity=4)
    with pytest.raises(SegcpError, match="tau must be in"):
        get_loss("quantile", tau=0.0)
    with pytest.raises(SegcpError, match="empty_set must be in"):
        get_loss("fdr", empty_set=2)


def test_statements():
    assert get_loss("fnr").statement(0.1) == "E[FNR] <= 0.1 (conformal risk control, marginal over exchangeable images)"
    assert get_loss("quantile", tau=0.9).statement(0.1).startswith("P(coverage >= 0.9) >= 0.9")
    assert get_loss("lesion-fnr").statement(0.2).startswith("E[fraction of lesions missed] <= 0.2")
    assert get_loss("fdr").statement(0.1, 0.05).startswith("P(E[FDR] <= 0.1) >= 0.95 over the calibration set (Learn then Test")
    with pytest.raises(SegcpError, match="not monotone"):
        get_loss("fdr").statement(0.1)
    with pytest.raises(SegcpError, match="not monotone"):
        get_loss("fdr").curve(np.zeros((2, 2)), np.ones((2, 2), bool))


def test_bad_inputs_are_one_line_errors():
    loss = get_loss("fdr")
    with pytest.raises(SegcpError, match="the score map has shape"):
        loss.values(np.zeros((3, 3)), np.zeros((3, 4), bool), [0.5])
    with pytest.raises(SegcpError, match="NaN or -inf"):
        loss.candidates(np.full((3, 3), np.nan), np.zeros((3, 3), bool))
    with pytest.raises(SegcpError, match="NaN or -inf"):
        get_loss("lesion-fnr").curve(np.full((3, 3), -np.inf), np.ones((3, 3), bool))
    with pytest.raises(SegcpError, match="2D or 3D"):
        get_loss("fnr").curve(np.zeros(4), np.ones(4, bool))
    with pytest.raises(SegcpError, match="connectivity 3 needs"):
        get_loss("lesion-fnr", connectivity=3).curve(np.zeros((3, 3)), np.ones((3, 3), bool))
    with pytest.raises(SegcpError, match="spacing must be 2 positive"):
        get_loss("lesion-fnr", min_size=2).curve(np.zeros((3, 3)), np.ones((3, 3), bool), spacing=(1.0, -1.0))


def test_lesion_fnr_2d_3d_connectivity_size_and_overlap():
    # 3D: two voxels touching by a corner only are one lesion at connectivity 3, two at 1
    y = np.zeros((3, 3, 3), bool)
    y[0, 0, 0] = y[1, 1, 1] = True
    r = np.full(y.shape, 0.9)
    r[0, 0, 0], r[1, 1, 1] = 0.2, 0.6
    assert get_loss("lesion-fnr", connectivity=1).values(r, y, [0.2, 0.6]).tolist() == [0.5, 0.0]
    assert get_loss("lesion-fnr", connectivity=3).values(r, y, [0.2, 0.6]).tolist() == [0.0, 0.0]
    assert get_loss("lesion-fnr", connectivity=3, min_overlap=1.0).values(r, y, [0.2, 0.6]).tolist() == [1.0, 0.0]
    # min_size in physical units: a 2-voxel lesion of 2 mm² at spacing (1, 1) and 8 mm² at (2, 2)
    y2 = np.zeros((4, 6), bool)
    y2[0, 0:2] = True  # 2 voxels
    y2[2:4, 3:6] = True  # 6 voxels
    r2 = np.where(y2, 0.5, 0.9)
    r2[0, 0:2] = 0.1
    small = get_loss("lesion-fnr", min_size=5.0)
    assert small.candidates(r2, y2).tolist() == [0.5]  # the 2-voxel component is not a lesion
    assert small.candidates(r2, y2, spacing=(2.0, 2.0)).tolist() == [0.1, 0.5]
    assert small.values(r2, y2, [0.1], spacing=2.0).tolist() == [0.5]
    # empty truth: no lesion, loss 0 everywhere; a lesion whose scores are all +inf is never reached
    assert get_loss("lesion-fnr").values(r2, np.zeros_like(y2), [-1.0, 2.0]).tolist() == [0.0, 0.0]
    r3 = np.where(y2, np.inf, 0.0)
    r3[0, 0:2] = 0.3
    curve = get_loss("lesion-fnr").curve(r3, y2)
    assert curve.breakpoints.tolist() == [0.3] and curve.ends().tolist() == [0.5]


def test_fdr_conventions():
    r = np.array([[0.1, 0.2], [0.3, 0.4]])
    y = np.zeros((2, 2), bool)
    assert get_loss("fdr").values(r, y, [0.0, 0.1, 0.4]).tolist() == [0.0, 1.0, 1.0]  # empty truth: any set is all false
    assert get_loss("fdr", empty_set=1).values(r, y, [0.0]).tolist() == [1.0]
    # +inf scores never enter: the set at λ = 10 is the three finite pixels
    r[1, 1] = np.inf
    y[0, 0] = True
    assert get_loss("fdr").values(r, y, [10.0]).tolist() == [2 / 3]


def test_covers_is_coverage_quantile_scores_rule():
    for m in range(1, 12):
        for tau in (0.1, 0.25, 1 / 3, 0.5, 0.7, 1.0):
            for hits in range(m + 1):
                hit = np.arange(m) < hits
                scores = np.where(hit, 0.0, 1.0)
                assert covers(hit, tau) == (coverage_quantile_score(scores, tau) <= 0.0)
            assert covers(np.zeros(m, bool), 0.0) is False and covers(np.eye(1, m, dtype=bool)[0], 0.0) is True
    assert covers(np.zeros(0, bool), 0.5) and covers(np.zeros(0, bool), 0.0)


def test_steps_and_curves_concatenate_for_many_cases():
    rng = np.random.default_rng(3)
    cases = [(rng.random((8, 8)), rng.random((8, 8)) < 0.3) for _ in range(5)]
    for name in ("fnr", "lesion-fnr", "fdr"):
        loss = get_loss(name)
        steps = StepLosses.concat([loss.steps(r, y) for r, y in cases])
        lams = np.linspace(-0.1, 1.1, 25)
        want = np.stack([loss.values(r, y, lams) for r, y in cases])
        np.testing.assert_array_equal(steps.evaluate(lams), want)
        np.testing.assert_array_equal(steps.take([4, 0]).evaluate(lams), want[[4, 0]])
        if loss.monotone:
            curves = LossCurves.concat([loss.curve(r, y) for r, y in cases])
            np.testing.assert_allclose(StepLosses.from_curves(curves).evaluate(lams), want, atol=1e-12)
