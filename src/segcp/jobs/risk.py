"""Directory jobs of a chosen loss (:class:`~segcp.risk.RiskSegmenter`): ``segcp calibrate --loss`` (per
group with ``--groups``) and ``segcp monitor`` (is a new data directory still exchangeable with the
calibration cases?). Workers read the files and send back step functions or per-case numbers.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from segcp._version import __version__
from segcp.errors import SegcpError
from segcp.io import DataDir, check_output, write_json
from segcp.io.datadir import DataSpec, data_inputs, describe_data
from segcp.io.writers import atomic_path
from segcp.jobs.tasks import Job, calibrated_models, job_of, worker_family
from segcp.parallel import IN_PROCESS, Executor, check_chunk_size, map_ids
from segcp.record import job_record, read_calibration
from segcp.risk import RiskSegmenter, read_groups

__all__ = ["calibrate_risk_dir", "case_groups", "monitor_dir"]

Data = str | os.PathLike[str] | DataSpec


def _losses_chunk(task: tuple[Job, RiskSegmenter, list[str]]) -> list[list[tuple[Any, bool]]]:
    """Worker: per id and structure, its losses (per configuration, per loss) and whether its mask holds the structure."""
    job, rs, ids = task
    losses, configs = rs.losses(), [worker_family(f) for f in rs.configs()]
    mode = rs.mode(losses, configs)
    return [
        [(rs.case_losses(case, losses, configs, mode), bool(case.mask is not None and case.mask.any())) for case in job.read(ident)] for ident in ids
    ]


def _statistics_chunk(task: tuple[Job, list[RiskSegmenter], list[str]]) -> list[list[dict[str, float]]]:
    """Worker: per id and structure, the label-free statistics of its set at the marginal λ̂
    (:func:`~segcp.calibration.monitor.case_statistics`)."""
    job, models, ids = task
    fams = [worker_family(m.family_) for m in models]
    return [[m._statistics(f, case, m.lambda_) for m, f, case in zip(models, fams, job.read(ident), strict=True)] for ident in ids]


def case_groups(rs: RiskSegmenter, spec: str | None, ids: list[str], where: str) -> dict[str, str]:
    """The group of each id for a calibration made per group: from ``spec`` (``--groups``), else from the
    record's own ``name:REGEX`` rule; {} without groups."""
    if not rs.groups_:
        if spec is not None:
            raise SegcpError(f"{where}: --groups is for a calibration made per group; this one has one lambda")
        return {}
    source = rs.group_source_
    if spec is None:
        if not (isinstance(source, str) and source.startswith("name:")):
            raise SegcpError(f"{where}: calibrated per group (groups from {source}); give each case's group with --groups FILE")
        spec = source
    return read_groups(spec, ids)


def calibrate_risk_dir(
    data: Data,
    *,
    method: str = "threshold",
    alpha: float | list[float] = 0.1,
    loss: str | list[str] = "fnr",
    loss_params: dict[str, Any] | None = None,
    delta: float | None = None,
    pvalue: str = "hb",
    method_params: dict[str, Any] | None = None,
    vary: tuple[str, list[Any]] | None = None,
    groups: str | None = None,
    group_fallback: bool = False,
    label: int | None = None,
    labels: str | list[str | int] | None = None,
    out: str | os.PathLike[str] | None = None,
    show_progress: bool = True,
    executor: Executor = IN_PROCESS,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """Calibrate ``loss`` (one or several) on a data directory, per group with ``groups`` (a file or
    ``name:REGEX``, :func:`segcp.risk.read_groups`) and per structure with ``labels`` (as
    :func:`~segcp.jobs.calibrate_dir`'s: one fit per structure, the groups within each); optionally
    write calib.json. Returns the record (:func:`segcp.record.risk_record` inside
    :func:`segcp.record.job_record`)."""
    from segcp.jobs.calibrate import _structures_job

    t0 = time.perf_counter()
    rs = RiskSegmenter(method, alpha, loss=loss, loss_params=loss_params, delta=delta, pvalue=pvalue, method_params=method_params, vary=vary)
    losses, configs = rs.losses(), rs.configs()
    alphas, mode = rs.alphas(losses), rs.mode(losses, configs)
    check_chunk_size(chunk_size)
    dd = DataDir(data)
    reader, labels_from = None, None
    if labels is not None:
        job, ids, labels_from = _structures_job(dd, configs[0], labels, label)
        source, channels = "probs", job.channels
    else:
        reader = dd.reader(configs[0], label=label)
        job = Job(dd.spec, configs[0], label, reader.channels).share(dd, reader)
        ids, source, channels = reader.ids, reader.source, reader.channels
    names = read_groups(groups, ids) if groups is not None else None
    if out is not None:
        check_output(out, data_inputs(data))
    need = rs.needed(losses, alphas, len(configs))
    if len(ids) < need:
        raise SegcpError(f"{dd.folder('masks')}: {len(ids)} calibration images, but the guarantee needs at least {need}")
    run = {"show_progress": show_progress, "chunk_size": chunk_size}
    rows = map_ids(executor, _losses_chunk, (job, rs), ids, description="calibrating", **run)
    present = [sum(row[k][1] for row in rows) for k in range(job.slots)]
    if reader is not None:
        reader.label_seen = present[0] > 0
        reader.require_label_seen()
    absent = [s for s, c in zip(job.structures, present, strict=False) if c == 0]
    if absent:
        raise SegcpError(f"{dd.folder('masks')}: no calibration mask holds label {absent[0].value} ({absent[0].name})")
    models = []
    for k in range(job.slots):
        est = (
            rs
            if k == 0
            else RiskSegmenter(
                **{a: getattr(rs, a) for a in ("method", "alpha", "loss", "loss_params", "delta", "pvalue", "method_params", "vary", "seed")}
            )
        )
        where_k = "calibration" if not job.structures else f"structure {job.structures[k].name}"
        try:
            est.fit(
                [row[k][0] for row in rows],
                None if names is None else [names[i] for i in ids],
                losses=losses,
                configs=configs,
                alphas=alphas,
                mode=mode,
                fallback=group_fallback,
            )
        except SegcpError as exc:
            raise SegcpError(f"{where_k}: {exc}" if job.structures else str(exc)) from None
        est.case_groups, est.group_source_ = names or {}, groups
        models.append(est)
    stats = map_ids(executor, _statistics_chunk, (job, models), ids, description="statistics", **run)
    fitted = []
    for k, est in enumerate(models):
        est.monitor_ = {
            "scores": [est._score(row[k][0][est.fit_.config][0], losses[0], alphas[0], mode) for row in rows],
            "statistics": {name: [s[k].get(name, math.nan) for s in stats] for name in stats[0][k]},
        }
        fitted.append((job.structures[k] if job.structures else None, est.to_dict(), present[k]))
    record = job_record(
        fitted,
        label=label,
        channels=channels or False,
        seconds=time.perf_counter() - t0,
        source=source,
        data=describe_data(data),
        ids=ids,
        labels_from=labels_from,
    )
    if out is not None:
        write_json(out, record)
    return record


def controlled_risks(rs: RiskSegmenter, per_image: dict[str, dict[str, float]]) -> dict[str, Any]:
    """What ``evaluate`` adds for a calibration of chosen losses: ``controlled`` — per loss its α, the
    statement and the mean test loss (``loss_<name>`` of each image) — and, per group, the same means over
    the group's images with the group's λ̂ (``groups``)."""
    from segcp.metrics import aggregate

    def means(ids: list[str]) -> dict[str, float]:
        return {x.name: float(np.mean([per_image[i][f"loss_{x.name}"] for i in ids])) for x in rs.losses_}

    ids = list(per_image)
    overall = means(ids)
    out: dict[str, Any] = {
        "controlled": [
            {"loss": x.name, "params": x.params(), "alpha": a, "mean": overall[x.name], "statement": st}
            for x, a, st in zip(rs.losses_, rs.alphas_, rs.statements())
        ]
    }
    if rs.case_groups:
        out["groups"] = {}
        for g, fit in rs.groups_.items():
            mine = [i for i in ids if rs.case_groups.get(i) == g]
            if mine:
                out["groups"][g] = {"lambda": fit.lambda_, "fallback": fit.fallback, "controlled": means(mine)} | aggregate(
                    {i: per_image[i] for i in mine}
                )
    return out


# ---------------------------------------------------------------------------- monitor
def _monitor_chunk(task: tuple[Job, RiskSegmenter, bool, list[str]]) -> list[dict[str, Any]]:
    """Worker: per new id, the label-free statistics of its set at the marginal λ̂ (as the record's) and, with
    its truth, each loss of the set it is given — its group's λ̂ when ``rs.case_groups`` knows its group, else
    the marginal one — and its monitoring score."""
    job, rs, labelled, ids = task
    fam = worker_family(rs.family_)
    out = []
    for ident in ids:
        case = job.read(ident)[0]
        row: dict[str, Any] = {"statistics": rs._statistics(fam, case, rs.lambda_)}
        if labelled:
            assert case.mask is not None
            fit = rs.fit_of(ident) if rs.case_groups else rs.fit_
            s = (fam if fit.config == rs.fit_.config else worker_family(rs.family_of(fit))).predict(case, fit.lambda_)
            row["losses"] = [x.set_loss(s, case.mask, case.spacing) for x in rs.losses_]
            part = rs.case_losses(case, rs.losses_[:1], [fam], rs.mode_)[0][0]
            row["score"] = rs._score(part, rs.losses_[0], rs.alphas_[0], rs.mode_)
        out.append(row)
    return out


def monitor_dir(
    calib: str | os.PathLike[str],
    data: Data,
    *,
    out: str | os.PathLike[str] | None = None,
    figure: str | os.PathLike[str] | None = None,
    level: float = 0.05,
    delta: float = 0.05,
    groups: str | None = None,
    overrides: dict[str, Any] | None = None,
    show_progress: bool = True,
    executor: Executor = IN_PROCESS,
    chunk_size: int | None = None,
) -> dict[str, Any]:
    """Is a new data directory still exchangeable with the calibration cases of ``calib``?

    The new cases are read in id order (the order they arrived, when ids sort by arrival). With masks:
    each loss's running risk at λ̂ with a time-uniform confidence sequence at ``delta``
    (:func:`~segcp.calibration.monitor.risk_track`; an alarm when its lower edge passes α) and the
    conformal test martingale of the cases' scores against the calibration scores at ``level``
    (:func:`~segcp.calibration.monitor.exchangeability_martingale`). Always: the two-sample test of the
    label-free statistics of the sets, Holm at ``level``
    (:func:`~segcp.calibration.monitor.two_sample_shift`). Returns (and writes to ``out``) the result
    with a one-line ``verdict``.

    A calibration made per group: each new case's losses are those of the set it is given, at its group's
    λ̂, when its group is known — from ``groups`` (``--groups``: a file or ``name:REGEX``) or the record's
    own ``name:REGEX`` rule; otherwise (groups from a file, no ``--groups``) every case gets the marginal
    λ̂ and the result says so (``lambdas_from``). The label-free statistics and the martingale's scores
    stay those of the marginal λ̂ and configuration: the record's calibration statistics are.
    """
    from segcp.calibration.monitor import exchangeability_martingale, risk_track, two_sample_shift

    check_chunk_size(chunk_size)
    cal = read_calibration(calib, overrides)
    models = calibrated_models(cal)
    rs = models[0]
    if cal.per_structure:
        raise SegcpError(f"{calib}: a per-structure calibration; monitor one structure at a time (calibrate --label L --loss ...)")
    if not isinstance(rs, RiskSegmenter):
        raise SegcpError(f"{calib}: this calibration keeps nothing to monitor with; calibrate with --loss (e.g. --loss fnr, the same lambda)")
    if not rs.monitor_["scores"]:
        raise SegcpError(f"{calib}: the record keeps no monitoring data (field 'monitor')")
    dd = DataDir(data)
    labelled = dd.has("masks")
    job, ids = job_of(dd, cal, rs.family_, with_truth=labelled)
    for dest in (out, figure):
        if dest is not None:
            check_output(dest, [cal.path, *data_inputs(data)])
    if out is not None and figure is not None and Path(out).resolve() == Path(figure).resolve():
        raise SegcpError(f"{figure}: --figure and --out name the same file")
    by_group: dict[str, str] = {}
    if not rs.groups_ or groups is not None or str(rs.group_source_).startswith("name:"):
        by_group = case_groups(rs, groups, ids, str(calib))  # {} for one lambda (--groups: a one-line error)
    rs = rs.at(rs.alphas_[0])
    rs.case_groups = by_group
    lambdas = [(rs.fit_of(i) if by_group else rs.fit_).lambda_ for i in ids]  # an uncalibrated group: a one-line error here
    task = (job, rs, labelled)
    rows = map_ids(executor, _monitor_chunk, task, ids, description="monitoring", show_progress=show_progress, chunk_size=chunk_size)
    names = list(rs.monitor_["statistics"])
    shift = two_sample_shift(rs.monitor_["statistics"], {k: [r["statistics"].get(k, math.nan) for r in rows] for k in names}, level)
    result: dict[str, Any] = {
        "segcp_version": __version__,
        "calib": str(cal.path),
        "data": describe_data(data),
        "n_calibration": rs.n_,
        "n_new": len(ids),
        "lambda": rs.lambda_,
        "lambdas_from": (
            "each case's group"
            if by_group
            else ("the marginal lambda (the cases' groups are unknown: give --groups)" if rs.groups_ else "the marginal lambda")
        ),
        "lambdas": lambdas,
        "labels": labelled,
        "level": level,
        "delta": delta,
        "ids": ids,
        "two_sample": {
            "statistics": list(shift.statistics),
            "pvalues": shift.pvalues.tolist(),
            "rejected": shift.rejected.tolist(),
            "alarm": shift.alarm,
            "test": shift.test,
        },
    }
    alarms = [f"the sets' statistics shifted ({', '.join(s for s, r in zip(shift.statistics, shift.rejected) if r)})"] if shift.alarm else []
    if labelled:
        losses = np.array([r["losses"] for r in rows], dtype=np.float64)
        result["risk"] = []
        for j, (x, a) in enumerate(zip(rs.losses_, rs.alphas_)):
            tr = risk_track(losses[:, j], a, delta, B=x.bound)
            result["risk"].append(
                {
                    "loss": x.name,
                    "alpha": a,
                    "mean": tr.mean.tolist(),
                    "lower": tr.lower.tolist(),
                    "upper": tr.upper.tolist(),
                    "alarm_at": tr.alarm_at,
                }
            )
            if tr.alarm:
                alarms.append(f"{x.name} above {a:g} from case {tr.alarm_at} on")
        mt = exchangeability_martingale(rs.monitor_["scores"], [r["score"] for r in rows], level)
        result["martingale"] = {"pvalues": mt.pvalues.tolist(), "wealth": mt.martingale.tolist(), "alarm_at": mt.alarm_at}
        if mt.alarm:
            alarms.append(f"the cases stopped being exchangeable with the calibration cases at case {mt.alarm_at}")
    result["alarm"] = bool(alarms)
    result["verdict"] = (
        ("ALARM: " + "; ".join(alarms))
        if alarms
        else (
            f"no alarm: {len(ids)} new cases look exchangeable with the {rs.n_} calibration cases"
            + ("" if labelled else " (without labels: the sets' statistics only)")
        )
    )
    png = None
    if figure is not None:
        from segcp.report.figures import monitor_figure

        png = monitor_figure(result)
    if out is not None:
        write_json(out, result)
    if figure is not None and png is not None:
        with atomic_path(figure, ".png") as tmp:
            tmp.write_bytes(png)
    return result
