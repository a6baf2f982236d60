"""The comparison runner: structure of results, validity bookkeeping, infeasible splits, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segcp.cli import main
from segcp.compare import MethodSpec, run_comparison
from segcp.conformal import ConformalSegmenter
from segcp.engine.splits import random_cal_test_splits
from segcp.methods import Case
from segcp.specs import parse_spec as _parse_spec
from segcp.synthetic import make_phantoms


@pytest.fixture(scope="module")
def phantoms():
    ph = make_phantoms(60, shape=(64, 64))
    cases = [Case(p.id, p.probs, mask=p.label == 3, spacing=p.spacing) for p in ph]
    return cases, [p.group for p in ph]


def write_cases(data, cases, groups):
    """A data directory (probs/, masks/, groups.json) of labelled cases."""
    for sub in ("probs", "masks"):
        (data / sub).mkdir(parents=True)
    for c in cases:
        np.save(data / "probs" / f"{c.id}.npy", c.probs)
        np.save(data / "masks" / f"{c.id}.npy", c.mask)
    (data / "groups.json").write_text(json.dumps(dict(zip([c.id for c in cases], groups))))
    return data


def test_run_comparison_structure(phantoms):
    cases, groups = phantoms
    specs = [MethodSpec("CRC", "threshold"), MethodSpec("Consema", "morph", {"se": "square"})]
    res = run_comparison(cases, groups, specs, alphas=(0.2, 0.1), n_cal=20, n_splits=3, seed=1, show_progress=False)
    assert res["n_splits"] == 3 and res["n_images"] == 60 and len(res["splits"]) == 2 * 2 * 3
    rows = {(r["method"], r["alpha"]): r for r in res["summary"]}
    assert set(rows) == {("CRC", 0.2), ("CRC", 0.1), ("Consema", 0.2), ("Consema", 0.1)}
    for (m, _a), r in rows.items():
        assert r["splits"] == 3 and 0 <= r["coverage"] <= 1
        assert ("dice_win" in r) == (m == "Consema")
    # Every split keeps whole groups on one side and has n_cal calibration images: the records are
    # those of the seeded group splits (λ̂ is the direct calibration on each split's images).
    for s in res["splits"]:
        assert 0 <= s["missed"] <= 1 and 0 <= s["empty_hit"] <= 1 and s["empty_fp"] >= 0
    assert all(s["n_cal"] == 20 and s["n_test"] == 40 for s in res["splits"])
    for k, (cal, test) in enumerate(random_cal_test_splits(groups, 20, 3, 1)):
        assert len(cal) == 20 and not ({groups[i] for i in cal} & {groups[i] for i in test})
        for a in (0.2, 0.1):
            (rec,) = [s for s in res["splits"] if s["method"] == "CRC" and s["alpha"] == a and s["split"] == k]
            assert rec["lambda"] == ConformalSegmenter("threshold", a).calibrate([cases[i] for i in cal]).lambda_


def test_infeasible_splits_are_counted_not_fatal(empty_prediction_cases):
    cases = empty_prediction_cases(30)
    res = run_comparison(cases, [c.id for c in cases], [MethodSpec("morph", "morph")], alphas=(0.1,), n_cal=20, n_splits=4, show_progress=False)
    (row,) = res["summary"]
    assert row["infeasible"] == 4 and row["splits"] == 4


def test_spec_parsing_and_cli(tmp_path, phantoms):
    spec = _parse_spec("morph:se=ball,guarantee=quantile,tau=0.9@Consema ball")
    assert spec == MethodSpec("Consema ball", "morph", {"se": "ball"}, "quantile", 0.9)
    assert _parse_spec("threshold").label == "threshold"
    cases, groups = phantoms
    data = write_cases(tmp_path / "d", cases, groups)
    with pytest.raises(SystemExit) as exc:
        main(["compare", "--data", str(data), "--out", str(tmp_path / "o"), "--splits", "2", "--alpha", "0.2", "-q"])
    assert exc.value.code in (0, None)
    res = json.loads((tmp_path / "o" / "results.json").read_text())
    assert res["groups_from"].endswith("groups.json") and res["n_groups"] == len(set(groups))
    main_table, _, empty_table = (tmp_path / "o" / "report.md").read_text().partition("Images without the structure")
    assert main_table.count("| threshold |") == 1
    # the phantoms include images without the structure: their sets get a table of their own
    assert res["n_empty_truth"] > 0 and empty_table.count("| threshold |") == 1
    assert (tmp_path / "o" / "summary.png").stat().st_size > 1000


def test_missed_and_empty_truth_measurements():
    """An empty set on a present structure is counted as missed (HD95 undefined); sets on
    absent structures are counted with their area."""
    cases = []
    for i in range(24):
        mask = np.zeros((12, 12), bool)
        if i % 4:
            mask[3:7, 3:7] = True
        probs = np.where(mask, 0.9, 0.0)
        if i % 4 == 0:
            probs[0, :5] = 0.95  # a false positive of 5 pixels where the structure is absent
        if i % 8 == 1:
            probs[mask] = 0.0  # a structure the model misses entirely
        cases.append(Case(f"c{i}", probs, mask=mask))
    res = run_comparison(cases, [c.id for c in cases], [MethodSpec("t", "threshold")], alphas=(0.5,), n_cal=12, n_splits=3, show_progress=False)
    (row,) = res["summary"]
    # λ̂ = 0.1 (p ≥ 0.9 covers every structure the model sees): the 0.95 false positives are in, the missed ones out
    assert row["lambda"] < 0.9 and row["empty_hit"] == 1.0 and row["empty_fp"] == 5.0
    assert 0 < row["missed"] < 1 and res["n_empty_truth"] == 6
