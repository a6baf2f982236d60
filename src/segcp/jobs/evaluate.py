"""``segcp evaluate`` on a data directory: metrics of sets (a ``predict`` folder, or made on the fly from a
calib.json, per structure too) against the truth, computed on an executor and aggregated in id order.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from segcp._version import __version__
from segcp.cases import Case
from segcp.conformal import ConformalSegmenter
from segcp.errors import SegcpError
from segcp.io import DataDir, check_output, index_folder, read_array, read_json, suffixes, write_json
from segcp.io.datadir import DataSpec, data_inputs
from segcp.io.formats.base import SPACING_UNIT
from segcp.jobs.predict import PREDICT_MANIFEST, calibration_identity, select_structures
from segcp.jobs.tasks import Job, calibrated_models, check_seed, draw_seed, job_of, note_unused, worker_family
from segcp.methods import SegmentationSet, SegmentationSetFamily
from segcp.parallel import IN_PROCESS, Executor, check_chunk_size, map_ids
from segcp.record import Calibration, read_calibration

__all__ = ["evaluate_dir"]

Metrics = dict[str, float]
StrPath = str | os.PathLike[str]
Data = StrPath | DataSpec
Run = Callable[[Callable[[Any], list[Any]], tuple[Any, ...], list[Any]], list[Any]]  # a map over chunks of items (map_ids)


def read_set(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """A set file as a boolean mask of ``shape``, or a one-line error naming the file."""
    pred, _ = read_array(path)
    return check_set(pred, path, shape)


def check_set(pred: np.ndarray, path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """``pred`` (read from ``path``) as a boolean mask of ``shape``, or a one-line error naming the file."""
    if pred.shape != shape:
        raise SegcpError(f"{path}: set shape {pred.shape} does not match mask shape {shape}")
    if pred.dtype.kind not in "biuf" or (pred.dtype != bool and not np.all(np.isin(pred, (0, 1)))):
        raise SegcpError(f"{path}: a set must be boolean (or 0/1)")
    return pred.astype(bool)


def _summary(per_image: dict[str, Metrics]) -> dict[str, Any]:
    """``n``, the ``mean``, ``std`` and ``undefined`` count of each metric, and ``per_image``."""
    from segcp.metrics import aggregate

    return aggregate(per_image) | {"per_image": per_image}


def _case_metrics(cs: ConformalSegmenter, case: Case, set_file: str | None, n_draws: int, seed: int) -> tuple[Metrics, bool]:
    """One case's metrics (of its set read from ``set_file``, else made from the calibration) and whether
    the set was drawn (sets of segmentations: exact membership and the draws' metrics)."""
    from segcp.metrics import draw_metrics, evaluate_set

    prediction = cs.predict(case) if set_file is None else read_set(Path(set_file), case.shape)
    if isinstance(prediction, tuple):  # two-sided sets (inner, outer)
        from segcp.jobs.band import band_metrics

        inner, outer = prediction
        return band_metrics(case, inner, outer, next(iter(cs.lambdas_)), cs.volume_), False
    if not isinstance(prediction, SegmentationSet):
        assert case.mask is not None  # a pixel-set family's case read with its truth
        metrics = evaluate_set(prediction, case.mask, model_mask=case.model_mask if case.probs is not None else None, spacing=case.spacing)
        for x in cs.losses_:  # the losses a RiskSegmenter controls, by their definition
            metrics[f"loss_{x.name}"] = x.set_loss(prediction, case.mask, case.spacing)
        return metrics, False
    fam = cs.method_
    assert isinstance(fam, SegmentationSetFamily) and fam.agreement_level is not None
    item = fam.prepare(case)
    t0 = time.perf_counter()
    score = fam.score(item)
    t1 = time.perf_counter()
    draws = cs.predict(item).sample(n_draws, np.random.default_rng(seed))
    t2 = time.perf_counter()
    out = {"score": score, "covered": float(score <= cs.lambda_)} | draw_metrics(draws, case.label_map, float(fam.agreement_level), case.n_labels)
    return out | {"seconds_score": t1 - t0, "seconds_draws": t2 - t1}, True


def _calibrated_chunk(task: tuple[Job, list[ConformalSegmenter], list[dict[str, str]] | None, int, int, list[tuple[int, str]]]) -> list[Any]:
    """Worker: per id, each structure's (metrics, drawn), and whether the files carry a spacing."""
    job, models, set_files, draws, seed, items = task
    models = [m.at(next(iter(m.lambdas_))) for m in models]  # this task's own copies
    for m in models:
        m.families_ = {a: worker_family(f) for a, f in m.families_.items()}
    out = []
    for k, ident in items:
        cases = job.read(ident)
        files = [None if set_files is None else set_files[s][ident] for s in range(len(cases))]
        metrics = [_case_metrics(m, c, f, draws, draw_seed(seed, k)) for m, c, f in zip(models, cases, files, strict=True)]
        out.append((metrics, cases[0].spacing is not None))
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


def _structure_folders(sets: Path) -> list[str]:
    """The structure folders of a per-structure ``predict`` folder (from its manifest, else the
    subfolders holding set files)."""
    manifest = _manifest_of(sets)
    if manifest is not None and isinstance(manifest.get("structures"), list):
        return [str(s.get("name")) for s in manifest["structures"] if isinstance(s, dict)]
    return sorted(d.name for d in sets.iterdir() if d.is_dir() and not d.name.startswith(".") and index_folder(d))


def _manifest_of(sets: Path) -> dict[str, Any] | None:
    """The manifest ``predict`` leaves in a sets folder (what made it), or None (a folder made otherwise)."""
    path = sets / PREDICT_MANIFEST
    record = read_json(path) if path.is_file() else None
    return record if isinstance(record, dict) else None


def _made_by(sets: Path, cal: Calibration) -> Calibration:
    """``cal`` restricted to the structures a per-structure sets folder holds (``predict --labels``), as its
    manifest names them; a folder made by another calibration (method, parameters, α or λ̂) is refused,
    a folder without a manifest taken as it is."""
    manifest = _manifest_of(sets)
    if manifest is None or not cal.per_structure:
        return cal
    made = {s.get("label") for s in manifest.get("structures") or [] if isinstance(s, dict)}
    if made and made <= {s.value for s in cal.structures}:
        mine = select_structures(cal, ",".join(str(s.value) for s in cal.structures if s.value in made))
        if calibration_identity(manifest) == calibration_identity(mine):
            return mine
    raise SegcpError(
        f"{sets}: these sets were made by another calibration ({manifest.get('method')}, lambda {manifest.get('lambda')}) "
        f"than {cal.path} ({cal.record.get('method')}): evaluate them with the calib.json that made them"
    )


def _units(any_spacing: bool) -> str:
    return SPACING_UNIT if any_spacing else "pixels"


def _set_metrics(task: tuple[Job, bool, list[tuple[str, str]]]) -> list[tuple[Metrics, bool, bool]]:
    """Worker: per (id, set file), the set's metrics (stretch against probs/ when there), whether the mask
    holds the label, whether the spacing is known."""
    from segcp.metrics import evaluate_set

    job, has_probs, items = task
    dd = job.datadir()
    out = []
    for ident, f in items:
        mask, spacing = dd.load_mask(ident, label=job.label)
        model_mask = None
        if has_probs:
            probs, pspacing = dd.load_probs(ident, label=job.label, channels=job.channels or False)
            if probs.shape != mask.shape:
                raise SegcpError(f"{dd.path('probs', ident)}: shape {probs.shape} does not match mask shape {mask.shape}")
            model_mask, spacing = probs >= 0.5, spacing or pspacing
        out.append((evaluate_set(read_set(Path(f), mask.shape), mask, model_mask=model_mask, spacing=spacing), bool(mask.any()), spacing is not None))
    return out


def _evaluate_sets(sets: StrPath | None, data: Data, label: int | None, out: StrPath | None, run: Run) -> dict[str, Any]:
    """Metrics of the sets of a ``predict`` folder against the masks."""
    if sets is None:
        raise SegcpError("evaluate needs --sets DIR (sets from `segcp predict`) or --calib FILE (to make them on the fly)")
    sets = Path(sets)
    if not sets.is_dir():
        raise SegcpError(f"{sets}: sets directory does not exist")
    set_files = {i: p for i, p in index_folder(sets).items() if not p.name.endswith(".npz")}
    if not set_files:
        structures = _structure_folders(sets)
        if structures:
            raise SegcpError(
                f"{sets}: per-structure sets ({', '.join(f'{s}/' for s in structures)}): pass --calib with the calib.json "
                f"that made them, or --sets {sets / structures[0]} --label L for one structure"
            )
        raise SegcpError(f"{sets}: no set files ({', '.join(x for x in suffixes() if x != '.npz')})")
    dd = DataDir(data)
    if out is not None:
        check_output(out, [sets, *data_inputs(data)])
    has_probs = dd.has("probs")
    base = "probs" if has_probs else "masks"
    ids = dd.ids([base, "masks"] if has_probs else ["masks"])
    if not has_probs and "masks" in dd.spec.folder_map:  # a folder of its own (nnU-Net's labelsTr): the sets pick the cases
        unread = [i for i in ids if i not in set_files]
        ids = [i for i in ids if i in set_files]
        if unread:
            dd.unused["masks"] = len(unread)
    missing = sorted(set(ids) - set(set_files))
    if missing:
        raise SegcpError(f"{sets}: no set for id {missing[0]!r}" + (f" and {len(missing) - 1} more" if len(missing) > 1 else ""))
    extra = sorted(set(set_files) - set(ids))
    if extra:
        raise SegcpError(f"{set_files[extra[0]]}: no matching file in {dd.folder(base)}")
    channels: bool | str = False
    if has_probs:
        channels = dd.channel_axis(ids[0]) or False  # "first" (L, *S) or "last" (*S, L)
        if channels and label is None:
            raise SegcpError(f"{dd.path('probs', ids[0])}: class-probability stack; pass --label L")
    head = (Job(dd.spec, None, label, channels).share(dd), has_probs)
    rows = run(_set_metrics, head, [(i, str(set_files[i])) for i in ids])
    if label is not None and not any(seen for _, seen, _ in rows):
        raise SegcpError(f"{dd.folder('masks')}: no mask holds label {label}; check --label")
    per_image = {ident: metrics for ident, (metrics, _, _) in zip(ids, rows, strict=True)}
    note_unused(dd, None if has_probs else sets)  # after the work: a failure stays one line
    return {"segcp_version": __version__, "label": label, "distance_units": _units(any(has for _, _, has in rows))} | _summary(per_image)


def evaluate_dir(
    sets: StrPath | None,
    data: Data,
    *,
    label: int | None = None,
    out: StrPath | None = None,
    show_progress: bool = True,
    calib: StrPath | None = None,
    draws: int = 100,
    seed: int = 0,
    overrides: dict[str, Any] | None = None,
    executor: Executor = IN_PROCESS,
    chunk_size: int | None = None,
    groups: str | None = None,
) -> dict[str, Any]:
    """Metrics of sets against a data directory's truth: of ``sets`` (a ``predict`` folder; stretch against
    the model's own mask when probs/ is there) or of the sets of ``calib`` made on the fly (sets of
    segmentations: ``covered`` — the guarantee's event, exact — ``score`` and the metrics of ``draws``
    draws); per structure for a per-structure calibration (``sets/<name>/`` when given). Distances in
    the data's units or pixels; the same on every ``executor``. A calibration of chosen losses adds each
    loss per image (``loss_<name>``) and ``controlled``: each loss's mean against its α, overall and per
    group (``groups``: as for ``predict``).
    """
    seed = check_seed(seed)
    check_chunk_size(chunk_size)
    if calib is not None and int(draws) < 1:
        raise SegcpError(f"--draws must be at least 1, got {draws}")

    def run(fn: Callable[[Any], list[Any]], head: tuple[Any, ...], items: list[Any]) -> list[Any]:
        return map_ids(executor, fn, head, items, description="evaluating", show_progress=show_progress, chunk_size=chunk_size)

    if calib is None:
        result = _evaluate_sets(sets, data, label, out, run)
    else:
        result = _evaluate_calibrated(read_calibration(calib, overrides), data, sets, out, int(draws), seed, run, groups)
    if out is not None:
        write_json(out, result)
    return result


def _evaluate_calibrated(
    cal: Calibration, data: Data, sets: StrPath | None, out: StrPath | None, draws: int, seed: int, run: Run, groups: str | None = None
) -> dict[str, Any]:
    """Metrics of the sets of a calibration, made on the fly or read from ``sets``."""
    if sets is not None:
        cal = _made_by(Path(sets), cal)
    models = calibrated_models(cal)
    fam = models[0].method_
    if out is not None:
        check_output(out, [cal.path, *([sets] if sets is not None else []), *data_inputs(data)])
    dd = DataDir(data)
    job, ids = job_of(dd, cal, fam, with_truth=True, images=sets is None)
    if models[0].losses_:
        from segcp.jobs.risk import case_groups

        names = case_groups(models[0], groups, ids, str(cal.path))
        for m in models:
            m.case_groups = names
    elif groups is not None:
        raise SegcpError(f"{cal.path}: --groups is for a calibration made per group (calibrate --loss ... --groups)")
    subs = [s.name for s in cal.structures] or [""]
    if sets is not None and not cal.per_structure:
        raise SegcpError("evaluate: --calib with --sets is for per-structure calibrations; give --sets alone (and --label) for one structure")
    set_files = _set_folders(Path(sets), subs, ids) if sets is not None else None
    rows = run(_calibrated_chunk, (job, models, set_files, draws, seed), list(enumerate(ids)))
    note_unused(dd)  # after the work: a failure stays one line
    per: list[dict[str, Metrics]] = [{ident: slots[k][0] for ident, (slots, _) in zip(ids, rows, strict=True)} for k in range(len(subs))]
    drawn = any(is_drawn for slots, _ in rows for _, is_drawn in slots)
    units = _units(any(has for _, has in rows))
    if cal.per_structure:
        parts = (cal.structures, models, per)
        structures = {
            s.name: {"label": s.value, "lambda": m.lambda_, "alpha": next(iter(m.lambdas_))} | _summary(p) for s, m, p in zip(*parts, strict=True)
        }
        if models[0].losses_:  # RiskSegmenters: each structure's controlled risks (per group)
            from segcp.jobs.risk import controlled_risks

            for s, m, p in zip(*parts, strict=True):
                structures[s.name] |= controlled_risks(m, p)
        overall = {m: float(np.nanmean([st["mean"][m] for st in structures.values()])) for m in next(iter(structures.values()))["mean"]}
        head = {"segcp_version": __version__, "method": cal.record.get("method"), "n": len(ids), "distance_units": units}
        return head | {"mean_over_structures": overall, "structures": structures}
    cs = models[0]
    result = {"segcp_version": __version__, "method": fam.name, "params": fam.params(), "alpha": float(next(iter(cs.lambdas_)))}
    result |= {"lambda": cs.lambda_, "label": cal.label}
    result |= {"beta": fam.agreement_level, "draws": draws} if drawn else {"distance_units": units}
    result |= _summary(per[0])
    if cs.losses_:  # a RiskSegmenter: the controlled risks, overall and per group
        from segcp.jobs.risk import controlled_risks

        result |= controlled_risks(cs, per[0])
    return result
