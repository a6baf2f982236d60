"""segcp: conformal prediction sets for medical image segmentation.

Given a model's probability maps and a small labelled calibration set, segcp returns
prediction sets with a finite-sample guarantee (conformal risk control,
E[false-negative rate] <= alpha, or P(ground truth in set) >= 1 - alpha).
"""

__version__ = "0.1.0"

from segcp.conformal import ConformalSegmenter  # noqa: E402
from segcp.errors import SegcpError  # noqa: E402
from segcp.methods import Case  # noqa: E402

__all__ = ["Case", "ConformalSegmenter", "SegcpError", "__version__"]
