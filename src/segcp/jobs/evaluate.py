"""``segcp evaluate`` on a data directory: metrics of sets against the ground truth.

The sets are read from a ``predict`` folder, or made on the fly from a calib.json (for sets of
segmentations: exact membership and the metrics of drawn segmentations); a per-structure
calibration is evaluated structure by structure. The per-image work runs on an executor
(:mod:`segcp.parallel`); the metrics come back to the client and are aggregated in id order,
so the result is the same on every executor.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from segcp._version import __version__
from segcp.cases import Case
from segcp.conformal import ConformalSegmenter
from segcp.errors import SegcpError
from segcp.io import DataDir, check_output, index_folder, read_array, suffixes, write_json
from segcp.io.datadir import DataSpec, data_inputs
from segcp.io.formats.base import SPACING_UNIT
from segcp.jobs.tasks import Job, calibrated_models, check_seed, draw_seed, job_of, map_ids, worker_family
from segcp.methods import SegmentationSet, SegmentationSetFamily
from segcp.parallel import Executor, InProcessExecutor, check_chunk_size
from segcp.record import read_calibration

__all__ = ["evaluate_dir"]

Metrics = dict[str, float]


def read_set(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A set written by ``segcp predict`` (or by hand) as a boolean mask of ``shape``, or a
    one-line error naming the file."""
    pred, _ = read_array(path)
    if pred.shape != shape:
        raise SegcpError(f"{path}: set shape {pred.shape} does not match mask shape {shape}")
    if pred.dtype.kind not in "biuf" or (pred.dtype != bool and not np.all(np.isin(pred, (0, 1)))):
        raise SegcpError(f"{path}: a set must be boolean (or 0/1)")
    return pred.astype(bool)


def _evaluate_drawn(cs: ConformalSegmenter, case: Case, n_draws: int, seed: int) -> Metrics:
    """Membership (exact, the event of the guarantee) and draw metrics of one case's set."""
    from segcp.metrics import draw_metrics

    fam = cs.method_
    assert isinstance(fam, SegmentationSetFamily) and fam.agreement_level is not None
    item = fam.prepare(case)
    t0 = time.perf_counter()
    score = fam.score(item)
    t1 = time.perf_counter()
    draws = cs.predict(item).sample(n_draws, np.random.default_rng(seed))
    t2 = time.perf_counter()
    out = {"score": score, "covered": float(score <= cs.lambda_)}
    out |= draw_metrics(draws, case.label_map, float(fam.agreement_level), case.n_labels)
    return out | {"seconds_score": t1 - t0, "seconds_draws": t2 - t1}


def _case_metrics(cs: ConformalSegmenter, case: Case, set_file: Path | None, draws: int, seed: int) -> tuple[Metrics, bool]:
    """One case's metrics — of its set read from ``set_file``, or made from the calibration —
    and whether the set was drawn (a set of segmentations)."""
    from segcp.metrics import evaluate_set

    if set_file is not None:
        assert case.mask is not None  # a pixel-set family's case read with its truth
        mm = case.model_mask if case.probs is not None else None
        return evaluate_set(read_set(set_file, case.mask.shape), case.mask, model_mask=mm, spacing=case.spacing), False
    prediction = cs.predict(case)
    if isinstance(prediction, SegmentationSet):
        return _evaluate_drawn(cs, case, draws, seed), True
    assert case.mask is not None  # a pixel-set family's case read with its truth
    mm = case.model_mask if case.probs is not None else None
    return evaluate_set(prediction, case.mask, model_mask=mm, spacing=case.spacing), False


def _calibrated_chunk(
    task: tuple[Job, list[ConformalSegmenter], list[dict[str, str]] | None, int, int, list[tuple[int, str]]],
) -> list[tuple[list[tuple[Metrics, bool]], bool]]:
    """Worker: per id of a chunk, the metrics of each structure's set (and whether it was
    drawn), and whether the id's files carry a spacing."""
    job, models, set_files, draws, seed, items = task
    models = [m.at(next(iter(m.lambdas_))) for m in models]  # this task's own copies
    for m in models:
        m.families_ = {a: worker_family(f) for a, f in m.families_.items()}
    out = []
    for k, ident in items:
        cases = job.read(ident)
        files = [None if set_files is None else Path(set_files[s][ident]) for s in range(len(cases))]
        rows = [_case_metrics(m, c, f, draws, draw_seed(seed, k)) for m, c, f in zip(models, cases, files)]
        out.append((rows, cases[0].spacing is not None))
    return out


def _set_folders(sets: Path, subs: list[str], ids: list[str]) -> list[dict[str, str]]:
    """Per structure folder of ``sets`` (``""``: ``sets`` itself), the set file of every id."""
    out = []
    for sub in subs:
        folder = sets / sub if sub else sets
        files = index_folder(folder)
        missing = [i for i in ids if i not in files]
        if missing:
            raise SegcpError(f"{folder}: no set for id {missing[0]!r}")
        out.append({i: str(files[i]) for i in ids})
    return out


def _evaluate_calibrated(
    calib: str | os.PathLike[str], data: str | os.PathLike[str] | DataSpec, sets: str | os.PathLike[str] | None, draws: int,
    seed: int, show_progress: bool, out: str | os.PathLike[str] | None, overrides: dict[str, Any] | None, executor: Executor,
    chunk_size: int | None,
) -> dict[str, Any]:
    """Metrics of the sets of a calibration, made on the fly or read from ``sets``."""
    from segcp.metrics import aggregate

    cal = read_calibration(calib, overrides)
    models = calibrated_models(cal)
    fam = models[0].method_
    if out is not None:
        check_output(out, [calib, *([sets] if sets is not None else []), *data_inputs(data)])
    dd = DataDir(data)
    job, ids = job_of(dd, cal, fam, with_truth=True, images=sets is None)
    subs = [s.name for s in cal.structures] or [""]
    if sets is not None and not cal.per_structure:
        raise SegcpError("evaluate: --calib with --sets is for per-structure calibrations; give --sets alone (and --label) for one structure")
    set_files = _set_folders(Path(sets), subs, ids) if sets is not None else None
    rows = map_ids(executor, _calibrated_chunk, (job, models, set_files, int(draws), seed), list(enumerate(ids)), "evaluating", show_progress, chunk_size)
    any_spacing = any(has for _, has in rows)
    per: list[dict[str, Metrics]] = [{} for _ in subs]
    drawn = False
    for ident, (slot_rows, _) in zip(ids, rows):
        for k, (metrics, is_drawn) in enumerate(slot_rows):
            per[k][ident] = metrics
            drawn |= is_drawn
    units = SPACING_UNIT if any_spacing else "pixels"
    if cal.per_structure:
        structures = {}
        for s, cs, per_image in zip(cal.structures, models, per):
            summ = aggregate(per_image)
            structures[s.name] = {"label": s.value, "lambda": cs.lambda_, "alpha": next(iter(cs.lambdas_)), "n": summ["n"],
                                  "mean": summ["mean"], "std": summ["std"], "undefined": summ["undefined"], "per_image": per_image}
        metrics = list(next(iter(structures.values()))["mean"])
        overall = {m: float(np.nanmean([st["mean"][m] for st in structures.values()])) for m in metrics}
        return {"segcp_version": __version__, "method": cal.record.get("method"), "n": len(ids), "distance_units": units,
                "mean_over_structures": overall, "structures": structures}
    cs = models[0]
    summary = aggregate(per[0])
    result = {
        "segcp_version": __version__,
        "method": fam.name,
        "params": fam.params(),
        "alpha": float(next(iter(cs.lambdas_))),
        "lambda": cs.lambda_,
        "n": summary["n"],
        "label": cal.label,
    }
    if drawn:
        result |= {"beta": fam.agreement_level, "draws": int(draws)}
    else:
        result["distance_units"] = units
    return result | {"mean": summary["mean"], "std": summary["std"], "undefined": summary["undefined"], "per_image": per[0]}


def evaluate_dir(
    sets: str | os.PathLike[str] | None,
    data: str | os.PathLike[str] | DataSpec,
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
    ``correlation`` (mean |Pearson| between draws) and ``distinct``. A per-structure
    calibration gives each structure's metrics and their mean, of the sets in
    ``sets/<name>/`` when ``sets`` is given, else made on the fly.

    ``executor`` (:func:`segcp.parallel.open_executor`; None: this process): the per-image work
    runs in tasks of ``chunk_size`` ids whose workers read the files; the metrics are the
    same, aggregated in id order.
    """
    seed = check_seed(seed)
    check_chunk_size(chunk_size)
    ex = executor if executor is not None else InProcessExecutor()
    if calib is not None:
        if int(draws) < 1:
            raise SegcpError(f"--draws must be at least 1, got {draws}")
        result = _evaluate_calibrated(calib, data, sets, int(draws), seed, show_progress, out, overrides, ex, chunk_size)
    else:
        result = _evaluate_sets(sets, data, label, out, show_progress, ex, chunk_size)
    if out is not None:
        write_json(out, result)
    return result


def _set_metrics(
    dd: DataDir, ident: str, set_file: Path, label: int | None, channels: bool | str, has_probs: bool
) -> tuple[Metrics, bool, bool]:
    """(metrics, the mask holds the label, spacing known) of one set file against its mask."""
    from segcp.metrics import evaluate_set

    mask, spacing = dd.load_mask(ident, label=label)
    pred = read_set(set_file, mask.shape)
    model_mask = None
    if has_probs:
        probs, pspacing = dd.load_probs(ident, label=label, channels=channels)
        if probs.shape != mask.shape:
            raise SegcpError(f"{dd.path('probs', ident)}: shape {probs.shape} does not match mask shape {mask.shape}")
        model_mask = probs >= 0.5
        spacing = spacing or pspacing
    return evaluate_set(pred, mask, model_mask=model_mask, spacing=spacing), bool(mask.any()), spacing is not None


def _evaluate_sets_chunk(task: tuple[Job, bool, list[tuple[str, str]]]) -> list[tuple[Metrics, bool, bool]]:
    """Worker: :func:`_set_metrics` of a chunk of (id, set file)."""
    job, has_probs, items = task
    dd = job.datadir()
    return [_set_metrics(dd, ident, Path(f), job.label, job.channels or False, has_probs) for ident, f in items]


def _evaluate_sets(
    sets: str | os.PathLike[str] | None, data: str | os.PathLike[str] | DataSpec, label: int | None, out: str | os.PathLike[str] | None,
    show_progress: bool, executor: Executor, chunk_size: int | None,
) -> dict[str, Any]:
    """Metrics of the sets of a ``predict`` folder against the masks."""
    from segcp.metrics import aggregate

    if sets is None:
        raise SegcpError("evaluate needs --sets DIR (sets from `segcp predict`) or --calib FILE (to make them on the fly)")
    sets = Path(sets)
    if not sets.is_dir():
        raise SegcpError(f"{sets}: sets directory does not exist")
    set_files = {i: p for i, p in index_folder(sets).items() if not p.name.endswith(".npz")}
    if not set_files:
        raise SegcpError(f"{sets}: no set files ({', '.join(x for x in suffixes() if x != '.npz')})")
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
    channels: bool | str = False
    if has_probs:
        channels = dd.channel_axis(ids[0]) or False  # "first" (L, *S) or "last" (*S, L)
        if channels and label is None:
            raise SegcpError(f"{dd.path('probs', ids[0])}: class-probability stack; pass --label L")
    head = (Job(dd.spec, None, label, channels).share(dd), has_probs)
    rows = map_ids(executor, _evaluate_sets_chunk, head, [(i, str(set_files[i])) for i in ids], "evaluating", show_progress, chunk_size)
    per_image: dict[str, Metrics] = {}
    any_spacing = label_seen = False
    for ident, (metrics, seen, has_spacing) in zip(ids, rows):
        per_image[ident] = metrics
        label_seen |= seen
        any_spacing |= has_spacing
    if label is not None and not label_seen:
        raise SegcpError(f"{dd.folder('masks')}: no mask holds label {label}; check --label")
    summary = aggregate(per_image)
    return {
        "segcp_version": __version__,
        "n": summary["n"],
        "label": label,
        "distance_units": SPACING_UNIT if any_spacing else "pixels",
        "mean": summary["mean"],
        "std": summary["std"],
        "undefined": summary["undefined"],
        "per_image": per_image,
    }
