"""The engine's tasks (a data directory, built-in synthetic data, cases in memory) and their views: per
family kind the ids, groups, content keys (SHA-256 of what the family reads) and cases. Workers open a
task from its :class:`ViewRef` once per process and token (:func:`view_of`); cases in memory stay here.
"""

from __future__ import annotations

import os
import uuid
import weakref
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from segcp._version import __version__
from segcp.cases import Case, one_ndim
from segcp.engine.cache import digest
from segcp.errors import SegcpError
from segcp.io import DataDir, read_json
from segcp.io.datadir import data_home
from segcp.specs import MethodSpec

__all__ = ["CasesTask", "Task", "TaskView", "ViewRef", "kind_of", "load_groups", "open_task", "view_of"]

#: Bytes of loaded cases kept in memory per task (an LRU; the rest is read again from disk).
CASE_MEMORY = 2_000_000_000


def load_groups(data: str | os.PathLike[str] | Any, ids: Sequence[str]) -> tuple[list[str], str]:
    """The groups of the ids of a data directory and where they came from (``segcp_export.json``, ``groups.json``,
    else each image its own)."""
    root = data_home(data)
    for name in ("segcp_export.json", "groups.json"):
        if (f := root / name).is_file():
            rec = read_json(f)
            mapping = rec.get("groups", rec) if name == "segcp_export.json" else rec
            missing = [i for i in ids if i not in mapping]
            if missing:
                raise SegcpError(f"{f}: no group for id {missing[0]!r}")
            return [str(mapping[i]) for i in ids], str(f)
    return list(ids), "none (each image its own group)"


def first_groups(groups: list[str], max_images: int | None) -> list[int]:
    """Indices of the images of the first groups (in order) up to ``max_images`` (None: all)."""
    keep: list[int] = []
    seen: set[str] = set()
    for i, g in enumerate(groups):
        if max_images is not None and g not in seen and len(keep) >= max_images:
            break
        seen.add(g)
        keep.append(i)
    return keep


def kind_of(family: Any) -> str:
    """``mask`` (pixel sets, a binary truth) or ``sets`` (sets of segmentations)."""
    return "sets" if family.truth == "label_map" else "mask"


def _arrays_key(*arrays: Any) -> str:
    from segcp.encoders.cache import image_key  # the one array hash (imported only when data in memory is keyed)

    return digest([None if a is None else image_key(a) for a in arrays])


@dataclass(frozen=True)
class ViewRef:
    """How a worker finds a view: the task's config and token, the family that chose the view."""

    cfg: Any
    token: str
    spec: MethodSpec
    max_images: int | None = None
    version: str = __version__


@dataclass(eq=False)
class TaskView:
    """What one kind of family sees of a task: ids, groups, content keys, cases."""

    task: Task
    kind: str
    ids: list[str]
    groups: list[str]
    folders: list[str]
    ref: ViewRef
    reader: Any = None
    key_of: Callable[[int], str] = field(default=str, repr=False)

    @cached_property
    def keys(self) -> list[str]:
        """The content key of every image (hashed on first use: workers never need them)."""
        return [self.key_of(i) for i in range(len(self.ids))]

    def case(self, i: int) -> Case:
        """The case of image ``i`` of this view (its inputs and its truth)."""
        return self.task._case(self, self.ids[i])

    def __len__(self) -> int:
        return len(self.ids)


class Task:
    """A task of a plan (see the module docstring)."""

    name: str
    title: str
    units: str
    provenance: dict[str, Any]
    cfg: Any = None  # what a worker opens the task from (None: this process only)

    def __init__(self) -> None:
        self.token = uuid.uuid4().hex
        self._views: dict[tuple[Any, ...], TaskView] = {}
        _OPEN[self.token] = self

    def view(self, spec: MethodSpec, max_images: int | None = None) -> TaskView:
        """The view of the family of ``spec`` (its ids and groups; one per kind and folders)."""
        family = spec.build()
        key = (kind_of(family), tuple(self._folders(family)), max_images)
        if key not in self._views:
            v = self._make_view(family, key[0], ViewRef(self.cfg, self.token, spec, max_images))
            same = [x for k, x in self._views.items() if k[0] == v.kind and k[2] == max_images]
            if same and same[0].ids != v.ids:
                raise SegcpError(f"{self.name}: the {', '.join(v.folders)} folders do not hold the same ids as {', '.join(same[0].folders)}")
            self._views[key] = v
        return self._views[key]

    def can(self, spec: MethodSpec) -> str | None:
        """None when the task has the family's inputs, else why not (one line)."""
        try:
            self.view(spec)
        except SegcpError as exc:
            return str(exc)
        return None

    def image_of(self, ident: str) -> Any:
        """The image of ``ident`` for figures, or None."""
        return None

    def _folders(self, family: Any) -> list[str]:
        return [kind_of(family)]  # every input there: one view per kind

    def _make_view(self, family: Any, kind: str, ref: ViewRef) -> TaskView:  # pragma: no cover - abstract
        raise NotImplementedError

    def _case(self, view: TaskView, ident: str) -> Case:  # pragma: no cover - abstract
        raise NotImplementedError


class DataDirTask(Task):
    """A labelled data directory (probs/ or samples/, masks/, images/ when read)."""

    def __init__(self, cfg: Any) -> None:
        super().__init__()
        self.cfg, self.name, self.label = cfg, cfg.name, cfg.label
        self.root = data_home(cfg.data)
        self.dd = DataDir(cfg.data)
        self._readers: dict[tuple[str, tuple[str, ...]], Any] = {}
        self._file_hashes: dict[Path, str] = {}
        self._ndims: dict[str, int] = {}
        self._cases: OrderedDict[tuple[str, tuple[str, ...], str], Case] = OrderedDict()
        self._case_bytes = 0
        self.provenance = self._provenance()
        self.title = cfg.title or self.provenance.get("description") or cfg.name
        self.units = "pixels"
        self._units_known = False

    def _provenance(self) -> dict[str, Any]:
        """Where the data came from: segcp_infer.json (the model and its outputs) and segcp_export.json (the task)."""
        out: dict[str, Any] = {"data": str(self.root), "kind": "data directory"}
        for name in ("segcp_infer.json", "segcp_export.json"):
            try:
                rec = read_json(self.root / name) if (self.root / name).is_file() else None
            except SegcpError:
                rec = None
            if rec is None:
                continue
            if name == "segcp_infer.json":
                out["infer"] = {k: rec.get(k) for k in ("source", "n_classes", "probs", "samples", "preprocessing", "seed")}
                keys = ("path", "task", "split_seed", "seed", "dropout", "n_classes", "segcp_version", "val_dice")
                out["models"] = [{k: m.get(k) for k in keys} for m in rec.get("models", [])]
                out["model_dice"] = {k: v for k, v in (rec.get("dice") or {}).items() if v is None or isinstance(v, (int, float, str))}
                continue
            task = rec.get("task") or {}
            out["export"] = {"task": task.get("name"), "dataset": task.get("dataset"), "label": task.get("label"), "root": task.get("root")}
            out["export"] |= {"part": rec.get("part"), "seed": rec.get("seed")}
            if task.get("description"):
                out["description"] = task["description"]
        return out

    def _folders(self, family: Any) -> list[str]:
        return list(family.folders(set(self.dd.files)))

    def _make_view(self, family: Any, kind: str, ref: ViewRef) -> TaskView:
        key = (kind, tuple(self._folders(family)))
        if key not in self._readers:
            self._readers[key] = self.dd.reader(family, label=self.label if kind == "mask" else None)
        reader = self._readers[key]
        groups, self.provenance["groups_from"] = load_groups(self.cfg.data, list(reader.ids))
        keep = first_groups(groups, ref.max_images)
        folders = list(dict.fromkeys([*reader.folders, "masks"]))
        selection = {"kind": kind, "label": self.label if kind == "mask" else None, "channels": bool(reader.channels)}
        ids = [reader.ids[i] for i in keep]
        self._check_one_ndim(ids)

        def key_of(i: int) -> str:
            return digest([selection, [[f, self._sha(self.dd.path(f, ids[i]))] for f in folders]])

        return TaskView(self, kind, ids, [groups[i] for i in keep], folders, ref, reader, key_of)

    def _check_one_ndim(self, ids: Sequence[str]) -> None:
        """Every image of the task has the same grid dimensionality (read from its mask: the cached curves
        would otherwise compare a 2-D slice among 3-D volumes without reading it), as ``calibrate`` requires."""
        dims: dict[int, tuple[int, str]] = {}
        for ident in ids:
            if ident not in self._ndims:
                self._ndims[ident] = self.dd.read("masks", ident)[0].ndim
            n, where = dims.get(self._ndims[ident], (0, str(self.dd.path("masks", ident))))
            dims[self._ndims[ident]] = (n + 1, where)
        if dims:
            one_ndim(dims)

    def _sha(self, path: Path) -> str:
        from segcp.encoders.convert import sha256_file

        if path not in self._file_hashes:
            self._file_hashes[path] = sha256_file(path)
        return self._file_hashes[path]

    def _case(self, view: TaskView, ident: str) -> Case:
        k = (view.kind, tuple(view.folders), ident)
        if k in self._cases:
            self._cases.move_to_end(k)
            return self._cases[k]
        case = view.reader.read(ident)
        if not self._units_known:
            self.units, self._units_known = ("mm" if case.spacing is not None else "pixels"), True
        self._cases[k] = case
        self._case_bytes += _nbytes(case)
        while self._case_bytes > CASE_MEMORY and len(self._cases) > 1:
            self._case_bytes -= _nbytes(self._cases.popitem(last=False)[1])
        return case

    def image_of(self, ident: str) -> Any:
        if not self.dd.has("images") or ident not in self.dd.files["images"]:
            return None
        from segcp.io import read_array

        return np.asarray(read_array(self.dd.path("images", ident))[0], dtype=float)


def _nbytes(case: Case) -> int:
    return sum(int(a.nbytes) for a in vars(case).values() if isinstance(a, np.ndarray))


class SyntheticTask(Task):
    """Built-in SYNTHETIC phantoms (``segcp.synthetic``) and made-up sampled outputs (LV vs background)."""

    def __init__(self, cfg: Any) -> None:
        from segcp.synthetic import make_phantoms

        super().__init__()
        self.cfg, self.name = cfg, cfg.name
        n, self.seed, size = cfg.options["n"], cfg.options["seed"], cfg.options["size"]
        self.phantoms = make_phantoms(n=n, shape=(size, size), seed=self.seed)
        self.title = cfg.title or "SYNTHETIC short-axis-heart phantoms (segcp.synthetic) — not real patients"
        self.units = "mm"
        self.provenance = {
            "kind": "built-in synthetic data",
            "data": f"segcp.synthetic.make_phantoms(n={n}, shape=({size}, {size}), seed={self.seed}); "
            "sampled outputs: segcp.synthetic.phantom_samples (16 draws)",
            "description": "SYNTHETIC phantoms with model-like probability maps of the LV cavity (label 3): "
            "the numbers show the mechanics, not clinical performance",
            "groups_from": "segcp.synthetic (subjects, 2 slices each)",
        }
        self._samples: dict[int, Any] = {}
        self._index = {p.id: i for i, p in enumerate(self.phantoms)}

    def _sample(self, i: int) -> Any:
        from segcp.synthetic import phantom_samples

        if i not in self._samples:
            self._samples[i] = phantom_samples(self.phantoms[i].probs, np.random.default_rng((self.seed, 6, i)))
        return self._samples[i]

    def _make_view(self, family: Any, kind: str, ref: ViewRef) -> TaskView:
        keep = first_groups([p.group for p in self.phantoms], ref.max_images)
        ph = [self.phantoms[i] for i in keep]

        def key_of(j: int) -> str:
            p, i = ph[j], keep[j]
            if kind == "mask":
                return _arrays_key(p.probs, p.label == 3, p.image, np.asarray(p.spacing))
            return _arrays_key(self._sample(i), (p.label == 3).astype(np.int64), np.asarray(p.spacing))

        folders = ["probs", "images", "masks"] if kind == "mask" else ["samples", "masks"]
        return TaskView(self, kind, [p.id for p in ph], [p.group for p in ph], folders, ref, None, key_of)

    def image_of(self, ident: str) -> Any:
        return self.phantoms[self._index[ident]].image

    def _case(self, view: TaskView, ident: str) -> Case:
        i = self._index[ident]
        p = self.phantoms[i]
        if view.kind == "mask":
            return Case(p.id, p.probs, mask=p.label == 3, image=p.image, spacing=p.spacing)
        return Case(p.id, samples=self._sample(i), label_map=(p.label == 3).astype(np.int64), spacing=p.spacing)


class CasesTask(Task):
    """Labelled cases held in memory with their groups: one view for every family, run in this process only."""

    def __init__(self, cases: Sequence[Case], groups: Sequence[Any], name: str = "cases") -> None:
        super().__init__()
        if len(cases) != len(groups):
            raise SegcpError(f"{len(cases)} cases but {len(groups)} group labels")
        self.name = self.title = name
        self.cases = list(cases)
        self.groups = [str(g) for g in groups]
        self.units = "mm" if any(c.spacing is not None for c in self.cases) else "pixels"
        self.provenance = {"kind": "cases in memory", "groups_from": "given"}
        self._index = {c.id: i for i, c in enumerate(self.cases)}

    def _folders(self, family: Any) -> list[str]:
        for c in self.cases[:1]:
            family.check_case(c)
        return super()._folders(family)

    def _make_view(self, family: Any, kind: str, ref: ViewRef) -> TaskView:
        def key_of(i: int) -> str:
            c = self.cases[i]
            fields = (c.probs, c.mask, c.image, c.samples, c.class_probs, c.label_map)
            return _arrays_key(*fields, None if c.spacing is None else np.asarray(c.spacing))

        return TaskView(self, kind, [c.id for c in self.cases], list(self.groups), list(family.inputs), ref, None, key_of)

    def _case(self, view: TaskView, ident: str) -> Case:
        return self.cases[self._index[ident]]

    def image_of(self, ident: str) -> Any:
        return self.cases[self._index[ident]].image


#: Tasks open in this process, by token: the client's own (while it holds them), and the last
#: few a worker opened (kept alive by _WORKER_TASKS).
_OPEN: weakref.WeakValueDictionary[str, Task] = weakref.WeakValueDictionary()
_WORKER_TASKS: deque[Task] = deque(maxlen=3)


def open_task(cfg: Any) -> Task:
    """The task of a config entry (a data directory, or a named task)."""
    return SyntheticTask(cfg) if cfg.data is None else DataDirTask(cfg)


def view_of(ref: ViewRef) -> TaskView:
    """The view ``ref`` names, in this process (a worker opens the task once per task token)."""
    if ref.version != __version__:
        raise SegcpError(f"a worker runs segcp {__version__} but the client runs {ref.version}: install the same segcp on every worker")
    task = _OPEN.get(ref.token)
    if task is None:
        if ref.cfg is None:
            raise SegcpError("cases held in memory are evaluated in this process only; give a data directory to use workers")
        task = open_task(ref.cfg)
        del _OPEN[task.token]
        task.token = ref.token
        _OPEN[ref.token] = task
        _WORKER_TASKS.append(task)
    return task.view(ref.spec, ref.max_images)
