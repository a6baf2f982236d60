"""3D data: the slice-axis rule, NIfTI geometry, the la2018 and acdc-3d readers and tasks, export.

Synthetic files for the readers' error paths (fast); real-data tests (marked ``data``) read
../shared/data through the conftest fixtures (skip on a user's machine, fail under CI).
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from test_data import one_line_error as one_line

from segcp.cases import slice_axis
from segcp.errors import SegcpError
from segcp.harness.datasets import acdc, la2018
from segcp.harness.datasets.tasks import EXPORT_MANIFEST, Task, export_task
from segcp.harness.datasets.volumes import check_same_grid, volume_affine, volume_slices, write_nifti
from segcp.io import read_geometry, write_on_grid
from segcp.io.readers import read_array


# ------------------------------------------------------------------ slice axis, stacking
def stack_slices(slices, axis: int, *, channels: int = 0) -> np.ndarray:
    """Stack 2D maps back into a volume along ``axis`` (the inverse of ``volume_slices``).

    ``channels`` leading axes of each map are kept in front: maps (L, H, W) with
    ``channels=1`` and ``axis=2`` give (L, H, W, Z); maps (N, L, H, W) with ``channels=2``
    give (N, L, *volume shape).
    """
    return np.stack(list(slices), axis=channels + axis)


def test_slice_axis_rule():
    shape = (9, 8, 7)
    assert slice_axis(shape, (1.5, 1.5, 10.0)) == 2
    assert slice_axis(shape, (5.0, 0.8, 0.8)) == 0
    assert slice_axis(shape, (0.8, 4.0, 0.8)) == 1
    assert slice_axis(shape, (0.625, 0.625, 0.625)) == 2  # isotropic: the fewest slices (here the last axis)
    assert slice_axis(shape, (3.0, 1.0, 3.0)) == 2  # ties: the tied axis with the fewest voxels
    assert slice_axis((7, 8, 7), (3.0, 1.0, 3.0)) == 0  # ... then the first
    assert slice_axis(shape, None) == 2
    assert slice_axis((7, 8, 9), None) == 0  # unknown spacing: the fewest voxels, e.g. D of (D, H, W)
    assert slice_axis(shape, (1.0, 1.0, 1.0), given=0) == 0
    with pytest.raises(SegcpError, match="slice-axis"):
        slice_axis(shape, None, given=3)
    with pytest.raises(SegcpError, match="positive"):
        slice_axis(shape, (1.0, 0.0, 1.0))


def test_slices_round_trip():
    v = np.arange(3 * 4 * 5).reshape(3, 4, 5)
    for axis in range(3):
        s = volume_slices(v, axis)
        assert len(s) == v.shape[axis] and all(x.ndim == 2 for x in s)
        assert np.array_equal(s[1], np.take(v, 1, axis=axis))
        assert np.array_equal(stack_slices(s, axis), v)
    stacks = [np.stack([x, -x]) for x in volume_slices(v, 1)]  # (L, H, W) maps
    assert np.array_equal(stack_slices(stacks, 1, channels=1), np.stack([v, -v]))


# ------------------------------------------------------------------ NIfTI geometry
def _reference(path: Path, shape=(6, 5, 4), dtype=np.int16) -> nib.Nifti1Image:
    aff = np.array([[0.0, -1.2, 0.0, 10.0], [0.9, 0.0, 0.0, -5.0], [0.0, 0.0, 3.5, 2.0], [0, 0, 0, 1]])
    img = nib.Nifti1Image(np.arange(np.prod(shape)).reshape(shape).astype(dtype), aff)
    img.header.set_slope_inter(2.0, 1.0)  # a scaled integer image: the probabilities must not be scaled
    img.set_qform(aff, code="scanner")
    img.set_sform(aff, code="talairach")
    img.header.set_xyzt_units("mm", "sec")
    img.header.set_dim_info(slice=2)
    nib.save(img, str(path))
    return img


def test_writing_on_a_nifti_grid_keeps_the_reference_grid_and_header(tmp_path):
    _reference(tmp_path / "ref.nii.gz")
    ref = nib.load(str(tmp_path / "ref.nii.gz"))
    grid = read_geometry(tmp_path / "ref.nii.gz")
    p = np.random.default_rng(0).random((6, 5, 4)).astype(np.float32)
    write_on_grid(tmp_path / "p.nii.gz", p, grid)
    out = nib.load(str(tmp_path / "p.nii.gz"))
    assert out.get_data_dtype() == np.float32
    assert np.array_equal(np.asanyarray(out.dataobj), p)  # no intensity scaling
    assert np.array_equal(out.affine, ref.affine)
    for key in (
        "dim",
        "pixdim",
        "qform_code",
        "sform_code",
        "quatern_b",
        "quatern_c",
        "quatern_d",
        "qoffset_x",
        "srow_x",
        "srow_y",
        "srow_z",
        "xyzt_units",
        "dim_info",
    ):
        assert np.array_equal(out.header[key], ref.header[key]), key
    assert read_array(tmp_path / "p.nii.gz")[1] == read_array(tmp_path / "ref.nii.gz")[1]
    check_same_grid(tmp_path / "ref.nii.gz", tmp_path / "p.nii.gz")
    with pytest.raises(SegcpError, match="does not lie on the grid"):
        write_on_grid(tmp_path / "q.nii.gz", p[:, :, :3], grid)
    assert not (tmp_path / "q.nii.gz").exists()


def test_write_nifti_without_reference(tmp_path):
    write_nifti(tmp_path / "v.nii.gz", np.zeros((3, 4, 5), bool), spacing=(0.5, 0.7, 2.0))
    img = nib.load(str(tmp_path / "v.nii.gz"))
    assert img.get_data_dtype() == np.uint8 and img.header.get_xyzt_units()[0] == "mm"
    assert np.allclose(img.affine, volume_affine((0.5, 0.7, 2.0)), atol=1e-6) and img.header.get_dim_info() == (None, None, None)  # float32 header
    write_nifti(tmp_path / "a.nii", np.zeros((3, 4, 5), np.float32), spacing=None, units="unknown", slice_dim=2)
    img = nib.load(str(tmp_path / "a.nii"))
    assert img.header.get_xyzt_units()[0] == "unknown" and img.header.get_dim_info()[2] == 2
    assert np.array_equal(img.affine, np.eye(4))
    with pytest.raises(SegcpError, match=".nii.gz or .nii"):
        write_nifti(tmp_path / "v.npy", np.zeros((2, 2, 2)))


def test_check_same_grid_names_the_file(tmp_path):
    _reference(tmp_path / "img.nii.gz")
    shifted = nib.Nifti1Image(np.zeros((6, 5, 4), np.uint8), nib.load(str(tmp_path / "img.nii.gz")).affine + np.diag([0, 0, 0.01, 0]))
    nib.save(shifted, str(tmp_path / "m1.nii.gz"))
    with pytest.raises(SegcpError) as e:
        check_same_grid(tmp_path / "img.nii.gz", tmp_path / "m1.nii.gz")
    assert "affine differs" in one_line(e, tmp_path / "m1.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((6, 5, 3), np.uint8), np.eye(4)), str(tmp_path / "m2.nii.gz"))
    with pytest.raises(SegcpError) as e:
        check_same_grid(tmp_path / "img.nii.gz", tmp_path / "m2.nii.gz")
    assert "shape" in one_line(e, tmp_path / "m2.nii.gz")
    (tmp_path / "bad.nii.gz").write_bytes(b"not nifti")
    with pytest.raises(SegcpError) as e:
        read_geometry(tmp_path / "bad.nii.gz")
    assert "unreadable NIfTI file" in one_line(e, tmp_path / "bad.nii.gz")


# ------------------------------------------------------------------ LA 2018 reader (synthetic)
def _la_file(path: Path, image=None, label=None, drop: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as h:
        if drop != "image":
            h["image"] = np.zeros((4, 5, 6), np.float32) if image is None else image
        if drop != "label":
            h["label"] = np.zeros((4, 5, 6), np.uint8) if label is None else label
    return path


def test_la2018_reader_and_errors(tmp_path):
    root = tmp_path / "la"
    lab = np.zeros((4, 5, 6), np.uint8)
    lab[1:3, 2:4, 1:5] = 1
    _la_file(root / "volumes" / "B" / "mri_norm2.h5", label=lab)
    _la_file(root / "volumes" / "A" / "mri_norm2.h5")
    vols = la2018.scan_la2018(root)
    assert [v.id for v in vols] == ["A", "B"]
    img, got = la2018.read_la2018(vols[1].path)
    assert img.dtype == np.float32 and img.shape == (4, 5, 6) and got.dtype == np.uint8 and np.array_equal(got, lab)
    (root / "ids.txt").write_text("B\nC\n")
    with pytest.raises(SegcpError) as e:
        la2018.scan_la2018(root)
    one_line(e, root / "volumes" / "C" / "mri_norm2.h5")
    cases = {
        "nolabel": ({"drop": "label"}, "no 'label'"),
        "flat": ({"image": np.zeros((4, 5), np.float32), "label": np.zeros((4, 5), np.uint8)}, "3D volume"),
        "shape": ({"image": np.zeros((4, 5, 7), np.float32)}, "does not match"),
        "values": ({"label": np.full((4, 5, 6), 2, np.uint8)}, "0..1"),
        "nan": ({"image": np.full((4, 5, 6), np.nan, np.float32)}, "NaN"),
    }
    for name, (kw, match) in cases.items():
        f = _la_file(tmp_path / "bad" / f"{name}.h5", **kw)
        with pytest.raises(SegcpError, match=match) as e:
            la2018.read_la2018(f)
        one_line(e, f)
    (tmp_path / "junk.h5").write_bytes(b"junk")
    with pytest.raises(SegcpError, match="unreadable HDF5") as e:
        la2018.read_la2018(tmp_path / "junk.h5")
    one_line(e, tmp_path / "junk.h5")


def test_acdc_volumes_need_every_slice(tmp_path):
    for k in (1, 2, 4):
        with h5py.File(tmp_path / f"patient001_frame01_slice_{k}.h5", "w") as h:
            h["image"] = np.full((6, 7), k, np.float32)
            h["label"] = np.zeros((6, 7), np.uint8)
    with pytest.raises(SegcpError, match="no slice 3"):
        acdc.acdc_volumes(acdc.scan_acdc(tmp_path))
    with h5py.File(tmp_path / "patient001_frame01_slice_3.h5", "w") as h:
        h["image"] = np.full((6, 8), 3, np.float32)
        h["label"] = np.zeros((6, 8), np.uint8)
    (vol,) = acdc.acdc_volumes(acdc.scan_acdc(tmp_path))
    assert vol.id == "patient001_frame01" and vol.depth == 4
    with pytest.raises(SegcpError, match="cannot stack") as e:
        acdc.read_acdc_volume(vol)
    one_line(e, tmp_path / "patient001_frame01_slice_3.h5")


# ------------------------------------------------------------------ real data
@pytest.fixture(scope="module")
def la_task(la2018_dir: Path) -> Task:
    return Task("la2018", la2018_dir)


@pytest.mark.data
def test_la2018_task(la_task: Task, tmp_path: Path):
    items = la_task.items()
    assert len(items) == 20 and all(it.group == it.id for it in items)  # one volume per patient
    s = items[0].load()
    assert s.image.ndim == 3 and s.image.shape[2] == 88 and s.image.dtype == np.float32
    assert s.mask.dtype == bool and s.mask.shape == s.image.shape and s.mask.any()
    assert s.spacing == (0.625, 0.625, 0.625) and s.slice_axis == 2
    sp = la_task.split(0)
    assert (len(sp.train), len(sp.calibration), len(sp.test)) == (5, 10, 5)
    assert not set(sp.train) & set(sp.pool) and len(sp.pool) == 15
    assert la_task.split(0) == sp and la_task.split(1).train != sp.train
    ids = export_task(la_task, [sp.test[0]], tmp_path / "d", split=sp)
    img = nib.load(str(tmp_path / "d" / "images" / f"{ids[0]}.nii.gz"))
    msk = nib.load(str(tmp_path / "d" / "masks" / f"{ids[0]}.nii.gz"))
    assert img.header.get_zooms() == (0.625, 0.625, 0.625) and img.header.get_xyzt_units()[0] == "mm"
    assert np.array_equal(img.affine, np.diag([0.625, 0.625, 0.625, 1.0])) and np.array_equal(msk.affine, img.affine)
    assert np.array_equal(np.asanyarray(img.dataobj), la_task.load(ids[0]).image)
    assert msk.get_data_dtype() == np.uint8 and np.array_equal(np.asanyarray(msk.dataobj), la_task.load(ids[0]).mask)
    man = json.loads((tmp_path / "d" / EXPORT_MANIFEST).read_text())
    assert man["groups"] == {ids[0]: ids[0]} and man["geometry"]["units"] == "mm" and man["geometry"]["slice_axis"] == 2


@pytest.mark.data
def test_acdc_3d_task(acdc_dir: Path, tmp_path: Path):
    t = Task("acdc-3d", acdc_dir)
    items = t.items()
    assert len(items) == 140 and len({it.group for it in items}) == 70
    assert all(it.id.startswith(it.group + "_frame") for it in items)
    vol = t.load("patient003_frame01")
    assert vol.image.shape == (256, 256, 10) and vol.mask.dtype == np.uint8 and vol.spacing is None
    img2d, lab2d = acdc.read_acdc_h5(acdc_dir / "data" / "patient003_frame01_slice_4.h5")
    assert np.array_equal(vol.image[:, :, 3], img2d) and np.array_equal(vol.mask[:, :, 3], lab2d)
    # the same patients as the 2D tasks' split, part by part
    s3, s2 = t.split(0), Task("acdc-lv", acdc_dir).split(0)
    for part in ("train", "calibration", "test"):
        assert {s3.groups[i] for i in s3.part(part)} == {s2.groups[i] for i in s2.part(part)}
    assert len(s3.pool) == 56
    export_task(t, ["patient003_frame01"], tmp_path / "d")
    img = nib.load(str(tmp_path / "d" / "images" / "patient003_frame01.nii.gz"))
    assert img.header.get_xyzt_units()[0] == "unknown" and img.header.get_dim_info()[2] == 2
    assert img.header.get_zooms() == (1.0, 1.0, 1.0) and np.array_equal(img.affine, np.eye(4))
    msk, _ = read_array(tmp_path / "d" / "masks" / "patient003_frame01.nii.gz")
    assert np.array_equal(msk, vol.mask)
    man = json.loads((tmp_path / "d" / EXPORT_MANIFEST).read_text())
    assert man["groups"] == {"patient003_frame01": "patient003"} and man["geometry"]["units"] == "voxel"
