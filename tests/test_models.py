"""Models: UNet shapes, training and checkpoints, batched seeded inference, CLI (tiny and fast)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from segcp.cli import main
from segcp.errors import SegcpError
from segcp.harness.models.infer import INFER_MANIFEST, infer_to_dir, load_ensemble
from segcp.harness.models.train import CHECKPOINT_FORMAT, TrainConfig, augment_batch, dice_scores, load_checkpoint, train_datadir
from segcp.harness.models.unet import UNet, enable_mc_dropout, has_dropout
from segcp.synthetic import make_phantoms

SHAPE = (40, 72)  # not the training size, not square: checks the original grid
TINY = {"epochs": 2, "size": 32, "width": 4, "batch_size": 4, "threads": 1, "warmup_epochs": 0.5}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _datadir(root: Path, multiclass: bool = False, n: int = 8, with_masks: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for c in make_phantoms(n=n, shape=SHAPE, seed=3):
        (root / "images").mkdir(exist_ok=True)
        np.save(root / "images" / f"{c.id}.npy", c.image)
        if with_masks:
            (root / "masks").mkdir(exist_ok=True)
            np.save(root / "masks" / f"{c.id}.npy", c.label if multiclass else c.label == 3)
    return root


@pytest.fixture(scope="module")
def binary_dir(tmp_path_factory) -> Path:
    return _datadir(tmp_path_factory.mktemp("bin") / "data")


@pytest.fixture(scope="module")
def label_dir(tmp_path_factory) -> Path:
    return _datadir(tmp_path_factory.mktemp("lab") / "data", multiclass=True)


@pytest.fixture(scope="module")
def models(tmp_path_factory, binary_dir) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    out = {}
    for name, kw in {"m0": {}, "m1": {"seed": 1}, "drop": {"dropout": 0.3}}.items():
        train_datadir(binary_dir, d / f"{name}.pt", TrainConfig(**TINY, **kw), show_progress=False)
        out[name] = d / f"{name}.pt"
    return out


# ---------------------------------------------------------------------- UNet
def test_unet_logit_shapes():
    for n_classes in (2, 4):
        net = UNet(1, n_classes, width=4).eval()
        assert net(torch.zeros(3, 1, 32, 48)).shape == (3, n_classes, 32, 48)
    with pytest.raises(SegcpError, match="multiples of 16"):
        UNet(1, 2, 4)(torch.zeros(1, 1, 40, 40))
    with pytest.raises(SegcpError):
        UNet(1, 2, 4, dropout=1.0)
    net = UNet(1, 2, 4, dropout=0.2, dropout_from_level=0)
    assert has_dropout(net) and not has_dropout(UNet(1, 2, 4))
    assert sum(isinstance(m, torch.nn.Dropout2d) for m in net.modules()) == 9  # 5 encoder + 4 decoder blocks
    central = UNet(1, 2, 4, dropout=0.2)  # default: the central blocks only
    assert sum(isinstance(m, torch.nn.Dropout2d) for m in central.modules()) == 5  # encoder 2-4, decoder 3, 2
    enable_mc_dropout(net)
    assert not net.training and all(m.training for m in net.modules() if isinstance(m, torch.nn.Dropout2d))


def test_augment_keeps_labels_and_is_seeded():
    x = torch.rand(4, 1, 32, 32)
    y = (torch.rand(4, 32, 32) > 0.5).long() * 3
    a = augment_batch(x, y, torch.Generator().manual_seed(0))
    b = augment_batch(x, y, torch.Generator().manual_seed(0))
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert a[0].shape == x.shape and a[1].shape == y.shape and a[1].dtype == torch.int64
    assert set(a[1].unique().tolist()) <= {0, 3}


def test_dice_scores():
    p = np.array([[[0, 1], [1, 1]], [[0, 0], [0, 0]]])
    t = np.array([[[0, 1], [1, 0]], [[0, 0], [0, 0]]])
    assert np.allclose(dice_scores(p, t, 2), [0.8, 1.0])


# ---------------------------------------------------------------------- training
def test_training_writes_loadable_checkpoint(models, binary_dir):
    model, meta = load_checkpoint(models["m0"])
    assert meta["format"] == CHECKPOINT_FORMAT and meta["n_classes"] == 2 and meta["binary"]
    assert meta["preprocessing"]["size"] == [32, 32] and meta["preprocessing"]["intensity"] == "percentile"
    assert meta["training"]["epochs"] == 2 and meta["training"]["lr"] == 1e-3 and meta["seed"] == 0
    assert meta["data"]["dir"] == str(binary_dir.resolve()) and meta["task"] is None
    assert meta["split"]["n_val_images"] >= 1 and meta["split"]["n_train_images"] + meta["split"]["n_val_images"] == 8
    m = meta["metrics"]
    assert len(m["history"]) == 2 and 1 <= m["best_epoch"] <= 2 and 0 <= m["val_dice"] <= 1
    assert "segcp_version" in meta and isinstance(model, UNet) and not model.training
    assert load_checkpoint(models["drop"])[1]["dropout"] == 0.3


def test_training_is_deterministic(tmp_path, binary_dir, models):
    train_datadir(binary_dir, tmp_path / "again.pt", TrainConfig(**TINY), show_progress=False)
    a = torch.load(models["m0"], weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "again.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    c = torch.load(models["m1"], weights_only=True)["state_dict"]
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_multiclass_training_and_softmax_on_original_grid(tmp_path, label_dir):
    train_datadir(label_dir, tmp_path / "mc.pt", TrainConfig(**{**TINY, "epochs": 1}), show_progress=False)
    assert load_checkpoint(tmp_path / "mc.pt")[1]["n_classes"] == 4
    man = infer_to_dir([tmp_path / "mc.pt"], tmp_path / "out", data=label_dir, show_progress=False)
    p = np.load(tmp_path / "out" / "probs" / f"{man['ids'][0]}.npy")
    assert p.shape == (4, *SHAPE) and p.dtype == np.float32
    assert np.allclose(p.sum(0), 1, atol=1e-5)
    assert man["dice"]["threshold"] == "argmax" and man["dice"]["n"] == 8


# ---------------------------------------------------------------------- inference
def test_inference_layout_on_original_grid(tmp_path, models, binary_dir):
    out = tmp_path / "pred"
    man = infer_to_dir([models["m0"]], out, data=binary_dir, batch_size=3, show_progress=False)
    ids = sorted(p.stem for p in (binary_dir / "images").glob("*.npy"))
    assert man["ids"] == ids
    for sub in ("images", "masks", "probs"):
        assert sorted(p.stem for p in (out / sub).glob("*.npy")) == ids
    assert not (out / "samples").exists()
    for i in ids:
        p = np.load(out / "probs" / f"{i}.npy")
        assert p.shape == SHAPE and p.dtype == np.float32 and p.min() >= 0 and p.max() <= 1
        assert np.array_equal(np.load(out / "images" / f"{i}.npy"), np.load(binary_dir / "images" / f"{i}.npy"))
    assert json.loads((out / INFER_MANIFEST).read_text())["dice"]["n"] == len(ids)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folder left
    with pytest.raises(SegcpError, match="already exists"):
        infer_to_dir([models["m0"]], out, data=binary_dir, show_progress=False)


def test_inference_is_batched_and_deterministic(tmp_path, models, binary_dir):
    ens = load_ensemble([models["m0"]])
    imgs = [np.load(p) for p in sorted((binary_dir / "images").glob("*.npy"))]
    ids = [str(k) for k in range(len(imgs))]
    one = [p for _, p, _ in ens.predict(imgs, ids, batch_size=1)]
    many = [p for _, p, _ in ens.predict(imgs, ids, batch_size=8)]
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(one, many))


def test_mc_dropout_samples_are_seeded(tmp_path, models, binary_dir):
    def run(name, seed):
        return infer_to_dir([models["drop"]], tmp_path / name, data=binary_dir, samples=5, seed=seed, batch_size=4, show_progress=False)

    man = run("a", 7)
    run("b", 7)
    run("c", 8)
    assert man["samples"]["scheme"] == "mc-dropout" and man["samples"]["dtype"] == "float16"
    for i in man["ids"]:
        a, b, c = (np.load(tmp_path / k / "samples" / f"{i}.npy") for k in "abc")
        assert a.shape == (5, 2, *SHAPE) and a.dtype == np.float16
        assert np.array_equal(a, b) and not np.array_equal(a, c)
        assert not np.array_equal(a[0], a[1])  # the samples differ from each other
        assert np.allclose(a.astype(np.float32).sum(1), 1, atol=5e-3)
        assert np.array_equal(np.load(tmp_path / "a" / "probs" / f"{i}.npy"), np.load(tmp_path / "c" / "probs" / f"{i}.npy"))


def test_ensemble_samples_one_per_member(tmp_path, models, binary_dir):
    man = infer_to_dir([models["m0"], models["m1"]], tmp_path / "e", data=binary_dir, samples=2, show_progress=False)
    assert man["samples"]["scheme"] == "deep ensemble"
    i = man["ids"][0]
    s = np.load(tmp_path / "e" / "samples" / f"{i}.npy").astype(np.float32)
    p = np.load(tmp_path / "e" / "probs" / f"{i}.npy")
    assert s.shape == (2, 2, *SHAPE)
    assert np.allclose(s[:, 1].mean(0), p, atol=2e-3)  # probs = mean of the members
    with pytest.raises(SegcpError, match="--samples 2"):
        infer_to_dir([models["m0"], models["m1"]], tmp_path / "f", data=binary_dir, samples=3, show_progress=False)
    with pytest.raises(SegcpError, match="without dropout"):
        infer_to_dir([models["m0"]], tmp_path / "g", data=binary_dir, samples=3, show_progress=False)
    assert not (tmp_path / "f").exists() and not (tmp_path / "g").exists()


def test_foreign_checkpoints_give_one_line_errors(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint at all")
    for name in ("foreign.pt", "junk.pt", "missing.pt"):
        with pytest.raises(SegcpError, match="segcp model|no such") as exc:
            load_checkpoint(tmp_path / name)
        assert "\n" not in str(exc.value)


# ---------------------------------------------------------------------- CLI
def _cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as exc:
        main(args)
    return int(exc.value.code or 0)


def test_cli_train_and_infer(tmp_path, binary_dir, capsys):
    model = tmp_path / "cli.pt"
    assert (
        _cli(
            [
                "train",
                "--data",
                str(binary_dir),
                "--out",
                str(model),
                "--epochs",
                "1",
                "--size",
                "32",
                "--width",
                "4",
                "--batch",
                "4",
                "--dropout",
                "0.2",
                "--threads",
                "1",
                "-q",
            ]
        )
        == 0
    )
    assert load_checkpoint(model)[1]["training"]["dropout"] == 0.2
    assert _cli(["infer", "--model", str(model), "--data", str(binary_dir), "--samples", "3", "--out", str(tmp_path / "o")]) == 0
    assert "wrote 8 probability maps" in capsys.readouterr().out
    assert len(list((tmp_path / "o" / "samples").glob("*.npy"))) == 8
    # the output is usable by `segcp calibrate --data`
    assert _cli(["calibrate", "--data", str(tmp_path / "o"), "--out", str(tmp_path / "c.json"), "--alpha", "0.5", "-q"]) == 0
    # --overwrite replaces a folder infer wrote, and only such a folder (issue 23: it replaced any folder)
    infer = ["infer", "--model", str(model), "--data", str(binary_dir), "-q", "--overwrite", "--out"]
    assert _cli([*infer, str(tmp_path / "o")]) == 0 and len(list((tmp_path / "o" / "probs").glob("*.npy"))) == 8
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    capsys.readouterr()
    assert _cli([*infer, str(foreign)]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == f"segcp: error: {foreign}: not a folder that segcp infer wrote (no segcp_infer.json); --overwrite replaces only a previous segcp infer output: choose a new folder"
    ), err
    assert [p.name for p in foreign.iterdir()] == ["notes.txt"] and not [p for p in tmp_path.iterdir() if p.name.startswith(".segcp")]


def test_cli_bad_inputs(tmp_path, binary_dir, capsys):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    cases = [
        ["infer", "--model", str(tmp_path / "foreign.pt"), "--data", str(binary_dir), "--out", str(tmp_path / "x")],
        ["train", "--data", str(_datadir(tmp_path / "nomasks", with_masks=False)), "--out", str(tmp_path / "m.pt")],
        ["train", "--data", str(tmp_path / "empty"), "--out", str(tmp_path / "m.pt")],
        ["train", "--task", "acdc-lv", "--size", "100", "--out", str(tmp_path / "m.pt")],
        ["train", "--out", str(tmp_path / "m.pt")],
        ["infer", "--model", str(tmp_path / "foreign.pt"), "--task", "acdc-lv", "--out", str(tmp_path / "x")],
    ]
    if not torch.cuda.is_available():
        cases.append(
            ["train", "--data", str(binary_dir), "--device", "cuda", "--epochs", "1", "--size", "32", "--width", "4", "--out", str(tmp_path / "m.pt")]
        )
    (tmp_path / "empty").mkdir()
    for args in cases:
        assert _cli(args) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("segcp: error:") and "\n" not in err, err
    assert not (tmp_path / "x").exists() and not (tmp_path / "m.pt").exists()
