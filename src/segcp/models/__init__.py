"""Segmentation models (torch, CPU-friendly): a 2D UNet, its training and batched inference.

- :mod:`segcp.models.unet`: :class:`~segcp.models.unet.UNet` (4 down-sampling levels,
  BatchNorm, optional channel dropout for MC dropout).
- :mod:`segcp.models.train`: :class:`~segcp.models.train.TrainConfig`, training on a task's
  training patients or on a data directory, checkpoints that record task, split,
  preprocessing, settings and validation metrics.
- :mod:`segcp.models.infer`: batched, seeded inference (MC dropout, deep ensembles) that
  writes the CLI data-directory layout on the original grid of every image.

This package is the only one that imports torch; ``import segcp`` works without it.
"""

from __future__ import annotations

__all__ = ["require_torch"]


def require_torch() -> None:
    """Raise a one-line :class:`~segcp.errors.SegcpError` when torch is not installed."""
    try:
        import torch  # noqa: F401
    except ImportError:
        from segcp.errors import SegcpError

        raise SegcpError(
            "models need torch, which is not installed; install torch first (e.g. pip install torch==2.13.0)"
        ) from None
