"""Losses: what is controlled, one file per loss behind :class:`segcp.losses.base.Loss`, one registry.

==============  ======================================================  ==========  ==================
name            loss of a set C against the truth Y                     monotone    calibrated by
==============  ======================================================  ==========  ==================
``fnr``         |Y \\ C| / |Y|                                          yes         exact CRC
``quantile``    1{|C ∩ Y| / |Y| < τ}                                    yes (0/1)   conformal quantile
``lesion-fnr``  fraction of Y's connected components C misses           yes         exact CRC
``fdr``         |C \\ Y| / |C| (1 − precision; 0 for C = ∅)             no          Learn then Test
``band``        1{not I ⊆ Y ⊆ O} (τ: outer recall, inner precision)     yes (0/1)   conformal quantile
``band-risk``   max(|Y \\ O| / |Y|, min(1, |I \\ Y| / |Y|))             yes         exact CRC
==============  ======================================================  ==========  ==================

``band`` and ``band-risk`` read a family's signed score t (``Loss.score == "signed"``): their
sets are the pair (I, O) of :func:`segcp.methods.base.band_sets`.

Importing this package makes the built-in losses available by name; each module is imported
when first used (``register_lazy``).
"""

from segcp.losses.base import SCORES, Loss, available_losses, controlled_losses, covers, get_loss, loss_class, pixel_inputs, register, register_lazy
from segcp.registry import lazy_classes

# The built-in losses: name → module (imported on first use). One line per loss.
register_lazy("fnr", "segcp.losses.fnr")
register_lazy("quantile", "segcp.losses.quantile")
register_lazy("lesion-fnr", "segcp.losses.lesion")
register_lazy("fdr", "segcp.losses.fdr")
register_lazy("band", "segcp.losses.band")
register_lazy("band-risk", "segcp.losses.band_risk")

_CLASSES = {
    "FNRLoss": "fnr",
    "QuantileLoss": "quantile",
    "LesionFNRLoss": "lesion-fnr",
    "FDRLoss": "fdr",
    "BandLoss": "band",
    "BandRiskLoss": "band-risk",
}


def guarantee_loss(guarantee: str, tau: float = 1.0) -> Loss:
    """The loss behind an estimator guarantee that is a registered loss of the signed score
    (``band`` with its τ, ``band-risk``: :data:`segcp.methods.base.BAND_GUARANTEES`)."""
    return get_loss(guarantee, **({"tau": tau} if guarantee == "band" else {}))


__getattr__ = lazy_classes(__name__, _CLASSES, loss_class)  # the loss classes, imported on first use


__all__ = [
    "SCORES",
    "BandLoss",
    "BandRiskLoss",
    "FDRLoss",
    "FNRLoss",
    "LesionFNRLoss",
    "Loss",
    "QuantileLoss",
    "available_losses",
    "controlled_losses",
    "covers",
    "get_loss",
    "guarantee_loss",
    "loss_class",
    "pixel_inputs",
    "register",
    "register_lazy",
]
