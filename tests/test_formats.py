"""File formats: one class per format behind one interface (segcp.io.formats).

A toy format registered here — and nowhere else — is indexed by DataDir, read, calibrated on,
and its sets are written back in it, on the input's grid, through the command line.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_cli import ok

from segcp.cli import main
from segcp.errors import SegcpError
from segcp.io import DataDir, Format, Geometry, format_of, read_array, read_geometry, read_probabilities, register, split_ext, suffixes
from segcp.io.formats import formats, unregister
from segcp.jobs.predict import PREDICT_MANIFEST
from segcp.methods import get_method


class Toy(Format):
    """A JSON file {"data": nested list, "spacing": [...], "origin": [...]}: a format with a grid."""

    name = "toy"
    suffixes = (".toy.json", ".toy")
    has_geometry = True

    def read(self, path: Path, *, color: bool = False) -> tuple[np.ndarray, tuple[float, ...] | None]:
        rec = json.loads(path.read_text())
        return np.asarray(rec["data"]), tuple(float(s) for s in rec["spacing"])

    def geometry(self, path: Path) -> Geometry:
        rec = json.loads(path.read_text())
        affine = np.eye(4)
        affine[:2, :2] = np.diag(rec["spacing"])
        affine[:2, 3] = rec["origin"]
        return Geometry(affine, {"spacing": rec["spacing"], "origin": rec["origin"]}, path, self, tuple(np.shape(rec["data"])))

    def write(self, path: Path, array: np.ndarray, geometry: Geometry) -> None:
        path.write_text(json.dumps({"data": np.asarray(array).tolist(), **geometry.header, "dtype": str(array.dtype)}))


@pytest.fixture
def toy():
    register(Toy)
    try:
        yield Toy
    finally:
        unregister(Toy)


def _toy_file(path: Path, data: np.ndarray, spacing=(0.5, 2.0), origin=(10.0, -3.0)) -> None:
    path.write_text(json.dumps({"data": np.asarray(data).tolist(), "spacing": list(spacing), "origin": list(origin)}))


def test_an_input_format_is_one_class(tmp_path, toy, capsys):
    rng = np.random.default_rng(0)
    data = tmp_path / "d"
    for sub in ("probs", "masks"):
        (data / sub).mkdir(parents=True)
    for i in range(12):
        mask = rng.random((6, 7)) < 0.4
        _toy_file(data / "probs" / f"c{i:02d}.toy", np.clip(mask * 0.6 + rng.random((6, 7)) * 0.4, 0, 1))
        _toy_file(data / "masks" / f"c{i:02d}.toy.json", mask.astype(int))  # the longer suffix wins
    assert format_of("c00.toy.json")[0].name == "toy" and split_ext("C00.TOY") == ("C00", ".TOY")
    assert ".toy.json" in suffixes() and any(isinstance(f, Toy) for f in formats())

    dd = DataDir(data)
    assert dd.ids(["probs", "masks"]) == [f"c{i:02d}" for i in range(12)]
    case = dd.reader(get_method("threshold")).read("c03")
    assert case.spacing == (0.5, 2.0) and case.mask.dtype == bool and case.geometry.format.name == "toy"
    assert np.array_equal(case.geometry.affine[:2, 3], [10.0, -3.0])

    calib, sets = tmp_path / "c.json", tmp_path / "sets"
    ok(["calibrate", "--data", str(data), "--alpha", "0.2", "--out", str(calib), "-q"], capsys)
    ok(["predict", "--calib", str(calib), "--data", str(data), "--out", str(sets), "-q"], capsys)
    written = sorted(p.name for p in sets.iterdir() if p.is_file() and not p.name.startswith("segcp") and p.name != PREDICT_MANIFEST)
    assert written == [f"c{i:02d}.toy.json" for i in range(12)]  # the format's first suffix
    rec = json.loads((sets / "c03.toy.json").read_text())
    assert rec["spacing"] == [0.5, 2.0] and rec["origin"] == [10.0, -3.0] and rec["dtype"] == "uint8"  # the input's grid
    got, spacing = read_array(sets / "c03.toy.json")
    assert got.shape == (6, 7) and spacing == (0.5, 2.0) and set(np.unique(got)) <= {0, 1}
    assert read_geometry(sets / "c03.toy.json").same_grid(case.geometry)

    # and evaluate reads the sets back through the same class
    with pytest.raises(SystemExit) as e:
        main(["evaluate", "--sets", str(sets), "--data", str(data), "--out", str(tmp_path / "e.json"), "-q"])
    assert not e.value.code, capsys.readouterr().err
    assert json.loads((tmp_path / "e.json").read_text())["n"] == 12


def test_unregistered_format_and_registry_rules(tmp_path, toy):
    f = tmp_path / "x.toy"
    _toy_file(f, np.zeros((2, 2)))
    assert read_array(f)[1] == (0.5, 2.0)
    unregister(Toy)
    with pytest.raises(SegcpError, match=r"x\.toy: unsupported file type; expected one of \.npy"):
        read_array(f)
    assert format_of("x.toy") is None and read_geometry(f) is None
    register(Toy)

    class Clash(Format):
        name = "clash"
        suffixes = (".npy",)

    with pytest.raises(ValueError, match=r"suffix \.npy is taken"):
        register(Clash)

    class Upper(Format):
        name = "upper"
        suffixes = (".NPY2",)

    with pytest.raises(ValueError, match="lower case"):
        register(Upper)
    assert format_of("a.npy")[0].name == "NPY"


def test_a_format_failure_is_one_line_naming_the_file(tmp_path, toy):
    bad = tmp_path / "bad.toy"
    bad.write_text("{not json")
    with pytest.raises(SegcpError) as e:
        read_array(bad)
    assert str(e.value).startswith(f"{bad}: unreadable .toy file (") and "\n" not in str(e.value)
    with pytest.raises(SegcpError, match=r"bad\.toy: unreadable toy file"):
        read_geometry(bad)
    with pytest.raises(SegcpError, match="no such file"):
        read_array(tmp_path / "missing.toy")


def test_probabilities_are_scaled_by_their_format(tmp_path):
    from PIL import Image

    Image.fromarray(np.array([[0, 255]], np.uint8)).save(tmp_path / "p8.png")
    Image.fromarray(np.array([[0, 65535]], np.uint16)).save(tmp_path / "p16.png")
    np.save(tmp_path / "p.npy", np.array([[0.0, 1.0]]))
    for name in ("p8.png", "p16.png", "p.npy"):
        arr, _ = read_probabilities(tmp_path / name)
        assert np.array_equal(arr, [[0.0, 1.0]]), name
