"""Controlled-loss rows in the engine (issue 25): a compare/benchmark row that names a loss (``loss=fdr,delta=0.1``)
is calibrated by RiskSegmenter on each split's calibration images and measured with its test risk; ``loss=fnr``
gives the plain threshold row's numbers, an fdr Learn then Test row the numbers RiskSegmenter gives directly."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
from test_compare import write_cases

from segcp.benchmark import parse_config, run_benchmark
from segcp.cli import main
from segcp.compare import run_comparison
from segcp.engine.cache import BenchmarkCache
from segcp.engine.config import MethodEntry, PlanConfig
from segcp.engine.measure import EXTRAS
from segcp.engine.plan import Plan
from segcp.engine.run import Engine
from segcp.engine.splits import random_cal_test_splits
from segcp.engine.tasks import CasesTask
from segcp.errors import SegcpError
from segcp.losses import get_loss
from segcp.methods import Case
from segcp.metrics import METRICS
from segcp.parallel import IN_PROCESS
from segcp.report.summaries import exceedance_ok, summarize
from segcp.risk import RiskSegmenter
from segcp.specs import MethodSpec, TunedSpec, parse_spec
from segcp.synthetic import make_phantoms


def _same(a, b) -> bool:
    nan = lambda v: v is None or (isinstance(v, float) and math.isnan(v))  # noqa: E731
    return (nan(a) and nan(b)) or a == b


@pytest.fixture(scope="module")
def phantoms():
    ph = make_phantoms(60, shape=(48, 48), seed=5)
    return [Case(p.id, p.probs, mask=p.label == 3, spacing=p.spacing) for p in ph], [p.group for p in ph]


# ---------------------------------------------------------------------------- the spec
def test_spec_text_form_of_a_controlled_loss():
    s = parse_spec("threshold:loss=fdr,delta=0.1,pvalue=wsr,empty_set=1,normalize=max@P")
    assert s == MethodSpec("P", "threshold", {"normalize": "max"}, loss="fdr", loss_params={"empty_set": 1}, delta=0.1, pvalue="wsr")
    assert isinstance(s.estimator(0.2), RiskSegmenter) and s.build().name == "threshold"
    assert s.to_dict()["loss"] == "fdr" and "loss" not in parse_spec("threshold").to_dict()
    lesion = parse_spec("threshold:loss=lesion-fnr,connectivity=2")
    assert lesion.loss_params == {"connectivity": 2} and lesion.delta is None and lesion.label == "threshold (loss=lesion-fnr, connectivity=2)"
    assert parse_spec("threshold:loss=fnr").estimator().validate()[3] == "crc"
    for text, message in [
        ("threshold:delta=0.1", "give loss=NAME"),
        ("threshold:loss=fdr,normalize=max|none", "cannot be tuned"),
        ("threshold:loss=nope", "nope"),
        ("threshold:loss=fdr,delta=yes", "delta must be a number"),
    ]:
        with pytest.raises(SegcpError, match=message):
            parse_spec(text)
    for text, message in [
        ("threshold:loss=fdr", "not monotone"),  # FDR needs Learn then Test
        ("threshold:loss=fdr,guarantee=quantile,delta=0.1", "not both"),
        ("threshold:loss=band", "two-sided"),
        ("threshold:loss=fdr,delta=0.1,pvalue=zz", "p-value"),
        ("consign:loss=fnr", "pixel-set"),
    ]:
        with pytest.raises(SegcpError, match=message):
            parse_spec(text).build()  # type: ignore[union-attr]
    assert isinstance(parse_spec("threshold:normalize=max|none"), TunedSpec)


def test_benchmark_config_takes_a_controlled_loss_and_refuses_a_bad_one():
    base = '[[task]]\nname = "synthetic"\n'
    cfg = parse_config('methods = ["threshold:loss=fdr,delta=0.1@P"]\n' + base)
    assert cfg.methods[0].spec.loss == "fdr"
    with pytest.raises(SegcpError, match=r"methods\[0\] .*not monotone"):
        parse_config('methods = ["threshold:loss=fdr"]\n' + base)


# ---------------------------------------------------------------------------- the numbers
def _run(cases, groups, specs, *, alphas, n_cal, splits, validity=0, cache=None):
    entries = tuple(MethodEntry(s.label, s) for s in specs)
    cfg = PlanConfig(seed=2, splits=splits, n_cal=n_cal, alphas=alphas, validity_splits=validity, methods=entries, tasks=())
    plan = Plan(cfg, [CasesTask(cases, groups)])
    return Engine(cache or BenchmarkCache(enabled=False), IN_PROCESS, show_progress=False).run(plan)[0], plan


def test_loss_fnr_row_equals_the_threshold_row(phantoms):
    """Same plan, both rows: the same λ̂ and metrics on every split, the test risk is the test FNR, and the
    guarantee check over many splits gives the same numbers."""
    cases, groups = phantoms
    specs = [MethodSpec("CRC", "threshold"), MethodSpec("CRC fnr", "threshold", loss="fnr")]
    res, _ = _run(cases, groups, specs, alphas=(0.2, 0.1), n_cal=20, splits=4, validity=60)
    recs = {(r["method"], r["alpha"], r["split"]): r for r in res["records"]}
    assert len(recs) == 2 * 2 * 4
    for (m, a, s), r in recs.items():
        if m != "CRC":
            continue
        other = recs[("CRC fnr", a, s)]
        assert other["lambda"] == r["lambda"] and math.isfinite(r["lambda"])
        for k in (*METRICS, *EXTRAS, "set_size", "n_test"):
            assert _same(other[k], r[k]), k
        assert other["risk"] == pytest.approx(r["fnr"], abs=1e-12) and other["risk_exceeds"] == float(other["risk"] > a)
        assert "risk" not in r and other["controlled"] == "fnr" and other["delta"] is None
    val = {(v["method"], v["alpha"]): v for v in res["validity"]}
    for a in (0.2, 0.1):
        plain, loss = val[("CRC", a)], val[("CRC fnr", a)]
        assert loss["splits"] == plain["splits"] == 60 and loss["infeasible"] == plain["infeasible"]
        assert loss["risk"] == pytest.approx(plain["fnr"], abs=1e-12) and loss["risk_se"] == pytest.approx(plain["fnr_se"], abs=1e-12)
        assert 0.0 <= loss["risk_exceeds"] <= 1.0


@pytest.mark.parametrize("pvalue", ["hb", "wsr"])
def test_fdr_ltt_row_matches_risk_segmenter_on_each_split(phantoms, pvalue):
    """Each split's λ̂ is RiskSegmenter's on that split's calibration images; the test risk is the mean FDR of its
    sets from the definition (FDRLoss.set_loss); the row's exceedance is the fraction of those splits over α."""
    cases, groups = phantoms
    alpha, delta, n_cal, splits = 0.2, 0.1, 24, 6
    spec = MethodSpec("FDR", "threshold", loss="fdr", delta=delta, pvalue=pvalue)
    res = run_comparison(cases, groups, [spec], alphas=(alpha,), n_cal=n_cal, n_splits=splits, seed=4, show_progress=False)
    recs = {r["split"]: r for r in res["splits"]}
    fdr = get_loss("fdr")
    exceeded = []
    for s, (cal, test) in enumerate(random_cal_test_splits(groups, n_cal, splits, 4)):
        rs = RiskSegmenter("threshold", alpha, loss="fdr", delta=delta, pvalue=pvalue).calibrate([cases[i] for i in cal])
        assert recs[s]["lambda"] == rs.lambda_
        risk = float(np.mean([fdr.set_loss(rs.predict(cases[i]), cases[i].mask) for i in test]))
        assert recs[s]["risk"] == pytest.approx(risk, abs=1e-12)
        exceeded.append(risk > alpha)
        assert recs[s]["risk_exceeds"] == float(risk > alpha)
    (row,) = res["summary"]
    assert row["controlled"] == "fdr" and row["delta"] == delta and row["infeasible"] == 0
    assert row["risk_exceeds"] == pytest.approx(np.mean(exceeded))
    assert row["risk_valid"] == exceedance_ok(float(np.mean(exceeded)), delta, splits)


def test_exceedance_check():
    assert exceedance_ok(0.1, 0.1, 20) and exceedance_ok(0.3, 0.1, 20)  # 0.1 + 3·0.067 = 0.301
    assert not exceedance_ok(0.31, 0.1, 20) and not exceedance_ok(0.15, 0.1, 2000)
    # over all splits: a split where nothing is certified claims nothing (it does not exceed), as docs/ltt.md counts
    base = {"method": "L", "alpha": 0.1, "controlled": "fdr", "delta": 0.1}
    recs = [base | {"split": s, "lambda": 0.5, "risk": r, "risk_exceeds": float(r > 0.1)} for s, r in enumerate([0.2, 0.05, 0.08])]
    recs.append(base | {"split": 3, "lambda": math.nan, "infeasible": "nothing certified", "risk": math.nan, "risk_exceeds": math.nan})
    (row,) = summarize(recs)
    assert row["infeasible"] == 1 and row["risk_exceeds"] == 0.25 and row["risk"] == pytest.approx(0.11)
    assert row["risk_valid"] == exceedance_ok(0.25, 0.1, 4) and row["valid"] is None
    (none,) = summarize([recs[3]])
    assert none["risk_exceeds"] == 0.0 and none["risk_valid"] is None


def test_step_functions_are_cached_and_reread(phantoms, tmp_path):
    """A Learn then Test row's per-image step functions go to the cache and come back bit for bit: one more α
    reads them (no score map computed) and gives the records of a run without a cache."""
    cases, groups = phantoms
    spec = [MethodSpec("FDR", "threshold", loss="fdr", delta=0.1)]
    kw = {"n_cal": 24, "splits": 3}
    _run(cases, groups, spec, alphas=(0.3,), cache=BenchmarkCache(tmp_path), **kw)
    cache = BenchmarkCache(tmp_path)
    again, _ = _run(cases, groups, spec, alphas=(0.3, 0.2), cache=cache, **kw)
    assert cache.misses["curves"] == 0 and cache.hits["curves"] == len(cases) and cache.hits["records"] == 3
    fresh, _ = _run(cases, groups, spec, alphas=(0.3, 0.2), **kw)
    key = lambda r: (r["alpha"], r["split"])  # noqa: E731
    for a, b in zip(sorted(again["records"], key=key), sorted(fresh["records"], key=key), strict=True):
        assert all(_same(a[k], b[k]) for k in b)


def test_compare_cli_with_a_controlled_loss(tmp_path, phantoms):
    data = write_cases(tmp_path / "d", *phantoms)
    with pytest.raises(SystemExit) as exc:
        args = ["--splits", "3", "--method", "threshold:loss=fdr,delta=0.1", "--alpha", "0.2", "-q"]
        main(["compare", "--data", str(data), "--out", str(tmp_path / "o"), *args])
    assert exc.value.code in (0, None)
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["methods"][0]["loss"] == "fdr" and {r["controlled"] for r in res["splits"]} == {"fdr"}
    assert all(0 <= r["risk"] <= 1 and r["risk_exceeds"] in (0.0, 1.0) for r in res["splits"])
    md = (tmp_path / "o" / "report.md").read_text()
    assert "controlled loss: test risk ± SE" in md and "splits with risk > α" in md and "| fdr: " in md and "(δ = 0.1)" in md


def test_benchmark_report_and_tidy_rows_of_a_controlled_loss(tmp_path):
    cfg = parse_config(
        'splits = 3\nn_cal = 20\nalphas = [0.2]\nvalidity_splits = 20\nmethods = ["threshold@CRC", "threshold:loss=fdr,delta=0.1@FDR"]\n'
        '[[task]]\nname = "synthetic"\nn = 40\nsize = 48\n',
        tmp_path / "b.toml",
    )
    run_benchmark(cfg, tmp_path / "out", cache_dir=tmp_path / "cache", show_progress=False)
    rows = list(csv.DictReader((tmp_path / "out" / "results.csv").open()))
    fdr = {r["metric"] for r in rows if r["method"] == "FDR"}
    assert {"risk", "risk_exceeds", "lambda", "dice"} <= fdr and "risk" not in {r["metric"] for r in rows if r["method"] == "CRC"}
    md = (tmp_path / "out" / "report.md").read_text()
    assert "splits with risk > α" in md and "| fdr: " in md and "risk " in md and "Learn then Test" in md
    rec = json.loads((tmp_path / "out" / "results.json").read_text())
    (val,) = [v for v in rec["tasks"][0]["validity"] if v["method"] == "FDR"]
    assert val["splits"] == 20 and 0 <= val["risk_exceeds"] <= 1 and "fnr" not in val
