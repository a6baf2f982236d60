"""Image-adaptive score normalisation (``normalize``) of the threshold and rwcp families."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from segcp import ConformalSegmenter
from segcp.errors import SegcpError
from segcp.methods import Case, RWCPMethod, ThresholdMethod, get_method
from segcp.methods.normalize import NORMALIZATIONS, normalize_map
from segcp.metrics import fnr

shapes = st.one_of(st.tuples(st.integers(2, 10), st.integers(2, 10)), st.tuples(st.integers(2, 5), st.integers(2, 5), st.integers(2, 5)))
maps = shapes.flatmap(lambda s: arrays(np.float64, s, elements=st.floats(0, 1)))
options = st.fixed_dictionaries(
    {
        "normalize": st.sampled_from(NORMALIZATIONS),
        "norm_floor": st.sampled_from([0.0, 0.05, 0.3, 1.0]),
        "norm_quantile": st.sampled_from([1.0, 0.9, 0.5]),
        "norm_level": st.sampled_from([0.5, 0.2]),
    }
)


def test_none_is_todays_score_bit_for_bit():
    rng = np.random.default_rng(0)
    for shape in [(17, 23), (4, 9, 7)]:
        p = rng.random(shape) ** 3
        case = Case("a", p.astype(np.float32))
        old = 1.0 - case.probs.astype(np.float64)  # the score of Standard CRC before the option existed
        new = ThresholdMethod().score_map(case)
        assert new.dtype == np.float64 and new.tobytes() == old.tobytes()
    image = rng.random((30, 30))
    case = Case("b", np.clip(image + 0.2 * rng.random((30, 30)), 0, 1), image=image)
    m = RWCPMethod(encoder="fallback", k=6, steps=4, cache=False)
    old = 1.0 - m.diffuse_probs(case.probs, m.features(image), image)
    assert m.score_map(case).tobytes() == old.tobytes()


@settings(max_examples=200, deadline=None)
@given(maps, options)
def test_normalised_map_is_in_unit_interval(s, opts):
    out = normalize_map(s, opts["normalize"], floor=opts["norm_floor"], quantile=opts["norm_quantile"], level=opts["norm_level"])
    assert out.shape == s.shape and out.dtype == np.float64
    assert np.all(np.isfinite(out)) and out.min() >= 0.0 and out.max() <= 1.0
    assert np.array_equal(out == 0, s == 0) or opts["normalize"] == "none"  # zeros stay zeros, positives stay positive


@settings(max_examples=150, deadline=None)
@given(maps, options, st.lists(st.floats(-0.2, 1.2), min_size=2, max_size=6))
def test_normalised_sets_are_nested_and_curves_match_them(s, opts, lams):
    case = Case("c", s, mask=s > 0.3)
    method = ThresholdMethod(**opts)
    sets = [method.predict(case, lam) for lam in sorted(lams)]
    for small, big in zip(sets, sets[1:]):
        assert not np.any(small & ~big)
    assert method.predict(case, 1.0).all()
    curve = method.loss_curve(case)
    for lam in np.concatenate([curve.breakpoints, np.nextafter(curve.breakpoints, -np.inf), [0.0, 1.0]]):
        assert curve.evaluate(lam)[0] == pytest.approx(fnr(method.predict(case, lam), case.mask), abs=1e-12)


@settings(max_examples=150, deadline=None)
@given(maps, st.sampled_from([0.0, 0.2, 0.7]))
def test_max_keeps_the_order_of_pixels_and_reaches_one(s, floor):
    out = normalize_map(s, "max", floor=floor)
    flat, nflat = s.ravel(), out.ravel()
    order = np.argsort(flat, kind="stable")
    assert np.all(np.diff(nflat[order]) >= 0)  # a monotone rescaling: same ranking within the image
    if s.max() > 0:
        assert nflat.max() == pytest.approx(min(1.0, s.max() / max(s.max(), floor)))


def test_floor_on_an_all_zero_map_and_on_a_map_the_model_barely_sees():
    zero = np.zeros((5, 6))
    for how in ("max", "component"):
        for floor in (0.0, 0.1, 1.0):
            out = normalize_map(zero, how, floor=floor)
            assert np.all(out == 0.0)  # no NaN, nothing blown up
    faint = np.full((4, 4), 0.01)
    faint[0, 0] = 0.03  # an empty slice: noise at 1-3 %
    assert normalize_map(faint, "max").max() == 1.0  # without a floor the noise is rescaled to 1
    assert normalize_map(faint, "max", floor=0.3).max() == pytest.approx(0.1)  # with m0 = 0.3: ×1/0.3 at most
    assert normalize_map(faint, "max", floor=1.0).tobytes() == faint.tobytes()  # m0 = 1 is none
    # all-zero map: the set is empty until λ = 1 (r = 1 everywhere)
    assert not ThresholdMethod(normalize="max").predict(Case("z", zero), 0.999).any()


def test_quantile_reference_clips_at_one():
    s = np.linspace(0, 0.5, 101).reshape(1, -1)
    out = normalize_map(s, "max", quantile=0.5)  # reference 0.25
    assert out[0, 50] == pytest.approx(1.0) and out[0, 25] == pytest.approx(0.5) and out.max() == 1.0
    assert np.all(out[0, 50:] == 1.0)


def test_component_rescales_each_detected_structure_by_its_own_peak():
    s = np.zeros((9, 20))
    s[2:5, 1:4] = 0.9  # a confident blob
    s[3, 2] = 1.0
    s[2:5, 14:18] = 0.6  # a weaker one
    s[3, 16] = 0.8
    s[7, 0] = 0.3  # faint pixel nearest to the first blob
    s[8, 19] = 0.2  # faint pixel nearest to the second
    out = normalize_map(s, "component", level=0.5)
    assert out[3, 2] == 1.0 and out[3, 16] == 1.0
    assert out[2, 1] == pytest.approx(0.9) and out[2, 14] == pytest.approx(0.6 / 0.8)
    assert out[7, 0] == pytest.approx(0.3) and out[8, 19] == pytest.approx(0.2 / 0.8)
    # no component above the level: the same as max
    weak = s * 0.4
    assert np.array_equal(normalize_map(weak, "component", level=0.5), normalize_map(weak, "max"))
    # the floor bounds every component's divisor
    assert normalize_map(s, "component", level=0.5, floor=0.95)[3, 16] == pytest.approx(0.8 / 0.95)


def test_component_nearest_uses_the_spacing():
    s = np.zeros((1, 11))
    s[0, 0] = 0.9
    s[0, 10] = 0.6
    s[0, 4] = 0.3
    assert normalize_map(s, "component", level=0.5)[0, 4] == pytest.approx(0.3 / 0.9)
    s3 = np.zeros((3, 1, 3))
    s3[0, 0, 0], s3[1, 0, 2], s3[1, 0, 0] = 0.9, 0.6, 0.3
    # (1, 0, 0) is 1 voxel from the first blob along axis 0, 2 from the second along axis 2
    assert normalize_map(s3, "component", level=0.5)[1, 0, 0] == pytest.approx(0.3 / 0.9)
    assert normalize_map(s3, "component", level=0.5, spacing=(5.0, 1.0, 1.0))[1, 0, 0] == pytest.approx(0.3 / 0.6)


def test_3d_is_normalised_per_volume_or_per_slice():
    v = np.zeros((3, 4, 4))
    v[0] = 0.2
    v[2, 1, 1] = 0.5
    v[1, 0, 0] = 0.05
    out = normalize_map(v, "max")
    assert out[2, 1, 1] == 1.0 and out[0, 0, 0] == pytest.approx(0.4)  # one reference for the whole volume
    per = normalize_map(v, "slice", floor=0.1)
    assert per[0, 0, 0] == 1.0 and per[2, 1, 1] == 1.0  # each slice by its own max
    assert per[1, 0, 0] == pytest.approx(0.5)  # a slice the model barely sees: by the floor
    for k in range(3):
        assert np.array_equal(per[k], normalize_map(v[k], "max", floor=0.1))
    assert np.array_equal(normalize_map(v[0], "slice"), normalize_map(v[0], "max"))  # 2D: the same as max


def test_rwcp_normalises_the_diffused_map():
    rng = np.random.default_rng(1)
    image = rng.random((24, 24))
    probs = 0.3 * np.clip(image, 0, 1)
    case = Case("a", probs, image=image)
    m = RWCPMethod(encoder="fallback", k=6, steps=3, cache=False)
    mx = RWCPMethod(encoder="fallback", k=6, steps=3, cache=False, normalize="max", norm_floor=0.0)
    s = m.foreground(case)
    assert np.array_equal(mx.score_map(case), 1.0 - s / s.max())
    assert mx.score_map(case).min() == 0.0


def test_parameters_are_declared_once_and_validated():
    for name in ("threshold", "rwcp"):
        decl = get_method(name).declared()
        assert {"normalize", "norm_floor", "norm_quantile", "norm_level"} <= set(decl)
        assert decl["normalize"].default == "none" and decl["normalize"].flag == "--normalize"
        assert decl["norm_floor"].default == 0.1  # safe on images where the structure is absent
    with pytest.raises(SegcpError, match="threshold: normalize must be one of none, max, slice, component, got 'mean'"):
        get_method("threshold", normalize="mean")
    with pytest.raises(SegcpError, match=r"threshold: norm_floor must be in \[0, 1\]"):
        get_method("threshold", norm_floor=2)
    with pytest.raises(SegcpError, match=r"norm_quantile must be in \(0, 1\]"):
        get_method("threshold", norm_quantile=0)
    assert get_method("threshold", normalize="max", norm_floor=0.1).params() == {
        "normalize": "max",
        "norm_floor": 0.1,
        "norm_quantile": 1.0,
        "norm_level": 0.5,
    }


def _weak_and_strong_cases(n: int, seed: int) -> list[Case]:
    """Discs seen at a confidence that varies per image (some weakly, at 5-30 %)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:32, :32]
    out = []
    for i in range(n):
        cy, cx, r = rng.integers(10, 22), rng.integers(10, 22), rng.integers(4, 8)
        mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2) - r
        conf = rng.choice([0.05, 0.3, 1.0], p=[0.1, 0.2, 0.7])
        probs = conf / (1 + np.exp(1.5 * d + rng.normal(0, 0.5, d.shape)))
        out.append(Case(f"c{i}", np.clip(probs, 0, 1), mask=mask))
    return out


def test_max_gives_smaller_sets_than_raw_probabilities_when_confidence_varies():
    cal, test = _weak_and_strong_cases(60, 0), _weak_and_strong_cases(60, 1)
    sizes = {}
    for how in ("none", "max"):
        cs = ConformalSegmenter("threshold", alpha=0.1, method_params={"normalize": how}).calibrate(cal)
        sets = list(cs.predict(test))
        sizes[how] = np.mean([s.sum() / max(1, c.mask.sum()) for s, c in zip(sets, test)])
    assert sizes["max"] < 0.8 * sizes["none"]


def test_cli_records_normalize(tmp_path):
    from typer.testing import CliRunner

    from segcp.cli import app
    from segcp.io import write_npy

    cases = _weak_and_strong_cases(12, 2)
    for c in cases:
        write_npy(tmp_path / "d" / "probs" / f"{c.id}.npy", c.probs)
        write_npy(tmp_path / "d" / "masks" / f"{c.id}.npy", c.mask)
    out = tmp_path / "c.json"
    res = CliRunner().invoke(
        app,
        [
            "calibrate",
            "--method",
            "threshold",
            "--alpha",
            "0.2",
            "--data",
            str(tmp_path / "d"),
            "--normalize",
            "max",
            "-p",
            "norm_floor=0.1",
            "--out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    rec = json.loads(out.read_text())
    assert rec["params"]["normalize"] == "max" and rec["params"]["norm_floor"] == 0.1
    res = CliRunner().invoke(app, ["predict", "--calib", str(out), "--data", str(tmp_path / "d"), "--out", str(tmp_path / "sets")])
    assert res.exit_code == 0, res.output
    cs = ConformalSegmenter.from_dict(rec)
    assert np.array_equal(np.load(tmp_path / "sets" / "c0.npy"), cs.predict(Case("c0", cases[0].probs)))


def test_slice_normalisation_follows_the_slice_axis():
    """``slice`` rescales each slice along the axis RW-CP cuts volumes along (the coarsest spacing)."""
    rng = np.random.default_rng(3)
    s = rng.random((6, 7, 4)) * rng.random(4)  # slices along the last axis with different confidence
    got = normalize_map(s, "slice", floor=0.0, spacing=(1.0, 1.0, 5.0))
    want = np.stack([s[:, :, k] / s[:, :, k].max() for k in range(4)], axis=-1)
    assert np.allclose(got, want)
    first = normalize_map(np.moveaxis(s, 2, 0), "slice", floor=0.0, spacing=(5.0, 1.0, 1.0))
    assert np.array_equal(np.moveaxis(first, 0, 2), got)
