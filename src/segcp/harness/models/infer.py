"""Batched, seeded inference that writes the CLI data-directory layout.

Output folder (ids unchanged)::

    images/<id>.<ext>   carried over (task: written as .npy, as :func:`segcp.harness.datasets.export_task` does;
                        data directory: the files copied as they are)
    masks/<id>.<ext>    carried over when the source has masks
    probs/<id>.npy      float32 on the ORIGINAL grid of the image: the foreground probability
                        (H, W) of a binary model, the (L, H, W) softmax of a multi-class model
    samples/<id>.npy    float16 (N, L, H, W) softmax samples, only with ``samples=N``
    segcp_infer.json    models, seed, sample scheme, Dice at 0.5 against the masks
    segcp_export.json   (task sources) task, split part, ids, groups

**Volumes** (3D images: the volume tasks ``la2018`` / ``acdc-3d``, or 3D files in a data
directory). The 2D model runs slice by slice along the slice axis
(:func:`segcp.cases.slice_axis`: the coarsest spacing, ties → the fewest voxels; or
``slice_axis``), ``batch_size`` slices per forward pass, one volume in memory at a time, and
the slices are stacked back on the volume's exact grid:

- ``probs/<id>.nii.gz`` (the image's format and suffix: ``.nii`` stays ``.nii``, NRRD gives
  ``.nrrd``; :func:`segcp.io.write_on_grid`): float32 (X, Y, Z) foreground probability with
  the image's affine and header (qform/sform and codes, pixdim, units, dim_info; only the
  data type changes); a multi-class model's (L, X, Y, Z) softmax stack is written as
  ``probs/<id>.npy`` — a NIfTI affine covers the first three axes only, so a channel-first
  stack cannot carry the volume's geometry, which the ``masks/`` and ``images/`` files beside
  it do. Volumes without a geometry (``.npy``) give ``.npy``.
- ``samples/<id>.npy``: float16 (N, L, X, Y, Z). Sample k is ONE network draw applied to
  the whole volume: its MC-dropout masks are seeded by the volume id (not the slice), so they
  are the same on every slice and the sample is coherent across slices.
- Dice in ``segcp_infer.json`` is the 3D Dice of each volume. A NIfTI mask must lie on its
  image's grid (same shape and affine; one error line names it otherwise).

Probabilities (``probs/``) are deterministic: dropout is off, BatchNorm uses its running
statistics, and an ensemble of K models gives the mean of the K softmaxes. Samples:

- one model trained with dropout: ``N`` MC-dropout passes (dropout on, BatchNorm in eval
  mode);
- K > 1 models without dropout (a deep ensemble): one sample per member, so ``N`` must be K;
- K > 1 models all trained with dropout: ``N / K`` MC-dropout samples per member (``N``
  must be a multiple of K), members in the order given.

Samples are float16 (half the disk of float32; softmax values keep ≈ 3 significant digits,
so a sample's classes sum to 1 within ≈ 1e-3). They are written on the original grid: each
class channel is resized back linearly, as for ``probs/``.

Determinism: probabilities depend only on the models and the images. MC-dropout masks are
drawn from a generator seeded by (``seed``, image id, member, chunk of ``batch_size``
samples), so the same seed gives the same samples whatever the other images, and a different
seed different ones (for the same ``batch_size``). The global torch RNG is left untouched.
"""

from __future__ import annotations

import os
import shutil
import time
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from segcp.cases import SLICE_AXIS_RULE
from segcp.cases import slice_axis as choose_axis
from segcp.engine.splits import PARTS
from segcp.errors import SegcpError
from segcp.harness.datasets.preprocess import Preprocessing, preprocess, restore_to_original
from segcp.harness.datasets.volumes import volume_slices
from segcp.harness.models.train import load_checkpoint
from segcp.harness.models.unet import UNet, enable_mc_dropout, has_dropout

__all__ = ["INFER_MANIFEST", "SAMPLES_DTYPE", "Ensemble", "infer_to_dir", "load_ensemble"]

INFER_MANIFEST = "segcp_infer.json"
SAMPLES_DTYPE = np.float16


def _derived_seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) & 0xFFFFFFFF for p in parts]).generate_state(1, np.uint64)[0] >> 1)


@dataclass
class Ensemble:
    """One or more loaded segcp models with the same preprocessing and classes.

    ``models`` in eval mode, ``metas`` their checkpoint metadata, ``paths`` their files.
    """

    models: list[UNet]
    metas: list[dict[str, Any]]
    paths: list[str]
    device: str = "cpu"

    def to(self, device: str) -> Ensemble:
        """Move every model to ``device`` (one-line error if it is not usable)."""
        try:
            for m in self.models:
                m.to(device)
        except (RuntimeError, AssertionError, TypeError) as exc:
            raise SegcpError(f"--device {device}: not usable ({' '.join(str(exc).split())[:120]})") from None
        self.device = str(device)
        return self

    @property
    def n_classes(self) -> int:
        return int(self.metas[0]["n_classes"])

    @property
    def binary(self) -> bool:
        return self.n_classes == 2

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing.from_dict(dict(self.metas[0]["preprocessing"]))

    @property
    def input_scale(self) -> float:
        return float(self.metas[0].get("input_scale", 1.0))

    @property
    def dropout(self) -> list[bool]:
        return [has_dropout(m) for m in self.models]

    def sample_plan(self, samples: int | None) -> tuple[str, int] | None:
        """(scheme, samples per member) for ``samples`` N, or None; one-line errors otherwise."""
        if samples is None:
            return None
        n, k = int(samples), len(self.models)
        if n < 1:
            raise SegcpError(f"--samples {samples}: must be a positive integer")
        drop = self.dropout
        if all(drop):
            if n % k:
                raise SegcpError(f"--samples {n}: with {k} dropout models it must be a multiple of {k} ({n // k or 1} per member)")
            return ("mc-dropout" if k == 1 else "ensemble of mc-dropout"), n // k
        if any(drop):
            raise SegcpError("--model: mixing models with and without dropout; sample either an ensemble without dropout or dropout models only")
        if k == 1:
            raise SegcpError(
                f"{self.paths[0]}: trained without dropout, so it cannot give MC-dropout samples; "
                "train with --dropout P, or pass several --model (a deep ensemble)"
            )
        if n != k:
            raise SegcpError(f"--samples {n}: a deep ensemble of {k} models without dropout gives one sample per member; pass --samples {k}")
        return "deep ensemble", 1

    # ------------------------------------------------------------------ prediction
    def _inputs(self, images: Sequence[NDArray[Any]]) -> tuple[torch.Tensor, list[dict[str, Any]]]:
        cfg = self.preprocessing
        xs, recs = [], []
        for img in images:
            a = np.asarray(img)
            if a.ndim != 2:
                raise SegcpError(f"inference: expected a 2D image, got shape {a.shape}")
            pre = preprocess(a, None, None, cfg)
            xs.append(pre.image * self.input_scale)
            recs.append(pre.record)
        return torch.from_numpy(np.stack(xs).astype(np.float32))[:, None].to(self.device), recs

    @torch.no_grad()
    def predict(
        self, images: Sequence[NDArray[Any]], ids: Sequence[str], *, samples: int | None = None, seed: int = 0, batch_size: int = 16
    ) -> Iterator[tuple[str, NDArray[np.float32], NDArray[np.float16] | None]]:
        """Yield (id, probs, samples) per image, on the image's original grid.

        ``probs``: (H, W) foreground probability (binary) or (L, H, W) softmax, float32.
        ``samples``: (N, L, H, W) float16 softmax samples, or None without ``samples``.
        Images are processed ``batch_size`` at a time (MC samples: ``batch_size`` passes at
        a time).
        """
        if len(images) != len(ids):
            raise SegcpError("inference: as many ids as images are needed")
        plan = self.sample_plan(samples)
        bs = max(1, int(batch_size))
        for s in range(0, len(images), bs):
            chunk_ids = list(ids[s : s + bs])
            x, recs = self._inputs(images[s : s + bs])
            member = [torch.softmax(m.eval()(x), dim=1).cpu() for m in self.models]  # K × (B, L, S, S)
            mean = torch.stack(member).mean(0).numpy()
            for b, ident in enumerate(chunk_ids):
                probs = restore_to_original(mean[b], recs[b]).astype(np.float32)
                if self.binary:
                    probs = probs[1]
                smp = None
                if plan is not None:
                    if plan[0] == "deep ensemble":
                        stack = torch.stack([p[b] for p in member]).numpy()
                    else:
                        stack = self._mc_samples(x[b : b + 1], ident, plan[1], seed, bs)
                    n, l_, h, w = stack.shape
                    back = restore_to_original(stack.reshape(n * l_, h, w), recs[b])
                    smp = back.reshape(n, l_, *back.shape[1:]).astype(SAMPLES_DTYPE)
                yield ident, probs, smp

    def predict_volume(
        self, volume: NDArray[Any], ident: str, *, axis: int, samples: int | None = None, seed: int = 0, batch_size: int = 16
    ) -> tuple[NDArray[np.float32], NDArray[np.float16] | None]:
        """Probabilities (and samples) of a 3D volume, slice by slice along ``axis``.

        Returns ``probs`` float32, the volume's shape (binary) or (L, *shape) (multi-class),
        and ``samples`` float16 (N, L, *shape) or None. Every slice goes through
        :meth:`predict` (``batch_size`` slices per pass) with the volume id as its sampling
        key, so the MC-dropout masks of sample k are the same on every slice.
        """
        vol = np.asarray(volume)
        slices = volume_slices(vol, axis)
        probs_out: NDArray[np.float32] | None = None
        smp_out: NDArray[np.float16] | None = None
        for z, (_, probs, smp) in enumerate(self.predict(slices, [ident] * len(slices), samples=samples, seed=seed, batch_size=batch_size)):
            if probs_out is None:
                probs_out = np.empty((*probs.shape[:-2], *vol.shape), np.float32)
                if smp is not None:
                    smp_out = np.empty((*smp.shape[:-2], *vol.shape), SAMPLES_DTYPE)
            where: list[slice | int] = [slice(None)] * probs_out.ndim
            where[probs.ndim - 2 + axis] = z
            probs_out[tuple(where)] = probs
            if smp is not None and smp_out is not None:
                at: list[slice | int] = [slice(None)] * smp_out.ndim
                at[2 + axis] = z
                smp_out[tuple(at)] = smp
        assert probs_out is not None
        return probs_out, smp_out

    def _mc_samples(self, x: torch.Tensor, ident: str, per_member: int, seed: int, bs: int) -> NDArray[np.float32]:
        out = []
        key = zlib.crc32(ident.encode("utf-8"))
        dev = torch.device(self.device)
        devices = [dev.index or 0] if dev.type == "cuda" else []
        for k, model in enumerate(self.models):
            enable_mc_dropout(model)
            try:
                for c, s in enumerate(range(0, per_member, bs)):
                    n = min(bs, per_member - s)
                    with torch.random.fork_rng(devices=devices):
                        torch.manual_seed(_derived_seed(seed, key, k, c))
                        out.append(torch.softmax(model(x.expand(n, -1, -1, -1).contiguous()), dim=1).cpu().numpy())
            finally:
                model.eval()
        return np.concatenate(out)


def load_ensemble(paths: Sequence[str | os.PathLike[str]]) -> Ensemble:
    """Load one or more checkpoints; they must agree on preprocessing, classes and source."""
    if not paths:
        raise SegcpError("--model: at least one model is needed")
    models, metas = [], []
    for p in paths:
        m, meta = load_checkpoint(p)
        models.append(m)
        metas.append(meta)
    first, fp = metas[0], str(paths[0])
    for p, meta in zip(paths[1:], metas[1:]):
        for key in ("n_classes", "preprocessing", "input_scale"):
            if meta.get(key) != first.get(key):
                raise SegcpError(f"{p}: {key} {meta.get(key)!r} differs from {fp} ({first.get(key)!r}); an ensemble needs identical settings")
        t0 = (first.get("task") or {}).get("name")
        t1 = (meta.get("task") or {}).get("name")
        if t0 != t1 or meta.get("split_seed") != first.get("split_seed"):
            raise SegcpError(
                f"{p}: trained on task {t1} split seed {meta.get('split_seed')}, but {fp} on task {t0} split seed {first.get('split_seed')}"
            )
    return Ensemble(models, metas, [str(p) for p in paths])


# ---------------------------------------------------------------------- data directories
def _dice_of(probs: NDArray[Any], mask: NDArray[Any], n_classes: int, label: int | None = None) -> float | None:
    """Dice at 0.5 (binary) or mean foreground Dice of the argmax (multi-class); None if unusable.

    ``label``: a binary model's structure in a label-map mask (``mask == label`` is its truth).
    2D images or 3D volumes (the Dice of the whole volume).
    """
    from segcp.cases import binarize_mask
    from segcp.harness.models.train import dice_scores

    m = np.asarray(mask)
    if n_classes == 2:
        try:
            gt = binarize_mask(m, label, "mask")
        except SegcpError:
            return None
        if gt.shape != probs.shape:
            return None
        return float(dice_scores((probs >= 0.5)[None].astype(np.int64), gt[None].astype(np.int64), 2)[0])
    if m.shape != probs.shape[1:] or m.dtype == bool or not np.issubdtype(m.dtype, np.integer):
        return None
    return float(dice_scores(probs.argmax(0)[None], m[None], n_classes)[0])


def infer_to_dir(
    models: Sequence[str | os.PathLike[str]] | Ensemble,
    out: str | os.PathLike[str],
    *,
    task: str | None = None,
    split: str | None = None,
    data: str | os.PathLike[str] | None = None,
    samples: int | None = None,
    seed: int = 0,
    batch_size: int = 16,
    threads: int | None = None,
    device: str = "cpu",
    overwrite: bool = False,
    root: str | os.PathLike[str] | None = None,
    show_progress: bool = True,
    slice_axis: int | None = None,
) -> dict[str, Any]:
    """Run the model(s) on a task split part or a data directory and write ``out``.

    Either ``task`` (a task name; the split seed is the one recorded in the checkpoint, so
    training images never leak into calibration or test) with ``split`` ∈ {calibration,
    test, pool, train}, or ``data`` (a folder with ``images/`` and optionally ``masks/``).
    A model trained on a 2D task may run on the volume task of the same dataset (``acdc-lv``,
    ``acdc-rv``, ``acdc`` → ``acdc-3d``): its split has the same patients, and a volume of a
    patient the model was trained on is refused. 3D images are volumes (see the module
    docstring; ``slice_axis`` overrides the automatic axis). Everything is written into a
    temporary folder beside ``out`` and moved into place on success; ``out`` must not exist
    or be empty unless ``overwrite``, which replaces only a folder ``infer`` wrote (its manifest). Returns the manifest (also written as ``segcp_infer.json``).
    """
    from segcp.io import atomic_dir, read_array, write_json, write_npy
    from segcp.io.datadir import DataDir
    from segcp.progress import track as progress

    ens = models if isinstance(models, Ensemble) else load_ensemble(models)
    ens.to(device)
    plan = ens.sample_plan(samples)
    if (task is None) == (data is None):
        raise SegcpError("inference needs either --task T --split PART or --data DIR")
    out = Path(out)
    if overwrite:
        from segcp.io.writers import check_replaceable

        check_replaceable(out, INFER_MANIFEST, "segcp infer")
    meta0 = ens.metas[0]
    trained_task = (meta0.get("task") or {}).get("name")
    source: dict[str, Any]
    test_ids: set[str] = set()
    cal_ids: set[str] = set()
    dice_label: int | None = None
    if slice_axis is not None:
        choose_axis((0, 0, 0), given=slice_axis)  # a bad --slice-axis fails before any work
    if task is not None:
        from segcp.harness.datasets.tasks import get_task

        if split not in PARTS:
            raise SegcpError(f"--split {split!r}: expected one of {', '.join(PARTS)}")
        if trained_task is None:
            raise SegcpError(f"{ens.paths[0]}: trained on a data directory, not a task; use --data DIR")
        if task != trained_task:
            _volume_task_of(task, trained_task)
        t = get_task(task, root)
        split_seed = int(meta0["split_seed"])
        sp = t.split(seed=split_seed)
        ids = list(sp.part(split))
        if task != trained_task:
            dice_label = _check_volume_task(t, trained_task, split_seed, sp, ids, split)
        test_ids, cal_ids = set(sp.test), set(sp.calibration)
        source = {"task": task, "split": split, "split_seed": split_seed}
        if task != trained_task:
            source["model_task"] = trained_task
    else:
        dd_src = DataDir(data)  # type: ignore[arg-type]
        if not dd_src.has("images"):
            raise SegcpError(f"{data}: missing folder images/ (inference reads images/<id>)")
        ids = dd_src.ids(["images", "masks"] if dd_src.has("masks") else ["images"])
        source = {"data": str(Path(data).resolve())}  # type: ignore[arg-type]
        if dd_src.has("masks"):
            _check_volume_grids(dd_src, ids)

    prev_threads = torch.get_num_threads()
    if threads is not None:
        if int(threads) < 1:
            raise SegcpError(f"--threads {threads}: must be a positive integer")
        torch.set_num_threads(int(threads))
    try:
        with atomic_dir(out, existing="overwrite" if overwrite else "refuse") as tmp:
            if task is not None:
                from segcp.harness.datasets.tasks import export_task

                export_task(t, split, tmp, split=sp)  # type: ignore[arg-type]
            else:
                for sub in ("images", "masks"):
                    if dd_src.has(sub):
                        (tmp / sub).mkdir()
                        for i in ids:
                            src = dd_src.path(sub, i)
                            shutil.copy2(src, tmp / sub / src.name)
            dd = DataDir(tmp)
            has_masks = dd.has("masks")
            dice: dict[str, float | None] = {}
            axes: dict[str, int] = {}
            bs = max(1, int(batch_size))
            batches = [ids[s : s + bs] for s in range(0, len(ids), bs)]
            t_start = time.perf_counter()
            for chunk in progress(batches, f"inference ({len(ids)} images)", show_progress):
                flat, imgs = [], []
                for i in chunk:  # a volume is predicted as soon as it is read: one in memory at a time
                    arr, spacing = read_array(dd.path("images", i))
                    if arr.ndim != 3:
                        flat.append(i)
                        imgs.append(arr)
                        continue
                    axes[i] = choose_axis(arr.shape, spacing, given=slice_axis)
                    d = _infer_volume(ens, dd, tmp, i, arr, axes[i], samples, seed, bs, dice_label)
                    del arr
                    if has_masks:
                        dice[i] = d
                for ident, probs, smp in ens.predict(imgs, flat, samples=samples, seed=seed, batch_size=bs):
                    write_npy(tmp / "probs" / f"{ident}.npy", probs)
                    if smp is not None:
                        write_npy(tmp / "samples" / f"{ident}.npy", smp)
                    if has_masks:
                        dice[ident] = _dice_of(probs, read_array(dd.path("masks", ident))[0], ens.n_classes, dice_label)
            seconds = time.perf_counter() - t_start

            def mean_of(keys: Sequence[str]) -> float | None:
                vals = [v for k in keys if (v := dice.get(k)) is not None]
                return float(np.mean(vals)) if vals else None

            summary: dict[str, Any] = {"threshold": 0.5 if ens.binary else "argmax", "n": sum(v is not None for v in dice.values())}
            summary["mean"] = mean_of(ids)
            if test_ids or cal_ids:
                summary["calibration"] = mean_of([i for i in ids if i in cal_ids])
                summary["test"] = mean_of([i for i in ids if i in test_ids])
                summary["n_test"] = sum(1 for i in ids if i in test_ids and dice.get(i) is not None)
            manifest: dict[str, Any] = {
                "source": source,
                "ids": ids,
                "models": [
                    {
                        "path": str(Path(p).resolve()),
                        "task": (m.get("task") or {}).get("name"),
                        "split_seed": m.get("split_seed"),
                        "seed": m.get("seed"),
                        "dropout": m.get("dropout"),
                        "n_classes": m.get("n_classes"),
                        "segcp_version": m.get("segcp_version"),
                        "val_dice": (m.get("metrics") or {}).get("val_dice"),
                    }
                    for p, m in zip(ens.paths, ens.metas)
                ],
                "n_classes": ens.n_classes,
                "probs": "foreground probability (H, W) float32" if ens.binary else f"softmax ({ens.n_classes}, H, W) float32",
                "volumes": None
                if not axes
                else {
                    "n": len(axes),
                    "slice_axis": axes,
                    "rule": f"given: {slice_axis}" if slice_axis is not None else SLICE_AXIS_RULE,
                    "probs": (
                        "foreground probability (X, Y, Z) float32, NIfTI on the image's grid and header (.npy for .npy images)"
                        if ens.binary
                        else f"softmax ({ens.n_classes}, X, Y, Z) float32 .npy (geometry: the NIfTI masks/ and images/)"
                    ),
                    "samples": "one network draw per sample for the whole volume (MC-dropout masks seeded by the volume id)",
                    "dice": "3D Dice of each volume",
                },
                "seconds": seconds,
                "preprocessing": meta0["preprocessing"],
                "seed": int(seed),
                "batch_size": bs,
                "samples": None
                if plan is None
                else {
                    "n": int(samples or 0),
                    "scheme": plan[0],
                    "per_member": plan[1],
                    "dtype": np.dtype(SAMPLES_DTYPE).name,
                    "shape": f"(N, {ens.n_classes}, H, W)" if not axes else f"(N, {ens.n_classes}, *S) (volumes: (N, {ens.n_classes}, X, Y, Z))",
                },
                "dice": summary if has_masks else None,
                "dice_label": dice_label,
                "dice_per_image": dice if has_masks else None,
            }
            write_json(tmp / INFER_MANIFEST, manifest)
    finally:
        torch.set_num_threads(prev_threads)
    return manifest


# ---------------------------------------------------------------------- volumes
def _infer_volume(
    ens: Ensemble, dd: Any, tmp: Path, ident: str, volume: NDArray[Any], axis: int, samples: int | None, seed: int, bs: int, dice_label: int | None
) -> float | None:
    """Predict one volume, write ``probs/`` (on the image's grid, in its format, when the
    image is NIfTI or NRRD and the model binary, else ``.npy``) and ``samples/``; return its 3D Dice."""
    from segcp.io import format_of, read_array, read_geometry, write_npy, write_on_grid

    img_path = dd.path("images", ident)
    grid = read_geometry(img_path)
    mask = None
    if dd.has("masks"):
        mask_path = dd.path("masks", ident)
        mask = np.asarray(read_array(mask_path)[0])
        if mask.shape != volume.shape:
            raise SegcpError(f"{mask_path}: mask shape {mask.shape} does not match image shape {volume.shape}")
    probs, smp = ens.predict_volume(volume, ident, axis=axis, samples=samples, seed=seed, batch_size=bs)
    if grid is not None and probs.ndim == 3:
        write_on_grid(tmp / "probs" / f"{ident}{format_of(img_path)[2].lower()}", probs, grid)  # type: ignore[index]
    else:
        write_npy(tmp / "probs" / f"{ident}.npy", probs)
    if smp is not None:
        write_npy(tmp / "samples" / f"{ident}.npy", smp)
        del smp
    return None if mask is None else _dice_of(probs, mask, ens.n_classes, dice_label)


def _check_volume_grids(dd: Any, ids: Sequence[str]) -> None:
    """Before any work: every NIfTI volume's mask must lie on its grid (one line names the mask)."""
    from segcp.harness.datasets.volumes import check_same_grid
    from segcp.io import read_geometry

    for i in ids:
        img, msk = dd.path("images", i), dd.path("masks", i)
        grid = read_geometry(img)
        if grid is not None and read_geometry(msk) is not None:
            shape = grid.shape or ()
            if len(shape) >= 3 and shape[2] > 1:  # a volume (a 2D image may be stored (X, Y, 1))
                check_same_grid(img, msk)


def _volume_task_of(task: str, trained_task: str) -> Any:
    """The spec of ``trained_task`` when ``task`` is the volume task of its dataset; else one error line."""
    from segcp.harness.datasets.tasks import TASK_SPECS

    spec, target = TASK_SPECS.get(trained_task), TASK_SPECS.get(task)
    if spec is None or target is None or spec.volumes or not target.volumes or spec.dataset != target.dataset:
        raise SegcpError(f"--task {task}: the model was trained on task {trained_task}")
    return spec


def _check_volume_task(t: Any, trained_task: str, split_seed: int, sp: Any, ids: Sequence[str], part: str) -> int | None:
    """A 2D task's model on the volume task of its dataset: refuse any training patient in ``ids``.

    Returns the label a binary model's structure has in the volume task's label maps (e.g. 3
    for an ``acdc-lv`` model on ``acdc-3d``), for its Dice; None otherwise.
    """
    from segcp.harness.datasets.tasks import get_task

    spec = _volume_task_of(t.name, trained_task)
    if part != "train":
        src = get_task(trained_task, t.root).split(seed=split_seed)
        trained_groups = {str(src.groups[i]) for i in src.train}
        leaked = sorted({str(sp.groups[i]) for i in ids} & trained_groups)
        if leaked:
            raise SegcpError(
                f"--task {t.name} --split {part}: patient {leaked[0]} was in the training part of the model's task "
                f"{trained_task} (split seed {split_seed}); refusing to infer on training patients"
            )
    return spec.label if spec.label is not None and t.spec.multiclass else None
