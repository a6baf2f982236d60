"""Losses: what is controlled, one file per loss behind :class:`segcp.losses.base.Loss`, one registry.

==============  ================================================  ==========  ==============
name            loss of a set C against the truth Y               monotone    calibrated by
==============  ================================================  ==========  ==============
``fnr``         |Y \\ C| / |Y|                                     yes         exact CRC
``quantile``    1{|C ∩ Y| / |Y| < τ}                               yes (0/1)   conformal quantile
``lesion-fnr``  fraction of Y's connected components C misses     yes         exact CRC
``fdr``         |C \\ Y| / |C| (1 − precision; 0 for C = ∅)        no          Learn then Test
==============  ================================================  ==========  ==============

Importing this package makes the built-in losses available by name; each module is imported
when first used (``register_lazy``).
"""


from segcp.losses.base import (
    Loss,
    available_losses,
    covers,
    get_loss,
    loss_class,
    pixel_inputs,
    register,
    register_lazy,
)
from segcp.registry import lazy_classes

# The built-in losses: name → module (imported on first use). One line per loss.
register_lazy("fnr", "segcp.losses.fnr")
register_lazy("quantile", "segcp.losses.quantile")
register_lazy("lesion-fnr", "segcp.losses.lesion")
register_lazy("fdr", "segcp.losses.fdr")

_CLASSES = {"FNRLoss": "fnr", "QuantileLoss": "quantile", "LesionFNRLoss": "lesion-fnr", "FDRLoss": "fdr"}


__getattr__ = lazy_classes(__name__, _CLASSES, loss_class)  # the loss classes, imported on first use


__all__ = [
    "FDRLoss",
    "FNRLoss",
    "LesionFNRLoss",
    "Loss",
    "QuantileLoss",
    "available_losses",
    "covers",
    "get_loss",
    "loss_class",
    "pixel_inputs",
    "register",
    "register_lazy",
]
