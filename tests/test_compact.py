"""Compact loss curves: λ̂ never below exact and within one grid step; exact integer merging."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from segcp import ConformalSegmenter, LossCurves
from segcp.calibration import crc_lambda, fnr_curve, zero_one_curve
from segcp.calibration.compact import EXACT_LIMIT, CompactCurves, CurveAccumulator, Grid, compact_crc_lambda, default_grid
from segcp.errors import SegcpError


def _scores(rng: np.random.Generator, grid_size: int, m: int) -> np.ndarray:
    """Truth-pixel scores in [0, 1]: free floats, values on the grid, ties, some +inf."""
    kind = rng.integers(0, 4, size=m)
    free = rng.random(m)
    on_grid = np.linspace(0, 1, grid_size)[rng.integers(0, grid_size, size=m)]
    special = rng.choice([0.0, 1.0, 0.5, np.inf], size=m)
    return np.select([kind == 0, kind == 1, kind == 2], [free, on_grid, special], default=np.round(free, 1))


@st.composite
def problems(draw):
    size = draw(st.sampled_from([2, 3, 7, 33, 256, 2**16]))
    n = draw(st.integers(1, 40))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    curves = [fnr_curve(_scores(rng, size, int(m))) for m in rng.integers(0, 31, size=n)]
    alpha = draw(st.floats(0.02, 0.9))
    return curves, Grid(0.0, 1.0, size), alpha


def _lambda(fn, *args, **kw):
    try:
        return fn(*args, **kw).lambda_
    except SegcpError as exc:
        return str(exc).split(":")[0]


@settings(max_examples=300, deadline=None)
@given(problems())
def test_compact_lambda_is_at_or_above_exact_and_within_one_grid_step(problem):
    curves, grid, alpha = problem
    exact = LossCurves.concat(curves)
    compact = CompactCurves.from_curves(exact, grid)
    le = _lambda(crc_lambda, exact, alpha, lambda_min=0.0)
    lc = _lambda(compact_crc_lambda, compact, alpha, lambda_min=0.0)
    if isinstance(le, str) or isinstance(lc, str):
        assert type(le) is type(lc), (le, lc)  # both infeasible (too few images, or sets that never cover)
        return
    assert le <= lc <= le + grid.step * (1 + 1e-12)
    # more precisely: the first grid point at or above the exact λ̂ (λ_min when the bound holds there)
    expected = 0.0 if le == 0.0 else float(grid.points[np.searchsorted(grid.points, le, side="left")])
    assert lc == expected


@settings(max_examples=200, deadline=None)
@given(problems(), st.randoms(use_true_random=False))
def test_merging_is_exact_integer_addition_in_any_order_and_grouping(problem, rnd):
    curves, grid, _ = problem
    whole = CompactCurves.from_curves(LossCurves.concat(curves), grid)
    order = list(range(len(curves)))
    rnd.shuffle(order)
    cuts = sorted(rnd.sample(range(1, len(order)), min(3, len(order) - 1))) if len(order) > 1 else []
    groups = [order[a:b] for a, b in zip([0, *cuts], [*cuts, len(order)])]
    parts = [CompactCurves.from_curves(LossCurves.concat([curves[i] for i in g]), grid) for g in groups]
    merged = CompactCurves.concat(parts)
    acc = CurveAccumulator("compact", grid)
    for k, p in enumerate(reversed(parts)):
        acc.add(k, p)
    for other in (merged, acc.result()):
        assert other.n == whole.n and other.beyond == whole.beyond
        assert np.array_equal(other.start, whole.start)
        assert np.array_equal(other.bins, whole.bins) and np.array_equal(other.drops, whole.drops)


@settings(max_examples=100, deadline=None)
@given(problems())
def test_compact_totals_bound_the_exact_ones_at_every_grid_point(problem):
    curves, grid, _ = problem
    exact = LossCurves.concat(curves)
    compact = CompactCurves.from_curves(exact, grid)
    pts = grid.points[:: max(1, grid.size // 64)]
    ex = exact.evaluate(pts).sum(axis=0) if exact.n else np.zeros(pts.size)
    co = np.array([compact.total_at(p) for p in pts])
    assert np.all(co >= ex - 1e-12 * max(exact.n, 1))  # rounded toward the larger loss
    assert np.all(co - ex <= 1e-12 * max(exact.n, 1) + 1e-15)  # by at most float64 noise


def test_integer_lambda_grid_is_exact():
    rng = np.random.default_rng(3)
    curves = LossCurves.concat([fnr_curve(rng.integers(0, 40, size=rng.integers(1, 60)).astype(float)) for _ in range(50)])
    grid = default_grid(0.0, np.inf, integer=True)
    assert grid.points[1] - grid.points[0] == 1.0 and grid.hi == 2**16 - 1
    for a in (0.2, 0.1, 0.05):
        assert compact_crc_lambda(CompactCurves.from_curves(curves, grid), a, lambda_min=0.0).lambda_ == crc_lambda(curves, a, lambda_min=0.0).lambda_


def test_lambda_beyond_the_grid_is_an_error_not_a_silent_cap():
    curves = LossCurves.concat([fnr_curve([5.0, 7.5, 9.0])] * 30)
    grid = default_grid(0.0, np.inf, grid_max=4.0)
    with pytest.raises(SegcpError, match="end of the compact grid.*raise grid_max"):
        compact_crc_lambda(CompactCurves.from_curves(curves, grid), 0.1, lambda_min=0.0)
    assert compact_crc_lambda(CompactCurves.from_curves(curves, default_grid(0.0, np.inf)), 0.1, lambda_min=0.0).lambda_ >= 9.0


def test_auto_stays_exact_while_it_fits_then_compacts_everything():
    rng = np.random.default_rng(0)
    parts = [fnr_curve(rng.random(100)) for _ in range(30)]
    grid = Grid(0.0, 1.0, 1024)
    small = CurveAccumulator("auto", grid)
    for i, p in enumerate(parts):
        small.add(i, p)
    assert isinstance(small.result(), LossCurves) and EXACT_LIMIT > 3000
    big = CurveAccumulator("auto", grid, limit=1000)  # exceeded after 11 parts
    for i in reversed(range(len(parts))):  # any arrival order
        big.add(i, parts[i])
    want = CompactCurves.from_curves(LossCurves.concat(parts), grid)
    got = big.result()
    assert isinstance(got, CompactCurves) and np.array_equal(got.drops, want.drops) and np.array_equal(got.bins, want.bins)
    exact = CurveAccumulator("exact", None)
    for i in reversed(range(len(parts))):
        exact.add(i, parts[i])
    assert np.array_equal(exact.result().breakpoints, LossCurves.concat(parts).breakpoints)  # index order, not arrival order


def test_estimator_with_compact_curves_and_its_record():
    rng = np.random.default_rng(1)
    masks = [rng.random((24, 24)) < 0.3 for _ in range(40)]
    probs = [np.clip(m * 0.6 + rng.random(m.shape) * 0.4, 0, 1) for m in masks]
    exact = ConformalSegmenter("threshold", alpha=[0.2, 0.1], curve_form="exact").calibrate(probs, masks)
    comp = ConformalSegmenter("threshold", alpha=[0.2, 0.1], curve_form="compact", grid_size=1000).calibrate(probs, masks)
    step = comp.grid_.step
    for a in (0.2, 0.1):
        assert exact.lambdas_[a] <= comp.lambdas_[a] <= exact.lambdas_[a] + step
        assert comp.results_[a].bound <= a + 1e-9
    rec = comp.to_dict()
    assert rec["curves"] == {"form": "compact", "grid": {"lo": 0.0, "hi": 1.0, "size": 1000}}
    assert "curves" not in exact.to_dict()  # exact records are unchanged
    again = ConformalSegmenter.from_dict(rec)
    assert again.grid_ == comp.grid_ and again.to_dict()["curves"] == rec["curves"]
    for bad in ({"form": "compact"}, {"form": "exact", "grid": rec["curves"]["grid"]}, {"form": "compact", "grid": {"lo": 0, "hi": 1, "size": True}}):
        with pytest.raises(SegcpError, match="curves"):
            ConformalSegmenter.from_dict(rec | {"curves": bad})
    # the map step merges batches of either form; compact memory does not depend on n
    c1 = comp.curves(probs[:20], masks[:20])
    c2 = comp.curves(probs[20:], masks[20:])
    assert isinstance(c1, CompactCurves) and c1.nbytes <= 3 * 8 * 1000 + 16
    assert (
        ConformalSegmenter("threshold", alpha=0.1, curve_form="compact", grid_size=1000).calibrate_curves(comp.merge([c1, c2])).lambda_
        == comp.lambdas_[0.1]
    )


def test_zero_one_curves_stay_exact():
    rng = np.random.default_rng(2)
    masks = [rng.random((16, 16)) < 0.3 for _ in range(30)]
    probs = [np.clip(m * 0.6 + rng.random(m.shape) * 0.4, 0, 1) for m in masks]
    cs = ConformalSegmenter("threshold", alpha=0.1, guarantee="quantile", tau=0.9, curve_form="auto").calibrate(probs, masks)
    assert cs.grid_ is None and cs.scores_ is not None
    with pytest.raises(SegcpError, match="stay exact"):
        ConformalSegmenter("threshold", alpha=0.1, guarantee="quantile", curve_form="compact").calibrate(probs, masks)
    with pytest.raises(SegcpError, match="curve_form"):
        ConformalSegmenter("threshold", alpha=0.1, curve_form="dense").calibrate(probs, masks)
    assert zero_one_curve(0.3).n == 1


def test_compact_rounding_is_conservative_for_thirds():
    """1/3 is not a multiple of 2^-52: the stored losses are rounded up, never down."""
    curves = LossCurves.concat([fnr_curve([0.1, 0.2, 0.3])] * 7)
    grid = Grid(0.0, 1.0, 11)  # its points 0.1, 0.2 and 0.30000000000000004 are >= the breakpoints
    c = CompactCurves.from_curves(curves, grid)
    for lam, exact in ((grid.points[1], 7 * 2 / 3), (grid.points[2], 7 / 3), (grid.points[3], 0.0)):
        got = c.total_at(lam)
        assert exact <= got <= exact + 7 * 2.0**-52 * 2 and math.isfinite(got)


@pytest.mark.parametrize(
    "grid", [Grid(0.0, 1.0, 2**16), Grid(0.0, 1.0, 7), Grid(-3.5, 1024.0, 65536), Grid(0.0, 65535.0, 65536), Grid(0.1, 0.3, 1000)]
)
def test_grid_index_is_searchsorted(grid):
    """The arithmetic index equals a binary search, on and around every grid point."""
    rng = np.random.default_rng(0)
    pts = grid.points
    x = np.concatenate(
        [
            rng.uniform(grid.lo - 1, grid.hi + 1, 20000),
            pts,
            np.nextafter(pts, np.inf),
            np.nextafter(pts, -np.inf),
            [np.inf, -np.inf, grid.hi, grid.lo],
        ]
    )
    assert np.array_equal(grid.index(x), np.searchsorted(pts, x, side="left"))
