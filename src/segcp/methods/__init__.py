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

Importing this package makes the built-in families available by name; each family's module
is imported when it is first used (``register_lazy``).
"""

from segcp.cases import Case, binarize_mask, check_probabilities
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
    register_lazy,
)
from segcp.registry import lazy_classes

# The built-in families: name → module (imported on first use). One line per method.
register_lazy("threshold", "segcp.methods.threshold")
register_lazy("morph", "segcp.methods.morph")
register_lazy("rwcp", "segcp.methods.rwcp")
register_lazy("consign", "segcp.methods.consign")
register_lazy("aps", "segcp.methods.aps")

_CLASSES = {"ThresholdMethod": "threshold", "MorphMethod": "morph", "RWCPMethod": "rwcp", "ConsignMethod": "consign", "APSMethod": "aps"}


__getattr__ = lazy_classes(__name__, _CLASSES, family_class)  # the family classes, imported on first use


__all__ = [
    "GUARANTEES",
    "APSMethod",
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
    "register_lazy",
]
