"""The benchmark's tasks: a labelled data directory, or built-in synthetic data.

A :class:`Task` gives, for a set family, a :class:`TaskView`: the ids it can read (the same
for every family of one kind, so every row of a table uses the same splits), their groups,
a content key per image (what the cache is keyed by) and the :class:`~segcp.cases.Case` of an
image on demand. Data directories are read through the one loader
(:meth:`segcp.io.DataDir.reader`); an image's key is the SHA-256 of the bytes of the files the
family reads and of how its truth is read, so renaming a folder keeps the cache, and editing
one file invalidates exactly that image.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from segcp.engine.config import TaskConfig
from segcp.cases import Case
from segcp.compare import load_groups
from segcp.errors import SegcpError
from segcp.io import DataDir, read_json

__all__ = ["Task", "TaskView", "open_task"]

#: The kinds of family a task can serve: pixel sets (a binary truth) and sets of segmentations.
KINDS = ("mask", "sets")


#: Bytes of loaded cases kept in memory per task (an LRU; the rest is read again from disk).
CASE_MEMORY = 2_000_000_000


def _nbytes(case: Case) -> int:
    return sum(int(getattr(getattr(case, f, None), "nbytes", 0)) for f in ("probs", "mask", "image", "samples", "class_probs", "label_map"))


def first_groups(groups: list[str], max_images: int | None) -> list[int]:
    """Indices of the images of the first groups (in order) up to ``max_images`` (None: all)."""
    if max_images is None or max_images >= len(groups):
        return list(range(len(groups)))
    keep: list[int] = []
    seen: set[str] = set()
    for i, g in enumerate(groups):
        if g not in seen:
            if len(keep) >= max_images:
                break
            seen.add(g)
        keep.append(i)
    return keep


def _kind(family: Any) -> str:
    return "sets" if family.truth == "label_map" else "mask"


def _file_sha(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _array_sha(*arrays: Any) -> str:
    h = hashlib.sha256()
    for a in arrays:
        if a is None:
            h.update(b"none|")
            continue
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}|{a.shape}|".encode())
        h.update(memoryview(a).cast("B"))
    return h.hexdigest()


@dataclass
class TaskView:
    """What one kind of family sees of a task: ids, groups, content keys, cases."""

    task: Task
    kind: str
    ids: list[str]
    groups: list[str]
    keys: list[str]
    folders: list[str]
    reader: Any = None

    def case(self, i: int) -> Case:
        """The case of image ``i`` of this view (its inputs and its truth)."""
        return self.task._case(self, self.ids[i])

    def __len__(self) -> int:
        return len(self.ids)


class Task:
    """A task of the benchmark (see the module docstring)."""

    name: str
    title: str
    units: str
    provenance: dict[str, Any]

    def view(self, family: Any, max_images: int | None = None) -> TaskView:  # pragma: no cover - abstract
        raise NotImplementedError

    def _case(self, view: TaskView, ident: str) -> Case:  # pragma: no cover - abstract
        raise NotImplementedError

    def can(self, family: Any) -> str | None:
        """None when the task has the family's inputs, else why not (one line)."""
        try:
            self.view(family)
        except SegcpError as exc:
            return str(exc)
        return None


class DataDirTask(Task):
    """A labelled data directory (probs/ or samples/, masks/, images/ when read)."""

    def __init__(self, cfg: TaskConfig) -> None:
        assert cfg.data is not None
        self.cfg = cfg
        self.name = cfg.name
        self.root = cfg.data
        self.dd = DataDir(cfg.data)
        self.label = cfg.label
        self._views: dict[tuple[Any, ...], TaskView] = {}
        self._readers: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._file_hashes: dict[Path, str] = {}
        self._cases: OrderedDict[tuple[str, tuple[str, ...], str], Case] = OrderedDict()
        self._case_bytes = 0
        self.provenance = self._provenance()
        self.title = cfg.title or self.provenance.get("description") or cfg.name
        self.units = "pixels"
        self._units_known = False

    def _provenance(self) -> dict[str, Any]:
        out: dict[str, Any] = {"data": str(self.root), "kind": "data directory"}
        for name in ("segcp_infer.json", "segcp_export.json"):
            f = self.root / name
            if f.is_file():
                try:
                    rec = read_json(f)
                except SegcpError:
                    continue
                if name == "segcp_infer.json":
                    out["infer"] = {k: rec.get(k) for k in ("source", "n_classes", "probs", "samples", "preprocessing", "seed")}
                    out["models"] = [
                        {k: m.get(k) for k in ("path", "task", "split_seed", "seed", "dropout", "n_classes", "segcp_version", "val_dice")}
                        for m in rec.get("models", [])
                    ]
                    dice = rec.get("dice") or {}
                    out["model_dice"] = {k: dice.get(k) for k in ("threshold", "mean", "calibration", "test", "n_test") if k in dice}
                else:
                    task = rec.get("task") or {}
                    out["export"] = {"task": task.get("name"), "dataset": task.get("dataset"), "label": task.get("label"), "root": task.get("root"), "part": rec.get("part"), "seed": rec.get("seed")}
                    if task.get("description"):
                        out["description"] = task["description"]
        return out

    def can(self, family: Any) -> str | None:
        try:
            self._reader(family)
        except SegcpError as exc:
            return str(exc)
        return None

    def _reader(self, family: Any) -> tuple[Any, tuple[str, ...]]:
        kind = _kind(family)
        folders = tuple(family.folders(set(self.dd.files)))
        key = (kind, folders)
        if key not in self._readers:
            self._readers[key] = self.dd.reader(family, label=self.label if kind == "mask" else None)
        return self._readers[key], key

    def view(self, family: Any, max_images: int | None = None) -> TaskView:
        reader, rkey = self._reader(family)
        key = (*rkey, max_images)
        if key in self._views:
            return self._views[key]
        kind = key[0]
        ids = list(reader.ids)
        # every family of one kind shares the ids (so the splits): the widest reader decides
        groups, source = load_groups(self.root, ids)
        keep = first_groups(groups, max_images)
        ids, groups = [ids[i] for i in keep], [groups[i] for i in keep]
        same_kind = [v for (k, *_r), v in self._views.items() if k == kind and _r[-1] == max_images]
        if same_kind and same_kind[0].ids != ids:
            raise SegcpError(f"{self.root}: the {', '.join(reader.folders)} folders do not hold the same ids as {', '.join(same_kind[0].folders)}")
        self.provenance["groups_from"] = source
        folders = list(dict.fromkeys([*reader.folders, "masks"]))
        selection = {"kind": kind, "label": self.label if kind == "mask" else None, "channels": bool(getattr(reader, "channels", False))}
        keys = []
        for ident in ids:
            files = [[f, self._sha(self.dd.path(f, ident))] for f in folders]
            keys.append(hashlib.sha256(json.dumps([selection, files]).encode()).hexdigest())
        view = TaskView(self, kind, ids, groups, keys, folders, reader)
        self._views[key] = view
        return view

    def _sha(self, path: Path) -> str:
        if path not in self._file_hashes:
            self._file_hashes[path] = _file_sha(path)
        return self._file_hashes[path]

    def _case(self, view: TaskView, ident: str) -> Case:
        k = (view.kind, tuple(view.folders), ident)
        if k in self._cases:
            self._cases.move_to_end(k)
            return self._cases[k]
        case = view.reader.read(ident)
        if not self._units_known:
            self.units = "mm" if case.spacing is not None else "pixels"
            self._units_known = True
        self._cases[k] = case
        self._case_bytes += _nbytes(case)
        while self._case_bytes > CASE_MEMORY and len(self._cases) > 1:
            _, old = self._cases.popitem(last=False)
            self._case_bytes -= _nbytes(old)
        return case

    def image_of(self, ident: str) -> Any:
        """The image of ``ident`` when the directory has images/ (for figures), else None."""
        if not self.dd.has("images") or ident not in self.dd.files["images"]:
            return None
        from segcp.io import read_array

        return np.asarray(read_array(self.dd.path("images", ident))[0], dtype=float)

    def check_label(self, family: Any) -> None:
        reader, _ = self._reader(family)
        reader.require_label_seen()


class SyntheticTask(Task):
    """Built-in SYNTHETIC phantoms (``segcp.synthetic``): probabilities, masks, images, and
    made-up sampled outputs for the sets of segmentations (LV vs background)."""

    def __init__(self, cfg: TaskConfig) -> None:
        from segcp.synthetic import make_phantoms

        self.cfg = cfg
        self.name = cfg.name
        n, seed, size = cfg.options["n"], cfg.options["seed"], cfg.options["size"]
        self.seed = seed
        self.phantoms = make_phantoms(n=n, shape=(size, size), seed=seed)
        self.title = cfg.title or "SYNTHETIC short-axis-heart phantoms (segcp.synthetic) — not real patients"
        self.units = "mm"
        self.provenance = {
            "kind": "built-in synthetic data",
            "data": f"segcp.synthetic.make_phantoms(n={n}, shape=({size}, {size}), seed={seed}); sampled outputs: segcp.synthetic.phantom_samples (16 draws)",
            "description": "SYNTHETIC phantoms with model-like probability maps of the LV cavity (label 3): the numbers show the mechanics, not clinical performance",
            "groups_from": "segcp.synthetic (subjects, 2 slices each)",
        }
        self._samples: dict[int, Any] = {}
        self._index = {p.id: i for i, p in enumerate(self.phantoms)}
        self._views: dict[str, TaskView] = {}

    def _sample(self, i: int) -> Any:
        from segcp.synthetic import phantom_samples

        if i not in self._samples:
            self._samples[i] = phantom_samples(self.phantoms[i].probs, np.random.default_rng((self.seed, 6, i)))
        return self._samples[i]

    def view(self, family: Any, max_images: int | None = None) -> TaskView:
        kind = _kind(family)
        key = f"{kind}:{max_images}"
        if key not in self._views:
            keep = first_groups([p.group for p in self.phantoms], max_images)
            ph = [self.phantoms[i] for i in keep]
            if kind == "mask":
                keys = [_array_sha(p.probs, p.label == 3, p.image, np.asarray(p.spacing)) for p in ph]
                folders = ["probs", "images", "masks"]
            else:
                keys = [_array_sha(self._sample(i), (self.phantoms[i].label == 3).astype(np.int64), np.asarray(self.phantoms[i].spacing)) for i in keep]
                folders = ["samples", "masks"]
            self._views[key] = TaskView(self, kind, [p.id for p in ph], [p.group for p in ph], keys, folders)
        return self._views[key]

    def image_of(self, ident: str) -> Any:
        return self.phantoms[self._index[ident]].image

    def can(self, family: Any) -> str | None:
        return None  # the phantoms have every input (probabilities, images, samples)

    def _case(self, view: TaskView, ident: str) -> Case:
        i = self._index[ident]
        p = self.phantoms[i]
        if view.kind == "mask":
            return Case(p.id, p.probs, mask=p.label == 3, image=p.image, spacing=p.spacing)
        return Case(p.id, samples=self._sample(i), label_map=(p.label == 3).astype(np.int64), spacing=p.spacing)


def open_task(cfg: TaskConfig) -> Task:
    """The task of a config entry (a data directory, or a named task)."""
    if cfg.data is None:
        return SyntheticTask(cfg)
    return DataDirTask(cfg)
