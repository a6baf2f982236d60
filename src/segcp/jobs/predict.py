"""``segcp predict`` on a data directory: one prediction set per image, written atomically.

A mask on the input's grid, or draws from a set of segmentations; a per-structure calibration
writes one folder per structure. ``--resume`` writes each set in place beside a manifest.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segcp.cases import Case
from segcp.conformal import ConformalSegmenter
from segcp.errors import SegcpError
from segcp.io import DataDir, atomic_dir, check_output, index_folder, read_json, to_jsonable, write_json, write_set
from segcp.io.datadir import DataSpec, data_inputs
from segcp.io.writers import TMP_PREFIX, check_dir_target
from segcp.jobs.calibrate import _channels_of, load_calibration, load_structures
from segcp.jobs.tasks import Job, draw_seed, mapped_executor, worker_family
from segcp.methods import SegmentationSet, SegmentationSetFamily
from segcp.parallel import Executor, chunk_ranges
from segcp.progress import track

__all__ = ["PREDICT_MANIFEST", "complete_set", "predict_dir"]


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
    # NIfTI masks are only ever written by an atomic rename: present means whole
    return {i for i in ids if complete_set(out / f"{i}.npy", draws) or (draws is None and (out / f"{i}.nii.gz").is_file())}


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
    from segcp.jobs.structures import split_case

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
