"""Risk control: step-function loss curves, exact CRC and conformal quantiles, Learn then Test,
and the statistics that monitor a deployed guarantee.

Knows about λ, α, n and the bounds; knows nothing about images, files or torch.
"""

from typing import TYPE_CHECKING

from segcp.calibration.crc import TOL, CRCResult, check_alpha, check_calibration_size, conformal_quantile, crc_lambda, min_calibration_size
from segcp.calibration.curves import LossCurves, coverage_quantile_score, fnr_curve, zero_one_curve
from segcp.calibration.intervals import INTERVAL_SCORES, IntervalFit, fit_interval, interval_bounds, interval_scores
from segcp.registry import lazy_attributes

if TYPE_CHECKING:
    from segcp.calibration.band import BAND_SCHEMES, BandLambdas, band_lambdas
    from segcp.calibration.ltt import LTTResult, MultiLTTResult, StepLosses, hb_pvalue, ltt_chains, ltt_grid, ltt_steps, wsr_pvalue
    from segcp.calibration.monitor import exchangeability_martingale, required_lambda, risk_track, two_sample_shift

# The two-sided calibration, Learn then Test and the monitor, imported on first use (a one-sided CRC
# calibration never needs them).
__getattr__ = lazy_attributes(
    __name__,
    {
        "BAND_SCHEMES": "segcp.calibration.band",
        "BandLambdas": "segcp.calibration.band",
        "band_lambdas": "segcp.calibration.band",
        "LTTResult": "segcp.calibration.ltt",
        "MultiLTTResult": "segcp.calibration.ltt",
        "StepLosses": "segcp.calibration.ltt",
        "hb_pvalue": "segcp.calibration.ltt",
        "ltt_chains": "segcp.calibration.ltt",
        "ltt_grid": "segcp.calibration.ltt",
        "ltt_steps": "segcp.calibration.ltt",
        "wsr_pvalue": "segcp.calibration.ltt",
        "exchangeability_martingale": "segcp.calibration.monitor",
        "required_lambda": "segcp.calibration.monitor",
        "risk_track": "segcp.calibration.monitor",
        "two_sample_shift": "segcp.calibration.monitor",
    },
)

__all__ = [
    "BAND_SCHEMES",
    "INTERVAL_SCORES",
    "TOL",
    "BandLambdas",
    "CRCResult",
    "IntervalFit",
    "LTTResult",
    "LossCurves",
    "MultiLTTResult",
    "StepLosses",
    "band_lambdas",
    "check_alpha",
    "check_calibration_size",
    "conformal_quantile",
    "coverage_quantile_score",
    "crc_lambda",
    "exchangeability_martingale",
    "fit_interval",
    "fnr_curve",
    "hb_pvalue",
    "interval_bounds",
    "interval_scores",
    "ltt_chains",
    "ltt_grid",
    "ltt_steps",
    "min_calibration_size",
    "required_lambda",
    "risk_track",
    "two_sample_shift",
    "wsr_pvalue",
    "zero_one_curve",
]
