"""Distinct draws counted in linear time (a digest per draw) equal np.unique's counts."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from segcp.metrics import diversity
from segcp.metrics.diversity import chao1, frequency_counts


def _unique_counts(draws: np.ndarray) -> list[int]:
    """The reference: np.unique over whole draws (the lexicographic sort the digest replaces)."""
    _, counts = np.unique(draws.reshape(draws.shape[0], -1), axis=0, return_counts=True)
    return sorted(counts.tolist(), reverse=True)


@settings(max_examples=200, deadline=None)
@given(
    st.integers(1, 40).flatmap(
        lambda s: st.tuples(
            hnp.arrays(np.int64, (min(s, 8), 3, 4), elements=st.integers(0, 2)),  # a few distinct draws...
            st.lists(st.integers(0, min(s, 8) - 1), min_size=s, max_size=s),  # ...repeated in any order
            st.sampled_from([np.uint8, np.int16, np.int64, bool]),
        )
    )
)
def test_digest_counts_equal_np_unique(args):
    pool, picks, dtype = args
    draws = pool[picks].astype(dtype)
    got = frequency_counts(draws)
    assert got.dtype == np.int64
    assert got.tolist() == _unique_counts(draws)
    assert got.sum() == draws.shape[0]


@pytest.mark.parametrize("dtype", [np.int64, np.uint8, np.float32])
def test_many_repeated_draws(dtype):
    rng = np.random.default_rng(0)
    base = rng.integers(0, 4, size=(24, 20, 16))
    draws = np.repeat(base[None], 200, axis=0)
    flip = rng.integers(0, 6, size=200)  # draws differ from the base in 0..5 pixels: many repeats
    for i, f in enumerate(flip):
        draws[i].reshape(-1)[rng.choice(base.size, f, replace=False)] = 4
    draws = draws.astype(dtype)
    assert frequency_counts(draws).tolist() == _unique_counts(draws)
    assert chao1(draws) == diversity.chao1_from_counts(_unique_counts(draws))


def test_a_digest_collision_never_merges_different_draws(monkeypatch):
    class Same:
        def __init__(self, *a, **k):
            pass

        def digest(self):
            return b"\0" * 16

    monkeypatch.setattr(hashlib, "blake2b", Same)  # every draw gets the same digest
    draws = np.array([[[0, 1]], [[0, 1]], [[1, 1]], [[0, 1]], [[1, 1]], [[2, 2]]])
    assert frequency_counts(draws).tolist() == [3, 2, 1] == _unique_counts(draws)


def test_sampled_coverage_in_chunks_equals_the_whole_batch():
    from segcp.metrics.diversity import sampled_coverage
    from segcp.segsets.agreement import agrees

    rng = np.random.default_rng(5)
    truth = rng.integers(0, 3, size=(12, 10))
    for beta in (0.5, 0.8, 0.95):
        draws = np.where(rng.random((150, 12, 10)) < 0.15, rng.integers(0, 3, size=(150, 12, 10)), truth)
        whole = float(np.any(agrees(draws, truth, beta)))
        assert all(sampled_coverage(draws, truth, beta, chunk=c) == whole for c in (1, 7, 64, 1000))
    assert sampled_coverage(truth, truth, 0.9) == 1.0  # one draw
