"""Directory-level jobs behind the CLI: calibrate, predict, evaluate — for every set family.

Wires the data-directory reader (:meth:`segcp.io.DataDir.reader`), the estimator
(:class:`segcp.conformal.ConformalSegmenter`), the metrics and the atomic writers. Nothing
here knows a method by name: what a family reads, its truth and the kind of set it returns
(a mask, or a :class:`~segcp.methods.SegmentationSet` to draw from) come from the family.
No maths lives here.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segcp._version import __version__
from segcp.calibration import LossCurves, check_calibration_size
from segcp.calibration.compact import GRID_SIZE, CurveAccumulator, Grid
from segcp.cases import Case
from segcp.conformal import ConformalSegmenter, Curves
from segcp.errors import SegcpError
from segcp.execution import Executor, chunk_ranges
from segcp.io import CaseReader, DataDir, atomic_dir, check_output, index_folder, read_array, read_json, suffixes, to_jsonable, write_json, write_set, written_set
from segcp.io.datadir import DataSpec, data_inputs, describe_data
from segcp.io.writers import TMP_PREFIX, check_dir_target
from segcp.jobs import Job, datadir, holds_label, map_ids, mapped_executor, worker_family
from segcp.methods import SegmentationSet, SegmentationSetFamily
from segcp.progress import track

__all__ = ["calibrate_dir", "draw_seed", "evaluate_dir", "load_calibration", "predict_dir"]


def draw_seed(seed: int, k: int) -> int:
    """The seed of the draws of the k-th id (sorted order) of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(k)]).generate_state(1)[0])


def _curve_chunk(task: tuple[Job, list[str], str, float, Grid | None]) -> tuple[Curves, bool]:
    """Worker: read a chunk of cases and return only their curves (compact on the worker when
    a grid is given), and whether a mask held the selected label."""
    job, ids, guarantee, tau, grid = task
    reader, fam = job.reader(), worker_family(job.family)
    acc = CurveAccumulator("exact" if grid is None else "compact", grid)
    seen = False
    for k, ident in enumerate(ids):
        case = reader.read(ident)
        seen |= holds_label(case)
        acc.add(k, fam.loss_curve(case, guarantee, tau))
    return acc.result(), seen


def _mapped_curves(
    cs: ConformalSegmenter, reader: CaseReader, label: int | None, executor: Executor, show_progress: bool, chunk_size: int | None,
) -> Curves:
    """The map step of calibration on ``executor``, reduced by chunk index (any arrival order)."""
    bound, guarantee, form, grid = cs.curve_plan()
    job = Job(reader.dd.spec, bound, label, reader.channels)
    ranges = chunk_ranges(len(reader.ids), executor.workers, chunk_size)
    worker_grid = grid if form == "compact" else None  # auto: exact parts, compacted here if they grow too large
    tasks = [(job, reader.ids[r.start : r.stop], guarantee, float(cs.tau), worker_grid) for r in ranges]
    acc = cs.accumulator()
    for i, (part, seen) in executor.imap(_curve_chunk, tasks, description="calibrating", show_progress=show_progress, weights=[len(r) for r in ranges]):
        acc.add(i, part)
        reader.label_seen |= seen
    return acc.result()


def calibrate_dir(
    data: str | os.PathLike[str],
    *,
    method: str = "threshold",
    alpha: float | list[float] = 0.1,
    label: int | None = None,
    guarantee: str | None = None,
    tau: float = 1.0,
    method_params: dict[str, Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    show_progress: bool = True,
    n_jobs: int = 1,
    executor: Executor | None = None,
    chunk_size: int | None = None,
    curve_form: str = "auto",
    grid_size: int = GRID_SIZE,
    grid_max: float | None = None,
    labels: str | list[str | int] | None = None,
) -> dict[str, Any]:
    """Calibrate ``method`` on every id of a data directory; optionally write calib.json.

    One case at a time is in memory (only the loss curves are kept). With an ``executor``
    (a Dask cluster: :func:`segcp.cluster.open_executor`) or ``n_jobs`` > 1 the map step runs
    in tasks of ``chunk_size`` ids whose workers read the files themselves and send back only
    the curves; the reduce is the same, and so is λ̂, bit for bit. ``curve_form``,
    ``grid_size``, ``grid_max``: exact or compact curves (:class:`ConformalSegmenter`); a
    record calibrated on compact curves says so (``curves``). ``labels`` (``"all"`` or label
    values/names) calibrates one λ̂ per structure of a class-probability stack
    (:mod:`segcp.structures`; in this process: not on an executor). Returns the calibration
    record (what the JSON file holds).
    """
    if labels is not None:
        return _calibrate_structures(data, method=method, alpha=alpha, label=label, labels=labels, guarantee=guarantee, tau=tau,
                                     method_params=method_params, out=out, show_progress=show_progress)
    t0 = time.perf_counter()
    cs = ConformalSegmenter(
        method, alpha, guarantee=guarantee, tau=tau, method_params=method_params,
        curve_form=curve_form, grid_size=grid_size, grid_max=grid_max,
    )
    fam, g, alphas = cs._validate()
    dd = DataDir(data)
    reader = dd.reader(fam, label=label)
    if out is not None:
        check_output(out, data_inputs(data))
    check_calibration_size(len(reader), min(alphas))  # fail before reading any file
    executor, owned = mapped_executor(executor, n_jobs)
    if executor is not None:
        try:
            cs.calibrate_curves(_mapped_curves(cs, reader, label, executor, show_progress, chunk_size))
        finally:
            if owned:
                executor.close()
        reader.require_label_seen()
    else:
        cases = (reader.read(i) for i in reader.ids)
        cs.calibrate(track(cases, "calibrating", show_progress, total=len(reader)))
        reader.require_label_seen()
    record = cs.to_dict() | {
        "label": label,
        "probs_channels": bool(reader.channels),
        "channel_axis": reader.channels or None,
        "source": reader.source,
        "data": describe_data(data),
        "ids": reader.ids,
        "seconds": time.perf_counter() - t0,
    }
    if out is not None:
        write_json(out, record)
    return record


SHARED_FIELDS = ("schema", "schema_version", "segcp_version", "method", "params", "guarantee", "tau", "alpha", "n")


def _calibrate_structures(
    data: str | os.PathLike[str] | DataSpec, *, method: str, alpha: float | list[float], label: int | None,
    labels: str | list[str | int], guarantee: str | None, tau: float, method_params: dict[str, Any] | None,
    out: str | os.PathLike[str] | None, show_progress: bool,
) -> dict[str, Any]:
    """One λ̂ per structure: every case is read once, as its class stack and label map."""
    from segcp.io.datadir import label_names
    from segcp.structures import resolve_structures, split_case

    t0 = time.perf_counter()
    if label is not None:
        raise SegcpError("--label and --labels: give one (--label L for one structure, --labels for several)")
    cs = ConformalSegmenter(method, alpha, guarantee=guarantee, tau=tau, method_params=method_params)
    fam, g, alphas = cs._validate()
    if fam.truth != "mask":
        raise SegcpError(f"--labels is for the pixel-set methods; {fam.name} calibrates sets of multi-class segmentations as a whole")
    dd = DataDir(data)
    if out is not None:
        check_output(out, data_inputs(data))
    with_image = "image" in fam.inputs
    ids = dd.ids(["probs", "masks", *(["images"] if with_image else [])])
    check_calibration_size(len(ids), min(alphas))
    axis = dd.channel_axis(ids[0])
    if axis is None:
        raise SegcpError(f"{dd.path('probs', ids[0])}: --labels needs class-probability stacks (L, *S), one channel per label")
    first = dd.load_stack(ids[0], channels=axis, with_mask=False)
    dj = dd.dataset_json()
    names = label_names(dj) if dj is not None else None
    structures = resolve_structures(labels, names, first.class_probs.shape[0], str(dd.path("probs", ids[0])))
    est = [ConformalSegmenter(method, alpha, guarantee=guarantee, tau=tau, method_params=method_params) for _ in structures]
    curves: list[list[LossCurves]] = [[] for _ in structures]
    present = [0] * len(structures)
    values: set[int] = set()
    for ident in track(ids, "calibrating", show_progress):
        stack = dd.load_stack(ident, channels=axis, with_image=with_image)
        values |= {int(v) for v in np.unique(stack.label_map)}
        for k, case in enumerate(split_case(stack, structures)):
            curves[k].append(est[k].curves([case]))
            present[k] += bool(case.mask.any())
    absent = [s for s, c in zip(structures, present) if c == 0]
    if absent:
        raise SegcpError(
            f"{dd.folder('masks')}: no calibration mask holds label {absent[0].value} ({absent[0].name}); "
            f"labels present: {', '.join(map(str, sorted(values)))}"
        )
    entries = []
    shared: dict[str, Any] = {}
    for s, e, cv, c in zip(structures, est, curves, present):
        rec = e.calibrate_curves(LossCurves.concat(cv)).to_dict()
        shared = {k: rec[k] for k in SHARED_FIELDS}
        entries.append(s.to_dict() | {"images_with_structure": c} | {k: v for k, v in rec.items() if k not in SHARED_FIELDS})
    record = shared | {
        "structures": entries,
        "labels_from": str(dj) if dj is not None else "channels of the probability stacks",
        "label": None,
        "probs_channels": True,
        "channel_axis": axis,
        "source": "probs",
        "data": dd.spec.describe(),
        "ids": ids,
        "seconds": time.perf_counter() - t0,
    }
    if out is not None:
        write_json(out, record)
    return record


def load_structures(path: str | os.PathLike[str], overrides: dict[str, Any] | None = None) -> tuple[list[tuple[Any, ConformalSegmenter]], dict[str, Any]]:
    """A per-structure calibration record: [(Structure, calibrated segmenter)], record."""
    from segcp.structures import Structure

    record = read_json(path)
    entries = record.get("structures")
    if not isinstance(entries, list) or not entries:
        raise SegcpError(f"{path}: field 'structures' must be a non-empty list")
    out = []
    for k, e in enumerate(entries):
        if not isinstance(e, dict) or not isinstance(e.get("label"), int) or isinstance(e.get("label"), bool) or not isinstance(e.get("name"), str):
            raise SegcpError(f"{path}: structures[{k}] must be an object with an integer 'label' and a 'name'")
        sub = {k2: record[k2] for k2 in SHARED_FIELDS if k2 in record} | {k2: v for k2, v in e.items() if k2 not in ("label", "name", "images_with_structure")}
        out.append((Structure(e["label"], e["name"]), ConformalSegmenter.from_dict(sub, where=f"{path} (structure {e['name']})", overrides=overrides)))
    return out, record


def load_calibration(
    path: str | os.PathLike[str], alpha: float | None = None, overrides: dict[str, Any] | None = None
) -> tuple[ConformalSegmenter, dict[str, Any]]:
    """Read a calib.json written by :func:`calibrate_dir`: (single-α segmenter, record).

    ``overrides`` are run-time options of the family (a calib file never chooses a path).
    """
    record = read_json(path)
    cs = ConformalSegmenter.from_dict(record, where=str(path), overrides=overrides)
    label = record.get("label")
    if label is not None and (isinstance(label, bool) or not isinstance(label, int)):
        raise SegcpError(f"{path}: field 'label' must be an integer or null, got {label!r}")
    channels = record.get("probs_channels", False)
    if not isinstance(channels, bool):
        raise SegcpError(f"{path}: field 'probs_channels' must be true or false, got {channels!r}")
    axis = record.get("channel_axis")
    if axis not in (None, "first", "last") or (axis is not None and not channels):
        raise SegcpError(f"{path}: field 'channel_axis' must be \"first\", \"last\" or null (with probs_channels true), got {axis!r}")
    if len(cs.lambdas_) > 1:
        if alpha is None:
            raise SegcpError(f"{path}: calibrated at several alphas ({', '.join(f'{a:g}' for a in cs.lambdas_)}); pass --alpha")
        cs = cs.at(alpha)
    elif alpha is not None:
        cs = cs.at(alpha)
    return cs, record


def _channels_of(record: dict[str, Any]) -> bool | str:
    """How the calibration read class stacks: False, "first" or "last" (validated by load_calibration)."""
    if not record.get("probs_channels", False):
        return False
    return record.get("channel_axis") or "first"


def _set_array(prediction: Any, draws: int, seed: int) -> np.ndarray:
    """What a prediction set is written as: the mask, or ``draws`` segmentations drawn from it."""
    if isinstance(prediction, SegmentationSet):
        d = prediction.sample(draws, np.random.default_rng(seed))
        return d.astype(np.uint8 if d.max(initial=0) < 256 else np.int32)
    return np.asarray(prediction, dtype=bool)


#: The hidden record of a resumable ``predict`` folder (what made its sets).
PREDICT_MANIFEST = ".segcp-predict.json"


def _write_prediction(folder: Path, ident: str, case: Case, fam: Any, lam: float, draws: int, seed: int, k: int) -> Path:
    """Predict case ``k`` of a job and write its set, atomically, into ``folder`` (which must
    exist): a mask on the input's grid (NIfTI when the input is), or the drawn segmentations."""
    arr = _set_array(fam.predict(case, lam), draws, draw_seed(seed, k))
    return write_set(folder, ident, arr, case.geometry if arr.dtype == bool else None, clean_stale=False)


def _predict_chunk(task: tuple[Job, list[tuple[int, str]], float, int, int, str]) -> int:
    """Worker: read a chunk of cases and write each one's set into ``folder``."""
    job, items, lam, draws, seed, folder = task
    reader, fam = job.reader(), worker_family(job.family)
    for k, ident in items:
        _write_prediction(Path(folder), ident, reader.read(ident), fam, lam, draws, seed, k)
    return len(items)


def complete_set(path: Path, draws: int | None) -> bool:
    """True when ``path`` is a whole ``.npy`` set: a valid header, every byte of the array, and
    the dtype of a set (boolean mask; ``draws`` given: ``draws`` segmentations of integers)."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = header(f)
            offset = f.tell()
        size = os.path.getsize(path)
    except (OSError, ValueError):
        return False
    if size != offset + math.prod(shape) * dtype.itemsize:
        return False
    if draws is None:
        return dtype == np.bool_
    return dtype.kind in "iu" and len(shape) >= 3 and shape[0] == draws


def _manifest(calib: str | os.PathLike[str], cs: ConformalSegmenter, record: dict[str, Any], draws: int, seed: int) -> dict[str, Any]:
    """What the sets of a resumable folder depend on (the same manifest ⇒ the same sets)."""
    drawn = isinstance(cs.method_, SegmentationSetFamily)
    return _as_json({
        "calib_sha256": hashlib.sha256(Path(calib).read_bytes()).hexdigest(),
        "method": cs.method_.name,
        "params": cs.method_.params(),
        "alpha": float(next(iter(cs.lambdas_))),
        "lambda": cs.lambda_,
        "label": record.get("label"),
        "probs_channels": bool(record.get("probs_channels", False)),
        "channel_axis": record.get("channel_axis"),
        "draws": int(draws) if drawn else None,
        "seed": int(seed) if drawn else None,
    })


def _resume_folder(out: Path, manifest: dict[str, Any], ids: Sequence[str]) -> set[str]:
    """Prepare ``out`` for a resumable run; the ids whose sets are already there and whole.

    A new or empty folder gets the manifest. A folder written by an earlier resumable run
    must carry the same manifest (else: a one-line error — its sets were made differently);
    any other non-empty folder is refused. Temporaries of dead writers are removed.
    """
    check_dir_target(out, "merge")
    mpath = out / PREDICT_MANIFEST
    if out.is_dir() and any(p.name != PREDICT_MANIFEST and not p.name.startswith(TMP_PREFIX) for p in out.iterdir()):
        if not mpath.is_file():
            raise SegcpError(f"{out}: not a folder of a resumable segcp predict (no {PREDICT_MANIFEST}); choose a new folder or pass --overwrite")
        old = read_json(mpath)
        if old != manifest:
            diff = sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k))
            raise SegcpError(f"{out}: its sets were made with another {', '.join(diff)}; --resume needs the same calibration and options (or --overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    write_json(mpath, manifest)  # atomic; also removes the temporaries of dead writers in out
    draws = manifest["draws"]
    # sets on an input's grid (NIfTI, NRRD, ...) are only ever written by an atomic rename: present means whole
    return {i for i in ids if complete_set(out / f"{i}.npy", draws) or (draws is None and written_set(out, i) is not None)}


def _as_json(obj: Any) -> Any:
    """``obj`` as it reads back from JSON (tuples → lists, NaN → None)."""
    return json.loads(json.dumps(to_jsonable(obj)))


def predict_dir(
    calib: str | os.PathLike[str],
    data: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    show_progress: bool = True,
    draws: int = 100,
    seed: int = 0,
    alpha: float | None = None,
    overwrite: bool = False,
    overrides: dict[str, Any] | None = None,
    combined: bool = False,
    resume: bool = False,
    executor: Executor | None = None,
    chunk_size: int | None = None,
) -> list[Path]:
    """Write one set per id, ``out/<id>``: a mask on the model output's grid — a uint8 NIfTI
    with the input's affine and header when the input is NIfTI (or nnU-Net's NPZ + NIfTI), a
    boolean ``.npy`` otherwise — or, for sets of segmentations, ``draws`` segmentations
    (S, *spatial) drawn from it (``.npy``). A per-structure calibration writes one folder per
    structure (and, with ``combined``, one bit-coded file per case).

    All sets are written into a temporary sibling folder that replaces ``out`` whole only when
    every id succeeded, so a failure (or an interruption) leaves no partial output. ``out``
    must not exist or be empty, unless ``overwrite`` (then the old folder is replaced, never
    merged with). ``overrides``: run-time options of the family (e.g. the encoder's location).

    ``resume``: each set is written into ``out`` itself, atomically, as soon as it is made, so
    an interrupted run leaves only whole sets; rerunning with ``resume`` skips the sets that
    are already there and whole (and were made by the same calibration and options: the
    folder's hidden manifest) and makes the rest. ``executor`` (a Dask cluster): tasks of
    ``chunk_size`` ids whose workers read the files and write the sets themselves (``out``
    must be on a file system the workers see).
    """
    if int(draws) < 1:
        raise SegcpError(f"--draws must be at least 1, got {draws}")
    if resume and overwrite:
        raise SegcpError("--resume continues a folder and --overwrite replaces it: give one of them")
    out = Path(out)
    check_output(out, [calib, *data_inputs(data)])
    if "structures" in read_json(calib):
        if resume or (executor is not None and executor.workers > 1):
            raise SegcpError(f"{calib}: a per-structure calibration predicts in one process, without --resume or a cluster")
        return _predict_structures(calib, data, out, show_progress=show_progress, overwrite=overwrite, overrides=overrides, combined=combined)
    cs, record = load_calibration(calib, alpha, overrides)
    reader = DataDir(data).reader(cs.method_, label=record.get("label"), with_truth=False, channels=_channels_of(record))
    if resume:
        done = _resume_folder(out, _manifest(calib, cs, record, int(draws), int(seed)), reader.ids)
        folder_cm: contextlib.AbstractContextManager[Path] = contextlib.nullcontext(out)
    else:
        done = set()
        folder_cm = atomic_dir(out, existing="overwrite" if overwrite else "refuse")
    todo = [(k, ident) for k, ident in enumerate(reader.ids) if ident not in done]
    executor, owned = mapped_executor(executor, 1)
    try:
        with folder_cm as folder:
            if executor is None:
                for k, ident in track(todo, "predicting", show_progress):
                    _write_prediction(folder, ident, reader.read(ident), cs.method_, cs.lambda_, int(draws), int(seed), k)
            else:
                job = Job(reader.dd.spec, cs.method_, record.get("label"), reader.channels, with_truth=False)
                ranges = chunk_ranges(len(todo), executor.workers, chunk_size)
                tasks = [(job, todo[r.start : r.stop], float(cs.lambda_), int(draws), int(seed), str(folder)) for r in ranges]
                for _ in executor.imap(_predict_chunk, tasks, description="predicting", show_progress=show_progress, weights=[len(r) for r in ranges]):
                    pass
    finally:
        if owned and executor is not None:
            executor.close()
    files = index_folder(out)
    return [files[ident] for ident in reader.ids]


def _predict_structures(
    calib: str | os.PathLike[str], data: str | os.PathLike[str] | DataSpec, out: Path, *, show_progress: bool, overwrite: bool,
    overrides: dict[str, Any] | None, combined: bool,
) -> list[Path]:
    """One folder of sets per structure (``out/<name>/<id>``), and with ``combined`` one file per
    case whose voxel value has bit k set when the voxel is in structure k's set (legend in
    ``out/structures.json``)."""
    from segcp.structures import split_case

    models, record = load_structures(calib, overrides)
    structures = [s for s, _ in models]
    if combined and len(structures) > 16:
        raise SegcpError("--combined holds up to 16 structures (uint16 bits)")
    dd = DataDir(data)
    with_image = "image" in models[0][1].method_.inputs
    ids = dd.ids(["probs", *(["images"] if with_image else [])])
    axis = _channels_of(record) or "first"
    written = []
    with atomic_dir(out, existing="overwrite" if overwrite else "refuse") as tmp:
        for s in structures:
            (tmp / s.name).mkdir()
        if combined:
            (tmp / "combined").mkdir()
        for ident in track(ids, "predicting", show_progress):
            stack = dd.load_stack(ident, channels=axis, with_mask=False, with_image=with_image)
            bits = None
            for k, (case, (s, cs)) in enumerate(zip(split_case(stack, structures), models)):
                mask = np.asarray(cs.predict(case), dtype=bool)
                written.append(out / s.name / write_set(tmp / s.name, ident, mask, case.geometry).name)
                if combined:
                    bits = (np.zeros(mask.shape, np.uint8 if len(structures) <= 8 else np.uint16) if bits is None else bits)
                    bits |= (mask.astype(bits.dtype) << k)
            if combined and bits is not None:
                write_set(tmp / "combined", ident, bits, stack.geometry)
        if combined:
            write_json(tmp / "structures.json", {"bits": {str(1 << k): s.to_dict() for k, s in enumerate(structures)},
                                                 "meaning": "voxel value = sum of 2^k over the structures k whose set holds the voxel"})
    return written


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
    from segcp.structures import split_case

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
