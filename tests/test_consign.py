"""CONSIGN and pixel-wise APS (segcp.segsets): box, membership, calibration, sampling,
diversity metrics, the reference procedure and the CLI — on SYNTHETIC samples.

Real MC-dropout samples of a trained UNet get their own (data) test later.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
from consign_toy import make_toy_cases

from segcp import Case, ConformalSegmenter
from segcp.calibration import LossCurves, conformal_quantile, crc_lambda, zero_one_curve
from segcp.cases import check_label_map, check_samples
from segcp.cli import main
from segcp.errors import SegcpError
from segcp.metrics.diversity import chao1, chao1_from_counts, frequency_counts, mean_abs_correlation, sampled_coverage
from segcp.segsets.agreement import agreement, truth_weights
from segcp.segsets.aps import aps_agreement, aps_draw, aps_score, aps_sets, entry_levels
from segcp.segsets.consign import SearchOptions, _Search, consign_score, decompose, draw, is_member, latin_hypercube, thin_svd

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"  # the reference procedure lives there
if str(BENCHMARKS) not in sys.path:
    sys.path.insert(0, str(BENCHMARKS))


@pytest.fixture(scope="module")
def cases():
    return make_toy_cases(24, shape=(32, 32), n_labels=4, n_samples=12, seed=3)


@pytest.fixture(scope="module")
def binary_cases():
    return make_toy_cases(6, shape=(32, 32), n_labels=2, n_samples=10, seed=4)


# ------------------------------------------------------------------ agreement and inputs
def test_agreement_is_mean_label_recall():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, (9, 7))
    y[0, 0] = 2
    pred = rng.integers(0, 4, (5, 9, 7))
    for p in pred:
        recalls = [np.mean(p[y == lab] == lab) for lab in np.unique(y)]
        assert agreement(p, y) == pytest.approx(np.mean(recalls))
    assert np.allclose(agreement(pred, y), [agreement(p, y) for p in pred])
    assert truth_weights(y).sum() == pytest.approx(1.0)


def test_input_checks():
    good = np.full((3, 2, 4, 4), 0.5)
    assert check_samples(good, "s", (4, 4)).shape == (3, 2, 4, 4)
    assert check_samples(np.full((3, 4, 4), 0.2), "s", (4, 4)).shape == (3, 2, 4, 4)  # binary
    with pytest.raises(SegcpError, match="at least 2 samples"):
        check_samples(good[:1], "s", (4, 4))
    with pytest.raises(SegcpError, match="do not match"):
        check_samples(good, "s", (5, 4))
    with pytest.raises(SegcpError, match=r"\[0, 1\]"):
        check_samples(good * 3, "s", (4, 4))
    with pytest.raises(SegcpError, match="only 2 classes"):
        check_label_map(np.array([[0, 2]]), "m", 2)
    assert check_label_map(np.array([[0, 255]], np.uint8), "m", 2).tolist() == [[0, 1]]


def test_stored_precision_is_kept(cases):
    """A float16/float32 sample stack is validated as stored (no float64 copy of it); the
    families compute in float64 from it, so the decomposition, the scores and the APS mean are
    those of the float64 array with the same values, bit for bit."""
    c = cases[0]
    for dtype in (np.float16, np.float32):
        x = c.samples.astype(dtype)
        checked = check_samples(x, "s", c.truth.shape)
        assert checked.dtype == dtype and np.shares_memory(checked, x)
        assert check_samples(np.full((3, 4, 4), 0.2, dtype), "s", (4, 4)).dtype == np.float64  # binary: a new stack
        a, b = decompose(x, K=2), decompose(x.astype(np.float64), K=2)
        for field in ("mean", "directions", "singular_values", "lower", "upper"):
            assert np.array_equal(getattr(a, field), getattr(b, field)), field
        assert consign_score(a, c.truth, 0.8).lambda_ == consign_score(b, c.truth, 0.8).lambda_
        case = Case("c", samples=x, label_map=c.truth)
        assert case.samples.dtype == dtype
        assert np.array_equal(case.mean_class_probs(), x.astype(np.float64).mean(axis=0))


# ------------------------------------------------------------------ SVD and box
def test_thin_svd_methods_agree():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((12, 5)) @ rng.standard_normal((5, 400)) + 0.01 * rng.standard_normal((12, 400))
    x -= x.mean(axis=0)
    ref = np.linalg.svd(x, compute_uv=False)[:4]
    for method in ("gram", "lapack", "randomized"):
        u, s, vt = thin_svd(x, 4, method)
        assert np.allclose(s, ref, rtol=1e-8)
        assert np.allclose(vt @ vt.T, np.eye(4), atol=1e-8)
        assert np.allclose((u * s) @ vt, x @ vt.T @ vt, atol=1e-8)  # rank-4 reconstruction
    u, s, vt = thin_svd(x[:3] - x[:3].mean(axis=0), 5, "gram")  # K > N − 1: empty components
    assert s[2:].tolist() == [0.0, 0.0, 0.0] and not vt[2:].any()


def test_box_contains_sample_coefficients(cases):
    for c in cases[:6]:
        d = decompose(c.samples, K=5, box_alpha=0.1, box="normalized")
        inside = (d.coefficients >= d.lower) & (d.coefficients <= d.upper)
        assert inside.mean() >= 0.8
        for lam in (1.0 / d.singular_values.min(), 2.0 / d.singular_values.min(), 50.0):
            lo, hi = d.box(lam)
            assert np.all(lam * d.singular_values >= 1.0 - 1e-12)
            assert np.all(lo <= d.lower + 1e-12) and np.all(hi >= d.upper - 1e-12)
            assert np.all((d.coefficients >= lo) | ~inside) and np.all((d.coefficients <= hi) | ~inside)
        # at λ Σ_kk = 1 the box is exactly [a_k, b_k]
        for k in range(d.K):
            lo, hi = d.box(1.0 / d.singular_values[k])
            assert lo[k] == pytest.approx(d.lower[k]) and hi[k] == pytest.approx(d.upper[k])
        # the samples are μ + Σ_k Σ_kk U_nk u_k (+ the discarded components)
        recon = d.mean + np.tensordot(d.coefficients * d.singular_values, d.directions, axes=1)
        resid = c.samples.reshape(len(c.samples), d.n_labels, -1) - recon
        assert np.linalg.norm(resid) < np.linalg.norm(c.samples.reshape(len(c.samples), d.n_labels, -1) - d.mean)


# ------------------------------------------------------------------ membership
@pytest.mark.parametrize("box", ["normalized", "paper"])
def test_surrogate_gradient_matches_finite_differences(cases, box):
    c = cases[0]
    d = decompose(c.samples, K=5, box=box)
    s = _Search(d, c.truth, 0.9, SearchOptions())
    lam = max(s.lower_bound, 0.3 * d.lambda_unit) * 2  # lambda_unit = 1 for the normalised box
    n = d.geometry.n_active(lam)
    assert n > 0
    t = np.random.default_rng(0).uniform(-1, 1, (3, d.K))
    _, grad, _ = s._soft(lam, t, n, 0.05)
    eps = 1e-6
    num = np.zeros_like(t)
    for k in range(d.K):
        e = np.zeros(d.K)
        e[k] = eps
        num[:, k] = (s._soft(lam, t + e, n, 0.05)[0] - s._soft(lam, t - e, n, 0.05)[0]) / (2 * eps)
    assert np.allclose(grad, num, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("box", ["normalized", "paper"])
def test_fixed_pixels_are_exact(cases, box):
    """Draws computed on the active pixels only equal the whole-image argmax (λ in units of
    lambda_unit: 1 for the normalised box, 1/Σ_11 for the paper's)."""
    rng = np.random.default_rng(5)
    for c in cases[:4]:
        d = decompose(c.samples, K=5, box=box)
        for units in (0.0, 0.2, 1.0, 5.0) + ((40.0,) if box == "paper" else ()):
            lam = units * d.lambda_unit
            t = rng.uniform(-1, 1, (20, d.K))
            fast = d.geometry.full_labels(lam, t)
            full = d.segment(d.centre + lam * d.unit_half_width * t).reshape(20, -1)
            assert np.array_equal(fast, full)
            seg = draw(d, lam, 7, seed=1)
            assert seg.shape == (7, *c.truth.shape)


def test_membership_monotone_in_lambda(cases):
    grid = [0.0, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2]
    seen_both = 0
    for c in cases[:8]:
        d = decompose(c.samples, K=2, box="normalized")
        res = consign_score(d, c.truth, 0.85)
        member = [is_member(d, c.truth, lam, 0.85)[0] for lam in grid]
        # once in, always in (nested boxes; the search finds it at every larger λ here)
        first = member.index(True) if True in member else len(member)
        assert all(member[first:]) and not any(member[:first])
        seen_both += 0 < first < len(member)
        # the score agrees with the grid: members only from λ* on (up to the grid step)
        for lam, m in zip(grid, member):
            if lam < res.lower_bound:
                assert not m  # exact: below the lower bound nobody is a member
            if m:
                assert res.lambda_ <= lam + 1e-9
        if math.isfinite(res.lambda_):
            # the certificate is in the box at λ* and in every larger box
            for lam in (res.lambda_, 2 * res.lambda_ + 1):
                lo, hi = d.box(lam)
                assert np.all(res.certificate >= lo - 1e-12) and np.all(res.certificate <= hi + 1e-12)
            assert agreement(d.segment(res.certificate), c.truth) > 0.85
            assert res.lower_bound <= res.lambda_
    assert seen_both >= 3


def test_score_close_to_brute_force_for_K2(cases):
    """K = 2: a dense grid over the box finds no member well below the search's λ*."""
    a = np.linspace(-1, 1, 81)
    grid_t = np.stack(np.meshgrid(a, a), -1).reshape(-1, 2)
    checked = 0
    for c in cases[:10]:
        d = decompose(c.samples, K=2, box="normalized")
        res = consign_score(d, c.truth, 0.85)
        if not (math.isfinite(res.lambda_) and res.lambda_ > 0.02):
            continue
        s = _Search(d, c.truth, 0.85, SearchOptions())
        below = 0.97 * res.lambda_
        if below >= s.lower_bound:
            assert s.exact(below, grid_t).max() <= 0.85 + 1e-12
        checked += 1
    assert checked >= 3


# ------------------------------------------------------------------ calibration
def _consign(alpha, n_jobs=1, **params):
    return ConformalSegmenter("consign", alpha=alpha, method_params={"K": 2, "beta": 0.8} | params, n_jobs=n_jobs)


def test_calibration_is_the_conformal_quantile(cases):
    est = _consign(0.2)
    items = [Case(c.id, samples=c.samples, label_map=c.truth) for c in cases]
    est.calibrate(items)
    s = est.scores_
    assert est.lambda_ == conformal_quantile(s, 0.2)
    curves = LossCurves.concat([zero_one_curve(v) for v in s])
    assert crc_lambda(curves, 0.2).lambda_ == pytest.approx(est.lambda_)
    assert est.n_ == len(cases)
    # same scores over two processes
    assert np.array_equal(_consign(0.2, n_jobs=2).calibrate(items[:4]).scores_, s[:4])
    # the record round-trips
    rec = json.loads(json.dumps(est.to_dict(), allow_nan=True))
    again = ConformalSegmenter.from_dict(rec)
    assert again.lambda_ == est.lambda_ and again.method_.params() == est.method_.params()
    assert np.array_equal(again.predict(items[0]).sample(5, seed=2), est.predict(items[0]).sample(5, seed=2))
    assert est.predict(items[0]).contains() == (s[0] <= est.lambda_)


def test_infinite_scores_give_a_clear_error():
    def curves(scores):
        return LossCurves.concat([zero_one_curve(v) for v in scores])

    with pytest.raises(SegcpError, match="never in the set"):
        ConformalSegmenter("consign", alpha=0.2).calibrate_curves(curves([0.1] * 5 + [math.inf] * 5))
    with pytest.raises(SegcpError, match="at least"):
        ConformalSegmenter("consign", alpha=0.05).calibrate_curves(curves([0.1] * 5))


# ------------------------------------------------------------------ APS
def test_aps_sets_nested_and_top1_in():
    rng = np.random.default_rng(2)
    mu = rng.dirichlet(np.ones(4), size=(6, 5)).transpose(2, 0, 1)  # (L, H, W)
    top = np.argmax(mu, axis=0)
    prev = None
    for lam in np.linspace(0, 1, 23):
        sets = aps_sets(mu, lam)
        assert np.all(np.take_along_axis(sets, top[None], axis=0))
        if prev is not None:
            assert np.all(sets >= prev)
        prev = sets
        # cumulative mass of the included classes reaches λ (or the set is everything)
        mass = (mu * sets).sum(axis=0)
        assert np.all((mass >= lam - 1e-12) | sets.all(axis=0))
    assert aps_sets(mu, 1.0).all()
    assert entry_levels(mu).min() == 0.0


def test_aps_score_exact_and_draws_inside(binary_cases, cases):
    for c in [*binary_cases, *cases[:4]]:
        mu = c.samples.mean(axis=0)
        s = aps_score(mu, c.truth, 0.9)
        assert aps_agreement(mu, c.truth, s) > 0.9
        assert aps_agreement(mu, c.truth, np.nextafter(s, -np.inf)) <= 0.9
        for mode in ("uniform", "prob"):
            d = aps_draw(mu, s, 50, seed=0, mode=mode)
            sets = aps_sets(mu, s)
            member = np.take_along_axis(sets[None].repeat(50, 0), d[:, None], axis=1)[:, 0]
            assert member.all()
    # uniform sampling on a 2-class set: each label about half the time
    mu = np.full((2, 40, 40), 0.5)
    d = aps_draw(mu, 0.6, 200, seed=0)
    assert abs(d.mean() - 0.5) < 0.02


# ------------------------------------------------------------------ diversity metrics
def test_chao1_known_counts():
    assert chao1_from_counts([1, 1, 1, 2, 2, 5]) == 7.0
    assert chao1_from_counts([1, 1, 1, 1]) == 10.0
    assert chao1_from_counts([3, 3]) == 2.0
    assert chao1_from_counts([1, 2]) == 2.0
    draws = np.array([[0, 1], [0, 1], [1, 1], [1, 0], [1, 0], [1, 0], [0, 0]])
    assert sorted(frequency_counts(draws).tolist()) == [1, 1, 2, 3]
    assert chao1(draws) == 4 + 2 * 1 / (2 * 2)


def test_sec_and_correlation():
    y = np.array([[0, 1], [1, 1]])
    draws = np.array([[[0, 0], [0, 0]], [[0, 1], [1, 0]]])
    assert sampled_coverage(draws, y, 0.7) == 1.0 and sampled_coverage(draws, y, 0.9) == 0.0
    rng = np.random.default_rng(0)
    indep = rng.integers(0, 2, (60, 400))
    assert mean_abs_correlation(indep, 2) < 0.1
    base = rng.integers(0, 2, 400)
    coherent = np.array([base if k % 2 else 1 - base for k in range(20)])
    assert mean_abs_correlation(coherent, 2) == pytest.approx(1.0)
    assert math.isnan(mean_abs_correlation(np.zeros((5, 10), int), 2))


# ------------------------------------------------------------------ reference procedure
def test_reference_procedure_matches_on_the_grid(cases):
    torch = pytest.importorskip("torch")
    from consign_reference import reference_score

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _compare_with_reference(cases, reference_score)
    finally:
        torch.set_num_threads(threads)


def _compare_with_reference(cases, reference_score):
    compared = 0
    for c in cases[:8]:
        d = decompose(c.samples, K=2, box="normalized")
        ours = consign_score(d, c.truth, 0.85).lambda_
        if not (0.01 < ours < 0.2):
            continue
        from consign_reference import ReferenceOptions

        ref = reference_score(d, c.truth, 0.85, ReferenceOptions(epochs=100, lambda_max=0.3))
        # ours is the (near-)exact λ*, the grid scan stops at the first grid point above it
        assert ours <= ref.lambda_ + 1e-9
        assert ref.lambda_ - ours <= 0.01 + 1e-9 or ref.lambda_ == math.inf
        compared += 1
        break
    assert compared >= 1


def test_latin_hypercube_strata():
    pts = latin_hypercube(16, 3, seed=0)
    assert pts.shape == (16, 3) and np.all(np.abs(pts) <= 1)
    strata = np.floor((pts + 1) / 2 * 16).astype(int)
    assert all(sorted(strata[:, k]) == list(range(16)) for k in range(3))


# ------------------------------------------------------------------ CLI
def _write_dir(root: Path, cases, binary_probs: bool = False) -> Path:
    (root / "samples").mkdir(parents=True)
    (root / "masks").mkdir()
    for c in cases:
        np.save(root / "samples" / f"{c.id}.npy", c.samples.astype(np.float16))
        np.save(root / "masks" / f"{c.id}.npy", c.truth.astype(np.uint8))
    return root


def _ok(argv):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 0


def test_cli_round_trip(tmp_path, cases, capsys):
    cal = _write_dir(tmp_path / "cal", cases[:16])
    test = _write_dir(tmp_path / "test", cases[16:])
    _ok(
        [
            "calibrate",
            "--method",
            "consign",
            "--K",
            "2",
            "--beta",
            "0.8",
            "--alpha",
            "0.2",
            "--data",
            str(cal),
            "--out",
            str(tmp_path / "c.json"),
            "-q",
        ]
    )
    rec = json.loads((tmp_path / "c.json").read_text())
    assert rec["method"] == "consign" and rec["params"]["K"] == 2 and rec["n"] == 16
    scores = np.array([np.inf if v is None else v for v in rec["scores"]])
    assert rec["lambda"] == conformal_quantile(scores, 0.2)
    _ok(["evaluate", "--calib", str(tmp_path / "c.json"), "--data", str(test), "--draws", "20", "--out", str(tmp_path / "m.json")])
    assert "SEC" in capsys.readouterr().out
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["n"] == 8 and m["draws"] == 20
    for key in ("chao", "sec", "correlation", "covered"):
        assert key in m["mean"] and all(key in v for v in m["per_image"].values())
    assert all(1 <= v["chao"] <= 20 + 20 * 19 / 2 for v in m["per_image"].values())
    # SEC never exceeds coverage: a draw that agrees certifies membership
    assert all(v["sec"] <= v["covered"] or v["score"] is None for v in m["per_image"].values())

    _ok(["calibrate", "--method", "aps", "--beta", "0.8", "--alpha", "0.2", "--data", str(cal), "--out", str(tmp_path / "a.json"), "-q"])
    rec = json.loads((tmp_path / "a.json").read_text())
    assert rec["source"] == "samples" and 0 <= rec["lambda"] <= 1
    _ok(["evaluate", "--calib", str(tmp_path / "a.json"), "--data", str(test), "--draws", "10", "--out", str(tmp_path / "am.json"), "-q"])
    assert json.loads((tmp_path / "am.json").read_text())["method"] == "aps"

    # APS from probs/ (L, *S) when there are no samples
    probs = tmp_path / "probs_only"
    (probs / "probs").mkdir(parents=True)
    (probs / "masks").mkdir()
    for c in cases[:16]:
        np.save(probs / "probs" / f"{c.id}.npy", c.samples.mean(axis=0))
        np.save(probs / "masks" / f"{c.id}.npy", c.truth)
    _ok(["calibrate", "--method", "aps", "--beta", "0.8", "--alpha", "0.2", "--data", str(probs), "--out", str(tmp_path / "a2.json"), "-q"])
    rec2 = json.loads((tmp_path / "a2.json").read_text())
    assert rec2["source"] == "probs" and rec2["lambda"] == pytest.approx(rec["lambda"], abs=1e-3)


def _fails(argv, capsys, match):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and match in err, err


def test_cli_bad_inputs(tmp_path, cases, capsys):
    root = _write_dir(tmp_path / "d", cases[:12])
    base = ["calibrate", "--method", "consign", "--alpha", "0.2", "--data", str(root), "--out", str(tmp_path / "c.json")]
    bad = root / "samples" / f"{cases[0].id}.npy"
    np.save(bad, cases[0].samples[:1])
    _fails(base, capsys, "at least 2 samples")
    np.save(bad, cases[0].samples[:, :, :5])
    _fails(base, capsys, "do not match the label map")
    np.save(bad, cases[0].samples)
    np.save(root / "masks" / f"{cases[0].id}.npy", np.full(cases[0].truth.shape, 7, np.uint8))
    _fails(base, capsys, "only 4 classes")
    np.save(root / "masks" / f"{cases[0].id}.npy", cases[0].truth)
    (root / "masks" / f"{cases[1].id}.npy").unlink()
    _fails(base, capsys, "no file for id")
    _fails(
        ["calibrate", "--method", "consign", "--alpha", "0.2", "--data", str(tmp_path / "d" / "masks"), "--out", str(tmp_path / "c.json")],
        capsys,
        "missing folder samples/",
    )
    _fails(base[:-2] + ["--beta", "1.5", "--out", str(tmp_path / "c.json")], capsys, "beta must be in")
    _fails(base + ["--K", "0"], capsys, "K must be a positive integer")
    _fails(["evaluate", "--data", str(root), "--out", str(tmp_path / "m.json")], capsys, "--sets DIR")


def test_3d_samples_and_binary_foreground_samples():
    rng = np.random.default_rng(7)
    from scipy import ndimage

    z = ndimage.gaussian_filter(rng.standard_normal((8, 4, 10, 10)), (0, 1, 2, 2)) * 6
    fg = 1 / (1 + np.exp(-(z + np.linspace(-3, 3, 10)[None, None, None, :])))  # (N, D, H, W) foreground
    truth = (np.linspace(-3, 3, 10)[None, None, :] > 0).repeat(4, 0).repeat(10, 1).astype(int)
    samples = check_samples(fg, "s", truth.shape)  # binary (N, *S) → (N, 2, *S)
    assert samples.shape == (8, 2, 4, 10, 10)
    res = consign_score(samples, truth, 0.8, K=3)
    d = decompose(samples, K=3)
    assert draw(d, 1.0, 5, seed=0).shape == (5, 4, 10, 10)
    if math.isfinite(res.lambda_):
        assert agreement(d.segment(res.certificate), truth) > 0.8
