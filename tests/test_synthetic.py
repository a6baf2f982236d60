"""Tests for the built-in synthetic phantom generator (segcp.synthetic)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from segcp.errors import SegcpError
from segcp.synthetic import PhantomCase, make_phantoms


@pytest.fixture(scope="module")
def cases200() -> list[PhantomCase]:
    return make_phantoms(200, seed=0)


def _dice(pred: np.ndarray, gt: np.ndarray) -> float:
    s = int(pred.sum()) + int(gt.sum())
    return 1.0 if s == 0 else 2.0 * int((pred & gt).sum()) / s


def test_shapes_dtypes_ranges(cases200: list[PhantomCase]) -> None:
    assert len(cases200) == 200
    for c in cases200:
        assert isinstance(c, PhantomCase)
        assert c.image.shape == c.label.shape == c.probs.shape == (128, 128)
        assert c.image.dtype == np.float32 and c.probs.dtype == np.float32 and c.label.dtype == np.uint8
        assert np.isfinite(c.image).all() and c.image.min() >= 0.0 and c.image.max() <= 1.0
        assert np.isfinite(c.probs).all() and c.probs.min() >= 0.0 and c.probs.max() <= 1.0
        assert set(np.unique(c.label).tolist()) <= {0, 1, 2, 3}
        assert len(c.spacing) == 2 and all(isinstance(v, float) and 1.2 <= v <= 1.8 for v in c.spacing)
    assert len({c.id for c in cases200}) == 200
    assert cases200[7].id == "phantom_007"


def test_images_have_contrast_and_anatomy(cases200: list[PhantomCase]) -> None:
    for c in cases200[:20]:
        lv, myo = c.label == 3, c.label == 2
        assert myo.any()
        if lv.any():  # bright cavity, dark myocardium
            assert c.image[lv].mean() > c.image[myo].mean() + 0.2


def test_groups(cases200: list[PhantomCase]) -> None:
    counts = Counter(c.group for c in cases200)
    assert len(counts) == 100 and set(counts.values()) == {2}
    assert [c.group for c in cases200[:4]] == ["subject_000", "subject_000", "subject_001", "subject_001"]
    # a subject keeps its spacing
    assert cases200[0].spacing == cases200[1].spacing
    three = make_phantoms(7, shape=(64, 64), slices_per_subject=3)
    assert Counter(c.group for c in three) == {"subject_000": 3, "subject_001": 3, "subject_002": 1}


def test_reproducible_and_prefix_property() -> None:
    a, b, prefix = make_phantoms(10, seed=3), make_phantoms(10, seed=3), make_phantoms(5, seed=3)
    for x, y in zip(a, b):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.label, y.label)
        assert np.array_equal(x.probs, y.probs) and x.spacing == y.spacing
    for x, y in zip(a[:5], prefix):
        assert (x.id, x.group, x.spacing) == (y.id, y.group, y.spacing)
        assert np.array_equal(x.image, y.image) and np.array_equal(x.label, y.label)
        assert np.array_equal(x.probs, y.probs)
    other = make_phantoms(2, seed=4)
    assert not np.array_equal(other[0].image, a[0].image)


def test_probs_model_like(cases200: list[PhantomCase]) -> None:
    dices = np.array([_dice(c.probs >= 0.5, c.label == 3) for c in cases200])
    assert 0.75 <= dices.mean() <= 0.93
    assert (dices < 0.6).sum() >= 3  # some hard cases
    p = np.concatenate([c.probs.ravel() for c in cases200])
    assert np.mean((p < 0.01) | (p > 0.99)) > 0.9  # over-confident
    assert 0.0 < np.mean((p > 0.1) & (p < 0.9)) < 0.05  # but not a hard mask
    # not just a blurred mask: some predictions leak outside the true cavity
    assert sum(((c.probs >= 0.5) & (c.label != 3)).any() for c in cases200) > 100


def test_empty_and_small_lv(cases200: list[PhantomCase]) -> None:
    sizes = np.array([(c.label == 3).sum() for c in cases200])
    assert (sizes == 0).sum() >= 1
    assert ((sizes > 0) & (sizes < 150)).sum() >= 3
    for c in cases200:
        if not (c.label == 3).any():
            assert (c.label == 2).any()  # an apical cap of myocardium is still there


def test_other_shapes_and_n0() -> None:
    assert make_phantoms(0) == []
    (c,) = make_phantoms(1, shape=(96, 160), seed=1)
    assert c.image.shape == c.label.shape == c.probs.shape == (96, 160)
    assert (c.label == 3).any() or (c.label == 2).any()


@pytest.mark.parametrize("kwargs", [{"n": -1}, {"seed": -1}, {"shape": (16, 128)}, {"slices_per_subject": 0}, {"n": 2.5}, {"shape": "big"}])
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(SegcpError):
        make_phantoms(**kwargs)
