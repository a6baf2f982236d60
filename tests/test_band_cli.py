"""Two-sided sets through the product: the API, calib.json, `segcp calibrate --guarantee band`,
`segcp predict` (inner/outer, band label volume, ITK-SNAP labels, .seg.nrrd, volumes.csv) and
`segcp evaluate` (joint coverage, volume-interval coverage) (issue 24)."""

from __future__ import annotations

import csv
import json

import nibabel as nib
import nrrd
import numpy as np
import pytest
from test_cli import make_dir, ok, run

from segcp import ConformalSegmenter
from segcp.calibration import band_lambdas
from segcp.cases import Case
from segcp.errors import SegcpError
from segcp.losses import get_loss
from segcp.methods import get_method
from segcp.volumes import probability_volume


def _arrays(n=40, seed=0):
    rng = np.random.default_rng(seed)
    masks = [rng.random((16, 16)) < 0.3 for _ in range(n)]
    probs = [np.clip(m * 0.35 + rng.random((16, 16)) * 0.65, 0, 1) for m in masks]
    return probs, masks


@pytest.mark.parametrize("method", ["threshold", "morph"])
def test_api_band_is_the_shared_band_lambda_and_nested(method):
    probs, masks = _arrays()
    cs = ConformalSegmenter(method, alpha=0.1, guarantee="band").calibrate(probs, masks)
    fam, loss = get_method(method), get_loss("band")
    ab = np.array([loss.side_scores(fam.signed_map(Case(str(i), p, mask=m)), m) for i, (p, m) in enumerate(zip(probs, masks))])
    assert cs.lambda_ == max(band_lambdas(ab[:, 0], ab[:, 1], 0.1).lambda_out, 0.0)
    for p in probs[:5]:
        inner, outer = cs.predict(p)
        assert inner.dtype == bool and outer.shape == p.shape and not np.any(inner & ~outer)
    back = ConformalSegmenter.from_dict(json.loads(json.dumps(cs.to_dict())))
    assert back.guarantee_ == "band" and back.lambda_ == cs.lambda_
    assert "inner set in truth in outer set" in cs.to_dict()["statement"]


def test_api_band_risk_meets_its_level_on_the_calibration_cases():
    probs, masks = _arrays(60, seed=1)
    cs = ConformalSegmenter("threshold", alpha=0.2, guarantee="band-risk").calibrate(probs, masks)
    loss = get_loss("band-risk")
    risks = [loss.set_loss(cs.predict(p), m) for p, m in zip(probs, masks)]
    assert (len(risks) * np.mean(risks) + 1) / (len(risks) + 1) <= 0.2 + 1e-12  # CRC's bound at λ̂ on its own cases


def test_band_guarantee_refused_for_sets_of_segmentations():
    with pytest.raises(SegcpError, match="unknown guarantee 'band' for consign"):
        ConformalSegmenter("consign", guarantee="band").plan()


def test_calibrate_predict_evaluate_band_nifti(tmp_path, capsys):
    data = make_dir(tmp_path / "data", n=40, fmt="nii.gz", spacing=(1.5, 0.5))
    calib = tmp_path / "calib.json"
    out = ok(["calibrate", "--data", str(data), "--out", str(calib), "--guarantee", "band", "--alpha", "0.1"], capsys)
    assert "inner set in truth in outer set" in out
    rec = json.loads(calib.read_text())
    assert rec["guarantee"] == "band" and rec["volume"]["unit"] == "mm2" and rec["volume"]["n"] == 40 and rec["volume"]["q"] >= 0
    sets = tmp_path / "sets"
    ok(["predict", "--calib", str(calib), "--data", str(data), "--out", str(sets)], capsys)
    ref = nib.load(str(data / "probs" / "img000.nii.gz"))
    inner = np.asarray(nib.load(str(sets / "inner" / "img000.nii.gz")).dataobj).astype(bool)
    outer = np.asarray(nib.load(str(sets / "outer" / "img000.nii.gz")).dataobj).astype(bool)
    band = nib.load(str(sets / "band" / "img000.nii.gz"))
    assert np.allclose(band.affine, ref.affine) and band.shape == ref.shape
    labels = np.asarray(band.dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2} and np.array_equal(labels, inner.astype(np.uint8) + outer.astype(np.uint8))
    assert '"structure certain"' in (sets / "band" / "itksnap_labels.txt").read_text()
    seg, header = nrrd.read(str(sets / "slicer" / "img000.seg.nrrd"))
    assert np.array_equal(seg[..., 0], labels) and {header["Segment0_Name"], header["Segment1_Name"]} == {"structure certain", "structure possible"}
    assert np.allclose(np.abs(np.asarray(header["space directions"], float)).diagonal()[:2], (1.5, 0.5))
    rows = list(csv.DictReader((sets / "volumes.csv").open()))
    assert len(rows) == 80 and {r["interval"] for r in rows} == {"band", "direct"} and {r["unit"] for r in rows} == {"mm2"}
    first = {r["interval"]: r for r in rows if r["id"] == "img000"}
    assert float(first["band"]["lower"]) == pytest.approx(inner.sum() * 0.75) and float(first["band"]["upper"]) == pytest.approx(outer.sum() * 0.75)
    est = probability_volume(
        np.asarray(nib.load(str(data / "probs" / "img000.nii.gz")).dataobj), (1.5, 0.5)
    )  # cqr: [vol(p>=.75) - q, vol(p>=.25) + q]
    q = rec["volume"]["q"]
    assert rec["volume"]["score"] == "cqr" and float(first["direct"]["lower"]) == pytest.approx(max(est.lower - q, 0.0), rel=1e-5)
    assert float(first["direct"]["upper"]) == pytest.approx(est.upper + q, rel=1e-5) and float(first["direct"]["estimate"]) == pytest.approx(
        est.estimate, rel=1e-5
    )
    res_path = tmp_path / "metrics.json"
    ok(["evaluate", "--calib", str(calib), "--data", str(data), "--out", str(res_path)], capsys)
    res = json.loads(res_path.read_text())
    mean, per = res["mean"], res["per_image"]
    assert res["n"] == 40 and 0.0 <= mean["band_holds"] <= 1.0 and 0.0 <= mean["volume_direct_covered"] <= 1.0
    for m in per.values():  # containment implies the band's volume interval; the width is |O \ I| / |Y|
        assert m["volume_band_covered"] >= m["band_holds"] and m["band_width"] >= 0 and m["inner_precision"] <= 1
    img0 = per["img000"]
    assert img0["band_width"] == pytest.approx(
        (outer & ~inner).sum() / np.asarray(nib.load(str(data / "masks" / "img000.nii.gz")).dataobj).astype(bool).sum()
    )


def test_band_record_validated_as_untrusted(tmp_path, capsys):
    data = make_dir(tmp_path / "data", n=30)
    calib = tmp_path / "calib.json"
    ok(["calibrate", "--data", str(data), "--out", str(calib), "--guarantee", "band-risk", "--alpha", "0.2"], capsys)
    rec = json.loads(calib.read_text())
    assert rec["volume"]["unit"] == "voxels"
    for bad, msg in [({"q": -1.0}, "volume.q"), ({"score": "rm -rf"}, "volume.score"), ({"n": 7}, "volume.n"), ({"unit": "L"}, "volume.unit")]:
        broken = tmp_path / "bad.json"
        broken.write_text(json.dumps(rec | {"volume": rec["volume"] | bad}))
        code, _, err = run(["predict", "--calib", str(broken), "--data", str(data), "--out", str(tmp_path / "o")], capsys)
        assert code == 2 and err.startswith("segcp: error: ") and msg in err and "Traceback" not in err
        assert not (tmp_path / "o").exists()
    fnr = tmp_path / "fnr.json"
    fnr.write_text(json.dumps(rec | {"guarantee": "fnr"}))
    code, _, err = run(["predict", "--calib", str(fnr), "--data", str(data), "--out", str(tmp_path / "o")], capsys)
    assert code == 2 and "field 'volume' belongs to two-sided sets" in err
    code, _, err = run(["predict", "--calib", str(calib), "--data", str(data), "--out", str(tmp_path / "o"), "--resume"], capsys)
    assert code == 2 and "--resume is not available for two-sided sets" in err
