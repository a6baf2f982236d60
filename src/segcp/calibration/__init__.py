"""Risk control: step-function loss curves, exact CRC and conformal quantiles.

Knows about λ, α, n and the bounds; knows nothing about images, files or torch.
"""

from segcp.calibration.crc import (
    TOL,
    CRCResult,
    check_alpha,
    check_calibration_size,
    conformal_quantile,
    crc_lambda,
    min_calibration_size,
)
from segcp.calibration.curves import (
    LossCurves,
    coverage_quantile_score,
    fnr_curve,
    zero_one_curve,
)

__all__ = [
    "TOL",
    "CRCResult",
    "LossCurves",
    "check_alpha",
    "check_calibration_size",
    "conformal_quantile",
    "coverage_quantile_score",
    "crc_lambda",
    "fnr_curve",
    "min_calibration_size",
    "zero_one_curve",
]
