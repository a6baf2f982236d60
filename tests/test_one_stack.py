"""One stack: every family through the one estimator, the one loader and the one CLI path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from consign_toy import make_toy_cases

import segcp.conformal as conformal_mod
from segcp import Case, ConformalSegmenter, LossCurves, available_methods, get_method
from segcp.cli import main
from segcp.errors import SegcpError
from segcp.io import to_jsonable
from segcp.methods import MaskFamily, SegmentationSet, SegmentationSetFamily

FIVE = ("threshold", "morph", "rwcp", "consign", "aps")
OPTIONS = {
    "threshold": [],
    "morph": ["--se", "square"],
    "rwcp": ["--encoder", "fallback", "--k", "6", "--steps", "3", "-p", "cache=false"],
    "consign": ["--K", "2", "--beta", "0.8"],
    "aps": ["--beta", "0.8"],
}


@pytest.fixture(scope="module")
def toy():
    return make_toy_cases(14, shape=(28, 28), n_labels=2, n_samples=8, seed=11)


def _write(root: Path, toy) -> Path:
    """A data directory every family can read: probs/ (foreground), samples/, images/, masks/ (binary)."""
    rng = np.random.default_rng(0)
    for sub in ("probs", "samples", "images", "masks"):
        (root / sub).mkdir(parents=True)
    for c in toy:
        fg = c.samples.mean(axis=0)[1]
        np.save(root / "probs" / f"{c.id}.npy", fg.astype(np.float32))
        np.save(root / "samples" / f"{c.id}.npy", c.samples.astype(np.float16))
        np.save(root / "images" / f"{c.id}.npy", np.clip(fg + 0.05 * rng.standard_normal(fg.shape), 0, 1))
        np.save(root / "masks" / f"{c.id}.npy", c.truth.astype(np.uint8))
    return root


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    assert exc.value.code in (0, None), out.err
    return out


def test_registry_has_the_five_families():
    assert set(FIVE) <= set(available_methods())
    for name in FIVE:
        fam = get_method(name)
        assert isinstance(fam, (MaskFamily, SegmentationSetFamily))
        assert fam.params() == type(fam)(**fam.params()).params()  # parameters round-trip


def test_all_five_through_one_code_path(tmp_path, toy, capsys, monkeypatch):
    data = _write(tmp_path / "d", toy)
    seen: list[str] = []
    real = conformal_mod.ConformalSegmenter.calibrate_curves  # the reduce of the one estimator, on every executor

    def spy(self, curves):
        seen.append(self.family.name)
        return real(self, curves)

    monkeypatch.setattr(conformal_mod.ConformalSegmenter, "calibrate_curves", spy)
    for name in FIVE:
        calib = tmp_path / f"{name}.json"
        _run(["calibrate", "--method", name, *OPTIONS[name], "--alpha", "0.2", "--data", str(data), "--out", str(calib), "-q"], capsys)
        rec = json.loads(calib.read_text())
        assert rec["schema"] == "segcp.calibration" and rec["schema_version"] == 2
        assert rec["method"] == name and rec["n"] == len(toy) and rec["alpha"] == 0.2
        # the record round-trips: the rebuilt estimator writes the same calibration fields
        again = to_jsonable(ConformalSegmenter.from_dict(rec).to_dict())
        assert {k: again[k] for k in again if k != "segcp_version"} == {k: rec[k] for k in again if k != "segcp_version"}
        sets = tmp_path / f"{name}-sets"
        _run(["predict", "--calib", str(calib), "--data", str(data), "--out", str(sets), "--draws", "7", "-q"], capsys)
        first = np.load(sets / f"{toy[0].id}.npy")
        if name in ("consign", "aps"):
            assert first.shape == (7, 28, 28) and first.dtype == np.uint8  # draws from the set
            m = tmp_path / f"{name}-m.json"
            _run(["evaluate", "--calib", str(calib), "--data", str(data), "--draws", "7", "--out", str(m), "-q"], capsys)
            res = json.loads(m.read_text())
            assert res["n"] == len(toy) and {"covered", "sec", "chao"} <= set(res["mean"])
        else:
            assert first.shape == (28, 28) and first.dtype == bool
            m = tmp_path / f"{name}-m.json"
            _run(["evaluate", "--sets", str(sets), "--data", str(data), "--out", str(m), "-q"], capsys)
            assert json.loads(m.read_text())["n"] == len(toy)
    assert seen == list(FIVE)


def test_runtime_options_are_not_recorded_nor_read(tmp_path, toy, capsys):
    data = _write(tmp_path / "d", toy)
    calib = tmp_path / "c.json"
    _run(
        [
            "calibrate",
            "--method",
            "rwcp",
            "--encoder",
            "fallback",
            "--k",
            "6",
            "--alpha",
            "0.2",
            "-p",
            "threads=1",
            "-p",
            f"cache_dir={tmp_path / 'elsewhere'}",
            "--data",
            str(data),
            "--out",
            str(calib),
            "-q",
        ],
        capsys,
    )
    rec = json.loads(calib.read_text())
    assert not {"threads", "cache_dir", "cache", "batch_size"} & set(rec["params"])
    rec["params"]["cache_dir"] = str(tmp_path / "evil")  # a calib file is data: run-time paths are ignored
    cs = ConformalSegmenter.from_dict(rec)
    assert cs.method_.cache_dir is None


def test_deprecated_beta_spelling_for_rwcp(tmp_path, toy, capsys):
    data = _write(tmp_path / "d", toy)
    base = ["calibrate", "--method", "rwcp", "--encoder", "fallback", "--k", "6", "--alpha", "0.2", "--data", str(data), "-q"]
    out = _run(base + ["--beta", "20", "--out", str(tmp_path / "a.json")], capsys)
    assert "deprecated" in out.err and "--kernel-beta" in out.err
    _run(base + ["--kernel-beta", "20", "--out", str(tmp_path / "b.json")], capsys)
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("a.json", "b.json"))
    assert a["params"]["kernel_beta"] == b["params"]["kernel_beta"] == 20.0 and a["lambda"] == b["lambda"]
    # -p beta= (the parameter's old name): one warning line, the same record
    out = _run(base + ["-p", "beta=20", "--out", str(tmp_path / "c.json")], capsys)
    assert out.err.count("deprecated") == 1 and "-p kernel_beta=VALUE" in out.err
    c = json.loads((tmp_path / "c.json").read_text())
    assert c["params"] == b["params"] and c["lambda"] == b["lambda"] and "beta" not in c["params"]
    # a record written before the rename (params.beta) still reads, as kernel_beta
    old = dict(b, params={("beta" if k == "kernel_beta" else k): v for k, v in b["params"].items()})
    cs = ConformalSegmenter.from_dict(old)
    assert cs.method_.kernel_beta == 20.0 and cs.method_.params() == b["params"]
    with pytest.raises(SegcpError, match="give kernel_beta only"):
        get_method("rwcp", encoder="fallback", beta=20, kernel_beta=30)
    assert get_method("rwcp", encoder="fallback", beta=20).params() == get_method("rwcp", encoder="fallback", kernel_beta=20).params()


def test_unknown_method_option_is_one_clear_line(tmp_path, toy, capsys):
    data = _write(tmp_path / "d", toy)
    with pytest.raises(SystemExit) as exc:
        main(["calibrate", "--method", "threshold", "--K", "2", "--data", str(data), "--out", str(tmp_path / "c.json")])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1 and "--K: not an option of --method threshold" in err and "consign" in err


def test_estimator_api_arrays_multi_alpha_and_clone(toy):
    from sklearn.base import clone

    probs = [c.samples.mean(axis=0)[1] for c in toy]
    masks = [c.truth.astype(bool) for c in toy]
    cs = ConformalSegmenter("threshold", alpha=[0.3, 0.2]).calibrate(probs, masks)
    assert list(cs.lambdas_) == [0.3, 0.2] and cs.lambdas_[0.3] <= cs.lambdas_[0.2]
    with pytest.raises(SegcpError, match="several alphas"):
        _ = cs.lambda_
    one = ConformalSegmenter("threshold", alpha=0.2).calibrate([Case(str(i), p, mask=m) for i, (p, m) in enumerate(zip(probs, masks))])
    assert one.lambda_ == cs.at(0.2).lambda_ == cs.lambdas_[0.2]
    sets = list(cs.predict(probs[:3], alpha=0.2))  # an iterable in, one set per item out
    assert len(sets) == 3 and all(np.array_equal(s, one.predict(p)) for s, p in zip(sets, probs))
    # sklearn-style parameters: clone gives an unfitted estimator with the same parameters
    c2 = clone(cs)
    assert c2.get_params() == cs.get_params() and not hasattr(c2, "lambdas_")
    assert c2.set_params(alpha=0.25).alpha == 0.25
    with pytest.raises(SegcpError, match="no parameter"):
        c2.set_params(bogus=1)
    # map/reduce: curves of two batches concatenate to the same λ̂
    curves = LossCurves.concat([one.curves(probs[:7], masks[:7]), one.curves(probs[7:], masks[7:])])
    assert ConformalSegmenter("threshold", alpha=0.2).calibrate_curves(curves).lambda_ == one.lambda_


def test_sets_of_segmentations_from_arrays_and_prepared_cases(toy):
    cs = ConformalSegmenter("aps", alpha=0.2, method_params={"beta": 0.8})
    cs.calibrate([c.samples for c in toy], [c.truth for c in toy])
    means = [c.samples.mean(axis=0) for c in toy]  # (L, *S) class probabilities work too
    again = ConformalSegmenter("aps", alpha=0.2, method_params={"beta": 0.8}).calibrate(means, [c.truth for c in toy])
    assert again.lambda_ == pytest.approx(cs.lambda_, abs=1e-6)
    prepared = cs.prepare([Case(c.id, samples=c.samples, label_map=c.truth) for c in toy])
    s = cs.predict(prepared[0])
    assert isinstance(s, SegmentationSet)
    assert s.contains() == (cs.scores_[0] <= cs.lambda_)
    assert s.sample(4, seed=1).shape == (4, 28, 28)
    other = get_method("aps", beta=0.7)
    with pytest.raises(SegcpError, match="prepared by another family"):
        other.score(prepared[0])
