"""Named, reproducible dataset definitions ("tasks") and export to a CLI data directory.

=========  =======  ===========================================================
task       dataset  target
=========  =======  ===========================================================
acdc-lv    acdc     left-ventricle cavity (ACDC label 3), binary
acdc-rv    acdc     right-ventricle cavity (ACDC label 1), binary
acdc       acdc     label map {0 background, 1 RV, 2 myocardium, 3 LV}
busi       busi     breast-ultrasound lesion, binary
=========  =======  ===========================================================

A task knows

- its **data root**: the ``root`` argument, else ``$SEGCP_DATA/<dataset>``, else
  ``../shared/data/<dataset>`` relative to the current directory (``root`` and
  ``SEGCP_DATA`` may also name the dataset folder itself);
- its **items** (:class:`Item`: id, group, a loader): every ACDC slice, grouped by patient;
  every BUSI image, grouped by near-duplicate group;
- the **RW-CP protocol** (``protocol="rwcp"``, the default for calibration and test images):
  per ACDC (patient, frame) volume, only the slice with the largest area of the task's
  structure (``acdc``: largest foreground area); ties go to the larger foreground, then the
  lower slice number. ``protocol="all"`` keeps every slice (training uses it). For BUSI both
  protocols give every image.

:meth:`Task.split` partitions the groups (patients / near-duplicate groups) into train,
calibration and test with a seed; :func:`export_task` writes one part as a data directory
(``images/<id>.npy``, ``masks/<id>.npy``) that ``segcp calibrate --data`` reads once a model
has added ``probs/``.

Examples
--------
>>> available_tasks()
['acdc', 'acdc-lv', 'acdc-rv', 'busi']
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from numpy.typing import NDArray

from segcp.data import acdc as _acdc
from segcp.data import busi as _busi
from segcp.data.splits import DEFAULT_FRACTIONS, DEFAULT_PHASH_MAX_DISTANCE, PARTS, Split, split_ids
from segcp.errors import SegcpError

__all__ = [
    "TaskSpec",
    "TASK_SPECS",
    "Item",
    "Sample",
    "Task",
    "get_task",
    "available_tasks",
    "resolve_data_root",
    "export_task",
    "EXPORT_MANIFEST",
]

Protocol = Literal["rwcp", "all"]
PROTOCOLS = ("rwcp", "all")
#: Name of the JSON file :func:`export_task` writes at the top of the data directory.
EXPORT_MANIFEST = "segcp_export.json"


@dataclass(frozen=True)
class TaskSpec:
    """The definition of a task: which dataset, which structure.

    ``label`` is the ACDC label value of a binary ACDC task (None for BUSI and for the
    multi-class ``acdc`` task, whose masks are label maps).
    """

    name: str
    dataset: str
    label: int | None
    multiclass: bool
    description: str


TASK_SPECS: dict[str, TaskSpec] = {
    s.name: s
    for s in (
        TaskSpec("acdc-lv", "acdc", 3, False, "ACDC cine MRI, left-ventricle cavity (label 3), binary"),
        TaskSpec("acdc-rv", "acdc", 1, False, "ACDC cine MRI, right-ventricle cavity (label 1), binary"),
        TaskSpec("acdc", "acdc", None, True, "ACDC cine MRI, label map 0 background / 1 RV / 2 myocardium / 3 LV"),
        TaskSpec("busi", "busi", None, False, "BUSI breast ultrasound, lesion, binary"),
    )
}


def available_tasks() -> list[str]:
    """Names of the defined tasks, sorted."""
    return sorted(TASK_SPECS)


def _looks_like(dataset: str, p: Path) -> bool:
    if not p.is_dir():
        return False
    if dataset == "busi":
        return (p / "images").is_dir() and (p / "masks").is_dir()
    if (p / "data").is_dir():
        return True
    return any(q.suffix.lower() == ".h5" for q in p.iterdir())


def resolve_data_root(dataset: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Folder of ``dataset`` (``"acdc"`` or ``"busi"``).

    Order: ``root`` (the dataset folder, or a folder holding ``<dataset>/``), then the
    environment variable ``SEGCP_DATA`` (same two readings), then
    ``../shared/data/<dataset>`` relative to the current directory. Raises
    :class:`SegcpError` naming the place looked at when nothing is found.
    """
    if dataset not in ("acdc", "busi"):
        raise SegcpError(f"dataset {dataset!r}: expected 'acdc' or 'busi'")
    if root is not None:
        base, how = Path(root), "root argument"
    elif os.environ.get("SEGCP_DATA"):
        base, how = Path(os.environ["SEGCP_DATA"]), "SEGCP_DATA"
    else:
        base, how = Path.cwd() / ".." / "shared" / "data", "default ../shared/data"
    for cand in (base, base / dataset):
        if _looks_like(dataset, cand):
            return cand.resolve()
    expect = "images/ and masks/" if dataset == "busi" else "data/*.h5 or *.h5"
    raise SegcpError(
        f"{base / dataset}: {dataset} data not found ({how}); expected a folder with {expect}; "
        f"pass root= or set SEGCP_DATA to the folder holding {dataset}/"
    )


@dataclass(frozen=True)
class Sample:
    """One loaded item.

    Attributes
    ----------
    id, group : as in :class:`Item`.
    image : (H, W), as stored: ACDC float32 in [0, 1]; BUSI uint8 in [0, 255].
    mask : (H, W) bool for binary tasks; uint8 label map in {0, 1, 2, 3} for ``acdc``.
    spacing : pixel size per axis, or None (neither dataset stores one: pixel units).
    """

    id: str
    group: str
    image: NDArray[Any]
    mask: NDArray[Any]
    spacing: tuple[float, ...] | None = None


@dataclass(frozen=True)
class Item:
    """One image of a task: id, exchangeability group, and where to load it from.

    ``meta`` holds patient/frame/slice (ACDC) or class (BUSI). :meth:`load` reads the file.
    """

    id: str
    group: str
    task: TaskSpec = field(repr=False)
    source: Any = field(repr=False)
    meta: dict[str, Any] = field(default_factory=dict, compare=False)
    colour: str = field(default="error", repr=False)

    def load(self) -> Sample:
        """Read image and mask (see :class:`Sample` for dtypes)."""
        if self.task.dataset == "acdc":
            image, label = _acdc.read_acdc_slice(self.source)
            mask: NDArray[Any] = label if self.task.multiclass else label == self.task.label
            return Sample(self.id, self.group, image, mask, None)
        image, bmask = _busi.read_busi_pair(self.source, colour=self.colour)  # type: ignore[arg-type]
        return Sample(self.id, self.group, image, bmask, None)


class Task:
    """A named dataset definition bound to a data root.

    Parameters
    ----------
    name : one of :func:`available_tasks`.
    root : data folder (see :func:`resolve_data_root`).
    colour : BUSI only: ``"error"`` (default) or ``"luma"`` for colour PNGs.
    max_distance : BUSI only: pHash Hamming distance (of 256 bits) at or below which two
        images are near-duplicates (default 84, see :mod:`segcp.data.splits`).
    """

    def __init__(
        self,
        name: str,
        root: str | os.PathLike[str] | None = None,
        *,
        colour: str = "error",
        max_distance: int = DEFAULT_PHASH_MAX_DISTANCE,
    ) -> None:
        if name not in TASK_SPECS:
            raise SegcpError(f"task {name!r}: unknown; available tasks: {', '.join(available_tasks())}")
        if colour not in ("error", "luma"):
            raise SegcpError(f"colour={colour!r}: expected 'error' or 'luma'")
        self.spec = TASK_SPECS[name]
        self.root = resolve_data_root(self.spec.dataset, root)
        self.colour = colour
        self.max_distance = int(max_distance)
        self._all: list[Item] | None = None
        self._rwcp: list[Item] | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def __repr__(self) -> str:
        return f"Task(name={self.name!r}, root={str(self.root)!r})"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description (name, dataset, label, root, options)."""
        d: dict[str, Any] = {
            "name": self.name,
            "dataset": self.spec.dataset,
            "label": self.spec.label,
            "multiclass": self.spec.multiclass,
            "description": self.spec.description,
            "root": str(self.root),
        }
        if self.spec.dataset == "busi":
            d.update(colour=self.colour, phash_max_distance=self.max_distance)
        return d

    # ---------------------------------------------------------------- items
    def _all_items(self) -> list[Item]:
        if self._all is None:
            if self.spec.dataset == "acdc":
                self._all = [
                    Item(s.id, s.patient, self.spec, s, {"patient": s.patient, "frame": s.frame, "slice": s.slice})
                    for s in _acdc.scan_acdc(self.root)
                ]
            else:
                entries = _busi.scan_busi(self.root)
                groups = _busi.busi_groups(entries, max_distance=self.max_distance, colour=self.colour)  # type: ignore[arg-type]
                self._all = [Item(e.id, groups[e.id], self.spec, e, {"class": e.cls}, self.colour) for e in entries]
        return self._all

    def _rwcp_items(self) -> list[Item]:
        if self._rwcp is None:
            items = self._all_items()
            if self.spec.dataset != "acdc":
                self._rwcp = list(items)
            else:
                counts = _acdc.label_areas([it.source for it in items])
                fg = counts[:, 1:].sum(axis=1)
                area = fg if self.spec.multiclass else counts[:, self.spec.label]
                best: dict[tuple[str, str], tuple[tuple[int, int, int], Item]] = {}
                for it, a, f in zip(items, area.tolist(), fg.tolist()):
                    key = (int(a), int(f), -it.meta["slice"])
                    vol = (it.meta["patient"], it.meta["frame"])
                    if vol not in best or key > best[vol][0]:
                        best[vol] = (key, it)
                self._rwcp = sorted((it for _, it in best.values()), key=lambda it: it.id)
        return self._rwcp

    def items(self, protocol: Protocol = "rwcp") -> list[Item]:
        """Items of the task, sorted by id.

        ``protocol="rwcp"`` (default): one slice per ACDC (patient, frame), the largest
        structure area; ``"all"``: every slice. BUSI: every image either way.
        """
        if protocol not in PROTOCOLS:
            raise SegcpError(f"protocol={protocol!r}: expected 'rwcp' or 'all'")
        return list(self._rwcp_items() if protocol == "rwcp" else self._all_items())

    def item(self, ident: str) -> Item:
        """The item with id ``ident`` (any protocol)."""
        for it in self._all_items():
            if it.id == ident:
                return it
        raise SegcpError(f"task {self.name}: no item {ident!r} in {self.root}")

    def load(self, ident: str) -> Sample:
        """Load one item by id."""
        return self.item(ident).load()

    def groups(self, protocol: Protocol = "all") -> dict[str, str]:
        """Item id → group (patient for ACDC, near-duplicate group for BUSI)."""
        return {it.id: it.group for it in self.items(protocol)}

    # ---------------------------------------------------------------- splits
    def split(
        self,
        seed: int = 0,
        *,
        train: float = DEFAULT_FRACTIONS[0],
        calibration: float = DEFAULT_FRACTIONS[1],
        test: float = DEFAULT_FRACTIONS[2],
        train_protocol: Protocol = "all",
        eval_protocol: Protocol = "rwcp",
    ) -> Split:
        """Seeded train / calibration / test split of the task's groups.

        Groups (patients, near-duplicate groups) are partitioned with the given fractions;
        the train part then holds the ``train_protocol`` items of its groups (default: every
        slice), calibration and test the ``eval_protocol`` items (default: RW-CP slices).
        ``Split.pool`` = calibration ∪ test. ``Split.meta`` records task and protocols.
        """
        all_groups = self.groups("all")
        base = split_ids(all_groups, train=train, calibration=calibration, test=test, seed=seed)
        train_groups = {all_groups[i] for i in base.train}
        tr = self.groups(train_protocol)
        ev = self.groups(eval_protocol)
        train_ids = tuple(sorted(i for i, g in tr.items() if g in train_groups))
        cal_groups = {all_groups[i] for i in base.calibration}
        test_groups = {all_groups[i] for i in base.test}
        cal_ids = tuple(sorted(i for i, g in ev.items() if g in cal_groups))
        test_ids = tuple(sorted(i for i, g in ev.items() if g in test_groups))
        used = {i: all_groups[i] for i in train_ids + cal_ids + test_ids}
        return Split(
            train_ids, cal_ids, test_ids, used, seed, base.fractions,
            {"task": self.name, "train_protocol": train_protocol, "eval_protocol": eval_protocol},
        )


def get_task(name: str, root: str | os.PathLike[str] | None = None, **kwargs: Any) -> Task:
    """Build the :class:`Task` ``name`` (see :class:`Task` for the options)."""
    return Task(name, root, **kwargs)


# ------------------------------------------------------------------------ export
def export_task(
    task: Task | str,
    split_part: str | Iterable[str],
    out_dir: str | os.PathLike[str],
    *,
    split: Split | None = None,
    seed: int = 0,
) -> list[str]:
    """Write one part of a task as a CLI data directory.

    Parameters
    ----------
    task : a :class:`Task` or a task name (default data root).
    split_part : ``"train"``, ``"calibration"``, ``"test"``, ``"pool"`` (of ``split``, or of
        ``task.split(seed)``), or an explicit iterable of item ids.
    out_dir : the data directory; created if needed.
    split, seed : the split to take the part from (default ``task.split(seed=seed)``).

    Writes ``images/<id>.npy`` (as stored: ACDC float32 [0, 1], BUSI uint8),
    ``masks/<id>.npy`` (bool (H, W); ``acdc``: uint8 label map, use ``--label``) and
    ``segcp_export.json`` (task, part, seed, ids, groups), each file atomically, on the
    original grid. Refuses a folder that already holds files of other ids. Returns the ids.
    """
    from segcp.io.datadir import index_folder
    from segcp.io.writers import write_json, write_npy

    t = task if isinstance(task, Task) else Task(task)
    if isinstance(split_part, str):
        if split_part not in PARTS:
            raise SegcpError(f"split part {split_part!r}: expected one of {', '.join(PARTS)} or a list of ids")
        sp = split if split is not None else t.split(seed=seed)
        ids = list(sp.part(split_part))
        part_name: str = split_part
    else:
        ids = sorted(dict.fromkeys(split_part))
        sp, part_name = split, "ids"
    if not ids:
        raise SegcpError(f"export of task {t.name}: nothing to export ({part_name} is empty)")
    items = {it.id: it for it in t.items("all")}
    missing = [i for i in ids if i not in items]
    if missing:
        raise SegcpError(f"task {t.name}: no item {missing[0]!r} in {t.root}" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))

    out = Path(out_dir)
    wanted = set(ids)
    for sub in ("images", "masks", "probs"):
        folder = out / sub
        if folder.is_dir():
            extra = sorted(set(index_folder(folder)) - wanted)
            if extra:
                raise SegcpError(
                    f"{folder}: already holds {len(extra)} file(s) of other ids (e.g. {extra[0]!r}); export into an empty folder"
                )
    groups: dict[str, str] = {}
    for ident in ids:
        s = items[ident].load()
        write_npy(out / "images" / f"{ident}.npy", s.image)
        write_npy(out / "masks" / f"{ident}.npy", s.mask)
        groups[ident] = s.group
    manifest: dict[str, Any] = {
        "task": t.to_dict(),
        "part": part_name,
        "seed": None if sp is None else sp.seed,
        "split": None if sp is None else {k: v for k, v in sp.to_dict().items() if k != "groups"},
        "ids": ids,
        "groups": groups,
        "mask": "label map (uint8, 0..3); pass --label" if t.spec.multiclass else "binary (bool)",
    }
    write_json(out / EXPORT_MANIFEST, manifest)
    return ids
