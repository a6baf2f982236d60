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

Importing this package makes the built-in families available by name (and their classes as its
attributes); each family's module is imported when it is first used (``register_builtins``).
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
    register_builtins,
    register_lazy,
)

# The built-in families: name → "module:class" (imported on first use; the classes are this package's
# attributes). One line per method.
__getattr__ = register_builtins(
    __name__,
    {
        "threshold": "segcp.methods.threshold:ThresholdMethod",
        "morph": "segcp.methods.morph:MorphMethod",
        "rwcp": "segcp.methods.rwcp:RWCPMethod",
        "consign": "segcp.methods.consign:ConsignMethod",
        "aps": "segcp.methods.aps:APSMethod",
    },
)


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
