"""nnU-Net v2 outputs in: files written by nnU-Net's own I/O and exporter (tests/fixtures/nnunet,
made by its make_fixture.py with nnunetv2 2.8.1), 3D, three structures, anisotropic spacing, a
rotated direction. Axis order, every structure in one call, NIfTI sets on the input's grid, and
the bad inputs of issue 11."""

from __future__ import annotations

import json
import pickle
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from test_faults import fails, ok

from segcp.io.readers import read_array

FIXTURE = Path(__file__).parent / "fixtures" / "nnunet"
CASES = sorted(p.name[: -len(".nii.gz")] for p in (FIXTURE / "raw" / "labelsTr").glob("*.nii.gz"))


@pytest.fixture()
def nn(tmp_path: Path) -> Path:
    """A private copy of the fixture (tests may break it)."""
    shutil.copytree(FIXTURE, tmp_path / "nn", ignore=shutil.ignore_patterns("*.py"))
    return tmp_path / "nn"


@pytest.fixture(autouse=True)
def _never_unpickle(monkeypatch):
    """segcp must never unpickle nnU-Net's .pkl files."""

    def refuse(*a, **k):
        raise AssertionError("segcp unpickled something")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)


def _args(nn: Path) -> list:
    return ["--probs", nn / "pred", "--masks", nn / "raw" / "labelsTr", "--dataset-json", nn / "raw" / "dataset.json"]


def test_probabilities_line_up_with_nnunets_own_argmax_and_labels():
    assert len(CASES) == 12
    for case in CASES:
        probs, _ = read_array(FIXTURE / "pred" / f"{case}.npz")
        seg = np.asarray(nib.load(str(FIXTURE / "pred" / f"{case}.nii.gz")).dataobj)
        lab = nib.load(str(FIXTURE / "raw" / "labelsTr" / f"{case}.nii.gz"))
        assert probs.shape == (4, *seg.shape) == (4, *lab.shape)
        np.testing.assert_array_equal(probs.argmax(axis=0), seg)  # voxel for voxel, in nibabel's (x, y, z) order
        assert (probs.argmax(axis=0) == np.asarray(lab.dataobj)).mean() > 0.6  # and with the truth where the model is right
        assert lab.header.get_zooms() == pytest.approx((0.8, 0.7, 3.0))


def test_calibrate_predict_evaluate_every_structure(nn, tmp_path, capsys):
    calib = tmp_path / "c.json"
    out = ok(["calibrate", *_args(nn), "--labels", "all", "--alpha", "0.2", "--out", calib], capsys)
    rec = json.loads(calib.read_text())
    assert [s["name"] for s in rec["structures"]] == ["RV", "MYO", "LV"] and rec["n"] == 12
    assert all(0 <= s["lambda"] <= 1 and s["bound"] <= 0.2 + 1e-9 for s in rec["structures"])
    assert all("E[FNR] <= 0.2" in s["statement"] for s in rec["structures"])
    assert out.count("lambda =") == 3
    # by name, a subset
    ok(["calibrate", *_args(nn), "--labels", "RV,LV", "--alpha", "0.2", "--out", tmp_path / "c2.json", "-q"], capsys)
    rec2 = json.loads((tmp_path / "c2.json").read_text())
    assert [s["label"] for s in rec2["structures"]] == [1, 3]
    assert rec2["structures"][1]["lambda"] == rec["structures"][2]["lambda"]  # each structure calibrated on its own
    sets = tmp_path / "sets"
    ok(["predict", "--calib", calib, *_args(nn), "--out", sets, "--combined", "-q"], capsys)
    for case in CASES[:3]:
        lab = nib.load(str(nn / "raw" / "labelsTr" / f"{case}.nii.gz"))
        combined = np.asarray(nib.load(str(sets / "combined" / f"{case}.nii.gz")).dataobj)
        for k, name in enumerate(["RV", "MYO", "LV"]):
            img = nib.load(str(sets / name / f"{case}.nii.gz"))
            np.testing.assert_allclose(img.affine, lab.affine)  # a viewer overlays it on the label file
            data = np.asarray(img.dataobj)
            assert data.dtype == np.uint8 and data.shape == lab.shape
            np.testing.assert_array_equal((combined >> k) & 1, data)
    legend = json.loads((sets / "structures.json").read_text())
    assert legend["bits"]["4"]["name"] == "LV"
    m = tmp_path / "m.json"
    ok(["evaluate", "--calib", calib, *_args(nn), "--sets", sets, "--out", m, "-q"], capsys)
    res = json.loads(m.read_text())
    assert set(res["structures"]) == {"RV", "MYO", "LV"} and res["distance_units"] == "mm"
    assert all(st["n"] == 12 for st in res["structures"].values())
    assert 0 < res["mean_over_structures"]["coverage"] <= 1
    # the same numbers when the sets are made on the fly
    ok(["evaluate", "--calib", calib, *_args(nn), "--out", tmp_path / "m2.json", "-q"], capsys)
    assert json.loads((tmp_path / "m2.json").read_text())["structures"]["LV"]["mean"] == res["structures"]["LV"]["mean"]


def test_a_grid_that_does_not_match_its_label_file(nn, tmp_path, capsys):
    f = nn / "raw" / "labelsTr" / f"{CASES[4]}.nii.gz"
    img = nib.load(str(f))
    shifted = img.affine.copy()
    shifted[:3, 3] += 5.0
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj), shifted, header=img.header), str(f))
    fails(["calibrate", *_args(nn), "--labels", "all", "--alpha", "0.2", "--out", tmp_path / "c.json"], capsys, tmp_path, "affine differs")


def test_an_npz_without_probabilities(nn, tmp_path, capsys):
    np.savez(nn / "pred" / f"{CASES[2]}.npz", softmax=np.zeros((4, 7, 12, 10)))
    fails(["calibrate", *_args(nn), "--labels", "all", "--alpha", "0.2", "--out", tmp_path / "c.json"], capsys, tmp_path,
          "no 'probabilities' array")


def test_a_label_name_not_in_dataset_json(nn, tmp_path, capsys):
    fails(["calibrate", *_args(nn), "--labels", "RV,Aorta", "--alpha", "0.2", "--out", tmp_path / "c.json"], capsys, tmp_path,
          "'Aorta' is not in dataset.json")


def test_a_structure_that_never_occurs_in_calibration(nn, tmp_path, capsys):
    for case in CASES:
        f = nn / "raw" / "labelsTr" / f"{case}.nii.gz"
        img = nib.load(str(f))
        lab = np.asarray(img.dataobj).copy()
        lab[lab == 1] = 0
        nib.save(nib.Nifti1Image(lab, img.affine, header=img.header), str(f))
    fails(["calibrate", *_args(nn), "--labels", "all", "--alpha", "0.2", "--out", tmp_path / "c.json"], capsys, tmp_path,
          "no calibration mask holds label 1 (RV)")
