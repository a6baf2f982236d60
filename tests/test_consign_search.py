"""CONSIGN's membership search (issue 28): the exact line searches (``strategy="lines"``, the
default) against issue 16's projected Adam (``strategy="adam"``, kept bit for bit).

- the certificate stays exact: whatever the search does, a certified c lies in the box and its
  whole-image argmax agrees with the truth by the exact rule (property tests);
- the line search is exact along its line, and for K = 2 the arrangement search finds a member
  whenever a dense grid over the box does;
- on the fixtures no image gets a larger λ* than with the Adam search, and a member the Adam
  search misses (a sliver of the box, the recorded BUSI benign_272 situation) is found.

SYNTHETIC samples only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from consign_toy import make_toy_cases
from hypothesis import given, settings
from hypothesis import strategies as st
from test_consign_box import _fx, _h

from segcp import ConformalSegmenter
from segcp.errors import SegcpError
from segcp.methods.consign import ConsignMethod
from segcp.segsets.agreement import agrees
from segcp.segsets.consign import SearchOptions, _line_range, _Search, absence_bound, consign_score, decompose, draw, is_member

GOLDEN_ADAM = Path(__file__).resolve().parent / "golden" / "consign_normalized_adam_e6d4653.json"


def _problem(seed: int, L: int, K: int, P: int = 60, N: int = 8):
    """N sampled softmax maps of L labels on a 1 × P image (a random mean plus K random modes
    with decreasing amplitudes) and a truth that is the argmax of a noisy mean: small problems
    whose truths are often far from the samples."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 1.5, (L, P))
    modes = rng.normal(0, 1, (K, L, P))
    amp = rng.normal(0, 1, (N, K)) * np.array([1.0, 0.6, 0.4, 0.3, 0.2][:K])
    z = logits[None] + np.einsum("nk,klp->nlp", amp, modes)
    s = np.exp(z - z.max(1, keepdims=True))
    s /= s.sum(1, keepdims=True)
    truth = np.argmax(logits + rng.normal(0, 1.2, (L, P)), axis=0)
    return s.reshape(N, L, 1, P), truth.reshape(1, P)


@pytest.fixture(scope="module")
def cases():
    return make_toy_cases(24, shape=(32, 32), n_labels=4, n_samples=12, seed=3)


# ------------------------------------------------------------------ the certificate stays exact
@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    L=st.sampled_from([2, 3, 4]),
    K=st.sampled_from([1, 2, 3, 5]),
    beta=st.sampled_from([0.6, 0.8, 0.9]),
    units=st.floats(0.0, 30.0),
    box=st.sampled_from(["paper", "normalized"]),
)
def test_lines_never_certifies_a_non_member(seed, L, K, beta, units, box):
    """A certified point of one membership test, and the score's certificate, are in their box
    and agree with the truth on the whole image by the exact rule (float64 argmax of
    μ + Σ c_k u_k, the agreement compared with β as a rational)."""
    s, y = _problem(seed, L, K)
    d = decompose(s, K=K, box=box)
    lam = units * d.lambda_unit
    ok, t, _ = _Search(d, y, beta, SearchOptions()).test(lam, [])
    if ok:
        assert np.all(np.abs(t) <= 1.0)
        c = d.centre + lam * d.unit_half_width * t
        assert agrees(d.segment(c), y, beta)
    member, c = is_member(d, y, lam, beta)
    assert member == ok
    if member:
        lo, hi = d.box(lam)
        assert np.all(c >= lo - 1e-12) and np.all(c <= hi + 1e-12) and agrees(d.segment(c), y, beta)
    r = consign_score(d, y, beta)  # re-checks its certificate on the whole image (AssertionError otherwise)
    if math.isfinite(r.lambda_) and r.lambda_ > 0:
        lo, hi = d.box(r.lambda_)
        assert np.all(r.certificate >= lo - 1e-12) and np.all(r.certificate <= hi + 1e-12)
        assert agrees(d.segment(r.certificate), y, beta) and r.lower_bound <= r.lambda_
        # the λ search keeps the smallest box that holds its certificate: c is on its border
        moving = d.unit_half_width > 0
        reach = np.abs(r.certificate - d.centre)[moving] / (r.lambda_ * d.unit_half_width[moving])
        assert reach.max() == pytest.approx(1.0, abs=1e-9) or r.lambda_ == pytest.approx(r.lower_bound)


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), L=st.sampled_from([2, 3, 4]), K=st.sampled_from([2, 3, 5]), units=st.floats(0.05, 10.0))
def test_line_search_is_exact_along_its_line(seed, L, K, units):
    """The best point the line search returns is at least as good as every point of a dense
    sampling of the same line (exact agreements), and its value is that point's agreement."""
    s, y = _problem(seed, L, K)
    d = decompose(s, K=K)
    search = _Search(d, y, 0.8, SearchOptions())
    lam = units * d.lambda_unit
    data = search._line_data(lam)
    if data is None:
        return
    rng = np.random.default_rng(seed)
    p0 = rng.uniform(-1, 1, (3, K))
    dirs = rng.standard_normal((3, K))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    xlo, xhi = _line_range(p0, dirs)
    x, v = search._line_best(data, p0, dirs, xlo, xhi)
    for i in range(3):
        xs = np.linspace(xlo[i], xhi[i], 2001)
        dense = search.exact(lam, p0[i] + xs[:, None] * dirs[i])
        best = search.exact(lam, (p0[i] + x[i] * dirs[i])[None])[0]
        assert xlo[i] <= x[i] <= xhi[i]
        assert best >= dense.max() - 1e-12
        assert v[i] == pytest.approx(best, abs=1e-9)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000), L=st.sampled_from([2, 3]), beta=st.sampled_from([0.7, 0.8, 0.9]), units=st.floats(0.05, 8.0))
def test_arrangement_search_finds_what_a_dense_grid_finds(seed, L, beta, units):
    """K = 2: if any point of a 201 × 201 grid over the box is a member, the arrangement
    search (every cell of the lines' arrangement) finds one; what it finds is certified."""
    s, y = _problem(seed, L, 2)
    d = decompose(s, K=2)
    search = _Search(d, y, beta, SearchOptions())
    lam = units * d.lambda_unit
    data = search._line_data(lam)
    if data is None:
        return
    a = np.linspace(-1, 1, 201)
    grid = np.stack(np.meshgrid(a, a), -1).reshape(-1, 2)
    on_grid = bool(search.certified(lam, grid, search.exact(lam, grid)).any())
    found = search._arrangement(lam, data)
    assert search.exhaustive == 1  # within the default work budget here
    if on_grid:
        assert found is not None
    if found is not None:
        t, agree = found
        assert agree > beta and agrees(d.segment(d.centre + lam * d.unit_half_width * t), y, beta)


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 10_000),
    L=st.sampled_from([2, 3]),
    beta=st.sampled_from([0.7, 0.8, 0.9]),
    below=st.floats(0.2, 0.99),
    factor=st.floats(1.05, 40.0),
)
def test_arrangement_search_after_a_proof_of_absence(seed, L, beta, below, factor):
    """K = 2: once the arrangement search ran to the end at λ₁ without a member, B_λ₁ holds none; at
    λ₂ > λ₁ it is the square [−λ₁/λ₂, λ₁/λ₂]² of t-space, which the search then skips — and it still
    finds a member wherever a dense grid over B_λ₂ does (none of them inside that square) or the
    score certified one (λ₁ below λ*, λ₂ = λ₁ × factor often above), with less work."""
    s, y = _problem(seed, L, 2)
    d = decompose(s, K=2)
    star = consign_score(d, y, beta).lambda_
    lam1 = below * (star if math.isfinite(star) else d.default_lambda_max)
    lam2 = factor * lam1
    first = _Search(d, y, beta, SearchOptions())
    data1 = first._line_data(lam1)
    if data1 is None or first._arrangement(lam1, data1) is not None or first.exhaustive != 1:
        return  # no proof of absence at λ₁ to build on
    a = np.linspace(-1, 1, 201)
    grid = np.stack(np.meshgrid(a, a), -1).reshape(-1, 2)
    member = first.certified(lam2, grid, first.exact(lam2, grid))
    inner = lam1 / lam2
    assert not member[np.abs(grid).max(axis=1) < inner * (1 - 1e-6)].any()  # the proof at λ₁, seen at λ₂
    data2 = first._line_data(lam2)
    plain, skip = _Search(d, y, beta, SearchOptions()), _Search(d, y, beta, SearchOptions())
    found = skip._arrangement(lam2, data2, inner)
    assert skip.exhaustive == 1
    if member.any() or lam2 >= star:
        assert found is not None
    if found is not None:
        t, agree = found
        assert agree > beta and agrees(d.segment(d.centre + lam2 * d.unit_half_width * t), y, beta)
    if found is None:  # both run to the end: the same verdict, the one that skips no slower
        assert plain._arrangement(lam2, data2) is None and plain.exhaustive == 1
        assert skip.evaluations <= plain.evaluations


def test_the_skip_changes_the_work_never_the_score(monkeypatch):
    """On problems where every arrangement search runs to the end within its budget, scoring with
    the skip of the boxes shown empty gives bit for bit the λ*, certificate and proof that scoring
    without it gives (its arrangement searches see the whole box), with no more evaluations."""
    rows = []
    for seed in range(12):
        s, y = _problem(seed, 2 + seed % 2, 2, P=300)
        d = decompose(s, K=2)
        rows.append([consign_score(d, y, beta) for beta in (0.8, 0.9)])
    whole = _Search._arrangement
    monkeypatch.setattr(_Search, "_arrangement", lambda self, lam, data, inner=0.0: whole(self, lam, data))
    changed = 0
    for seed, got in enumerate(rows):
        s, y = _problem(seed, 2 + seed % 2, 2, P=300)
        d = decompose(s, K=2)
        for beta, a in zip((0.8, 0.9), got):
            b = consign_score(d, y, beta)
            assert (a.lambda_, a.proven, a.tests) == (b.lambda_, b.proven, b.tests)
            assert (a.certificate is None and b.certificate is None) or np.array_equal(a.certificate, b.certificate)
            assert a.evaluations <= b.evaluations
            changed += a.evaluations < b.evaluations
    assert changed > 0  # the skip did skip something


def test_a_proof_far_above_the_last_one_is_cheap():
    """At a λ far above the last proof of absence every constraint line passes close to t = 0, and
    without the skipped square the finest squares there hold them all: the whole chain of tests up to
    500 × the first proof runs the arrangement search to the end within a budget that one test at
    that λ alone exceeds."""
    s, y = _problem(0, 2, 2, P=2000)
    d = decompose(s, K=2)
    beta = 0.9
    r = consign_score(d, y, beta, options=SearchOptions(lambda_max=500 * d.default_lambda_max, exhaustive=3_000_000))
    assert r.lambda_ == math.inf and r.proven == 500 * d.default_lambda_max
    lone = _Search(d, y, beta, SearchOptions(exhaustive=3_000_000))
    assert lone._arrangement(500 * d.default_lambda_max, lone._line_data(500 * d.default_lambda_max)) is None
    assert lone.exhaustive == 0  # over budget: no proof


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 10_000), L=st.sampled_from([2, 3]), K=st.sampled_from([2, 3]), beta=st.sampled_from([0.7, 0.8, 0.9]))
def test_absence_bound_is_a_proof(seed, L, K, beta):
    """absence_bound: no point of a dense grid over B_λ at the bound is a member, and the search's λ*
    is never below it (a certified member at λ* bounds every proof)."""
    s, y = _problem(seed, L, K)
    d = decompose(s, K=K)
    bound = absence_bound(d, y, beta, lambda_to=50 * d.default_lambda_max, rtol=1e-3)
    assert bound <= consign_score(d, y, beta).lambda_ * (1 + 1e-9)
    if math.isfinite(bound) and bound > 0:
        a = np.linspace(-1, 1, 41 if K == 3 else 201)
        grid = np.stack(np.meshgrid(*[a] * K), -1).reshape(-1, K)
        search = _Search(d, y, beta, SearchOptions())
        assert not search.certified(bound, grid, search.exact(bound, grid)).any()


def test_absence_bound_is_tight_on_most_problems():
    """On 60 small problems (K = 2 and 3): the truths the search never reaches are shown absent up to
    ``lambda_to`` on all but a few, and for the others the bound is within 1 % of λ* on most — it can
    stop lower where the box branch and bound meets a region it cannot cut (members only on a
    boundary) or where the search's λ* is above the exact one (K = 3: no exhaustive search)."""
    rng = np.random.default_rng(0)
    proven = reached = tight = unreached = 0
    for _ in range(60):
        seed, L, K, beta = int(rng.integers(0, 10_000)), int(rng.choice([2, 3])), int(rng.choice([2, 3])), float(rng.choice([0.7, 0.8, 0.9]))
        s, y = _problem(seed, L, K)
        d = decompose(s, K=K)
        top = 50 * d.default_lambda_max
        bound = absence_bound(d, y, beta, lambda_to=top, rtol=1e-3)
        star = consign_score(d, y, beta).lambda_
        if math.isinf(star):
            unreached += 1
            proven += bound >= top
        elif star > 0:
            reached += 1
            tight += bound >= 0.99 * star
    assert unreached >= 20 and proven >= unreached - 2
    assert reached >= 10 and tight >= reached - 3


# ------------------------------------------------------------------ at least as strong as the Adam search
@pytest.mark.parametrize("K", [2, 5])
def test_lines_finds_every_member_the_adam_search_finds(cases, K):
    """On the 24 toy images, β = 0.85 and 0.9: λ*_lines ≤ λ*_adam per image (up to the
    bisection's 10⁻³ tolerance), and smaller on several; never a score above the old one."""
    lower = 0
    for beta in (0.85, 0.9):
        for c in cases:
            d = decompose(c.samples, K=K)
            new = consign_score(d, c.truth, beta).lambda_
            old = consign_score(d, c.truth, beta, options=SearchOptions(strategy="adam")).lambda_
            assert new <= old * (1 + 2e-3) + 1e-12, (c.id, beta, new, old)
            lower += new < old * (1 - 2e-3)
    assert lower >= 5


def test_a_member_the_adam_search_misses():
    """The BUSI benign_272 situation (docs/consign.md) on a 60-pixel binary example: with the
    paper's box the Adam search gives λ* = ∞, the normalised box's Adam search reaches the
    truth (λ*_normalized = 0.61), and the paper's box at its lambda_max contains that
    normalised box — so the truth is in the paper's family. Its members there are a sliver
    (0.2 % of the box at 2 λ*, no point of a 401 × 401 grid at 100 λ*) beside the box's edge
    (t_2 = 1), which 64 screening points and Adam's steps (capped at a tenth of the samples'
    spread) never reach; the exact line search along t_1 on that edge does."""
    s, y = _problem(28, 2, 2)
    beta = 0.8
    paper, norm = decompose(s, K=2), decompose(s, K=2, box="normalized")
    adam = SearchOptions(strategy="adam")
    assert consign_score(paper, y, beta, options=adam).lambda_ == math.inf
    reach = consign_score(norm, y, beta, options=adam)
    assert reach.lambda_ == pytest.approx(0.609, abs=1e-3)
    lo_n, hi_n = norm.box(reach.lambda_)
    lo_p, hi_p = paper.box(paper.default_lambda_max)
    assert np.all(lo_p <= lo_n) and np.all(hi_p >= hi_n)
    r = consign_score(paper, y, beta)
    assert r.lambda_ == pytest.approx(0.2095, abs=1e-3)
    assert agrees(paper.segment(r.certificate), y, beta)
    t = (r.certificate - paper.centre) / (r.lambda_ * paper.unit_half_width)
    assert t[1] == pytest.approx(1.0, abs=1e-9)
    a = np.linspace(-1, 1, 401)
    grid = np.stack(np.meshgrid(a, a), -1).reshape(-1, 2)
    for factor, most in ((2.0, 0.005), (100.0, 0.0)):
        lam = factor * r.lambda_
        sr = _Search(paper, y, beta, SearchOptions())
        assert sr.certified(lam, grid, sr.exact(lam, grid)).mean() <= most
        assert not _Search(paper, y, beta, adam).test(lam, [])[0]
        assert _Search(paper, y, beta, SearchOptions(exhaustive=0)).test(lam, [])[0]  # the line searches alone


# ------------------------------------------------------------------ the Adam search is issue 16's, bit for bit
def test_adam_strategy_is_the_issue16_search_bit_for_bit():
    """``strategy="adam"`` reproduces the golden record of segcp before issue 16 (normalised
    box: λ*, lower bounds, certificates, work counters, draws; the record test_consign_box.py
    held before issue 28 made the line searches the default)."""
    golden = json.loads(GOLDEN_ADAM.read_text())
    toy = make_toy_cases(8, shape=(32, 32), n_labels=4, n_samples=12, seed=3)
    adam = SearchOptions(strategy="adam")
    scores = []
    for K in (2, 5):
        for beta in (0.85, 0.97):
            for c in toy:
                d = decompose(c.samples, K=K, box_alpha=0.1, box="normalized")
                if K == 2 and beta == 0.85 and c is toy[0]:
                    flat = c.samples.astype(np.float64).reshape(len(c.samples), -1)
                    from segcp.segsets.consign import thin_svd

                    u, sv, vt = thin_svd(flat - flat.mean(axis=0), 5, "gram")
                    if _h(u) + _h(sv) + _h(vt) != golden["svd"][0]:
                        pytest.skip("this platform's SVD differs in the last bits from the golden's")
                r = consign_score(d, c.truth, beta, options=adam)
                lam = r.lambda_
                drawn = _h(draw(d, lam if math.isfinite(lam) else 1.0, 20, seed=1))
                scores.append(
                    [
                        _fx(lam),
                        _fx(r.lower_bound),
                        None if r.certificate is None else [_fx(v) for v in r.certificate],
                        _fx(r.agreement) if math.isfinite(lam) else None,
                        r.tests,
                        r.steps,
                        r.evaluations,
                        drawn,
                    ]
                )
    for i, (a, b) in enumerate(zip(scores, golden["scores"])):
        assert a == b, f"image/setting {i}: {a} != {b}"
    from segcp import Case

    est = ConformalSegmenter("consign", alpha=0.3, method_params={"K": 2, "beta": 0.8, "box": "normalized", "strategy": "adam"})
    est.calibrate([Case(str(c.id), samples=c.samples, label_map=c.truth) for c in toy])
    assert [_fx(est.lambda_), [_fx(v) for v in est.scores_]] == golden["calib"]


# ------------------------------------------------------------------ options and records
def test_strategy_option_and_old_records():
    assert SearchOptions().strategy == "lines" and SearchOptions().starts == 8
    assert SearchOptions(strategy="adam").starts == 4 and SearchOptions(n_starts=3).starts == 3
    with pytest.raises(SegcpError, match="strategy must be one of lines, adam"):
        SearchOptions(strategy="gradient")
    with pytest.raises(SegcpError, match="exhaustive must be a non-negative integer"):
        SearchOptions(exhaustive=-1)
    # flat options reach the search; a record written before issue 28 (every option of issue
    # 16's search, no strategy) is read as the Adam search its scores came from
    assert ConsignMethod.normalize_params({"strategy": "adam"})["search"] == {"strategy": "adam"}
    assert ConsignMethod.normalize_params({"max_iter": 50})["search"] == {"max_iter": 50}
    old = {
        "n_screen": 64,
        "n_starts": 4,
        "max_iter": 120,
        "patience": 20,
        "lr": 0.1,
        "temperature": 0.3,
        "rtol": 0.001,
        "atol": None,
        "lambda_max": None,
        "seed": 0,
    }
    assert ConsignMethod.normalize_params({"search": old})["search"]["strategy"] == "adam"
    assert ConsignMethod(search=dict(old)).options().strategy == "lines"  # a fresh family: the default
    record = ConsignMethod.normalize_params({"search": dict(old)})
    assert ConsignMethod(**record).options() == SearchOptions(**old, strategy="adam")


# ------------------------------------------------------------------ the per-image comparison's bookkeeping
def test_compare_summary_counts_misses_and_bounds_the_reference():
    """benchmarks/consign_compare.py: a miss is a λ* more than one grid step above the
    reference's; the reference's λ̂ is bounded below where it certified nothing by its cap."""
    from consign_compare import summarize

    def row(i, lines, adam, ref, at_least=None, cause=None):
        r = {
            "id": f"im{i}",
            "K": 2,
            "beta": 0.8,
            "lines": {"lambda": lines, "seconds": 1.0, "exhaustive": 0, "proven": 0.0, "miss": False},
            "adam": {"lambda": adam, "seconds": 0.5, "exhaustive": 0, "proven": 0.0, "miss": False},
            "reference": {"lambda": ref, "cap": 1.0, "at_least": ref if ref is not None else at_least, "seconds": 10.0, "grid_points": 3},
        }
        for s, lam in (("lines", lines), ("adam", adam)):
            miss = ref is not None and (lam is None or lam > ref + 0.01 + 1e-9)
            r[s]["miss"] = miss
            if miss:
                r[s]["cause"] = cause
        return r

    rows = [row(i, 0.011 * i, 0.011 * i, round(0.01 * (int(1.1 * i) + 1), 2)) for i in range(18)]
    rows.append(row(18, 0.05, 0.20, 0.06, cause="start"))  # the Adam search misses this one
    rows.append(row(19, None, None, None, at_least=1.01))  # certified by nobody up to the cap
    out = summarize(rows, 0.1)["K=2 beta=0.8"]
    assert out["n"] == 20 and out["lines"]["misses"] == 0 and out["adam"]["misses"] == 1
    assert out["adam"]["causes"] == {"start": 1} and out["adam"]["missed_ids"] == ["im18"]
    assert out["lines"]["infinite"] == out["adam"]["infinite"] == 1
    # n = 20, α = 0.1: the 19th smallest score; the reference's is at least the 19th of its bounds
    assert out["lines"]["lambda_hat"] == pytest.approx(sorted(0.011 * i for i in range(18))[-1])
    assert out["reference"]["lambda_hat_at_least"] == pytest.approx(0.19)
    assert out["lines_lambda_hat_within_one_step"] is True
    assert out["lines_vs_adam"] == {"lower": 1, "higher": 0}


def test_reference_bound_uses_the_proof_that_no_member_exists():
    """Where the reference certified nothing, its grid λ* is at least the next grid point above
    its scan, or above the lines search's proven bound (no member below it) where that is higher."""
    from consign_compare import reference_at_least

    def row(ref, at_least, proven):
        return {"reference": {"lambda": ref, "at_least": at_least}, "lines": {"proven": proven}}

    assert reference_at_least(row(0.07, 0.07, 3.2)) == 0.07  # certified: its own value, whatever the proof
    assert reference_at_least(row(None, 0.51, 0.12)) == 0.51  # the scan's bound is the higher
    assert reference_at_least(row(None, 0.51, 3.2287)) == pytest.approx(3.23)  # the proof's
    assert reference_at_least(row(None, 0.51, 3.23)) == pytest.approx(3.24)  # on a grid point: the next one
    assert reference_at_least(row(None, 0.51, None)) == 0.51


def test_absence_at_the_authors_last_grid_point():
    """A K = 2 truth the arrangement search shows absent at λ = 500 is in no box of the authors' grid:
    their λ* is ∞ (reference_at_least), so a λ̂ that is ∞ on both sides counts as within one step; a
    truth with a member beyond segcp's lambda_max is listed; and prove_absent on a case decides both."""
    from consign_compare import REF_LAMBDA_MAX, diagnose, prove_absent, reference_at_least, rescore, summarize

    def row(i, lam, absent=None, member=None):
        return {
            "id": f"im{i}",
            "K": 2,
            "beta": 0.9,
            "lines": {"lambda": lam, "seconds": 1.0, "exhaustive": 0, "proven": 3.0, "miss": False, "absent_to": absent, "member_at": member},
            "adam": {"lambda": lam, "seconds": 1.0, "exhaustive": 0, "proven": 3.0, "miss": False},
            "reference": {
                "lambda": None if lam is None else lam,
                "cap": 1.0,
                "at_least": 0.51 if lam is None else lam,
                "seconds": 1.0,
                "grid_points": 1,
            },
        }

    assert reference_at_least(row(0, None, absent=REF_LAMBDA_MAX)) == math.inf
    assert reference_at_least(row(0, None)) == pytest.approx(3.01)  # the proof up to 3.0 only
    rows = [row(i, 0.01 * (i + 1)) for i in range(17)] + [row(17 + i, None, absent=REF_LAMBDA_MAX) for i in range(3)]
    out = summarize(rows, 0.1)["K=2 beta=0.9"]  # n = 20: the 19th score, one of the absent truths
    assert out["lines"]["lambda_hat"] is None and out["reference"]["lambda_hat_at_least"] is None
    assert out["lines_lambda_hat_within_one_step"] is True
    rows[-2:] = [row(18, None, member=6.03), row(19, None, member=7.5)]  # members beyond segcp's lambda_max
    out = summarize(rows, 0.1)["K=2 beta=0.9"]
    assert out["beyond_lambda_max"] == {"im18": 6.03, "im19": 7.5}
    assert out["lines_lambda_hat_within_one_step"] is False  # ∞ against a reference bounded by its scan

    # on small problems: each truth segcp calls ∞ is either shown absent at λ = 500 (no point of a dense
    # grid over that box is a member: the proof checked) or has a member beyond segcp's lambda_max (certified there)
    kinds = set()
    for seed in range(60):
        samples, y = _problem(seed, 3, 2)
        d = decompose(samples, K=2, box_alpha=0.1, box="paper")
        if math.isfinite(consign_score(d, y, 0.8).lambda_):
            continue
        got = prove_absent(d, y, 0.8)
        absent, member = got["absent_to"], got["member_at"]
        search = _Search(d, y, 0.8, SearchOptions())
        if absent is not None:
            a = np.linspace(-1, 1, 201)
            grid = np.stack(np.meshgrid(a, a), -1).reshape(-1, 2)
            assert member is None and not search.certified(absent, grid, search.exact(absent, grid)).any()
            assert got["proven_to"] == REF_LAMBDA_MAX
            kinds.add("absent")
            unreached = samples, y, d
        elif member is not None:
            assert member > search.lambda_max and is_member(d, y, member * (1 + 1e-9), 0.8)[0]
            assert got["proven_to"] <= member  # its proof of absence stops below the member
            kinds.add("beyond")
    assert "absent" in kinds  # (on these problems every truth segcp calls ∞ is absent at λ = 500; ACDC has one beyond)
    # a reference certificate beyond the default search's range is a miss caused by that setting
    samples, y, d = unreached
    assert diagnose(d, y, 0.8, "lines", 2 * d.default_lambda_max, np.zeros(2)) == "lambda_max"
    assert diagnose(d, y, 0.8, "lines", 0.5 * d.default_lambda_max, np.zeros(2)) != "lambda_max"
    # ... and --rescore keeps such a row's reference (no reference start is needed to name the cause)
    far = row(0, None) | {"K": 2, "beta": 0.8}
    far["reference"] = far["reference"] | {"lambda": 2 * d.default_lambda_max}
    got = rescore((far, samples, y, 0.1, None))
    assert got["reference"]["lambda"] == 2 * d.default_lambda_max
    assert got["lines"]["miss"] and got["lines"]["cause"] == "lambda_max" and got["lines"]["lambda"] is None
