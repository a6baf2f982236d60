"""`ConformalSegmenter`: a set method + a guarantee, calibrated on labelled cases.

This is the Python API most users need::

    from segcp import ConformalSegmenter, Case
    cs = ConformalSegmenter("threshold", alpha=0.1).calibrate(calibration_cases)
    cs.lambda_                  # calibrated λ̂
    sets = [cs.predict(c) for c in test_cases]

Calibration is map/reduce: :meth:`ConformalSegmenter.curves` turns cases into loss
curves (any batch, any machine), :meth:`ConformalSegmenter.calibrate_curves` turns the
concatenated curves into λ̂.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp import __version__
from segcp.calibration import CRCResult, LossCurves, check_alpha, crc_lambda
from segcp.errors import SegcpError
from segcp.methods import GUARANTEES, Case, SetMethod, get_method

__all__ = ["ConformalSegmenter"]


def _describe(guarantee: str, alpha: float, tau: float) -> str:
    if guarantee == "fnr":
        return f"E[FNR] <= {alpha:g} (conformal risk control, marginal over exchangeable images)"
    return f"P(coverage >= {tau:g}) >= {1 - alpha:g} (conformal quantile, marginal over exchangeable images)"


class ConformalSegmenter:
    """Calibrate a set method so that its sets carry a finite-sample guarantee.

    Parameters
    ----------
    method : str or SetMethod
        A registered method name (``"threshold"``, …) or an instance.
    alpha : float
        Risk level in (0, 1).
    guarantee : {"fnr", "quantile"}
        ``"fnr"``: E[false-negative rate] ≤ α by exact conformal risk control.
        ``"quantile"``: P(coverage ≥ τ) ≥ 1 − α by the conformal quantile (τ = 1 means
        the whole ground truth is inside the set).
    tau : float
        Coverage ratio for ``guarantee="quantile"``.
    method_params : dict
        Hyper-parameters passed to the method when ``method`` is a name.

    Attributes
    ----------
    lambda_ : float
        Calibrated λ̂ (after :meth:`calibrate`).
    n_ : int
        Number of calibration images.
    result_ : CRCResult
        Details of the calibration (empirical risk, bound).
    """

    def __init__(
        self,
        method: str | SetMethod = "threshold",
        alpha: float = 0.1,
        *,
        guarantee: str = "fnr",
        tau: float = 1.0,
        method_params: dict[str, Any] | None = None,
    ) -> None:
        self.method = method
        self.alpha = alpha
        self.guarantee = guarantee
        self.tau = tau
        self.method_params = dict(method_params or {})

    # ------------------------------------------------------------------ helpers
    def _method(self) -> SetMethod:
        if isinstance(self.method, SetMethod):
            return self.method
        return get_method(self.method, **self.method_params)

    def _validate(self) -> SetMethod:
        check_alpha(self.alpha)
        if self.guarantee not in GUARANTEES:
            raise SegcpError(f"unknown guarantee {self.guarantee!r}; choose one of {', '.join(GUARANTEES)}")
        if not 0.0 < float(self.tau) <= 1.0:
            raise SegcpError(f"tau must be in (0, 1], got {self.tau}")
        return self._method()

    def __repr__(self) -> str:
        name = self.method if isinstance(self.method, str) else repr(self.method)
        return f"ConformalSegmenter(method={name!r}, alpha={self.alpha!r}, guarantee={self.guarantee!r}, tau={self.tau!r})"

    # ------------------------------------------------------------------ calibration
    def curves(self, cases: Iterable[Case]) -> LossCurves:
        """Map step: the loss curve of every case (needs masks). Curves concatenate."""
        m = self._validate()
        return LossCurves.concat([m.loss_curve(c, self.guarantee, self.tau) for c in cases])

    def calibrate_curves(self, curves: LossCurves) -> ConformalSegmenter:
        """Reduce step: λ̂ from (possibly merged) curves."""
        m = self._validate()
        self.result_: CRCResult = crc_lambda(curves, float(self.alpha), lambda_min=m.lambda_min)
        self.lambda_ = self.result_.lambda_
        self.n_ = self.result_.n
        self.method_ = m
        return self

    def calibrate(self, cases: Iterable[Case]) -> ConformalSegmenter:
        """Calibrate on labelled cases; sets ``lambda_``, ``n_``, ``result_``."""
        return self.calibrate_curves(self.curves(cases))

    # ------------------------------------------------------------------ prediction
    def _check_fitted(self) -> SetMethod:
        if not hasattr(self, "lambda_"):
            raise SegcpError("ConformalSegmenter is not calibrated: call calibrate() or load a calib.json")
        return self.method_

    def predict(self, case: Case) -> NDArray[np.bool_]:
        """The calibrated prediction set of one case (bool, shape of ``case.probs``)."""
        return self._check_fitted().predict(case, self.lambda_)

    # ------------------------------------------------------------------ persistence
    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable record of the calibration (what ``calib.json`` holds)."""
        m = self._check_fitted()
        return {
            "segcp_version": __version__,
            "method": m.name,
            "params": m.params(),
            "alpha": float(self.alpha),
            "guarantee": self.guarantee,
            "tau": float(self.tau),
            "lambda": int(self.lambda_) if m.integer_lambda and float(self.lambda_).is_integer() else float(self.lambda_),
            "n": int(self.n_),
            "empirical_risk": float(self.result_.empirical_risk),
            "bound": float(self.result_.bound),
            "statement": _describe(self.guarantee, float(self.alpha), float(self.tau)),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "calibration record") -> ConformalSegmenter:
        """Rebuild a calibrated segmenter from :meth:`to_dict` output."""
        try:
            cs = cls(
                d["method"],
                alpha=float(d["alpha"]),
                guarantee=d.get("guarantee", "fnr"),
                tau=float(d.get("tau", 1.0)),
                method_params=d.get("params", {}),
            )
            lam, n = float(d["lambda"]), int(d["n"])
        except KeyError as exc:
            raise SegcpError(f"{where}: missing field {exc.args[0]!r}") from None
        except (TypeError, ValueError) as exc:
            raise SegcpError(f"{where}: malformed field ({exc})") from None
        m = cs._validate()
        cs.method_ = m
        cs.lambda_ = lam
        cs.n_ = n
        risk = float(d.get("empirical_risk", float("nan")))
        cs.result_ = CRCResult(lam, float(cs.alpha), n, risk, float(d.get("bound", float("nan"))))
        return cs
