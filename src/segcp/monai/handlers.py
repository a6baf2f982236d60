"""``ConformalCalibrationHandler``: streaming calibration as an Ignite handler of a MONAI evaluator (needs
``pytorch-ignite``)."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from segcp.monai.calibration import ConformalCalibrator

try:
    from ignite.engine import Engine, Events
except ImportError as exc:  # pragma: no cover - exercised only without ignite
    raise ImportError("ConformalCalibrationHandler needs pytorch-ignite: pip install 'segcp[monai]'") from exc

__all__ = ["ConformalCalibrationHandler"]


def _pred_label(output: Any) -> tuple[Any, Any]:
    from monai.handlers import from_engine

    return from_engine(["pred", "label"])(output)


class ConformalCalibrationHandler:
    """Calibrate on what a ``SupervisedEvaluator`` or ``EnsembleEvaluator`` sees; write calib.json.

    Attach it to the evaluator (``val_handlers=[handler]`` or ``handler.attach(evaluator)``). Each
    iteration, ``output_transform(engine.state.output)`` gives (probabilities, labels) — by default the
    post-processed ``pred`` and ``label`` of each item (``from_engine(["pred", "label"])``; put
    ``Activationsd(softmax=True)`` and ``Invertd`` in the evaluator's ``postprocessing``) — and their loss
    curves are kept (:class:`~segcp.monai.ConformalCalibrator`: one batch in memory). When the epoch
    completes, λ̂ is computed and the record (``segcp calibrate``'s calib.json) is written to ``out``
    and kept in :attr:`record`; its λ̂ (per structure) is also put into ``engine.state.metrics``
    under ``<name>_lambda`` (``<name>_lambda_<structure>``).

    Parameters
    ----------
    out : the calib.json to write (None: only :attr:`record`).
    output_transform : engine output → (pred, label); for image-aware families (pred, label, image).
    name : the prefix of the λ̂ entries in ``engine.state.metrics``.
    options : :class:`~segcp.monai.ConformalCalibrator`'s (``method``, ``alpha``, ``labels``…).
    """

    def __init__(
        self,
        out: str | os.PathLike[str] | None = None,
        *,
        output_transform: Callable[[Any], tuple[Any, ...]] = _pred_label,
        name: str = "segcp",
        **options: Any,
    ) -> None:
        self.out = out
        self.output_transform = output_transform
        self.name = name
        self.calibrator = ConformalCalibrator(**options)
        self.record: dict[str, Any] | None = None

    def attach(self, engine: Engine) -> None:
        """Calibrate over each of ``engine``'s epochs (reset when one starts, written when it completes)."""
        engine.add_event_handler(Events.EPOCH_STARTED, self.reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.complete)

    def reset(self, engine: Engine | None = None) -> None:
        """Forget the curves of a previous epoch."""
        self.calibrator.reset()
        self.record = None

    def __call__(self, engine: Engine) -> None:
        """Add the curves of one iteration's items."""
        self.calibrator.update(*self.output_transform(engine.state.output))

    def complete(self, engine: Engine) -> None:
        """λ̂ from the epoch's curves; the record written to ``out`` and λ̂ put into ``engine.state.metrics``."""
        self.record = self.calibrator.write(self.out) if self.out is not None else self.calibrator.record()
        entries = self.record.get("structures")
        if entries:
            for e in entries:
                engine.state.metrics[f"{self.name}_lambda_{e['name']}"] = e["lambda"]
        else:
            engine.state.metrics[f"{self.name}_lambda"] = self.record["lambda"]
