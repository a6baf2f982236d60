"""Consema (``morph``): one distance transform == iterated dilations, 2D and 3D."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import ndimage

from segcp.calibration import LossCurves, conformal_quantile, coverage_quantile_score, crc_lambda, fnr_curve, zero_one_curve
from segcp.conformal import ConformalSegmenter
from segcp.errors import SegcpError
from segcp.methods import Case, MorphMethod, get_method
from segcp.methods.morph import structuring_element
from segcp.metrics import fnr

SE = {"cross": 1, "square": None}  # connectivity of generate_binary_structure (None: ndim)


def element(se: str, ndim: int) -> np.ndarray:
    return ndimage.generate_binary_structure(ndim, SE[se] or ndim)


def dilation_steps(seed: np.ndarray, se: str) -> np.ndarray:
    """Reference: the step at which each pixel enters iterated binary_dilation (inf: never)."""
    out = np.full(seed.shape, np.inf)
    cur = seed.copy()
    out[cur] = 0
    step = 0
    while cur.any() and not cur.all():
        nxt = ndimage.binary_dilation(cur, structure=element(se, seed.ndim))
        step += 1
        out[nxt & ~cur] = step
        if (nxt == cur).all():
            break
        cur = nxt
    return out


def consema_score(yhat: np.ndarray, y: np.ndarray, se: str, tau: float) -> float:
    """Reference: dilate one step at a time until |C ∩ Y| / |Y| ≥ τ (the public code's loop)."""
    if not y.any():
        return -np.inf
    cur, n = yhat.copy(), 0
    while np.count_nonzero(cur & y) / np.count_nonzero(y) < tau:
        nxt = ndimage.binary_dilation(cur, structure=element(se, y.ndim))
        if (nxt == cur).all():
            return np.inf
        cur, n = nxt, n + 1
    return float(n)


def case_of(yhat: np.ndarray, y: np.ndarray | None = None, spacing=None, ident: str = "c") -> Case:
    rng = np.random.default_rng(0)
    probs = np.where(yhat, 0.5 + 0.5 * rng.random(yhat.shape), 0.49 * rng.random(yhat.shape))
    return Case(ident, probs, mask=y, spacing=spacing)


ses = st.sampled_from(["cross", "square"])
taus = st.sampled_from([1.0, 0.999, 0.99, 0.9, 0.5])


@st.composite
def pair(draw, ndim: int, max_side: int):
    shape = draw(st.tuples(*[st.integers(1, max_side)] * ndim))
    density = draw(st.sampled_from([0.02, 0.1, 0.4]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    yhat = rng.random(shape) < density
    if not yhat.any():
        yhat.flat[rng.integers(yhat.size)] = True
    y = rng.random(shape) < draw(st.sampled_from([0.0, 0.05, 0.3]))
    return yhat, y


# ---------------------------------------------------------------------- agreement
@settings(max_examples=150, deadline=None)
@given(pair(2, 16), ses, taus)
def test_2d_distance_equals_iterated_dilation(yy, se, tau):
    yhat, y = yy
    m = MorphMethod(se)
    r = m.score_map(case_of(yhat, y))
    np.testing.assert_array_equal(r, dilation_steps(yhat, se))
    assert np.all(r == np.round(r))  # exact integers: r <= n reproduces n dilations
    # per-image score (smallest n with coverage >= tau) == the one-step-at-a-time loop
    zero_one = m.loss_curve(case_of(yhat, y), "quantile", tau)
    expect = consema_score(yhat, y, se, tau)
    if expect == -np.inf:
        assert zero_one.starts[0] == 0 and zero_one.breakpoints.size == 0
    else:
        assert zero_one.breakpoints.tolist() == [expect]


@settings(max_examples=40, deadline=None)
@given(pair(3, 7), ses, taus)
def test_3d_distance_equals_iterated_dilation(yy, se, tau):
    yhat, y = yy
    m = MorphMethod(se)
    np.testing.assert_array_equal(m.score_map(case_of(yhat, y)), dilation_steps(yhat, se))
    curve = m.loss_curve(case_of(yhat, y), "quantile", tau)
    expect = consema_score(yhat, y, se, tau)
    assert curve.evaluate(expect - 1).item() == (1.0 if expect > -np.inf else 0.0)
    assert curve.evaluate(max(expect, 0.0)).item() == 0.0


@settings(max_examples=60, deadline=None)
@given(pair(2, 16), ses, st.integers(0, 12))
def test_predict_n_is_n_dilations(yy, se, n):
    yhat, _ = yy
    expect = yhat.copy()
    for _ in range(n):
        expect = ndimage.binary_dilation(expect, structure=element(se, 2))
    np.testing.assert_array_equal(MorphMethod(se).predict(case_of(yhat), n), expect)
    if n == 0:  # λ_min = 0 is the model's own mask
        np.testing.assert_array_equal(MorphMethod(se).predict(case_of(yhat), 0), yhat)


def test_3d_elements_are_cross_and_cube():
    assert structuring_element("cross", 3).sum() == 7  # centre + 6 face neighbours
    assert structuring_element("square", 3).all() and structuring_element("square", 3).shape == (3, 3, 3)
    yhat = np.zeros((9, 9, 9), bool)
    yhat[4, 4, 4] = True
    c = MorphMethod("cross").predict(case_of(yhat), 2)
    s = MorphMethod("square").predict(case_of(yhat), 2)
    idx = np.indices(yhat.shape) - 4
    np.testing.assert_array_equal(c, np.abs(idx).sum(0) <= 2)  # octahedron
    np.testing.assert_array_equal(s, np.abs(idx).max(0) <= 2)  # 5×5×5 cube


@settings(max_examples=40, deadline=None)
@given(pair(2, 16), st.sampled_from([0.0, 1.0, 1.5, 2.0, 2.5, 3.2]))
def test_ball_without_spacing_is_one_disk_dilation(yy, radius):
    yhat, _ = yy
    k = int(np.floor(radius))
    off = np.indices((2 * k + 1, 2 * k + 1)) - k
    disk = (off**2).sum(0) <= radius**2
    expect = ndimage.binary_dilation(yhat, structure=disk)
    np.testing.assert_array_equal(MorphMethod("ball").predict(case_of(yhat), radius), expect)


@settings(max_examples=120, deadline=None)
@given(
    st.one_of(pair(2, 18), pair(3, 7)),
    st.sampled_from(["cross", "square", "ball"]),
    st.lists(st.sampled_from([0.3, 0.5, 0.7, 1.0, 1.5, 2.2, 3.0]), min_size=3, max_size=3),
    st.integers(0, 2**32 - 1),
)
def test_cropped_computations_equal_the_full_map(yy, se, spacing, seed):
    """predict and loss_curve work on bounding boxes; they must match score_map exactly."""
    yhat, y = yy
    case = case_of(yhat, y, spacing=tuple(spacing[: yhat.ndim]))
    m = MorphMethod(se)
    r = m.score_map(case)
    rng = np.random.default_rng(seed)
    values = np.unique(r)
    lams = [0.0, -1.0, np.inf, *rng.choice(values, size=min(6, values.size), replace=False), float(values.max()) + 0.5]
    for lam in lams:
        np.testing.assert_array_equal(m.predict(case, lam), r <= lam, err_msg=f"lambda={lam}")
    full = fnr_curve(r[y])
    cropped = m.loss_curve(case, "fnr")
    np.testing.assert_array_equal(cropped.breakpoints, full.breakpoints)
    np.testing.assert_array_equal(cropped.drops, full.drops)
    for lam in [-1.0, *cropped.breakpoints.tolist()]:  # the curve is the FNR of the sets
        assert cropped.evaluate(lam).item() == pytest.approx(fnr(m.predict(case, lam), y), abs=1e-12)
    for tau in (1.0, 0.9):
        q = m.loss_curve(case, "quantile", tau)
        np.testing.assert_array_equal(q.breakpoints, zero_one_curve(coverage_quantile_score(r[y], tau)).breakpoints)


# ---------------------------------------------------------------------- spacing
def test_ball_is_spacing_aware_and_cross_counts_steps():
    yhat = np.zeros((21, 21), bool)
    yhat[10, 10] = True
    case = case_of(yhat, spacing=(1.5, 0.5))
    ball = MorphMethod("ball").predict(case, 3.0)  # a margin of 3 mm
    assert np.flatnonzero(ball[:, 10]).tolist() == list(range(8, 13))  # 2 pixels of 1.5 mm
    assert np.flatnonzero(ball[10, :]).tolist() == list(range(4, 17))  # 6 pixels of 0.5 mm
    i, j = np.indices(yhat.shape) - 10
    np.testing.assert_array_equal(ball, (1.5 * i) ** 2 + (0.5 * j) ** 2 <= 9.0)
    # cross/square count dilation steps whatever the spacing (the original method)
    cross = MorphMethod("cross").predict(case, 3)
    np.testing.assert_array_equal(cross, np.abs(i) + np.abs(j) <= 3)
    assert MorphMethod("ball").score_map(case)[10, 16] == 3.0


def test_ball_3d_spacing():
    yhat = np.zeros((7, 9, 15), bool)
    yhat[3, 4, 7] = True
    case = case_of(yhat, spacing=(3.0, 1.5, 0.5))
    s = MorphMethod("ball").predict(case, 3.0)
    assert s[:, 4, 7].sum() == 3 and s[3, :, 7].sum() == 5 and s[3, 4, :].sum() == 13


# ---------------------------------------------------------------------- empty masks
def test_empty_prediction_inf():
    y = np.zeros((8, 8), bool)
    y[2:4, 2:4] = True
    case = Case("e", np.full((8, 8), 0.3), mask=y)
    m = MorphMethod("cross")
    assert np.isposinf(m.score_map(case)).all()
    assert not m.predict(case, 1e6).any()
    fnr = m.loss_curve(case, "fnr")
    assert fnr.starts.tolist() == [1.0] and fnr.breakpoints.size == 0  # FNR 1 at every λ
    q = m.loss_curve(case, "quantile", 0.9)
    assert q.evaluate(1e9).item() == 1.0
    # empty Ŷ and empty Y: FNR 0, covered
    empty = Case("ee", np.full((8, 8), 0.3), mask=np.zeros((8, 8), bool))
    assert m.loss_curve(empty, "fnr").evaluate(0.0).item() == 0.0
    assert m.loss_curve(empty, "quantile", 1.0).evaluate(0.0).item() == 0.0


def _calibration_set(n: int, n_empty: int, seed: int = 0) -> list[Case]:
    rng = np.random.default_rng(seed)
    cases = []
    for i in range(n):
        y = np.zeros((20, 20), bool)
        y[6:14, 6:14] = True
        shift = rng.integers(0, 4)
        yhat = np.zeros_like(y)
        yhat[6 + shift : 14, 6 + shift : 14] = True
        if i < n_empty:
            yhat[:] = False
        cases.append(case_of(yhat, y, ident=f"c{i}"))
    return cases


@pytest.mark.parametrize("guarantee", ["fnr", "quantile"])
def test_empty_predictions_in_calibration(guarantee):
    # 2 of 39 images with an empty Ŷ: their loss is 1 at every λ, the bound is still reachable
    cs = ConformalSegmenter("morph", alpha=0.1, guarantee=guarantee, method_params={"se": "cross"})
    cs.calibrate(_calibration_set(39, 2))
    assert cs.lambda_ == int(cs.lambda_) and 0 <= cs.lambda_ <= 6
    assert cs.result_.bound <= 0.1 + 1e-9
    # 5 of 19 (> α(n+1) − 1 = 1): genuinely unreachable, a clear error
    with pytest.raises(SegcpError, match="no lambda satisfies"):
        ConformalSegmenter("morph", alpha=0.1, guarantee=guarantee).calibrate(_calibration_set(19, 5))


def test_empty_prediction_argmax():
    probs = np.full((9, 9), 0.1)
    probs[2, 6] = 0.4  # the model's best guess, below 0.5
    case = Case("a", probs)
    m = MorphMethod("cross", empty_prediction="argmax")
    i, j = np.indices(probs.shape)
    np.testing.assert_array_equal(m.score_map(case), np.abs(i - 2) + np.abs(j - 6))
    assert m.predict(case, 0).sum() == 1
    # ties: every maximal pixel seeds; a constant map gives the whole image at λ = 0
    assert m.predict(Case("z", np.zeros((4, 4))), 0).all()
    # non-empty Ŷ: the rule is not used
    probs[5, 5] = 0.9
    assert m.predict(Case("b", probs), 0).sum() == 1 and m.predict(Case("b", probs), 0)[5, 5]


def test_empty_truth_fnr_zero():
    yhat = np.zeros((6, 6), bool)
    yhat[0, 0] = True
    c = case_of(yhat, np.zeros((6, 6), bool))
    for se in ("cross", "square", "ball"):
        assert MorphMethod(se).loss_curve(c, "fnr").evaluate(0.0).item() == 0.0


# ---------------------------------------------------------------------- guarantees
@pytest.mark.parametrize("tau", [1.0, 0.999, 0.99, 0.9])
@pytest.mark.parametrize("se", ["cross", "square"])
def test_quantile_guarantee_is_textbook_conformal_quantile(tau, se):
    rng = np.random.default_rng(int(tau * 1000))
    cases, scores = [], []
    for i in range(30):
        y = np.zeros((24, 24), bool)
        y[5:19, 5:19] = rng.random((14, 14)) < 0.9
        yhat = y & (rng.random(y.shape) < 0.6)
        yhat = ndimage.binary_erosion(yhat, iterations=int(rng.integers(1, 3))) | (rng.random(y.shape) < 0.01)
        cases.append(case_of(yhat, y, ident=f"q{i}"))
        scores.append(consema_score(yhat, y, se, tau))
    for alpha in (0.1, 0.2):
        cs = ConformalSegmenter("morph", alpha, guarantee="quantile", tau=tau, method_params={"se": se})
        cs.calibrate(cases)
        assert cs.lambda_ == conformal_quantile(scores, alpha)  # the ⌈(n+1)(1−α)⌉-th smallest


def test_fnr_guarantee_lambda_is_a_dilation_count():
    cases = _calibration_set(40, 0, seed=3)
    cs = ConformalSegmenter("morph", 0.05, guarantee="fnr", method_params={"se": "square"}).calibrate(cases)
    lam = cs.lambda_
    assert lam == int(lam)
    curves = LossCurves.concat([MorphMethod("square").loss_curve(c) for c in cases])
    assert crc_lambda(curves, 0.05, lambda_min=0.0).lambda_ == lam


# ---------------------------------------------------------------------- parameters
def test_parameters():
    assert repr(MorphMethod()) == "MorphMethod(se='cross', threshold=0.5, empty_prediction='inf')"
    assert MorphMethod(empty_prediction=float("inf")).empty_prediction == "inf"  # --param parses "inf" to a float
    for bad in ({"se": "disk"}, {"threshold": 0.0}, {"threshold": "x"}, {"empty_prediction": "zero"}):
        with pytest.raises(SegcpError):
            get_method("morph", **bad)
    probs = np.zeros((5, 5))
    probs[2, 2] = 0.7
    assert MorphMethod(threshold=0.8).seed(Case("t", probs)) is None


# ---------------------------------------------------------------------- CLI
def run_cli(args: list[str]) -> None:
    from segcp.cli import main

    try:
        main(args)
    except SystemExit as exc:  # typer ends with sys.exit(0) on success
        assert exc.code in (0, None), exc.code


def test_cli_round_trip(tmp_path):
    rng = np.random.default_rng(7)
    (tmp_path / "data" / "probs").mkdir(parents=True)
    (tmp_path / "data" / "masks").mkdir()
    yhats = {}
    for i in range(19):
        y = np.zeros((32, 32), np.uint8)
        c = rng.integers(10, 22, size=2)
        y[c[0] - 6 : c[0] + 6, c[1] - 6 : c[1] + 6] = 1
        yhat = ndimage.binary_erosion(y.astype(bool), iterations=int(rng.integers(1, 5)))
        probs = np.where(yhat, 0.8, 0.2) * rng.uniform(0.9, 1.0, y.shape)
        np.save(tmp_path / "data" / "probs" / f"im{i:02d}.npy", probs)
        np.save(tmp_path / "data" / "masks" / f"im{i:02d}.npy", y)
        yhats[f"im{i:02d}"] = probs >= 0.5
    calib = tmp_path / "calib.json"
    run_cli(
        [
            "calibrate",
            "--data",
            str(tmp_path / "data"),
            "--out",
            str(calib),
            "--method",
            "morph",
            "--se",
            "square",
            "--guarantee",
            "quantile",
            "--tau",
            "0.99",
            "--alpha",
            "0.1",
            "--quiet",
        ]
    )
    record = json.loads(calib.read_text())
    assert record["method"] == "morph" and record["params"]["se"] == "square"
    lam = record["lambda"]
    assert isinstance(lam, int) and lam >= 1  # an integer number of dilations in calib.json
    run_cli(["predict", "--calib", str(calib), "--data", str(tmp_path / "data"), "--out", str(tmp_path / "sets"), "--quiet"])
    for ident, yhat in yhats.items():
        expect = ndimage.binary_dilation(yhat, structure=np.ones((3, 3), bool), iterations=int(lam))
        np.testing.assert_array_equal(np.load(tmp_path / "sets" / f"{ident}.npy"), expect)
