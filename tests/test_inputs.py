"""Inputs as users have them: MONAI-style names and channel-last volumes, folders given one by
one, colour images for the image-aware methods — and the existing layout unchanged."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
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
    fails(
        [
            "calibrate",
            "--probs",
            root / "out",
            "--masks",
            root / "labels",
            "--match",
            "probs={id}_proba",
            "--labels",
            "all",
            "--out",
            tmp_path / "x.json",
        ],
        capsys,
        tmp_path,
        "matching '{id}_proba'",
    )


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
    ok(
        ["calibrate", "--method", "rwcp", "--encoder", "fallback", "--k", "6", "--alpha", "0.2", "--data", d, "--out", tmp_path / "c.json", "-q"],
        capsys,
    )
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


# ------------------------------------------------------------------ the NPY reader's fast path
def _npy_cases() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [
        rng.random((5, 7)).astype(np.float32),
        np.asfortranarray(rng.random((4, 3, 2))),
        np.arange(12, dtype=">i4").reshape(3, 4),  # big-endian
        np.zeros((0, 3)),
        np.array(3.5),
        rng.random((3, 3)) > 0.5,
        np.array(["ab", "c"]),
        np.arange(6).astype("datetime64[D]"),
        np.zeros(3, dtype=[("a", "<f4"), ("b", "u1")]),
        rng.random((2, 3)).astype(np.float16),
    ]


def test_npy_fast_path_equals_np_load(tmp_path):
    from segcp.io import readers
    from segcp.io.formats.npy import _read_npy

    for i, a in enumerate(_npy_cases()):
        for version in ((1, 0), (2, 0), (3, 0)):
            f = tmp_path / f"{i}-{version[0]}.npy"
            with open(f, "wb") as fh:
                np.lib.format.write_array(fh, a, version=version)
            got = _read_npy(f)
            ref = np.load(f)
            assert got is not None, (i, version)
            assert got.dtype == ref.dtype and got.shape == ref.shape, (i, version)
            assert got.flags.c_contiguous == ref.flags.c_contiguous and got.flags.f_contiguous == ref.flags.f_contiguous
            assert got.tobytes("A") == ref.tobytes("A") and got.flags.writeable
            got2, spacing = readers.read_array(f)  # the second read of a header comes from the cache
            assert spacing is None and got2.tobytes("A") == ref.tobytes("A")


def test_npy_fast_path_leaves_the_odd_files_to_np_load(tmp_path):
    from segcp.errors import SegcpError
    from segcp.io import readers
    from segcp.io.formats.npy import _read_npy

    f = tmp_path / "obj.npy"
    np.save(f, np.array([None, 1], dtype=object), allow_pickle=True)
    assert _read_npy(f) is None  # np.load refuses pickles with its own line
    with pytest.raises(SegcpError, match=r"obj\.npy: unreadable \.npy file \(Object arrays"):
        readers.read_array(f)
    z = tmp_path / "zip.npy"
    np.savez(z.with_suffix(".npz"), a=np.zeros(3))
    z.write_bytes(z.with_suffix(".npz").read_bytes())
    assert _read_npy(z) is None
    with pytest.raises(SegcpError, match=r"zip\.npy: an \.npz archive"):
        readers.read_array(z)


def test_npy_reads_a_body_that_comes_in_several_reads(tmp_path):
    """One read() returns at most ~2 GiB on Linux: the NPY reader fills its array over as many as it takes."""
    import io

    from segcp.io.formats.npy import _read_into

    class Short(io.RawIOBase):  # returns at most 7 bytes per read, as a large file returns its 2 GiB pieces
        def __init__(self, data: bytes) -> None:
            self.data, self.at = data, 0

        def readinto(self, b):  # type: ignore[override]
            n = min(7, len(b), len(self.data) - self.at)
            b[:n] = self.data[self.at : self.at + n]
            self.at += n
            return n

    body = np.arange(50, dtype=np.float64)
    out = np.empty(50)
    assert _read_into(Short(body.tobytes()), out.view(np.uint8).data) == 400 and np.array_equal(out, body)
    assert _read_into(Short(body.tobytes()[:100]), np.empty(50).view(np.uint8).data) == 100  # the file's end


def test_files_that_are_not_regular_are_refused_on_the_open_file(tmp_path):
    """open_regular (the NPY reader's open) checks what it opened: a FIFO is opened without blocking and
    refused, as check_regular_file refuses it by name, with the same lines for every kind."""
    import os
    import threading

    from segcp.errors import SegcpError
    from segcp.io import readers
    from segcp.io.files import check_regular_file, open_regular

    os.mkfifo(tmp_path / "fifo.npy")
    (tmp_path / "dir.npy").mkdir()
    (tmp_path / "loop.npy").symlink_to(tmp_path / "loop.npy")
    (tmp_path / "gone.npy").symlink_to(tmp_path / "nothing.npy")
    (tmp_path / "zero.npy").symlink_to("/dev/zero")
    cases = {
        "fifo.npy": "not a regular file (a FIFO, socket or device)",
        "dir.npy": "is a directory; expected a file",
        "loop.npy": "a symbolic link loop",
        "gone.npy": "a symbolic link to a missing file",
        "zero.npy": "not a regular file",
        "absent.npy": "no such file",
    }
    for name, said in cases.items():
        for look in (check_regular_file, open_regular, readers.read_array):
            got: list[str] = []

            def attempt(look=look, name=name, got=got) -> None:
                try:
                    look(tmp_path / name)
                except SegcpError as exc:
                    got.append(str(exc))

            th = threading.Thread(target=attempt, daemon=True)
            th.start()
            th.join(10)
            assert not th.is_alive(), f"{look.__name__} blocked on {name}"
            assert got and got[0].startswith(f"{tmp_path / name}: {said}"), (name, look.__name__, got)
    np.save(tmp_path / "ok.npy", np.arange(3))
    f, st = open_regular(tmp_path / "ok.npy")
    with f:
        assert st.st_size == (tmp_path / "ok.npy").stat().st_size and f.read(6) == b"\x93NUMPY"


def test_npy_truncated_or_lying_header_is_one_line(tmp_path):
    from segcp.errors import SegcpError
    from segcp.io import readers
    from segcp.io.formats.npy import _read_npy

    f = tmp_path / "t.npy"
    np.save(f, np.zeros((100, 100)))
    raw = f.read_bytes()
    f.write_bytes(raw[:-8])
    with pytest.raises(SegcpError, match=r"t\.npy: unreadable \.npy file \(truncated: 79992 of 80000 data bytes\)"):
        readers.read_array(f)
    # a header that claims 10^12 values: refused before anything is allocated
    head = np.lib.format.header_data_from_array_1_0(np.zeros((100, 100)))
    head["shape"] = (10**6, 10**6)
    g = tmp_path / "big.npy"
    with open(g, "wb") as fh:
        np.lib.format.write_array_header_1_0(fh, head)
        fh.write(b"\0" * 64)
    with pytest.raises(SegcpError, match=r"big\.npy: unreadable \.npy file \(truncated: 64 of 8000000000000 data bytes\)"):
        readers.read_array(g)
    # a header length of 2 GiB: left to np.load, which refuses it in one line (nothing read ahead)
    h = tmp_path / "h.npy"
    h.write_bytes(b"\x93NUMPY\x02\x00" + (2**31).to_bytes(4, "little") + b"x" * 100)
    assert _read_npy(h) is None
    with pytest.raises(SegcpError, match=r"h\.npy: unreadable \.npy file \("):
        readers.read_array(h)
