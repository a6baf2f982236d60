"""Issue 25 wiring: the losses of segcp.losses through the estimator (RiskSegmenter), calib.json
(record.py's segcp.risk-control form), the CLI (calibrate --loss/--groups, predict, evaluate, monitor)."""

from __future__ import annotations

import copy
import functools
import json
import math
from pathlib import Path

import numpy as np
import pytest
from test_cli import make_dir, ok, run

from segcp import ConformalSegmenter
from segcp.calibration import LossCurves, crc_lambda
from segcp.calibration.ltt import StepLosses, ltt_chains, ltt_steps
from segcp.errors import SegcpError
from segcp.jobs import PREDICT_MANIFEST
from segcp.losses import get_loss
from segcp.methods import get_method
from segcp.record import read_record
from segcp.risk import RiskSegmenter, monitor_score, read_groups


def arrays(n: int = 80, seed: int = 0, shape=(16, 16), noise: float = 0.45, signal: float = 0.55):
    rng = np.random.default_rng(seed)
    masks, probs = [], []
    for _ in range(n):
        m = np.zeros(shape, bool)
        for _ in range(rng.integers(1, 4)):  # 1 to 3 blobs: several lesions
            c = rng.integers(3, shape[0] - 3, size=2)
            m[c[0] - 2 : c[0] + 2, c[1] - 2 : c[1] + 2] = True
        masks.append(m)
        probs.append(np.clip(m * signal + rng.random(shape) * noise, 0, 1))
    return probs, masks


def scores_of(probs):
    fam = get_method("threshold")
    return [fam.score_map(fam.case_from_arrays(p, None, "0")) for p in probs]


# ---------------------------------------------------------------------------- the estimator
def test_fnr_by_name_is_conformal_segmenters_lambda_bit_for_bit():
    probs, masks = arrays()
    rs = RiskSegmenter("threshold", 0.1, loss="fnr").calibrate(probs, masks)
    cs = ConformalSegmenter("threshold", 0.1).calibrate(probs, masks)
    assert rs.lambda_ == cs.lambda_ and rs.mode_ == "crc"
    assert rs.statements()[0] == "E[FNR] <= 0.1 (conformal risk control, marginal over exchangeable images)"


@pytest.mark.parametrize("params", [{}, {"connectivity": 2, "min_overlap": 0.5}])
def test_lesion_fnr_is_exact_crc_on_its_curves(params):
    probs, masks = arrays()
    loss = get_loss("lesion-fnr", **params)
    curves = LossCurves.concat([loss.curve(r, m) for r, m in zip(scores_of(probs), masks)])
    rs = RiskSegmenter("threshold", 0.1, loss="lesion-fnr", loss_params=params).calibrate(probs, masks)
    assert rs.lambda_ == crc_lambda(curves, 0.1, lambda_min=0.0).lambda_
    assert rs.losses_[0].params() == loss.params()


@pytest.mark.parametrize("pvalue", ["hb", "wsr"])
def test_fdr_is_learn_then_test_over_the_breakpoints(pvalue):
    probs, masks = arrays()
    steps = StepLosses.concat([get_loss("fdr").steps(r, m) for r, m in zip(scores_of(probs), masks)])
    direct = ltt_steps(steps, 0.2, 0.1, pvalue=pvalue, order="ascending", lambda_min=0.0, lambda_max=1.0)
    rs = RiskSegmenter("threshold", 0.2, loss="fdr", delta=0.1, pvalue=pvalue).calibrate(probs, masks)
    assert rs.lambda_ == direct.lambda_ and rs.mode_ == "ltt"
    assert rs.fit_.low == direct.low and rs.fit_.high == direct.high
    assert rs.statements()[0].startswith("P(E[FDR] <= 0.2) >= 0.9")


def test_several_losses_over_a_varied_parameter_are_ltt_chains():
    probs, masks = arrays(noise=0.6)
    values = ["none", "max"]
    fams = [get_method("threshold", normalize=v) for v in values]
    losses = [get_loss("fnr"), get_loss("fdr")]
    table = []
    for fam in fams:
        rs_ = [fam.score_map(fam.case_from_arrays(p, None, "0")) for p in probs]
        table.append([StepLosses.concat([x.steps(r, m) for r, m in zip(rs_, masks)]) for x in losses])
    m = ltt_chains(table, [0.2, 0.4], 0.2, orders=["descending", "ascending"], pvalue="wsr", lambda_min=0.0, lambda_max=1.0)
    rs = RiskSegmenter("threshold", [0.2, 0.4], loss=["fnr", "fdr"], delta=0.2, pvalue="wsr", vary=("normalize", values))
    rs.calibrate(probs, masks)
    assert m.config is not None and rs.lambda_ == m.lambda_ and rs.fit_.config == m.config
    assert rs.family_.params()["normalize"] == values[m.config]
    assert all(r <= a for r, a in zip(rs.fit_.risks, (0.2, 0.4)))


def test_prepared_cases_give_the_same_lambda_and_sets():
    probs, masks = arrays(60, noise=0.6)
    fam = get_method("threshold", normalize="max")
    prepared = [fam.prepare(fam.case_from_arrays(p, m, f"{i}")) for i, (p, m) in enumerate(zip(probs, masks))]
    kw = {"loss": ["fnr", "fdr"], "delta": 0.2, "pvalue": "wsr", "vary": ("normalize", ["none", "max"])}
    a = RiskSegmenter("threshold", [0.2, 0.4], **kw).calibrate(prepared)
    b = RiskSegmenter("threshold", [0.2, 0.4], **kw).calibrate(probs, masks)
    assert a.lambda_ == b.lambda_ and a.fit_.config == b.fit_.config
    assert (a.predict(prepared[0]) == b.predict(probs[0])).all()


def test_per_group_lambda_is_each_groups_own_calibration():
    probs, masks = arrays(120)
    groups = ["easy" if i % 3 else "hard" for i in range(120)]
    rs = RiskSegmenter("threshold", 0.1, loss="fnr").calibrate(probs, masks, groups=groups)
    for g in ("easy", "hard"):
        idx = [i for i, h in enumerate(groups) if h == g]
        alone = RiskSegmenter("threshold", 0.1, loss="fnr").calibrate([probs[i] for i in idx], [masks[i] for i in idx])
        assert rs.groups_[g].lambda_ == alone.lambda_ and rs.groups_[g].n == len(idx)
    assert rs.lambda_ == RiskSegmenter("threshold", 0.1).calibrate(probs, masks).lambda_
    # predict: each case by its group's lambda
    rs.case_groups = {"0": "hard"}
    assert (rs.predict(probs[0]) == (scores_of(probs[:1])[0] <= rs.groups_["hard"].lambda_)).all()


def test_count_guard_names_the_group_and_the_n_it_needs_or_falls_back():
    probs, masks = arrays(40)
    groups = ["big"] * 32 + ["rare"] * 8
    with pytest.raises(SegcpError, match=r"group 'rare': 8 calibration cases, but its own guarantee needs at least 9"):
        RiskSegmenter("threshold", 0.1).calibrate(probs, masks, groups=groups)
    rs = RiskSegmenter("threshold", 0.1).calibrate(probs, masks, groups=groups, fallback=True)
    assert rs.groups_["rare"].fallback and rs.groups_["rare"].lambda_ == rs.lambda_ and not rs.groups_["big"].fallback
    rec = json.loads(json.dumps(rs.to_dict()))
    assert [e["fallback"] for e in rec["groups"]["entries"]] == [False, True]
    # Learn then Test's guard: the n below which even losses all 0 are not certified, (1 - alpha)^n > delta for HB
    need = RiskSegmenter("threshold", 0.1, loss="fdr", delta=0.1).needed([get_loss("fdr")], [0.1], 1)
    assert need == math.ceil(math.log(0.1) / math.log(0.9))


def test_group_validity_statistically_marginal_misses_the_hard_group():
    """Mondrian calibration: over 200 random splits the per-group lambda keeps E[FNR] <= alpha in each
    group (within 3 SE), while the marginal one does not in the harder group."""
    rng = np.random.default_rng(1)
    easy_p, easy_m = arrays(200, seed=2, noise=0.4, signal=0.5)
    hard_p, hard_m = arrays(200, seed=3, noise=0.6, signal=0.1)
    probs, masks = easy_p + hard_p, easy_m + hard_m
    groups = np.array(["easy"] * 200 + ["hard"] * 200)
    scores = scores_of(probs)
    fnr = get_loss("fnr")
    steps = [fnr.curve(r, m) for r, m in zip(scores, masks)]
    per_case = [[[c]] for c in steps]
    marg, own = {"easy": [], "hard": []}, {"easy": [], "hard": []}
    for _ in range(200):
        perm = rng.permutation(400)
        cal, test = perm[:100], perm[100:]
        rs = RiskSegmenter("threshold", 0.1).fit([per_case[i] for i in cal], list(groups[cal]))
        for g in ("easy", "hard"):
            t = test[groups[test] == g]
            marg[g].append(np.mean([fnr.set_loss(scores[i] <= rs.lambda_, masks[i]) for i in t]))
            own[g].append(np.mean([fnr.set_loss(scores[i] <= rs.groups_[g].lambda_, masks[i]) for i in t]))
    for g in ("easy", "hard"):
        se = np.std(own[g]) / math.sqrt(len(own[g]))
        assert np.mean(own[g]) <= 0.1 + 3 * se
    assert np.mean(marg["hard"]) > 0.1 + 3 * np.std(marg["hard"]) / math.sqrt(200)


@pytest.mark.parametrize(
    ("kw", "fragment"),
    [
        ({"loss": "nope"}, "unknown loss 'nope'; available: band, band-risk, fdr, fnr, lesion-fnr, quantile"),
        ({"loss": "fdr"}, "not monotone in lambda: it needs Learn then Test (give delta)"),
        ({"loss": "band"}, "loss band: two-sided sets are calibrated with guarantee='band'"),
        ({"loss": ["fnr", "band-risk"]}, "loss band-risk: two-sided sets are calibrated with guarantee='band-risk'"),
        ({"loss": ["fnr", "fdr"]}, "one risk level per loss (2: fnr, fdr), got 1"),
        ({"loss": "fnr", "loss_params": {"tau": 0.5}}, "tau belong to none of the losses fnr"),
        ({"loss": "lesion-fnr", "loss_params": {"connectivity": 7}}, "connectivity"),
        ({"loss": "fdr", "delta": 1.5}, "delta must be in (0, 1)"),
        ({"loss": "fdr", "delta": 0.1, "pvalue": "x"}, "unknown p-value 'x'"),
        ({"method": "consign"}, "losses are for the pixel-set methods"),
    ],
)
def test_bad_parameters_are_one_line_errors(kw, fragment):
    probs, masks = arrays(30)
    with pytest.raises(SegcpError) as exc:
        RiskSegmenter(kw.pop("method", "threshold"), 0.2, **kw).calibrate(probs, masks)
    assert fragment in str(exc.value) and "\n" not in str(exc.value)


def test_monitor_score_is_the_required_lambda_of_each_direction():
    fnr = StepLosses.single([0.2, 0.5, 0.9], [1.0, 0.6, 0.05, 0.0])
    assert monitor_score(fnr, 0.1, "descending") == 0.5
    assert monitor_score(StepLosses.single([0.2], [1.0, 0.5]), 0.1, "descending") == math.inf
    assert monitor_score(StepLosses.single([0.2], [0.0, 0.0]), 0.1, "descending") == -math.inf
    fdr = StepLosses.single([0.2, 0.5], [0.0, 0.05, 0.3])
    assert monitor_score(fdr, 0.1, "ascending") == 0.5


def test_read_groups(tmp_path):
    ids = ["benign (1)", "malignant (2)", "benign (3)"]
    assert read_groups("name:^[a-z]+", ids) == {"benign (1)": "benign", "malignant (2)": "malignant", "benign (3)": "benign"}
    assert read_groups(r"name:\((\d)\)", ids)["malignant (2)"] == "2"
    (tmp_path / "g.csv").write_text("id,group\nbenign (1),a\nmalignant (2),b\nbenign (3),a\n")
    assert read_groups(str(tmp_path / "g.csv"), ids)["malignant (2)"] == "b"
    (tmp_path / "g.tsv").write_text("benign (1)\ta\nmalignant (2)\tb\nbenign (3)\ta\n")
    assert read_groups(str(tmp_path / "g.tsv"), ids)["benign (3)"] == "a"
    (tmp_path / "g.json").write_text(json.dumps({i: "x" for i in ids}))
    assert set(read_groups(str(tmp_path / "g.json"), ids).values()) == {"x"}
    for spec, fragment in [("name:^z", "does not match"), ("name:(", "not a regular expression"), (str(tmp_path / "no.csv"), "not found")]:
        with pytest.raises(SegcpError, match=fragment):
            read_groups(spec, ids)
    (tmp_path / "short.csv").write_text("benign (1),a\n")
    with pytest.raises(SegcpError, match=r"no group for id 'malignant \(2\)'"):
        read_groups(str(tmp_path / "short.csv"), ids)
    (tmp_path / "bad.csv").write_text("benign (1),a,b\n")
    with pytest.raises(SegcpError, match="two columns"):
        read_groups(str(tmp_path / "bad.csv"), ids)


# ---------------------------------------------------------------------------- the record
@functools.lru_cache(maxsize=1)
def _records():
    probs, masks = arrays(80)
    groups = ["a" if i % 2 else "b" for i in range(80)]
    out = {
        "fnr": RiskSegmenter("threshold", 0.1).calibrate(probs, masks),
        "fdr": RiskSegmenter("threshold", 0.2, loss="fdr", delta=0.1).calibrate(probs, masks, groups=groups),
        "two": RiskSegmenter("threshold", [0.2, 0.4], loss=["fnr", "fdr"], delta=0.2, pvalue="wsr", vary=("normalize", ["none", "max"])).calibrate(
            probs, masks
        ),
        "lesion": RiskSegmenter("threshold", 0.2, loss="lesion-fnr", loss_params={"min_overlap": 0.5}).calibrate(probs, masks),
    }
    return out, probs


def test_record_round_trip_gives_the_same_sets():
    models, probs = _records()
    for name, rs in models.items():
        rec = json.loads(json.dumps(rs.to_dict()))
        assert rec["schema"] == "segcp.risk-control", name
        back = RiskSegmenter.from_dict(rec)
        assert back.lambda_ == rs.lambda_ and back.family_.key == rs.family_.key and back.statements() == rs.statements()
        assert [x.key for x in back.losses_] == [x.key for x in rs.losses_]
        assert {g: f.lambda_ for g, f in back.groups_.items()} == {g: f.lambda_ for g, f in rs.groups_.items()}
        back.case_groups = rs.case_groups
        rs.case_groups = {"0": "a"} if rs.groups_ else {}
        back.case_groups = dict(rs.case_groups)
        assert (back.predict(probs[0]) == rs.predict(probs[0])).all()
        assert np.array_equal(np.array(back.monitor_["scores"]), np.array(rs.monitor_["scores"]))


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        (("lambda",), 7.0, "outside the range of threshold"),
        (("lambda",), "x", "field 'lambda' must be a number"),
        (("delta",), 2.0, "field 'delta' must be in (0, 1)"),
        (("pvalue",), "bogus", "field 'pvalue' must be one of hb, wsr"),
        (("calibrated_by",), "magic", "field 'calibrated_by' must be crc or ltt"),
        (("losses",), [{"name": "nope", "params": {}}], "losses[0]: unknown loss 'nope'"),
        (("losses",), [{"name": "fdr", "params": {"empty_set": 3}}], "losses[0]"),
        (("losses",), [], "field 'losses' must be a list of 1 to 8"),
        (("alpha",), [1.5], "field 'alpha' = 1.5 must be in (0, 1)"),
        (("n",), -3, "field 'n' must be a positive integer"),
        (("certified",), [0.0, 0.01], "lies outside its certified interval"),
        (("empirical_risk",), [0.9], "exceeds its alpha"),
        (("schema_version",), 9, "field 'schema_version' must be an integer from 1 to 1"),
        (("groups", "entries", 0, "group"), "a\x00b", "a name of 1 to 64 printable characters"),
        (("groups", "entries", 0, "n"), 1, "the groups' n add up to"),
        (("groups", "entries", 0, "fallback"), "yes", "fallback must be true or false"),
        (("monitor", "scores"), [0.1], "field 'monitor.scores' must be a list of 80 numbers"),
        (("params",), {"normalize": "rm -rf"}, "normalize"),
        (("method",), "consign", "for method 'consign'"),
    ],
)
def test_tampered_record_fields_are_refused_in_one_line(path, value, fragment):
    models, _ = _records()
    rec = json.loads(json.dumps(models["fdr"].to_dict()))
    target = rec
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(SegcpError) as exc:
        read_record(rec, "c.json")
    assert fragment in str(exc.value) and str(exc.value).startswith("c.json") and "\n" not in str(exc.value)


def test_tampered_crc_bound_and_vary_are_refused():
    models, _ = _records()
    rec = json.loads(json.dumps(models["fnr"].to_dict()))
    bad = copy.deepcopy(rec)
    bad["bound"] = 0.01
    with pytest.raises(SegcpError, match="field 'bound'"):
        read_record(bad, "c.json")
    bad = copy.deepcopy(rec)
    bad["delta"] = 0.1
    with pytest.raises(SegcpError, match="crc, which is for one monotone loss"):
        read_record(bad, "c.json")
    rec = json.loads(json.dumps(models["two"].to_dict()))
    bad = copy.deepcopy(rec)
    bad["vary"] = {"param": "nope", "values": ["a"]}
    with pytest.raises(SegcpError, match="field 'vary'"):
        read_record(bad, "c.json")
    bad = copy.deepcopy(rec)
    bad["config"] = 1 - bad["config"]
    with pytest.raises(SegcpError, match="is not the configuration"):
        read_record(bad, "c.json")


def test_step_families_keep_a_whole_lambda():
    probs, masks = arrays(40)
    rs = RiskSegmenter("morph", 0.2, loss="fnr", method_params={"se": "cross"}).calibrate(probs, masks)
    rec = json.loads(json.dumps(rs.to_dict()))
    assert isinstance(rec["lambda"], int) and RiskSegmenter.from_dict(rec).lambda_ == rs.lambda_
    rec["lambda"] = 0.5
    with pytest.raises(SegcpError, match="must be a whole number for morph"):
        read_record(rec, "c.json")


def test_old_records_still_read_as_conformal_segmenters():
    probs, masks = arrays(40)
    rec = json.loads(json.dumps(ConformalSegmenter("threshold", 0.1).calibrate(probs, masks).to_dict()))
    parts = read_record(rec)
    assert "kind" not in parts and ConformalSegmenter.from_parts(parts).lambda_ == rec["lambda"]
    v1 = {k: v for k, v in rec.items() if k not in ("schema", "schema_version", "segcp_version")}
    assert ConformalSegmenter.from_dict(v1).lambda_ == rec["lambda"]


# ---------------------------------------------------------------------------- the command line
def _err_line(code, err, fragment):
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("segcp: error: ") and fragment in err, err


def test_cli_calibrate_predict_evaluate_with_a_loss_and_groups(tmp_path, capsys):
    data = make_dir(tmp_path / "data", n=60)
    (tmp_path / "g.csv").write_text("id,group\n" + "".join(f"img{i:03d},{'a' if i % 2 else 'b'}\n" for i in range(60)))
    calib = tmp_path / "c.json"
    out = ok(
        [
            "calibrate",
            "--data",
            str(data),
            "--out",
            str(calib),
            "--loss",
            "fdr",
            "--delta",
            "0.1",
            "--alpha",
            "0.3",
            "--groups",
            str(tmp_path / "g.csv"),
            "-q",
        ],
        capsys,
    )
    assert out == ""
    rec = json.loads(calib.read_text())
    assert rec["schema"] == "segcp.risk-control" and rec["losses"] == [{"name": "fdr", "params": {"empty_set": 0.0}}]
    assert rec["calibrated_by"] == "ltt" and rec["delta"] == 0.1 and [e["group"] for e in rec["groups"]["entries"]] == ["a", "b"]
    assert rec["ids"] == [f"img{i:03d}" for i in range(60)] and len(rec["monitor"]["scores"]) == 60
    lam = {e["group"]: e["lambda"] for e in rec["groups"]["entries"]}
    ok(["predict", "--calib", str(calib), "--data", str(data), "--out", str(tmp_path / "sets"), "--groups", str(tmp_path / "g.csv"), "-q"], capsys)
    probs = np.load(data / "probs" / "img001.npy").astype(np.float64)
    assert (np.load(tmp_path / "sets" / "img001.npy") == (1 - probs <= lam["a"])).all()
    ev = tmp_path / "ev.json"
    out = ok(["evaluate", "--calib", str(calib), "--data", str(data), "--out", str(ev), "--groups", str(tmp_path / "g.csv")], capsys)
    res = json.loads(ev.read_text())
    assert res["controlled"][0]["loss"] == "fdr" and res["controlled"][0]["alpha"] == 0.3
    assert "loss_fdr" in res["mean"] and set(res["groups"]) == {"a", "b"} and res["groups"]["a"]["lambda"] == lam["a"]
    assert "fdr: mean" in out and "group a" in out
    # resumable: the manifest holds each id's lambda, so a rerun skips every set
    ok(
        ["predict", "--calib", str(calib), "--data", str(data), "--out", str(tmp_path / "r"), "--groups", str(tmp_path / "g.csv"), "--resume", "-q"],
        capsys,
    )
    manifest = json.loads((tmp_path / "r" / ".segcp-predict.json").read_text())
    assert manifest["lambda_of_id"][0]["img001"] == lam["a"] and manifest["lambda_of_id"][0]["img000"] == lam["b"]
    ok(
        ["predict", "--calib", str(calib), "--data", str(data), "--out", str(tmp_path / "r"), "--groups", str(tmp_path / "g.csv"), "--resume", "-q"],
        capsys,
    )
    # a group that was not calibrated: one line, exit 2, nothing written
    (tmp_path / "g2.csv").write_text("".join(f"img{i:03d},{'a' if i else 'c'}\n" for i in range(60)))
    code, _, err = run(
        ["predict", "--calib", str(calib), "--data", str(data), "--out", str(tmp_path / "s3"), "--groups", str(tmp_path / "g2.csv")], capsys
    )
    _err_line(code, err, "case 'img000': group 'c' was not calibrated (groups: a, b)")
    assert not (tmp_path / "s3").exists()
    # the groups must be given again: one line, exit 2, nothing written
    code, _, err = run(["predict", "--calib", str(calib), "--data", str(data), "--out", str(tmp_path / "s2")], capsys)
    _err_line(code, err, "give each case's group with --groups FILE")
    assert not (tmp_path / "s2").exists()


def test_cli_name_groups_several_losses_and_lesions(tmp_path, capsys):
    data = make_dir(tmp_path / "data", n=60)
    calib = tmp_path / "c.json"
    ok(
        [
            "calibrate",
            "--data",
            str(data),
            "--out",
            str(calib),
            "--loss",
            "lesion-fnr",
            "--loss-param",
            "min_overlap=0.5",
            "--alpha",
            "0.2",
            "--groups",
            r"name:img0(\d)",
            "-q",
        ],
        capsys,
    )
    rec = json.loads(calib.read_text())
    assert rec["losses"][0] == {"name": "lesion-fnr", "params": {"connectivity": 1, "min_overlap": 0.5, "min_size": 0.0}}
    assert rec["groups"]["source"] == r"name:img0(\d)"
    assert {e["group"]: e["n"] for e in rec["groups"]["entries"]} == {str(k): 10 for k in range(6)}
    ok(["predict", "--calib", str(calib), "--data", str(data), "--out", str(tmp_path / "sets"), "-q"], capsys)  # groups by the record's rule
    c2 = tmp_path / "c2.json"
    out = ok(
        [
            "calibrate",
            "--data",
            str(data),
            "--out",
            str(c2),
            "--loss",
            "fnr",
            "--loss",
            "fdr",
            "--alpha",
            "0.2",
            "--alpha",
            "0.5",
            "--delta",
            "0.2",
            "--pvalue",
            "wsr",
            "--vary",
            "normalize=none|max",
        ],
        capsys,
    )
    rec = json.loads(c2.read_text())
    assert rec["vary"] == {"param": "normalize", "values": ["none", "max"]} and len(rec["statement"]) == 2
    assert "P(E[FNR] <= 0.2) >= 0.8" in out and "P(E[FDR] <= 0.5) >= 0.8" in out


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["--loss", "nope"], "'nope' is not one of 'fdr', 'fnr', 'lesion-fnr', 'quantile'"),
        (["--loss", "fdr"], "needs Learn then Test (give delta)"),
        (["--loss", "fdr", "--delta", "0.1", "--pvalue", "z"], "'z' is not one of 'hb', 'wsr'"),
        (["--delta", "0.1"], "are for a chosen --loss"),
        (["--groups", "name:x"], "are for a chosen --loss"),
        (["--loss", "fnr", "--guarantee", "quantile"], "--loss replaces --guarantee"),
        (["--loss", "fnr", "--curves", "compact"], "exact step functions"),
        (["--loss", "fnr", "--loss-param", "bogus=1"], "bogus belong to none of the losses fnr"),
        (["--loss", "fnr", "--loss", "fdr", "--delta", "0.1", "--vary", "normalize"], "expected NAME=V1|V2"),
        (["--loss", "fnr", "--groups", "nofile.csv"], "nofile.csv: groups file not found"),
        (["--loss", "fnr", "--groups", "name:^zz"], "does not match, so it has no group"),
        (["--loss", "fnr", "--groups", r"name:img0(\d)"], "group '0': 10 calibration cases, but its own guarantee needs at least 19"),
        (["--loss", "fdr", "--delta", "0.1", "--alpha", "0.001"], "the guarantee needs at least"),
    ],
)
def test_cli_bad_loss_input_is_one_line_exit_2(tmp_path, capsys, monkeypatch, args, fragment):
    data = make_dir(tmp_path / "data", n=60)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "c.json"
    alpha = [] if "--alpha" in args else ["--alpha", "0.05"]
    code, _, err = run(["calibrate", "--data", str(data), "--out", str(out), *alpha, *args], capsys)
    assert code == 2, err
    assert err.count("\n") == 1 or err.startswith("Usage"), err
    assert fragment in err and "Traceback" not in err
    assert not out.exists()


def test_cli_monitor(tmp_path, capsys):
    data = make_dir(tmp_path / "data", n=60)
    new = make_dir(tmp_path / "new", n=40, seed=7)
    calib = tmp_path / "c.json"
    ok(["calibrate", "--data", str(data), "--out", str(calib), "--loss", "fnr", "-q"], capsys)
    out = ok(
        ["monitor", "--calib", str(calib), "--data", str(new), "--out", str(tmp_path / "m.json"), "--figure", str(tmp_path / "m.png"), "-q"], capsys
    )
    assert (tmp_path / "m.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.startswith("segcp monitor: no alarm: 40 new cases") and out.count("\n") == 1
    m = json.loads((tmp_path / "m.json").read_text())
    assert m["labels"] and len(m["risk"][0]["upper"]) == 40 and len(m["martingale"]["wealth"]) == 40 and not m["alarm"]
    # a shifted model: over-confident, under-segmenting maps -> alarm (with and without labels)
    shifted = tmp_path / "shifted"
    for sub in ("probs", "masks"):
        (shifted / sub).mkdir(parents=True)
    for f in sorted((new / "probs").glob("*.npy")):
        p = np.load(f).astype(np.float64)
        logit = np.log(p / (1 - p + 1e-12) + 1e-12)
        np.save(shifted / "probs" / f.name, (1 / (1 + np.exp(-(logit - 3)))).astype(np.float32))
        np.save(shifted / "masks" / f.name, np.load(new / "masks" / f.name))
    out = ok(["monitor", "--calib", str(calib), "--data", str(shifted), "-q"], capsys)
    assert out.startswith("segcp monitor: ALARM: ") and "fnr above 0.1" in out
    unlabelled = tmp_path / "unlabelled"
    (unlabelled / "probs").mkdir(parents=True)
    for f in (shifted / "probs").glob("*.npy"):
        (unlabelled / "probs" / f.name).write_bytes(f.read_bytes())
    m2 = tmp_path / "m2.json"
    out = ok(["monitor", "--calib", str(calib), "--probs", str(unlabelled / "probs"), "--out", str(m2), "-q"], capsys)
    assert "ALARM" in out and "statistics shifted" in out
    res = json.loads(m2.read_text())
    assert not res["labels"] and "risk" not in res and res["two_sample"]["alarm"]


def test_cli_monitor_gives_each_case_its_groups_lambda(tmp_path, capsys):
    """On a per-group calibration, monitor measures each new case's set at its group's λ̂ when the group is known
    (--groups, or the record's name:REGEX rule), at the marginal λ̂ otherwise (and says which)."""
    data = make_dir(tmp_path / "data", n=60)
    new = make_dir(tmp_path / "new", n=40, seed=7)
    group = {f"img{i:03d}": "a" if i % 3 else "b" for i in range(60)}
    (tmp_path / "g.csv").write_text("id,group\n" + "".join(f"{k},{v}\n" for k, v in group.items()))
    calib, rule = tmp_path / "c.json", tmp_path / "rule.json"
    ok(["calibrate", "--data", str(data), "--out", str(calib), "--loss", "fnr", "--alpha", "0.2", "--groups", str(tmp_path / "g.csv"), "-q"], capsys)
    ok(["calibrate", "--data", str(data), "--out", str(rule), "--loss", "fnr", "--alpha", "0.2", "--groups", r"name:img0(\d)", "-q"], capsys)
    fnr = get_loss("fnr")

    def direct(path: Path, groups: dict[str, str]) -> tuple[list[float], float]:
        rs = RiskSegmenter.from_dict(json.loads(path.read_text()))
        rs.case_groups = groups
        lams, losses = [], []
        for f in sorted((new / "probs").glob("*.npy")):
            case = rs.family_.case_from_arrays(np.load(f), np.load(new / "masks" / f.name).astype(bool), f.stem)
            lams.append(rs.fit_of(f.stem).lambda_ if groups else rs.lambda_)
            losses.append(fnr.set_loss(rs.predict(case) if groups else rs.family_.predict(case, rs.lambda_), case.mask))
        return lams, float(np.mean(losses))

    def monitor(path: Path, *extra: str) -> dict:
        ok(["monitor", "--calib", str(path), "--data", str(new), "--out", str(tmp_path / "m.json"), *extra, "-q"], capsys)
        return json.loads((tmp_path / "m.json").read_text())

    mine = {f"img{i:03d}": group[f"img{i:03d}"] for i in range(40)}
    per_group, marginal = direct(calib, mine), direct(calib, {})
    assert len(set(per_group[0])) == 2 and per_group[1] != marginal[1]  # the groups' λ̂ differ: the test can tell
    m = monitor(calib, "--groups", str(tmp_path / "g.csv"))
    assert m["lambdas_from"] == "each case's group" and m["lambdas"] == per_group[0]
    assert m["risk"][0]["mean"][-1] == pytest.approx(per_group[1], abs=1e-12)
    m = monitor(calib)  # groups from a file the record cannot re-read: the marginal λ̂, said so
    assert m["lambdas_from"].startswith("the marginal lambda (the cases' groups are unknown") and set(m["lambdas"]) == {m["lambda"]}
    assert m["risk"][0]["mean"][-1] == pytest.approx(marginal[1], abs=1e-12)
    by_rule = direct(rule, {f"img{i:03d}": str(i // 10) for i in range(40)})
    m = monitor(rule)  # the record's own name:REGEX rule
    assert m["lambdas_from"] == "each case's group" and m["lambdas"] == by_rule[0]
    assert m["risk"][0]["mean"][-1] == pytest.approx(by_rule[1], abs=1e-12)
    code, _, err = run(["monitor", "--calib", str(calib), "--data", str(data), "--groups", r"name:img0(\d)"], capsys)
    assert code == 2 and "group '0' was not calibrated" in err and err.count("\n") == 1


@pytest.mark.parametrize("case", ["plain", "missing", "tampered", "level", "figure"])
def test_cli_monitor_bad_input_is_one_line_exit_2(tmp_path, capsys, case):
    data = make_dir(tmp_path / "data", n=30)
    calib = tmp_path / "c.json"
    args = ["calibrate", "--data", str(data), "--out", str(calib), "-q"]
    ok(args if case == "plain" else [*args, "--loss", "fnr"], capsys)
    extra, fragment, target = [], "", str(data)
    if case == "plain":
        fragment = "keeps nothing to monitor with; calibrate with --loss"
    elif case == "missing":
        target, fragment = str(tmp_path / "nowhere"), "nowhere"
    elif case == "tampered":
        rec = json.loads(calib.read_text())
        rec["monitor"]["scores"] = rec["monitor"]["scores"][:3]
        calib.write_text(json.dumps(rec))
        fragment = "field 'monitor.scores' must be a list of 30 numbers"
    elif case == "level":
        extra, fragment = ["--level", "2"], "level"
    else:
        extra, fragment = ["--figure", str(data / "probs" / "img000.npy")], "img000.npy"
    out = tmp_path / "m.json"
    code, _, err = run(["monitor", "--calib", str(calib), "--data", target, "--out", str(out), *extra], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("segcp: error: ") and fragment in err, err
    assert not out.exists()


def test_cli_predict_groups_on_a_plain_calibration_is_refused(tmp_path, capsys):
    data = make_dir(tmp_path / "data", n=30)
    calib = tmp_path / "c.json"
    ok(["calibrate", "--data", str(data), "--out", str(calib), "-q"], capsys)
    code, _, err = run(["predict", "--calib", str(calib), "--data", str(data), "--out", str(tmp_path / "s"), "--groups", "name:x"], capsys)
    _err_line(code, err, "--groups is for a calibration made per group")
    assert not (tmp_path / "s").exists()


def test_cli_per_structure_and_per_group_combine(tmp_path, capsys):
    """--labels with --loss: one fit per structure (the fnr loss gives calibrate --labels' own lambdas bit for
    bit), the groups within each; predict and evaluate per structure and group (nnU-Net fixture, 3D)."""
    import shutil

    nn = tmp_path / "nn"
    shutil.copytree(Path(__file__).parent / "fixtures" / "nnunet", nn, ignore=shutil.ignore_patterns("*.py"))
    args = ["--probs", str(nn / "pred"), "--masks", str(nn / "raw" / "labelsTr"), "--dataset-json", str(nn / "raw" / "dataset.json")]
    ok(["calibrate", *args, "--labels", "all", "--alpha", "0.2", "--out", str(tmp_path / "c0.json"), "-q"], capsys)
    ok(["calibrate", *args, "--labels", "all", "--alpha", "0.2", "--loss", "fnr", "--out", str(tmp_path / "c1.json"), "-q"], capsys)
    plain, risk = (json.loads((tmp_path / f"c{k}.json").read_text()) for k in (0, 1))
    assert [s["lambda"] for s in risk["structures"]] == [s["lambda"] for s in plain["structures"]]
    assert risk["schema"] == "segcp.risk-control" and [s["name"] for s in risk["structures"]] == ["RV", "MYO", "LV"]
    ids = sorted(p.name[: -len(".nii.gz")] for p in (nn / "raw" / "labelsTr").glob("*.nii.gz"))
    (tmp_path / "g.csv").write_text("".join(f"{i},{'x' if k % 2 else 'y'}\n" for k, i in enumerate(ids)))
    calib = tmp_path / "c2.json"
    ok(
        [
            "calibrate",
            *args,
            "--labels",
            "all",
            "--alpha",
            "0.3",
            "--loss",
            "lesion-fnr",
            "--groups",
            str(tmp_path / "g.csv"),
            "--out",
            str(calib),
            "-q",
        ],
        capsys,
    )
    rec = json.loads(calib.read_text())
    assert all([e["group"] for e in s["groups"]["entries"]] == ["x", "y"] for s in rec["structures"])
    ok(
        ["predict", "--calib", str(calib), "--probs", str(nn / "pred"), "--out", str(tmp_path / "sets"), "--groups", str(tmp_path / "g.csv"), "-q"],
        capsys,
    )
    assert sorted(p.name for p in (tmp_path / "sets").iterdir()) == [PREDICT_MANIFEST, "LV", "MYO", "RV"]
    ok(["evaluate", "--calib", str(calib), *args, "--groups", str(tmp_path / "g.csv"), "--out", str(tmp_path / "e.json"), "-q"], capsys)
    ev = json.loads((tmp_path / "e.json").read_text())
    for name, st in ev["structures"].items():
        assert st["controlled"][0]["loss"] == "lesion-fnr" and set(st["groups"]) == {"x", "y"}, name
        assert "loss_lesion-fnr" in st["mean"] and "fnr" in st["mean"]  # lesion-level detection beside pixel FNR
    code, _, err = run(["monitor", "--calib", str(calib), *args], capsys)
    _err_line(code, err, "monitor one structure at a time")


def test_cli_predict_alpha_of_a_loss_calibration(tmp_path, capsys):
    data = make_dir(tmp_path / "data", n=30)
    calib = tmp_path / "c.json"
    ok(["calibrate", "--data", str(data), "--out", str(calib), "--loss", "fnr", "--alpha", "0.2", "-q"], capsys)
    ok(["predict", "--calib", str(calib), "--data", str(data), "--out", str(tmp_path / "s"), "--alpha", "0.2", "-q"], capsys)
    code, _, err = run(["predict", "--calib", str(calib), "--data", str(data), "--out", str(tmp_path / "s2"), "--alpha", "0.1"], capsys)
    _err_line(code, err, "not calibrated at alpha=0.1 (calibrated: 0.2)")
    assert not (tmp_path / "s2").exists()
