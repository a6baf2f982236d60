"""Learn then Test (segcp.calibration.ltt): p-values, family-wise error control, the exact
fixed sequence over breakpoints, several risks, and the cross-check against MAPIE.

* HB p-values equal MAPIE's ``compute_hoeffding_bentkus_p_value``; Bonferroni, Holm and the
  fixed sequence reject what MAPIE's ``control_fwer`` rejects.
* On MAPIE's own grid with MAPIE's p-value, ``SemanticSegmentationController(risk="precision")``
  and :func:`ltt_grid` give the same λ̂ and the same certified set on the same arrays (the
  ``fdr`` loss with MAPIE's empty-set convention gives MAPIE's per-image risks).
* :func:`ltt_steps` (lazy blocks over the union of breakpoints) equals the brute force: every
  interval's p-value, first failure.
* Both p-values are valid under the null (P(p ≤ u) ≤ u, simulated).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import segcp.calibration.ltt as ltt_mod
from segcp.calibration import LossCurves, fnr_curve
from segcp.calibration.ltt import StepLosses, certified, hb_pvalue, ltt_chains, ltt_grid, ltt_steps, pvalues, wsr_pvalue
from segcp.errors import SegcpError
from segcp.losses import get_loss

mapie_methods = pytest.importorskip("mapie.risk_control.methods")
from mapie.risk_control import SemanticSegmentationController
from mapie.risk_control.fwer_control import control_fwer


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 400), alpha=st.sampled_from([0.05, 0.1, 0.2, 0.5]), binary=st.booleans())
def test_hb_pvalue_is_mapies(seed, n, alpha, binary):
    rng = np.random.default_rng(seed)
    r_hat = np.concatenate([rng.random(20), [0.0, alpha, 1.0], rng.integers(0, n + 1, 5) / n])
    theirs = mapie_methods.compute_hoeffding_bentkus_p_value(r_hat, n, alpha, binary)[:, 0]
    mine = hb_pvalue(r_hat, n, alpha, binary=binary)
    np.testing.assert_allclose(mine, np.minimum(theirs, 1.0), rtol=1e-12, atol=0)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), m=st.integers(1, 60), delta=st.sampled_from([0.05, 0.1, 0.3]))
def test_procedures_reject_what_mapie_rejects(seed, m, delta):
    rng = np.random.default_rng(seed)
    p = rng.random(m) ** rng.uniform(1, 8)  # many small p-values
    for mine, theirs in [("bonferroni", "bonferroni"), ("holm", "bonferroni_holm"), ("fixed-sequence", "fixed_sequence")]:
        want = np.zeros(m, bool)
        want[control_fwer(p, delta, theirs)] = True
        assert np.array_equal(certified(p, delta, mine), want), mine


def mapie_case(seed: int, n: int = 120, shape: tuple[int, int] = (12, 12)) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities (n, 1, H, W) off the 0.01 grid and truths (each non-empty, as MAPIE requires)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    probs, truths = [], []
    for _ in range(n):
        cy, cx, rad = rng.uniform(3, 9), rng.uniform(3, 9), rng.uniform(2, 4)
        d = np.hypot(yy - cy, xx - cx)
        truth = d <= rad
        truth[int(cy), int(cx)] = True
        p = 1 / (1 + np.exp(-(rad - d) * rng.uniform(0.8, 3) - rng.normal(0, 1.0, shape)))
        on_grid = np.isclose(p * 100, np.round(p * 100), atol=1e-9)
        p[on_grid] += 1e-6
        probs.append(p[None])
        truths.append(truth[None])
    return np.stack(probs), np.stack(truths)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_same_lambda_as_mapie_on_mapies_grid(seed):
    probs, truths = mapie_case(seed)
    ctrl = SemanticSegmentationController(predict_function=lambda x: x, risk="precision", target_level=0.8, confidence_level=0.9)
    ctrl.calibrate(probs, truths)
    grid = ctrl.predict_params  # np.arange(0, 1, 0.01): C = {p > t}
    # the same sets as segcp sublevel sets: r = −p, C_λ = {r ≤ λ} = {p ≥ −λ}, λ = −t (no p on the grid)
    loss = get_loss("fdr", empty_set=1.0)  # MAPIE counts an empty set as a failure
    mine = np.stack([loss.values(-p[0], y[0], -grid) for p, y in zip(probs, truths)])
    np.testing.assert_allclose(mine, ctrl._risks, rtol=0, atol=1e-15)  # 1 − TP/|C| there, FP/|C| here
    res = ltt_grid(mine, -grid, 0.2, 0.1, pvalue="hb", procedure="holm")
    assert res.feasible and ctrl.best_predict_param.shape == (1,)
    assert res.lambda_ == -ctrl.best_predict_param[0]
    assert np.array_equal(np.sort(-res.certified), np.sort(ctrl.valid_predict_params[0]))
    # and on MAPIE's own risk matrix
    assert ltt_grid(ctrl._risks, -grid, 0.2, 0.1, procedure="holm").lambda_ == -ctrl.best_predict_param[0]


def brute_force_steps(steps: StepLosses, alpha, delta, pvalue, order, low, high):
    """Every interval's representative, all p-values, the first failure in the order."""
    b = steps.candidates(low, high)
    reps = np.unique(np.concatenate([[low], b[b > low]]))
    if order == "descending":
        top = reps[reps <= high]
        reps = top[::-1]
    L = steps.evaluate(reps)
    p = pvalues(L, alpha, delta, pvalue=pvalue)
    ok = certified(p, delta, "fixed-sequence")
    k = int(ok.sum())
    return (None if k == 0 else float(reps[k - 1])), np.sort(reps[:k])


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n=st.integers(5, 80),
    pvalue=st.sampled_from(["hb", "wsr"]),
    order=st.sampled_from(["ascending", "descending"]),
    bounded=st.booleans(),
    alpha=st.sampled_from([0.1, 0.3]),
)
def test_ltt_steps_is_the_brute_force(seed, n, pvalue, order, bounded, alpha):
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ltt_mod, "_BLOCK", 16)  # many small blocks
        check_against_brute_force(seed, n, pvalue, order, bounded, alpha)


def check_against_brute_force(seed, n, pvalue, order, bounded, alpha):
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(n):
        k = int(rng.integers(0, 30))
        b = np.sort(rng.integers(0, 50, k) / 50.0)
        v = np.clip(np.cumsum(rng.normal(0.01 if order == "ascending" else -0.01, 0.05, k + 1)) + (0.0 if order == "ascending" else 0.6), 0, 1)
        parts.append(StepLosses.single(b, v))
    steps = StepLosses.concat(parts)
    low, high = (0.2, 0.8) if bounded else (-np.inf, np.inf)
    res = ltt_steps(steps, alpha, 0.1, pvalue=pvalue, order=order, lambda_min=low, lambda_max=high)
    lam, cert = brute_force_steps(steps, alpha, 0.1, pvalue, order, low, high)
    assert res.lambda_ == lam
    assert np.array_equal(res.certified, cert)
    if lam is not None:
        assert res.low <= lam < res.high
        assert res.empirical_risk == pytest.approx(steps.evaluate(lam).mean(), abs=1e-12)


def test_ltt_steps_regions():
    # FDR-like: 0 before 0.1, 0.02 on [0.1, 0.5), 0.4 from 0.5 on
    fdr = StepLosses.concat([StepLosses.single([0.1, 0.5], [0.0, 0.02, 0.4])] * 200)
    res = ltt_steps(fdr, 0.1, 0.1)
    assert res.lambda_ == 0.1 and res.low == -np.inf and res.high == 0.5 and res.certified.tolist() == [-np.inf, 0.1]
    # FNR-like, descending from the largest sets: certified from 0.5 on (up to lambda_max)
    fnr = StepLosses.concat([StepLosses.single([0.1, 0.5], [1.0, 0.3, 0.0])] * 200)
    res = ltt_steps(fnr, 0.1, 0.1, order="descending", lambda_max=1.0)
    assert res.lambda_ == 0.5 and res.low == 0.5 and res.high == math.nextafter(1.0, 2.0)
    # LossCurves are accepted and give the same as their step form
    curves = LossCurves.concat([fnr_curve([0.1, 0.5, 0.5, 0.7])] * 150)
    a = ltt_steps(curves, 0.1, 0.1, order="descending", pvalue="wsr")
    b = ltt_steps(StepLosses.from_curves(curves), 0.1, 0.1, order="descending", pvalue="wsr")
    assert a.lambda_ == b.lambda_ == 0.7
    # nothing certified: the first hypothesis fails
    none = ltt_steps(fnr, 0.1, 0.1, order="ascending")
    assert not none.feasible and none.lambda_ is None and none.certified.size == 0 and none.tested == 1


def test_pvalues_are_valid_under_the_null():
    """P(p ≤ u) ≤ u when R = α exactly (the boundary of H: R ≥ α), for both p-values."""
    rng = np.random.default_rng(7)
    reps, n, alpha = 4000, 40, 0.2
    bern = (rng.random((n, reps)) < alpha).astype(float)  # 0/1 losses with mean α
    beta = rng.beta(2, 8, (n, reps))  # continuous losses with mean 0.2
    for losses in (bern, beta):
        for name in ("hb", "wsr"):
            p = pvalues(losses, alpha, 0.1, pvalue=name)
            for u in (0.05, 0.1, 0.2):
                frac = float(np.mean(p <= u))
                se = math.sqrt(u * (1 - u) / reps)
                assert frac <= u + 3 * se, (name, u, frac)
    # the exact binomial tail for 0/1 losses is valid too, and tighter than the factor e
    exact = hb_pvalue(bern.mean(axis=0), n, alpha, binary=True)
    assert float(np.mean(exact <= 0.1)) <= 0.1 + 3 * math.sqrt(0.09 / reps)
    assert np.all(exact <= hb_pvalue(bern.mean(axis=0), n, alpha) + 1e-15)


def test_wsr_is_tighter_than_hb_for_narrow_losses():
    rng = np.random.default_rng(0)
    losses = rng.uniform(0.04, 0.09, (100, 1))  # per-image FDRs spread narrowly below α
    wsr, hb = wsr_pvalue(losses, 0.1, 0.1)[0], hb_pvalue(losses.mean(axis=0), 100, 0.1)[0]
    assert wsr < 0.1 and hb > 0.3  # measured: 0.044 and 0.46


def test_ltt_grid_orders_and_several_risks():
    lam = np.linspace(0, 1, 11)
    fnr = np.tile(np.clip(1 - 1.5 * lam, 0, 1), (3000, 1))
    fdr = np.tile(0.2 * lam, (3000, 1))
    # one risk, descending: certified from the top down to where FNR ≤ ~0.05 passes
    res = ltt_grid(fnr, lam, 0.1, 0.1, order="descending")
    assert res.lambda_ == lam[7] and res.certified.tolist() == lam[7:].tolist()
    # two risks at once on a stated grid: max of the p-values, Bonferroni over the grid
    both = ltt_grid(np.stack([fnr, fdr]), lam, [0.1, 0.2], 0.1, procedure="bonferroni")
    p = np.maximum(hb_pvalue(fnr.mean(axis=0), 3000, 0.1), hb_pvalue(fdr.mean(axis=0), 3000, 0.2))
    assert both.certified.tolist() == lam[p <= 0.1 / 11].tolist() == lam[7:9].tolist()  # FDR 0.18 at 0.9: p = 0.18
    assert both.lambda_ == lam[8]
    with pytest.raises(SegcpError, match="losses must have shape"):
        ltt_grid(fnr, lam[:-1], 0.1, 0.1)
    with pytest.raises(SegcpError, match="unknown procedure"):
        ltt_grid(fnr, lam, 0.1, 0.1, procedure="bh")
    with pytest.raises(SegcpError, match="unknown p-value"):
        ltt_grid(fnr, lam, 0.1, 0.1, pvalue="bernstein")
    with pytest.raises(SegcpError, match="delta must be in"):
        ltt_grid(fnr, lam, 0.1, 1.5)
    with pytest.raises(SegcpError, match="alpha must be in"):
        ltt_grid(fnr, lam, 0.0, 0.1)
    with pytest.raises(SegcpError, match="unknown order"):
        ltt_steps(StepLosses.from_curves(fnr_curve([0.5])), 0.1, 0.1, order="up")
    with pytest.raises(SegcpError, match="mean losses must lie"):
        hb_pvalue([1.5], 10, 0.1)


def test_ltt_chains_two_risks_two_configurations():
    """FNR (descending) and FDR (ascending) of two families; the chains' regions, the choice."""

    def case(shift: float, n: int = 400) -> list[StepLosses]:
        b = np.array([0.2, 0.4, 0.6, 0.8]) + shift
        fnr = StepLosses.concat([StepLosses.single(b, [1.0, 0.5, 0.1, 0.02, 0.0])] * n)
        fdr = StepLosses.concat([StepLosses.single(b, [0.0, 0.01, 0.05, 0.12, 0.4])] * n)
        return [fnr, fdr]

    configs = [case(0.0), case(0.05)]
    res = ltt_chains(configs, [0.1, 0.2], 0.1, orders=["descending", "ascending"])
    # each chain at δ/4; both configurations certified on [0.6 + s, 0.8 + s)
    for k, s in enumerate((0.0, 0.05)):
        fnr_chain, fdr_chain = res.chains[k]
        assert fnr_chain.lambda_ == pytest.approx(0.6 + s) and fdr_chain.high == pytest.approx(0.8 + s)
        assert res.regions[k] == (fnr_chain.low, fdr_chain.high)
    # choice: the smallest empirical FNR among certified configurations: 0.02 at λ = 0.6 + s for both
    # configurations (tie) → the smaller FDR (equal), then the smaller λ: configuration 0
    assert res.config == 0 and res.lambda_ == pytest.approx(0.6) and res.risks.tolist() == pytest.approx([0.02, 0.12])
    assert res.front.shape[1] == 4 and ((res.front[:, 0] == 0) & (res.front[:, 1] == res.lambda_)).any()
    # objective = FDR: the smallest certified FDR is 0.0 at the lowest λ of the region... but FNR
    # must be certified too, so only [0.6, 0.8) qualifies: FDR 0.12 there
    assert ltt_chains(configs, [0.1, 0.2], 0.1, orders=["descending", "ascending"], objective=1).risks[1] == pytest.approx(0.12)
    # infeasible: FNR ≤ 0.01 is never certified
    none = ltt_chains(configs, [0.01, 0.2], 0.1, orders=["descending", "ascending"])
    assert not none.feasible and none.lambda_ is None and all(math.isnan(lo) for lo, _ in none.regions)
    with pytest.raises(SegcpError, match="one direction per risk"):
        ltt_chains(configs, [0.1, 0.2], 0.1, orders=["descending"])


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), n=st.integers(1, 12), m=st.integers(1, 40), kind=st.sampled_from(["random", "ascending", "descending"]))
def test_step_losses_evaluate_is_a_search_per_case(seed, n, m, kind):
    rng = np.random.default_rng(seed)
    parts = []
    for _ in range(n):
        k = int(rng.integers(0, 12))
        parts.append(StepLosses.single(np.sort(rng.integers(0, 10, k) / 10.0), rng.random(k + 1)))
    steps = StepLosses.concat(parts)
    lams = rng.integers(-2, 13, m) / 10.0  # hits breakpoints exactly, and outside their range
    if kind != "random":
        lams = np.sort(lams) if kind == "ascending" else np.sort(lams)[::-1]
    want = np.stack([v[np.searchsorted(b, lams, side="right")] for b, v in zip(steps.breakpoints, steps.levels)])
    assert np.array_equal(steps.evaluate(lams), want)
    assert np.array_equal(steps.evaluate(float(lams[0])), want[:, 0])


def synthetic_fdr_like(rng: np.random.Generator, n: int) -> StepLosses:
    """n i.i.d. cases whose loss is a noisy, roughly increasing step function of λ (FDR-like)."""
    parts = []
    for _ in range(n):
        b = np.sort(rng.random(12))
        slope, start = rng.uniform(0.2, 0.8), rng.uniform(0.0, 0.5)
        v = np.clip(np.concatenate([[0.0], (b - start) * slope]) + rng.normal(0, 0.03, 13), 0, 1)
        parts.append(StepLosses.single(b, v))
    return StepLosses.concat(parts)


def test_ltt_controls_the_population_risk_on_iid_cases():
    """The guarantee itself, with i.i.d. calibration sets from a known population: the fraction of
    calibration sets whose λ̂ has population risk R(λ̂) > α is at most δ (+ 3 SE), for HB and WSR."""
    population = synthetic_fdr_like(np.random.default_rng(0), 20_000)
    alpha, delta, repeats, n = 0.15, 0.1, 250, 100
    for pvalue in ("hb", "wsr"):
        lams = []
        for rep in range(repeats):
            cal = synthetic_fdr_like(np.random.default_rng((1, rep)), n)
            res = ltt_steps(cal, alpha, delta, pvalue=pvalue)
            lams.append(res.lambda_ if res.feasible else -np.inf)
        risk = population.evaluate(np.array(lams)).mean(axis=0)  # R(λ̂), Monte-Carlo SE ≈ 0.001
        frac = float(np.mean(risk > alpha))
        assert frac <= delta + 3 * math.sqrt(delta * (1 - delta) / repeats), (pvalue, frac)
        assert np.mean(risk) > alpha / 2  # it certifies sets that do something (measured: mean R(λ̂) 0.081 HB, 0.124 WSR;
        # violations 0 and 0.004)
