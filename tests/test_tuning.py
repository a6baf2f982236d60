"""Hyper-parameter selection on calibration data only: folds, selection, comparison, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from test_cli import make_dir

from segcp.calibration import LossCurves, crc_lambda, fnr_curve
from segcp.cli import main
from segcp.compare import MethodSpec, run_comparison
from segcp.conformal import ConformalSegmenter
from segcp.engine.measure import MaskEvaluator, criterion_value
from segcp.engine.run import Engine
from segcp.engine.select import select as _engine_select
from segcp.engine.splits import group_folds, split_fraction
from segcp.errors import SegcpError
from segcp.methods import Case
from segcp.specs import TunedSpec, expand_grid
from segcp.specs import parse_spec as _parse_spec
from segcp.synthetic import make_phantoms
from segcp.tuning import tune


@pytest.fixture(scope="module")
def phantoms():
    ph = make_phantoms(60, shape=(64, 64))
    cases = [Case(p.id, p.probs, mask=p.label == 3, spacing=p.spacing) for p in ph]
    return cases, [p.group for p in ph]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=2, max_size=40), st.integers(2, 6), st.integers(0, 5))
def test_group_folds_partition_by_group(groups, folds, seed):
    if len(set(groups)) < 2:
        with pytest.raises(SegcpError):
            group_folds(groups, folds, seed)
        return
    parts = group_folds(groups, folds, seed)
    assert len(parts) == min(folds, len(set(groups)))
    allidx = np.concatenate(parts)
    assert sorted(allidx.tolist()) == list(range(len(groups)))  # a partition
    for p in parts:
        assert p.size > 0
        others = set(np.concatenate([q for q in parts if q is not p]).tolist())
        assert not ({groups[i] for i in p} & {groups[i] for i in others})  # no group in two folds
    assert all(np.array_equal(a, b) for a, b in zip(parts, group_folds(groups, folds, seed)))  # seeded


def test_split_holdout_keeps_groups_apart():
    groups = [f"p{i // 2}" for i in range(40)]
    tune_idx, cal_idx = split_fraction(groups, 0.3, 1)
    assert len(tune_idx) + len(cal_idx) == 40 and len(tune_idx) == 12
    assert not ({groups[i] for i in tune_idx} & {groups[i] for i in cal_idx})
    with pytest.raises(SegcpError, match="fraction"):
        split_fraction(groups, 1.0)


def test_expand_grid_order():
    assert expand_grid({"k": 5}, {"a": [1, 2], "b": ["x", "y"]}) == [
        {"k": 5, "a": 1, "b": "x"},
        {"k": 5, "a": 1, "b": "y"},
        {"k": 5, "a": 2, "b": "x"},
        {"k": 5, "a": 2, "b": "y"},
    ]


def select(maps, curves, lambda_mins, cases, groups, alpha, criterion="dice", **kw):
    """The engine's selection on hand-made score maps (each candidate calibrated by a family
    whose smallest λ is ``lambda_mins[c]``; the held-out sets ``maps[c][i] <= λ`` scored here)."""
    ests = [ConformalSegmenter("threshold", alpha) for _ in maps]
    assert all(e.family.lambda_min == m for e, m in zip(ests, lambda_mins))

    def values(requests):
        out = []
        for c, i, lam in requests:
            ev = MaskEvaluator(maps[c][i], cases[i].mask, cases[i].model_mask, cases[i].spacing)
            out.append(criterion_value(criterion, ev.evaluate(lam, surface=criterion == "hd95"), int(cases[i].mask.sum())))
        return out

    return _engine_select(curves, ests, groups, alpha, values, criterion=criterion, **kw)


def _toy_cases(n=24, seed=0):
    rng = np.random.default_rng(seed)
    cases, good, bad = [], [], []
    for i in range(n):
        mask = np.zeros((20, 20), bool)
        r0, c0 = rng.integers(3, 9, 2)
        mask[r0 : r0 + 8, c0 : c0 + 8] = True
        probs = np.clip(mask * 0.8 + rng.uniform(0, 0.3, mask.shape), 0, 1)
        cases.append(Case(f"c{i}", probs, mask=mask))
        good.append(1.0 - probs)  # set = {1 - p ≤ λ}: follows the structure
        bad.append(rng.uniform(0, 1, mask.shape))  # unrelated to the structure
    return cases, good, bad


def test_select_prefers_the_informative_candidate_and_reports_fold_lambdas():
    cases, good, bad = _toy_cases()
    curves = [[fnr_curve(s[c.mask]) for s, c in zip(maps, cases)] for maps in (bad, good)]
    groups = [f"g{i // 2}" for i in range(len(cases))]
    best, table = select([bad, good], curves, [0.0, 0.0], cases, groups, 0.2, folds=4)
    assert best == 1
    assert table[1]["value"] > table[0]["value"]
    # the fold λ̂ is exactly the CRC solution on the other folds
    folds = group_folds(groups, 4, 0)
    train = np.concatenate(folds[1:])
    lam = crc_lambda(LossCurves.concat([curves[1][i] for i in train]), 0.2).lambda_
    assert table[1]["fold_lambdas"][0] == pytest.approx(lam)
    # lower-is-better criteria pick the same informative candidate
    for criterion in ("truth_ratio", "stretch"):
        assert select([bad, good], curves, [0.0, 0.0], cases, groups, 0.2, criterion=criterion, folds=4)[0] == 1


def test_tune_on_phantoms_returns_a_candidate(phantoms):
    cases, groups = phantoms
    cands = [MethodSpec("cross", "morph", {"se": "cross"}), MethodSpec("square", "morph", {"se": "square"})]
    res = tune(cases[:30], groups[:30], cands, 0.2, folds=3)
    assert res.best in cands and len(res.table) == 2
    assert json.loads(json.dumps(res.to_dict()))["best"]["label"] == res.best.label
    with pytest.raises(SegcpError, match="criterion"):
        tune(cases, groups, cands, 0.2, criterion="accuracy")


def test_comparison_tunes_on_calibration_images_only(phantoms, monkeypatch):
    """The tuned row's selection sees the split's calibration images and nothing else."""
    cases, groups = phantoms
    seen: list[set[str]] = []
    real_choose = Engine.choose

    def spy(self, view, tuned, images, alpha, split=0):
        seen.append({view.ids[i] for i in images})
        return real_choose(self, view, tuned, images, alpha, split)

    monkeypatch.setattr(Engine, "choose", spy)
    tuned = TunedSpec("morph tuned", (MethodSpec("se=cross", "morph", {"se": "cross"}), MethodSpec("se=square", "morph", {"se": "square"})), folds=3)
    res = run_comparison(cases, groups, [MethodSpec("CRC", "threshold"), tuned], alphas=(0.2,), n_cal=20, n_splits=4, seed=2, show_progress=False)
    from segcp.engine.splits import random_cal_test_splits

    splits = list(random_cal_test_splits(groups, 20, 4, 2))
    assert len(seen) == 4
    for ids, (cal, _test) in zip(seen, splits):
        assert ids == {cases[i].id for i in cal}
    rows = [r for r in res["splits"] if r["method"] == "morph tuned"]
    assert all(r["chosen"] in ("se=cross", "se=square") and len(r["cv"]) == 2 for r in rows)
    summ = next(r for r in res["summary"] if r["method"] == "morph tuned")
    assert sum(summ["chosen"].values()) == 4
    assert res["methods"][1]["tuned"] is True


def test_spec_parsing_makes_tuned_rows():
    spec = _parse_spec("morph:se=cross|square,criterion=hd95,folds=4@Consema tuned")
    assert isinstance(spec, TunedSpec) and spec.label == "Consema tuned" and spec.criterion == "hd95" and spec.folds == 4
    assert [c.params for c in spec.candidates] == [{"se": "cross"}, {"se": "square"}]
    spec = _parse_spec("rwcp:steps=5|10,kernel_beta=20|50,k=20")
    assert len(spec.candidates) == 4 and all(c.params["k"] == 20 for c in spec.candidates)
    assert spec.candidates[1].params == {"k": 20, "steps": 5, "kernel_beta": 50}
    assert isinstance(_parse_spec("threshold"), MethodSpec)


def _run(argv) -> int:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    return exc.value.code


def test_cli_tune_and_tuned_compare(tmp_path, capsys):
    data = make_dir(tmp_path / "d", n=30)
    out = tmp_path / "tune.json"
    assert _run(["tune", "--data", str(data), "-m", "morph", "-g", "se=cross|square", "--alpha", "0.2", "--folds", "3", "--out", str(out), "-q"]) == 0
    rec = json.loads(out.read_text())
    assert rec["best"]["params"]["se"] in ("cross", "square") and len(rec["table"]) == 2 and rec["n_images"] == 30
    assert _run(["tune", "--data", str(data), "-m", "morph", "-g", "se", "-q"]) == 2
    assert "KEY=V1|V2" in capsys.readouterr().err
    rep = tmp_path / "cmp"
    code = _run(
        [
            "compare",
            "--data",
            str(data),
            "--out",
            str(rep),
            "--splits",
            "3",
            "--n-cal",
            "15",
            "--alpha",
            "0.2",
            "-q",
            "-m",
            "threshold@CRC",
            "-m",
            "morph:se=cross|square,folds=3@tuned",
        ]
    )
    assert code == 0
    assert "chosen by cross-validation" in (rep / "report.md").read_text()


def test_folds_too_small_for_alpha_are_calibrated_at_the_smallest_level_they_admit(phantoms):
    """α = 0.05 needs ≥ 19 calibration images per fit; 5-fold CV of 20 trains on 16: the folds
    are calibrated at 1/17 instead, and the record says so."""
    cases, good, bad = _toy_cases(n=20)
    curves = [[fnr_curve(s[c.mask]) for s, c in zip(maps, cases)] for maps in (bad, good)]
    groups = [f"g{i}" for i in range(20)]
    best, table = select([bad, good], curves, [0.0, 0.0], cases, groups, 0.05, folds=5)
    assert best == 1 and all(row["alpha"] == pytest.approx(1 / 17) for row in table)
    assert all(np.isfinite(row["value"]) and row["infeasible_folds"] == 0 for row in table)
    assert select([bad, good], curves, [0.0, 0.0], cases, groups, 0.2, folds=5)[1][0]["alpha"] == 0.2
    ph_cases, ph_groups = phantoms
    tuned = TunedSpec("t", (MethodSpec("raw", "threshold"), MethodSpec("max", "threshold", {"normalize": "max"})))
    res = run_comparison(ph_cases, ph_groups, [tuned], alphas=(0.05,), n_cal=20, n_splits=2, seed=0, show_progress=False)
    for r in res["splits"]:
        assert r["chosen"].endswith(f"(CV at α = {r['cv_alpha']:.3g})") and r["cv_alpha"] > 0.05


def test_tuned_row_says_when_no_fold_is_feasible(empty_prediction_cases):
    """Sets that never cover (Consema on empty predictions) leave no candidate to score: the
    first is used, and the record says so."""
    cases = empty_prediction_cases(24)
    tuned = TunedSpec("t", (MethodSpec("se=cross", "morph", {"se": "cross"}), MethodSpec("se=square", "morph", {"se": "square"})), folds=4)
    res = run_comparison(cases, [c.id for c in cases], [tuned], alphas=(0.2,), n_cal=16, n_splits=2, seed=0, show_progress=False)
    assert all(r["chosen"] == "se=cross (fallback: no fold feasible)" for r in res["splits"])
