"""segcp: conformal prediction sets for medical image segmentation.

Given a model's probability maps (or sampled outputs) and a small labelled calibration set,
segcp returns prediction sets with a finite-sample guarantee (conformal risk control,
E[false-negative rate] <= alpha, or P(ground truth in set) >= 1 - alpha).

The Python API: :class:`Case` (one image's inputs and truth), :class:`ConformalSegmenter`
(one estimator for every set family), :class:`LossCurves` (the map/reduce currency of
calibration), :class:`RiskSegmenter` (any registered loss — FDR/precision, lesion FNR, several
at once — per group if asked), :func:`available_methods` / :func:`get_method` (the registry of families).
They are imported on first use, so that ``import segcp`` (and ``segcp --version``) is cheap.
"""

from segcp._version import __version__
from segcp.registry import lazy_attributes

_EXPORTS = {
    "Case": "segcp.cases",
    "ConformalSegmenter": "segcp.conformal",
    "LossCurves": "segcp.calibration",
    "RiskSegmenter": "segcp.risk",
    "SegcpError": "segcp.errors",
    "available_methods": "segcp.methods",
    "get_method": "segcp.methods",
}

__all__ = ["Case", "ConformalSegmenter", "LossCurves", "RiskSegmenter", "SegcpError", "__version__", "available_methods", "get_method"]


__getattr__ = lazy_attributes(__name__, _EXPORTS)


def __dir__() -> list[str]:
    return sorted(__all__)
