"""Directory-level jobs behind the CLI: calibrate, predict, evaluate.

Wires the data-directory reader, the methods, calibration and the metrics, with progress
bars and atomic result files. No maths lives here.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from segcp import __version__
from segcp.calibration import check_alpha, check_calibration_size
from segcp.conformal import ConformalSegmenter
from segcp.errors import SegcpError
from segcp.io import DataDir, index_folder, read_array, read_json, write_json
from segcp.metrics import aggregate, evaluate_set

__all__ = ["calibrate_dir", "predict_dir", "evaluate_dir", "progress"]

T = TypeVar("T")


def progress(items: Sequence[T], description: str, enabled: bool = True) -> Iterator[T]:
    """Iterate with a rich progress bar on stderr (when ``enabled`` and stderr is a terminal)."""
    from rich.console import Console

    console = Console(stderr=True)
    if not enabled or len(items) < 2 or not console.is_terminal:
        yield from items
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    cols = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*cols, console=console, transient=True) as bar:
        task = bar.add_task(description, total=len(items))
        for item in items:
            yield item
            bar.advance(task)


def _channels(dd: DataDir, ids: Sequence[str], label: int | None) -> bool:
    """Whether probs/ holds (L, *S) class stacks (decided on the first id, checked on all)."""
    channels = dd.probs_have_channels(ids[0])
    if channels and label is None:
        raise SegcpError(
            f"{dd.path('probs', ids[0])}: class-probability stack (one more axis than the mask); pass --label L"
        )
    return channels


def calibrate_dir(
    data: str | os.PathLike[str],
    *,
    method: str = "threshold",
    alpha: float = 0.1,
    label: int | None = None,
    guarantee: str = "fnr",
    tau: float = 1.0,
    method_params: dict[str, Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Calibrate ``method`` on every id of a data directory; optionally write calib.json.

    Returns the calibration record (what the JSON file holds).
    """
    if method in ("consign", "aps"):  # sets of segmentations from samples/ (segcp.multiclass)
        from segcp.multiclass.jobs import calibrate_samples_dir

        return calibrate_samples_dir(
            data, method=method, alpha=alpha, method_params=method_params, out=out, show_progress=show_progress
        )
    a = check_alpha(alpha)
    cs = ConformalSegmenter(method, alpha=a, guarantee=guarantee, tau=tau, method_params=method_params)
    m = cs._validate()
    dd = DataDir(data)
    needs_image = getattr(m, "needs_image", False)
    ids = dd.ids(["probs", "masks"] + (["images"] if needs_image else []))
    check_calibration_size(len(ids), a)  # fail before reading any file
    channels = _channels(dd, ids, label)
    cases = (dd.load_case(i, label=label, channels=channels, with_image=needs_image) for i in ids)
    curves = cs.curves(progress_gen(cases, len(ids), "calibrating", show_progress))
    cs.calibrate_curves(curves)
    record = cs.to_dict() | {
        "label": label,
        "probs_channels": channels,
        "data": str(Path(data)),
        "ids": ids,
    }
    if out is not None:
        write_json(out, record)
    return record


def progress_gen(gen: Iterable[T], total: int, description: str, enabled: bool) -> Iterator[T]:
    """Progress over a generator of known length (items are produced lazily)."""
    if not enabled or total < 2:
        yield from gen
        return
    it = iter(gen)
    for _ in progress(range(total), description, enabled):
        yield next(it)


def load_calibration(path: str | os.PathLike[str]) -> tuple[ConformalSegmenter, dict[str, Any]]:
    """Read a calib.json written by :func:`calibrate_dir`."""
    record = read_json(path)
    return ConformalSegmenter.from_dict(record, where=str(path)), record


def predict_dir(
    calib: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    show_progress: bool = True,
) -> list[Path]:
    """Write one boolean set per id, ``out/<id>.npy``, shaped like the probability map.

    All sets are written into a temporary folder first and moved into ``out`` only when
    every id succeeded, so a failure leaves no partial output.
    """
    if read_json(calib).get("method") in ("consign", "aps"):
        raise SegcpError(f"{calib}: consign/aps calibrations give sets of segmentations; draw from them with `segcp evaluate --calib {calib} --draws S`")
    cs, record = load_calibration(calib)
    label = record.get("label")
    channels = bool(record.get("probs_channels", False))
    dd = DataDir(data)
    needs_image = getattr(cs.method_, "needs_image", False)
    ids = dd.ids(["probs"] + (["images"] if needs_image else []))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise SegcpError(f"{out}: exists and is not a directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        for ident in progress(ids, "predicting", show_progress):
            case = dd.load_case(ident, label=label, channels=channels, with_mask=False, with_image=needs_image)
            np.save(tmp / f"{ident}.npy", cs.predict(case), allow_pickle=False)
        out.mkdir(exist_ok=True)
        written = []
        for ident in ids:
            dest = out / f"{ident}.npy"
            os.replace(tmp / f"{ident}.npy", dest)
            written.append(dest)
        return written
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def evaluate_dir(
    sets: str | os.PathLike[str] | None,
    data: str | os.PathLike[str],
    *,
    label: int | None = None,
    out: str | os.PathLike[str] | None = None,
    show_progress: bool = True,
    calib: str | os.PathLike[str] | None = None,
    draws: int = 100,
) -> dict[str, Any]:
    """Metrics of the sets in ``sets/<id>.npy`` against ``data/masks``.

    Stretch uses the model's own mask (probability ≥ 0.5 from ``data/probs``) when present.
    Distances are in the data's physical units (NIfTI spacing) or pixels.

    With ``calib`` (a consign/aps calibration) instead: draw ``draws`` segmentations per image
    from the calibrated sets and report coverage, SEC, Chao1 and correlation
    (:func:`segcp.multiclass.jobs.evaluate_samples_dir`).
    """
    if calib is not None:
        from segcp.multiclass.jobs import evaluate_samples_dir

        return evaluate_samples_dir(calib, data, draws=draws, out=out, show_progress=show_progress)
    if sets is None:
        raise SegcpError("evaluate needs --sets DIR (sets from `segcp predict`) or --calib FILE (a consign/aps calibration)")
    sets = Path(sets)
    if not sets.is_dir():
        raise SegcpError(f"{sets}: sets directory does not exist")
    set_files = {i: p for i, p in index_folder(sets).items() if p.suffix == ".npy"}
    if not set_files:
        raise SegcpError(f"{sets}: no .npy set files")
    dd = DataDir(data)
    ids = dd.ids(["masks"])
    missing = sorted(set(ids) - set(set_files))
    if missing:
        raise SegcpError(f"{sets}: no set for id {missing[0]!r}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    extra = sorted(set(set_files) - set(ids))
    if extra:
        raise SegcpError(f"{set_files[extra[0]]}: no matching mask in {dd.root / 'masks'}")
    has_probs = dd.has("probs")
    if has_probs:
        ids = dd.ids(["masks", "probs"])
    channels = False
    if has_probs:
        channels = dd.probs_have_channels(ids[0])
        if channels and label is None:
            raise SegcpError(f"{dd.path('probs', ids[0])}: class-probability stack; pass --label L")
    per_image: dict[str, dict[str, float]] = {}
    any_spacing = False
    for ident in progress(ids, "evaluating", show_progress):
        mask, spacing = dd.load_mask(ident, label=label)
        pred, _ = read_array(set_files[ident])
        if pred.shape != mask.shape:
            raise SegcpError(f"{set_files[ident]}: set shape {pred.shape} does not match mask shape {mask.shape}")
        if pred.dtype != bool and not np.all(np.isin(pred, (0, 1))):
            raise SegcpError(f"{set_files[ident]}: a set must be boolean (or 0/1)")
        model_mask = None
        if has_probs:
            probs, pspacing = dd.load_probs(ident, label=label, channels=channels)
            if probs.shape != mask.shape:
                raise SegcpError(f"{dd.path('probs', ident)}: shape {probs.shape} does not match mask shape {mask.shape}")
            model_mask = probs >= 0.5
            spacing = spacing or pspacing
        any_spacing |= spacing is not None
        per_image[ident] = evaluate_set(pred.astype(bool), mask, model_mask=model_mask, spacing=spacing)
    summary = aggregate(per_image)
    result = {
        "segcp_version": __version__,
        "n": summary["n"],
        "label": label,
        "distance_units": "physical (file spacing)" if any_spacing else "pixels",
        "mean": summary["mean"],
        "std": summary["std"],
        "undefined": summary["undefined"],
        "per_image": per_image,
    }
    if out is not None:
        write_json(out, result)
    return result
