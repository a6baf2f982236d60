"""``segcp calibrate`` on a data directory: the curves mapped on an executor (workers read the files and send
back only curves), reduced by the estimator into one λ̂ (or one per structure), written as calib.json.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from segcp.calibration import check_calibration_size
from segcp.calibration.compact import GRID_SIZE, CurveAccumulator
from segcp.cases import one_ndim
from segcp.conformal import ConformalSegmenter, CurveBatch, Curves, MapPlan
from segcp.errors import SegcpError
from segcp.io import DataDir, check_output, write_json
from segcp.io.datadir import DataSpec, data_inputs, describe_data, label_names
from segcp.jobs.structures import resolve_structures
from segcp.jobs.tasks import Job, note_unused, worker_family
from segcp.methods import SetFamily
from segcp.methods.base import BAND_GUARANTEES
from segcp.parallel import IN_PROCESS, Executor, check_chunk_size
from segcp.record import Structure, job_record

if TYPE_CHECKING:
    from segcp.volumes import VolumeEstimate

__all__ = ["calibrate_dir", "fit_structures"]


def _curve_chunk(
    task: tuple[Job, MapPlan, list[str]],
) -> tuple[list[list[Curves]], list[int], dict[int, tuple[int, str]], list[list[tuple[float, VolumeEstimate]]]]:
    """Worker: per structure, the chunk's curves per α group and how many of its masks hold the structure;
    per grid dimensionality (2 or 3), how many images have it and the first one's file; and, for two-sided
    sets, each case's (true volume, volume estimate) per structure (:mod:`segcp.volumes`)."""
    job, plan, ids = task
    batches = [CurveBatch(tuple(worker_family(f) for f in plan.families), plan.guarantee, plan.tau, plan.worker_grids) for _ in range(job.slots)]
    present = [0] * job.slots
    dims: dict[int, tuple[int, str]] = {}
    volumes: list[list[tuple[float, VolumeEstimate]]] = [[] for _ in range(job.slots)]
    if plan.guarantee in BAND_GUARANTEES:
        from segcp.volumes import mask_volume, probability_volume  # two-sided sets only
    for ident in ids:
        cases = job.read(ident)
        count, where = dims.get(len(cases[0].shape), (0, cases[0].where or ident))
        dims[len(cases[0].shape)] = (count + 1, where)
        for k, case in enumerate(cases):
            batches[k].add(case)
            present[k] += bool(case.mask is not None and case.mask.any())
            if plan.guarantee in BAND_GUARANTEES:
                assert case.mask is not None and case.probs is not None  # a pixel-set family's case with its truth
                volumes[k].append((mask_volume(case.mask, case.spacing), probability_volume(case.probs, case.spacing)))
    return [b.result() for b in batches], present, dims, volumes


def fit_structures(
    cs: ConformalSegmenter, accs: list[list[CurveAccumulator]], structures: Sequence[Structure], present: Sequence[int]
) -> list[tuple[Structure | None, dict[str, Any], int]]:
    """The reduce of every structure (slot): λ̂ from its accumulated curves (one accumulator per α group),
    each slot's curves freed once reduced. Returns what :func:`segcp.record.job_record` takes: (the structure,
    or None for one structure; the estimator's record; how many images hold the structure)."""
    fitted = []
    for k, slot in enumerate(accs):
        est = cs if k == 0 else ConformalSegmenter(**cs.get_params())
        est.calibrate_curves([acc.result() for acc in slot])
        accs[k] = []
        fitted.append((structures[k] if structures else None, est.to_dict(), present[k]))
    return fitted


def _structures_job(dd: DataDir, family: SetFamily, labels: str | list[str | int], label: int | None) -> tuple[Job, list[str], str]:
    """(the job, its ids, where the names came from) of ``--labels``: each case read once, as its class stack."""
    if label is not None:
        raise SegcpError("--label and --labels: give one (--label L for one structure, --labels for several)")
    if family.truth != "mask":
        raise SegcpError(f"--labels is for the pixel-set methods; {family.name} calibrates sets of multi-class segmentations as a whole")
    with_image = "image" in family.inputs
    ids = dd.ids(["probs", "masks", *(["images"] if with_image else [])])
    axis = dd.channel_axis(ids[0])
    if axis is None:
        raise SegcpError(dd.not_a_stack(ids[0]))
    first = dd.load_stack(ids[0], channels=axis, with_mask=False)
    dj = dd.dataset_json()
    names = label_names(dj) if dj is not None else None
    assert first.class_probs is not None  # a class stack
    structures = resolve_structures(labels, names, first.class_probs.shape[0], str(dd.path("probs", ids[0])), names_from=str(dj))
    job = Job(dd.spec, family, None, axis, True, tuple(structures), with_image).share(dd)
    return job, ids, str(dj) if dj is not None else "channels of the probability stacks"


def calibrate_dir(
    data: str | os.PathLike[str] | DataSpec,
    *,
    method: str = "threshold",
    alpha: float | list[float] = 0.1,
    label: int | None = None,
    guarantee: str | None = None,
    tau: float = 1.0,
    method_params: dict[str, Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    show_progress: bool = True,
    executor: Executor = IN_PROCESS,
    chunk_size: int | None = None,
    curve_form: str = "auto",
    grid_size: int = GRID_SIZE,
    grid_max: float | None = None,
    labels: str | list[str | int] | None = None,
    allow_empty_masks: bool = False,
) -> dict[str, Any]:
    """Calibrate ``method`` on every id of a data directory (one case in memory per worker; the map step on
    ``executor`` in tasks of ``chunk_size`` ids); optionally write calib.json. ``curve_form``, ``grid_size``,
    ``grid_max``: exact or compact curves. ``labels`` (``"all"`` or values/names): one λ̂ per structure of a
    class-probability stack. ``allow_empty_masks``: calibrate even when every binary mask is empty
    (refused otherwise: the FNR is undefined on empty truths). Returns the record (:func:`segcp.record.job_record`).
    """
    t0 = time.perf_counter()
    forms: dict[str, Any] = {"curve_form": curve_form, "grid_size": grid_size, "grid_max": grid_max}
    cs = ConformalSegmenter(method, alpha, guarantee=guarantee, tau=tau, method_params=method_params, **forms)
    plan = cs.plan()
    check_chunk_size(chunk_size)
    dd = DataDir(data)
    reader = None
    if labels is not None:
        job, ids, labels_from = _structures_job(dd, plan.family, labels, label)
        source, channels = "probs", job.channels
    else:
        reader = dd.reader(plan.family, label=label)
        job = Job(dd.spec, plan.family, label, reader.channels).share(dd, reader)
        ids, labels_from, source, channels = reader.ids, None, reader.source, reader.channels
    if out is not None:
        check_output(out, data_inputs(data))
    check_calibration_size(len(ids), min(cs.alphas()))  # fail before reading any file
    advice = plan.family.spacing_advice(dd.read("masks", ids[0])[1])  # the first case's voxels stand for the data's
    if advice is not None:
        sys.stderr.write(f"segcp: warning: {advice}\n")
    accs = [plan.accumulators() for _ in range(job.slots)]  # the reduce, by chunk index (any arrival order)
    present = [0] * job.slots
    dims: dict[int, tuple[int, str]] = {}
    chunks = executor.map_chunks(_curve_chunk, (job, plan), ids, description="calibrating", show_progress=show_progress, chunk_size=chunk_size)
    volumes: list[dict[int, list[tuple[float, VolumeEstimate]]]] = [{} for _ in range(job.slots)]  # by chunk index (calibration order)
    for i, (parts, counts, chunk_dims, vols) in chunks:
        for d, (n, first) in chunk_dims.items():
            count, first = dims.get(d, (0, first))
            dims[d] = (count + n, first)
        for k in range(job.slots):
            for acc, part in zip(accs[k], parts[k], strict=True):
                acc.add(i, part)
            present[k] += counts[k]
            volumes[k][i] = vols[k]
    ndim = one_ndim(dims)
    if reader is not None:
        reader.label_seen, reader.allow_empty = present[0] > 0, allow_empty_masks
        reader.require_label_seen()
    absent = [s for s, c in zip(job.structures, present, strict=False) if c == 0]  # none when calibrating one structure
    if absent:
        what = f"label {absent[0].value} ({absent[0].name}); labels present: {', '.join(map(str, dd.labels_present(ids)))}"
        raise SegcpError(f"{dd.folder('masks')}: no calibration mask holds {what}")
    fitted = fit_structures(cs, accs, job.structures, present)
    if plan.guarantee in BAND_GUARANTEES:  # calib.json's "volume": the direct volume interval of each structure
        from segcp.volumes import volume_record

        for k, (_, rec, _) in enumerate(fitted):
            rec["volume"] = volume_record([v for i in sorted(volumes[k]) for v in volumes[k][i]], list(cs.lambdas_))
    where: dict[str, Any] = {"source": source, "data": describe_data(data), "ids": ids, "labels_from": labels_from}
    record = job_record(fitted, label=label, channels=channels or False, seconds=time.perf_counter() - t0, ndim=ndim, **where)
    if out is not None:
        write_json(out, record)
    note_unused(dd)  # after the work: a failure stays one line
    return record
