"""Training a :class:`~segcp.harness.models.unet.UNet` on a task's training patients or a data directory.

Recipe (RW-CP paper's base models, scaled to a CPU): cross-entropy on the softmax logits
(binary tasks: 2 classes, foreground probability = softmax[1]; ``acdc``: 4 classes) — or,
with ``loss="dice_ce"``, nnU-Net's Dice + cross-entropy (:mod:`segcp.harness.models.losses`) —, Adam
(lr 1e-3), a linear warm-up of the learning rate over ``warmup_epochs`` then cosine
annealing to ``lr · min_lr_ratio`` at the last step, batch training, augmentation (random
horizontal/vertical flips, rotation ±15° with scaling 0.9–1.1, gamma and contrast/brightness
jitter). Every image is preprocessed with :func:`segcp.harness.datasets.preprocess`: intensities clipped
to their 0.5th/99.5th percentiles and rescaled to [0, 255] (the network sees value / 255),
then resized to ``size × size``; the configuration is stored in the checkpoint so inference
does the same and maps the output back to the original grid.

Which images
------------
- **Task** (:func:`train_task`): the train part of ``task.split(split_seed)`` (every slice of
  the training patients, ``protocol="all"``). A seeded ``val_fraction`` of the training
  *groups* (patients / near-duplicate groups) is held out for validation and model selection
  (the epoch with the best validation Dice is kept). Calibration and test images never
  influence training or model selection, so they stay exchangeable with future images.
- **Data directory** (:func:`train_datadir`): every id of ``images/`` + ``masks/``. Ids are
  their own group unless the folder was written by :func:`segcp.harness.datasets.export_task` (its
  ``segcp_export.json`` records the groups, which are then respected). Data with patient
  structure should be split by patient *before* training (export the training patients
  only), or calibration later is not exchangeable.
- **Volumes** (volume tasks ``la2018``, ``acdc-3d``; 3D images in a data directory, e.g.
  NIfTI): the 2D UNet trains on every slice along the volume's slice axis
  (:func:`segcp.cases.slice_axis`: the coarsest spacing, ties → the fewest voxels; or
  ``slice_axis``). The validation hold-out takes whole groups (patients; in a data directory
  the groups of ``segcp_export.json``, else whole volumes), never single slices, and the
  validation Dice is the mean over held-out volumes of the 3D Dice of their stacked slices.

Determinism: for the same data, settings, seed and thread count, training is bit-identical
on the CPU (model initialisation, shuffling, augmentation and dropout are seeded).

Presets (:data:`PRESETS`): ``"cpu"`` (the defaults, ≤ 15 minutes on 2 CPU cores for ACDC/BUSI,
see docs/models.md) and ``"paper"`` (512 × 512, 200 epochs, batch 16, for a GPU).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray

from segcp._version import __version__
from segcp.errors import SegcpError
from segcp.harness.datasets.preprocess import Preprocessing, preprocess
from segcp.harness.models.losses import get_loss
from segcp.harness.models.options import LOSSES, PRESETS
from segcp.harness.models.unet import UNet
from segcp.io.writers import atomic_path, to_jsonable

__all__ = [
    "CHECKPOINT_FORMAT",
    "PRESETS",
    "TrainConfig",
    "TrainData",
    "augment_batch",
    "datadir_training_data",
    "dice_scores",
    "load_checkpoint",
    "save_checkpoint",
    "task_training_data",
    "train_datadir",
    "train_model",
    "train_task",
]

#: Value of ``checkpoint["format"]``; :func:`load_checkpoint` refuses anything else.
CHECKPOINT_FORMAT = "segcp-unet"
CHECKPOINT_VERSION = 1


@dataclass(frozen=True)
class TrainConfig:
    """Training settings (all stored in the checkpoint).

    Attributes
    ----------
    epochs : passes over the training images; None: derived from ``steps``.
    steps : used when ``epochs`` is None: train for ``round(steps / steps_per_epoch)`` epochs
        (at least 1), so that a dataset of any size takes about the same time.
    size : images are resized to ``size × size`` (a multiple of 16).
    width : UNet base width (channels of the first level).
    batch_size : images per optimisation step.
    lr : Adam learning rate (peak, after warm-up).
    warmup_epochs : length of the linear warm-up (at most half of the steps).
    min_lr_ratio : final learning rate of the cosine annealing, as a fraction of ``lr``.
    dropout : dropout probability in every UNet block (0: none; > 0 enables MC dropout).
    dropout_kind : ``"channel"`` (``nn.Dropout2d``) or ``"element"`` (``nn.Dropout``).
    dropout_from_level : dropout only in blocks at UNet level >= this (default 2: the central
        blocks; 0 = all blocks; see :class:`~segcp.harness.models.unet.UNet` and docs/models.md).
    augment : random flips, rotation/scaling and intensity jitter during training.
    prior_init : start the output layer at the class prior (bias = log class frequency of
        the training pixels, weights × 0.1; see :meth:`UNet.init_head_prior`).
    seed : seed of initialisation, shuffling, augmentation, dropout and the validation hold-out.
    val_fraction : fraction of the training groups held out for validation (at least one
        group when there are two or more; 0 disables validation: the last epoch is kept).
    threads : ``torch.set_num_threads`` during training (None: torch's default).
    max_minutes : stop after this much wall-clock time (the best model so far is kept and
        the checkpoint says it stopped early); None: no limit.
    intensity : preprocessing intensity step: ``"percentile"`` (default) or ``"none"``.
    loss : ``"ce"`` (cross-entropy, default) or ``"dice_ce"`` (nnU-Net's Dice + CE,
        :func:`segcp.harness.models.losses.dice_ce_loss`).
    device : torch device for training (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...). Determinism
        is only promised on the CPU; augmentation always runs on the CPU.
    preset : name of the preset the settings started from (informational).
    """

    epochs: int | None = None
    steps: int | None = 1100
    size: int = 128
    width: int = 8
    batch_size: int = 16
    lr: float = 1e-3
    warmup_epochs: float = 1.0
    min_lr_ratio: float = 0.0
    dropout: float = 0.0
    dropout_kind: str = "channel"
    dropout_from_level: int = 2
    augment: bool = True
    prior_init: bool = True
    seed: int = 0
    val_fraction: float = 0.1
    threads: int | None = None
    max_minutes: float | None = None
    intensity: str = "percentile"
    device: str = "cpu"
    preset: str = "cpu"
    loss: str = "ce"

    def __post_init__(self) -> None:
        def bad(msg: str) -> SegcpError:
            return SegcpError(msg)

        if self.epochs is not None and (int(self.epochs) != self.epochs or self.epochs < 1):
            raise bad(f"epochs={self.epochs!r}: must be a positive integer")
        if self.steps is not None and (int(self.steps) != self.steps or self.steps < 1):
            raise bad(f"steps={self.steps!r}: must be a positive integer")
        if self.epochs is None and self.steps is None:
            raise bad("give epochs or steps")
        if int(self.size) != self.size or self.size < 16 or self.size % 16:
            raise bad(f"size={self.size!r}: must be a positive multiple of 16 (the UNet halves it four times)")
        if int(self.width) != self.width or self.width < 1:
            raise bad(f"width={self.width!r}: must be a positive integer")
        if int(self.batch_size) != self.batch_size or self.batch_size < 2:
            raise bad(f"batch_size={self.batch_size!r}: must be an integer >= 2 (BatchNorm needs 2 images)")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise bad(f"lr={self.lr!r}: must be positive")
        if not (math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0):
            raise bad(f"warmup_epochs={self.warmup_epochs!r}: must be >= 0")
        if not 0 <= self.min_lr_ratio <= 1:
            raise bad(f"min_lr_ratio={self.min_lr_ratio!r}: must be in [0, 1]")
        if not 0 <= self.dropout < 1:
            raise bad(f"dropout={self.dropout!r}: must be in [0, 1)")
        if int(self.dropout_from_level) != self.dropout_from_level or not 0 <= self.dropout_from_level <= 4:
            raise bad(f"dropout_from_level={self.dropout_from_level!r}: must be an integer in 0..4")
        if self.dropout_kind not in ("channel", "element"):
            raise bad(f"dropout_kind={self.dropout_kind!r}: expected 'channel' or 'element'")
        if int(self.seed) != self.seed or self.seed < 0:
            raise bad(f"seed={self.seed!r}: must be a non-negative integer")
        if not 0 <= self.val_fraction < 1:
            raise bad(f"val_fraction={self.val_fraction!r}: must be in [0, 1)")
        if self.threads is not None and (int(self.threads) != self.threads or self.threads < 1):
            raise bad(f"threads={self.threads!r}: must be a positive integer")
        if self.max_minutes is not None and not (self.max_minutes > 0):
            raise bad(f"max_minutes={self.max_minutes!r}: must be positive")
        try:
            torch.device(self.device)
        except (RuntimeError, TypeError):
            raise bad(f"device={self.device!r}: not a torch device (e.g. cpu, cuda, cuda:0)") from None
        if self.intensity not in ("percentile", "none"):
            raise bad(f"intensity={self.intensity!r}: expected 'percentile' or 'none'")
        if self.loss not in LOSSES:
            raise bad(f"loss={self.loss!r}: expected one of {', '.join(LOSSES)}")

    @classmethod
    def from_preset(cls, preset: str = "cpu", **overrides: Any) -> TrainConfig:
        """Settings of a named preset (see :data:`PRESETS`) with ``overrides`` (None = keep)."""
        if preset not in PRESETS:
            raise SegcpError(f"preset {preset!r}: unknown; available presets: {', '.join(PRESETS)}")
        known = {f.name for f in fields(cls)}
        extra = sorted(set(overrides) - known)
        if extra:
            raise SegcpError(f"unknown training settings: {', '.join(extra)}")
        kw = dict(PRESETS[preset])
        kw.update({k: v for k, v in overrides.items() if v is not None})
        if overrides.get("steps") is not None and overrides.get("epochs") is None:
            kw["epochs"] = None  # an explicit step budget replaces the preset's epochs
        kw["preset"] = preset
        return cls(**kw)

    def epochs_for(self, steps_per_epoch: int) -> int:
        """Epochs to run for a dataset with ``steps_per_epoch`` batches."""
        if self.epochs is not None:
            return int(self.epochs)
        assert self.steps is not None
        return max(1, round(self.steps / max(1, steps_per_epoch)))

    def preprocessing(self) -> Preprocessing:
        """The :class:`Preprocessing` these settings imply."""
        return Preprocessing(intensity=self.intensity, size=(self.size, self.size), size_mode="resize")  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------ data
@dataclass
class TrainData:
    """Preprocessed images in memory.

    ``images`` (N, S, S) float32 in [0, 1] (preprocessed / 255), ``targets`` (N, S, S) int64
    class indices, ``ids`` and ``groups`` per image. ``volumes``: for slices of 3D volumes,
    the volume id of each slice (None for 2D images).
    """

    images: NDArray[np.float32]
    targets: NDArray[np.int64]
    ids: list[str]
    groups: list[str]
    volumes: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ids)


def _prepare(
    samples: Sequence[tuple[str, str, NDArray[Any], NDArray[Any]]],
    cfg: Preprocessing,
    show_progress: bool = False,
    description: str = "loading",
    volumes: Sequence[str] | None = None,
) -> TrainData:
    """(id, group, image, target map) → :class:`TrainData` (masks resized with nearest).

    ``volumes``: the volume id of each sample when they are slices of volumes.
    """
    from segcp.progress import track as progress

    size = cfg.size
    assert size is not None
    n = len(samples)
    images = np.zeros((n, *size), np.float32)
    targets = np.zeros((n, *size), np.int64)
    ids, groups = [], []
    for k, (ident, group, image, target) in enumerate(progress(samples, description, show_progress)):
        img = np.asarray(image)
        if img.ndim != 2:
            raise SegcpError(f"image {ident!r}: expected a 2D image, got shape {img.shape}")
        t = np.asarray(target)
        if t.shape != img.shape:
            raise SegcpError(f"image {ident!r}: mask shape {t.shape} does not match image shape {img.shape}")
        pre = preprocess(img, t, None, cfg)
        scale = 1.0 / 255.0 if cfg.intensity != "none" else 1.0
        images[k] = pre.image * scale
        assert pre.mask is not None  # preprocess was given the mask
        targets[k] = pre.mask
        ids.append(ident)
        groups.append(group)
    return TrainData(images, targets, ids, groups, None if volumes is None else list(volumes))


def _volume_slices(ident: str, image: NDArray[Any], target: NDArray[Any], axis: int) -> list[tuple[str, NDArray[Any], NDArray[Any]]]:
    """(slice id ``<id>/z<k>``, image (H, W), target (H, W)) for every slice of a volume along ``axis``."""
    from segcp.harness.datasets.volumes import volume_slices

    return [(f"{ident}/z{k}", im, t) for k, (im, t) in enumerate(zip(volume_slices(image, axis), volume_slices(target, axis)))]


def _slices_data(
    entries: Sequence[tuple[str, str, str, NDArray[Any], NDArray[Any]]], cfg: Preprocessing, show_progress: bool, description: str
) -> TrainData:
    """(slice id, volume id, group, image, target) → :class:`TrainData` with the volume of each slice."""
    return _prepare([(i, g, im, t) for i, _, g, im, t in entries], cfg, show_progress, description, [v for _, v, _, _, _ in entries])


def _held_out_groups(groups: Sequence[str], fraction: float, seed: int) -> set[str]:
    uniq = sorted(set(groups))
    if fraction <= 0 or len(uniq) < 2:
        return set()
    n_val = min(len(uniq) - 1, max(1, round(fraction * len(uniq))))
    rng = np.random.default_rng([int(seed), 0x5E6C])
    return {uniq[i] for i in rng.choice(len(uniq), size=n_val, replace=False)}


def task_training_data(task: Any, split_seed: int, cfg: TrainConfig, show_progress: bool = False) -> tuple[TrainData, TrainData, dict[str, Any]]:
    """Training and validation data of a task (see the module docstring).

    Returns (train, validation, info) where info records n_classes, the split and the
    held-out groups. The validation data holds every slice of the held-out groups; ``info``
    lists which of them are RW-CP protocol slices (``val_rwcp_ids``). Volume tasks: every
    slice of every training volume along its slice axis.
    """
    split = task.split(seed=split_seed)
    by_id = {it.id: it for it in task.items("all")}
    train_ids = list(split.train)
    groups = [by_id[i].group for i in train_ids]
    val_groups = _held_out_groups(groups, cfg.val_fraction, cfg.seed)
    multiclass = bool(task.spec.multiclass)
    n_classes = 4 if multiclass else 2
    volumes = bool(task.spec.volumes)
    rwcp = set() if volumes else {it.id for it in task.items("rwcp")}

    def load(ids: list[str]) -> list[tuple[str, str, NDArray[Any], NDArray[Any]]]:
        out = []
        for i in ids:
            s = by_id[i].load()
            out.append((i, s.group, s.image, s.mask.astype(np.int64)))
        return out

    def load_volumes(ids: list[str], description: str) -> TrainData:
        entries = []
        for i in ids:
            s = by_id[i].load()
            entries += [(sid, i, s.group, im, t) for sid, im, t in _volume_slices(i, s.image, s.mask.astype(np.int64), s.slice_axis)]
        return _slices_data(entries, pre, show_progress, description)

    tr_ids = [i for i, g in zip(train_ids, groups) if g not in val_groups]
    va_ids = [i for i, g in zip(train_ids, groups) if g in val_groups]
    pre = cfg.preprocessing()
    if volumes:
        train = load_volumes(tr_ids, f"{task.name}: loading training volumes")
        val = load_volumes(va_ids, f"{task.name}: loading validation volumes")
    else:
        train = _prepare(load(tr_ids), pre, show_progress, f"{task.name}: loading training images")
        val = _prepare(load(va_ids), pre, show_progress, f"{task.name}: loading validation images")
    info: dict[str, Any] = {
        "n_classes": n_classes,
        "split": {
            "seed": int(split_seed),
            "fractions": list(split.fractions),
            "n_train_groups": len(set(groups)),
            "val_groups": sorted(val_groups),
            "n_train_images": len(tr_ids),
            "n_val_images": len(va_ids),
            "n_calibration": len(split.calibration),
            "n_test": len(split.test),
        },
        "val_rwcp_ids": sorted(i for i in va_ids if i in rwcp),
    }
    if volumes:  # images are slices; the volumes are the training items
        info["split"].update(
            n_train_images=len(train),
            n_val_images=len(val),
            n_train_volumes=len(tr_ids),
            n_val_volumes=len(va_ids),
            train_volumes=tr_ids,
            val_volumes=va_ids,
        )
        info["volumes"] = {"slice_axis": 2, "rule": "the task's slice axis", "images": "slices of the volumes"}
    return train, val, info


def _datadir_groups(root: Path, ids: Sequence[str]) -> tuple[dict[str, str], str]:
    from segcp.harness.datasets.tasks import EXPORT_MANIFEST
    from segcp.io.readers import read_json

    man = root / EXPORT_MANIFEST
    if man.is_file():
        groups = read_json(man).get("groups") or {}
        if isinstance(groups, dict) and all(i in groups for i in ids):
            return {i: str(groups[i]) for i in ids}, f"groups from {EXPORT_MANIFEST}"
    return {i: i for i in ids}, "each id is its own group"


def datadir_training_data(
    data: str | os.PathLike[str], label: int | None, cfg: TrainConfig, show_progress: bool = False, slice_axis: int | None = None
) -> tuple[TrainData, TrainData, dict[str, Any]]:
    """Training and validation data of a data directory with ``images/`` and ``masks/``.

    Masks: with ``label`` the target is ``mask == label`` (binary); without, binary masks
    ({0, 1}, {0, 255} or bool) give a binary model and integer label maps a multi-class
    model with ``max label + 1`` classes.

    3D images (volumes, e.g. NIfTI (X, Y, Z)) give one training image per slice along
    ``slice_axis`` (None: :func:`segcp.cases.slice_axis` of the image's spacing — the
    coarsest, ties → the fewest voxels). A NIfTI mask must lie on its volume's grid (same shape
    and affine). The validation hold-out takes whole groups (volumes, or the groups of
    ``segcp_export.json``), never single slices.
    """
    from segcp.cases import slice_axis as choose_axis
    from segcp.harness.datasets.volumes import check_same_grid
    from segcp.io import read_geometry
    from segcp.io.datadir import DataDir

    root = Path(data)
    dd = DataDir(root)
    for sub in ("images", "masks"):
        if not dd.has(sub):
            raise SegcpError(f"{root}: missing folder {sub}/ (training needs images/ and masks/)")
    ids = dd.ids(require=("images", "masks"))
    # (slice id, volume id, image, target): for a 2D image slice id = volume id = its id
    raw: list[tuple[str, str, NDArray[Any], NDArray[Any]]] = []
    axes: dict[str, int] = {}
    values: set[int] = set()
    for i in ids:
        img, spacing = dd.read("images", i)
        m, _ = dd.read("masks", i)
        m = np.asarray(m)
        if img.ndim not in (2, 3):
            raise SegcpError(f"{dd.path('images', i)}: expected a 2D image or a 3D volume, got shape {img.shape}")
        if m.shape != img.shape:
            raise SegcpError(f"{dd.path('masks', i)}: mask shape {m.shape} does not match image shape {img.shape}")
        if img.ndim == 3 and read_geometry(dd.path("images", i)) is not None and read_geometry(dd.path("masks", i)) is not None:
            check_same_grid(dd.path("images", i), dd.path("masks", i))
        if label is None:
            if m.dtype == bool:
                m = m.astype(np.int64)
            else:
                if not np.issubdtype(m.dtype, np.integer) and not (np.all(np.isfinite(m)) and np.all(m == np.round(m))):
                    raise SegcpError(f"{dd.path('masks', i)}: mask has non-integer values")
                m = m.astype(np.int64)
                if m.min() < 0:
                    raise SegcpError(f"{dd.path('masks', i)}: negative labels")
                values.update(np.unique(m).tolist())
        else:
            m = (m == label).astype(np.int64)
        if img.ndim == 2:
            raw.append((i, i, img, m))
        else:
            axes[i] = choose_axis(img.shape, spacing, given=slice_axis)
            raw += [(sid, i, im, t) for sid, im, t in _volume_slices(i, img, m, axes[i])]
    if label is None and values and values <= {0, 255}:
        raw = [(sid, vid, img, (m == 255).astype(np.int64)) for sid, vid, img, m in raw]
        values = {0, 1}
    n_classes = 2 if label is not None or not values else max(2, int(max(values)) + 1)
    if n_classes > 64:
        raise SegcpError(f"{root / 'masks'}: label values up to {n_classes - 1}; pass --label L for one structure")
    gmap, gsource = _datadir_groups(root, ids)
    groups = [gmap[i] for i in ids]
    val_groups = _held_out_groups(groups, cfg.val_fraction, cfg.seed)
    pre = cfg.preprocessing()
    if not axes:  # 2D images only: exactly as before volumes existed
        tr = [(i, gmap[i], img, m) for i, _, img, m in raw if gmap[i] not in val_groups]
        va = [(i, gmap[i], img, m) for i, _, img, m in raw if gmap[i] in val_groups]
        train = _prepare(tr, pre, show_progress, "loading training images")
        val = _prepare(va, pre, show_progress, "loading validation images")
        n_tr, n_va = len(tr), len(va)
    else:
        tr5 = [(sid, vid, gmap[vid], img, m) for sid, vid, img, m in raw if gmap[vid] not in val_groups]
        va5 = [(sid, vid, gmap[vid], img, m) for sid, vid, img, m in raw if gmap[vid] in val_groups]
        train = _slices_data(tr5, pre, show_progress, "loading training slices")
        val = _slices_data(va5, pre, show_progress, "loading validation slices")
        n_tr, n_va = len(tr5), len(va5)
    info = {
        "n_classes": n_classes,
        "split": {
            "seed": None,
            "groups": gsource,
            "n_train_groups": len(set(groups)),
            "val_groups": sorted(val_groups),
            "n_train_images": n_tr,
            "n_val_images": n_va,
        },
    }
    if axes:
        from segcp.cases import SLICE_AXIS_RULE

        info["volumes"] = {
            "n": len(axes),
            "slice_axis": axes,
            "rule": f"given: {slice_axis}" if slice_axis is not None else SLICE_AXIS_RULE,
            "images": "slices of the volumes",
        }
    return train, val, info


# ------------------------------------------------------------------------ augmentation
def augment_batch(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random flips, rotation ±15° with scale 0.9–1.1, gamma and contrast/brightness jitter.

    ``x`` (B, 1, S, S) float in [0, 1], ``y`` (B, S, S) int64. Geometric transforms are the
    same for image and target (bilinear / nearest, zero padding = background); every draw
    comes from ``gen``.
    """
    b = x.shape[0]

    def u(lo: float, hi: float, n: int = b) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    flip_h = torch.rand(b, generator=gen) < 0.5
    flip_v = torch.rand(b, generator=gen) < 0.5
    x = torch.where(flip_h[:, None, None, None], x.flip(-1), x)
    y = torch.where(flip_h[:, None, None], y.flip(-1), y)
    x = torch.where(flip_v[:, None, None, None], x.flip(-2), x)
    y = torch.where(flip_v[:, None, None], y.flip(-2), y)

    rot = torch.rand(b, generator=gen) < 0.5
    ang = torch.where(rot, u(-math.pi / 12, math.pi / 12), torch.zeros(b))
    scale = torch.where(rot, u(0.9, 1.1), torch.ones(b))
    if bool(rot.any()):
        cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
        theta = torch.zeros(b, 2, 3)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        y = F.grid_sample(y[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0].round().long()

    gamma = torch.exp(u(-0.3, 0.3))[:, None, None, None]
    contrast = u(0.9, 1.1)[:, None, None, None]
    bright = u(-0.05, 0.05)[:, None, None, None]
    x = x.clamp(min=0).pow(gamma) * contrast + bright
    return x.contiguous(), y.contiguous()


# ------------------------------------------------------------------------ metrics
def dice_scores(pred: NDArray[Any], target: NDArray[Any], n_classes: int) -> NDArray[np.float64]:
    """Per-image Dice (:func:`segcp.metrics.dice`; the mean over foreground classes 1..L-1 for
    multi-class). ``pred``, ``target`` (N, H, W) class indices. A class empty in both → Dice 1.
    """
    from segcp.metrics import dice

    p, t = np.asarray(pred), np.asarray(target)
    return np.array([np.mean([dice(pi == c, ti == c) for c in range(1, n_classes)]) for pi, ti in zip(p, t)], dtype=np.float64)


@torch.no_grad()
def _predict_classes(model: UNet, images: NDArray[np.float32], batch_size: int, device: str = "cpu") -> NDArray[np.int64]:
    model.eval()
    out = []
    for s in range(0, len(images), batch_size):
        x = torch.from_numpy(images[s : s + batch_size])[:, None]
        out.append(model(x.to(device)).argmax(1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0,), np.int64)


def _val_dice(pred: NDArray[np.int64], val: TrainData, n_classes: int) -> float:
    """Mean validation Dice: over images, or — for slices of volumes — over volumes, each the
    3D Dice of its stacked slices."""
    if val.volumes is None:
        return float(dice_scores(pred, val.targets, n_classes).mean())
    members: dict[str, list[int]] = {}
    for k, v in enumerate(val.volumes):
        members.setdefault(v, []).append(k)
    per = [dice_scores(pred[ks][None], val.targets[ks][None], n_classes)[0] for ks in members.values()]
    return float(np.mean(per))


# ------------------------------------------------------------------------ training loop
def _lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    span = max(1, total - warmup)
    prog = min(1.0, (step - warmup) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * prog))


class _Reporter:
    """A progress bar on a terminal (:class:`segcp.progress.Bar`), one line per epoch otherwise (e.g. under nohup)."""

    def __init__(self, enabled: bool, total_steps: int, epochs: int, title: str) -> None:
        from segcp.progress import Bar

        self.enabled = enabled
        self.epochs = epochs
        self.bar = Bar(
            f"[bold]{title}",
            total_steps,
            enabled=enabled,
            fields="epoch {task.fields[epoch]}/{task.fields[epochs]}  loss {task.fields[loss]}  val Dice {task.fields[dice]}",
            epoch=0,
            epochs=epochs,
            loss="-",
            dice="-",
        ).__enter__()

    def step(self, epoch: int, loss: float) -> None:
        self.bar.advance(epoch=epoch, loss=f"{loss:.4f}")

    def epoch(self, rec: dict[str, Any]) -> None:
        dice = "-" if rec["val_dice"] is None else f"{rec['val_dice']:.4f}"
        if self.bar.active:
            self.bar.update(dice=dice)
        elif self.enabled:
            self.bar.console.print(
                f"epoch {rec['epoch']}/{self.epochs}  loss {rec['loss']:.4f}  val Dice {dice}  lr {rec['lr']:.2e}  {rec['seconds']:.0f} s",
                highlight=False,
            )

    def close(self) -> None:
        self.bar.__exit__(None, None, None)


def train_model(
    train: TrainData,
    val: TrainData | None,
    n_classes: int,
    cfg: TrainConfig,
    *,
    show_progress: bool = True,
    title: str = "training",
    val_subsets: dict[str, Sequence[str]] | None = None,
) -> tuple[UNet, dict[str, Any]]:
    """Train a UNet; returns (model in eval mode, metrics).

    The model kept is the epoch with the best mean validation Dice (ties: the later epoch);
    without validation data, the last epoch. ``metrics`` holds the per-epoch history
    (loss, validation Dice, learning rate, seconds), ``best_epoch``, ``val_dice``,
    ``train_seconds``, ``stopped_early`` and, for each ``val_subsets`` entry (name → ids of
    validation images), the best model's Dice on that subset.
    """
    if len(train) < 2:
        raise SegcpError(f"training needs at least 2 images, got {len(train)}")
    prev_threads = torch.get_num_threads()
    if cfg.threads is not None:
        torch.set_num_threads(int(cfg.threads))
    try:
        return _train(train, val, n_classes, cfg, show_progress, title, val_subsets or {})
    finally:
        torch.set_num_threads(prev_threads)


def _train(
    train: TrainData, val: TrainData | None, n_classes: int, cfg: TrainConfig, show_progress: bool, title: str, val_subsets: dict[str, Sequence[str]]
) -> tuple[UNet, dict[str, Any]]:
    torch.manual_seed(cfg.seed)
    model = UNet(1, n_classes, cfg.width, cfg.dropout, cfg.dropout_kind, cfg.dropout_from_level)
    freq = np.bincount(train.targets.ravel(), minlength=n_classes)[:n_classes].astype(np.float64)
    if cfg.prior_init:
        model.init_head_prior(torch.from_numpy((freq + 1.0) / (freq.sum() + n_classes)).float())
    try:
        model.to(cfg.device)
    except (RuntimeError, AssertionError) as exc:
        raise SegcpError(f"device={cfg.device!r}: not usable ({' '.join(str(exc).split())[:120]})") from None
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr)
    rng = np.random.default_rng([cfg.seed, 0x7A1])
    gen = torch.Generator().manual_seed(cfg.seed + 0x5E6C9)
    n = len(train)
    bs = min(cfg.batch_size, n)
    steps_per_epoch = n // bs + (1 if n % bs >= 2 else 0)
    epochs = cfg.epochs_for(steps_per_epoch)
    total = steps_per_epoch * epochs
    warmup = min(round(cfg.warmup_epochs * steps_per_epoch), total // 2)
    # linear warm-up then cosine annealing, lr = cfg.lr · factor(step) before each step
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda k: _lr_factor(k, total, warmup, cfg.min_lr_ratio))
    images = torch.from_numpy(train.images)
    targets = torch.from_numpy(train.targets)
    has_val = val is not None and len(val) > 0
    loss_fn = get_loss(cfg.loss)

    history: list[dict[str, Any]] = []
    best: tuple[float, int, dict[str, torch.Tensor]] | None = None
    stopped = False
    step = 0
    t_start = time.perf_counter()
    c_start = time.process_time()
    deadline = None if cfg.max_minutes is None else t_start + 60.0 * cfg.max_minutes
    rep = _Reporter(show_progress, total, epochs, title)
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            order = rng.permutation(n)
            losses = []
            t_ep = time.perf_counter()
            for s in range(0, n, bs):
                idx = torch.from_numpy(order[s : s + bs])
                if len(idx) < 2:
                    continue
                x, y = images[idx][:, None], targets[idx]
                if cfg.augment:
                    x, y = augment_batch(x, y, gen)
                opt.zero_grad(set_to_none=True)
                x, y = x.to(cfg.device), y.to(cfg.device)
                loss = loss_fn(model(x), y)
                if not torch.isfinite(loss):
                    raise SegcpError(f"training diverged at epoch {epoch} (loss {loss.item()}); try a lower lr")
                loss.backward()
                opt.step()
                sched.step()
                step += 1
                losses.append(float(loss.item()))
                rep.step(epoch, losses[-1])
                if deadline is not None and time.perf_counter() > deadline:
                    stopped = True
                    break
            vd = None
            if has_val:
                assert val is not None
                pred = _predict_classes(model, val.images, max(bs, 16), cfg.device)
                vd = _val_dice(pred, val, n_classes)
            rec = {
                "epoch": epoch,
                "loss": float(np.mean(losses)) if losses else float("nan"),
                "val_dice": vd,
                "lr": opt.param_groups[0]["lr"],
                "seconds": time.perf_counter() - t_ep,
                "steps": len(losses),
            }
            history.append(rec)
            rep.epoch(rec)
            score = vd if vd is not None else float(epoch)
            if best is None or score >= best[0]:
                best = (score, epoch, {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()})
            if stopped:
                break
    finally:
        rep.close()
    assert best is not None
    model.load_state_dict(best[2])
    model.to("cpu").eval()
    metrics: dict[str, Any] = {
        "history": history,
        "best_epoch": best[1],
        "val_dice": best[0] if has_val else None,
        "val_images": len(val) if has_val and val is not None else 0,
        "train_images": n,
        "epochs": epochs,
        "steps": step,
        "steps_per_epoch": steps_per_epoch,
        "train_seconds": time.perf_counter() - t_start,
        "train_cpu_seconds": time.process_time() - c_start,
        "threads": torch.get_num_threads(),
        "stopped_early": stopped,
        "selection": "best validation Dice" if has_val else "last epoch",
    }
    if has_val and val_subsets:
        assert val is not None
        pred = _predict_classes(model, val.images, max(bs, 16))
        per = dice_scores(pred, val.targets, n_classes)
        pos = {i: k for k, i in enumerate(val.ids)}
        for name, ids in val_subsets.items():
            ks = [pos[i] for i in ids if i in pos]
            metrics[f"val_dice_{name}"] = float(per[ks].mean()) if ks else None
            metrics[f"val_images_{name}"] = len(ks)
    return model, metrics


# ------------------------------------------------------------------------ checkpoints
def save_checkpoint(path: str | os.PathLike[str], model: UNet, meta: dict[str, Any]) -> Path:
    """Write ``{"format", "version", "model", "state_dict", **meta}`` atomically with torch.save.

    ``meta`` must be JSON-like (it is converted with :func:`segcp.io.to_jsonable`), so the
    checkpoint loads with ``torch.load(weights_only=True)``.
    """
    dest = Path(path)
    obj = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_VERSION,
        "segcp_version": __version__,
        "model": model.config(),
        **to_jsonable(meta),
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    with atomic_path(dest, suffix=".pt") as tmp:
        torch.save(obj, tmp)
    return dest


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[UNet, dict[str, Any]]:
    """Load a segcp checkpoint; returns (model in eval mode, the checkpoint dict without weights).

    Anything else (a missing file, a file torch cannot read, a foreign checkpoint) raises a
    one-line :class:`SegcpError` naming the file.
    """
    p = Path(path)
    if not p.is_file():
        raise SegcpError(f"{p}: no such model file")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many kinds for foreign files
        reason = " ".join(str(exc).split())[:160] or type(exc).__name__
        raise SegcpError(f"{p}: not a segcp model checkpoint (torch cannot read it: {reason})") from None
    if not isinstance(obj, dict) or obj.get("format") != CHECKPOINT_FORMAT:
        raise SegcpError(f"{p}: not a segcp model checkpoint (written by `segcp train`?)")
    if int(obj.get("format_version", 0)) > CHECKPOINT_VERSION:
        raise SegcpError(f"{p}: checkpoint format {obj.get('format_version')} is newer than this segcp supports")
    try:
        model = UNet(**{"dropout_from_level": 0, **obj["model"]})  # pre-option checkpoints: all blocks
        model.load_state_dict(obj["state_dict"])
    except SegcpError:
        raise
    except Exception as exc:  # any mismatch of weights and architecture
        reason = " ".join(str(exc).split())[:160]
        raise SegcpError(f"{p}: corrupted segcp checkpoint ({reason})") from None
    model.eval()
    meta = {k: v for k, v in obj.items() if k != "state_dict"}
    return model, meta


# ------------------------------------------------------------------------ entry points
def _finish(
    out: str | os.PathLike[str], model: UNet, metrics: dict[str, Any], cfg: TrainConfig, info: dict[str, Any], source: dict[str, Any]
) -> dict[str, Any]:
    meta = {
        **source,
        "split": info["split"],
        "preprocessing": cfg.preprocessing().to_dict(),
        "input_scale": 1.0 / 255.0 if cfg.intensity != "none" else 1.0,
        "training": cfg.to_dict(),
        "n_classes": info["n_classes"],
        "binary": info["n_classes"] == 2,
        "foreground_class": 1 if info["n_classes"] == 2 else None,
        "dropout": cfg.dropout,
        "seed": cfg.seed,
        "metrics": metrics,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "torch_version": str(torch.__version__),
    }
    if "volumes" in info:
        meta["volumes"] = info["volumes"]
    save_checkpoint(out, model, meta)
    return meta


def train_task(
    name: str,
    out: str | os.PathLike[str],
    cfg: TrainConfig | None = None,
    *,
    split_seed: int = 0,
    root: str | os.PathLike[str] | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Train on a task's training patients and write the checkpoint ``out``; returns its metadata."""
    from segcp.harness.datasets.tasks import get_task

    cfg = cfg or TrainConfig()
    task = get_task(name, root)
    train, val, info = task_training_data(task, split_seed, cfg, show_progress)
    subsets = {"rwcp": info["val_rwcp_ids"]} if task.spec.dataset == "acdc" and not task.spec.volumes else {}
    model, metrics = train_model(train, val, info["n_classes"], cfg, show_progress=show_progress, title=f"train {name}", val_subsets=subsets)
    return _finish(out, model, metrics, cfg, info, {"task": task.to_dict(), "split_seed": int(split_seed), "data": None})


def train_datadir(
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    cfg: TrainConfig | None = None,
    *,
    label: int | None = None,
    show_progress: bool = True,
    slice_axis: int | None = None,
) -> dict[str, Any]:
    """Train on every id of a data directory (``images/``, ``masks/``; 2D images or 3D volumes,
    see :func:`datadir_training_data`); returns the metadata."""
    cfg = cfg or TrainConfig()
    train, val, info = datadir_training_data(data, label, cfg, show_progress, slice_axis)
    model, metrics = train_model(train, val, info["n_classes"], cfg, show_progress=show_progress, title=f"train {Path(data).name}")
    source = {"task": None, "split_seed": None, "data": {"dir": str(Path(data).resolve()), "label": label}}
    return _finish(out, model, metrics, cfg, info, source)
