"""On-disk (and in-memory) cache of encoder features, keyed by image content + encoder id.

A feature map is stored as ``<root>/features/<encoder-key>/<image-key>.npy`` (float32,
shape (d, h, w)), written atomically (temporary file + rename) so concurrent processes
never read a partial file. ``<encoder-key>`` is the first 16 hex digits of the SHA-256 of
:attr:`segcp.encoders.Encoder.cache_id` (the encoder's ``id``, which names the weights by
checksum and every preprocessing choice, plus the backend where several exist);
``<image-key>`` the SHA-256 of the image's dtype, shape and bytes. The same image under a
different encoder, input size, layer or backend is a different entry.

The root is ``$SEGCP_CACHE`` when set, else ``~/.cache/segcp`` (see :func:`cache_root`).
"""

from __future__ import annotations

import hashlib
import os
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.io.writers import write_npy

__all__ = ["FeatureCache", "cache_root", "image_key"]


def cache_root() -> Path:
    """The user cache directory of segcp: ``$SEGCP_CACHE`` or ``~/.cache/segcp``."""
    env = os.environ.get("SEGCP_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "segcp"


def image_key(image: NDArray[Any]) -> str:
    """SHA-256 (hex) of an array's dtype, shape and C-order bytes."""
    a = np.ascontiguousarray(image)
    h = hashlib.sha256()
    h.update(f"{a.dtype.str}|{a.shape}|".encode())
    h.update(a.data.cast("B"))  # a.data: the memoryview of a (numpy's stubs lack __buffer__ on 3.11)
    return h.hexdigest()


class FeatureCache:
    """Feature maps keyed by (encoder id, image key), on disk with an in-memory LRU in front.

    Parameters
    ----------
    root : directory, or None for ``cache_root() / "features"``.
    disk : False keeps everything in memory only (nothing written).
    memory_items : how many feature maps the in-memory LRU keeps at most (0 disables it).
    memory_mib : and how many MiB they may take (default 128: 85 DINOv2-S maps at 448², a
        volume's worth; the whole volume's features are held by its own computation anyway, and a
        calibration over many volumes never reads one back, so a larger layer only grows the
        process — 256 maps made a 10-volume calibration peak at 1.13 GiB instead of ~0.8).
    """

    def __init__(self, root: str | os.PathLike[str] | None = None, *, disk: bool = True, memory_items: int = 256, memory_mib: float = 128.0) -> None:
        self.root = Path(root) if root is not None else cache_root() / "features"
        self.disk = bool(disk)
        self.memory_items = int(memory_items)
        self.memory_bytes = int(float(memory_mib) * 2**20)
        self._mem: OrderedDict[tuple[str, str], NDArray[np.float32]] = OrderedDict()
        self._bytes = 0

    def __repr__(self) -> str:
        return f"FeatureCache(root={str(self.root)!r}, disk={self.disk}, memory_items={self.memory_items}, memory_mib={self.memory_bytes / 2**20:g})"

    @staticmethod
    def encoder_key(encoder_id: str) -> str:
        return hashlib.sha256(encoder_id.encode()).hexdigest()[:16]

    def path(self, encoder_id: str, key: str) -> Path:
        return self.root / self.encoder_key(encoder_id) / f"{key}.npy"

    def _remember(self, k: tuple[str, str], value: NDArray[np.float32]) -> None:
        if self.memory_items <= 0 or value.nbytes > self.memory_bytes:
            return
        old = self._mem.pop(k, None)
        self._bytes += value.nbytes - (old.nbytes if old is not None else 0)
        self._mem[k] = value
        while len(self._mem) > self.memory_items or self._bytes > self.memory_bytes:
            _, dropped = self._mem.popitem(last=False)
            self._bytes -= dropped.nbytes

    def get(self, encoder_id: str, key: str) -> NDArray[np.float32] | None:
        """The cached feature map, or None (a corrupt file counts as a miss and is removed)."""
        k = (encoder_id, key)
        if k in self._mem:
            self._mem.move_to_end(k)
            return self._mem[k]
        if not self.disk:
            return None
        p = self.path(encoder_id, key)
        if not p.is_file():
            return None
        try:
            value = np.load(p, allow_pickle=False)
        except (OSError, ValueError):
            p.unlink(missing_ok=True)
            return None
        value = value.astype(np.float32, copy=False)
        self._remember(k, value)
        return value

    def put(self, encoder_id: str, key: str, value: NDArray[Any]) -> None:
        """Store a feature map (float32), atomically on disk."""
        value = np.ascontiguousarray(value, dtype=np.float32)
        self._remember((encoder_id, key), value)
        if not self.disk:
            return
        write_npy(self.path(encoder_id, key), value, clean_stale=False)
