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

Importing this package makes the built-in losses available by name (and their classes as its
attributes); each module is imported when first used (``register_builtins``).
"""

from segcp.losses.base import (
    SCORES,
    Loss,
    available_losses,
    controlled_losses,
    covers,
    get_loss,
    loss_class,
    pixel_inputs,
    register,
    register_builtins,
    register_lazy,
)

# The built-in losses: name → "module:class" (imported on first use; the classes are this package's
# attributes). One line per loss.
__getattr__ = register_builtins(
    __name__,
    {
        "fnr": "segcp.losses.fnr:FNRLoss",
        "quantile": "segcp.losses.quantile:QuantileLoss",
        "lesion-fnr": "segcp.losses.lesion:LesionFNRLoss",
        "fdr": "segcp.losses.fdr:FDRLoss",
        "band": "segcp.losses.band:BandLoss",
        "band-risk": "segcp.losses.band_risk:BandRiskLoss",
    },
)


def guarantee_loss(guarantee: str, tau: float = 1.0) -> Loss:
    """The loss behind an estimator guarantee that is a registered loss of the signed score
    (``band`` with its τ, ``band-risk``: :data:`segcp.methods.base.BAND_GUARANTEES`)."""
    return get_loss(guarantee, **({"tau": tau} if guarantee == "band" else {}))


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
