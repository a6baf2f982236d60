"""Inputs as users have them: MONAI-style names and channel-last volumes, folders given one by
one, colour images for the image-aware methods — and the existing layout unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from test_faults import fails, ok


def _volumes(root: Path, n: int = 8, channel_last: bool = True) -> Path:
    """MONAI-style outputs: <name>_prob.nii.gz (x, y, z, C) and <name>_seg.nii.gz labels."""
    rng = np.random.default_rng(3)
    (root / "out").mkdir(parents=True)
    (root / "labels").mkdir()
    aff = np.diag([1.2, 1.2, 2.5, 1.0])
    for i in range(n):
        lab = np.zeros((10, 9, 6), np.uint8)
        c = rng.integers(3, 6, 2)
        lab[c[0] - 2 : c[0] + 2, c[1] - 2 : c[1] + 2, 1:5] = 1
        lab[c[0] - 1 : c[0] + 1, c[1] - 1 : c[1] + 1, 2:4] = 2
        onehot = np.stack([lab == v for v in range(3)]).astype(float) + rng.uniform(0, 0.6, (3, *lab.shape))
        probs = (onehot / onehot.sum(0)).astype(np.float32)
        arr = np.moveaxis(probs, 0, -1) if channel_last else probs
        nib.save(nib.Nifti1Image(arr, aff), str(root / "out" / f"pat{i}_prob.nii.gz"))
        nib.save(nib.Nifti1Image(lab, aff), str(root / "labels" / f"pat{i}_seg.nii.gz"))
    return root


def test_monai_names_and_channel_last_volumes(tmp_path, capsys):
    root = _volumes(tmp_path / "m")
    args = ["--probs", root / "out", "--masks", root / "labels", "--match", "probs={id}_prob", "--match", "masks={id}_seg"]
    ok(["calibrate", *args, "--labels", "all", "--alpha", "0.25", "--out", tmp_path / "c.json", "-q"], capsys)
    rec = json.loads((tmp_path / "c.json").read_text())
    assert rec["channel_axis"] == "last" and [s["label"] for s in rec["structures"]] == [1, 2]
    assert rec["ids"] == [f"pat{i}" for i in range(8)]
    ok(["predict", "--calib", tmp_path / "c.json", *args, "--out", tmp_path / "s", "-q"], capsys)
    img = nib.load(str(tmp_path / "s" / "label1" / "pat0.nii.gz"))
    assert img.shape == (10, 9, 6) and np.allclose(img.affine, np.diag([1.2, 1.2, 2.5, 1.0]))
    # one structure with --label from a channel-last stack
    ok(["calibrate", *args, "--label", "2", "--alpha", "0.25", "--out", tmp_path / "c2.json", "-q"], capsys)
    assert json.loads((tmp_path / "c2.json").read_text())["lambda"] == rec["structures"][1]["lambda"]
    # a pattern that matches nothing is one clear line
    fails(["calibrate", "--probs", root / "out", "--masks", root / "labels", "--match", "probs={id}_proba",
           "--labels", "all", "--out", tmp_path / "x.json"], capsys, tmp_path, "matching '{id}_proba'")


def test_colour_images_for_rwcp(tmp_path, capsys):
    rng = np.random.default_rng(5)
    d = tmp_path / "d"
    for sub in ("probs", "masks", "images"):
        (d / sub).mkdir(parents=True)
    for i in range(10):
        mask = np.zeros((32, 28), bool)
        mask[8:20, 6:18] = True
        rgb = np.zeros((32, 28, 3), np.uint8)
        rgb[..., 0] = mask * 200 + rng.integers(0, 40, mask.shape)  # a red lesion on a green background
        rgb[..., 1] = (~mask) * 150 + rng.integers(0, 40, mask.shape)
        Image.fromarray(rgb).save(d / "images" / f"im{i}.png")
        np.save(d / "probs" / f"im{i}.npy", np.clip(mask * 0.7 + rng.uniform(0, 0.3, mask.shape), 0, 1))
        np.save(d / "masks" / f"im{i}.npy", mask)
    ok(["calibrate", "--method", "rwcp", "--encoder", "fallback", "--k", "6", "--alpha", "0.2", "--data", d,
        "--out", tmp_path / "c.json", "-q"], capsys)
    # colour is for images only: a colour probability map is refused
    Image.fromarray(np.stack([np.zeros((32, 28), np.uint8)] * 2 + [np.full((32, 28), 9, np.uint8)], -1)).save(d / "probs" / "im0.png")
    (d / "probs" / "im0.npy").unlink()
    fails(["calibrate", "--alpha", "0.2", "--data", d, "--out", tmp_path / "x.json"], capsys, tmp_path, "colour PNG")


def test_the_classic_layout_still_works(tmp_path, capsys):
    from test_cli import make_dir

    data = make_dir(tmp_path / "data", n=12)
    ok(["calibrate", "--alpha", "0.2", "--data", data, "--out", tmp_path / "c.json", "-q"], capsys)
    ok(["predict", "--calib", tmp_path / "c.json", "--data", data, "--out", tmp_path / "s", "-q"], capsys)
    assert len(list((tmp_path / "s").glob("*.npy"))) == 12
    fails(["calibrate", "--alpha", "0.2", "--out", tmp_path / "x.json"], capsys, tmp_path, "--data DIR")
