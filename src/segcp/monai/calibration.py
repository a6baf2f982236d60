"""Calibration from a MONAI data loader (and a model), streaming: the calib.json of ``segcp calibrate``.

The map step of ``segcp calibrate`` with MONAI tensors in place of files: each batch's items become
cases (:class:`segcp.monai.cases.Target`), each case one loss curve per structure
(:class:`segcp.conformal.CurveBatch`), kept in the reduce step's memory
(:class:`segcp.calibration.compact.CurveAccumulator`: exact curves, or compact ones past the limit);
the arrays are dropped with the batch. The reduce and the record are the directory job's own
(:func:`segcp.jobs.calibrate.fit_structures`, :func:`segcp.record.job_record`), so the same
probabilities and labels give the same record as ``segcp calibrate`` on files holding them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from segcp.calibration.compact import GRID_SIZE
from segcp.cases import one_ndim
from segcp.conformal import ConformalSegmenter, CurveBatch
from segcp.errors import SegcpError
from segcp.io import write_json
from segcp.io.datadir import label_names
from segcp.jobs.calibrate import fit_structures
from segcp.jobs.structures import resolve_structures
from segcp.monai.cases import Target, item_arrays, iter_items, to_numpy
from segcp.progress import track
from segcp.record import job_record

__all__ = ["CHANNELS_IN_FILES", "ConformalCalibrator", "calibrate_loader"]

#: Where the class axis of the probability files lies that ``segcp predict`` reads with a record made
#: here: ``SaveImaged`` writes a (C, *S) MetaTensor as (*S, C) into NIfTI and NRRD.
CHANNELS_IN_FILES = "last"
_NAMES_GIVEN = "names given to segcp.monai"


class ConformalCalibrator:
    """Streaming calibration of a set family on MONAI tensors: :meth:`update` per batch, :meth:`record`.

    Only the loss curves are kept (one per case and structure); each batch can be dropped after
    :meth:`update`. The record is the calib.json ``segcp calibrate`` writes for the same probabilities
    and labels (:func:`segcp.record.job_record`, one λ̂ per structure), with ``data`` naming the loader.

    Parameters
    ----------
    method, alpha, guarantee, tau, method_params, curve_form, grid_size, grid_max
        As :class:`segcp.ConformalSegmenter` (``segcp calibrate``'s options).
    labels : ``"all"``, or label values / names: one λ̂ per structure (channel l, truth ``label == l``),
        as ``segcp calibrate --labels``. Default: ``"all"`` for a class stack (C ≥ 2 channels), a
        single foreground map for C = 1.
    label : one structure of a class stack (``--label L``), instead of ``labels``.
    names : the structures' names: {label value: name}, or a path to an nnU-Net ``dataset.json``.
    channel_axis : the record's ``channel_axis``: how the probability files ``segcp predict`` will read
        with this record store the classes (``"last"``: as ``SaveImaged`` writes them; ``"first"``).
    data : how the record names the data (its ``data`` field).
    image : pass the image to image-aware families (``rwcp``); the image must be on the probabilities' grid.
    """

    def __init__(
        self,
        method: str = "threshold",
        alpha: float | Sequence[float] = 0.1,
        *,
        labels: str | Sequence[str | int] | None = None,
        label: int | None = None,
        names: Mapping[int, str] | str | os.PathLike[str] | None = None,
        guarantee: str | None = None,
        tau: float = 1.0,
        method_params: dict[str, Any] | None = None,
        curve_form: str = "auto",
        grid_size: int = GRID_SIZE,
        grid_max: float | None = None,
        channel_axis: str = CHANNELS_IN_FILES,
        data: str = "MONAI data loader",
    ) -> None:
        if labels is not None and label is not None:
            raise SegcpError("labels and label: give one (label=L for one structure, labels for several)")
        if channel_axis not in ("first", "last"):
            raise SegcpError(f"channel_axis must be 'first' or 'last', got {channel_axis!r}")
        forms: dict[str, Any] = {"curve_form": curve_form, "grid_size": grid_size, "grid_max": grid_max}
        self.estimator = ConformalSegmenter(method, alpha, guarantee=guarantee, tau=tau, method_params=method_params, **forms)
        self.plan = self.estimator.plan()
        if self.plan.family.truth != "mask":
            raise SegcpError(f"segcp.monai calibrates the pixel-set methods; {self.plan.family.name} calibrates sets of multi-class segmentations")
        self.labels, self.label, self.channel_axis, self.data = labels, label, channel_axis, data
        if names is None or isinstance(names, Mapping):
            self.names, self.labels_from = (dict(names) if names else None), (_NAMES_GIVEN if names else None)
        else:
            self.names, self.labels_from = label_names(names), str(names)
        self.reset()

    @property
    def reads_image(self) -> bool:
        """Whether the family reads the image (give it to :meth:`update`)."""
        return "image" in self.plan.family.inputs

    def reset(self) -> None:
        """Forget every case seen (a new calibration with the same options)."""
        self.target: Target | None = None
        self.ids: list[str] = []
        self._accs: list[list[Any]] = []
        self._present: list[int] = []
        self._parts = 0
        self._t0: float | None = None
        self._record: dict[str, Any] | None = None
        self._dims: dict[int, tuple[int, str]] = {}  # grid dimensionality → (images, the first one), as segcp calibrate

    def _resolve(self, n_channels: int, where: str) -> Target:
        if self.label is not None:
            return Target((), int(self.label))
        if self.labels is None and n_channels == 1:
            return Target()
        structures = resolve_structures(self.labels if self.labels is not None else "all", self.names, n_channels, where)
        return Target(tuple(structures))

    def update(self, pred: Any, label: Any, image: Any = None) -> None:
        """Add one batch: ``pred`` the probabilities (a batch-first tensor (B, C, *S), or a list of
        channel-first items), ``label`` the label maps ((B, 1, *S) or items (1, *S)) on the same grid,
        ``image`` (image-aware families) likewise. The batch's arrays are not kept."""
        if self._record is not None:
            raise SegcpError("this calibration is complete (record() was made): reset() before adding cases")
        if self._t0 is None:
            self._t0 = time.perf_counter()
        if self.reads_image and image is None:
            raise SegcpError(f"{self.plan.family.name} reads the image: pass image= to update")
        batches: list[CurveBatch] | None = None
        counts: list[int] = []
        for p, t, im in iter_items(pred, label, image if self.reads_image else None):
            if t is None:
                raise SegcpError("calibration needs the label of every item")
            ident, probs, spacing, img = item_arrays(p, len(self.ids), im)
            where = f"case {ident}"
            if self.target is None:
                self.target = self._resolve(int(probs.shape[0]), where)
                slots = len(self.target.names)
                self._accs, self._present = [self.plan.accumulators() for _ in range(slots)], [0] * slots
            cases = self.target.cases(ident, probs, to_numpy(t), spacing=spacing, image=img, where=where)
            count, first = self._dims.get(probs.ndim - 1, (0, where))
            self._dims[probs.ndim - 1] = (count + 1, first)
            if batches is None:
                batches, counts = [self.plan.batch() for _ in cases], [0] * len(cases)
            for k, case in enumerate(cases):
                batches[k].add(case)
                counts[k] += bool(case.mask is not None and case.mask.any())
            self.ids.append(ident)
        if batches is None:
            return
        for k, batch in enumerate(batches):
            for acc, part in zip(self._accs[k], batch.result(), strict=True):
                acc.add(self._parts, part)
            self._present[k] += counts[k]
        self._parts += 1

    @property
    def n(self) -> int:
        """Cases seen so far."""
        return len(self.ids)

    def record(self) -> dict[str, Any]:
        """λ̂ (per structure) from the curves seen: the calib.json record of ``segcp calibrate``.
        The curves are freed (the record is kept: a second call returns it); :meth:`reset` starts again."""
        if self._record is not None:
            return self._record
        if self.target is None:
            raise SegcpError("no calibration case seen: the data loader gave no batch")
        absent = [name for name, c in zip(self.target.names, self._present, strict=True) if c == 0]
        if absent and self.target.channels:  # as segcp calibrate: a structure no label holds has no meaningful λ̂
            raise SegcpError(f"no calibration label holds {absent[0]} (labels {self.target.labels}); check labels/label")
        structures = self.target.structures
        ndim = one_ndim(self._dims)
        fitted = fit_structures(self.estimator, self._accs, structures, self._present)
        channels: bool | str = self.channel_axis if self.target.channels else False
        seconds = 0.0 if self._t0 is None else time.perf_counter() - self._t0
        labels_from = (self.labels_from or "channels of the probability stacks") if structures else None
        self._record = job_record(
            fitted,
            label=self.target.label,
            channels=channels,
            source="probs",
            data=self.data,
            ids=self.ids,
            seconds=seconds,
            labels_from=labels_from,
            ndim=ndim,
        )
        return self._record

    def write(self, out: str | os.PathLike[str]) -> dict[str, Any]:
        """:meth:`record`, written atomically to ``out`` (a calib.json ``segcp predict`` and
        :class:`~segcp.monai.ConformalSetsd` read)."""
        rec = self.record()
        write_json(out, rec)
        return rec


def calibrate_loader(
    loader: Iterable[Mapping[str, Any]],
    model: Any = None,
    *,
    out: str | os.PathLike[str] | None = None,
    inferer: Callable[..., Any] | None = None,
    post: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    image_key: str = "image",
    label_key: str = "label",
    pred_key: str = "pred",
    show_progress: bool = True,
    **options: Any,
) -> dict[str, Any]:
    """Calibrate on every batch of a MONAI data loader; returns (and writes to ``out``) the calib.json record.

    Per batch (one in memory): the model's output ``inferer(batch[image_key], model)`` (or
    ``model(batch[image_key])``; without a model the batch already holds ``pred_key``, e.g. probability
    files read by ``LoadImaged``) under ``pred_key``, ``decollate_batch``, ``post`` on each item (e.g.
    ``Compose([Activationsd(pred_key, softmax=True), Invertd(...)])``: the probabilities must lie in
    [0, 1]), then the items' ``pred_key`` and ``label_key`` (and ``image_key`` for image-aware families)
    go to :meth:`ConformalCalibrator.update`. ``options``: :class:`ConformalCalibrator`'s.
    """
    import torch
    from monai.data import decollate_batch

    cal = ConformalCalibrator(**options)
    if model is not None:
        model.eval()
        device = next(iter(model.parameters()), torch.empty(0)).device
    total = len(loader) if hasattr(loader, "__len__") else None  # type: ignore[arg-type]
    for batch in track(loader, "calibrating", enabled=show_progress, total=total):
        batch = dict(batch)
        if model is not None:
            with torch.no_grad():
                x = batch[image_key].to(device)
                batch[pred_key] = inferer(x, model) if inferer is not None else model(x)
        items = decollate_batch(batch, detach=True)
        if post is not None:
            items = [post(item) for item in items]
        images = [item[image_key] for item in items] if cal.reads_image else None
        cal.update([item[pred_key] for item in items], [item[label_key] for item in items], images)
        del batch, items, images
    if out is not None:
        return cal.write(Path(out))
    return cal.record()
