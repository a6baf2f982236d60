"""NRRD (3D Slicer's format) through the format registry: read with its geometry, sets written
back on the input's grid, checked against pynrrd itself; calibrate → predict on NRRD through
the command line; NRRD beside NIfTI masks and nnU-Net's NPZ."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

nrrd = pytest.importorskip("nrrd")

from test_cli import ok

from segcp.cli import main
from segcp.errors import SegcpError
from segcp.io import DataDir, read_array, read_geometry
from segcp.methods import get_method

#: An oblique, anisotropic grid in Slicer's LPS frame: the columns are not the axes.
DIRECTIONS = np.array([[0.0, 0.8, 0.1], [-0.9, 0.0, 0.0], [0.0, -0.05, 2.5]])
ORIGIN = np.array([-12.5, 30.0, 7.25])
HEADER = {"space": "left-posterior-superior", "space directions": DIRECTIONS, "space origin": ORIGIN, "kinds": ["domain"] * 3, "encoding": "gzip"}


def _blob(shape, seed):
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    c = rng.uniform(-0.3, 0.3, len(shape))
    mask = sum((g - ci) ** 2 for g, ci in zip(grids, c)) < 0.3
    probs = np.clip(mask * 0.55 + rng.random(shape) * 0.45, 0, 1).astype(np.float32)
    return probs, mask.astype(np.uint8)


def _nrrd_dir(root, n=12, shape=(9, 8, 6), header=HEADER, mask_format="nrrd"):
    for sub in ("probs", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        probs, mask = _blob(shape, i)
        nrrd.write(str(root / "probs" / f"v{i:02d}.nrrd"), probs, header)
        if mask_format == "nrrd":
            nrrd.write(str(root / "masks" / f"v{i:02d}.nrrd"), mask, header)
    return root


def _ras(header):
    """pynrrd's (directions, origin) as a NIfTI RAS affine, for the cross-format tests."""
    a = np.eye(4)
    a[:3, :3] = np.asarray(header["space directions"]).T
    a[:3, 3] = header["space origin"]
    a[:2] *= -1  # LPS → RAS
    return a


def test_read_gives_the_array_spacing_and_geometry_pynrrd_gives(tmp_path):
    probs, _ = _blob((9, 8, 6), 0)
    f = tmp_path / "p.nrrd"
    nrrd.write(str(f), probs, HEADER)
    arr, spacing = read_array(f)
    data, _header = nrrd.read(str(f))
    assert np.array_equal(arr, data) and arr.shape == (9, 8, 6)
    assert spacing == pytest.approx(tuple(np.linalg.norm(DIRECTIONS, axis=1)))
    g = read_geometry(f)
    assert g.format.name == "NRRD" and g.shape == (9, 8, 6)
    # voxel (i, j, k) lies at origin + i·d_i + j·d_j + k·d_k (LPS), i.e. at the RAS affine's image
    ijk = np.array([3, 5, 2, 1.0])
    lps = ORIGIN + 3 * DIRECTIONS[0] + 5 * DIRECTIONS[1] + 2 * DIRECTIONS[2]
    assert np.allclose(g.affine @ ijk, [-lps[0], -lps[1], lps[2], 1.0])


def test_calibrate_predict_on_nrrd_writes_sets_on_the_input_grid(tmp_path, capsys):
    data = _nrrd_dir(tmp_path / "d")
    calib, sets = tmp_path / "c.json", tmp_path / "sets"
    ok(["calibrate", "--data", str(data), "--alpha", "0.2", "--out", str(calib), "-q"], capsys)
    ok(["predict", "--calib", str(calib), "--data", str(data), "--out", str(sets), "-q"], capsys)
    rec = json.loads(calib.read_text())
    assert rec["n"] == 12
    written = sorted(p.name for p in sets.glob("*.nrrd"))
    assert written == [f"v{i:02d}.nrrd" for i in range(12)] and not list(sets.glob("*.npy"))
    lam = rec["lambda"]
    for i in (0, 7):
        got, header = nrrd.read(str(sets / f"v{i:02d}.nrrd"))  # read back by pynrrd itself
        _, src = nrrd.read(str(data / "probs" / f"v{i:02d}.nrrd"))
        assert header["space"] == src["space"] == "left-posterior-superior"
        assert np.array_equal(header["space directions"], src["space directions"])
        assert np.array_equal(header["space origin"], src["space origin"])
        assert np.array_equal(header["sizes"], src["sizes"]) and header["type"] == "uint8" and got.dtype == np.uint8
        probs, _ = read_array(data / "probs" / f"v{i:02d}.nrrd")
        assert np.array_equal(got.astype(bool), 1.0 - probs.astype(np.float64) <= lam)  # threshold's set: {1 − p ≤ λ̂}
    # evaluate reads the NRRD sets back, with the NRRD spacing
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--sets", str(sets), "--data", str(data), "--out", str(tmp_path / "e.json"), "-q"])
    assert not e.value.code
    ev = json.loads((tmp_path / "e.json").read_text())
    assert ev["n"] == 12


def test_nrrd_probabilities_against_a_nifti_mask_of_the_same_grid(tmp_path):
    data = _nrrd_dir(tmp_path / "d", n=2, mask_format="nifti")
    for i in range(2):
        _, mask = _blob((9, 8, 6), i)
        nib.save(nib.Nifti1Image(mask, _ras(HEADER)), str(data / "masks" / f"v{i:02d}.nii.gz"))
    reader = DataDir(data).reader(get_method("threshold"))
    case = reader.read("v00")
    assert case.geometry.format.name == "NRRD" and case.mask.shape == (9, 8, 6)
    shifted = _ras(HEADER)
    shifted[0, 3] += 1.0
    nib.save(nib.Nifti1Image(_blob((9, 8, 6), 1)[1], shifted), str(data / "masks" / "v01.nii.gz"))
    with pytest.raises(SegcpError, match=r"v01\.nii\.gz: its affine differs from the model output's \(v01\.nrrd\)"):
        reader.read("v01")


def test_nnunet_npz_takes_its_grid_from_a_nrrd_beside_it(tmp_path):
    data = tmp_path / "d"
    (data / "probs").mkdir(parents=True)
    (data / "masks").mkdir()
    probs, mask = _blob((9, 8, 6), 0)
    stack = np.stack([1 - probs, probs])  # (C, x, y, z), written in SimpleITK's order (C, z, y, x)
    np.savez(data / "probs" / "v.npz", probabilities=stack.transpose(0, 3, 2, 1))
    nrrd.write(str(data / "probs" / "v.nrrd"), mask, HEADER)  # the argmax beside it
    nrrd.write(str(data / "masks" / "v.nrrd"), mask, HEADER)
    dd = DataDir(data)
    assert dd.path("probs", "v").name == "v.npz"
    case = dd.reader(get_method("threshold"), label=1).read("v")
    assert np.array_equal(case.probs, probs) and case.geometry.format.name == "NRRD"
    assert case.spacing == pytest.approx(tuple(np.linalg.norm(DIRECTIONS, axis=1)))


def test_a_2d_nrrd_stored_as_one_slice_round_trips(tmp_path, capsys):
    header = {"space": "left-posterior-superior", "space directions": np.diag([0.7, 0.7, 5.0]), "space origin": np.zeros(3), "encoding": "raw"}
    data = tmp_path / "d"
    for sub in ("probs", "masks"):
        (data / sub).mkdir(parents=True)
    for i in range(12):
        probs, mask = _blob((10, 12), i)
        nrrd.write(str(data / "probs" / f"s{i}.nrrd"), probs[..., None], header)
        nrrd.write(str(data / "masks" / f"s{i}.nrrd"), mask[..., None], header)
    arr, spacing = read_array(data / "probs" / "s0.nrrd")
    assert arr.shape == (10, 12) and spacing == pytest.approx((0.7, 0.7))
    calib, sets = tmp_path / "c.json", tmp_path / "sets"
    ok(["calibrate", "--data", str(data), "--alpha", "0.2", "--method", "morph", "--out", str(calib), "-q"], capsys)
    ok(["predict", "--calib", str(calib), "--data", str(data), "--out", str(sets), "-q"], capsys)
    got, h = nrrd.read(str(sets / "s3.nrrd"))
    assert got.shape == (10, 12, 1) and np.array_equal(h["space directions"], header["space directions"])


@pytest.mark.parametrize("what", ["garbage", "zero direction", "four spatial axes"])
def test_bad_nrrd_is_one_line(tmp_path, capsys, what):
    data = _nrrd_dir(tmp_path / "d", n=12)
    bad = data / "probs" / "v03.nrrd"
    if what == "garbage":
        bad.write_bytes(b"NRRD0004\ntype: float\ndimension: 3\nsizes: 9 8\n\n")
        fragment = "v03.nrrd: unreadable .nrrd file"
    elif what == "zero direction":
        nrrd.write(str(bad), _blob((9, 8, 6), 3)[0], {**HEADER, "space directions": np.diag([1.0, 0.0, 1.0])})
        fragment = "v03.nrrd: voxel spacing (1.0, 0.0, 1.0) (NRRD space directions) must be positive and finite"
    else:
        nrrd.write(str(bad), np.zeros((2, 2, 2, 2), np.float32), {"spacings": [1.0, 1.0, 1.0, 1.0]})
        fragment = "v03.nrrd: 4 spatial axes; segcp reads 2D and 3D grids"
    out = tmp_path / "c.json"
    with pytest.raises(SystemExit) as e:
        main(["calibrate", "--data", str(data), "--alpha", "0.2", "--out", str(out)])
    err = capsys.readouterr().err
    assert e.value.code == 2 and err.startswith("segcp: error: ") and err.count("\n") == 1 and fragment in err, err
    assert not out.exists()
