"""``segcp evaluate`` on a data directory: metrics of sets against the ground truth.

The sets are read from a ``predict`` folder, or made on the fly from a calib.json (for sets of
segmentations: exact membership and the metrics of drawn segmentations).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from segcp._version import __version__
from segcp.cases import Case
from segcp.conformal import ConformalSegmenter
from segcp.errors import SegcpError
from segcp.io import DataDir, check_output, index_folder, read_array, read_json, write_json
from segcp.io.datadir import DataSpec, data_inputs
from segcp.jobs.calibrate import _channels_of, load_calibration, load_structures
from segcp.jobs.tasks import Job, datadir, draw_seed, map_ids, mapped_executor, worker_family
from segcp.methods import SegmentationSet
from segcp.parallel import Executor
from segcp.progress import track

__all__ = ["evaluate_dir"]


def _evaluate_drawn(cs: ConformalSegmenter, case: Case, n_draws: int, seed: int) -> dict[str, float]:
    """Membership (exact, the event of the guarantee) and draw metrics of one case's set."""
    from segcp.metrics import draw_metrics

    fam = cs.method_
    item = fam.prepare(case)
    t0 = time.perf_counter()
    score = fam.score(item)
    t1 = time.perf_counter()
    draws = cs.predict(item).sample(n_draws, np.random.default_rng(seed))
    t2 = time.perf_counter()
    out = {"score": score, "covered": float(score <= cs.lambda_)}
    out |= draw_metrics(draws, case.label_map, float(fam.agreement_level), case.n_labels)
    return out | {"seconds_score": t1 - t0, "seconds_draws": t2 - t1}


def _calibrated_metrics(cs: ConformalSegmenter, case: Case, draws: int, seed: int) -> tuple[dict[str, float], bool]:
    """One case's metrics of the set made from the calibration, and whether it was drawn."""
    from segcp.metrics import evaluate_set

    prediction = cs.predict(case)
    if isinstance(prediction, SegmentationSet):
        return _evaluate_drawn(cs, case, draws, seed), True
    mm = case.model_mask if case.probs is not None else None
    return evaluate_set(prediction, case.mask, model_mask=mm, spacing=case.spacing), False


def _evaluate_calibrated_chunk(task: tuple[Job, ConformalSegmenter, int, int, list[tuple[int, str]]]) -> list[tuple[dict[str, float], bool, bool]]:
    """Worker: (metrics, drawn, has spacing) of the sets of a chunk of cases, made from the calibration."""
    job, cs, draws, seed, items = task
    reader = job.reader()
    cs.families_ = {a: worker_family(f) for a, f in cs.families_.items()}  # this task's own copy
    out = []
    for k, ident in items:
        case = reader.read(ident)
        out.append((*_calibrated_metrics(cs, case, draws, draw_seed(seed, k)), case.spacing is not None))
    return out


def _evaluate_calibrated(
    calib: str | os.PathLike[str], data: str | os.PathLike[str], draws: int, seed: int, show_progress: bool,
    out: str | os.PathLike[str] | None, overrides: dict[str, Any] | None, executor: Executor | None = None,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    from segcp.metrics import aggregate

    cs, record = load_calibration(calib, None, overrides)
    fam = cs.method_
    reader = DataDir(data).reader(fam, label=record.get("label"), channels=_channels_of(record))
    if out is not None:
        check_output(out, [calib, *data_inputs(data)])
    per_image: dict[str, dict[str, float]] = {}
    drawn = any_spacing = False
    if executor is None:
        for k, ident in enumerate(track(reader.ids, "evaluating", show_progress)):
            case = reader.read(ident)
            any_spacing |= case.spacing is not None
            per_image[ident], is_drawn = _calibrated_metrics(cs, case, int(draws), draw_seed(seed, k))
            drawn |= is_drawn
    else:
        job = Job(reader.dd.spec, fam, record.get("label"), reader.channels)
        rows = map_ids(executor, _evaluate_calibrated_chunk, (job, cs, int(draws), int(seed)), list(enumerate(reader.ids)), "evaluating", show_progress, chunk_size)
        for ident, (metrics, is_drawn, has_spacing) in zip(reader.ids, rows):
            per_image[ident] = metrics
            drawn |= is_drawn
            any_spacing |= has_spacing
    summary = aggregate(per_image)
    result = {
        "segcp_version": __version__,
        "method": fam.name,
        "params": fam.params(),
        "alpha": float(next(iter(cs.lambdas_))),
        "lambda": cs.lambda_,
        "n": summary["n"],
        "label": record.get("label"),
    }
    if drawn:
        result |= {"beta": fam.agreement_level, "draws": int(draws)}
    else:
        result["distance_units"] = "physical (file spacing)" if any_spacing else "pixels"
    return result | {"mean": summary["mean"], "std": summary["std"], "undefined": summary["undefined"], "per_image": per_image}


def _evaluate_structures(
    calib: str | os.PathLike[str], data: str | os.PathLike[str] | DataSpec, sets: str | os.PathLike[str] | None,
    show_progress: bool, out: str | os.PathLike[str] | None, overrides: dict[str, Any] | None,
) -> dict[str, Any]:
    """Per-structure metrics (and their mean over structures) of a per-structure calibration:
    the sets read from ``sets/<name>/`` when given, else made on the fly."""
    from segcp.metrics import aggregate, evaluate_set
    from segcp.jobs.structures import split_case

    models, record = load_structures(calib, overrides)
    dd = DataDir(data)
    if out is not None:
        check_output(out, [calib, *([sets] if sets is not None else []), *data_inputs(data)])
    with_image = "image" in models[0][1].method_.inputs and sets is None
    ids = dd.ids(["probs", "masks", *(["images"] if with_image else [])])
    axis = _channels_of(record) or "first"
    folders = {s.name: index_folder(Path(sets) / s.name) for s, _ in models} if sets is not None else {}
    per: dict[str, dict[str, dict[str, float]]] = {s.name: {} for s, _ in models}
    any_spacing = False
    for ident in track(ids, "evaluating", show_progress):
        stack = dd.load_stack(ident, channels=axis, with_image=with_image)
        any_spacing |= stack.spacing is not None
        for case, (s, cs) in zip(split_case(stack, [m[0] for m in models]), models):
            if sets is not None:
                if ident not in folders[s.name]:
                    raise SegcpError(f"{Path(sets) / s.name}: no set for id {ident!r}")
                pred, _ = read_array(folders[s.name][ident])
                if pred.shape != case.mask.shape:
                    raise SegcpError(f"{folders[s.name][ident]}: set shape {pred.shape} does not match mask shape {case.mask.shape}")
                pred = pred.astype(bool)
            else:
                pred = np.asarray(cs.predict(case), dtype=bool)
            per[s.name][ident] = evaluate_set(pred, case.mask, model_mask=case.model_mask, spacing=case.spacing)
    structures = {}
    for s, cs in models:
        summ = aggregate(per[s.name])
        structures[s.name] = {"label": s.value, "lambda": cs.lambda_, "alpha": next(iter(cs.lambdas_)), "n": summ["n"],
                              "mean": summ["mean"], "std": summ["std"], "undefined": summ["undefined"], "per_image": per[s.name]}
    metrics = list(next(iter(structures.values()))["mean"])
    overall = {m: float(np.nanmean([st["mean"][m] for st in structures.values()])) for m in metrics}
    return {"segcp_version": __version__, "method": record.get("method"), "n": len(ids),
            "distance_units": "physical (file spacing)" if any_spacing else "pixels",
            "mean_over_structures": overall, "structures": structures}


def evaluate_dir(
    sets: str | os.PathLike[str] | None,
    data: str | os.PathLike[str],
    *,
    label: int | None = None,
    out: str | os.PathLike[str] | None = None,
    show_progress: bool = True,
    calib: str | os.PathLike[str] | None = None,
    draws: int = 100,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    executor: Executor | None = None,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """Metrics of prediction sets against the ground truth of a data directory.

    ``sets`` (a folder of ``<id>.npy`` masks from ``segcp predict``): coverage, FNR, stretch
    (the model's own mask from ``data/probs`` when present), Dice, HD95, ASSD, in the data's
    physical units (NIfTI spacing) or pixels.

    ``calib`` instead of ``sets``: the sets are made from the calibration on the fly. For sets
    of segmentations (consign, aps) each image then gets ``covered`` (the truth is in the set:
    the event of the guarantee, by the same exact test as calibration), ``score`` (λ*_i),
    ``sec`` (some of ``draws`` draws agrees up to β), ``chao`` (Chao1 of the draws),
    ``correlation`` (mean |Pearson| between draws) and ``distinct``.

    ``executor`` (a Dask cluster): the per-image work runs in tasks of ``chunk_size`` ids whose
    workers read the files; the metrics are the same, aggregated in id order.
    """
    if calib is not None and "structures" in read_json(calib):
        result = _evaluate_structures(calib, data, sets, show_progress, out, overrides)
        if out is not None:
            write_json(out, result)
        return result
    executor, owned = mapped_executor(executor, 1)
    try:
        return _evaluate(sets, data, label, out, show_progress, calib, draws, seed, overrides, executor, chunk_size)
    finally:
        if owned and executor is not None:
            executor.close()


def _set_metrics(
    dd: DataDir, ident: str, set_file: Path, label: int | None, channels: bool | str, has_probs: bool
) -> tuple[dict[str, float], bool, bool]:
    """(metrics, the mask holds the label, spacing known) of one set file against its mask."""
    from segcp.metrics import evaluate_set

    mask, spacing = dd.load_mask(ident, label=label)
    pred, _ = read_array(set_file)
    if pred.shape != mask.shape:
        raise SegcpError(f"{set_file}: set shape {pred.shape} does not match mask shape {mask.shape}")
    if pred.dtype.kind not in "biuf" or (pred.dtype != bool and not np.all(np.isin(pred, (0, 1)))):
        raise SegcpError(f"{set_file}: a set must be boolean (or 0/1)")
    model_mask = None
    if has_probs:
        probs, pspacing = dd.load_probs(ident, label=label, channels=channels)
        if probs.shape != mask.shape:
            raise SegcpError(f"{dd.path('probs', ident)}: shape {probs.shape} does not match mask shape {mask.shape}")
        model_mask = probs >= 0.5
        spacing = spacing or pspacing
    return evaluate_set(pred.astype(bool), mask, model_mask=model_mask, spacing=spacing), bool(mask.any()), spacing is not None


def _evaluate_sets_chunk(
    task: tuple[DataSpec, str, int | None, bool | str, bool, list[tuple[str, str]]],
) -> list[tuple[dict[str, float], bool, bool]]:
    """Worker: :func:`_set_metrics` of a chunk of (id, set file)."""
    spec, token, label, channels, has_probs, items = task
    dd = datadir(spec, token)
    return [_set_metrics(dd, ident, Path(f), label, channels, has_probs) for ident, f in items]


def _evaluate(
    sets: str | os.PathLike[str] | None, data: str | os.PathLike[str] | DataSpec, label: int | None, out: str | os.PathLike[str] | None,
    show_progress: bool, calib: str | os.PathLike[str] | None, draws: int, seed: int, overrides: dict[str, Any] | None,
    executor: Executor | None, chunk_size: int | None,
) -> dict[str, Any]:
    if calib is not None:
        if int(draws) < 1:
            raise SegcpError(f"--draws must be at least 1, got {draws}")
        result = _evaluate_calibrated(calib, data, int(draws), int(seed), show_progress, out, overrides, executor, chunk_size)
        if out is not None:
            write_json(out, result)
        return result
    from segcp.metrics import aggregate

    if sets is None:
        raise SegcpError("evaluate needs --sets DIR (sets from `segcp predict`) or --calib FILE (to make them on the fly)")
    sets = Path(sets)
    if not sets.is_dir():
        raise SegcpError(f"{sets}: sets directory does not exist")
    set_files = {i: p for i, p in index_folder(sets).items() if not p.name.endswith(".npz")}
    if not set_files:
        raise SegcpError(f"{sets}: no set files (.npy, .nii.gz, .png)")
    dd = DataDir(data)
    if out is not None:
        check_output(out, [sets, *data_inputs(data)])
    ids = dd.ids(["masks"])
    missing = sorted(set(ids) - set(set_files))
    if missing:
        raise SegcpError(f"{sets}: no set for id {missing[0]!r}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    extra = sorted(set(set_files) - set(ids))
    if extra:
        raise SegcpError(f"{set_files[extra[0]]}: no matching mask in {dd.folder('masks')}")
    has_probs = dd.has("probs")
    if has_probs:
        ids = dd.ids(["masks", "probs"])
    channels = False
    if has_probs:
        channels = dd.probs_have_channels(ids[0])
        if channels and label is None:
            raise SegcpError(f"{dd.path('probs', ids[0])}: class-probability stack; pass --label L")
    per_image: dict[str, dict[str, float]] = {}
    any_spacing = label_seen = False
    if executor is None:
        rows: Iterator[tuple[dict[str, float], bool, bool]] = (
            _set_metrics(dd, ident, set_files[ident], label, channels, has_probs) for ident in track(ids, "evaluating", show_progress)
        )
    else:
        head = (dd.spec, uuid.uuid4().hex, label, channels, has_probs)
        rows = iter(map_ids(executor, _evaluate_sets_chunk, head, [(i, str(set_files[i])) for i in ids], "evaluating", show_progress, chunk_size))
    for ident, (metrics, seen, has_spacing) in zip(ids, rows):
        per_image[ident] = metrics
        label_seen |= seen
        any_spacing |= has_spacing
    if label is not None and not label_seen:
        raise SegcpError(f"{dd.folder('masks')}: no mask holds label {label}; check --label")
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
