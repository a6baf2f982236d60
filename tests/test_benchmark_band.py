"""Two-sided rows (guarantee band / band-risk) of the one engine: `segcp benchmark` and `segcp compare` calibrate
them through the estimator and measure the band's own quantities, checked here against a direct computation."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest

from segcp.benchmark import parse_config, run_benchmark
from segcp.calibration import IntervalFit
from segcp.cli import main
from segcp.conformal import ConformalSegmenter
from segcp.engine.splits import random_cal_test_splits
from segcp.methods import Case
from segcp.synthetic import make_phantoms
from segcp.volumes import interval_inputs, mask_volume, probability_volume, volume_record

BAND = """
title = "bands"
splits = 3
n_cal = 20
alphas = [0.2, 0.1, 0.05]
validity_splits = 40
methods = ["threshold@CRC",
           "threshold:guarantee=band@band threshold",
           "threshold:normalize=component,guarantee=band@band component",
           "morph:se=ball,guarantee=band@band morph",
           "rwcp:encoder=fallback,k=8,steps=3,cache=false,guarantee=band@band rwcp",
           "morph:se=ball,guarantee=band-risk@risk morph"]

[[task]]
name = "synthetic"
n = 40
size = 64

[ablation]
alpha = 0.2
n_cal = [10]
"""
#: label → (method, params, guarantee) of the two-sided rows above.
ROWS = {
    "band threshold": ("threshold", {}, "band"),
    "band component": ("threshold", {"normalize": "component"}, "band"),
    "band morph": ("morph", {"se": "ball"}, "band"),
    "band rwcp": ("rwcp", {"encoder": "fallback", "k": 8, "steps": 3, "cache": False}, "band"),
    "risk morph": ("morph", {"se": "ball"}, "band-risk"),
}


@pytest.fixture(scope="module")
def band_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("band")
    res = run_benchmark(parse_config(BAND, root / "band.toml"), root / "out", cache_dir=root / "cache", show_progress=False)
    return root, res


def _direct(case: Case, inner: np.ndarray, outer: np.ndarray) -> dict[str, float]:
    """The band's quantities of one test image, from their definitions."""
    y = case.mask
    assert y is not None
    m, n_in = int(y.sum()), int(inner.sum())
    return {
        "band_holds": float(not (inner & ~y).any() and not (y & ~outer).any()),
        "inner_precision": (inner & y).sum() / n_in if n_in else math.nan,
        "outer_recall": (outer & y).sum() / m if m else math.nan,
        "band_width": (outer & ~inner).sum() / m if m else math.nan,
        "band_risk": max((y & ~outer).sum() / m, min(1.0, (inner & ~y).sum() / m)) if m else float(inner.any()),
    }


@pytest.mark.filterwarnings("ignore:Mean of empty slice")  # inner precision: undefined on every image where I = ∅
def test_band_rows_match_a_direct_calibration_and_measurement(band_run):
    """λ̂ of every split is the estimator's on its calibration images; every band quantity and both volume
    intervals are those computed directly on the split's test images."""
    _, res = band_run
    ph = make_phantoms(40, shape=(64, 64))
    cases = [Case(p.id, p.probs, mask=p.label == 3, spacing=p.spacing, image=p.image) for p in ph]
    recs = {(r["method"], r["alpha"], r["split"]): r for r in res["tasks"][0]["records"] if r["n_cal"] == 20}
    for s, (cal, test) in enumerate(random_cal_test_splits([p.group for p in ph], 20, 3, 0)):
        vols = [(mask_volume(cases[i].mask, cases[i].spacing), probability_volume(cases[i].probs, cases[i].spacing)) for i in cal]
        for a in (0.2, 0.1, 0.05):
            fit = volume_record(vols, [a])
            interval = IntervalFit(fit["score"], a, fit["n"], fit["q"])
            for label, (method, params, guarantee) in ROWS.items():
                rec = recs[(label, a, s)]
                cs = ConformalSegmenter(method, a, guarantee=guarantee, method_params=params).calibrate([cases[i] for i in cal])
                assert rec["lambda"] == cs.lambda_, (label, a, s)
                per, vol = [], {"truth": [], "band": [], "direct": []}
                for i in test:
                    inner, outer = cs.predict(cases[i])
                    per.append(_direct(cases[i], inner, outer))
                    est = probability_volume(cases[i].probs, cases[i].spacing)
                    lo, hi = interval.bounds(**interval_inputs([est], fit["score"]))
                    vol["truth"].append(mask_volume(cases[i].mask, cases[i].spacing))
                    vol["band"].append([mask_volume(inner, cases[i].spacing), mask_volume(outer, cases[i].spacing)])
                    vol["direct"].append([max(float(lo[0]), 0.0), float(hi[0])])
                for k in ("band_holds", "inner_precision", "outer_recall", "band_width"):
                    assert rec[k] == pytest.approx(np.nanmean([p[k] for p in per]), rel=1e-12, nan_ok=True), (label, a, s, k)
                np.testing.assert_allclose(rec["volumes"]["truth"], vol["truth"], rtol=1e-12)
                for k in ("band", "direct"):
                    np.testing.assert_allclose(rec["volumes"][k], vol[k], rtol=1e-12, err_msg=f"{label} {k}")
                    covered = [lo <= t <= hi for t, (lo, hi) in zip(vol["truth"], vol[k], strict=True)]
                    assert rec[f"volume_{k}_covered"] == pytest.approx(np.mean(covered), rel=1e-12)
                    assert rec[f"volume_{k}_width_median"] == pytest.approx(np.median([hi - lo for lo, hi in vol[k]]), rel=1e-12)
                    assert rec[f"volume_{k}_width"] == pytest.approx(np.mean([hi - lo for lo, hi in vol[k]]), rel=1e-12)
                # the guarantee's test loss: 1 − joint coverage for band (τ = 1); the risk for band-risk
                if guarantee == "band":
                    assert rec["risk"] == pytest.approx(1.0 - rec["band_holds"], abs=1e-12)
                else:  # E[max(FNR(O), min(1, |I \ Y| / |Y|))]; an empty truth: 1 if I ≠ ∅
                    assert rec["risk"] == pytest.approx(np.mean([p["band_risk"] for p in per]), rel=1e-12)
                assert rec["volume_unit"] == "mm2"


def test_the_band_is_nested_and_its_volume_interval_holds_when_the_band_does(band_run):
    _, res = band_run
    for r in res["tasks"][0]["records"]:
        if r["method"] in ROWS and "volumes" in r:
            for lo, hi in r["volumes"]["band"]:
                assert 0 <= lo <= hi
            if ROWS[r["method"]][2] == "band":
                assert r["volume_band_covered"] >= r["band_holds"]


def test_the_report_has_the_band_and_volume_tables_and_figures(band_run):
    root, res = band_run
    out = root / "out"
    names = {p.name for p in out.iterdir()}
    assert {"synthetic-band-overlays.png", "synthetic-volumes.png", "synthetic-overlays.png"} <= names
    md = (out / "report.md").read_text()
    band_part = md.split("two-sided sets and volume intervals", 1)[1]
    for label in ROWS:
        for a in ("0.2", "0.1", "0.05"):
            assert f"| {label} | {ROWS[label][2]} | {a} |" in band_part
    assert "| direct (split conformal on the volume) | – | 0.1 |" in band_part and "median width (mm2)" in band_part
    assert "(synthetic-band-overlays.png)" in md and "(synthetic-volumes.png)" in md
    # Table 1 shows the one-sided rows only; the two-sided rows are not in Table 2 (one-sided ablations)
    table1 = md.split("Table 1", 1)[1].split("two-sided sets and volume intervals", 1)[0]
    assert "| CRC |" in table1 and not any(f"| {label} |" in table1 for label in ROWS)
    assert not any(r["method"] in ROWS for r in res["tasks"][0]["records"] if r["n_cal"] == 10)
    html = (out / "report.html").read_text()
    assert "two-sided sets and volume intervals" in html and "joint coverage I ⊆ Y ⊆ O" in html
    # the summary and the tidy rows carry the band's numbers
    summ = {(s["method"], s["alpha"]): s for s in res["summary"]}
    s = summ[("band morph", 0.1)]
    assert s["band_holds"] == pytest.approx(
        np.mean([r["band_holds"] for r in res["tasks"][0]["records"] if r["method"] == "band morph" and r["alpha"] == 0.1])
    )
    assert s["validity"]["splits"] == 40
    rows = list(csv.DictReader((out / "results.csv").open()))
    metrics = {r["metric"] for r in rows if r["method"] == "band morph"}
    assert {"lambda", "band_holds", "inner_precision", "outer_recall", "band_width", "volume_direct_covered", "risk"} <= metrics


def test_a_rerun_reuses_every_band_record(band_run):
    root, first = band_run
    again = run_benchmark(parse_config(BAND, root / "band.toml"), None, cache_dir=root / "cache", show_progress=False)
    assert again["cache"]["misses"]["records"] == 0 and again["cache"]["misses"]["curves"] == 0
    old = {(r["method"], r["alpha"], r["split"], r["n_cal"]): r for r in first["tasks"][0]["records"]}
    for r in again["tasks"][0]["records"]:
        o = old[(r["method"], r["alpha"], r["split"], r["n_cal"])]
        for k in ("lambda", "band_holds", "band_width", "volume_direct_covered", "risk", "dice"):
            if k in o:
                assert r[k] == pytest.approx(o[k], nan_ok=True), k


def test_compare_runs_band_rows(tmp_path, phantom_dir):
    ph = make_phantoms(40, shape=(64, 64))
    data = phantom_dir(tmp_path / "d", 40, (64, 64))
    args = ["compare", "--data", str(data), "--out", str(tmp_path / "o"), "--splits", "2", "--alpha", "0.2", "-q"]
    with pytest.raises(SystemExit) as exc:
        main([*args, "-m", "threshold", "-m", "threshold:guarantee=band", "-m", "morph:se=ball,guarantee=band-risk@morph risk"])
    assert exc.value.code in (0, None)
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["band_guarantees"] == {"threshold (guarantee=band)": "band", "morph risk": "band-risk"}
    assert [s["method"] for s in res["summary"]] == ["threshold"]  # the one-sided rows' summary is as before
    band = {s["method"]: s for s in res["band_summary"]}
    assert set(band) == {"threshold (guarantee=band)", "morph risk"}
    ph_cases = [Case(p.id, p.probs, mask=p.label == 3) for p in ph]
    for s, (cal, test) in enumerate(random_cal_test_splits([p.group for p in ph], 20, 2, 0)):
        (rec,) = [r for r in res["splits"] if r["method"] == "threshold (guarantee=band)" and r["split"] == s]
        cs = ConformalSegmenter("threshold", 0.2, guarantee="band").calibrate([ph_cases[i] for i in cal])
        assert rec["lambda"] == cs.lambda_
        holds = [_direct(ph_cases[i], *cs.predict(ph_cases[i]))["band_holds"] for i in test]
        assert rec["band_holds"] == pytest.approx(np.mean(holds))
    md = (tmp_path / "o" / "report.md").read_text()
    assert "Two-sided sets at every α" in md and "Volume intervals at every α" in md and "| morph risk | band-risk | 0.2 |" in md


def test_figures_of_volumes_show_the_slice_where_the_truth_is_largest(tmp_path):
    """3D cases: Fig. 1 and the band figure draw one slice (along cases.slice_axis) of each volume."""
    rng = np.random.default_rng(0)
    data = tmp_path / "d"
    for sub in ("probs", "masks", "images"):
        (data / sub).mkdir(parents=True)
    zz, yy, xx = np.mgrid[:6, :24, :24]
    for k in range(16):
        mask = 2 * (zz - 3) ** 2 + (yy - 12) ** 2 + (xx - 12) ** 2 < (5 + 2 * rng.random()) ** 2
        probs = np.clip(mask * 0.8 + 0.3 * rng.random(mask.shape), 0, 1)
        np.save(data / "probs" / f"c{k:02d}.npy", probs)
        np.save(data / "masks" / f"c{k:02d}.npy", mask)
        np.save(data / "images" / f"c{k:02d}.npy", mask + 0.3 * rng.random(mask.shape))
    text = (
        "splits = 2\nn_cal = 10\nalphas = [0.2]\nvalidity_splits = 0\n"
        "methods = ['threshold@CRC', 'morph:se=ball,guarantee=band@band']\n[[task]]\nname = 'vol'\ndata = 'DATA'\n"
    )
    run_benchmark(parse_config(text.replace("DATA", str(data)), tmp_path / "c.toml"), tmp_path / "out", use_cache=False, show_progress=False)
    names = {p.name for p in (tmp_path / "out").iterdir()}
    assert {"vol-overlays.png", "vol-band-overlays.png", "vol-volumes.png"} <= names
    md = (tmp_path / "out" / "report.md").read_text()
    assert "worst Dice of CRC; volumes cut along axis 0 where the truth is largest" in md  # Fig. 1
    assert "/ |Y|) of band; volumes cut along axis 0 where the truth is largest" in md  # the band figure


def test_band_rows_on_two_processes_equal_one_process(tmp_path):
    """The band measurement runs on the executor: two local processes give the same records bit for bit."""
    from segcp.parallel import open_executor

    text = BAND.replace("splits = 3\n", "splits = 2\n", 1).replace("validity_splits = 40", "validity_splits = 0")
    cfg = parse_config(text, tmp_path / "b.toml")
    one = run_benchmark(cfg, None, use_cache=False, show_progress=False)
    ex = open_executor(2, dask=False)
    try:
        two = run_benchmark(cfg, None, use_cache=False, show_progress=False, executor=ex)
    finally:
        ex.close()
    assert two["workers"] == 2
    assert json.dumps(two["tasks"][0]["records"], sort_keys=True) == json.dumps(one["tasks"][0]["records"], sort_keys=True)
