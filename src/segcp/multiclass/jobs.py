"""Data-directory jobs for the multi-class methods (behind ``segcp calibrate/evaluate``).

Data directory (see :mod:`segcp.io.datadir` for the other folders)::

    samples/<id>.npy   N sampled softmax maps, (N, L, *S) float in [0, 1] (MC dropout,
                       ensemble…); (N, *S) is read as binary foreground samples (L = 2)
    probs/<id>.<ext>   class probabilities (L, *S), or a (*S) foreground map (binary);
                       used by ``aps`` when there is no samples/ (or with ``source=probs``)
    masks/<id>.<ext>   ground-truth label maps, values in [0, L)

CONSIGN reads samples/; APS reads the mean of samples/ when it exists (the same μ as
CONSIGN) and probs/ otherwise. Images are processed in parallel over processes with
``n_jobs`` (a ``-p n_jobs=2`` parameter on the command line; not recorded).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from segcp import __version__
from segcp.calibration import check_alpha, check_calibration_size
from segcp.errors import SegcpError
from segcp.io import index_folder, read_array, read_json, write_json
from segcp.metrics import aggregate
from segcp.multiclass.agreement import check_class_probs, check_label_map, check_samples
from segcp.multiclass.diversity import draw_metrics
from segcp.multiclass.estimators import (
    MULTICLASS_METHODS,
    Consign,
    SegmentationSets,
    from_record,
    make_estimator,
    parallel_map,
)

__all__ = ["SOURCES", "calibrate_samples_dir", "evaluate_samples_dir"]

SOURCES = ("auto", "samples", "probs")


def _folder(root: Path, sub: str) -> dict[str, Path] | None:
    folder = root / sub
    return index_folder(folder) if folder.is_dir() else None


def _resolve(root: Path, method: str, source: str) -> tuple[str, list[str], dict[str, Path], dict[str, Path]]:
    """(source, ids, input files, mask files) with one-line errors for missing/mismatched ids."""
    if not root.is_dir():
        raise SegcpError(f"{root}: data directory does not exist")
    if source not in SOURCES:
        raise SegcpError(f"source must be one of {', '.join(SOURCES)}, got {source!r}")
    samples, probs, masks = _folder(root, "samples"), _folder(root, "probs"), _folder(root, "masks")
    if method == "consign" or source == "samples" or (source == "auto" and samples is not None):
        src, inputs = "samples", samples
    else:
        src, inputs = "probs", probs
    if inputs is None:
        need = "samples/ (N, L, *S) sampled softmax maps" if src == "samples" else "probs/ or samples/"
        raise SegcpError(f"{root}: missing folder {need}")
    if not inputs:
        raise SegcpError(f"{root / src}: no .npy, .png, .nii or .nii.gz files")
    if masks is None:
        raise SegcpError(f"{root}: missing folder masks/ (ground-truth label maps)")
    missing = sorted(set(inputs) - set(masks))
    if missing:
        raise SegcpError(
            f"{root / 'masks'}: no file for id {missing[0]!r} (from {src}/{inputs[missing[0]].name})"
            + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
        )
    extra = sorted(set(masks) - set(inputs))
    if extra:
        raise SegcpError(f"{masks[extra[0]]}: no matching file in {src}/" + (f" ({len(extra) - 1} more unmatched)" if len(extra) > 1 else ""))
    return src, sorted(inputs), inputs, masks


def _load(src: str, x_path: Path, mask_path: Path) -> tuple[np.ndarray, np.ndarray, int]:
    """(x, truth, L): x = samples (N, L, *S) for ``samples``, class probabilities (L, *S) else."""
    m_raw, _ = read_array(mask_path)
    spatial = tuple(np.asarray(m_raw).shape)
    raw, _ = read_array(x_path)
    if src == "samples":
        x = check_samples(raw, str(x_path), spatial)
        n_labels = x.shape[1]
    else:
        if raw.dtype == np.uint8 and x_path.name.lower().endswith(".png"):
            raw = raw / 255.0
        x = check_class_probs(raw, str(x_path), spatial)
        n_labels = x.shape[0]
    truth = check_label_map(m_raw, str(mask_path), n_labels)
    return x, truth, n_labels


def _input_for(est: SegmentationSets, src: str, x: np.ndarray) -> Any:
    if isinstance(est, Consign):
        return est.decompose(x)
    return x.mean(axis=0) if src == "samples" else x


def _calib_one(job: tuple[dict[str, Any], str, Path, Path]) -> dict[str, Any]:
    record, src, x_path, mask_path = job
    est = make_estimator(record["method"], record["alpha"], record["params"])
    t0 = time.perf_counter()
    x, truth, n_labels = _load(src, x_path, mask_path)
    score = est.score(_input_for(est, src, x), truth)
    return {"score": score, "n_labels": n_labels, "seconds": time.perf_counter() - t0}


def _split_params(params: dict[str, Any] | None) -> tuple[dict[str, Any], int, str]:
    p = dict(params or {})
    n_jobs = int(p.pop("n_jobs", 1))
    source = str(p.pop("source", "auto"))
    return p, n_jobs, source


def calibrate_samples_dir(
    data: str | os.PathLike[str],
    *,
    method: str = "consign",
    alpha: float = 0.1,
    method_params: dict[str, Any] | None = None,
    out: str | os.PathLike[str] | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Calibrate ``consign`` or ``aps`` on a data directory; optionally write calib.json."""
    from segcp.pipeline import progress

    a = check_alpha(alpha)
    params, n_jobs, source = _split_params(method_params)
    if method not in MULTICLASS_METHODS:
        raise SegcpError(f"unknown multi-class method {method!r}; choose one of {', '.join(MULTICLASS_METHODS)}")
    est = make_estimator(method, a, params)
    root = Path(data)
    src, ids, inputs, masks = _resolve(root, method, source)
    check_calibration_size(len(ids), a)
    base = {"method": method, "alpha": a, "params": est.params()}
    jobs = [(base, src, inputs[i], masks[i]) for i in ids]
    t0 = time.perf_counter()
    if n_jobs > 1:
        results = parallel_map(_calib_one, jobs, n_jobs)
    else:
        results = [_calib_one(j) for j in progress(jobs, "calibrating", show_progress)]
    labels = {r["n_labels"] for r in results}
    if len(labels) > 1:
        raise SegcpError(f"{root / src}: images have different numbers of classes {sorted(labels)}")
    est.calibrate_scores([r["score"] for r in results])
    record = est.to_dict() | {
        "source": src,
        "n_labels": labels.pop(),
        "data": str(root),
        "ids": ids,
        "seconds": time.perf_counter() - t0,
        "n_jobs": n_jobs,
    }
    if out is not None:
        write_json(out, record)
    return record


def _eval_one(job: tuple[dict[str, Any], str, Path, Path, int, int]) -> dict[str, float]:
    record, src, x_path, mask_path, n_draws, seed = job
    est = from_record(record)
    x, truth, n_labels = _load(src, x_path, mask_path)
    xin = _input_for(est, src, x)
    t0 = time.perf_counter()
    score = est.score(xin, truth)
    t1 = time.perf_counter()
    draws = est.sample(xin, n_draws, np.random.default_rng(seed))
    t2 = time.perf_counter()
    out = {"score": score, "covered": float(score <= est.lambda_)}
    out |= draw_metrics(draws, truth, float(est.beta), n_labels)
    out |= {"seconds_score": t1 - t0, "seconds_draws": t2 - t1}
    return out


def evaluate_samples_dir(
    calib: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    draws: int = 100,
    seed: int = 0,
    out: str | os.PathLike[str] | None = None,
    show_progress: bool = True,
    n_jobs: int = 1,
) -> dict[str, Any]:
    """Draw ``draws`` segmentations per image from the calibrated sets and measure them.

    Per image: ``covered`` (λ*_i ≤ λ̂, the event of the guarantee, found by the same search as
    calibration), ``score`` (λ*_i), ``sec`` (some draw agrees up to β), ``chao`` (Chao1 of the
    draws), ``correlation`` (mean |Pearson| between draws) and ``distinct`` (distinct draws).
    ``mean`` averages them (``sec`` → SEC, ``covered`` → empirical coverage).
    """
    from segcp.pipeline import progress

    record = read_json(calib)
    if record.get("method") not in MULTICLASS_METHODS:
        raise SegcpError(f"{calib}: not a consign/aps calibration (method {record.get('method')!r}); use `segcp evaluate --sets`")
    est = from_record(record, where=str(calib))
    if int(draws) < 1:
        raise SegcpError(f"--draws must be at least 1, got {draws}")
    root = Path(data)
    src, ids, inputs, masks = _resolve(root, est.name, record.get("source", "auto"))
    jobs = [(record, src, inputs[i], masks[i], int(draws), int(np.random.SeedSequence([seed, k]).generate_state(1)[0]))
            for k, i in enumerate(ids)]
    if n_jobs > 1:
        rows = parallel_map(_eval_one, jobs, n_jobs)
    else:
        rows = [_eval_one(j) for j in progress(jobs, "evaluating", show_progress)]
    per_image = dict(zip(ids, rows))
    summary = aggregate(per_image)
    result = {
        "segcp_version": __version__,
        "method": est.name,
        "params": est.params(),
        "alpha": float(est.alpha),
        "beta": float(est.beta),
        "lambda": est.lambda_,
        "draws": int(draws),
        "n": summary["n"],
        "mean": summary["mean"],
        "std": summary["std"],
        "undefined": summary["undefined"],
        "per_image": per_image,
    }
    if out is not None:
        write_json(out, result)
    return result
