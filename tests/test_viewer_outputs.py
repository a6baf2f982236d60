"""Viewer outputs of two-sided sets (segcp.io.viewer): the band label volume on the input's grid
(NIfTI, NRRD), the ITK-SNAP label description and the 3D Slicer ``.seg.nrrd``, read back with
nibabel and pynrrd: the same affine / space directions as the input, labels 0/1/2, the segment
names, colours, label values and layers in the NRRD header."""

from __future__ import annotations

import nibabel as nib
import nrrd
import numpy as np
import pytest

from segcp.errors import SegcpError
from segcp.io import read_geometry
from segcp.io.viewer import band_colors, band_labels, multi_band_labels, segment_names, write_band, write_itksnap_labels, write_slicer_segmentation
from segcp.methods import Case, MorphMethod, ThresholdMethod

SHAPE = (12, 10, 7)


def _affine() -> np.ndarray:
    """An oblique grid: rotated about z, anisotropic voxels, an origin away from 0."""
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0], [s, c, 0], [0, 0, 1.0]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([0.8, 1.25, 3.0])
    aff[:3, 3] = [-40.0, 12.5, 7.0]
    return aff


def _band(shape=SHAPE, seed=0):
    rng = np.random.default_rng(seed)
    probs = np.clip(np.zeros(shape) + rng.random(shape) * 0.2, 0, 1)
    probs[tuple(slice(1, n - 1) for n in shape)] = 0.7
    probs[tuple(slice(2, n - 2) for n in shape)] = 0.95
    return ThresholdMethod().predict_band(Case("c", probs), 0.3)


def test_band_labels_and_errors():
    inner, outer = _band()
    lab = band_labels(inner, outer)
    assert lab.dtype == np.uint8 and set(np.unique(lab)) == {0, 1, 2}
    assert np.array_equal(lab == 2, inner) and np.array_equal(lab >= 1, outer)
    with pytest.raises(SegcpError, match="inner set is not inside the outer set"):
        band_labels(outer, inner)
    with pytest.raises(SegcpError, match="one shape"):
        band_labels(inner, outer[:-1])


def test_band_nifti_on_the_input_grid(tmp_path):
    src = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), _affine()), str(src))
    geometry = read_geometry(src)
    inner, outer = _band()
    (tmp_path / "sets").mkdir()
    out = write_band(tmp_path / "sets", "case", inner, outer, geometry)
    assert out.name == "case.nii.gz"
    img = nib.load(str(out))
    np.testing.assert_allclose(img.affine, _affine(), atol=1e-6)
    assert img.shape == SHAPE and img.get_data_dtype() == np.uint8
    data = np.asanyarray(img.dataobj)
    assert set(np.unique(data)) == {0, 1, 2} and np.array_equal(data, band_labels(inner, outer))
    assert img.header.get_zooms() == nib.load(str(src)).header.get_zooms()


def _nrrd_input(path, shape=SHAPE):
    dirs = np.array([[0.8, 0.1, 0.0], [-0.1, 1.25, 0.0], [0.0, 0.0, 3.0]])
    nrrd.write(
        str(path),
        np.zeros(shape, np.float32),
        {"space": "left-posterior-superior", "space directions": dirs, "space origin": np.array([10.0, -20.0, 5.5]), "kinds": ["domain"] * 3},
        index_order="F",
    )
    return dirs


def test_band_nrrd_and_seg_nrrd_on_an_nrrd_grid(tmp_path):
    src = tmp_path / "case.nrrd"
    dirs = _nrrd_input(src)
    geometry = read_geometry(src)
    inner, outer = _band()
    (tmp_path / "sets").mkdir()
    out = write_band(tmp_path / "sets", "case", inner, outer, geometry)
    assert out.name == "case.nrrd"
    data, header = nrrd.read(str(out), index_order="F")
    np.testing.assert_allclose(header["space directions"], dirs)
    np.testing.assert_allclose(header["space origin"], [10.0, -20.0, 5.5])
    assert np.array_equal(data, band_labels(inner, outer))
    seg = write_slicer_segmentation(tmp_path / "case.seg.nrrd", [(inner, outer)], ["LV"], geometry)
    data, header = nrrd.read(str(seg), index_order="F")
    assert header["space"] == "left-posterior-superior" and data.shape == SHAPE
    np.testing.assert_allclose(header["space directions"], dirs, atol=1e-12)
    np.testing.assert_allclose(header["space origin"], [10.0, -20.0, 5.5], atol=1e-12)
    assert np.array_equal(data, band_labels(inner, outer))


def test_seg_nrrd_from_a_nifti_input_names_its_segments(tmp_path):
    src = tmp_path / "case.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(SHAPE, np.float32), _affine()), str(src))
    geometry = read_geometry(src)
    inner, outer = _band()
    seg = write_slicer_segmentation(tmp_path / "case.seg.nrrd", [(inner, outer)], ["LV"], geometry)
    data, header = nrrd.read(str(seg), index_order="F")
    assert data.dtype == np.uint8 and set(np.unique(data)) == {0, 1, 2}
    names = {header[f"Segment{i}_Name"]: int(header[f"Segment{i}_LabelValue"]) for i in range(2)}
    assert names == {"LV certain": 2, "LV possible": 1}
    assert {header["Segment0_Layer"], header["Segment1_Layer"]} == {"0"}
    assert header["Segmentation_MasterRepresentation"] == "Binary labelmap"
    color = [float(c) for c in header["Segment0_Color"].split()]
    assert np.allclose(np.array(color) * 255, band_colors(0)[2], atol=0.01)
    ext = [int(v) for v in header["Segment0_Extent"].split()]
    where = np.argwhere(inner)
    assert ext == [int(v) for pair in zip(where.min(0), where.max(0)) for v in pair]
    # the same grid as the NIfTI input: NRRD's LPS directions read back to the input's RAS affine
    assert read_geometry(seg).same_grid(geometry)
    np.testing.assert_allclose(read_geometry(seg).affine, _affine(), atol=1e-9)


def test_several_structures_in_one_layered_seg_nrrd_and_one_label_volume(tmp_path):
    probs = np.zeros((16, 16, 5))
    probs[2:9, 2:9] = 0.9
    probs[7:14, 7:14] = np.maximum(probs[7:14, 7:14], 0.6)  # overlaps the first
    lv = MorphMethod("square").predict_band(Case("a", (probs > 0.8) * 0.9), 1)
    rv = MorphMethod("square").predict_band(Case("b", ((probs > 0.5) & ~(probs > 0.8)) * 0.9), 1)
    seg = write_slicer_segmentation(tmp_path / "two.seg.nrrd", [lv, rv], ["LV", "RV"], spacing=(1.5, 1.5, 8.0))
    data, header = nrrd.read(str(seg), index_order="F")
    assert data.shape == (2, 16, 16, 5) and header["kinds"] == ["list", "domain", "domain", "domain"]
    assert np.array_equal(data[0], band_labels(*lv)) and np.array_equal(data[1], band_labels(*rv))
    got = {header[f"Segment{i}_Name"]: (header[f"Segment{i}_Layer"], header[f"Segment{i}_LabelValue"]) for i in range(4)}
    assert got == {"LV certain": ("0", "2"), "LV possible": ("0", "1"), "RV certain": ("1", "2"), "RV possible": ("1", "1")}
    np.testing.assert_allclose(header["space directions"][1:], np.diag([1.5, 1.5, 8.0]))
    lab = multi_band_labels([lv, rv])
    assert np.array_equal(lab == 2, lv[0]) and np.array_equal(lab == 4, rv[0] & ~lv[0])
    assert np.all(lab[lv[1] & ~lv[0] & ~rv[0]] == 1)  # LV possible beats RV possible (earlier structure)
    assert segment_names(["LV", "RV"]) == [(1, "LV possible"), (2, "LV certain"), (3, "RV possible"), (4, "RV certain")]


def test_2d_band_without_a_grid(tmp_path):
    inner, outer = _band((20, 24))
    (tmp_path / "sets").mkdir()
    assert write_band(tmp_path / "sets", "img", inner, outer).name == "img.npy"
    assert np.array_equal(np.load(tmp_path / "sets" / "img.npy"), band_labels(inner, outer))
    seg = write_slicer_segmentation(tmp_path / "img.seg.nrrd", [(inner, outer)], ["lesion"], spacing=(0.5, 0.5))
    data, header = nrrd.read(str(seg), index_order="F")
    assert data.shape == (20, 24, 1) and np.array_equal(data[..., 0], band_labels(inner, outer))
    np.testing.assert_allclose(header["space directions"], np.diag([0.5, 0.5, 1.0]))
    with pytest.raises(SegcpError, match="must end in .seg.nrrd"):
        write_slicer_segmentation(tmp_path / "img.nrrd", [(inner, outer)], ["lesion"])
    with pytest.raises(SegcpError, match="1 bands for 2 structure names"):
        write_slicer_segmentation(tmp_path / "x.seg.nrrd", [(inner, outer)], ["a", "b"])
    assert not (tmp_path / "x.seg.nrrd").exists()


def test_itksnap_label_description(tmp_path):
    path = write_itksnap_labels(tmp_path / "labels.txt", ["LV", "RV"])
    rows = [line for line in path.read_text().splitlines() if line and not line.startswith("#")]
    parsed = [(int(r.split()[0]), tuple(int(v) for v in r.split()[1:4]), r.split('"')[1]) for r in rows]
    assert [(v, n) for v, _, n in parsed] == [(0, "Clear Label"), (1, "LV possible"), (2, "LV certain"), (3, "RV possible"), (4, "RV certain")]
    assert parsed[2][1] == band_colors(0)[2] and parsed[1][1] == band_colors(0)[1] and parsed[4][1] == band_colors(1)[2]
    for r in rows:
        assert len(r.split('"')[0].split()) == 7  # IDX R G B A VIS MSH
    with pytest.raises(SegcpError, match="double quote"):
        write_itksnap_labels(tmp_path / "bad.txt", ['L"V'])
