"""Training losses: cross-entropy (the default) and nnU-Net's Dice + cross-entropy.

``"ce"``: ``F.cross_entropy(logits, target)``, the mean over pixels of −log softmax[target].

``"dice_ce"``: nnU-Net v2's default loss for label maps, ``DC_and_CE_loss`` with
``weight_ce = weight_dice = 1`` and ``MemoryEfficientSoftDiceLoss(batch_dice=True,
do_bg=False, smooth=1e-5)`` (``nnunetv2/training/nnUNetTrainer/nnUNetTrainer.py``,
``_build_loss``; the soft Dice in ``nnunetv2/training/loss/dice.py``; ``batch_dice`` is True
for nnU-Net's 2D configuration, ``plan_2d['batch_dice'] = True`` in
``nnunetv2/experiment_planning/experiment_planners/default_experiment_planner.py``)::

    L = CE − SD,   SD = 1/(C−1) · Σ_{c=1}^{C−1} (2 Σ p_c y_c + s) / max(Σ p_c + Σ y_c + s, 1e-8)

with p = softmax(logits), y the one-hot target, s = 1e-5, the sums over the whole batch and
every pixel (``batch_dice``: one Dice per class for the batch, not one per image), and the
background class left out (``do_bg=False``). SD is the soft Dice, so L ∈ [−1, ∞) and can be
negative — nnU-Net logs it the same way. nnU-Net adds deep supervision (the same loss on
down-sampled outputs); segcp's UNet has a single output, so there is one term.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from segcp.errors import SegcpError
from segcp.harness.models.options import LOSSES

__all__ = ["DICE_SMOOTH", "LOSSES", "dice_ce_loss", "get_loss", "soft_dice"]

#: nnU-Net's ``smooth`` of the soft Dice.
DICE_SMOOTH = 1e-5


def soft_dice(logits: torch.Tensor, target: torch.Tensor, smooth: float = DICE_SMOOTH) -> torch.Tensor:
    """nnU-Net's batch soft Dice over the foreground classes (a scalar in (0, 1]).

    Parameters
    ----------
    logits : (B, C, *S) float, C ≥ 2 (class 0 = background).
    target : (B, *S) int64 class indices in 0..C−1.
    smooth : added to numerator and denominator (nnU-Net: 1e-5).
    """
    if logits.ndim < 3 or target.shape != (logits.shape[0], *logits.shape[2:]):
        raise SegcpError(f"soft Dice: logits {tuple(logits.shape)} and target {tuple(target.shape)} do not match")
    n_classes = logits.shape[1]
    p = torch.softmax(logits, dim=1)[:, 1:]
    onehot = F.one_hot(target, n_classes).movedim(-1, 1)[:, 1:].to(p.dtype)
    axes = (0, *range(2, logits.ndim))
    intersect = (p * onehot).sum(axes)
    denom = torch.clamp(p.sum(axes) + onehot.sum(axes) + smooth, min=1e-8)
    return ((2 * intersect + smooth) / denom).mean()


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """nnU-Net's Dice + cross-entropy, ``CE − soft Dice`` (equal weights; see the module docstring)."""
    return F.cross_entropy(logits, target) - soft_dice(logits, target)


def get_loss(name: str) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loss function ``(logits (B, C, *S), target (B, *S) int64) → scalar`` named ``name``."""
    if name == "ce":
        return F.cross_entropy
    if name == "dice_ce":
        return dice_ce_loss
    raise SegcpError(f"loss={name!r}: expected one of {', '.join(LOSSES)}")
