"""segcp inside MONAI pipelines (the ``segcp[monai]`` extra), in MONAI's own idiom.

- :class:`ConformalSetsd` — a dictionary transform (``MapTransform``) for a post-processing
  chain: a model's probabilities (C, *S) (after ``Activationsd(softmax=True)``) → the calibrated
  sets of a calib.json, one channel per structure, uint8 (K, *S), as a MetaTensor with the
  probabilities' affine, metadata and applied operations, so that ``Invertd`` and ``SaveImaged``
  write the sets on the original image's grid.
- :class:`ConformalCalibrator` and :func:`calibrate_loader` — calibration from a MONAI data loader
  (and a model), streaming: one batch in memory, only the loss curves kept; the record is the
  calib.json of ``segcp calibrate`` (:func:`segcp.record.job_record`), one λ̂ per structure.
- :class:`ConformalCalibrationHandler` — the same calibration as an Ignite handler of a
  ``SupervisedEvaluator`` or ``EnsembleEvaluator`` (needs ``pytorch-ignite``; imported on first use).
- :class:`ConformalSetMetric` — coverage, FNR and stretch of the sets as a MONAI
  ``CumulativeIterationMetric`` (wrap it in ``monai.handlers.IgniteMetricHandler`` to see it in
  ``evaluator.state.metrics``).

Importing this package imports MONAI (and torch); the rest of segcp never imports it.
"""

from __future__ import annotations

try:
    import monai  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised only without MONAI
    raise ImportError("segcp.monai needs MONAI: install torch==2.13.0 first, then pip install 'segcp[monai]'") from exc

from segcp.monai.calibration import ConformalCalibrator, calibrate_loader
from segcp.monai.metrics import ConformalSetMetric
from segcp.monai.transforms import ConformalSetsd
from segcp.registry import lazy_attributes

__all__ = ["ConformalCalibrationHandler", "ConformalCalibrator", "ConformalSetMetric", "ConformalSetsd", "calibrate_loader"]


# needs pytorch-ignite: imported on first use
__getattr__ = lazy_attributes(__name__, {"ConformalCalibrationHandler": "segcp.monai.handlers"})
