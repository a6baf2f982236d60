"""Set families: one file per method behind :class:`segcp.methods.base.SetFamily`, one registry.

=============  ==========================================  ================================
name           family                                      reads (case / data directory)
=============  ==========================================  ================================
``threshold``  Standard CRC on raw probabilities           probs
``morph``      Consema: calibrated morphological margins   probs
``rwcp``       RW-CP: probabilities diffused over a kNN    probs, image
               graph of foundation-model features
``consign``    CONSIGN: sets of segmentations from the     samples
               top-K SVD modes of sampled outputs
``aps``        pixel-wise APS on the mean softmax          samples or class probabilities
=============  ==========================================  ================================

Importing this package registers the built-in families.
"""

from segcp.cases import Case, binarize_mask, check_probabilities
from segcp.methods.aps import APSMethod
from segcp.methods.base import (
    GUARANTEES,
    MaskFamily,
    Param,
    Prepared,
    SegmentationSet,
    SegmentationSetFamily,
    SetFamily,
    available_methods,
    family_class,
    get_method,
    param,
    register,
)
from segcp.methods.consign import ConsignMethod
from segcp.methods.morph import MorphMethod
from segcp.methods.rwcp import RWCPMethod
from segcp.methods.threshold import ThresholdMethod

__all__ = [
    "APSMethod",
    "GUARANTEES",
    "Case",
    "ConsignMethod",
    "MaskFamily",
    "MorphMethod",
    "Param",
    "Prepared",
    "RWCPMethod",
    "SegmentationSet",
    "SegmentationSetFamily",
    "SetFamily",
    "ThresholdMethod",
    "available_methods",
    "binarize_mask",
    "check_probabilities",
    "family_class",
    "get_method",
    "param",
    "register",
]
