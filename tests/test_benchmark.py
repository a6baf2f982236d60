"""`segcp benchmark`: config validation, the evaluator, the cache (content keys, reruns), the tables and the files."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import numpy as np
import pytest

from segcp.benchmark import load_config, parse_config, run_benchmark
from segcp.cli import main
from segcp.conformal import ConformalSegmenter
from segcp.engine.cache import BenchmarkCache
from segcp.engine.measure import MaskEvaluator
from segcp.engine.splits import random_cal_test_splits
from segcp.errors import SegcpError
from segcp.metrics import evaluate_set
from segcp.synthetic import make_phantoms

ROOT = Path(__file__).resolve().parents[1]

SMALL = """
title = "small"
splits = 3
n_cal = 20
alphas = [0.2, 0.1]
curve_alphas = [0.15]
validity_splits = 30
methods = ["threshold@CRC", "morph:se=cross@Consema", "rwcp:encoder=fallback,k=8,steps=3,cache=false@RW-CP",
           "aps:beta=0.8@APS"]

[[task]]
name = "synthetic"
n = 40
size = 64

[ablation]
alpha = 0.2
n_cal = [10, 20, 100]
[ablation.params]
steps = [0, 3]

[sets]
alpha = 0.2
splits = 2
n_cal = 10
max_images = 20
draws = 20
sizes = [5, 20]
draw_images = 2
validity_splits = 20
"""


# ---------------------------------------------------------------------------- config
def test_the_repository_configs_are_valid():
    names = sorted(p.stem for p in (ROOT / "benchmarks").glob("*.toml"))
    assert {"acdc-lv", "acdc-rv", "busi", "consign-acdc", "consign-busi"} <= set(names)
    for name in names:
        cfg = load_config(ROOT / "benchmarks" / f"{name}.toml")
        assert cfg.tasks and cfg.methods


@pytest.mark.parametrize(
    "text, message",
    [
        ("methods = ['threshold']\n", "no [[task]]"),
        ("methods = ['threshold']\nsplitz = 3\n[[task]]\nname = 'synthetic'\n", "unknown key splitz"),
        ("methods = ['threshold']\nalphas = [0.1, 1.5]\n[[task]]\nname = 'synthetic'\n", "alphas must be a risk level"),
        ("methods = ['nosuch']\n[[task]]\nname = 'synthetic'\n", "unknown method 'nosuch'"),
        ("methods = ['threshold@A', 'morph@A']\n[[task]]\nname = 'synthetic'\n", "label 'A' is used twice"),
        ("methods = ['threshold']\n[[task]]\nname = 'mine'\n", "give data ="),
        ("methods = ['threshold']\n[[task]]\nname = 'x'\ndata = '${SEGCP_TEST_UNSET_VAR}/d'\n", "is not set"),
        ("methods = [\n", "not valid TOML"),
        ("methods = ['threshold']\n[[task]]\nname = 'synthetic'\n[ablation]\nmethod = 'nope'\n", "no method labelled 'nope'"),
    ],
)
def test_config_errors_are_one_line(text, message):
    with pytest.raises(SegcpError, match=re.escape(message)) as exc:
        parse_config(text, "cfg.toml")
    assert "\n" not in str(exc.value) and str(exc.value).startswith("cfg.toml")


def test_config_paths_expand_and_resolve_against_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGCP_TEST_PROBS", str(tmp_path / "probs"))
    cfg = parse_config(
        "methods = ['threshold']\n[[task]]\nname = 'a'\ndata = '${SEGCP_TEST_PROBS}/x'\n[[task]]\nname = 'b'\ndata = '${SEGCP_TEST_UNSET:-rel}/y'\n",
        tmp_path / "sub" / "c.toml",
    )
    assert cfg.tasks[0].data == tmp_path / "probs" / "x"
    assert cfg.tasks[1].data == tmp_path / "sub" / "rel" / "y"


# ---------------------------------------------------------------------------- the evaluator
@pytest.mark.parametrize("spacing", [None, (1.5, 0.7)])
def test_mask_evaluator_equals_evaluate_set(spacing):
    rng = np.random.default_rng(3)
    for trial in range(12):
        truth = np.zeros((40, 50), bool)
        if trial % 4:
            truth[rng.integers(5, 15) : rng.integers(20, 35), rng.integers(5, 20) : rng.integers(25, 45)] = True
        scores = np.clip(rng.random((40, 50)) * 0.6 + np.where(truth, 0.0, 0.4), 0, 1)
        model = scores <= 0.5
        ev = MaskEvaluator(scores, truth, model, spacing)
        for lam in (-1.0, 0.1, 0.3, 0.5, 0.7, 0.95, 2.0):
            got = ev.evaluate(lam)
            want = evaluate_set(scores <= lam, truth, model, spacing)
            assert set(got) == set(want)
            for k in want:
                if np.isnan(want[k]):
                    assert np.isnan(got[k]), (k, lam)
                else:
                    assert got[k] == pytest.approx(want[k], rel=1e-12, abs=1e-12), (k, lam)


# ---------------------------------------------------------------------------- a run and its rerun
@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    cache = root / "cache"
    res = run_benchmark(parse_config(SMALL, root / "small.toml"), root / "out", cache_dir=cache, show_progress=False)
    return root, cache, res


def test_run_writes_the_report_folder(small_run):
    root = small_run[0]
    out = root / "out"
    names = {p.name for p in out.iterdir()}
    assert {"report.html", "report.md", "results.json", "results.csv", "config.toml"} <= names
    pngs = [n for n in names if n.endswith(".png")]
    assert {
        "synthetic-overlays.png",
        "synthetic-dice-vs-alpha.png",
        "synthetic-set-size-vs-lambda.png",
        "synthetic-ablation-steps.png",
        "synthetic-sets-diversity.png",
        "synthetic-sets-draws.png",
    } <= set(pngs)
    html = (out / "report.html").read_text()
    # self-contained: every image is embedded, nothing is fetched
    srcs = re.findall(r'<img[^>]* src="([^"]+)"', html)
    assert len(srcs) == len(pngs) and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r'(src|href)="(https?:|//)', html) and "<script" not in html and "@media print" in html
    md = (out / "report.md").read_text()
    assert all(f"({n})" in md for n in pngs)
    for text in (html, md):
        assert "Table 1" in text and "Table 2" in text and "Table 4" in text and "commit" in text
        assert "ASSD (mm)" in text and "HD95 (mm)" in text  # units on distances
    assert "calibration size n = 100: not run" in md
    rec = json.loads((out / "results.json").read_text())
    assert rec["schema"] == "segcp.benchmark" and rec["config"] == SMALL
    assert len(rec["results"]) == len(list(csv.DictReader((out / "results.csv").open())))  # the tidy rows, as JSON too


def test_tidy_results_have_one_row_per_task_method_alpha_split_metric(small_run):
    root = small_run[0]
    rows = list(csv.DictReader((root / "out" / "results.csv").open()))
    keys = [(r["task"], r["method"], r["n_cal"], r["alpha"], r["split"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys))
    crc = [r for r in rows if r["method"] == "CRC" and r["n_cal"] == "20" and r["metric"] == "dice"]
    assert {(r["alpha"], r["split"]) for r in crc} == {(a, s) for a in ("0.2", "0.1", "0.15") for s in ("0", "1", "2")}
    assert {r["method"] for r in rows} >= {"CRC", "Consema", "RW-CP", "RW-CP (steps=0)", "APS", "model (p ≥ 0.5)"}


def test_records_match_a_direct_calibration(small_run):
    """λ̂ of every split is what ConformalSegmenter gives on that split's calibration images."""
    _, _, res = small_run
    ph = make_phantoms(40, shape=(64, 64))
    groups = [p.group for p in ph]
    splits = list(random_cal_test_splits(groups, 20, 3, 0))
    task = res["tasks"][0]
    for s, (cal, test) in enumerate(splits):
        for a in (0.2, 0.1):
            cs = ConformalSegmenter("threshold", a).calibrate([ph[i].probs for i in cal], [ph[i].label == 3 for i in cal])
            (rec,) = [r for r in task["records"] if r["method"] == "CRC" and r["alpha"] == a and r["split"] == s and r["n_cal"] == 20]
            assert rec["lambda"] == cs.lambda_
            per = [evaluate_set(cs.predict(ph[i].probs), ph[i].label == 3, ph[i].probs >= 0.5, ph[i].spacing) for i in test]
            assert rec["dice"] == pytest.approx(np.mean([p["dice"] for p in per]), rel=1e-12)
            assert rec["hd95"] == pytest.approx(np.nanmean([p["hd95"] for p in per]), rel=1e-9)


def test_rerun_with_one_more_alpha_computes_only_what_is_new(small_run):
    root, cache, first = small_run
    text = SMALL.replace("alphas = [0.2, 0.1]", "alphas = [0.2, 0.1, 0.05]")
    second = run_benchmark(parse_config(text, root / "small2.toml"), root / "out2", cache_dir=cache, show_progress=False)
    # 0.05 needs n >= 19: new records only for the main rows (3 splits each) and the validity check
    c = second["cache"]
    main_rows = 3  # CRC, Consema, RW-CP
    assert c["misses"]["records"] == main_rows * 3  # the new α, every split
    assert c["misses"]["validity"] == main_rows  # the guarantee check over many splits covers the new α
    assert c["misses"]["curves"] == 0  # every loss curve came from the cache
    old = {(r["method"], r["alpha"], r["split"], r["n_cal"]): r for r in first["tasks"][0]["records"]}
    new = {(r["method"], r["alpha"], r["split"], r["n_cal"]): r for r in second["tasks"][0]["records"]}
    assert set(old) < set(new)
    for k, r in old.items():
        assert new[k]["lambda"] == r["lambda"] and new[k]["dice"] == r["dice"]


def test_rerun_with_more_splits_or_one_more_method(small_run):
    root, cache, _ = small_run
    more = run_benchmark(
        parse_config(SMALL.replace("splits = 3\n", "splits = 4\n", 1), root / "s4.toml"), None, cache_dir=cache, show_progress=False
    )["cache"]
    # one new split: every pixel-set row at each of its α (main rows: 3 α; the steps=0 variant: 1) and n = 10 (3 rows)
    assert more["misses"]["curves"] == 0 and more["misses"]["records"] == 3 * 3 + 1 + 3
    text = SMALL.replace('"aps:beta=0.8@APS"]', '"aps:beta=0.8@APS", "morph:se=square@Consema square"]')
    one = run_benchmark(parse_config(text, root / "m.toml"), None, cache_dir=cache, show_progress=False)["cache"]
    assert one["misses"]["curves"] == 40  # the new family's curves only
    assert one["misses"]["records"] == 3 * 3 + 3  # its 3 α and the n = 10 ablation, 3 splits each


def test_cache_keys_are_content(tmp_path, phantom_dir):
    """A data directory: editing one probability file recomputes that image only; renaming the folder nothing."""
    ph = make_phantoms(40, shape=(48, 48))
    data = phantom_dir(tmp_path / "d", 40, (48, 48))
    text = "splits = 2\nn_cal = 20\nalphas = [0.1]\nvalidity_splits = 0\nmethods = ['threshold@CRC', 'morph@Consema']\n[[task]]\nname = 'd'\ndata = 'DATA'\n"
    cache = tmp_path / "cache"

    def run(d, out):
        return run_benchmark(parse_config(text.replace("DATA", str(d)), tmp_path / "c.toml"), out, cache_dir=cache, show_progress=False)["cache"]

    first = run(data, None)
    assert first["misses"]["curves"] == 2 * 40
    data.rename(tmp_path / "moved")
    again = run(tmp_path / "moved", None)
    assert again["misses"]["curves"] == 0 and again["misses"]["records"] == 0
    probs = np.load(tmp_path / "moved" / "probs" / f"{ph[5].id}.npy")
    np.save(tmp_path / "moved" / "probs" / f"{ph[5].id}.npy", np.clip(probs * 0.9, 0, 1))
    edited = run(tmp_path / "moved", None)
    assert edited["misses"]["curves"] == 2 and edited["hits"]["curves"] == 2 * 39  # that image, for each family; the others from the cache
    assert edited["misses"]["model"] == 1 and edited["hits"]["model"] == 39  # the model's own metrics: that image only
    # every split holds every image (in its calibration or its test part), so each split record,
    # which depends on all of them, is recomputed: 2 splits × 1 α × 2 methods, none from the cache
    assert edited["misses"]["records"] == 2 * 2 and edited["hits"]["records"] == 0


def test_no_cache_reads_and_writes_nothing(tmp_path):
    text = "splits = 2\nn_cal = 20\nalphas = [0.2]\nvalidity_splits = 0\nmethods = ['threshold']\n[[task]]\nname = 'synthetic'\nn = 40\nsize = 48\n"
    res = run_benchmark(parse_config(text), None, cache_dir=tmp_path / "c", use_cache=False, show_progress=False)
    assert not (tmp_path / "c").exists() and res["cache"]["hits"]["records"] == 0
    assert BenchmarkCache(tmp_path / "c", enabled=False).get_record("x", "y") is None


def test_cli_benchmark_and_its_output_folder_rules(tmp_path, capsys):
    cfg = tmp_path / "c.toml"
    cfg.write_text(
        "splits = 2\nn_cal = 20\nalphas = [0.2]\nvalidity_splits = 0\nmethods = ['threshold']\n[[task]]\nname = 'synthetic'\nn = 40\nsize = 48\n"
    )
    out = tmp_path / "out"
    for _ in range(2):  # a report folder is replaced whole by the next run
        with pytest.raises(SystemExit) as exc:
            main(["benchmark", "--config", str(cfg), "--out", str(out), "--cache", str(tmp_path / "cache"), "-q"])
        assert exc.value.code in (0, None)
    assert (out / "report.html").is_file()
    other = tmp_path / "other"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit) as exc:
        main(["benchmark", "--config", str(cfg), "--out", str(other), "-q"])
    assert exc.value.code == 2
    assert "not a segcp benchmark report folder" in capsys.readouterr().err
    assert (other / "keep.txt").read_text() == "mine"
    with pytest.raises(SystemExit) as exc:
        main(["benchmark", "--config", str(tmp_path / "missing.toml"), "--out", str(tmp_path / "o"), "-q"])
    assert exc.value.code == 2


def test_an_internal_error_in_a_score_is_reported_and_counted_as_never_covered(tmp_path, monkeypatch):
    from segcp.methods.aps import APSMethod

    real = APSMethod.score

    def flaky(self, item, truth=None):
        case = item.case if hasattr(item, "case") else item
        if case.id == "phantom_003":
            raise AssertionError("a bug in the search")
        return real(self, item, truth)

    monkeypatch.setattr(APSMethod, "score", flaky)
    text = (
        "splits = 2\nn_cal = 10\nmethods = ['aps:beta=0.8@APS']\n[[task]]\nname = 'synthetic'\nn = 40\nsize = 48\n"
        "[sets]\nalpha = 0.2\nmax_images = 20\ndraws = 10\nsizes = [10]\ndraw_images = 1\nvalidity_splits = 10\n"
    )
    res = run_benchmark(parse_config(text), tmp_path / "out", cache_dir=tmp_path / "c", show_progress=False)
    (fail,) = res["tasks"][0]["failures"]
    assert fail["image"] == "phantom_003" and "a bug in the search" in fail["error"]
    assert (res["tasks"][0]["sets_validity"][0]["never"]) >= 1
    assert "failed with an internal error" in (tmp_path / "out" / "report.md").read_text()
