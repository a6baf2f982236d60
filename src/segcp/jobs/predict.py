"""``segcp predict`` on a data directory: one prediction set per image (per structure), written atomically."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segcp.conformal import ConformalSegmenter
from segcp.errors import SegcpError
from segcp.io import DataDir, atomic_dir, check_output, read_json, to_jsonable, write_json, write_set, written_set
from segcp.io.datadir import DataSpec, data_inputs
from segcp.io.writers import TMP_PREFIX, check_dir_target, check_replaceable, filled_in_place
from segcp.jobs.structures import resolve_structures
from segcp.jobs.tasks import Job, calibrated_models, check_seed, draw_seed, job_of, note_unused, worker_family
from segcp.methods import SegmentationSet, SegmentationSetFamily, SetFamily
from segcp.methods.base import BAND_GUARANTEES
from segcp.parallel import IN_PROCESS, Executor, check_chunk_size, map_ids
from segcp.record import MAX_LABEL, Calibration, check_structures, read_calibration

__all__ = ["CALIBRATION_FIELDS", "COMBINED", "PREDICT_MANIFEST", "calibration_identity", "complete_set", "predict_dir", "select_structures"]

#: The hidden record of a ``predict`` folder (what made its sets): ``--resume`` continues, and ``--overwrite``
#: replaces, only a folder that has it.
PREDICT_MANIFEST = ".segcp-predict.json"
#: The folder of the bit-coded files of ``--combined``, and its legend.
COMBINED = "combined"
LEGEND = "structures.json"


def _set_array(prediction: Any, draws: int, seed: int) -> np.ndarray:
    """What a prediction set is written as: the mask, or ``draws`` segmentations drawn from it."""
    if isinstance(prediction, SegmentationSet):
        d = prediction.sample(draws, np.random.default_rng(seed))
        return d.astype(np.uint8 if d.max(initial=0) < 256 else np.int32)
    return np.asarray(prediction, dtype=bool)


def _predict_chunk(task: tuple[Job, tuple[SetFamily, ...], tuple[float, ...], tuple[str, ...], int, int, str, bool, list[tuple[int, str]]]) -> int:
    """Worker: write each id's sets (per structure a mask on the input's grid, or the drawn segmentations;
    with ``combined`` the bit-coded file too) atomically into the subfolders of ``folder``."""
    job, families, lambdas, subs, draws, seed, folder, combined, items = task
    fams = [worker_family(f) for f in families]
    root = Path(folder)
    for k, ident in items:
        bits = None
        cases = job.read(ident)
        for s, (case, fam, lam, sub) in enumerate(zip(cases, fams, lambdas, subs, strict=True)):
            if isinstance(lam, dict):  # calibrated per group (segcp.risk): each id's own family and λ̂
                fam, lam = lam[ident]
            arr = _set_array(fam.predict(case, lam), draws, draw_seed(seed, k))
            write_set(root / sub, ident, arr, case.geometry if arr.dtype == bool else None, clean_stale=False)
            if combined:
                bits = np.zeros(arr.shape, np.uint8 if len(subs) <= 8 else np.uint16) if bits is None else bits
                bits |= arr.astype(bits.dtype) << s
        if bits is not None:
            write_set(root / COMBINED, ident, bits, cases[0].geometry, clean_stale=False)
    return len(items)


def _lambdas(models: Sequence[Any], groups: str | None, ids: Sequence[str], where: str) -> tuple[Any, ...]:
    """Each structure's λ̂, or for a calibration per group (segcp.risk) {id: (family, λ̂ of its group)}."""
    if not any(m.groups_ for m in models):
        if groups is not None:
            raise SegcpError(f"{where}: --groups is for a calibration made per group (calibrate --loss ... --groups)")
        return tuple(float(m.lambda_) for m in models)
    from segcp.jobs.risk import case_groups

    names = case_groups(models[0], groups, list(ids), where)
    for m in models:
        m.case_groups = names
    return tuple({i: (m.family_of(m.fit_of(i)), m.fit_of(i).lambda_) for i in ids} for m in models)


def complete_set(path: Path, draws: int | None, bits: bool = False) -> bool:
    """Whether ``path`` is a whole ``.npy`` set: a valid header, every byte, a set's dtype (bool; ``draws``
    integers (draws, *S); ``bits``: unsigned)."""
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
    if bits:
        return dtype.kind == "u"
    if draws is None:
        return dtype == np.bool_
    return dtype.kind in "iu" and len(shape) >= 3 and shape[0] == draws


#: The fields of a manifest that say which calibration made the sets (not the file's bytes: two files
#: of the same method, parameters and λ̂ make the same sets), for ``evaluate --calib`` to check
#: (:func:`calibration_identity`).
CALIBRATION_FIELDS = ("method", "params", "alpha", "lambda", "label", "structures")


def calibration_identity(cal: Calibration | dict[str, Any]) -> dict[str, Any]:
    """The :data:`CALIBRATION_FIELDS` of a manifest, or of the manifest a calibration's sets get."""
    manifest = _manifest(cal, calibrated_models(cal), 1, 0, False) if isinstance(cal, Calibration) else cal
    return {k: manifest.get(k) for k in CALIBRATION_FIELDS}


def _manifest(cal: Calibration, models: Sequence[ConformalSegmenter], draws: int, seed: int, combined: bool) -> dict[str, Any]:
    """What the sets of a resumable folder depend on (the same manifest ⇒ the same sets)."""
    fam = models[0].method_
    drawn = isinstance(fam, SegmentationSetFamily)
    record = cal.record
    out = {
        "calib_sha256": hashlib.sha256(cal.path.read_bytes()).hexdigest(),
        "method": fam.name,
        "params": fam.params(),
        "alpha": float(next(iter(models[0].lambdas_))),
        "lambda": models[0].lambda_ if not cal.per_structure else [m.lambda_ for m in models],
        "label": record.get("label"),
        "probs_channels": bool(record.get("probs_channels", False)),
        "channel_axis": record.get("channel_axis"),
        "draws": int(draws) if drawn else None,
        "seed": int(seed) if drawn else None,
    }
    if cal.per_structure:
        out |= {"structures": [s.to_dict() for s in cal.structures], "combined": bool(combined)}
    return json.loads(json.dumps(to_jsonable(out)))  # as it reads back from JSON (tuples → lists, NaN → None)


def _whole(folder: Path, ident: str, draws: int | None, bits: bool = False) -> bool:
    """Whether ``folder`` holds the whole set of ``ident`` (sets on an input's grid are only renamed into place)."""
    return complete_set(folder / f"{ident}.npy", draws, bits) or (draws is None and written_set(folder, ident) is not None)


def _resume_folder(out: Path, manifest: dict[str, Any], ids: Sequence[str], subs: Sequence[str]) -> set[str]:
    """Prepare ``out`` for a resumable run and return the ids whose sets are there and whole in every
    subfolder of ``subs`` (``""``: ``out``). A non-empty folder must carry the same manifest (one line otherwise)."""
    mpath = out / PREDICT_MANIFEST
    if out.is_dir() and any(p.name != PREDICT_MANIFEST and not p.name.startswith(TMP_PREFIX) for p in out.iterdir()):
        if not mpath.is_file():
            raise SegcpError(f"{out}: not a folder of a resumable segcp predict (no {PREDICT_MANIFEST}); choose a new folder or pass --overwrite")
        old = read_json(mpath)
        if old != manifest:
            old = old if isinstance(old, dict) else {}
            diff = ", ".join(sorted(k for k in set(old) | set(manifest) if old.get(k) != manifest.get(k)))
            raise SegcpError(f"{out}: its sets were made with another {diff}; --resume needs the same calibration and options (or --overwrite)")
    write_json(mpath, manifest)  # atomic; also removes the temporaries of dead writers in out
    for sub in subs:
        if sub:
            check_dir_target(out / sub, "merge")
            (out / sub).mkdir(exist_ok=True)
    draws = manifest["draws"]
    return {i for i in ids if all(_whole(out / sub, i, draws, sub == COMBINED) for sub in subs)}


def _predict_band(
    cal: Calibration,
    models: Sequence[ConformalSegmenter],
    job: Job,
    ids: list[str],
    subs: tuple[str, ...],
    out: Path,
    manifest: dict[str, Any],
    existing: str,
    executor: Executor,
    show_progress: bool,
    chunk_size: int | None,
) -> list[Path]:
    """Two-sided sets, their viewer files and volumes.csv (:mod:`segcp.jobs.band`); returns the band label volumes, id by id."""
    from segcp.jobs.band import VOLUMES_CSV, band_folders, write_band_chunk, write_volumes_csv

    names = tuple(s.name for s in cal.structures) or ("structure" if cal.label is None else f"label {cal.label}",)
    alpha = float(next(iter(models[0].lambdas_)))
    head = (
        job,
        tuple(m.method_ for m in models),
        tuple(float(m.lambda_) for m in models),
        subs,
        names,
        alpha,
        tuple(p.get("volume") for p in cal.parts),
    )
    with atomic_dir(out, existing=existing) as folder:
        write_json(folder / PREDICT_MANIFEST, manifest)
        band_folders(folder, subs, names)
        rows = map_ids(
            executor,
            write_band_chunk,
            (*head, str(folder)),
            list(enumerate(ids)),
            description="predicting",
            show_progress=show_progress,
            chunk_size=chunk_size,
        )
        write_volumes_csv(folder / VOLUMES_CSV, rows)
    return [written_set(out / sub / "band", ident) or out / sub / "band" / f"{ident}.npy" for ident in ids for sub in subs]


def select_structures(cal: Calibration, labels: str) -> Calibration:
    """``--labels`` of ``predict``: the calibration restricted to those of its structures (``all``,
    or label values / names separated by commas), in its order; a structure it did not calibrate
    is a one-line error."""
    if not cal.per_structure:
        raise SegcpError(f"{cal.path}: --labels is for per-structure calibrations (calibrate --labels); this one calibrated one structure")
    if labels.strip() == "all":
        return cal
    names = {s.value: s.name for s in cal.structures}
    known = ", ".join(f"{n}={v}" for v, n in sorted(names.items()))
    wanted = {s.value for s in resolve_structures(labels, names, MAX_LABEL + 1, str(cal.path))}
    if not wanted <= set(names):
        raise SegcpError(f"--labels: label {min(wanted - set(names))} was not calibrated in {cal.path} ({known})")
    keep = [k for k, s in enumerate(cal.structures) if s.value in wanted]
    return dataclasses.replace(cal, parts=tuple(cal.parts[k] for k in keep), structures=tuple(cal.structures[k] for k in keep))


def predict_dir(
    calib: str | os.PathLike[str],
    data: str | os.PathLike[str] | DataSpec,
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
    executor: Executor = IN_PROCESS,
    chunk_size: int | None = None,
    labels: str | None = None,
    groups: str | None = None,
) -> list[Path]:
    """Write one set per id, ``out/<id>``: a mask on the model output's grid (in its format when it has a
    geometry, else a boolean ``.npy``), or ``draws`` segmentations (S, *spatial) drawn from a set of
    segmentations; per structure ``out/<name>/<id>`` (``combined``: ``out/combined/<id>``, bit k for
    structure k, legend in ``structures.json``). The sets go into a temporary sibling that replaces
    ``out`` whole on success (``out`` new or empty unless ``overwrite``); ``resume`` writes each into
    ``out`` atomically and skips the whole ones made by the same calibration and options (the manifest; a
    failure before any set is written leaves nothing). ``overwrite`` replaces only a previous predict folder.
    ``overrides``: run-time options of the family; ``labels``: some structures of a per-structure
    calibration only (:func:`select_structures`); ``groups``: each id's group for a calibration made per
    group (a file or ``name:REGEX``; default: the record's own ``name:`` rule). Returns the set paths, id by id.
    """
    if int(draws) < 1:
        raise SegcpError(f"--draws must be at least 1, got {draws}")
    seed = check_seed(seed)
    check_chunk_size(chunk_size)
    if resume and overwrite:
        raise SegcpError("--resume continues a folder and --overwrite replaces it: give one of them")
    out = Path(out)
    check_output(out, [calib, *data_inputs(data)])
    if overwrite:
        check_replaceable(out, PREDICT_MANIFEST, "segcp predict")
    cal = read_calibration(calib, overrides)
    if labels is not None:
        cal = select_structures(cal, labels)
    models = calibrated_models(cal, alpha)
    if combined and not cal.per_structure:
        raise SegcpError("--combined is for per-structure calibrations (calibrate --labels)")
    if combined and len(cal.structures) > 16:
        raise SegcpError("--combined holds up to 16 structures (uint16 bits)")
    check_structures(cal.structures, str(calib), reserved=(COMBINED, LEGEND) if combined else ())
    dd = DataDir(data)
    job, ids = job_of(dd, cal, models[0].method_, with_truth=False)
    subs = tuple(s.name for s in cal.structures) or ("",)
    lambdas = _lambdas(models, groups, ids, str(calib))
    manifest = _manifest(cal, models, int(draws), seed, combined)  # what made the sets (evaluate --calib checks it)
    if isinstance(lambdas[0], dict):  # per group: which λ̂ each id got (per structure)
        manifest["lambda_of_id"] = [{i: lam for i, (_, lam) in per.items()} for per in lambdas]
    if isinstance(models[0], ConformalSegmenter) and models[0].guarantee_ in BAND_GUARANTEES:  # two-sided sets: segcp.jobs.band
        if resume or combined:
            raise SegcpError(f"--{'resume' if resume else 'combined'} is not available for two-sided sets ({models[0].guarantee_}) yet")
        return _predict_band(cal, models, job, ids, subs, out, manifest, "overwrite" if overwrite else "refuse", executor, show_progress, chunk_size)
    if resume:
        folder_cm = filled_in_place(out, scaffolding=(PREDICT_MANIFEST, LEGEND))
    else:
        folder_cm = atomic_dir(out, existing="overwrite" if overwrite else "refuse")
    head = (job, tuple(m.method_ for m in models), lambdas, subs, int(draws), seed)
    with folder_cm as folder:
        if resume:
            done = _resume_folder(out, manifest, ids, subs + ((COMBINED,) if combined else ()))
        else:
            done = set()
            write_json(folder / PREDICT_MANIFEST, manifest)
        todo = [(k, ident) for k, ident in enumerate(ids) if ident not in done]
        for sub in (*subs, *((COMBINED,) if combined else ())):
            if sub:
                (folder / sub).mkdir(exist_ok=True)
        if combined:
            bits = {str(1 << k): s.to_dict() for k, s in enumerate(cal.structures)}
            write_json(folder / LEGEND, {"bits": bits, "meaning": "voxel value = sum of 2^k over the structures k whose set holds the voxel"})
        for _ in executor.map_chunks(
            _predict_chunk, (*head, str(folder), combined), todo, description="predicting", show_progress=show_progress, chunk_size=chunk_size
        ):
            pass
    note_unused(dd)  # after the work: a failure stays one line
    return [written_set(out / sub, ident) or out / sub / f"{ident}.npy" for ident in ids for sub in subs]  # on the input's grid, or NPY
