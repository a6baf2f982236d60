"""Set families: one file per method behind :class:`segcp.methods.base.SetMethod`.

Importing this package registers the built-in methods.
"""

from segcp.methods.base import (
    GUARANTEES,
    Case,
    SetMethod,
    available_methods,
    binarize_mask,
    check_probabilities,
    get_method,
    register,
)
from segcp.methods.morph import MorphMethod
from segcp.methods.rwcp import RWCPMethod
from segcp.methods.threshold import ThresholdMethod

__all__ = [
    "GUARANTEES",
    "Case",
    "MorphMethod",
    "RWCPMethod",
    "SetMethod",
    "ThresholdMethod",
    "available_methods",
    "binarize_mask",
    "check_probabilities",
    "get_method",
    "register",
]
