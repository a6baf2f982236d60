"""Directory jobs behind the CLI — calibrate, predict, evaluate — for every set family, each
a map over the ids of a data directory on an executor (:mod:`segcp.parallel`) reduced by index.
"""

from typing import TYPE_CHECKING

from segcp.registry import lazy_attributes

if TYPE_CHECKING:
    from segcp.jobs.calibrate import calibrate_dir
    from segcp.jobs.evaluate import evaluate_dir
    from segcp.jobs.predict import PREDICT_MANIFEST, predict_dir
    from segcp.jobs.tasks import Job, worker_family

# Each job imported on first use: `segcp calibrate` never imports predict's or evaluate's code.
__getattr__ = lazy_attributes(
    __name__,
    {
        "calibrate_dir": "segcp.jobs.calibrate",
        "evaluate_dir": "segcp.jobs.evaluate",
        "PREDICT_MANIFEST": "segcp.jobs.predict",
        "predict_dir": "segcp.jobs.predict",
        "Job": "segcp.jobs.tasks",
        "worker_family": "segcp.jobs.tasks",
    },
)

__all__ = ["PREDICT_MANIFEST", "Job", "calibrate_dir", "evaluate_dir", "predict_dir", "worker_family"]
