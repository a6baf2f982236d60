"""The engine's on-disk cache, keyed by content (`segcp benchmark`, and `compare`/`tune` with ``--cache``).

Layout (under ``--cache DIR``; `segcp benchmark`'s default ``$SEGCP_CACHE/benchmark`` or
``~/.cache/segcp/benchmark``)::

    curves/<family-key>/<image-key>.npz    one image's loss curve (start, breakpoints, drops)
                                           and the CPU seconds its score map took
    maps/<family-key>/<image-key>.npy      its score map (float64), kept only when computing
                                           it took longer than MAP_SECONDS of CPU (RW-CP's diffusion;
                                           Standard CRC's 1 - p and Consema's distance
                                           transform are recomputed, faster than reading)
    records/<family-key>/<record-key>.json one split's result at one α: λ̂ and the test means
                                           (sets of segmentations: coverage and draw metrics)

* ``<image-key>``: SHA-256 of the bytes of every input file the family reads for that image
  (probs, masks, images or samples) and of how the truth is read (label, class channel) — or,
  for built-in synthetic data, of the arrays themselves;
* ``<family-key>``: SHA-256 of the family's name and parameters (``SetFamily.key``; run-time
  options such as threads never enter it), of what else decides its sets
  (:meth:`SetFamily.cache_identity`: the encoder's weights, preprocessing and backend for
  RW-CP), of the guarantee, of :data:`SCHEMA` (bumped when what is computed changes) and of
  the segcp version;
* ``<record-key>``: SHA-256 of α, of what is measured (the metrics, the draw settings) and of
  the image keys of the split's calibration and test images, in order.

Encoder features are cached by the encoder layer itself (``$SEGCP_CACHE/features``, keyed by
image content and encoder id). Every file is written atomically (``segcp.io.writers``), so
an interrupted run leaves nothing half-written, and two runs may share a cache. A corrupt
entry counts as a miss and is rewritten. Deleting the folder is always safe.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp._version import __version__
from segcp.calibration import LossCurves
from segcp.io.writers import atomic_path, to_jsonable, write_npy

__all__ = ["MAP_SECONDS", "SCHEMA", "BenchmarkCache", "default_cache_dir", "digest"]

#: Version of what the cache holds (bump when curves, records or their metrics change).
#: 3: "agrees up to β" decided exactly (APS and CONSIGN scores at ties, SEC) and CONSIGN's
#: scale-correct search (issue 16). 4: one split record for every front end (missed, empty_hit,
#: empty_fp; the model row's truth sizes; a tuned row's CV values), issue 22.
SCHEMA = 4
#: Score maps that took longer than this (seconds per image) to compute are kept on disk.
MAP_SECONDS = 0.02


def digest(obj: Any) -> str:
    """SHA-256 (hex) of a JSON-serialisable object (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def default_cache_dir() -> Path:
    """``$SEGCP_CACHE/benchmark``, else ``~/.cache/segcp/benchmark``."""
    from segcp.encoders.cache import cache_root

    return cache_root() / "benchmark"


class BenchmarkCache:
    """Curves, score maps and split records, by content key; ``enabled=False`` reads and writes nothing."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *, enabled: bool = True) -> None:
        self.root = Path(root) if root is not None else default_cache_dir()
        self.enabled = bool(enabled)
        self.hits = {"curves": 0, "maps": 0, "records": 0}
        self.misses = {"curves": 0, "maps": 0, "records": 0}

    @staticmethod
    def family_key(family_identity: Any) -> str:
        return digest([SCHEMA, __version__, family_identity])[:24]

    def _path(self, kind: str, fkey: str, key: str, ext: str) -> Path:
        return self.root / kind / fkey / f"{key[:40]}{ext}"

    def _get(self, kind: str, fkey: str, key: str, ext: str, load: Any, counter: str) -> Any:
        """``load(path)`` of an entry, counted as a hit; None (a miss) when absent, disabled, or
        corrupt for any reason (``load`` raising or returning None: the entry is removed, rewritten later)."""
        self.hits.setdefault(counter, 0)
        self.misses.setdefault(counter, 0)
        p = self._path(kind, fkey, key, ext)
        value = None
        if self.enabled:
            try:
                value = load(p)
            except FileNotFoundError:
                pass
            except Exception:  # noqa: BLE001 - a corrupt entry (any reason) is a miss, rewritten later
                value = None
            if value is None and p.exists():
                p.unlink(missing_ok=True)
        (self.misses if value is None else self.hits)[counter] += 1
        return value

    def _file(self, kind: str, fkey: str, key: str, ext: str) -> Path | None:
        """Where to write an entry (its folder made), or None when disabled."""
        if not self.enabled:
            return None
        p = self._path(kind, fkey, key, ext)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    # ------------------------------------------------------------------ curves
    def get_curve(self, fkey: str, ikey: str) -> tuple[LossCurves, float] | None:
        """One image's curve and the CPU seconds its score took (None: not cached)."""
        def load(p: Path) -> tuple[LossCurves, float]:
            with np.load(p, allow_pickle=False) as z:
                return LossCurves.single(z["breakpoints"], z["drops"], float(z["start"])), float(z["cpu_seconds"])

        return self._get("curves", fkey, ikey, ".npz", load, "curves")  # type: ignore[no-any-return]

    def has_curve(self, fkey: str, ikey: str) -> bool:
        return self.enabled and self._path("curves", fkey, ikey, ".npz").is_file()

    def put_curve(self, fkey: str, ikey: str, curve: LossCurves, seconds: float) -> None:
        p = self._file("curves", fkey, ikey, ".npz")
        if p is not None:
            with atomic_path(p, suffix=".npz", clean_stale=False) as tmp, open(tmp, "wb") as f:
                np.savez(f, start=np.float64(curve.starts[0]), breakpoints=curve.breakpoints, drops=curve.drops, cpu_seconds=np.float64(seconds))

    # ------------------------------------------------------------------ score maps
    def has_map(self, fkey: str, ikey: str) -> bool:
        return self.enabled and self._path("maps", fkey, ikey, ".npy").is_file()

    def get_map(self, fkey: str, ikey: str) -> NDArray[np.float64] | None:
        def load(p: Path) -> NDArray[np.float64] | None:
            m = np.load(p, allow_pickle=False)
            return m if m.dtype == np.float64 else None

        return self._get("maps", fkey, ikey, ".npy", load, "maps")  # type: ignore[no-any-return]

    def put_map(self, fkey: str, ikey: str, scores: NDArray[np.float64]) -> None:
        p = self._file("maps", fkey, ikey, ".npy")
        if p is not None:
            write_npy(p, np.ascontiguousarray(scores, dtype=np.float64), clean_stale=False)

    # ------------------------------------------------------------------ split records
    def get_record(self, fkey: str, rkey: str, what: str = "records") -> dict[str, Any] | None:
        """A split record (``what`` names the counter: records, validity, model)."""
        def load(p: Path) -> dict[str, Any] | None:
            rec = json.loads(p.read_text())
            return rec if isinstance(rec, dict) else None

        return self._get("records", fkey, rkey, ".json", load, what)  # type: ignore[no-any-return]

    def has_record(self, fkey: str, rkey: str) -> bool:
        return self.enabled and self._path("records", fkey, rkey, ".json").is_file()

    def put_record(self, fkey: str, rkey: str, rec: dict[str, Any]) -> None:
        p = self._file("records", fkey, rkey, ".json")
        if p is not None:
            text = json.dumps(to_jsonable(rec), allow_nan=False)
            with atomic_path(p, suffix=".json", clean_stale=False) as tmp:
                tmp.write_text(text)

    def stats(self) -> dict[str, Any]:
        return {"root": str(self.root), "enabled": self.enabled, "hits": dict(self.hits), "misses": dict(self.misses)}
