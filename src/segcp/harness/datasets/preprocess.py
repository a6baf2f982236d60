"""Optional preprocessing steps, recorded in a dict so a model checkpoint can store them.

Steps, applied in this order, each one optional (a :class:`Preprocessing` with defaults does
nothing but cast the image to float32):

1. **resample** to ``target_spacing`` when the spacing is known (linear for images, nearest
   for masks). Unknown spacing: skipped, and the record says so.
2. **intensity**: ``"percentile"`` clips to the 0.5th/99.5th percentiles and rescales to
   [0, 255]; ``"ct"`` clips to a Hounsfield window (default [−100, 240] HU) and rescales to
   [0, 255].
3. **size**: ``"resize"`` to a fixed shape (linear for images, nearest for masks), or
   ``"crop"``: centre crop / zero pad to it.

The record (``Preprocessed.record``) holds the configuration, the original shape and spacing
and every geometric step, so :func:`restore_to_original` maps a model's probability map back
onto the original grid of the mask, where the metrics and calibration are computed.

Resizing uses pixel-edge alignment (``grid_mode=True``: the image extent is scaled, as in
Pillow and ``align_corners=False``), so a resize and its inverse are consistent.

Examples
--------
>>> import numpy as np
>>> img = np.arange(12, dtype=np.float32).reshape(3, 4)
>>> out = preprocess(img, img > 5, config=Preprocessing(size=(6, 8)))
>>> out.image.shape, out.mask.shape, out.mask.dtype
((6, 8), (6, 8), dtype('bool'))
>>> restore_to_original(np.full((6, 8), 0.5), out.record).shape
(3, 4)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError

__all__ = [
    "Preprocessed",
    "Preprocessing",
    "center_crop_or_pad",
    "clip_percentiles",
    "ct_window",
    "preprocess",
    "resample_to_spacing",
    "resize_to_shape",
    "restore_to_original",
]

Intensity = Literal["none", "percentile", "ct"]
SizeMode = Literal["resize", "crop"]


@dataclass(frozen=True)
class Preprocessing:
    """What to do to an image (and its mask) before a model sees it.

    Attributes
    ----------
    target_spacing : voxel size per axis (same units as the data's spacing, NIfTI: mm), or
        None to keep the grid.
    intensity : ``"none"``, ``"percentile"`` (clip to ``percentiles``, rescale to [0, 255]) or
        ``"ct"`` (clip to ``ct_window`` in HU, rescale to [0, 255]).
    percentiles : (low, high) percentiles in [0, 100] for ``"percentile"``.
    ct_window : (low, high) HU for ``"ct"``.
    size : output shape per axis, or None to keep it.
    size_mode : ``"resize"`` (interpolate to ``size``) or ``"crop"`` (centre crop / zero pad).
    """

    target_spacing: tuple[float, ...] | None = None
    intensity: Intensity = "none"
    percentiles: tuple[float, float] = (0.5, 99.5)
    ct_window: tuple[float, float] = (-100.0, 240.0)
    size: tuple[int, ...] | None = None
    size_mode: SizeMode = "resize"

    def __post_init__(self) -> None:
        if self.target_spacing is not None:
            ts = tuple(float(s) for s in self.target_spacing)
            if not ts or any(not math.isfinite(s) or s <= 0 for s in ts):
                raise SegcpError(f"target_spacing={self.target_spacing!r}: must be positive numbers")
            object.__setattr__(self, "target_spacing", ts)
        if self.intensity not in ("none", "percentile", "ct"):
            raise SegcpError(f"intensity={self.intensity!r}: expected 'none', 'percentile' or 'ct'")
        lo, hi = (float(v) for v in self.percentiles)
        if not 0 <= lo < hi <= 100:
            raise SegcpError(f"percentiles={self.percentiles!r}: need 0 <= low < high <= 100")
        object.__setattr__(self, "percentiles", (lo, hi))
        wlo, whi = (float(v) for v in self.ct_window)
        if not (math.isfinite(wlo) and math.isfinite(whi) and wlo < whi):
            raise SegcpError(f"ct_window={self.ct_window!r}: need finite low < high")
        object.__setattr__(self, "ct_window", (wlo, whi))
        if self.size is not None:
            if any(isinstance(s, bool) or int(s) != s or int(s) < 1 for s in self.size) or not self.size:
                raise SegcpError(f"size={self.size!r}: must be positive integers")
            object.__setattr__(self, "size", tuple(int(s) for s in self.size))
        if self.size_mode not in ("resize", "crop"):
            raise SegcpError(f"size_mode={self.size_mode!r}: expected 'resize' or 'crop'")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples as lists); :meth:`from_dict` inverts it."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocessing:
        """Rebuild from :meth:`to_dict` output (unknown keys are an error)."""
        known = set(cls.__dataclass_fields__)
        extra = sorted(set(d) - known)
        if extra:
            raise SegcpError(f"preprocessing record: unknown keys {', '.join(extra)}")
        kw: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items()}
        return cls(**kw)


@dataclass
class Preprocessed:
    """Output of :func:`preprocess`: image float32, mask (dtype kept) or None, and the record."""

    image: NDArray[np.float32]
    mask: NDArray[Any] | None
    record: dict[str, Any]


# ------------------------------------------------------------------ basic steps
def _check_shape(shape: Sequence[int], ndim: int, what: str) -> tuple[int, ...]:
    out = tuple(int(s) for s in shape)
    if len(out) != ndim:
        raise SegcpError(f"{what}={tuple(shape)!r}: needs {ndim} values for a {ndim}D array")
    if any(s < 1 for s in out):
        raise SegcpError(f"{what}={tuple(shape)!r}: must be positive")
    return out


def resize_to_shape(array: NDArray[Any], shape: Sequence[int], order: int = 1) -> NDArray[Any]:
    """Resize an N-D array to exactly ``shape`` (pixel-edge aligned).

    ``order=1``: linear interpolation (``scipy.ndimage.zoom``, ``grid_mode=True``, edges
    replicated), output float32 (float64 kept). ``order=0``: nearest neighbour by index
    (pixel i of the output takes input pixel ⌊(i + ½)·n_in/n_out⌋), dtype kept — labels and
    bool masks stay exact.
    """
    from scipy import ndimage as ndi

    a = np.asarray(array)
    shape = _check_shape(shape, a.ndim, "shape")
    if a.shape == shape:
        return a.copy() if order == 0 else a.astype(np.float64 if a.dtype == np.float64 else np.float32)
    if order == 0:
        idx = [np.minimum(((np.arange(n_out) + 0.5) * (n_in / n_out)).astype(np.int64), n_in - 1) for n_in, n_out in zip(a.shape, shape)]
        return a[np.ix_(*idx)]
    if order != 1:
        raise SegcpError(f"order={order}: expected 0 (nearest) or 1 (linear)")
    src = a.astype(np.float64 if a.dtype == np.float64 else np.float32, copy=False)
    factors = [o / i for i, o in zip(a.shape, shape)]
    out = ndi.zoom(src, factors, order=1, mode="nearest", grid_mode=True)
    if out.shape != shape:  # guard against rounding in zoom's output-shape computation
        out = ndi.zoom(src, factors, output=np.empty(shape, dtype=src.dtype), order=1, mode="nearest", grid_mode=True)
    return out


def resample_to_spacing(
    array: NDArray[Any], spacing: Sequence[float], target_spacing: Sequence[float], order: int = 1
) -> tuple[NDArray[Any], tuple[float, ...]]:
    """Resample to a target voxel size; returns (array, actual spacing).

    The new shape is ``round(shape · spacing / target_spacing)`` (at least 1); the actual
    spacing is ``spacing · shape / new_shape`` (equal to the target up to rounding).
    ``order`` as in :func:`resize_to_shape` (1 for images, 0 for masks).
    """
    a = np.asarray(array)
    sp = tuple(float(s) for s in spacing)
    ts = tuple(float(s) for s in target_spacing)
    if len(sp) != a.ndim or len(ts) != a.ndim:
        raise SegcpError(f"spacing {sp} / target spacing {ts}: need {a.ndim} values for a {a.ndim}D array")
    if any(not math.isfinite(s) or s <= 0 for s in sp + ts):
        raise SegcpError(f"spacing {sp} / target spacing {ts}: must be positive numbers")
    new_shape = tuple(max(1, round(n * s / t)) for n, s, t in zip(a.shape, sp, ts))
    actual = tuple(s * n / m for s, n, m in zip(sp, a.shape, new_shape))
    return resize_to_shape(a, new_shape, order=order), actual


def _rescale(image: NDArray[Any], lo: float, hi: float) -> NDArray[np.float32]:
    x = np.asarray(image, dtype=np.float64)
    if not hi > lo:
        return np.zeros(x.shape, dtype=np.float32)
    return ((np.clip(x, lo, hi) - lo) * (255.0 / (hi - lo))).astype(np.float32)


def clip_percentiles(image: NDArray[Any], low: float = 0.5, high: float = 99.5) -> tuple[NDArray[np.float32], tuple[float, float]]:
    """Clip to the (low, high) percentiles and rescale linearly to [0, 255].

    Returns (float32 image in [0, 255], (low value, high value) in input units). A constant
    image gives zeros.
    """
    x = np.asarray(image, dtype=np.float64)
    if x.size == 0 or not np.all(np.isfinite(x)):
        raise SegcpError("clip_percentiles: the image is empty or contains NaN/inf")
    lo, hi = (float(v) for v in np.percentile(x, [low, high]))
    return _rescale(x, lo, hi), (lo, hi)


def ct_window(image: NDArray[Any], low: float = -100.0, high: float = 240.0) -> NDArray[np.float32]:
    """CT windowing: clip Hounsfield units to [low, high] and rescale to [0, 255] (float32)."""
    x = np.asarray(image, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        raise SegcpError("ct_window: the image contains NaN/inf")
    return _rescale(x, float(low), float(high))


def center_crop_or_pad(array: NDArray[Any], shape: Sequence[int], fill: float = 0) -> tuple[NDArray[Any], dict[str, list[int]]]:
    """Centre-crop axes longer than ``shape`` and pad shorter ones with ``fill`` (dtype kept).

    Returns (array of ``shape``, offsets) with offsets ``{"crop_start": [...], "pad_before": [...]}``
    per axis, which :func:`restore_to_original` uses to undo it.
    """
    a = np.asarray(array)
    shape = _check_shape(shape, a.ndim, "size")
    crop_start = [max(0, (n - m) // 2) for n, m in zip(a.shape, shape)]
    pad_before = [max(0, (m - n) // 2) for n, m in zip(a.shape, shape)]
    kept = tuple(min(n, m) for n, m in zip(a.shape, shape))
    out = np.full(shape, fill, dtype=a.dtype)
    src = tuple(slice(c, c + k) for c, k in zip(crop_start, kept))
    dst = tuple(slice(p, p + k) for p, k in zip(pad_before, kept))
    out[dst] = a[src]
    return out, {"crop_start": crop_start, "pad_before": pad_before}


# ------------------------------------------------------------------ pipeline
def preprocess(
    image: NDArray[Any], mask: NDArray[Any] | None = None, spacing: Sequence[float] | None = None, config: Preprocessing | None = None
) -> Preprocessed:
    """Apply the configured steps to an image (H, W) or (Z, H, W) and its mask.

    Parameters
    ----------
    image : numeric array, 2D or 3D (no channel axis).
    mask : optional bool mask or integer label map of the image's shape; geometric steps
        use nearest neighbour on it (values and dtype kept).
    spacing : voxel size per axis, or None if unknown.
    config : the steps; None = :class:`Preprocessing` defaults (nothing but float32).

    Returns
    -------
    :class:`Preprocessed` with the float32 image, the mask, and a JSON-ready record:
    ``{"config": ..., "original_shape": [...], "original_spacing": [...] | None,
    "steps": [...], "shape": [...], "spacing": [...] | None}``.
    """
    cfg = config or Preprocessing()
    img = np.asarray(image)
    if img.ndim not in (2, 3):
        raise SegcpError(f"preprocess: image must be 2D or 3D, got shape {img.shape}")
    if img.dtype == bool or not (np.issubdtype(img.dtype, np.integer) or np.issubdtype(img.dtype, np.floating)):
        raise SegcpError(f"preprocess: image must be numeric, got dtype {img.dtype}")
    if not np.all(np.isfinite(img)):
        raise SegcpError("preprocess: image contains NaN or inf")
    m = None if mask is None else np.asarray(mask)
    if m is not None and m.shape != img.shape:
        raise SegcpError(f"preprocess: mask shape {m.shape} does not match image shape {img.shape}")
    sp = None if spacing is None else tuple(float(s) for s in spacing)
    if sp is not None and len(sp) != img.ndim:
        raise SegcpError(f"preprocess: spacing {sp} has {len(sp)} values for a {img.ndim}D image")

    record: dict[str, Any] = {
        "config": cfg.to_dict(),
        "original_shape": list(img.shape),
        "original_spacing": None if sp is None else list(sp),
        "steps": [],
    }
    steps: list[dict[str, Any]] = record["steps"]
    out = img.astype(np.float32)

    if cfg.target_spacing is not None:
        if sp is None:
            steps.append({"step": "resample", "skipped": "spacing unknown"})
        else:
            if len(cfg.target_spacing) != img.ndim:
                raise SegcpError(f"target_spacing {cfg.target_spacing} has {len(cfg.target_spacing)} values for a {img.ndim}D image")
            before = out.shape
            out, new_sp = resample_to_spacing(out, sp, cfg.target_spacing, order=1)
            if m is not None:
                m, _ = resample_to_spacing(m, sp, cfg.target_spacing, order=0)
            steps.append(
                {"step": "resample", "from_shape": list(before), "to_shape": list(out.shape), "from_spacing": list(sp), "to_spacing": list(new_sp)}
            )
            sp = new_sp

    if cfg.intensity == "percentile":
        out, (lo, hi) = clip_percentiles(out, *cfg.percentiles)
        steps.append({"step": "intensity", "kind": "percentile", "percentiles": list(cfg.percentiles), "low": lo, "high": hi, "range": [0.0, 255.0]})
    elif cfg.intensity == "ct":
        out = ct_window(out, *cfg.ct_window)
        steps.append({"step": "intensity", "kind": "ct", "low": cfg.ct_window[0], "high": cfg.ct_window[1], "range": [0.0, 255.0]})

    if cfg.size is not None:
        if len(cfg.size) != out.ndim:
            raise SegcpError(f"size {cfg.size} has {len(cfg.size)} values for a {out.ndim}D image")
        before = out.shape
        if cfg.size_mode == "resize":
            out = resize_to_shape(out, cfg.size, order=1)
            if m is not None:
                m = resize_to_shape(m, cfg.size, order=0)
            if sp is not None:
                sp = tuple(s * n / k for s, n, k in zip(sp, before, cfg.size))
            steps.append({"step": "resize", "from_shape": list(before), "to_shape": list(cfg.size)})
        else:
            out, offsets = center_crop_or_pad(out, cfg.size, fill=0)
            if m is not None:
                m, _ = center_crop_or_pad(m, cfg.size, fill=0)
            steps.append({"step": "crop", "from_shape": list(before), "to_shape": list(cfg.size), **offsets})

    record["shape"] = list(out.shape)
    record["spacing"] = None if sp is None else list(sp)
    return Preprocessed(out.astype(np.float32, copy=False), m, record)


def restore_to_original(probs: NDArray[Any], record: dict[str, Any], *, order: int = 1, fill: float = 0.0) -> NDArray[np.float64]:
    """Map a map on the preprocessed grid back to the original grid of the image and mask.

    Parameters
    ----------
    probs : float array of the preprocessed shape ``record["shape"]``, or (L, *shape) for a
        stack of class probabilities (each channel is mapped).
    record : ``Preprocessed.record`` (or its JSON round trip).
    order : 1 (linear, for probabilities) or 0 (nearest, for label maps).
    fill : value for pixels that a crop removed (outside the model's view), default 0.

    Returns
    -------
    float64 array of ``record["original_shape"]`` (or (L, *original_shape)); linear
    interpolation of values in [0, 1] stays in [0, 1].
    """
    p = np.asarray(probs, dtype=np.float64)
    shape = tuple(record["shape"])
    if p.shape == shape:
        return _restore_one(p, record, order, fill)
    if p.ndim == len(shape) + 1 and p.shape[1:] == shape:
        return np.stack([_restore_one(c, record, order, fill) for c in p])
    raise SegcpError(f"restore_to_original: map of shape {p.shape} does not match the preprocessed shape {shape}")


def _restore_one(p: NDArray[np.float64], record: dict[str, Any], order: int, fill: float) -> NDArray[np.float64]:
    out = p
    for step in reversed(record["steps"]):
        kind = step["step"]
        if kind == "resize" or (kind == "resample" and "skipped" not in step):
            out = resize_to_shape(out, step["from_shape"], order=order).astype(np.float64)
        elif kind == "crop":
            src_shape = tuple(step["from_shape"])
            kept = tuple(min(n, m) for n, m in zip(src_shape, step["to_shape"]))
            back = np.full(src_shape, fill, dtype=np.float64)
            dst = tuple(slice(c, c + k) for c, k in zip(step["crop_start"], kept))
            src = tuple(slice(q, q + k) for q, k in zip(step["pad_before"], kept))
            back[dst] = out[src]
            out = back
    if out.shape != tuple(record["original_shape"]):
        raise SegcpError(f"restore_to_original: record is inconsistent (got {out.shape}, expected {tuple(record['original_shape'])})")
    return out
