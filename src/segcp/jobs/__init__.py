"""Directory jobs behind the CLI: calibrate, predict, evaluate — for every set family.

Each job maps per-image work (read, build a curve, a set or metrics) over the ids of a data
directory on an executor (:mod:`segcp.parallel`: this process, a process pool or a Dask
cluster — one code path) and reduces the results by index. What a task carries and how
workers read through it: :mod:`segcp.jobs.tasks`; every structure in one call:
:mod:`segcp.jobs.structures`; the calibration record: :mod:`segcp.record`.
"""

from segcp.jobs.calibrate import calibrate_dir
from segcp.jobs.evaluate import evaluate_dir
from segcp.jobs.predict import PREDICT_MANIFEST, complete_set, predict_dir
from segcp.jobs.tasks import Job, check_seed, datadir, draw_seed, holds_label, map_ids, worker_family

__all__ = [
    "PREDICT_MANIFEST",
    "Job",
    "calibrate_dir",
    "check_seed",
    "complete_set",
    "datadir",
    "draw_seed",
    "evaluate_dir",
    "holds_label",
    "map_ids",
    "predict_dir",
    "worker_family",
]
