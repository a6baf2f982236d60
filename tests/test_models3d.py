"""Models on volumes and the Dice + CE loss: training on the slices of volumes, inference back
onto the volume's grid and header, MC samples coherent across slices, nnU-Net's loss by hand.

Tiny synthetic NIfTI volumes and models (a few seconds); one real-data test (ACDC volumes).
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from segcp.cli import main
from segcp.errors import SegcpError
from segcp.harness.datasets.volumes import volume_slices
from segcp.harness.models.infer import INFER_MANIFEST, infer_to_dir, load_ensemble
from segcp.harness.models.losses import dice_ce_loss, soft_dice
from segcp.harness.models.train import TrainConfig, load_checkpoint, save_checkpoint, train_datadir
from segcp.harness.models.unet import UNet

TINY = {"epochs": 2, "size": 32, "width": 4, "batch_size": 4, "threads": 1, "warmup_epochs": 0.5}
#: (shape, spacing) of the synthetic volumes: the coarse axis is 2, 2, 0 and (isotropic) 2
VOLUMES = {
    "p1_a": ((20, 24, 5), (0.9, 1.1, 3.0)),
    "p1_b": ((20, 24, 6), (0.9, 1.1, 3.0)),
    "p2_a": ((6, 22, 18), (4.0, 0.8, 0.8)),
    "p3_a": ((16, 16, 7), (1.0, 1.0, 1.0)),
}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _affine(spacing, shift=0.0):
    """A rotated, flipped, shifted grid (not diag(spacing)): headers must be carried, not rebuilt."""
    rot = np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    aff = np.eye(4)
    aff[:3, :3] = rot * np.asarray(spacing)
    aff[:3, 3] = (12.5 + shift, -3.0, 40.0)
    return aff


def _blob(shape, seed):
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    c = rng.uniform(-0.2, 0.2, 3)
    mask = sum((g - ci) ** 2 for g, ci in zip(grids, c)) < 0.35
    image = (mask * 2.0 + rng.normal(0, 0.3, shape)).astype(np.float32)
    return image, mask.astype(np.uint8)


def _volume_dir(root: Path, fmt: str = "nifti") -> Path:
    for sub in ("images", "masks"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for k, (ident, (shape, spacing)) in enumerate(VOLUMES.items()):
        image, mask = _blob(shape, k)
        if fmt == "nifti":
            aff = _affine(spacing)
            img = nib.Nifti1Image(image, aff)
            img.header.set_xyzt_units("mm")
            img.header.set_dim_info(slice=2)
            nib.save(img, str(root / "images" / f"{ident}.nii.gz"))
            nib.save(nib.Nifti1Image(mask, aff), str(root / "masks" / f"{ident}.nii.gz"))
        else:
            np.save(root / "images" / f"{ident}.npy", image)
            np.save(root / "masks" / f"{ident}.npy", mask)
    groups = {i: i.split("_")[0] for i in VOLUMES}  # patients p1 (two volumes), p2, p3
    (root / "segcp_export.json").write_text(json.dumps({"groups": groups}))
    return root


@pytest.fixture(scope="module")
def vol_dir(tmp_path_factory) -> Path:
    return _volume_dir(tmp_path_factory.mktemp("vols") / "data")


@pytest.fixture(scope="module")
def vol_models(tmp_path_factory, vol_dir) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("vmodels")
    out = {}
    for name, kw in {"plain": {"val_fraction": 0.4}, "drop": {"dropout": 0.3, "val_fraction": 0.4}}.items():
        train_datadir(vol_dir, d / f"{name}.pt", TrainConfig(**TINY, **kw), show_progress=False)
        out[name] = d / f"{name}.pt"
    return out


# ---------------------------------------------------------------------- training on volumes
def test_train_on_volume_directory_uses_slices_and_whole_patients(vol_models, vol_dir):
    _, meta = load_checkpoint(vol_models["plain"])
    axes = {"p1_a": 2, "p1_b": 2, "p2_a": 0, "p3_a": 2}
    assert meta["volumes"]["slice_axis"] == axes and meta["volumes"]["n"] == 4
    split = meta["split"]
    assert split["groups"].startswith("groups from") and split["n_train_groups"] == 3
    val = set(split["val_groups"])
    assert len(val) == 1 and val <= {"p1", "p2", "p3"}  # round(0.4 · 3) = 1 patient held out, whole
    n_slices = {i: VOLUMES[i][0][axes[i]] for i in VOLUMES}
    expect_val = sum(n for i, n in n_slices.items() if i.split("_")[0] in val)
    assert split["n_val_images"] == expect_val and split["n_train_images"] == sum(n_slices.values()) - expect_val
    assert 0 <= meta["metrics"]["val_dice"] <= 1


def test_train_volume_errors(tmp_path, vol_dir):
    bad = _volume_dir(tmp_path / "bad")
    ident = "p1_a"
    shape, spacing = VOLUMES[ident]
    nib.save(nib.Nifti1Image(np.zeros(shape, np.uint8), _affine(spacing, shift=2.0)), str(bad / "masks" / f"{ident}.nii.gz"))
    with pytest.raises(SegcpError, match="affine differs") as e:
        train_datadir(bad, tmp_path / "m.pt", TrainConfig(**TINY), show_progress=False)
    assert str(bad / "masks" / f"{ident}.nii.gz") in str(e.value) and "\n" not in str(e.value)
    assert not (tmp_path / "m.pt").exists()
    with pytest.raises(SegcpError, match="slice-axis"):
        train_datadir(vol_dir, tmp_path / "m.pt", TrainConfig(**TINY), show_progress=False, slice_axis=3)


def test_train_along_a_given_axis(tmp_path, vol_dir):
    train_datadir(vol_dir, tmp_path / "m.pt", TrainConfig(**{**TINY, "epochs": 1}), show_progress=False, slice_axis=1)
    meta = load_checkpoint(tmp_path / "m.pt")[1]
    assert set(meta["volumes"]["slice_axis"].values()) == {1} and meta["volumes"]["rule"] == "given: 1"
    assert meta["split"]["n_train_images"] + meta["split"]["n_val_images"] == sum(s[1] for s, _ in VOLUMES.values())


# ---------------------------------------------------------------------- inference on volumes
def test_volume_inference_round_trip_on_the_input_grid(tmp_path, vol_models, vol_dir):
    man = infer_to_dir([vol_models["plain"]], tmp_path / "out", data=vol_dir, batch_size=3, show_progress=False)
    ens = load_ensemble([vol_models["plain"]])
    assert man["volumes"]["slice_axis"] == {"p1_a": 2, "p1_b": 2, "p2_a": 0, "p3_a": 2}
    for ident, (shape, _) in VOLUMES.items():
        src = nib.load(str(vol_dir / "images" / f"{ident}.nii.gz"))
        out = nib.load(str(tmp_path / "out" / "probs" / f"{ident}.nii.gz"))
        assert out.shape == shape and out.get_data_dtype() == np.float32
        assert np.array_equal(out.affine, src.affine)
        for key in ("pixdim", "qform_code", "sform_code", "srow_x", "srow_y", "srow_z", "xyzt_units", "dim_info"):
            assert np.array_equal(out.header[key], src.header[key]), key
        p = np.asanyarray(out.dataobj)
        assert p.min() >= 0 and p.max() <= 1
        # the same as running the 2D model on each slice along the volume's coarse axis
        axis = man["volumes"]["slice_axis"][ident]
        image = np.asanyarray(src.dataobj)
        for z, sl in enumerate(volume_slices(image, axis)):
            ((_, p2, _),) = ens.predict([sl], [ident])
            np.testing.assert_allclose(np.take(p, z, axis=axis), p2, atol=1e-6)
    for sub in ("images", "masks"):
        assert sorted(p.name for p in (tmp_path / "out" / sub).iterdir()) == sorted(f"{i}.nii.gz" for i in VOLUMES)
    saved = json.loads((tmp_path / "out" / INFER_MANIFEST).read_text())
    assert saved["dice"]["n"] == 4 and set(saved["dice_per_image"]) == set(VOLUMES)
    # the Dice is the 3D Dice of each volume
    mask = np.asanyarray(nib.load(str(vol_dir / "masks" / "p1_a.nii.gz")).dataobj).astype(bool)
    pred = np.asanyarray(nib.load(str(tmp_path / "out" / "probs" / "p1_a.nii.gz")).dataobj) >= 0.5
    expect = 2 * np.count_nonzero(mask & pred) / (np.count_nonzero(mask) + np.count_nonzero(pred)) if (mask.any() or pred.any()) else 1.0
    assert saved["dice_per_image"]["p1_a"] == pytest.approx(expect)


def test_volume_mc_samples_are_one_draw_per_volume(tmp_path, vol_models, vol_dir):
    infer_to_dir([vol_models["drop"]], tmp_path / "out", data=vol_dir, samples=4, seed=7, batch_size=2, show_progress=False)
    ens = load_ensemble([vol_models["drop"]])
    image = np.asanyarray(nib.load(str(vol_dir / "images" / "p1_a.nii.gz")).dataobj)
    smp = np.load(tmp_path / "out" / "samples" / "p1_a.npy")
    assert smp.shape == (4, 2, *VOLUMES["p1_a"][0]) and smp.dtype == np.float16
    assert np.allclose(smp.astype(np.float32).sum(1), 1, atol=2e-3)
    # slice z of sample k = the 2D MC sample of that slice keyed by the VOLUME id: the same
    # dropout masks on every slice (one network draw), different draws across k
    for z, sl in enumerate(volume_slices(image, 2)):
        ((_, _, s2),) = ens.predict([sl], ["p1_a"], samples=4, seed=7, batch_size=2)
        assert np.array_equal(smp[..., z], s2)
    assert not np.array_equal(smp[0], smp[1])
    ((_, _, other),) = ens.predict([volume_slices(image, 2)[0]], ["p1_b"], samples=4, seed=7, batch_size=2)
    assert not np.array_equal(smp[..., 0], other)  # another volume, other draws


def test_unet_and_rwcp_cut_an_isotropic_volume_along_the_same_axis(tmp_path, vol_models, monkeypatch):
    """One slice-axis rule: on an isotropic volume whose smallest dimension is not the last
    (as (88, 140, 183) at 0.625 mm), the UNet (segcp infer) runs its 2D model along the same
    axis as RW-CP's 2D encoder and ``normalize="slice"`` cut it: the fewest slices (before: the
    UNet took the last axis, 2, and RW-CP axis 0)."""
    from segcp.io import DataDir
    from segcp.methods import RWCPMethod
    from segcp.methods.normalize import normalize_map

    shape, spacing = (6, 10, 14), (0.625, 0.625, 0.625)
    data = tmp_path / "iso"
    for sub in ("images", "masks"):
        (data / sub).mkdir(parents=True)
    image, mask = _blob(shape, 3)
    nib.save(nib.Nifti1Image(image, _affine(spacing)), str(data / "images" / "v.nii.gz"))
    nib.save(nib.Nifti1Image(mask, _affine(spacing)), str(data / "masks" / "v.nii.gz"))
    man = infer_to_dir([vol_models["plain"]], tmp_path / "out", data=data, show_progress=False)
    unet_axis = man["volumes"]["slice_axis"]["v"]

    seen: list[list[tuple[int, ...]]] = []  # the 2D images RW-CP's encoder is given
    features = RWCPMethod._features
    monkeypatch.setattr(RWCPMethod, "_features", lambda self, case, images: seen.append([im.shape for im in images]) or features(self, case, images))
    fam = RWCPMethod(encoder="fallback", k=6, steps=2, radius=2, cache=False)
    case = DataDir(tmp_path / "out").reader(fam).read("v")  # the UNet's NIfTI probabilities and the image, spacing from the header
    assert case.spacing == pytest.approx(spacing)
    fam.score_map(case)
    (slices,) = seen
    rwcp_axis = next(a for a in range(3) if len(slices) == shape[a] and slices[0] == tuple(n for b, n in enumerate(shape) if b != a))
    assert unet_axis == rwcp_axis == 0

    p = np.asarray(case.probs, dtype=np.float64)
    want = np.stack([v / v.max() for v in np.moveaxis(p, unet_axis, 0)], axis=unet_axis)
    assert np.allclose(normalize_map(p, "slice", floor=0.0, spacing=case.spacing), want)


def test_npy_volumes_give_npy_probs_along_the_last_axis(tmp_path, vol_models):
    d = _volume_dir(tmp_path / "npy", fmt="npy")
    man = infer_to_dir([vol_models["plain"]], tmp_path / "out", data=d, show_progress=False)
    # no spacing: every axis ties, the fewest voxels decide — the coarse axes the NIfTI spacing gives
    assert man["volumes"]["slice_axis"] == {"p1_a": 2, "p1_b": 2, "p2_a": 0, "p3_a": 2}
    p = np.load(tmp_path / "out" / "probs" / "p2_a.npy")
    assert p.shape == VOLUMES["p2_a"][0] and p.dtype == np.float32


def test_multiclass_volume_probs_are_a_channel_first_stack(tmp_path, vol_dir):
    lab = _volume_dir(tmp_path / "lab")
    for ident, (shape, spacing) in VOLUMES.items():  # label maps 0 / 1 (the blob) / 2 (a slab)
        m = _blob(shape, 7)[1]
        m[:2] = 2
        nib.save(nib.Nifti1Image(m, _affine(spacing)), str(lab / "masks" / f"{ident}.nii.gz"))
    train_datadir(lab, tmp_path / "mc.pt", TrainConfig(**{**TINY, "epochs": 1}), show_progress=False)
    assert load_checkpoint(tmp_path / "mc.pt")[1]["n_classes"] == 3
    infer_to_dir([tmp_path / "mc.pt"], tmp_path / "out", data=lab, show_progress=False)
    p = np.load(tmp_path / "out" / "probs" / "p2_a.npy")
    assert p.shape == (3, *VOLUMES["p2_a"][0]) and np.allclose(p.sum(0), 1, atol=1e-5)


def test_volume_inference_refuses_a_mask_off_the_grid(tmp_path, vol_models):
    bad = _volume_dir(tmp_path / "bad")
    shape, spacing = VOLUMES["p2_a"]
    nib.save(nib.Nifti1Image(np.zeros(shape, np.uint8), _affine(spacing, shift=0.5)), str(bad / "masks" / "p2_a.nii.gz"))
    with pytest.raises(SegcpError, match="affine differs") as e:
        infer_to_dir([vol_models["plain"]], tmp_path / "out", data=bad, show_progress=False)
    assert str(bad / "masks" / "p2_a.nii.gz") in str(e.value)
    assert not (tmp_path / "out").exists()


def test_cli_infer_and_train_on_volumes(tmp_path, vol_dir, vol_models, capsys):
    with pytest.raises(SystemExit) as e:
        main(["infer", "--model", str(vol_models["plain"]), "--data", str(vol_dir), "--out", str(tmp_path / "o"), "-q", "--slice-axis", "0"])
    assert e.value.code == 0
    assert json.loads((tmp_path / "o" / INFER_MANIFEST).read_text())["volumes"]["rule"] == "given: 0"
    with pytest.raises(SystemExit) as e:
        main(
            [
                "train",
                "--data",
                str(vol_dir),
                "--out",
                str(tmp_path / "m.pt"),
                "--epochs",
                "1",
                "--size",
                "32",
                "--width",
                "4",
                "--batch",
                "4",
                "--threads",
                "1",
                "--loss",
                "dice_ce",
                "-q",
            ]
        )
    assert e.value.code == 0 and load_checkpoint(tmp_path / "m.pt")[1]["training"]["loss"] == "dice_ce"
    with pytest.raises(SystemExit) as e:
        main(["train", "--task", "la2018", "--slice-axis", "1", "--out", str(tmp_path / "x.pt")])
    assert e.value.code == 2 and "--slice-axis is for --data" in capsys.readouterr().err


# ---------------------------------------------------------------------- Dice + CE loss
def _hand_dice_ce(logits: np.ndarray, target: np.ndarray, smooth: float = 1e-5):
    """nnU-Net's DC_and_CE_loss (batch Dice, no background, smooth 1e-5), value and d/dlogits, in numpy."""
    _b, c = logits.shape[:2]
    z = logits - logits.max(1, keepdims=True)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    y = np.stack([(target == k) for k in range(c)], 1).astype(np.float64)
    n = target.size
    ce = -np.sum(y * np.log(p)) / n
    axes = (0, 2, 3)
    inter, sp, sy = (p * y).sum(axes), p.sum(axes), y.sum(axes)
    num, den = 2 * inter + smooth, sp + sy + smooth
    dice = (num / den)[1:].mean()
    # d dice / d p_k at each pixel (k ≥ 1): (2 y_k den_k − num_k) / den_k² / (C − 1)
    dd = np.zeros_like(p)
    for k in range(1, c):
        dd[:, k] = (2 * y[:, k] * den[k] - num[k]) / den[k] ** 2 / (c - 1)
    dL_dp = -dd  # L = CE − Dice: the Dice part
    # through the softmax: dL/dz_j = Σ_k dL/dp_k · p_k (δ_kj − p_j)
    g_dice = p * (dL_dp - (dL_dp * p).sum(1, keepdims=True))
    g_ce = (p - y) / n
    return ce - dice, g_ce + g_dice, dice


def test_dice_ce_value_and_gradient_by_hand():
    rng = np.random.default_rng(0)
    for c in (2, 4):
        logits = rng.normal(0, 2, (3, c, 5, 6))
        target = rng.integers(0, c, (3, 5, 6))
        target[0, :2] = 0
        want, grad, dice = _hand_dice_ce(logits, target)
        x = torch.tensor(logits, requires_grad=True)
        loss = dice_ce_loss(x, torch.from_numpy(target))
        loss.backward()
        assert loss.item() == pytest.approx(want, rel=1e-12)
        assert soft_dice(x.detach(), torch.from_numpy(target)).item() == pytest.approx(dice, rel=1e-12)
        np.testing.assert_allclose(x.grad.numpy(), grad, rtol=1e-9, atol=1e-12)
    # float64 finite differences agree with autograd too
    x = torch.tensor(rng.normal(0, 1, (2, 3, 4, 4)), requires_grad=True)
    t = torch.from_numpy(rng.integers(0, 3, (2, 4, 4)))
    assert torch.autograd.gradcheck(lambda v: dice_ce_loss(v, t), (x,))


def test_dice_ce_limits():
    t = torch.zeros(2, 8, 8, dtype=torch.long)
    t[:, 2:6, 2:6] = 1
    perfect = torch.where(t.bool(), 30.0, -30.0)[:, None]
    logits = torch.cat([-perfect, perfect], 1)
    assert dice_ce_loss(logits, t).item() == pytest.approx(-1.0, abs=1e-6)  # CE → 0, Dice → 1
    # no foreground anywhere in the batch, none predicted: Dice = smooth / smooth = 1 (nnU-Net's value)
    empty = torch.zeros(2, 8, 8, dtype=torch.long)
    assert soft_dice(torch.cat([perfect * 0 + 30, perfect * 0 - 30], 1), empty).item() == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(SegcpError, match="do not match"):
        soft_dice(torch.zeros(2, 2, 4, 4), torch.zeros(2, 4, 5, dtype=torch.long))


def test_dice_ce_training_differs_and_ce_stays_the_default(tmp_path, vol_dir):
    assert TrainConfig().loss == "ce"
    with pytest.raises(SegcpError, match="dice_ce"):
        TrainConfig(loss="dice")
    train_datadir(vol_dir, tmp_path / "ce.pt", TrainConfig(**{**TINY, "epochs": 1}), show_progress=False)
    train_datadir(vol_dir, tmp_path / "dc.pt", TrainConfig(**{**TINY, "epochs": 1, "loss": "dice_ce"}), show_progress=False)
    a = torch.load(tmp_path / "ce.pt", weights_only=True)
    b = torch.load(tmp_path / "dc.pt", weights_only=True)
    assert a["training"]["loss"] == "ce" and b["training"]["loss"] == "dice_ce"
    assert not all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert b["metrics"]["history"][0]["loss"] < a["metrics"]["history"][0]["loss"]  # CE − Dice < CE


# ---------------------------------------------------------------------- 2D models on acdc-3d
def _fake_task_model(tmp_path: Path, task: str, n_classes: int = 2) -> Path:
    """A tiny untrained UNet whose checkpoint says it was trained on ``task``, split seed 0."""
    torch.manual_seed(0)
    model = UNet(1, n_classes, 4).eval()
    meta = {
        "task": {"name": task},
        "split_seed": 0,
        "n_classes": n_classes,
        "preprocessing": TrainConfig(size=32).preprocessing().to_dict(),
        "input_scale": 1 / 255,
        "dropout": 0.0,
    }
    return save_checkpoint(tmp_path / f"{task}.pt", model, meta)


@pytest.mark.data
def test_2d_task_model_on_acdc_3d(tmp_path, acdc_dir, monkeypatch):
    from segcp.harness.datasets import tasks as tasks_mod

    monkeypatch.setenv("SEGCP_DATA", str(acdc_dir))
    real = tasks_mod.Task.split
    change = {"leak": False}

    def small(self, seed=0, **kw):
        """The real split with a 2-volume test part (fast); with ``leak`` a training patient moved to test."""
        sp = real(self, seed, **kw)
        if self.name != "acdc-3d":
            return sp
        test = sp.test[:2] + ((sp.train[0],) if change["leak"] else ())
        return type(sp)(sp.train, sp.calibration, tuple(sorted(test)), sp.groups, sp.seed, sp.fractions, sp.meta)

    monkeypatch.setattr(tasks_mod.Task, "split", small)
    model = _fake_task_model(tmp_path, "acdc-lv")
    man = infer_to_dir([model], tmp_path / "out", task="acdc-3d", split="test", show_progress=False)
    assert man["source"]["model_task"] == "acdc-lv" and man["dice_label"] == 3 and man["dice"]["n"] == 2
    first = man["ids"][0]
    img = nib.load(str(tmp_path / "out" / "images" / f"{first}.nii.gz"))
    prob = nib.load(str(tmp_path / "out" / "probs" / f"{first}.nii.gz"))
    assert prob.shape == img.shape and np.array_equal(prob.affine, img.affine) and prob.header.get_dim_info()[2] == 2
    # slice k of the volume = the 2D model on ACDC slice k + 1
    sl = tasks_mod.Task("acdc-lv", acdc_dir).load(f"{first}_slice_2")
    ((_, p2, _),) = load_ensemble([model]).predict([sl.image], [sl.id])
    np.testing.assert_allclose(np.asanyarray(prob.dataobj)[:, :, 1], p2, atol=1e-6)
    with pytest.raises(SegcpError, match="trained on task acdc-lv"):
        infer_to_dir([model], tmp_path / "o2", task="la2018", split="test", show_progress=False)
    change["leak"] = True  # a patient the model was trained on is refused, nothing written
    with pytest.raises(SegcpError, match="refusing to infer on training patients"):
        infer_to_dir([model], tmp_path / "o3", task="acdc-3d", split="test", show_progress=False)
    assert not (tmp_path / "o3").exists()


# ---------------------------------------------------------------------- polarization measure
def test_polarization_fractions_by_hand(tmp_path):
    from polarization import polarization, polarization_of_dir  # benchmarks/polarization.py

    p = [np.array([[0.0, 5e-4], [0.5, 0.5]], np.float32), np.array([[1.0, 0.9995, 0.2]], np.float32)]
    m = [np.array([[0, 0], [1, 0]], bool), np.array([[1, 1, 0]], bool)]
    s = polarization(p, m)
    assert s["n_pixels"] == 7 and s["low"] == pytest.approx(2 / 7) and s["high"] == pytest.approx(2 / 7)
    assert s["zero"] == pytest.approx(1 / 7) and s["one"] == pytest.approx(1 / 7) and s["polarized"] == pytest.approx(4 / 7)
    assert s["tied"] == pytest.approx(2 / 7) and s["distinct"] == 3  # 0.5 twice in the first image
    assert s["truth_pixels"] == 3 and s["truth_high"] == pytest.approx(2 / 3) and s["truth_low"] == 0
    for sub, arrs in (("probs", p), ("masks", m)):
        (tmp_path / sub).mkdir()
        for k, a in enumerate(arrs):
            np.save(tmp_path / sub / f"i{k}.npy", a)
    got, hist = polarization_of_dir(tmp_path, part=None)
    assert got == s and hist.shape[0] == 2 and hist[0].sum() == 7 and hist[1].sum() == 3
    assert hist[0][0] == 2  # exact 0 and exact 1 in the first bin
    with pytest.raises(SegcpError, match="segcp_export.json"):
        polarization_of_dir(tmp_path, part="test")
