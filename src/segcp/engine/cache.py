"""The engine's on-disk cache by content key: ``curves/`` (loss curves, or a controlled loss's step functions), ``maps/`` (score maps slower than :data:`MAP_SECONDS`)
and ``records/``, each ``<family key>/<image or record key>``. Keys hash the bytes read, the family (no run-time
options; :meth:`SetFamily.cache_identity`), :data:`SCHEMA` and the version; writes are atomic, a corrupt entry
is a miss, deleting the folder is safe.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp._version import __version__
from segcp.calibration import LossCurves
from segcp.calibration.ltt import StepLosses
from segcp.io.writers import atomic_path, to_jsonable, write_npy

__all__ = ["MAP_SECONDS", "SCHEMA", "BenchmarkCache", "digest"]

#: Version of what the cache holds (bump when curves, records or their metrics change).
#: 3: "agrees up to β" decided exactly (issue 16). 4: one split record for every front end (issue 22).
SCHEMA = 4
#: Score maps that took longer than this (seconds per image) to compute are kept on disk.
MAP_SECONDS = 0.02
#: The file suffix of each kind of entry.
KINDS = {"curves": ".npz", "maps": ".npy", "records": ".json"}


def digest(obj: Any) -> str:
    """SHA-256 (hex) of a JSON-serialisable object (sorted keys)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def _load_curve(p: Path) -> tuple[LossCurves | StepLosses, float]:
    with np.load(p, allow_pickle=False) as z:
        if "levels" in z:  # a controlled loss's step function (Learn then Test): breakpoints and levels
            return StepLosses.single(z["breakpoints"], z["levels"]), float(z["cpu_seconds"])
        return LossCurves.single(z["breakpoints"], z["drops"], float(z["start"])), float(z["cpu_seconds"])


def _load_map(p: Path) -> NDArray[np.float64] | None:
    m = np.load(p, allow_pickle=False)
    return m if m.dtype == np.float64 else None


def _load_record(p: Path) -> dict[str, Any] | None:
    rec = json.loads(p.read_text())
    return rec if isinstance(rec, dict) else None


class BenchmarkCache:
    """Curves, maps and records by content key (``enabled=False``: none); ``hits``/``misses`` per counter."""

    def __init__(self, root: str | os.PathLike[str] | None = None, *, enabled: bool = True) -> None:
        from segcp.encoders.cache import cache_root

        self.root = Path(root) if root is not None else cache_root() / "benchmark"
        self.enabled = bool(enabled)
        self.hits = dict.fromkeys(KINDS, 0)
        self.misses = dict.fromkeys(KINDS, 0)

    @staticmethod
    def family_key(family_identity: Any) -> str:
        return digest([SCHEMA, __version__, family_identity])[:24]

    def _path(self, kind: str, fkey: str, key: str) -> Path:
        return self.root / kind / fkey / f"{key[:40]}{KINDS[kind]}"

    def has(self, kind: str, fkey: str, key: str) -> bool:
        """Whether there is an entry (``kind``: curves, maps or records), without reading it."""
        return self.enabled and self._path(kind, fkey, key).is_file()

    def _get(self, kind: str, fkey: str, key: str, load: Callable[[Path], Any], counter: str) -> Any:
        """``load(path)`` counted as a hit; None (a miss) when absent, disabled or corrupt (then removed)."""
        self.hits.setdefault(counter, 0)
        self.misses.setdefault(counter, 0)
        p = self._path(kind, fkey, key)
        value = None
        if self.enabled:
            try:
                value = load(p)
            except FileNotFoundError:
                pass
            except Exception:  # a corrupt entry (any reason) is a miss, rewritten later
                value = None
            if value is None and p.exists():
                p.unlink(missing_ok=True)
        (self.misses if value is None else self.hits)[counter] += 1
        return value

    def _put(self, kind: str, fkey: str, key: str) -> Path | None:
        """Where to write an entry (its folder made), or None when disabled."""
        if not self.enabled:
            return None
        p = self._path(kind, fkey, key)
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def get_curve(self, fkey: str, ikey: str) -> tuple[LossCurves | StepLosses, float] | None:
        """One image's curve (or step function) and the CPU seconds its score took (None: not cached)."""
        return self._get("curves", fkey, ikey, _load_curve, "curves")

    def put_curve(self, fkey: str, ikey: str, curve: LossCurves | StepLosses, seconds: float) -> None:
        """One image's :class:`LossCurves` (start, breakpoints, drops) or one-case :class:`StepLosses` (breakpoints,
        levels: stored exactly, as the loss computed them)."""
        if (p := self._put("curves", fkey, ikey)) is not None:
            arrays: dict[str, Any] = {"cpu_seconds": np.float64(seconds)}
            if isinstance(curve, StepLosses):
                arrays |= {"breakpoints": curve.breakpoints[0], "levels": curve.levels[0]}
            else:
                arrays |= {"start": np.float64(curve.starts[0]), "breakpoints": curve.breakpoints, "drops": curve.drops}
            with atomic_path(p, suffix=".npz", clean_stale=False) as tmp, open(tmp, "wb") as f:
                np.savez(f, **arrays)

    def get_map(self, fkey: str, ikey: str) -> NDArray[np.float64] | None:
        return self._get("maps", fkey, ikey, _load_map, "maps")

    def put_map(self, fkey: str, ikey: str, scores: NDArray[np.float64]) -> None:
        if (p := self._put("maps", fkey, ikey)) is not None:
            write_npy(p, np.ascontiguousarray(scores, dtype=np.float64), clean_stale=False)

    def get_record(self, fkey: str, rkey: str, what: str = "records") -> dict[str, Any] | None:
        """A split record (``what`` names the counter: records, validity, model)."""
        return self._get("records", fkey, rkey, _load_record, what)

    def put_record(self, fkey: str, rkey: str, rec: dict[str, Any]) -> None:
        if (p := self._put("records", fkey, rkey)) is not None:
            text = json.dumps(to_jsonable(rec), allow_nan=False)
            with atomic_path(p, suffix=".json", clean_stale=False) as tmp:
                tmp.write_text(text)

    def stats(self) -> dict[str, Any]:
        return {"root": str(self.root), "enabled": self.enabled, "hits": dict(self.hits), "misses": dict(self.misses)}
