"""Tests of segcp.metrics: hand-computed values, empty-mask rules, and agreement with MONAI."""

from __future__ import annotations

import math
import subprocess
import sys
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from segcp.errors import SegcpError
from segcp.metrics import METRICS, aggregate, assd, coverage, dice, evaluate_set, fnr, hd95, stretch, surface, surface_distances

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def blob(shape: tuple[int, ...], seed: int, sigma: float = 2.0, fill: float = 0.3) -> np.ndarray:
    """A blobby random mask: smoothed noise thresholded so ~`fill` of the voxels are True."""
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).standard_normal(shape), sigma, mode="wrap")
    return noise > np.quantile(noise, 1 - fill)


shapes_2d = st.sampled_from([(24, 31), (40, 17), (9, 50)])
shapes_3d = st.sampled_from([(10, 14, 12), (16, 9, 13), (6, 20, 11)])
spacing_value = st.floats(0.3, 4.0)


@st.composite
def mask_pairs(draw, shapes):
    shape = draw(shapes)
    seeds = draw(st.tuples(st.integers(0, 2**31), st.integers(0, 2**31)))
    sigma = draw(st.floats(0.8, 3.0))
    fills = draw(st.tuples(st.floats(0.05, 0.7), st.floats(0.05, 0.7)))
    a, b = (blob(shape, s, sigma, f) for s, f in zip(seeds, fills))
    spacing = tuple(draw(spacing_value) for _ in shape)
    return a, b, spacing


def monai_reference(a: np.ndarray, b: np.ndarray, spacing) -> tuple[float, float, np.ndarray, np.ndarray]:
    """MONAI's HD95, ASSD and directed surface distances (a -> b, b -> a) for two masks."""
    pytest.importorskip("monai")
    torch = pytest.importorskip("torch")
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance
    from monai.metrics.utils import get_edge_surface_distance

    y_pred = torch.from_numpy(a[None, None].astype(np.float32))  # one-hot (B, C, *spatial)
    y = torch.from_numpy(b[None, None].astype(np.float32))
    sp = list(spacing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd = compute_hausdorff_distance(y_pred, y, include_background=True, percentile=95, spacing=sp)
        asd = compute_average_surface_distance(y_pred, y, include_background=True, symmetric=True, spacing=sp)
        _, (d_ab, d_ba), _ = get_edge_surface_distance(y_pred[0, 0], y[0, 0], spacing=sp, symmetric=True)
    return float(hd[0, 0]), float(asd[0, 0]), d_ab.numpy(), d_ba.numpy()


def float32_quantile_error(d: np.ndarray, q: float = 0.95) -> float:
    """Bound on the error of MONAI's ``torch.quantile`` on float32 distances.

    torch computes the rank ``q * (n - 1)`` in float32, so the interpolation weight is off
    by up to about one float32 ulp of the rank, times the gap between the neighbouring
    sorted values.
    """
    d = np.sort(d)
    rank = q * (d.size - 1)
    k = int(rank)
    gap = np.diff(d[max(k - 1, 0) : k + 3]).max(initial=0.0)
    return float(2 * np.spacing(np.float32(rank)) * gap)


def check_against_monai(a, b, spacing):
    if not (a.any() and b.any()):
        return
    ref_hd, ref_asd, ref_ab, ref_ba = monai_reference(a, b, spacing)
    ours_ab, ours_ba = surface_distances(a, b, spacing), surface_distances(b, a, spacing)
    # The same distances (MONAI stores them as float32, hence the relative tolerance) ...
    np.testing.assert_allclose(np.sort(ours_ab), np.sort(ref_ab), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(np.sort(ours_ba), np.sort(ref_ba), rtol=1e-6, atol=1e-6)
    # ... and the same HD95 and ASSD, up to MONAI's float32 arithmetic.
    tol = 1e-6 * (1 + ref_hd) + max(float32_quantile_error(ours_ab), float32_quantile_error(ours_ba))
    assert hd95(a, b, spacing) == pytest.approx(ref_hd, rel=0, abs=tol)
    assert assd(a, b, spacing) == pytest.approx(ref_asd, rel=1e-6, abs=1e-6)


# --- agreement with MONAI -------------------------------------------------------------


@SETTINGS
@given(mask_pairs(shapes_2d))
def test_hd95_assd_match_monai_2d(pair):
    assume(pair[0].any() and pair[1].any())
    check_against_monai(*pair)


@SETTINGS
@given(mask_pairs(shapes_3d))
def test_hd95_assd_match_monai_3d(pair):
    assume(pair[0].any() and pair[1].any())
    check_against_monai(*pair)


@pytest.mark.parametrize("ndim", [2, 3])
def test_match_monai_masks_touching_border(ndim):
    shape = (20, 23) if ndim == 2 else (9, 12, 10)
    a = blob(shape, 1, fill=0.6)
    a[0] = True  # a whole face on the border
    b = blob(shape, 2, fill=0.5)
    b[..., -1] = True
    spacing = (0.7, 2.5, 1.3)[:ndim]
    check_against_monai(a, b, spacing)
    check_against_monai(np.ones(shape, bool), b, spacing)  # a is the whole image


def test_surface_matches_monai_edges():
    pytest.importorskip("monai")
    from monai.metrics.utils import get_mask_edges

    for ndim, shape in [(2, (15, 18)), (3, (7, 9, 8))]:
        m = blob(shape, ndim, fill=0.6)
        m[-1] = True
        ref, _ = get_mask_edges(m, m, crop=False)
        np.testing.assert_array_equal(surface(m), ref)


# --- surfaces and distances ----------------------------------------------------------


def test_surface_hand_example_and_border():
    m = np.zeros((4, 5), bool)
    m[1:4, 1:4] = True  # touches the bottom border
    expected = np.array([[0, 0, 0, 0, 0], [0, 1, 1, 1, 0], [0, 1, 0, 1, 0], [0, 1, 1, 1, 0]], bool)
    np.testing.assert_array_equal(surface(m), expected)
    # connectivity 2: the erosion also needs the diagonal neighbours
    full = np.ones((3, 3), bool)
    assert surface(full, connectivity=2).sum() == 8
    assert surface(np.ones((5, 5, 5))).sum() == 5**3 - 3**3


@SETTINGS
@given(mask_pairs(shapes_2d | shapes_3d))
def test_cropped_distances_equal_full_image_edt(pair):
    a, b, spacing = pair
    assume(a.any() and b.any())
    full = ndimage.distance_transform_edt(~surface(b), sampling=spacing)[surface(a)]
    np.testing.assert_allclose(surface_distances(a, b, spacing), full, rtol=0, atol=1e-12)


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_shift_along_axis_scales_with_spacing(axis):
    a = np.zeros((8, 9, 10), bool)
    a[2:5, 3:6, 3:7] = True
    b = np.roll(a, 1, axis=axis)
    spacing = [1.0, 1.0, 1.0]
    spacing[axis] = 2.5
    assert hd95(a, b, spacing) == pytest.approx(2.5)
    a2, b2 = a[4], b[4]  # the same in 2D (a slice along axis 0)
    if axis > 0:
        assert hd95(a2, b2, spacing[1:]) == pytest.approx(2.5)


def test_distances_scale_linearly_with_isotropic_spacing():
    a, b = blob((20, 20), 3), blob((20, 20), 4)
    base = (1.0, 0.5)
    for c in (0.1, 3.0):
        scaled = tuple(c * s for s in base)
        assert hd95(a, b, scaled) == pytest.approx(c * hd95(a, b, base))
        assert assd(a, b, scaled) == pytest.approx(c * assd(a, b, base))
    assert hd95(a, b, 2.0) == pytest.approx(hd95(a, b, (2.0, 2.0)))  # a scalar spacing


def test_surface_distances_hand_example_and_symmetry():
    a = np.zeros((1, 7), bool)
    a[0, 0] = True
    b = np.zeros((1, 7), bool)
    b[0, 3:] = True  # surface: the whole run (it is one voxel thick)
    np.testing.assert_allclose(surface_distances(a, b, (1.0, 2.0)), [6.0])
    np.testing.assert_allclose(surface_distances(b, a, (1.0, 2.0)), [6.0, 8.0, 10.0, 12.0])
    assert hd95(a, b) == hd95(b, a)
    assert assd(a, b) == pytest.approx((3 + 3 + 4 + 5 + 6) / 5)
    assert hd95(a, a) == 0.0 and assd(a, a) == 0.0


# --- empty masks ----------------------------------------------------------------------


def test_empty_mask_rules():
    empty = np.zeros((6, 6), bool)
    m = np.zeros((6, 6), bool)
    m[2:4, 2:4] = True
    assert hd95(empty, empty) == 0.0 and assd(empty, empty) == 0.0
    assert dice(empty, empty) == 1.0
    assert math.isnan(hd95(m, empty)) and math.isnan(hd95(empty, m))
    assert math.isnan(assd(m, empty)) and math.isnan(assd(empty, m))
    assert dice(m, empty) == 0.0
    assert fnr(m, empty) == 0.0 and coverage(m, empty) == 1.0
    assert fnr(empty, m) == 1.0 and coverage(empty, m) == 0.0
    assert math.isnan(stretch(m, empty))
    assert surface_distances(empty, m).shape == (0,)
    assert np.isinf(surface_distances(m, empty)).all() and surface_distances(m, empty).size == 4


# --- overlap metrics ------------------------------------------------------------------


def test_overlap_hand_examples():
    truth = np.array([[1, 1, 1, 1], [1, 0, 0, 0]])
    pred_set = np.array([[0, 1, 1, 1], [1, 1, 1, 0]])
    assert fnr(pred_set, truth) == pytest.approx(1 / 5)
    assert coverage(pred_set, truth) == pytest.approx(4 / 5)
    assert dice(pred_set, truth) == pytest.approx(2 * 4 / (6 + 5))
    model_mask = np.array([[0, 1, 1, 0], [0, 0, 0, 0]])
    assert stretch(pred_set, model_mask) == pytest.approx(3.0)
    # bool and 0/1 of other dtypes give the same values
    assert dice(pred_set.astype(bool), truth.astype(np.float32)) == dice(pred_set, truth)


def test_evaluate_set_keys_and_values():
    truth = blob((16, 16, 8), 5)
    pred_set = ndimage.binary_dilation(truth)
    r = evaluate_set(pred_set, truth, model_mask=truth, spacing=(1.0, 1.0, 3.0))
    assert list(r) == [*METRICS, "set_size"]
    assert r["fnr"] == 0.0 and r["coverage"] == 1.0
    assert r["set_size"] == pred_set.sum()
    assert r["stretch"] == pytest.approx(pred_set.sum() / truth.sum())
    assert r["dice"] == dice(pred_set, truth)
    assert r["hd95"] == hd95(pred_set, truth, (1.0, 1.0, 3.0))
    assert math.isnan(evaluate_set(pred_set, truth)["stretch"])
    assert math.isnan(evaluate_set(pred_set, truth, np.zeros_like(truth))["stretch"])


# --- bad input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: fnr(np.zeros((3, 4)), np.zeros((3, 5))),
        lambda: dice(np.zeros((3, 4)), np.zeros((4, 3))),
        lambda: stretch(np.zeros((3, 4)), np.zeros((3, 4, 1))),
        lambda: hd95(np.zeros((3, 4)), np.zeros((3, 5))),
        lambda: evaluate_set(np.zeros((3, 4)), np.zeros((3, 4)), model_mask=np.zeros((2, 4))),
        lambda: hd95(np.ones((3, 4)), np.ones((3, 4)), spacing=(1.0, 1.0, 1.0)),
        lambda: assd(np.ones((3, 4)), np.ones((3, 4)), spacing=(1.0, 0.0)),
        lambda: surface_distances(np.ones((3, 4)), np.ones((3, 4)), spacing=(1.0, -2.0)),
        lambda: hd95(np.zeros((3, 4)), np.zeros((3, 4)), spacing=(1.0, float("nan"))),
        lambda: dice(np.zeros(5), np.zeros(5)),
        lambda: surface(np.zeros((2, 2, 2, 2))),
        lambda: surface(np.zeros((3, 3)), connectivity=3),
        lambda: dice(np.full((2, 2), 0.7), np.zeros((2, 2))),
    ],
)
def test_bad_input_raises_segcp_error(call):
    with pytest.raises(SegcpError):
        call()


# --- aggregation ----------------------------------------------------------------------


def test_aggregate():
    nan = float("nan")
    per_image = {
        "a": {"dice": 0.5, "hd95": 2.0, "stretch": nan},
        "b": {"dice": 1.0, "hd95": nan, "stretch": nan},
        "c": {"dice": 0.0, "hd95": 4.0, "stretch": nan},
    }
    s = aggregate(per_image)
    assert s["n"] == 3
    assert s["mean"]["dice"] == pytest.approx(0.5)
    assert s["std"]["dice"] == pytest.approx(np.std([0.5, 1.0, 0.0]))
    assert s["mean"]["hd95"] == pytest.approx(3.0)
    assert s["undefined"] == {"dice": 0, "hd95": 1, "stretch": 3}
    assert math.isnan(s["mean"]["stretch"]) and math.isnan(s["std"]["stretch"])
    assert aggregate({}) == {"mean": {}, "std": {}, "undefined": {}, "n": 0}


def test_metrics_do_not_import_torch():
    code = "import sys, segcp.metrics; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
