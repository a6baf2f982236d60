"""Tests of segcp.harness.datasets: readers (ACDC HDF5, BUSI PNG, NIfTI spacing), tasks and the RW-CP
protocol, group splits and near-duplicate groups, preprocessing, export to a data directory.

Real-data tests (marked ``data``) read ../shared/data through the conftest fixtures.
"""

from __future__ import annotations

import json
import shutil
from collections import defaultdict
from pathlib import Path

import h5py
import numpy as np
import pytest

from segcp.engine.splits import random_cal_test_splits, split_groups, split_ids
from segcp.errors import SegcpError
from segcp.harness.datasets import acdc, busi
from segcp.harness.datasets.hashes import _as_gray_float, _resize_lanczos, hamming_distances, near_duplicate_groups, phash, union_find
from segcp.harness.datasets.preprocess import (
    Preprocessing,
    center_crop_or_pad,
    clip_percentiles,
    ct_window,
    preprocess,
    resample_to_spacing,
    resize_to_shape,
    restore_to_original,
)
from segcp.harness.datasets.tasks import EXPORT_MANIFEST, Task, available_tasks, export_task, resolve_data_root
from segcp.io.datadir import DataDir
from segcp.io.readers import read_array


def one_line_error(exc: pytest.ExceptionInfo[SegcpError], path: Path) -> str:
    msg = str(exc.value)
    assert "\n" not in msg
    assert str(path) in msg, msg
    return msg


# ------------------------------------------------------------------ fixtures
@pytest.fixture(scope="module")
def acdc_lv(shared_data: Path) -> Task:
    return Task("acdc-lv", shared_data)


@pytest.fixture(scope="module")
def busi_task(shared_data: Path) -> Task:
    return Task("busi", shared_data)


@pytest.fixture(scope="module")
def acdc_labels(acdc_dir: Path) -> dict[str, np.ndarray]:
    """Every ACDC label map, read directly with h5py (independent of segcp.harness.datasets)."""
    out = {}
    for f in sorted((acdc_dir / "data").glob("*.h5")):
        with h5py.File(f, "r") as h:
            out[f.stem] = h["label"][()]
    return out


def copy_slice(acdc_dir: Path, name: str, dest: Path) -> Path:
    dest.mkdir(parents=True, exist_ok=True)
    return Path(shutil.copy(acdc_dir / "data" / name, dest / name))


# ------------------------------------------------------------------ ACDC readers
def test_parse_acdc_name() -> None:
    assert acdc.parse_acdc_name("patient003_frame01_slice_5.h5") == acdc.AcdcKey("patient003", "frame01", 5)
    assert acdc.parse_acdc_name("/x/patient100_frame02.h5") == acdc.AcdcKey("patient100", "frame02", None)
    with pytest.raises(SegcpError, match="not an ACDC file name"):
        acdc.parse_acdc_name("case3_slice_5.h5")


@pytest.mark.data
def test_acdc_real_files(acdc_dir: Path) -> None:
    slices = acdc.scan_acdc(acdc_dir)
    assert len(slices) == 1312
    assert len({s.patient for s in slices}) == 70
    assert len({s.volume for s in slices}) == 140
    assert {s.frame for s in slices} == {"frame01", "frame02"}
    for s in slices[::97]:
        image, label = acdc.read_acdc_slice(s)
        assert image.dtype == np.float32 and label.dtype == np.uint8
        assert image.shape == label.shape and image.ndim == 2
        assert 154 <= image.shape[0] <= 512 and 154 <= image.shape[1] <= 428
        assert image.min() >= 0.0 and image.max() <= 1.0
        assert set(np.unique(label).tolist()) <= {0, 1, 2, 3}
    img, lab = acdc.read_acdc_h5(acdc_dir / "data" / "patient003_frame01_slice_5.h5")
    assert img.shape == lab.shape and img.dtype == np.float32
    areas = acdc.label_areas(slices)
    assert areas.shape == (1312, 4) and (areas.sum(axis=1) > 0).all()
    assert int((areas[:, 1:].sum(axis=1) == 0).sum()) == 43  # MANIFEST: 43 empty labels


@pytest.mark.data
def test_acdc_volume_file(acdc_dir: Path, tmp_path: Path) -> None:
    names = sorted((acdc_dir / "data").glob("patient003_frame01_slice_*.h5"), key=lambda p: int(p.stem.split("_")[-1]))
    imgs, labs = zip(*(acdc.read_acdc_h5(p) for p in names))
    (tmp_path / "data").mkdir()
    vol = tmp_path / "data" / "patient003_frame01.h5"
    with h5py.File(vol, "w") as h:
        h["image"] = np.stack(imgs)
        h["label"] = np.stack(labs)
    img3, lab3 = acdc.read_acdc_h5(vol)
    assert img3.shape == lab3.shape == (len(names), *imgs[0].shape)

    slices = acdc.scan_acdc(tmp_path)
    assert [s.id for s in slices] == [p.stem for p in names]
    assert all(s.index == s.slice - 1 and s.path == vol for s in slices)
    for s, p in zip(slices, names):
        a, b = acdc.read_acdc_slice(s)
        c, d = acdc.read_acdc_h5(p)
        np.testing.assert_array_equal(a, c)
        np.testing.assert_array_equal(b, d)
    np.testing.assert_array_equal(acdc.label_areas(slices), acdc.label_areas(acdc.scan_acdc(acdc_dir))[: len(names)])

    # The RW-CP slice of the volume is the same as with the slice files.
    vol_task = Task("acdc-lv", tmp_path)
    (chosen,) = vol_task.items("rwcp")
    ref = [it for it in Task("acdc-lv", acdc_dir).items("rwcp") if it.meta["patient"] == "patient003" and it.meta["frame"] == "frame01"]
    assert chosen.id == ref[0].id
    np.testing.assert_array_equal(chosen.load().mask, ref[0].load().mask)

    # A slice given twice (volume + slice file) is an error naming the file.
    copy_slice(acdc_dir, names[0].name, tmp_path / "data")
    with pytest.raises(SegcpError, match="also provided by"):
        acdc.scan_acdc(tmp_path)


@pytest.mark.data
def test_acdc_corrupted_files(acdc_dir: Path, tmp_path: Path) -> None:
    src = copy_slice(acdc_dir, "patient003_frame01_slice_5.h5", tmp_path / "ok")

    trunc = tmp_path / "patient003_frame01_slice_6.h5"
    data = src.read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(SegcpError) as e:
        acdc.read_acdc_h5(trunc)
    assert "unreadable HDF5" in one_line_error(e, trunc)

    notlabel = tmp_path / "patient003_frame01_slice_7.h5"
    with h5py.File(notlabel, "w") as h:
        h["image"] = np.zeros((8, 8), np.float32)
        h["mask"] = np.zeros((8, 8), np.uint8)
    with pytest.raises(SegcpError) as e:
        acdc.read_acdc_h5(notlabel)
    assert "no 'label' dataset" in one_line_error(e, notlabel)

    mismatch = tmp_path / "patient003_frame01_slice_8.h5"
    with h5py.File(mismatch, "w") as h:
        h["image"] = np.zeros((8, 8), np.float32)
        h["label"] = np.zeros((8, 9), np.uint8)
    with pytest.raises(SegcpError) as e:
        acdc.read_acdc_h5(mismatch)
    assert "does not match" in one_line_error(e, mismatch)

    floaty = tmp_path / "patient003_frame01_slice_9.h5"
    with h5py.File(floaty, "w") as h:
        h["image"] = np.zeros((8, 8), np.float32)
        h["label"] = np.full((8, 8), 0.5, np.float32)
    with pytest.raises(SegcpError) as e:
        acdc.read_acdc_h5(floaty)
    assert "non-integer" in one_line_error(e, floaty)

    big = tmp_path / "patient003_frame01_slice_10.h5"
    with h5py.File(big, "w") as h:
        h["image"] = np.zeros((8, 8), np.float32)
        h["label"] = np.full((8, 8), 7, np.uint8)
    with pytest.raises(SegcpError) as e:
        acdc.read_acdc_h5(big)
    one_line_error(e, big)

    # The same errors surface through a task, naming the file.
    with pytest.raises(SegcpError) as e:
        Task("acdc-lv", tmp_path).items("rwcp")
    assert str(tmp_path) in str(e.value) and "\n" not in str(e.value)


# -------------------------------------------------------------- NIfTI spacing
def test_nifti_spacing_round_trip(tmp_path: Path) -> None:
    import nibabel as nib

    rng = np.random.default_rng(0)
    vol = rng.random((12, 10, 5)).astype(np.float32)
    img = nib.Nifti1Image(vol, np.diag([1.25, 0.7, 3.0, 1.0]))
    img.header.set_zooms((1.25, 0.7, 3.0))
    path = tmp_path / "vol.nii.gz"
    nib.save(img, str(path))
    arr, spacing = read_array(path)
    np.testing.assert_allclose(arr, vol)
    assert spacing == pytest.approx((1.25, 0.7, 3.0))

    out = preprocess(arr, arr > 0.5, spacing, Preprocessing(target_spacing=(2.5, 1.4, 1.5)))
    assert out.image.shape == (6, 5, 10) and out.mask.shape == (6, 5, 10) and out.mask.dtype == bool
    assert out.record["spacing"] == pytest.approx([2.5, 1.4, 1.5])
    back = restore_to_original(out.image, out.record)
    assert back.shape == vol.shape


# ------------------------------------------------------------------ BUSI
@pytest.mark.data
def test_busi_real_files(busi_dir: Path) -> None:
    items = busi.scan_busi(busi_dir)
    assert len(items) == 647
    assert {it.cls for it in items} == {"benign", "malignant"}
    for it in items[::61]:
        image, mask = busi.read_busi_pair(it)
        assert image.dtype == np.uint8 and image.ndim == 2
        assert mask.dtype == bool and mask.shape == image.shape and mask.any()


@pytest.mark.data
def test_busi_bad_files(busi_dir: Path, tmp_path: Path) -> None:
    from PIL import Image

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    gray = busi.read_busi_image(busi_dir / "images" / "benign_001.png")
    rgb = np.stack([gray, gray, gray], axis=-1)
    Image.fromarray(rgb).save(tmp_path / "images" / "grayrgb.png")
    np.testing.assert_array_equal(busi.read_busi_image(tmp_path / "images" / "grayrgb.png"), gray)

    rgb[10:20, 10:20] = (255, 0, 0)
    colour = tmp_path / "images" / "colour.png"
    Image.fromarray(rgb).save(colour)
    with pytest.raises(SegcpError) as e:
        busi.read_busi_image(colour)
    assert "colour PNG" in one_line_error(e, colour)
    luma = busi.read_busi_image(colour, colour="luma")
    assert luma.dtype == np.uint8 and luma[15, 15] == 76  # 0.299·255

    bad = tmp_path / "masks" / "colour.png"
    Image.fromarray(np.full(gray.shape, 128, np.uint8)).save(bad)
    with pytest.raises(SegcpError) as e:
        busi.read_busi_mask(bad)
    assert "mask values" in one_line_error(e, bad)

    small = tmp_path / "masks" / "grayrgb.png"
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(small)
    with pytest.raises(SegcpError) as e:
        busi.read_busi_pair(busi.BusiImage("grayrgb", "", tmp_path / "images" / "grayrgb.png", small))
    assert "does not match" in one_line_error(e, small)

    Image.fromarray(gray).save(tmp_path / "images" / "orphan.png")
    with pytest.raises(SegcpError, match="no mask"):
        busi.scan_busi(tmp_path)

    trunc = tmp_path / "images" / "trunc.png"
    data = (busi_dir / "images" / "benign_001.png").read_bytes()
    trunc.write_bytes(data[:200])
    with pytest.raises(SegcpError) as e:
        busi.read_busi_image(trunc)
    one_line_error(e, trunc)


# -------------------------------------------------------- near-duplicates
def dhash(image: np.ndarray, size: int = 8) -> np.ndarray:
    """Difference hash, bool (size·size,): signs of horizontal gradients of a (size, size+1)
    thumbnail (the 64-bit hash that pHash replaced, see segcp.harness.datasets.hashes)."""
    small = _resize_lanczos(_as_gray_float(image), size, size + 1)
    return (small[:, 1:] > small[:, :-1]).ravel()


def test_hashes_and_union_find() -> None:
    rng = np.random.default_rng(1)
    base = rng.random((120, 160)) * 200
    shifted = np.roll(base, 2, axis=1) + 10  # brighter, slightly shifted copy
    other = rng.random((120, 160)) * 200
    h = np.stack([phash(base), phash(shifted), phash(other)])
    d = hamming_distances(h)
    assert d.shape == (3, 3) and (np.diag(d) == 0).all() and (d == d.T).all()
    assert d[0, 1] < d[0, 2]
    assert dhash(base).shape == (64,)
    assert union_find(6, [(0, 3), (3, 5), (1, 2)]).tolist() == [0, 1, 1, 0, 2, 0]
    assert near_duplicate_groups(h, max_distance=0).tolist() == [0, 1, 2]


@pytest.mark.data
def test_busi_near_duplicate_groups(busi_task: Task) -> None:
    groups = busi_task.groups()
    assert len(groups) == 647
    members: dict[str, list[str]] = defaultdict(list)
    for ident, g in groups.items():
        members[g].append(ident)
    n_groups = len(members)
    in_dup = sum(len(m) for m in members.values() if len(m) > 1)
    # Measured: 500 groups, 263 images in 116 multi-image groups (147 redundant images, 23 %).
    assert 480 <= n_groups <= 520 and 230 <= in_dup <= 290
    assert max(len(m) for m in members.values()) <= 10  # no runaway chaining
    # Inspected pairs: identical images filed under both classes, caliper / no-caliper frames.
    for a, b in [
        ("benign_433", "malignant_145"),
        ("benign_333", "malignant_078"),
        ("benign_238", "benign_300"),
        ("malignant_005", "malignant_007"),
        ("benign_065", "benign_157"),
    ]:
        assert groups[a] == groups[b], (a, b)
    # Inspected distinct lesions with similar dHash or layout: not grouped.
    for a, b in [("benign_062", "benign_080"), ("malignant_032", "malignant_095"), ("benign_017", "benign_099")]:
        assert groups[a] != groups[b], (a, b)
    # Grouped images really are near-duplicates: small pixel difference after resizing.
    from PIL import Image

    def thumb(ident: str) -> np.ndarray:
        im = busi.read_busi_image(busi_task.root / "images" / f"{ident}.png")
        return np.asarray(Image.fromarray(im).resize((64, 64), Image.Resampling.BOX), dtype=float)

    pairs = [(m[0], m[1]) for m in members.values() if len(m) > 1][:40]
    singles = sorted(g for g, m in members.items() if len(m) == 1)
    dup_diff = np.mean([np.abs(thumb(a) - thumb(b)).mean() for a, b in pairs])
    rand_diff = np.mean([np.abs(thumb(a) - thumb(b)).mean() for a, b in zip(singles[:40], singles[40:80])])
    assert dup_diff < 0.5 * rand_diff


# ------------------------------------------------------------------ splits
def test_split_groups_and_ids() -> None:
    groups = {f"p{i:02d}_{k}": f"p{i:02d}" for i in range(30) for k in range(3)}
    s = split_ids(groups, seed=3)
    assert len(s.train) == 18 * 3 and len(s.calibration) == 6 * 3 and len(s.test) == 6 * 3
    parts = [{groups[i] for i in p} for p in (s.train, s.calibration, s.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert s.pool == tuple(sorted(s.calibration + s.test))
    assert split_ids(dict(reversed(list(groups.items()))), seed=3) == s  # order-free
    assert split_ids(groups, seed=4).train != s.train
    assert split_groups(["a", "b", "c", "d", "e"], train=0.4, calibration=0.2, test=0.4, seed=0)["train"].__len__() == 2
    with pytest.raises(SegcpError, match="sum to 1"):
        split_groups(["a", "b"], train=0.5, calibration=0.5, test=0.5)
    json.dumps(s.to_dict())


def test_random_cal_test_splits() -> None:
    labels = ["a", "a", "b", "c", "c", "c", "d", "e", "e", "f"]
    runs = list(random_cal_test_splits(labels, n_cal=4, n_splits=20, seed=0))
    assert len(runs) == 20
    for cal, test in runs:
        assert len(cal) == 4 and len(cal) + len(test) == len(labels)
        assert not {labels[i] for i in cal} & {labels[i] for i in test}
    again = list(random_cal_test_splits(labels, n_cal=4, n_splits=20, seed=0))
    assert all((a[0] == b[0]).all() for a, b in zip(runs, again))
    other = list(random_cal_test_splits(labels, n_cal=4, n_splits=20, seed=1))
    assert any(not np.array_equal(a[0], b[0]) for a, b in zip(runs, other))
    # Two images per group, odd n_cal: the smallest reachable size above it.
    pairs = {f"p{i}_{f}": f"p{i}" for i in range(10) for f in ("ED", "ES")}
    for cal, test in random_cal_test_splits(pairs, n_cal=5, n_splits=5, seed=0):
        assert len(cal) == 6 and not {pairs[i] for i in cal} & {pairs[i] for i in test}
    with pytest.raises(SegcpError, match="n_cal"):
        next(random_cal_test_splits(labels, n_cal=10, n_splits=1))
    with pytest.raises(SegcpError, match="no test image"):
        list(random_cal_test_splits(["a", "a", "a", "b", "b"], n_cal=4, n_splits=1))


@pytest.mark.data
def test_acdc_task_split(acdc_lv: Task) -> None:
    s = acdc_lv.split(seed=0)
    patient = {it.id: it.meta["patient"] for it in acdc_lv.items("all")}
    parts = [{patient[i] for i in p} for p in (s.train, s.calibration, s.test)]
    assert [len(p) for p in parts] == [42, 14, 14]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert len(s.calibration) == len(s.test) == 28  # RW-CP: ED + ES per patient
    assert len(s.train) > 500  # every slice of the training patients
    assert acdc_lv.split(seed=0) == s
    assert acdc_lv.split(seed=1).calibration != s.calibration
    cal_groups = {i: s.groups[i] for i in s.pool}
    for cal, test in random_cal_test_splits(cal_groups, n_cal=9, n_splits=10, seed=0):
        assert len(cal) == 10 and not {patient[i] for i in cal} & {patient[i] for i in test}


@pytest.mark.data
def test_busi_task_split(busi_task: Task) -> None:
    s = busi_task.split(seed=0)
    groups = busi_task.groups()
    parts = [{groups[i] for i in p} for p in (s.train, s.calibration, s.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert len(s.train) + len(s.calibration) + len(s.test) == 647
    assert busi_task.split(seed=0) == s and busi_task.split(seed=5).test != s.test


# ------------------------------------------------------------ RW-CP protocol
@pytest.mark.data
@pytest.mark.parametrize("name,structure", [("acdc-lv", (3,)), ("acdc-rv", (1,)), ("acdc", (1, 2, 3))])
def test_rwcp_protocol_largest_slice(shared_data: Path, acdc_labels: dict[str, np.ndarray], name: str, structure: tuple[int, ...]) -> None:
    task = Task(name, shared_data)
    chosen = task.items("rwcp")
    assert len(chosen) == 140
    area = {k: int(np.isin(v, structure).sum()) for k, v in acdc_labels.items()}
    by_volume: dict[tuple[str, str], list[str]] = defaultdict(list)
    for k in area:
        p, f, _, _ = k.split("_")
        by_volume[(p, f)].append(k)
    for it in chosen:
        vol = by_volume[(it.meta["patient"], it.meta["frame"])]
        assert area[it.id] == max(area[k] for k in vol), it.id
        assert area[it.id] > 0
    sample = chosen[0].load()
    if name == "acdc":
        assert sample.mask.dtype == np.uint8 and set(np.unique(sample.mask).tolist()) <= {0, 1, 2, 3}
    else:
        assert sample.mask.dtype == bool and int(sample.mask.sum()) == area[chosen[0].id]


# ------------------------------------------------------------ tasks & roots
@pytest.mark.data
def test_task_roots(shared_data: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert available_tasks() == ["acdc", "acdc-3d", "acdc-lv", "acdc-rv", "busi", "la2018"]
    monkeypatch.setenv("SEGCP_DATA", str(shared_data))
    assert resolve_data_root("acdc") == (shared_data / "acdc").resolve()
    assert resolve_data_root("busi", shared_data / "busi") == (shared_data / "busi").resolve()
    monkeypatch.setenv("SEGCP_DATA", str(tmp_path / "nowhere"))
    with pytest.raises(SegcpError, match="SEGCP_DATA"):
        Task("busi")
    monkeypatch.delenv("SEGCP_DATA")
    (tmp_path / "proj").mkdir()
    monkeypatch.chdir(tmp_path / "proj")
    with pytest.raises(SegcpError, match="shared/data"):
        Task("busi")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(shared_data)
    assert Task("acdc-rv").root == (shared_data / "acdc").resolve()  # default ../shared/data/<dataset>
    with pytest.raises(SegcpError, match="unknown"):
        Task("acdc-myo", shared_data)


# ------------------------------------------------------------ preprocessing
def test_preprocess_steps_and_restore() -> None:
    rng = np.random.default_rng(0)
    img = rng.normal(100, 30, (50, 70)).astype(np.float32)
    img[0, 0] = 1e4  # outlier, clipped away
    mask = np.zeros((50, 70), np.uint8)
    mask[10:30, 20:50] = 3
    cfg = Preprocessing(intensity="percentile", size=(64, 64))
    out = preprocess(img, mask, None, cfg)
    assert out.image.dtype == np.float32 and out.image.shape == (64, 64)
    assert out.image.min() >= 0.0 and out.image.max() <= 255.0
    step = out.record["steps"][0]
    assert step["kind"] == "percentile" and step["high"] < 1e3  # the outlier was clipped
    assert preprocess(img, config=Preprocessing(intensity="percentile")).image.max() == pytest.approx(255.0)
    assert out.mask.dtype == np.uint8 and set(np.unique(out.mask).tolist()) == {0, 3}
    rec = json.loads(json.dumps(out.record))
    assert Preprocessing.from_dict(rec["config"]) == cfg
    back = restore_to_original((out.mask == 3).astype(float), rec)
    assert back.shape == (50, 70)
    agree = ((back >= 0.5) == (mask == 3)).mean()
    assert agree > 0.99
    stack = restore_to_original(np.stack([out.image / 255, 1 - out.image / 255]), rec)
    assert stack.shape == (2, 50, 70) and stack.min() >= 0 and stack.max() <= 1

    crop = preprocess(img, mask, (1.0, 1.0), Preprocessing(size=(40, 90), size_mode="crop", target_spacing=(0.5, 0.5)))
    assert crop.image.shape == (40, 90) and crop.record["steps"][0]["to_shape"] == [100, 140]
    restored = restore_to_original((crop.mask == 3).astype(float), crop.record, order=0)
    assert restored.shape == (50, 70)
    assert preprocess(img, spacing=None, config=Preprocessing(target_spacing=(1.0, 1.0))).record["steps"][0]["skipped"]

    hu = np.array([[-1000.0, -100.0, 70.0, 240.0, 3000.0]])
    np.testing.assert_allclose(ct_window(hu), [[0, 0, 127.5, 255, 255]])
    clipped, (lo, hi) = clip_percentiles(np.arange(1001.0), 0.5, 99.5)
    assert (lo, hi) == (5.0, 995.0) and clipped.max() == 255.0
    with pytest.raises(SegcpError, match="size"):
        Preprocessing(size=(0, 4))


def test_resize_and_crop_primitives() -> None:
    lab = np.arange(12, dtype=np.uint8).reshape(3, 4)
    up = resize_to_shape(lab, (6, 8), order=0)
    assert up.dtype == np.uint8 and (resize_to_shape(up, (3, 4), order=0) == lab).all()
    np.testing.assert_allclose(resize_to_shape(np.array([0.0, 1.0]), (4,)), [0, 0.25, 0.75, 1])
    for shape in [(7, 3), (13, 31), (1, 1)]:
        assert resize_to_shape(np.zeros((11, 17), np.float32), shape).shape == shape
    arr, off = center_crop_or_pad(lab, (5, 2))
    assert arr.shape == (5, 2) and off == {"crop_start": [0, 1], "pad_before": [1, 0]}
    res, sp = resample_to_spacing(np.zeros((10, 10)), (1.0, 2.0), (2.0, 1.0))
    assert res.shape == (5, 20) and sp == (2.0, 1.0)


# ------------------------------------------------------------------ export
@pytest.mark.data
def test_export_task(acdc_lv: Task, tmp_path: Path) -> None:
    split = acdc_lv.split(seed=0)
    out = tmp_path / "cal"
    ids = export_task(acdc_lv, "calibration", out, split=split)
    assert ids == list(split.calibration)
    dd = DataDir(out)
    assert dd.ids(require=("masks", "images")) == ids
    mask, spacing = dd.load_mask(ids[0])
    assert mask.dtype == bool and mask.any() and spacing is None
    image, _ = dd.read("images", ids[0])
    assert image.dtype == np.float32 and image.shape == mask.shape
    manifest = json.loads((out / EXPORT_MANIFEST).read_text())
    assert manifest["task"]["name"] == "acdc-lv" and manifest["ids"] == ids
    assert set(manifest["groups"].values()) == {split.groups[i] for i in ids}
    assert not list(out.rglob(".*tmp*"))  # atomic writes leave no temporaries
    # Re-exporting the same ids is fine; mixing in other ids is refused.
    export_task(acdc_lv, ids, out)
    with pytest.raises(SegcpError, match="other ids"):
        export_task(acdc_lv, "test", out, split=split)
    with pytest.raises(SegcpError, match="no item"):
        export_task(acdc_lv, ["patient999_frame01_slice_1"], tmp_path / "x")
