"""The array operations of the graph code, on the CPU (numpy/scipy) or on a torch device.

The window kNN, the volume graph, the transition rows and the diffusion are written once
(:mod:`segcp.graph.knn`, :mod:`segcp.graph.volume`, :mod:`segcp.graph.diffusion`) against the
few operations below where numpy and torch spell things differently (padding, a sparse or
dense product with the bilinear pair matrices, the k-th smallest value of each row, segment
sums, sparse row blocks). :data:`NUMPY` is the default and computes exactly what segcp always
computed (the same numpy/scipy calls); :class:`TorchOps` runs the same steps on a torch device
(a GPU with ``device="cuda"``; the tests run it on CPU tensors and compare it with numpy).

Device choice (:func:`resolve_device`): ``"cpu"`` → numpy; ``"cuda"`` → torch on the GPU (a
one-line error when torch or CUDA is missing); ``"auto"`` → the GPU when torch sees one, else
numpy. On the GPU the float64 parts (token Gram, pixel dot products, transition weights,
diffusion) stay float64, distances float32, as on the CPU: the two paths differ by floating-point
summation order only (``docs/rwcp.md``, "Devices").
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import scipy.sparse as sp
from numpy.typing import NDArray

from segcp.errors import SegcpError
from segcp.graph.options import DEVICES
from segcp.graph.resize import pair_matrix

__all__ = ["DEVICES", "NUMPY", "NumpyOps", "TorchOps", "get_ops", "resolve_device"]


class NumpyOps:
    """numpy + scipy.sparse: the reference path (bit for bit what segcp computed before devices)."""

    name = "cpu"
    float32: Any = np.float32
    float64: Any = np.float64
    int64: Any = np.int64
    bool_: Any = np.bool_
    inf = np.inf

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        return np.asarray(a, dtype=dtype)

    def numpy(self, a: Any) -> NDArray[Any]:
        return np.asarray(a)

    def contiguous(self, a: Any, dtype: Any = None) -> Any:
        return np.ascontiguousarray(a, dtype=dtype)

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return np.empty(shape, dtype=dtype)

    def full(self, shape: tuple[int, ...], value: float, dtype: Any) -> Any:
        return np.full(shape, value, dtype=dtype)

    def zeros(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return np.zeros(shape, dtype=dtype)

    def arange(self, n: int) -> Any:
        return np.arange(n, dtype=np.int64)

    def permute(self, a: Any, axes: tuple[int, ...]) -> Any:
        return a.transpose(axes)

    def pad_hw(self, a: Any, py: int, px: int) -> Any:
        """Zero padding of the first two axes of (h, w, ...)."""
        return np.pad(a, ((py, py), (px, px)) + ((0, 0),) * (a.ndim - 2))

    def pad2(self, a: Any, r: int, value: float) -> Any:
        """Constant padding of a 2D array by r on every side."""
        return np.pad(a, r, constant_values=value)

    def windows(self, a: Any, size: int, axis: int) -> Any:
        return np.lib.stride_tricks.sliding_window_view(a, size, axis=axis)

    def rowdot(self, a: Any, b: Any) -> Any:
        """Σ_c a[i, j, c] b[i, j, c] for (h, w, d) arrays."""
        return np.einsum("ijc,ijc->ij", a, b)

    def pair(self, n_tok: int, n_pix: int, shift: int, span: int) -> Any:
        return pair_matrix(n_tok, n_pix, shift, span)

    def add_one_into(self, blk: Any, out: Any) -> None:
        """out[...] = blk + 1 (float64 sum, stored in out's float32)."""
        np.add(blk, 1.0, out=out, casting="same_kind")

    def kth_smallest(self, D: Any, k: int) -> Any:
        """The k-th smallest value of each row of D (N, M)."""
        return np.partition(D, k - 1, axis=1)[:, k - 1]

    def isinf_any(self, x: Any) -> bool:
        return bool(np.isinf(x).any())

    def isfinite(self, x: Any) -> Any:
        return np.isfinite(x)

    def count_rows(self, mask: Any) -> Any:
        return np.count_nonzero(mask, axis=1)

    def flatnonzero(self, mask: Any) -> Any:
        return np.flatnonzero(mask)

    def indptr(self, counts: Any) -> Any:
        out = np.zeros(counts.shape[0] + 1, dtype=np.int64)
        np.cumsum(counts, out=out[1:])
        return out

    def repeat(self, a: Any, counts: Any) -> Any:
        return np.repeat(a, counts)

    def concat(self, arrays: list[Any], axis: int = 0) -> Any:
        return np.concatenate(arrays, axis=axis)

    def maximum0(self, a: Any) -> Any:
        np.maximum(a, 0.0, out=a)
        return a

    def exp_weights(self, x: Any, b: float) -> Any:
        """exp(−b·x) in float32 (2× faster than float64, 1e-7 relative), returned as float64."""
        return np.exp((-b * x).astype(np.float32)).astype(np.float64)

    def segment_sums(self, data: Any, indptr: Any) -> Any:
        """Σ of data over each segment [indptr[i], indptr[i+1]) (segments non-empty)."""
        return np.add.reduceat(data, indptr[:-1])

    def segment_min(self, data: Any, starts: Any, ends: Any) -> Any:
        """min of data over each segment [starts[i], ends[i]) (non-empty, consecutive up to empty ones)."""
        return np.minimum.reduceat(data, starts)

    def sparse_rows(self, data: Any, indices: Any, indptr: Any, shape: tuple[int, int]) -> Any:
        return sp.csr_matrix((data, indices, indptr), shape=shape)

    def matvec(self, P: Any, x: Any) -> Any:
        return P @ x

    def nnz(self, P: Any) -> int:
        return int(P.nnz)

    def clip(self, a: Any, lo: float, hi: float) -> Any:
        return np.clip(a, lo, hi)


class TorchOps:
    """The same operations with torch on ``device`` (float64 kept where numpy uses it)."""

    def __init__(self, device: Any) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        self.name = str(self.device)
        self.float32 = torch.float32
        self.float64 = torch.float64
        self.int64 = torch.int64
        self.bool_ = torch.bool
        self.inf = float("inf")

    def _t(self, a: Any, dtype: Any = None) -> Any:
        t = self.torch
        if isinstance(a, t.Tensor):
            return a.to(device=self.device, dtype=dtype) if dtype is not None else a.to(self.device)
        arr = np.asarray(a)
        out = t.as_tensor(arr, device=self.device)
        if dtype is not None:
            out = out.to(dtype)
        elif out.dtype == t.float16:
            out = out.float()
        return out

    def asarray(self, a: Any, dtype: Any = None) -> Any:
        if dtype is np.float64:
            dtype = self.float64
        elif dtype is np.float32:
            dtype = self.float32
        return self._t(a, dtype)

    def numpy(self, a: Any) -> NDArray[Any]:
        return a.detach().cpu().numpy() if isinstance(a, self.torch.Tensor) else np.asarray(a)

    def contiguous(self, a: Any, dtype: Any = None) -> Any:
        return self.asarray(a, dtype).contiguous()

    def empty(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self.torch.empty(shape, dtype=dtype, device=self.device)

    def full(self, shape: tuple[int, ...], value: float, dtype: Any) -> Any:
        return self.torch.full(shape, value, dtype=dtype, device=self.device)

    def zeros(self, shape: tuple[int, ...], dtype: Any) -> Any:
        return self.torch.zeros(shape, dtype=dtype, device=self.device)

    def arange(self, n: int) -> Any:
        return self.torch.arange(n, dtype=self.torch.int64, device=self.device)

    def permute(self, a: Any, axes: tuple[int, ...]) -> Any:
        return a.permute(*axes)

    def pad_hw(self, a: Any, py: int, px: int) -> Any:
        import torch.nn.functional as F

        return F.pad(a, (0, 0) * (a.ndim - 2) + (px, px, py, py))

    def pad2(self, a: Any, r: int, value: float) -> Any:
        import torch.nn.functional as F

        return F.pad(a, (r, r, r, r), value=value)

    def windows(self, a: Any, size: int, axis: int) -> Any:
        return a.unfold(axis, size, 1)

    def rowdot(self, a: Any, b: Any) -> Any:
        return (a * b).sum(dim=-1)

    def pair(self, n_tok: int, n_pix: int, shift: int, span: int) -> Any:
        return _torch_pair(n_tok, n_pix, shift, span, str(self.device))

    def add_one_into(self, blk: Any, out: Any) -> None:
        out.copy_(blk + 1.0)

    def kth_smallest(self, D: Any, k: int) -> Any:
        return self.torch.kthvalue(D, k, dim=1).values

    def isinf_any(self, x: Any) -> bool:
        return bool(self.torch.isinf(x).any())

    def isfinite(self, x: Any) -> Any:
        return self.torch.isfinite(x)

    def count_rows(self, mask: Any) -> Any:
        return mask.sum(dim=1)

    def flatnonzero(self, mask: Any) -> Any:
        return self.torch.nonzero(mask.reshape(-1)).reshape(-1)

    def indptr(self, counts: Any) -> Any:
        out = self.torch.zeros(counts.shape[0] + 1, dtype=self.torch.int64, device=self.device)
        out[1:] = self.torch.cumsum(counts, 0)
        return out

    def repeat(self, a: Any, counts: Any) -> Any:
        return self.torch.repeat_interleave(self._t(a), self._t(counts))

    def concat(self, arrays: list[Any], axis: int = 0) -> Any:
        return self.torch.cat([self._t(a) for a in arrays], dim=axis)

    def maximum0(self, a: Any) -> Any:
        return a.clamp_(min=0.0)

    def exp_weights(self, x: Any, b: float) -> Any:
        return self.torch.exp((-b * x).to(self.torch.float32)).to(self.torch.float64)

    def segment_sums(self, data: Any, indptr: Any) -> Any:
        return self.torch.segment_reduce(data, "sum", offsets=indptr)

    def segment_min(self, data: Any, starts: Any, ends: Any) -> Any:
        return self.torch.segment_reduce(data, "min", lengths=ends - starts)

    def sparse_rows(self, data: Any, indices: Any, indptr: Any, shape: tuple[int, int]) -> Any:
        import warnings

        t = self.torch
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "CSR support is in beta": it is what the GPU offers
            return t.sparse_csr_tensor(self._t(indptr, t.int64), self._t(indices, t.int64), self._t(data), size=shape, check_invariants=False)

    def matvec(self, P: Any, x: Any) -> Any:
        return (P @ x.reshape(-1, 1)).reshape(-1)

    def nnz(self, P: Any) -> int:
        return int(P.values().numel())

    def clip(self, a: Any, lo: float, hi: float) -> Any:
        return a.clamp(min=lo, max=hi)


@lru_cache(maxsize=512)
def _torch_pair(n_tok: int, n_pix: int, shift: int, span: int, device: str) -> Any:
    """The dense form of :func:`segcp.graph.resize.pair_matrix` on a device (it is small)."""
    import torch

    return torch.as_tensor(pair_matrix(n_tok, n_pix, shift, span).toarray(), device=torch.device(device))


NUMPY = NumpyOps()


def resolve_device(device: str | None) -> str:
    """``"cpu"`` or ``"cuda"`` for a requested device (``auto``: the GPU when torch sees one)."""
    d = "cpu" if device is None else str(device).strip().lower()
    if d not in DEVICES:
        raise SegcpError(f"device {device!r}: expected one of {', '.join(DEVICES)}")
    if d == "cpu":
        return "cpu"
    try:
        import torch
    except ImportError:
        if d == "auto":
            return "cpu"
        raise SegcpError("device cuda needs torch with CUDA (pip install torch, the CUDA build)") from None
    if torch.cuda.is_available():
        return "cuda"
    if d == "auto":
        return "cpu"
    raise SegcpError("device cuda: torch sees no CUDA GPU here (torch.cuda.is_available() is False); use --device cpu or auto")


def get_ops(device: str | None = "cpu") -> NumpyOps | TorchOps:
    """The operations for a resolved device: :data:`NUMPY` for ``cpu``, torch otherwise."""
    return NUMPY if device in (None, "cpu") else TorchOps(device)
