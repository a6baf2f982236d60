"""Two-sided sets: the families' signed scores, the ``band`` and ``band-risk`` losses, and the
joint calibration of λ_out and λ_in.

Every score is checked by brute force (hypothesis, 2D and 3D maps with ties, ±inf, empty and
full truths): scanning every candidate λ (each distinct ±t, a point between each pair, one below
and one above all) with the loss's own definition of one pair (I, O) must give the smallest λ from
which the band holds at every larger λ — exactly the score the loss computes without scanning.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from segcp.calibration import LossCurves, band_lambdas, conformal_quantile, crc_lambda
from segcp.errors import SegcpError
from segcp.losses import covers, get_loss, loss_class
from segcp.losses.band import inner_precision_ok
from segcp.methods import Case, MorphMethod, ThresholdMethod, get_method
from segcp.methods.base import band_sets
from segcp.methods.normalize import NORMALIZATIONS, ProbabilityFamily

SHAPES = [(6, 7), (9, 5), (3, 4, 5), (2, 6, 6)]


def signed_case(seed: int, shape: tuple[int, ...], ties: bool, inf: bool, density: float) -> tuple[np.ndarray, np.ndarray]:
    """A signed score map in [-1, 1] (ties from a few levels, some ±inf) and a truth mask."""
    rng = np.random.default_rng(seed)
    t = (rng.integers(0, 9, shape) - 4).astype(np.float64) / 4 if ties else rng.uniform(-1, 1, shape)
    if inf:
        t[rng.random(shape) < 0.08] = np.inf
        t[rng.random(shape) < 0.08] = -np.inf
    y = rng.random(shape) < density if density < 1 else np.ones(shape, bool)
    if density not in (0.0, 1.0):  # truths that follow the score, as a model's would
        y = (t + rng.normal(0, 0.4, shape) < 0) if rng.random() < 0.7 else y
    return t, y


def candidates_of(t: np.ndarray) -> np.ndarray:
    """Every value at which a two-sided set of t can change: the distinct finite ±t."""
    f = t[np.isfinite(t)]
    return np.unique(np.concatenate([f, -f]))


def probes_of(v: np.ndarray) -> np.ndarray:
    lo, hi = (v.min() - 1, v.max() + 1) if v.size else (-1.0, 1.0)
    mids = (v[1:] + v[:-1]) / 2 if v.size > 1 else np.zeros(0)
    return np.unique(np.concatenate([[lo, hi], v, mids]))


def scanned_score(ok: np.ndarray, probes: np.ndarray, v: np.ndarray) -> float:
    """The smallest λ from which ``ok`` holds at every larger probe: the first candidate above
    the last failing probe (−inf when it never fails, +inf when it fails above every candidate)."""
    bad = np.flatnonzero(~ok)
    if bad.size == 0:
        return -np.inf
    above = v[v > probes[bad[-1]]]
    return float(above[0]) if above.size else np.inf


# ---------------------------------------------------------------------- band
@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.sampled_from(SHAPES),
    ties=st.booleans(),
    inf=st.booleans(),
    density=st.sampled_from([0.0, 0.2, 0.5, 1.0]),
    tau=st.sampled_from([1.0, 0.9, 0.7, 0.5, 0.2]),
)
def test_band_scores_are_the_scanned_smallest_lambda(seed, shape, ties, inf, density, tau):
    t, y = signed_case(seed, shape, ties, inf, density)
    loss = get_loss("band", tau=tau)
    v = candidates_of(t)
    probes = probes_of(v)
    outer_ok = np.array([covers((t <= lam)[y], tau) for lam in probes])
    inner_ok = np.array([bool(inner_precision_ok(np.count_nonzero((t < -lam) & y), np.count_nonzero(t < -lam), tau)) for lam in probes])
    joint = np.array([loss.set_loss(loss.sets_at(t, lam), y) == 0.0 for lam in probes])
    assert np.array_equal(joint, outer_ok & inner_ok)
    assert np.all(np.diff(outer_ok.astype(int)) >= 0)  # recall of O only grows
    a, b = loss.side_scores(t, y)
    assert a == scanned_score(outer_ok, probes, v)
    assert b == scanned_score(inner_ok, probes, v)
    assert loss.case_score(t, y) == scanned_score(joint, probes, v) == max(a, b)
    got = loss.values(t, y, probes)
    np.testing.assert_array_equal(got, (probes < max(a, b)).astype(float))  # the monotone 0/1 step
    assert np.all(got >= 1.0 - joint)  # ≥ the pointwise loss: its guarantee implies the pointwise one
    if tau == 1.0:  # the exact band: pointwise and monotone agree, and the scores are the maxima
        np.testing.assert_array_equal(got, 1.0 - joint)
        assert a == (t[y].max() if y.any() else -np.inf)
        assert b == ((-t[~y]).max() if (~y).any() else -np.inf)


def test_band_example_and_empty_truth():
    t = np.array([[-0.4, -0.1, 0.3], [0.2, -0.3, 0.45]])
    y = np.array([[True, True, False], [True, False, False]])
    loss = get_loss("band")
    assert loss.side_scores(t, y) == (0.2, 0.3)  # O must reach t = 0.2; I keeps (1,1) until 0.3
    inner, outer = band_sets(t, 0.3, 0.3)
    assert loss.set_loss((inner, outer), y) == 0.0 and loss.set_loss(band_sets(t, 0.3, 0.29), y) == 1.0
    # an empty truth: nothing to cover, the inner set must be empty
    assert loss.side_scores(t, np.zeros_like(y)) == (-np.inf, 0.4)
    assert loss.curve(t, np.zeros_like(y)).breakpoints.tolist() == [0.4]
    # tolerance: 2 of 3 truth voxels in O are enough at tau = 0.5, and I may be half false voxels
    # (its false voxel with t = -0.3 comes after a true one with t = -0.4): it never fails
    assert get_loss("band", tau=0.5).side_scores(t, y) == (-0.1, -np.inf)
    # at tau = 0.7 I must drop that false voxel: 1 true of 2 is below 0.7
    assert get_loss("band", tau=0.7).side_scores(t, y) == (0.2, 0.3)
    assert loss.statement(0.1).startswith("P(inner set in truth in outer set) >= 0.9")
    assert get_loss("band", tau=0.9).statement(0.1).startswith("P(outer recall >= 0.9 and inner precision >= 0.9) >= 0.9")
    with pytest.raises(SegcpError, match="pair"):
        loss.set_loss(t <= 0, y)
    with pytest.raises(SegcpError, match="NaN"):
        loss.curve(np.full((2, 3), np.nan), y)


# ---------------------------------------------------------------------- band-risk
@settings(max_examples=80, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.sampled_from(SHAPES),
    ties=st.booleans(),
    inf=st.booleans(),
    density=st.sampled_from([0.0, 0.05, 0.3, 1.0]),
)
def test_band_risk_matches_the_definition_at_every_lambda(seed, shape, ties, inf, density):
    t, y = signed_case(seed, shape, ties, inf, density)
    loss = get_loss("band-risk")
    v = candidates_of(t)
    probes = probes_of(v)
    want = np.array([loss.set_loss(loss.sets_at(t, lam), y) for lam in probes])
    got = loss.values(t, y, probes)
    np.testing.assert_array_equal(got, want)  # exact: the same count ratios
    assert np.all(np.diff(got) <= 0) and np.all((got >= 0) & (got <= 1))
    cand = loss.candidates(t, y)
    assert np.all(np.isin(cand, v))
    before = np.array([loss.set_loss(loss.sets_at(t, np.nextafter(c, -np.inf)), y) for c in cand])
    at = np.array([loss.set_loss(loss.sets_at(t, c), y) for c in cand])
    assert np.all(at != before)  # it changes at each candidate (and, by the probes, nowhere else)
    curve = loss.curve(t, y)
    np.testing.assert_allclose(curve.evaluate(probes)[0], got, rtol=0, atol=1e-12)


def test_band_risk_naive_count():
    rng = np.random.default_rng(3)
    for _ in range(50):
        y = rng.random((5, 6)) < rng.choice([0.0, 0.3])
        outer = rng.random((5, 6)) < 0.6
        inner = outer & (rng.random((5, 6)) < 0.5)
        m, fn, fp = y.sum(), (y & ~outer).sum(), (inner & ~y).sum()
        want = float(fp > 0) if m == 0 else max(fn / m, min(1.0, fp / m))
        assert get_loss("band-risk").set_loss((inner, outer), y) == want


def test_registry_declares_the_signed_score():
    for name in ("band", "band-risk"):
        cls = loss_class(name)
        assert cls.score == "signed" and cls.monotone and cls.bound == 1.0
    assert loss_class("band").binary and not loss_class("band-risk").binary
    for name in ("fnr", "quantile", "lesion-fnr", "fdr"):
        assert loss_class(name).score == "sublevel"
    assert get_loss("band").params() == {"tau": 1.0}
    with pytest.raises(SegcpError, match="tau must be in"):
        get_loss("band", tau=0)


# ---------------------------------------------------------------------- the families' signed scores
def _probs(shape: tuple[int, ...], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    blob = ndimage.gaussian_filter(rng.random(shape), 1.5)
    return np.clip((blob - blob.min()) / (np.ptp(blob) + 1e-12), 0, 1)


@pytest.mark.parametrize("normalize", NORMALIZATIONS)
@pytest.mark.parametrize("shape", [(20, 24), (6, 14, 16)])
def test_probability_families_mirror_one_threshold_about_one_half(normalize, shape):
    case = Case("c", _probs(shape, 1), spacing=(1.0,) * len(shape))
    fam = ThresholdMethod(normalize=normalize, norm_floor=0.1)
    assert isinstance(fam, ProbabilityFamily) and fam.two_sided and fam.band_lambda_max == 0.5
    s = fam.normalized(fam.foreground(case), case)
    t = fam.signed_map(case)
    assert t.dtype == np.float64 and t.shape == shape
    np.testing.assert_array_equal(t, 0.5 - np.asarray(s, dtype=np.float64))
    for mu in (0.0, 0.1, 0.3, 0.5):
        inner, outer = fam.predict_band(case, mu)
        assert np.array_equal(outer, s >= 0.5 - mu) and np.array_equal(inner, s > 0.5 + mu)
        assert not np.any(inner & ~outer)
    inner, outer = fam.predict_band(case, 0.5)
    assert outer.all() and not inner.any()
    assert np.array_equal(fam.predict_band(case, 0.0)[1], s >= 0.5)  # they meet at the map's own mask
    inner2, outer2 = fam.predict_band(t, 0.2, 0.05)  # two lambdas, from a stored map
    assert np.array_equal(outer2, s >= 0.3) and np.array_equal(inner2, s > 0.55)


@pytest.mark.parametrize("se", ["cross", "square"])
@pytest.mark.parametrize("shape", [(23, 19), (9, 15, 13)])
def test_morph_band_is_iterated_erosion_and_dilation(se, shape):
    probs = _probs(shape, 2)
    probs[(slice(0, 3),) * len(shape)] = 1.0  # a part of the mask on the image border
    case = Case("c", probs)
    fam = MorphMethod(se)
    seed = probs >= 0.5
    el = ndimage.generate_binary_structure(len(shape), 1 if se == "cross" else len(shape))
    t = fam.signed_map(case)
    assert np.array_equal(t <= 0, seed) and np.array_equal(t < 0, seed)
    for n in range(5):
        inner, outer = fam.predict_band(case, n)
        want_in = ndimage.binary_erosion(seed, el, iterations=n, border_value=1) if n else seed
        assert np.array_equal(inner, want_in), n
        assert np.array_equal(outer, fam.predict(case, n)), n  # the dilation: Consema's sets
        assert np.array_equal(outer, ndimage.binary_dilation(seed, el, iterations=n) if n else seed), n


def test_morph_ball_band_is_spacing_aware_in_2d_and_3d():
    for shape, spacing in [((21, 17), (0.7, 1.9)), ((7, 13, 12), (3.0, 0.8, 1.1))]:
        probs = _probs(shape, 3)
        case = Case("c", probs, spacing=spacing)
        fam = MorphMethod("ball")
        seed = probs >= 0.5
        pts = np.stack(np.meshgrid(*[np.arange(n) * s for n, s in zip(shape, spacing)], indexing="ij"), -1).reshape(-1, len(shape))
        flat = seed.ravel()
        d_bg = np.sqrt(((pts[:, None, :] - pts[None, ~flat, :]) ** 2).sum(-1)).min(1)  # to the nearest voxel outside
        d_fg = np.sqrt(((pts[:, None, :] - pts[None, flat, :]) ** 2).sum(-1)).min(1)
        for mu in (0.0, 0.75, 2.05, 3.45):  # not at a grid distance: edt and this sum round differently there
            inner, outer = fam.predict_band(case, mu)
            # the erosion by the ball of radius mu mm: every grid voxel within mu of it is in the seed
            assert np.array_equal(inner.ravel(), flat & (d_bg > mu)), (shape, mu)
            assert np.array_equal(outer.ravel(), flat | (d_fg <= mu)), (shape, mu)


def test_morph_band_edge_cases():
    empty = Case("e", np.zeros((5, 6)))
    inner, outer = MorphMethod().predict_band(empty, 3)
    assert not inner.any() and not outer.any()
    full = Case("f", np.ones((5, 6)))
    inner, outer = MorphMethod().predict_band(full, 100)
    assert inner.all() and outer.all()
    assert np.array_equal(MorphMethod(empty_prediction="argmax").signed_map(empty) <= 0, np.ones((5, 6), bool))


def test_rwcp_inherits_the_signed_score():
    fam = get_method("rwcp", encoder="fallback", k=4, steps=2, cache=False)
    assert fam.two_sided and fam.band_lambda_max == 0.5
    probs = _probs((32, 32), 4)
    case = Case("r", probs, image=probs)
    np.testing.assert_array_equal(fam.signed_map(case), 0.5 - fam.normalized(fam.foreground(case), case))


def test_families_without_signed_scores_say_so():
    from dataclasses import dataclass

    from segcp.methods.base import MaskFamily

    @dataclass(repr=False, eq=False)
    class OneSided(MaskFamily):
        name = "one-sided-test"

        def score_map(self, case):
            return 1.0 - case.probs

    fam = OneSided()
    assert not fam.two_sided
    case = Case("c", np.full((3, 3), 0.7))
    with pytest.raises(SegcpError, match="one-sided-test: no two-sided sets"):
        fam.signed_map(case)
    with pytest.raises(SegcpError, match="one-sided-test: no two-sided sets"):
        fam.predict_band(case, 0.1)
    with pytest.raises(SegcpError, match="lambda_out, lambda_in >= 0"):
        band_sets(np.zeros((2, 2)), -0.1, 0.0)


# ---------------------------------------------------------------------- two lambdas
def test_shared_lambda_is_the_exact_crc_of_the_band_curves():
    rng = np.random.default_rng(0)
    loss = get_loss("band")
    cases = [signed_case(int(s), (8, 9), False, False, 0.3) for s in rng.integers(0, 2**31, 60)]
    a, b = np.array([loss.side_scores(t, y) for t, y in cases]).T
    curves = LossCurves.concat([loss.curve(t, y) for t, y in cases])
    for alpha in (0.2, 0.1, 0.05):
        got = band_lambdas(a, b, alpha)
        assert got.lambda_out == got.lambda_in == max(0.0, conformal_quantile(np.maximum(a, b), alpha))
        assert got.lambda_out == crc_lambda(curves, alpha, lambda_min=0.0).lambda_


@pytest.mark.parametrize("scheme", ["shared", "split", "bonferroni"])
def test_joint_calibration_is_valid(scheme):
    """P(a ≤ λ_out and b ≤ λ_in) ≥ 1 − α over many exchangeable draws (a and b on different
    scales, correlated), within 3 standard errors; and not vacuous (coverage < 1)."""
    rng = np.random.default_rng(7)
    alpha, n, reps = 0.1, 40, 3000
    hits = []
    for _ in range(reps):
        z = rng.normal(size=(n + 1, 2))
        a = np.exp(0.5 * z[:, 0])
        b = 0.2 * np.exp(0.5 * (0.6 * z[:, 0] + 0.8 * z[:, 1]))
        r = band_lambdas(a[:n], b[:n], alpha, scheme=scheme, seed=int(rng.integers(1 << 30)))
        hits.append(a[n] <= r.lambda_out and b[n] <= r.lambda_in)
    cover = float(np.mean(hits))
    se = math.sqrt(alpha * (1 - alpha) / reps)
    assert cover >= 1 - alpha - 3 * se, f"{scheme}: coverage {cover:.4f}"
    assert cover < 0.995


def test_joint_calibration_scales_and_errors():
    a = np.linspace(0, 1, 40)
    b = 10 * np.linspace(0, 1, 40)  # the inner side is ten times wider
    r = band_lambdas(a, b, 0.1, scheme="split", seed=1)
    assert r.n_quantile == 20 and r.scale_in / r.scale_out == pytest.approx(10, rel=0.2)
    assert r.lambda_in / r.lambda_out == pytest.approx(r.scale_in / r.scale_out)
    shared = band_lambdas(a, b, 0.1)
    assert shared.lambda_out == shared.lambda_in > r.lambda_out  # one scale must cover the wide side
    with pytest.raises(SegcpError, match="unknown band scheme"):
        band_lambdas(a, b, 0.1, scheme="max")
    with pytest.raises(SegcpError, match="needs at least"):
        band_lambdas(a[:12], b[:12], 0.1, scheme="split")
    with pytest.raises(SegcpError, match="no finite lambda"):
        band_lambdas(np.full(20, np.inf), b[:20], 0.1)
    assert band_lambdas(-np.ones(20), -np.ones(20), 0.1).lambda_out == 0.0  # never below 0
