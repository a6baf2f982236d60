"""segcp.monai in a MONAI pipeline: 3D NIfTI volumes with anisotropic spacing and an oblique affine, a
tiny MONAI UNet, LoadImaged → Orientationd/Spacingd → inference → Invertd → ConformalSetsd → SaveImaged.

What is checked: the saved sets equal ``segcp predict`` on the same (saved) probabilities and lie on the
original image's grid (same shape, same affine); calibration through the MONAI loader (function and
Ignite handler, SupervisedEvaluator and EnsembleEvaluator) writes the calib.json ``segcp calibrate``
writes on the same data; the set metrics in ``evaluator.state.metrics`` equal the values counted by hand
from the pipeline's outputs. Tiny volumes (18 × 14 × 7) and a two-level UNet keep the file to about a minute.
"""

from __future__ import annotations

import gc
import json
import sys
import weakref
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("monai", reason="MONAI not installed (pip install 'segcp[monai]')")

from monai.data import DataLoader, Dataset, decollate_batch
from monai.transforms import Activationsd, Compose, EnsureChannelFirstd, Invertd, LoadImaged, SaveImaged, SplitDimd
from test_faults import ok

from segcp.errors import SegcpError
from segcp.monai import ConformalCalibrator, ConformalSetMetric, ConformalSetsd, calibrate_loader

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import monai_pipeline as example

SHAPE = example.SHAPE
N_CAL, N_TEST = 8, 3
ALPHA = 0.2
JOB_ONLY = ("seconds", "data")  # how a record names its run, not what it calibrated


class World:
    """The volumes, the pipeline's transforms and a tiny UNet (untrained: the sets need not be good, only right)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.cal = example.synthetic_volumes(root / "cal", N_CAL, 1)
        self.test = example.synthetic_volumes(root / "test", N_TEST, 2)
        self.pre = example.preprocessing()  # the image resampled; the label on the original grid (where sets are compared)
        self.post = Compose([Activationsd("pred", softmax=True), Invertd("pred", transform=self.pre, orig_keys="image", nearest_interp=False)])
        self.model = example.tiny_unet()

    def loader(self, items: list[dict[str, str]], batch_size: int = 2) -> DataLoader:
        return DataLoader(Dataset(items, self.pre), batch_size=batch_size, num_workers=0)

    def outputs(self, items: list[dict[str, str]], post: Compose) -> list[dict]:
        """Each item through the model and ``post``, in the batches of :meth:`loader` (a convolution's last
        float32 bits may depend on the batch size: compared outputs are made in the same batches)."""
        out = []
        for batch in self.loader(items):
            with torch.no_grad():
                batch["pred"] = self.model(batch["image"])
            out += [post(d) for d in decollate_batch(batch)]
        return out


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> World:
    w = World(tmp_path_factory.mktemp("monai"))
    # the calibration the pipeline uses, streamed through the MONAI loader and the model
    w.calib = w.root / "calib.json"
    calibrate_loader(w.loader(w.cal), w.model, post=w.post, out=w.calib, alpha=ALPHA, show_progress=False)
    return w


def _save_probs(w: World, items: list[dict[str, str]], folder: Path) -> None:
    """The inverted probabilities as SaveImaged writes them: <id>_prob.nii.gz, (x, y, z, C) float32."""
    w.outputs(
        items,
        Compose(
            [
                w.post,
                SaveImaged("pred", output_dir=str(folder), output_postfix="prob", separate_folder=False, output_dtype=np.float32, print_log=False),
            ]
        ),
    )


def _same_record(a: dict, b: dict) -> None:
    assert {k: v for k, v in a.items() if k not in JOB_ONLY} == {k: v for k, v in b.items() if k not in JOB_ONLY}


# ------------------------------------------------------------------ calibration
def test_calibration_through_the_monai_loader_equals_segcp_calibrate(world, tmp_path, capsys):
    probs = tmp_path / "probs"
    _save_probs(world, world.cal, probs)
    assert nib.load(str(probs / "case100_prob.nii.gz")).shape == (*SHAPE, 3)
    data = ["--probs", probs, "--masks", world.root / "cal" / "labels", "--match", "probs={id}_prob"]
    ok(["calibrate", *data, "--labels", "all", "--alpha", str(ALPHA), "--out", tmp_path / "cli.json", "-q"], capsys)
    cli = json.loads((tmp_path / "cli.json").read_text())
    monai_rec = json.loads(world.calib.read_text())
    _same_record(monai_rec, cli)
    assert [s["name"] for s in cli["structures"]] == ["label1", "label2"] and cli["channel_axis"] == "last"
    assert cli["ids"] == [f"case1{i:02d}" for i in range(N_CAL)] and cli["n"] == N_CAL

    # one structure (--label 1) with a spacing-aware family (morph's ball: margins in mm), through a loader of
    # the saved files (no model): the spacing is the files' own, as segcp's reader reads it
    ok(
        ["calibrate", *data, "--label", "1", "--method", "morph", "--se", "ball", "--alpha", str(ALPHA), "--out", tmp_path / "cli2.json", "-q"],
        capsys,
    )
    files = [{"pred": str(probs / f"{Path(d['label']).name[:-7]}_prob.nii.gz"), "label": d["label"]} for d in world.cal]
    load = Compose([LoadImaged(["pred", "label"]), EnsureChannelFirstd(["pred", "label"])])
    rec = calibrate_loader(
        DataLoader(Dataset(files, load), batch_size=3), label=1, method="morph", method_params={"se": "ball"}, alpha=ALPHA, show_progress=False
    )
    cli2 = json.loads((tmp_path / "cli2.json").read_text())
    assert rec["ids"] == [f"case1{i:02d}_prob" for i in range(N_CAL)]  # ids are the names of the files read
    _same_record(rec | {"ids": cli2["ids"]}, cli2)
    assert cli2["label"] == 1 and cli2["method"] == "morph" and not float(cli2["lambda"]).is_integer()  # a distance in mm


def test_calibration_streams_one_batch(world):
    """The calibrator keeps curves only: a batch's tensors are freed once it is added."""
    cal = ConformalCalibrator(alpha=ALPHA)
    batch = next(iter(world.loader(world.cal)))
    with torch.no_grad():
        pred = torch.softmax(world.model(batch["image"]), 1)
    label = torch.zeros((pred.shape[0], 1, *pred.shape[2:]))
    label[:, :, 2:6, 2:6, 2:5] = 1
    label[:, :, 3:5, 3:5, 3:4] = 2
    ref = weakref.ref(pred)
    cal.update(pred, label)  # a batch-first tensor, decollated with its metadata
    del pred, batch
    gc.collect()
    assert ref() is None and cal.n == 2
    assert cal.ids == [Path(d["image"]).name[:-7] for d in world.cal[:2]]


def test_calibration_handler_supervised_and_ensemble_evaluators(world, tmp_path):
    pytest.importorskip("ignite", reason="pytorch-ignite not installed (pip install 'segcp[monai]')")
    from monai.engines import EnsembleEvaluator, SupervisedEvaluator
    from monai.transforms import MeanEnsembled

    from segcp.monai import ConformalCalibrationHandler

    expected = json.loads(world.calib.read_text())
    handler = ConformalCalibrationHandler(tmp_path / "sup.json", alpha=ALPHA)
    ev = SupervisedEvaluator(
        device=torch.device("cpu"), val_data_loader=world.loader(world.cal), network=world.model, postprocessing=world.post, val_handlers=[handler]
    )
    ev.run()
    _same_record(json.loads((tmp_path / "sup.json").read_text()), expected)
    assert ev.state.metrics["segcp_lambda_label2"] == expected["structures"][1]["lambda"]

    # an ensemble of the same network twice: the mean of equal logits is those logits, so the same record
    handler2 = ConformalCalibrationHandler(tmp_path / "ens.json", alpha=ALPHA)
    ens = EnsembleEvaluator(
        device=torch.device("cpu"),
        val_data_loader=world.loader(world.cal),
        networks=[world.model, world.model],
        pred_keys=["pred0", "pred1"],
        postprocessing=Compose([MeanEnsembled(["pred0", "pred1"], output_key="pred"), world.post]),
        val_handlers=[handler2],
    )
    ens.run()
    _same_record(handler2.record, expected)


# ------------------------------------------------------------------ the sets
def test_pipeline_sets_equal_segcp_predict_on_the_original_grid(world, tmp_path, capsys):
    t = ConformalSetsd("pred", world.calib)
    assert t.names == ["label1", "label2"]
    probs, ours = tmp_path / "probs", tmp_path / "monai_sets"
    save_sets = [
        SaveImaged(f"pred_sets_{n}", output_dir=str(ours / n), output_postfix="", separate_folder=False, output_dtype=np.uint8, print_log=False)
        for n in t.names
    ]
    post = Compose(
        [
            world.post,
            SaveImaged("pred", output_dir=str(probs), output_postfix="prob", separate_folder=False, output_dtype=np.float32, print_log=False),
            t,
            SplitDimd("pred_sets", output_postfixes=t.names),
            *save_sets,
        ]
    )
    outs = world.outputs(world.test, post)
    assert outs[0]["pred_sets"].dtype == torch.uint8 and outs[0]["pred_sets"].shape == (2, *SHAPE)

    ok(["predict", "--calib", world.calib, "--probs", probs, "--match", "probs={id}_prob", "--out", tmp_path / "cli_sets", "-q"], capsys)
    for d in world.test:
        ident = Path(d["image"]).name[:-7]
        original = nib.load(d["image"])
        for name in t.names:
            mine = nib.load(str(ours / name / f"{ident}.nii.gz"))
            theirs = nib.load(str(tmp_path / "cli_sets" / name / f"{ident}.nii.gz"))
            a, b = np.asarray(mine.dataobj), np.asarray(theirs.dataobj)
            assert a.dtype == np.uint8 and np.array_equal(a, b)
            assert 0 < a.sum() < a.size  # neither empty nor the whole image
            assert mine.shape == theirs.shape == original.shape
            np.testing.assert_allclose(mine.affine, original.affine, atol=1e-5)
            np.testing.assert_allclose(theirs.affine, original.affine, atol=1e-5)


def test_sets_made_before_invertd_are_inverted_onto_the_original_grid(world):
    """The sets keep the probabilities' metadata and applied operations: Invertd (nearest) maps them back."""
    post = Compose(
        [
            Activationsd("pred", softmax=True),
            ConformalSetsd("pred", world.calib),
            Invertd(["pred", "pred_sets"], transform=world.pre, orig_keys="image", nearest_interp=[False, True]),
        ]
    )
    out = world.outputs(world.test[:1], post)[0]
    original = nib.load(world.test[0]["image"])
    sets = out["pred_sets"]
    assert tuple(sets.shape[1:]) == original.shape and set(np.unique(sets.numpy())) <= {0, 1}
    np.testing.assert_allclose(sets.affine.numpy(), original.affine, atol=1e-5)


def test_set_metrics_in_the_evaluator_state(world, tmp_path):
    pytest.importorskip("ignite", reason="pytorch-ignite not installed (pip install 'segcp[monai]')")
    from monai.engines import SupervisedEvaluator
    from monai.handlers import IgniteMetricHandler, from_engine

    post = Compose([world.post, ConformalSetsd("pred", world.calib)])
    metric = {
        name: IgniteMetricHandler(
            ConformalSetMetric.from_calibration(str(world.calib), name),
            output_transform=from_engine(["pred_sets", "pred" if name == "stretch" else "label"]),
        )
        for name in ("coverage", "fnr", "stretch")
    }
    ev = SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=world.loader(world.test),
        network=world.model,
        postprocessing=post,
        key_val_metric={"coverage": metric["coverage"]},
        additional_metrics={"fnr": metric["fnr"], "stretch": metric["stretch"]},
    )
    ev.run()
    # the same values counted by hand from the pipeline's sets and probabilities
    cov, stretch = [], []
    for out in world.outputs(world.test, post):
        sets, lab, prob = out["pred_sets"].numpy().astype(bool), out["label"].numpy()[0], out["pred"].numpy()
        for k, v in enumerate((1, 2)):
            truth = lab == v
            cov.append((sets[k] & truth).sum() / truth.sum())
            stretch.append(sets[k].sum() / (prob[v] >= 0.5).sum() if (prob[v] >= 0.5).any() else np.nan)
    m, details = ev.state.metrics, ev.state.metric_details
    cov, stretch = np.reshape(cov, (N_TEST, 2)), np.reshape(stretch, (N_TEST, 2))
    np.testing.assert_allclose(details["coverage"].numpy(), cov, rtol=0, atol=1e-12)  # per image and structure, float64
    np.testing.assert_allclose(details["fnr"].numpy(), 1.0 - cov, rtol=0, atol=1e-12)
    np.testing.assert_allclose(details["stretch"].numpy(), stretch, rtol=0, atol=1e-12)  # NaN where the model's mask is empty
    # MONAI's "mean" (in float32): per image over the structures where defined, then over the images
    assert m["coverage"] == pytest.approx(cov.mean(), abs=1e-6) and m["fnr"] == pytest.approx(1.0 - cov.mean(), abs=1e-6)
    per_image = [np.nanmean(r) for r in stretch if np.isfinite(r).any()]
    assert per_image and m["stretch"] == pytest.approx(np.mean(per_image), abs=1e-6)


# ------------------------------------------------------------------ bad input
def test_bad_input_is_one_line(world, tmp_path):
    with pytest.raises(SegcpError, match="labels and label"):
        ConformalCalibrator(labels="all", label=1)
    with pytest.raises(SegcpError, match="pixel-set methods"):
        ConformalCalibrator(method="consign")
    cal = ConformalCalibrator(alpha=ALPHA)
    probs = torch.full((1, 3, 4, 5, 6), 1 / 3)
    with pytest.raises(SegcpError, match="not a label map"):
        cal.update(probs, torch.zeros((1, 3, 4, 5, 6)))  # one-hot
    with pytest.raises(SegcpError, match=r"must lie in \[0, 1\]"):
        cal.update(probs * 4, torch.zeros((1, 1, 4, 5, 6)))  # logits, not probabilities
    with pytest.raises(SegcpError, match="no calibration case"):
        ConformalCalibrator().record()
    with pytest.raises(SegcpError, match="no calibration label holds label2"):
        c = ConformalCalibrator(alpha=0.5)
        c.update(probs, torch.ones((1, 1, 4, 5, 6)))
        c.record()
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(SegcpError, match="bad.json"):
        ConformalSetsd("pred", bad)


def test_the_example_runs(tmp_path):
    example.main(tmp_path, ALPHA)
    rec = json.loads((tmp_path / "calib.json").read_text())
    assert [s["name"] for s in rec["structures"]] == ["label1", "label2"] and rec["n"] == 8
    for name in ("label1", "label2"):
        sets = sorted((tmp_path / "sets" / name).glob("*.nii.gz"))
        assert [f.name for f in sets] == [f"case2{i:02d}.nii.gz" for i in range(N_TEST)]
        assert nib.load(str(sets[0])).shape == SHAPE


# ------------------------------------------------------------------ 2D, plain tensors, one channel, the image
def _items_2d(n: int, seed: int, channels: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C, 16, 16) probabilities and (B, 1, 16, 16) label maps, plain tensors (no metadata)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros((n, 1, 16, 16), np.int64)
    for b in range(n):
        c = rng.integers(5, 11, 2)
        lab[b, 0, c[0] - 4 : c[0] + 4, c[1] - 4 : c[1] + 4] = 1
        lab[b, 0, c[0] - 2 : c[0] + 2, c[1] - 2 : c[1] + 2] = channels - 1
    logits = np.stack([lab[:, 0] == v for v in range(channels)], 1) * 2.0 + rng.normal(0, 1, (n, channels, 16, 16))
    return torch.softmax(torch.as_tensor(logits), 1), torch.as_tensor(lab)


@pytest.mark.parametrize("method", ["threshold", "rwcp"])
def test_2d_plain_tensors_equal_the_estimator(tmp_path, method):
    from segcp import ConformalSegmenter
    from segcp.record import read_calibration

    params = {"encoder": "fallback", "k": 6} if method == "rwcp" else None
    cal = ConformalCalibrator(method, ALPHA, method_params=params)
    for seed in range(3):  # three batches of four
        probs, lab = _items_2d(4, seed)
        cal.update(probs, lab, image=probs[:, :1] if method == "rwcp" else None)
    rec = cal.write(tmp_path / "c.json")
    assert rec["ids"] == [str(k) for k in range(12)] and rec["channel_axis"] == "last"
    probs, _ = _items_2d(2, 9)
    t = ConformalSetsd("pred", tmp_path / "c.json", output_postfix=None, image_key="image" if method == "rwcp" else None)
    models = [ConformalSegmenter.from_parts(p) for p in read_calibration(tmp_path / "c.json").parts]
    for b in range(2):
        item = {"pred": probs[b], "image": probs[b, :1]}
        out = t(item)["pred"]
        assert type(out) is torch.Tensor and out.dtype == torch.uint8 and out.shape == (2, 16, 16)
        arr = t(item | {"pred": probs[b].numpy()})["pred"]  # an array in, an array out
        assert isinstance(arr, np.ndarray) and np.array_equal(arr, out.numpy())
        for k, v in enumerate((1, 2)):
            from segcp import Case

            case = Case("x", probs=probs[b, v].numpy(), image=probs[b, :1].numpy() if method == "rwcp" else None)
            assert np.array_equal(out[k].numpy().astype(bool), models[k].predict(case))


def test_two_sided_sets_are_the_band_predict_writes(tmp_path):
    """A band calibration: each channel is the 0/1/2 band of segcp predict's band/ folder."""
    from segcp import Case, ConformalSegmenter
    from segcp.io.viewer import band_labels
    from segcp.record import read_calibration

    cal = ConformalCalibrator("threshold", ALPHA, guarantee="band")
    for seed in range(3):
        probs, lab = _items_2d(4, seed)
        cal.update(probs, lab)
    cal.write(tmp_path / "c.json")
    t = ConformalSetsd("pred", tmp_path / "c.json", output_postfix=None)
    assert t.two_sided
    models = [ConformalSegmenter.from_parts(p) for p in read_calibration(tmp_path / "c.json").parts]
    probs, _ = _items_2d(2, 9)
    seen = set()
    for b in range(2):
        out = t({"pred": probs[b]})["pred"]
        assert out.dtype == torch.uint8 and out.shape == (2, 16, 16)
        for k, v in enumerate((1, 2)):
            inner, outer = models[k].predict(Case("x", probs=probs[b, v].numpy()))
            assert np.array_equal(out[k].numpy(), band_labels(inner, outer))
            seen |= set(np.unique(out[k].numpy()).tolist())
    assert seen <= {0, 1, 2} and 1 in seen  # a band: the outer set beyond the inner one


def test_one_foreground_channel(tmp_path):
    probs, lab = _items_2d(8, 3, channels=2)
    cal = ConformalCalibrator(alpha=ALPHA)
    cal.update(probs[:, 1:], lab)  # a sigmoid output (B, 1, H, W) and a binary truth
    rec = cal.write(tmp_path / "c.json")
    assert cal.record() is rec  # kept: the curves were freed
    with pytest.raises(SegcpError, match=r"complete .* reset\(\)"):
        cal.update(probs[:, 1:], lab)
    assert rec["probs_channels"] is False and rec["label"] is None and "structures" not in rec
    t = ConformalSetsd("pred", tmp_path / "c.json")
    assert t.names == ["foreground"]
    out = t({"pred": probs[0, 1:]})["pred_sets"]
    assert out.shape == (1, 16, 16) and np.array_equal(out[0].numpy().astype(bool), 1.0 - probs[0, 1].numpy().astype(np.float64) <= rec["lambda"])
    with pytest.raises(SegcpError, match="one-channel foreground map, got 2 channels"):
        t({"pred": probs[0]})


def test_segcp_monai_without_ignite(monkeypatch):
    """segcp.monai imports without pytorch-ignite; the handler says what to install."""
    import importlib

    import segcp.monai

    monkeypatch.setitem(sys.modules, "ignite", None)  # as if not installed (restored after the test)
    monkeypatch.setitem(sys.modules, "ignite.engine", None)
    monkeypatch.delitem(sys.modules, "segcp.monai.handlers", raising=False)
    importlib.reload(segcp.monai)
    assert segcp.monai.ConformalSetsd is ConformalSetsd
    with pytest.raises(ImportError, match=r"needs pytorch-ignite: pip install 'segcp\[monai\]'"):
        segcp.monai.ConformalCalibrationHandler  # noqa: B018
