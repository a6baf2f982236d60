"""The encoder interface: image(s) → feature map (B × d × h × w, float32) on a patch grid.

An :class:`Encoder` resizes each image to an input size that is a multiple of its patch
size (no padding, no cropping: the h × w token grid covers the whole image, so token
(i, j) covers the image rectangle [i·H/h, (i+1)·H/h) × [j·W/w, (j+1)·W/w)), and returns one
d-dimensional feature per patch. Encoders know nothing about graphs or conformal
prediction.

Input images (:func:`to_rgb01`): (H, W) grayscale, (C, H, W) or (H, W, C) with C ∈ {1, 3, 4}
(alpha dropped); grayscale is repeated to 3 channels. Intensities: uint8 / 255, uint16 /
65535, bool as 0/1, floats already in [0, 1] kept, any other range min–max scaled per image
to [0, 1] (medical intensities have no fixed scale). Model encoders then apply their
normalisation (ImageNet mean/std for DINOv2/DINOv3).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.encoders.cache import FeatureCache, image_key
from segcp.errors import SegcpError

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "Encoder", "input_shape", "to_rgb01"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_rgb01(image: NDArray[Any], where: str = "image") -> NDArray[np.float32]:
    """A 2D image as float32 (3, H, W) in [0, 1] (see the module docstring for the rules)."""
    a = np.asarray(image)
    if a.ndim == 3:
        if a.shape[0] in (1, 3, 4) and a.shape[-1] not in (1, 3, 4):
            a = np.moveaxis(a, 0, -1)
        elif a.shape[-1] not in (1, 3, 4) and a.shape[0] not in (1, 3, 4):
            raise SegcpError(f"{where}: shape {a.shape} is not a 2D image with 1, 3 or 4 channels")
        elif a.shape[0] in (1, 3, 4) and a.shape[-1] in (1, 3, 4) and a.shape[0] < a.shape[-1]:
            a = np.moveaxis(a, 0, -1)  # tiny ambiguous images: channels first when smaller
        if a.shape[-1] == 4:
            a = a[..., :3]
    elif a.ndim != 2:
        raise SegcpError(f"{where}: expected a 2D image (H, W), (C, H, W) or (H, W, C), got shape {a.shape}")
    if a.dtype == bool:
        x = a.astype(np.float32)
    elif a.dtype == np.uint8:
        x = a.astype(np.float32) / 255.0
    elif a.dtype == np.uint16:
        x = a.astype(np.float32) / 65535.0
    elif np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating):
        x = a.astype(np.float32)
        if not np.all(np.isfinite(x)):
            raise SegcpError(f"{where}: image contains NaN or inf")
        lo, hi = float(x.min()), float(x.max())
        if lo < 0.0 or hi > 1.0:
            x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    else:
        raise SegcpError(f"{where}: image must be numeric, got dtype {a.dtype}")
    if x.ndim == 2:
        x = x[..., None]
    if x.shape[-1] == 1:
        x = np.repeat(x, 3, axis=-1)
    return np.ascontiguousarray(np.moveaxis(x, -1, 0))


def input_shape(image_shape: tuple[int, int], input_size: int | None, patch: int, keep_aspect: bool) -> tuple[int, int]:
    """The (H', W') an image of ``image_shape`` is resized to before patching.

    ``keep_aspect=False``: (input_size, input_size) rounded down to a multiple of ``patch``.
    ``keep_aspect=True``: the long side becomes ``input_size``, the short side keeps the
    aspect ratio; both rounded to the nearest multiple of ``patch`` (at least one patch).
    ``input_size=None``: the image's own size rounded to the nearest multiple of ``patch``.
    """
    h, w = int(image_shape[0]), int(image_shape[1])

    def snap(v: float) -> int:
        return max(patch, round(v / patch) * patch)

    if input_size is None:
        return snap(h), snap(w)
    if not keep_aspect:
        s = max(patch, (int(input_size) // patch) * patch)
        return s, s
    scale = float(input_size) / max(h, w)
    return snap(h * scale), snap(w * scale)


class Encoder(ABC):
    """Image(s) → feature map on the patch grid.

    Subclasses define :attr:`name` (for reports), :attr:`id` (identity: weights checksum and
    every preprocessing choice; :attr:`cache_id`, the cache key, defaults to it), :attr:`patch_size`, :attr:`dim`,
    :meth:`input_shape` and :meth:`_encode` (a batch of prepared images of one input shape).
    """

    name: str = "encoder"
    patch_size: int = 1
    dim: int = 0
    batch_size: int = 8

    @property
    @abstractmethod
    def id(self) -> str:
        """Stable identity of the function image → features (weights, preprocessing, layer)."""

    @property
    def cache_id(self) -> str:
        """Key of this encoder's entries in a :class:`FeatureCache` (default: :attr:`id`).

        Encoders with several backends whose outputs differ by float rounding add the backend
        here, so that a cache hit always equals a recomputation (see
        :attr:`segcp.encoders.HFEncoder.cache_id`).
        """
        return self.id

    @abstractmethod
    def input_shape(self, image_shape: tuple[int, int]) -> tuple[int, int]:
        """(H', W') the image is resized to (multiples of :attr:`patch_size`)."""

    def grid(self, image_shape: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of the token grid for an image of ``image_shape`` (H, W)."""
        hh, ww = self.input_shape(image_shape)
        return hh // self.patch_size, ww // self.patch_size

    @abstractmethod
    def _encode(self, images: list[NDArray[np.float32]], shape: tuple[int, int]) -> NDArray[np.float32]:
        """Features (B, d, h, w) of images already in (3, H, W) [0, 1] form, all resized to ``shape``."""

    # ------------------------------------------------------------------ public API
    def encode(self, images: Sequence[NDArray[Any]] | NDArray[Any]) -> list[NDArray[np.float32]]:
        """Feature maps, one float32 (d, h, w) array per image, computed in batches."""
        imgs = _as_list(images)
        prepared = [to_rgb01(im, f"image {i}") for i, im in enumerate(imgs)]
        out: list[NDArray[np.float32] | None] = [None] * len(prepared)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, x in enumerate(prepared):
            groups.setdefault(self.input_shape(x.shape[1:]), []).append(i)
        bs = max(1, int(self.batch_size))
        for shape, idx in groups.items():
            for s in range(0, len(idx), bs):
                chunk = idx[s : s + bs]
                feats = self._encode([prepared[i] for i in chunk], shape)
                for i, f in zip(chunk, feats):
                    out[i] = np.ascontiguousarray(f, dtype=np.float32)
        return out  # type: ignore[return-value]

    def features(self, images: Sequence[NDArray[Any]] | NDArray[Any], cache: FeatureCache | None = None) -> list[NDArray[np.float32]]:
        """Like :meth:`encode`, but reads/writes ``cache`` (keyed by image content + :attr:`cache_id`)."""
        imgs = _as_list(images)
        if cache is None:
            return self.encode(imgs)
        enc_id = self.cache_id
        keys = [image_key(np.asarray(im)) for im in imgs]
        out: list[NDArray[np.float32] | None] = [cache.get(enc_id, k) for k in keys]
        todo = [i for i, f in enumerate(out) if f is None]
        if todo:
            # identical images inside one call are encoded once
            uniq: dict[str, int] = {}
            for i in todo:
                uniq.setdefault(keys[i], i)
            order = list(uniq.values())
            feats = self.encode([imgs[i] for i in order])
            by_key = {}
            for i, f in zip(order, feats):
                cache.put(enc_id, keys[i], f)
                by_key[keys[i]] = f
            for i in todo:
                out[i] = by_key[keys[i]]
        return out  # type: ignore[return-value]

    def describe(self) -> dict[str, Any]:
        """JSON-ready description (name, id, patch size, dim)."""
        return {"name": self.name, "id": self.id, "patch_size": self.patch_size, "dim": self.dim}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, patch_size={self.patch_size}, dim={self.dim})"


def _as_list(images: Sequence[NDArray[Any]] | NDArray[Any]) -> list[NDArray[Any]]:
    if isinstance(images, np.ndarray):
        if images.ndim == 2:
            return [images]
        return list(images)
    return list(images)
