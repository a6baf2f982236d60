"""Directory jobs behind the CLI — calibrate, predict, evaluate — for every set family, each
a map over the ids of a data directory on an executor (:mod:`segcp.parallel`) reduced by index.
"""

from segcp.jobs.calibrate import calibrate_dir
from segcp.jobs.evaluate import evaluate_dir
from segcp.jobs.predict import PREDICT_MANIFEST, predict_dir
from segcp.jobs.tasks import Job, worker_family

__all__ = ["PREDICT_MANIFEST", "Job", "calibrate_dir", "evaluate_dir", "predict_dir", "worker_family"]
