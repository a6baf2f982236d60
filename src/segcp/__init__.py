"""segcp: conformal prediction sets for medical image segmentation.

Given a model's probability maps (or sampled outputs) and a small labelled calibration set,
segcp returns prediction sets with a finite-sample guarantee (conformal risk control,
E[false-negative rate] <= alpha, or P(ground truth in set) >= 1 - alpha).

The Python API: :class:`Case` (one image's inputs and truth), :class:`ConformalSegmenter`
(one estimator for every set family), :class:`LossCurves` (the map/reduce currency of
calibration), :func:`available_methods` / :func:`get_method` (the registry of families).
"""

from segcp._version import __version__
from segcp.calibration import LossCurves
from segcp.cases import Case
from segcp.conformal import ConformalSegmenter
from segcp.errors import SegcpError
from segcp.methods import available_methods, get_method

__all__ = ["Case", "ConformalSegmenter", "LossCurves", "SegcpError", "__version__", "available_methods", "get_method"]
