"""Segmentation models (torch, CPU-friendly): a 2D UNet, its training and batched inference.

- :mod:`segcp.harness.models.unet`: :class:`~segcp.harness.models.unet.UNet` (4 down-sampling levels,
  BatchNorm, optional channel dropout for MC dropout).
- :mod:`segcp.harness.models.train`: :class:`~segcp.harness.models.train.TrainConfig`, training on a task's
  training patients or on a data directory (2D images, or the slices of 3D volumes),
  checkpoints that record task, split, preprocessing, settings and validation metrics.
- :mod:`segcp.harness.models.infer`: batched, seeded inference (MC dropout, deep ensembles) that
  writes the CLI data-directory layout on the original grid of every image; 3D volumes slice
  by slice, written back on the volume's grid and NIfTI header.
- :mod:`segcp.harness.models.losses`: cross-entropy and nnU-Net's Dice + cross-entropy (``--loss dice_ce``).

This package is the only one that trains or runs a network with torch; ``import segcp`` works
without it (``pip install "segcp[harness]"`` after torch).
"""

from __future__ import annotations

__all__ = ["require_torch"]


def require_torch(what: str = "the UNet (segcp train, segcp infer)") -> None:
    """Raise a one-line :class:`~segcp.errors.SegcpError` naming the extra when torch is not installed."""
    from segcp.harness import require

    require(what, "torch")
