"""The file CLI contract: calibrate → predict → evaluate, formats, and bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from segcp import __version__
from segcp.cli import main
from segcp.metrics import hd95


def blob_case(rng: np.random.Generator, shape=(24, 24)):
    mask = np.zeros(shape, bool)
    c = rng.integers(6, min(shape[-2:]) - 6, size=2)
    r = rng.integers(3, 6)
    yy, xx = np.ogrid[: shape[-2], : shape[-1]]
    disk = (yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= r * r
    mask[...] = disk
    noise = rng.normal(0, 1.2, shape)
    probs = 1 / (1 + np.exp(-(np.where(mask, 2.5, -2.5) + noise)))
    return probs.astype(np.float32), mask


def save(path: Path, arr: np.ndarray, spacing=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, arr)
    elif path.suffix == ".png":
        Image.fromarray(arr).save(path)
    else:
        aff = np.diag([*(spacing or (1.0,) * arr.ndim), 1.0][:4] + [1.0] * (4 - arr.ndim - 1))
        nib.save(nib.Nifti1Image(arr, aff), str(path))


def make_dir(root: Path, n=30, fmt="npy", seed=0, label_map=False, shape=(24, 24), spacing=None) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(n):
        probs, mask = blob_case(rng, shape)
        m = mask.astype(np.uint8) * (3 if label_map else 1)
        if label_map:
            m[0, :4] = 1  # another structure present
        if fmt == "png":
            save(root / "probs" / f"img{i:03d}.png", (probs * 255).round().astype(np.uint8))
            save(root / "masks" / f"img{i:03d}.png", m * (1 if label_map else 255))
        elif fmt == "nii.gz":
            save(root / "probs" / f"img{i:03d}.nii.gz", probs, spacing)
            save(root / "masks" / f"img{i:03d}.nii.gz", m, spacing)
        else:
            save(root / "probs" / f"img{i:03d}.npy", probs)
            save(root / "masks" / f"img{i:03d}.npy", m)
    return root


def run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def ok(args, capsys):
    code, out, err = run(args, capsys)
    assert code in (0, None), err
    return out


@pytest.mark.parametrize("fmt", ["npy", "png", "nii.gz"])
def test_round_trip(tmp_path, capsys, fmt):
    data = make_dir(tmp_path / "data", fmt=fmt, spacing=(1.5, 0.5) if fmt == "nii.gz" else None)
    calib = tmp_path / "calib.json"
    ok(["calibrate", "--method", "threshold", "--alpha", "0.1", "--data", str(data), "--out", str(calib), "-q"], capsys)
    rec = json.loads(calib.read_text())
    assert rec["method"] == "threshold" and rec["alpha"] == 0.1 and rec["n"] == 30
    assert rec["segcp_version"] == __version__ and 0 <= rec["lambda"] <= 1
    sets = tmp_path / "sets"
    ok(["predict", "--calib", str(calib), "--data", str(data), "--out", str(sets), "-q"], capsys)
    if fmt == "nii.gz":  # NIfTI in, NIfTI out: uint8 sets on the input's grid (same affine), for viewers
        files = sorted(sets.glob("*.nii.gz"))
        assert len(files) == 30 and not list(sets.glob(".*"))
        img = nib.load(str(files[0]))
        s0 = np.asarray(img.dataobj)
        assert s0.dtype == np.uint8 and s0.shape == (24, 24) and set(np.unique(s0)) <= {0, 1}
        assert np.allclose(img.affine, nib.load(str(data / "probs" / files[0].name)).affine)
    else:
        files = sorted(sets.glob("*.npy"))
        assert len(files) == 30 and not list(sets.glob(".*"))
        s0 = np.load(files[0])
        assert s0.dtype == bool and s0.shape == (24, 24)
    metrics = tmp_path / "m.json"
    ok(["evaluate", "--sets", str(sets), "--data", str(data), "--out", str(metrics), "-q"], capsys)
    res = json.loads(metrics.read_text())
    assert set(res["mean"]) >= {"coverage", "fnr", "stretch", "dice", "hd95", "assd"}
    assert set(res["per_image"]) == {f"img{i:03d}" for i in range(30)}
    assert res["undefined"]["hd95"] == 0
    if fmt == "nii.gz":
        # Distances are in the file's physical units (NIfTI spacing: mm).
        assert res["distance_units"] == "mm"
        pid = "img000"
        mask = np.asarray(nib.load(str(data / "masks" / f"{pid}.nii.gz")).dataobj).astype(bool)
        pred = np.asarray(nib.load(str(sets / f"{pid}.nii.gz")).dataobj).astype(bool)
        assert res["per_image"][pid]["hd95"] == pytest.approx(hd95(pred, mask, (1.5, 0.5)))


def test_label_map_and_class_stack(tmp_path, capsys):
    data = make_dir(tmp_path / "data", label_map=True)
    code, _, err = run(["calibrate", "--data", str(data), "--out", str(tmp_path / "c.json")], capsys)
    assert code == 2 and "not binary" in err and "--label" in err
    ok(["calibrate", "--data", str(data), "--label", "3", "--out", str(tmp_path / "c.json"), "-q"], capsys)
    # A class-probability stack (L, H, W): --label picks the channel.
    stack = tmp_path / "stack"
    for f in (data / "probs").glob("*.npy"):
        p = np.load(f)
        save(stack / "probs" / f.name, np.stack([1 - p, np.zeros_like(p), np.zeros_like(p), p]))
        save(stack / "masks" / f.name, np.load(data / "masks" / f.name))
    ok(["calibrate", "--data", str(stack), "--label", "3", "--out", str(tmp_path / "s.json"), "-q"], capsys)
    a, b = (json.loads((tmp_path / x).read_text())["lambda"] for x in ("c.json", "s.json"))
    assert a == b
    ok(["predict", "--calib", str(tmp_path / "s.json"), "--data", str(stack), "--out", str(tmp_path / "ss"), "-q"], capsys)
    assert np.load(next((tmp_path / "ss").glob("*.npy"))).shape == (24, 24)


def test_3d_volumes(tmp_path, capsys):
    data = make_dir(tmp_path / "data", n=12, shape=(5, 20, 20), fmt="nii.gz", spacing=(3.0, 1.0, 1.0))
    ok(["calibrate", "--alpha", "0.2", "--data", str(data), "--out", str(tmp_path / "c.json"), "-q"], capsys)
    ok(["predict", "--calib", str(tmp_path / "c.json"), "--data", str(data), "--out", str(tmp_path / "s"), "-q"], capsys)
    ok(["evaluate", "--sets", str(tmp_path / "s"), "--data", str(data), "--out", str(tmp_path / "m.json"), "-q"], capsys)
    assert json.loads((tmp_path / "m.json").read_text())["n"] == 12


def corrupt(data: Path, kind: str) -> str:
    """Break the data directory; return a fragment the error line must contain."""
    p = data / "probs" / "img004.npy"
    if kind == "nan":
        a = np.load(p); a[3, 3] = np.nan; np.save(p, a)
        return "img004.npy: probability map contains NaN"
    if kind == "range":
        a = np.load(p); a[3, 3] = 1.7; np.save(p, a)
        return "img004.npy: probabilities must lie in [0, 1]"
    if kind == "shape":
        np.save(p, np.zeros((24, 23), np.float32))
        return "does not match"
    if kind == "unreadable":
        p.write_bytes(b"not a numpy file")
        return "img004.npy: unreadable .npy file"
    if kind == "missing":
        (data / "masks" / "img004.npy").unlink()
        return "no file for id 'img004'"
    if kind == "unmatched":
        np.save(data / "masks" / "extra.npy", np.zeros((24, 24), np.uint8))
        return "extra.npy: no matching file in probs/"
    if kind == "nonbinary":
        m = np.load(data / "masks" / "img004.npy"); m[0, 0] = 7; np.save(data / "masks" / "img004.npy", m)
        return "img004.npy: mask is not binary"
    if kind == "empty":
        for f in (data / "probs").glob("*"):
            f.unlink()
        return "probs: no files in a format segcp reads (.npy, .png, .nii.gz, .nii, .npz"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["nan", "range", "shape", "unreadable", "missing", "unmatched", "nonbinary", "empty"])
def test_bad_inputs_one_line_no_output(tmp_path, capsys, kind):
    data = make_dir(tmp_path / "data")
    fragment = corrupt(data, kind)
    out = tmp_path / "calib.json"
    code, _, err = run(["calibrate", "--data", str(data), "--out", str(out)], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("segcp: error: ") and fragment in err
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".calib.json*"))


def test_alpha_too_small_for_n(tmp_path, capsys):
    data = make_dir(tmp_path / "data", n=10)
    code, _, err = run(["calibrate", "--alpha", "0.05", "--data", str(data), "--out", str(tmp_path / "c.json")], capsys)
    assert code == 2 and "alpha=0.05 needs at least 19 calibration images" in err and "got 10" in err
    code, _, err = run(["calibrate", "--alpha", "1.5", "--data", str(data), "--out", str(tmp_path / "c.json")], capsys)
    assert code == 2 and "alpha must be in (0, 1)" in err


def test_predict_failure_leaves_no_partial_sets(tmp_path, capsys):
    data = make_dir(tmp_path / "data")
    calib = tmp_path / "c.json"
    ok(["calibrate", "--data", str(data), "--out", str(calib), "-q"], capsys)
    corrupt(data, "nan")
    code, _, err = run(["predict", "--calib", str(calib), "--data", str(data), "--out", str(tmp_path / "sets")], capsys)
    assert code == 2 and "NaN" in err
    assert not (tmp_path / "sets").exists() and not list(tmp_path.glob(".sets*"))
    (tmp_path / "bad.json").write_text("{not json")
    code, _, err = run(["predict", "--calib", str(tmp_path / "bad.json"), "--data", str(data), "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and "bad.json: not valid JSON" in err


def test_evaluate_errors(tmp_path, capsys):
    data = make_dir(tmp_path / "data")
    sets = tmp_path / "sets"
    sets.mkdir()
    for i in range(30):
        np.save(sets / f"img{i:03d}.npy", np.zeros((24, 24), bool))
    np.save(sets / "img007.npy", np.zeros((5, 5), bool))
    code, _, err = run(["evaluate", "--sets", str(sets), "--data", str(data), "--out", str(tmp_path / "m.json")], capsys)
    assert code == 2 and "img007.npy: set shape (5, 5) does not match mask shape (24, 24)" in err
    assert not (tmp_path / "m.json").exists()
    (sets / "img007.npy").unlink()
    code, _, err = run(["evaluate", "--sets", str(sets), "--data", str(data), "--out", str(tmp_path / "m.json")], capsys)
    assert code == 2 and "no set for id 'img007'" in err


def test_console_script_version_and_help():
    exe = Path(sys.executable).parent / "segcp"
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == f"segcp {__version__}"
    r = subprocess.run([str(exe), "calibrate", "--help"], capture_output=True, text=True, check=True)
    assert "--alpha" in r.stdout and "--guarantee" in r.stdout
    r = subprocess.run([str(exe), "calibrate", "--data", "/nonexistent", "--out", "x.json"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr == "segcp: error: /nonexistent: data directory does not exist\n"


def test_written_files_get_the_usual_mode(tmp_path):
    """Atomic writes go through mkstemp (0600); the result must get 0666 & ~umask like open()."""
    import os
    import stat

    from segcp.io import write_json

    write_json(tmp_path / "r.json", {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(tmp_path / "r.json").st_mode) == 0o666 & ~mask


def test_threshold_calibrate_imports_only_numpy_and_its_reader(tmp_path):
    """`segcp calibrate` on raw probabilities pays for numpy, typer and the NPY reader: no scipy,
    matplotlib, torch, transformers, onnxruntime, nibabel, PIL or dask (docs/benchmarks/speed.md)."""
    data = tmp_path / "d"
    (data / "probs").mkdir(parents=True)
    (data / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        np.save(data / "probs" / f"{i}.npy", rng.random((16, 16)).astype(np.float32))
        np.save(data / "masks" / f"{i}.npy", (rng.random((16, 16)) < 0.3).astype(np.uint8))
    code = (
        "import sys\n"
        "from segcp.cli import main\n"
        "try:\n"
        f"    main(['calibrate', '--data', {str(data)!r}, '--alpha', '0.2', '--out', {str(tmp_path / 'c.json')!r}, '-q'])\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        "heavy = ('scipy', 'matplotlib', 'torch', 'transformers', 'onnxruntime', 'nibabel', 'PIL', 'dask', 'distributed')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]", r.stdout
    assert json.loads((tmp_path / "c.json").read_text())["n"] == 12
