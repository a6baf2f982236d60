"""``segcp calibrate`` on a data directory: one λ̂ (or one per structure), written as calib.json.

Wires the data-directory reader (:meth:`segcp.io.DataDir.reader`), the estimator
(:class:`segcp.conformal.ConformalSegmenter`) and the atomic writers; the map step runs on an
executor (:mod:`segcp.parallel`). Nothing here knows a method by name, and no maths lives here.
Reading a calib.json back: :func:`load_calibration`, :func:`load_structures`.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from segcp.calibration import LossCurves, check_calibration_size
from segcp.calibration.compact import GRID_SIZE, CurveAccumulator, Grid
from segcp.conformal import ConformalSegmenter, Curves
from segcp.errors import SegcpError
from segcp.io import CaseReader, DataDir, check_output, read_json, write_json
from segcp.io.datadir import DataSpec, data_inputs, describe_data
from segcp.jobs.tasks import Job, holds_label, mapped_executor, worker_family
from segcp.parallel import Executor, chunk_ranges
from segcp.progress import track

__all__ = ["calibrate_dir", "load_calibration", "load_structures"]


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
    (a Dask cluster: :func:`segcp.parallel.open_executor`) or ``n_jobs`` > 1 the map step runs
    in tasks of ``chunk_size`` ids whose workers read the files themselves and send back only
    the curves; the reduce is the same, and so is λ̂, bit for bit. ``curve_form``,
    ``grid_size``, ``grid_max``: exact or compact curves (:class:`ConformalSegmenter`); a
    record calibrated on compact curves says so (``curves``). ``labels`` (``"all"`` or label
    values/names) calibrates one λ̂ per structure of a class-probability stack
    (:mod:`segcp.jobs.structures`; in this process: not on an executor). Returns the calibration
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
    from segcp.jobs.structures import resolve_structures, split_case

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
    from segcp.jobs.structures import Structure

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
