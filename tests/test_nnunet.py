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
from test_faults import fails, ok, run

from segcp.errors import SegcpError
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
    fails(["calibrate", *_args(nn), "--labels", "all", "--alpha", "0.2", "--out", tmp_path / "c.json"], capsys, tmp_path, "no 'probabilities' array")


def test_a_label_name_not_in_dataset_json(nn, tmp_path, capsys):
    fails(
        ["calibrate", *_args(nn), "--labels", "RV,Aorta", "--alpha", "0.2", "--out", tmp_path / "c.json"],
        capsys,
        tmp_path,
        "'Aorta' is not in dataset.json",
    )


def test_a_structure_that_never_occurs_in_calibration(nn, tmp_path, capsys):
    for case in CASES:
        f = nn / "raw" / "labelsTr" / f"{case}.nii.gz"
        img = nib.load(str(f))
        lab = np.asarray(img.dataobj).copy()
        lab[lab == 1] = 0
        nib.save(nib.Nifti1Image(lab, img.affine, header=img.header), str(f))
    fails(
        ["calibrate", *_args(nn), "--labels", "all", "--alpha", "0.2", "--out", tmp_path / "c.json"],
        capsys,
        tmp_path,
        "no calibration mask holds label 1 (RV)",
    )


# ---------------------------------------------------------------------------- the path as a new user walks it (issue 27)
N_PRED = 9  # the prediction folder holds 9 of the 12 cases that labelsTr and imagesTr hold


@pytest.fixture()
def walk(nn: Path) -> Path:
    """nnU-Net as a user has it: a prediction folder of fewer cases than labelsTr/imagesTr (the
    training cases are there too), and the dataset.json that nnUNetv2_predict copies beside the
    predictions as the only one (the raw dataset's is moved away)."""
    for case in CASES[N_PRED:]:
        for f in (nn / "pred").glob(f"{case}.*"):
            f.unlink()
    shutil.move(nn / "raw" / "dataset.json", nn / "pred" / "dataset.json")
    return nn


def _walk_args(nn: Path) -> list:
    return ["--probs", nn / "pred", "--masks", nn / "raw" / "labelsTr"]


def test_the_prediction_folder_defines_the_cases_and_names_the_labels(walk, tmp_path, capsys):
    calib = tmp_path / "c.json"
    code, _, err = run(["calibrate", *_walk_args(walk), "--labels", "RV,LV", "--alpha", "0.3", "--out", calib, "-q"], capsys)
    assert code == 0, err
    assert f"labelsTr: {len(CASES) - N_PRED} files not used (the cases are those of {walk / 'pred'})" in err
    rec = json.loads(calib.read_text())
    assert rec["n"] == N_PRED and rec["ids"] == CASES[:N_PRED]
    assert [s["name"] for s in rec["structures"]] == ["RV", "LV"] and rec["labels_from"] == str(walk / "pred" / "dataset.json")
    sets = tmp_path / "sets"
    code, _, err = run(
        [
            "predict",
            "--calib",
            calib,
            "--probs",
            walk / "pred",
            "--images",
            walk / "raw" / "imagesTr",
            "--match",
            "images={id}_0000",
            "--out",
            sets,
            "-q",
        ],
        capsys,
    )
    assert code == 0, err
    assert sorted(p.name for p in (sets / "LV").glob("*.nii.gz")) == [f"{c}.nii.gz" for c in CASES[:N_PRED]]
    m = tmp_path / "m.json"
    code, _, err = run(["evaluate", "--calib", calib, *_walk_args(walk), "--sets", sets, "--out", m, "-q"], capsys)
    assert code == 0 and "3 files not used" in err, err
    assert all(st["n"] == N_PRED for st in json.loads(m.read_text())["structures"].values())
    # one structure's folder against labelsTr alone: the sets pick the cases
    code, _, err = run(
        ["evaluate", "--sets", sets / "LV", "--masks", walk / "raw" / "labelsTr", "--label", "3", "--out", tmp_path / "lv.json", "-q"], capsys
    )
    assert code == 0 and f"(the cases are those of {sets / 'LV'})" in err, err
    assert json.loads((tmp_path / "lv.json").read_text())["n"] == N_PRED
    # a bad file still ends in one line: the note comes after the work, on success
    (walk / "pred" / f"{CASES[4]}.npz").write_bytes(b"not a zip")
    fails(["calibrate", *_walk_args(walk), "--labels", "all", "--alpha", "0.3", "--out", tmp_path / "c2.json"], capsys, tmp_path, f"{CASES[4]}.npz")


def test_images_by_id_with_a_suffix_are_left_out_or_hinted(walk):
    from segcp.io.datadir import DataDir, DataSpec

    folders = {"probs": walk / "pred", "images": walk / "raw" / "imagesTr"}
    dd = DataDir(DataSpec.make(folders=folders, patterns={"images": "{id}_0000"}))
    assert dd.ids(["probs", "images"]) == CASES[:N_PRED] and dd.unused == {"images": len(CASES) - N_PRED}
    with pytest.raises(
        SegcpError,
        match=r"no file for id 'case_000' .* its files are named <id>_0000 \(case_000_0000.nii.gz\): "
        r"pass --match images=\{id\}_0000",
    ):
        DataDir(DataSpec.make(folders=folders)).ids(["probs", "images"])


def test_the_images_hint_on_the_command_line(walk, tmp_path, capsys):
    fails(
        [
            "calibrate",
            *_walk_args(walk),
            "--images",
            walk / "raw" / "imagesTr",
            "--method",
            "rwcp",
            "--labels",
            "all",
            "--alpha",
            "0.3",
            "--out",
            tmp_path / "c.json",
        ],
        capsys,
        tmp_path,
        "pass --match images={id}_0000",
    )


def test_a_data_directory_still_needs_matching_ids(tmp_path, capsys):
    """Inside one data directory an extra mask is a mistake, not a training case: refused as before."""
    from segcp.io.datadir import DataDir

    for sub in ("probs", "masks"):
        (tmp_path / "d" / sub).mkdir(parents=True)
    for i in range(3):
        np.save(tmp_path / "d" / "probs" / f"{i}.npy", np.full((4, 4), 0.5))
        np.save(tmp_path / "d" / "masks" / f"{i}.npy", np.ones((4, 4), np.uint8))
    np.save(tmp_path / "d" / "masks" / "extra.npy", np.ones((4, 4), np.uint8))
    with pytest.raises(SegcpError, match="extra.npy: no matching file in probs/"):
        DataDir(tmp_path / "d").ids(["probs", "masks"])


def test_a_stack_in_x_y_z_order(nn, tmp_path, capsys):
    for case in CASES:
        f = nn / "pred" / f"{case}.npz"
        with np.load(f) as z:
            p = z["probabilities"]
        np.savez(f, probabilities=p.transpose(0, 3, 2, 1))  # (C, x, y, z): not what nnUNetv2_predict writes
    err = fails(
        ["calibrate", *_args(nn), "--labels", "all", "--alpha", "0.2", "--out", tmp_path / "c.json"],
        capsys,
        tmp_path,
        "its spatial axes are in another order than the mask's (10, 12, 7)",
    )
    assert "nnU-Net .npz holds (C, z, y, x)" in err


def test_masks_pointed_at_the_prediction_folder(nn, tmp_path, capsys):
    line = "--masks is a prediction folder (case_000.npz holds the model's output); point it at the ground truth (nnU-Net's labelsTr)"
    for which in (["--labels", "all"], ["--label", "1"]):
        fails(
            [
                "calibrate",
                "--probs",
                nn / "pred",
                "--masks",
                nn / "pred",
                "--dataset-json",
                nn / "raw" / "dataset.json",
                *which,
                "--alpha",
                "0.2",
                "--out",
                tmp_path / "c.json",
            ],
            capsys,
            tmp_path,
            line,
        )
    shutil.copytree(nn / "pred", tmp_path / "copy")  # a copy of the predictions: the same line
    fails(
        [
            "calibrate",
            "--probs",
            nn / "pred",
            "--masks",
            tmp_path / "copy",
            "--dataset-json",
            nn / "raw" / "dataset.json",
            "--labels",
            "all",
            "--alpha",
            "0.2",
            "--out",
            tmp_path / "c.json",
        ],
        capsys,
        tmp_path,
        f"{tmp_path / 'copy'}: {line}",
    )


def test_predictions_made_without_save_probabilities(nn, tmp_path, capsys):
    for f in (nn / "pred").glob("*.npz"):
        f.unlink()
    fails(
        ["calibrate", *_args(nn), "--labels", "all", "--alpha", "0.2", "--out", tmp_path / "c.json"],
        capsys,
        tmp_path,
        "not class probabilities: rerun nnUNetv2_predict with --save_probabilities",
    )
    fails(
        ["calibrate", *_args(nn), "--label", "1", "--alpha", "0.2", "--out", tmp_path / "c.json"],
        capsys,
        tmp_path,
        "case_000.nii.gz: integer labels 0..3: a segmentation, not probabilities in [0, 1] (nnU-Net: rerun nnUNetv2_predict with "
        "--save_probabilities",
    )


def test_predict_resume_takes_labels(walk, tmp_path, capsys):
    calib = tmp_path / "c.json"
    ok(["calibrate", *_walk_args(walk), "--labels", "all", "--alpha", "0.3", "--out", calib, "-q"], capsys)
    sets = tmp_path / "sets"
    argv = ["predict", "--calib", calib, "--probs", walk / "pred", "--out", sets, "--resume", "--labels", "RV,3", "-q"]
    ok(argv, capsys)
    assert sorted(p.name for p in sets.iterdir() if not p.name.startswith(".")) == ["LV", "RV"]
    first = {p: p.stat().st_mtime_ns for p in sets.rglob("*.nii.gz")}
    ok(argv, capsys)  # a rerun: everything is there and whole
    assert {p: p.stat().st_mtime_ns for p in sets.rglob("*.nii.gz")} == first and len(first) == 2 * N_PRED
    m = tmp_path / "m.json"
    ok(["evaluate", "--calib", calib, *_walk_args(walk), "--sets", sets, "--out", m, "-q"], capsys)
    assert list(json.loads(m.read_text())["structures"]) == ["RV", "LV"]  # the structures the folder holds
    fails(
        ["predict", "--calib", calib, "--probs", walk / "pred", "--out", tmp_path / "s2", "--labels", "Aorta"],
        capsys,
        tmp_path,
        "label name 'Aorta' is not in",
    )
    ok(["predict", "--calib", calib, "--probs", walk / "pred", "--out", tmp_path / "all", "--labels", "all", "-q"], capsys)
    assert sorted(p.name for p in (tmp_path / "all").iterdir() if not p.name.startswith(".")) == ["LV", "MYO", "RV"]
    fails(
        ["predict", "--calib", calib, "--probs", walk / "pred", "--out", tmp_path / "s2", "--labels", "2,9"],
        capsys,
        tmp_path,
        f"--labels: label 9 was not calibrated in {calib} (RV=1, MYO=2, LV=3)",
    )


def test_evaluate_refuses_sets_of_another_calibration(nn, tmp_path, capsys):
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    ok(["calibrate", *_args(nn), "--labels", "all", "--alpha", "0.2", "--out", a, "-q"], capsys)
    ok(["calibrate", *_args(nn), "--labels", "all", "--alpha", "0.4", "--method", "morph", "--se", "ball", "--out", b, "-q"], capsys)
    sets = tmp_path / "sets"
    ok(["predict", "--calib", b, "--probs", nn / "pred", "--out", sets, "-q"], capsys)
    fails(
        ["evaluate", "--calib", a, *_args(nn), "--sets", sets, "--out", tmp_path / "m.json"],
        capsys,
        tmp_path,
        "these sets were made by another calibration (morph, lambda [",
    )
    # without --calib: say what the folder is
    fails(
        ["evaluate", *_args(nn), "--sets", sets, "--out", tmp_path / "m.json"],
        capsys,
        tmp_path,
        "per-structure sets (RV/, MYO/, LV/): pass --calib with the calib.json that made them, or --sets",
    )
    ok(["evaluate", "--calib", b, *_args(nn), "--sets", sets, "--out", tmp_path / "m.json", "-q"], capsys)


def test_morph_cross_on_anisotropic_voxels_warns(nn, tmp_path, capsys):
    code, _, err = run(
        ["calibrate", *_args(nn), "--labels", "all", "--alpha", "0.2", "--method", "morph", "--se", "cross", "--out", tmp_path / "c.json", "-q"],
        capsys,
    )
    assert code == 0 and "segcp: warning: morph --se cross on voxels of 0.8 x 0.7 x 3 mm" in err and "--se ball" in err, err
    code, _, err = run(
        ["calibrate", *_args(nn), "--labels", "all", "--alpha", "0.2", "--method", "morph", "--se", "ball", "--out", tmp_path / "c.json", "-q"],
        capsys,
    )
    assert code == 0 and "warning" not in err, err


def test_progress_lines_when_stderr_is_not_a_terminal(nn, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("SEGCP_PROGRESS_INTERVAL", "0")
    code, _, err = run(["calibrate", *_args(nn), "--labels", "all", "--alpha", "0.2", "--out", tmp_path / "c.json"], capsys)
    assert code == 0, err
    lines = [x for x in err.splitlines() if x.startswith("segcp: calibrating: ")]
    assert len(lines) >= 2 and lines[-1].startswith(f"segcp: calibrating: {len(CASES)}/{len(CASES)} (100%)") and lines[-1].endswith(", done")
    assert "left" in lines[0] and "\x1b" not in err
    monkeypatch.setenv("SEGCP_PROGRESS_INTERVAL", "3600")  # work shorter than the interval prints none
    code, _, err = run(["calibrate", *_args(nn), "--labels", "all", "--alpha", "0.2", "--out", tmp_path / "c.json"], capsys)
    assert code == 0 and "calibrating" not in err, err
    from segcp import progress

    monkeypatch.delenv("SEGCP_PROGRESS_INTERVAL")
    assert progress._interval() == progress.PLAIN_INTERVAL == 30.0  # the default: a line every 30 s at most


def test_help_and_units(nn, tmp_path, capsys):
    code, out, _ = run(["calibrate", "--help"], capsys)
    columns = [line.strip().split("  ")[0] for line in out.splitlines() if line.startswith(("  -", "    -"))]
    flags = [o.rstrip(",") for c in columns for o in c.split() if o.startswith("--")]  # the option column of each row
    assert code == 0 and len(flags) == len(set(flags)), sorted(f for f in flags if flags.count(f) > 1)
    assert {"--normalize", "--beta", "--alpha", "--labels"} <= set(flags)
    alpha = out[out.index("--alpha") :].split("--method")[0]
    assert "[default: (0.1)]" in " ".join(alpha.split())
    calib = tmp_path / "c.json"
    ok(["calibrate", *_args(nn), "--labels", "LV", "--alpha", "0.2", "--out", calib, "-q"], capsys)
    out = ok(["evaluate", "--calib", calib, *_args(nn), "--out", tmp_path / "m.json"], capsys)
    assert "distances in mm" in out and "physical" not in out


def test_no_dask_port_warning_with_two_workers(nn, tmp_path):
    """calibrate --labels all --workers 2 while another program holds Dask's default dashboard port."""
    import os
    import socket
    import subprocess
    import sys

    pytest.importorskip("distributed")
    with socket.socket() as held:
        try:
            held.bind(("127.0.0.1", 8787))
            held.listen()
        except OSError:
            pass  # already taken by someone else: the same situation
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        env.pop("DASK_SCHEDULER_ADDRESS", None)
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "segcp.cli",
                "calibrate",
                *map(str, _args(nn)),
                "--labels",
                "all",
                "--alpha",
                "0.2",
                "--out",
                str(tmp_path / "c.json"),
                "--workers",
                "2",
            ],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            timeout=300,
        )
    assert r.returncode == 0, r.stderr
    assert "8787" not in r.stderr and "in use" not in r.stderr, r.stderr
