"""Directory-level jobs behind the CLI: calibrate, predict, evaluate — for every set family.

Wires the data-directory reader (:meth:`segcp.io.DataDir.reader`), the estimator
(:class:`segcp.conformal.ConformalSegmenter`), the metrics and the atomic writers. Nothing
here knows a method by name: what a family reads, its truth and the kind of set it returns
(a mask, or a :class:`~segcp.methods.SegmentationSet` to draw from) come from the family.
No maths lives here.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from segcp._version import __version__
from segcp.calibration import LossCurves, check_calibration_size
from segcp.cases import Case
from segcp.conformal import ConformalSegmenter
from segcp.errors import SegcpError
from segcp.execution import parallel_map, resolve_jobs
from segcp.io import DataDir, atomic_dir, check_output, index_folder, read_array, read_json, write_json, write_set
from segcp.io.datadir import DataSpec, data_inputs, describe_data
from segcp.methods import SegmentationSet, SetFamily
from segcp.progress import track

__all__ = ["calibrate_dir", "draw_seed", "evaluate_dir", "load_calibration", "predict_dir"]


def draw_seed(seed: int, k: int) -> int:
    """The seed of the draws of the k-th id (sorted order) of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(k)]).generate_state(1)[0])


@functools.lru_cache(maxsize=4)
def _datadir(spec: DataSpec) -> DataDir:
    return DataDir(spec)


def _curve_task(task: tuple[DataSpec, str, SetFamily, int | None, bool | str, str, float]) -> LossCurves:
    """Worker: read one case from its files and return only its loss curve."""
    spec, ident, fam, label, channels, guarantee, tau = task
    case = _datadir(spec).reader(fam, label=label, channels=channels).read(ident)
    return fam.loss_curve(case, guarantee, tau)


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
    labels: str | list[str | int] | None = None,
) -> dict[str, Any]:
    """Calibrate ``method`` on every id of a data directory; optionally write calib.json.

    One case at a time is in memory (only the loss curves are kept). With ``n_jobs`` > 1 the
    map step runs over worker processes that read the files themselves and send back only
    the curves. ``labels`` (``"all"`` or label values/names) calibrates one λ̂ per structure of
    a class-probability stack (:mod:`segcp.structures`). Returns the calibration record (what
    the JSON file holds).
    """
    if labels is not None:
        return _calibrate_structures(data, method=method, alpha=alpha, label=label, labels=labels, guarantee=guarantee, tau=tau,
                                     method_params=method_params, out=out, show_progress=show_progress)
    t0 = time.perf_counter()
    cs = ConformalSegmenter(method, alpha, guarantee=guarantee, tau=tau, method_params=method_params)
    fam, g, alphas = cs._validate()
    dd = DataDir(data)
    reader = dd.reader(fam, label=label)
    if out is not None:
        check_output(out, data_inputs(data))
    check_calibration_size(len(reader), min(alphas))  # fail before reading any file
    jobs = resolve_jobs(n_jobs)
    if jobs > 1:
        bound = cs._single_group(fam, alphas, "calibrate")
        tasks = [(dd.spec, i, bound, label, reader.channels, g, float(tau)) for i in reader.ids]
        cs.calibrate_curves(LossCurves.concat(parallel_map(_curve_task, tasks, jobs)))
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
    """
    if int(draws) < 1:
        raise SegcpError(f"--draws must be at least 1, got {draws}")
    out = Path(out)
    check_output(out, [calib, *data_inputs(data)])
    if "structures" in read_json(calib):
        return _predict_structures(calib, data, out, show_progress=show_progress, overwrite=overwrite, overrides=overrides, combined=combined)
    cs, record = load_calibration(calib, alpha, overrides)
    reader = DataDir(data).reader(cs.method_, label=record.get("label"), with_truth=False, channels=_channels_of(record))
    written = []
    with atomic_dir(out, existing="overwrite" if overwrite else "refuse") as tmp:
        for k, ident in enumerate(track(reader.ids, "predicting", show_progress)):
            case = reader.read(ident)
            arr = _set_array(cs.predict(case), int(draws), draw_seed(seed, k))
            written.append(out / write_set(tmp, ident, arr, case.geometry if arr.dtype == bool else None).name)
    return written


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
    out |= draw_metrics(draws, case.label_map, float(getattr(fam, "beta", 0.0)), case.n_labels)
    return out | {"seconds_score": t1 - t0, "seconds_draws": t2 - t1}


def _evaluate_calibrated(
    calib: str | os.PathLike[str], data: str | os.PathLike[str], draws: int, seed: int, show_progress: bool,
    out: str | os.PathLike[str] | None, overrides: dict[str, Any] | None,
) -> dict[str, Any]:
    from segcp.metrics import aggregate, evaluate_set

    cs, record = load_calibration(calib, None, overrides)
    fam = cs.method_
    reader = DataDir(data).reader(fam, label=record.get("label"), channels=_channels_of(record))
    if out is not None:
        check_output(out, [calib, *data_inputs(data)])
    per_image: dict[str, dict[str, float]] = {}
    drawn = any_spacing = False
    for k, ident in enumerate(track(reader.ids, "evaluating", show_progress)):
        case = reader.read(ident)
        any_spacing |= case.spacing is not None
        prediction = cs.predict(case)
        if isinstance(prediction, SegmentationSet):
            drawn = True
            per_image[ident] = _evaluate_drawn(cs, case, int(draws), draw_seed(seed, k))
        else:
            mm = case.model_mask if case.probs is not None else None
            per_image[ident] = evaluate_set(prediction, case.mask, model_mask=mm, spacing=case.spacing)
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
        result |= {"beta": getattr(fam, "beta", None), "draws": int(draws)}
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
    """
    if calib is not None and "structures" in read_json(calib):
        result = _evaluate_structures(calib, data, sets, show_progress, out, overrides)
        if out is not None:
            write_json(out, result)
        return result
    if calib is not None:
        if int(draws) < 1:
            raise SegcpError(f"--draws must be at least 1, got {draws}")
        result = _evaluate_calibrated(calib, data, int(draws), int(seed), show_progress, out, overrides)
        if out is not None:
            write_json(out, result)
        return result
    from segcp.metrics import aggregate, evaluate_set

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
    any_spacing = label_seen = False
    for ident in track(ids, "evaluating", show_progress):
        mask, spacing = dd.load_mask(ident, label=label)
        label_seen |= bool(mask.any())
        pred, _ = read_array(set_files[ident])
        if pred.shape != mask.shape:
            raise SegcpError(f"{set_files[ident]}: set shape {pred.shape} does not match mask shape {mask.shape}")
        if pred.dtype.kind not in "biuf" or (pred.dtype != bool and not np.all(np.isin(pred, (0, 1)))):
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
    if label is not None and not label_seen:
        raise SegcpError(f"{dd.root / 'masks'}: no mask holds label {label}; check --label")
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
