"""CONSIGN on real MC-dropout samples: membership is monotone in λ (issue 6).

A small dropout UNet is trained for 12 epochs (≈ 25 s) on real mid-ventricular ACDC slices
of 20 patients (binary LV: a tiny 4-label model does not learn the structures in that time),
and ``segcp infer --samples`` draws MC-dropout softmax samples on 16 slices of 3 other patients.
Those are real sampled outputs of a real network on real images. The model (test Dice ≈ 0.6)
over-segments, and the agreement is a recall, so β is high (0.97) for some truths to need
λ* > 0. Needs torch and ../shared/data.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from segcp import Case, ConformalSegmenter
from segcp.harness.datasets.acdc import read_acdc_slice, scan_acdc
from segcp.harness.models.infer import infer_to_dir
from segcp.harness.models.train import TrainConfig, train_datadir
from segcp.io import read_array
from segcp.segsets.agreement import agreement
from segcp.segsets.consign import consign_score, decompose, is_member

BETA = 0.97
GRID = [0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4]


def _write(root: Path, slices) -> Path:
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    for s in slices:
        image, label = read_acdc_slice(s)
        np.save(root / "images" / f"{s.id}.npy", image)
        np.save(root / "masks" / f"{s.id}.npy", (label == 3).astype(np.uint8))  # LV
    return root


@pytest.fixture(scope="module")
def real_samples(acdc_dir: Path, tmp_path_factory) -> Path:
    """MC-dropout samples (N = 12, 2 labels) of a small UNet on 16 held-out ACDC slices."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        slices = scan_acdc(acdc_dir)
        patients = sorted({s.patient for s in slices})
        train_p, test_p = set(patients[:20]), patients[-3:]
        # mid-ventricular slices of the training patients (all structures visible)
        train = [s for s in slices if s.patient in train_p and 3 <= s.slice <= 6]
        test = [s for s in slices if s.patient in test_p and 2 <= s.slice <= 7][:16]
        d = tmp_path_factory.mktemp("consign_real")
        train_dir = _write(d / "train", train)
        test_dir = _write(d / "test", test)
        cfg = TrainConfig(epochs=12, size=64, width=8, batch_size=8, threads=1, warmup_epochs=0.5, dropout=0.3)
        train_datadir(train_dir, d / "drop.pt", cfg, show_progress=False)
        infer_to_dir([d / "drop.pt"], d / "probs", data=test_dir, samples=12, seed=0, show_progress=False)
    finally:
        torch.set_num_threads(before)
    return d / "probs"


def _load(root: Path):
    for f in sorted((root / "samples").iterdir()):
        samples, _ = read_array(f)
        truth, _ = read_array(root / "masks" / f.name)
        yield f.stem, np.asarray(samples, dtype=np.float64), np.asarray(truth).astype(np.int64)


def test_real_samples_are_softmax_maps(real_samples: Path):
    n = 0
    for _, s, y in _load(real_samples):
        assert s.shape[:2] == (12, 2) and s.shape[2:] == y.shape
        assert np.all(np.isfinite(s)) and s.min() >= 0 and s.max() <= 1
        assert np.allclose(s.sum(axis=1), 1, atol=5e-3)  # float16 softmax
        assert np.ptp(s, axis=0).max() > 0.05  # dropout makes the samples differ
        n += 1
    assert n == 16


@pytest.mark.parametrize("box", ["normalized", "paper"])
@pytest.mark.parametrize("K", [2, 5])
def test_membership_monotone_in_lambda_on_real_samples(real_samples: Path, K: int, box: str):
    """Once the truth is in C_λ it stays in for every larger λ on the grid; the score λ* agrees
    with the grid (never above a λ where membership was certified, never below the exact lower
    bound); the certificate is a real member of every box from λ* on. GRID is in the normalised
    box's units; for the paper's box it is scaled by lambda_unit = 1/Σ_11 of each image."""
    seen_both = finite = 0
    for image_id, samples, truth in _load(real_samples):
        d = decompose(samples, K=K, box_alpha=0.1, box=box)
        res = consign_score(d, truth, BETA)
        grid = [lam * (d.lambda_unit if box == "paper" else 1.0) for lam in GRID]
        member = [is_member(d, truth, lam, BETA)[0] for lam in grid]
        first = member.index(True) if True in member else len(member)
        assert all(member[first:]) and not any(member[:first]), (image_id, member)
        seen_both += 0 < first < len(member)
        for lam, m in zip(grid, member):
            if lam < res.lower_bound:
                assert not m, image_id
            if m:
                assert res.lambda_ <= lam + 1e-9, (image_id, lam, res.lambda_)
        if math.isfinite(res.lambda_):
            finite += 1
            for lam in (res.lambda_, 2 * res.lambda_ + 1):
                lo, hi = d.box(lam)
                assert np.all(res.certificate >= lo - 1e-12) and np.all(res.certificate <= hi + 1e-12)
            assert agreement(d.segment(res.certificate), truth) > BETA
    # the test is only informative if some truths enter the set strictly inside the grid
    assert seen_both >= 2 and finite >= 5, (seen_both, finite)


def test_calibrated_set_contains_its_calibration_truths(real_samples: Path):
    """λ̂ from the real scores; contains() holds exactly for the images with λ*_i ≤ λ̂, and
    draws from the calibrated set are label maps of the image's shape."""
    items = [Case(i, samples=s, label_map=y) for i, s, y in _load(real_samples)]
    est = ConformalSegmenter("consign", alpha=0.2, method_params={"K": 2, "beta": BETA})
    prepared = est.prepare(items)
    scores = np.array([est.family.bind_alpha(0.2).score(p) for p in prepared])
    finite = scores[np.isfinite(scores)]
    if finite.size < 14:
        pytest.fail(f"only {finite.size} of 16 real truths are ever in the set; the fixture model is too weak")
    est.calibrate(prepared)
    assert np.array_equal(est.scores_, scores)
    for p, score in zip(prepared, scores):
        assert est.predict(p).contains() == bool(score <= est.lambda_)
    draws = est.predict(prepared[0]).sample(5, seed=0)
    assert draws.shape == (5, *items[0].label_map.shape) and draws.min() >= 0 and draws.max() < 2
