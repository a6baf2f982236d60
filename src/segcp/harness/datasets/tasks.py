"""Named, reproducible dataset definitions ("tasks") and export to a CLI data directory.

=========  =======  ===========================================================
task       dataset  target
=========  =======  ===========================================================
acdc-lv    acdc     left-ventricle cavity (ACDC label 3), binary
acdc-rv    acdc     right-ventricle cavity (ACDC label 1), binary
acdc       acdc     label map {0 background, 1 RV, 2 myocardium, 3 LV}
busi       busi     breast-ultrasound lesion, binary
la2018     la2018   3D: left-atrium cavity (label 1), binary, LGE-MRI volumes
acdc-3d    acdc     3D: the (patient, frame) volumes, label map {0, 1 RV, 2 myo, 3 LV}
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

**Volume tasks** (``la2018``, ``acdc-3d``): an item is one 3D volume, its group the patient.

- ``la2018``: the 20 volumes of ``la2018/volumes/<id>/mri_norm2.h5`` (one per patient),
  image float32 (X, Y, Z) z-scored, mask bool (X, Y, Z); spacing 0.625 mm isotropic (not
  stored in the files, see :mod:`segcp.harness.datasets.la2018`). Default split fractions (0.25, 0.5,
  0.25) of the patients: 5 train, 10 calibration, 5 test — so that the pool (calibration ∪
  test, 15 volumes) allows repeated splits with n = 10 calibration volumes.
- ``acdc-3d``: the 140 (patient, frame) volumes of ACDC, id ``patientXXX_frameYY``, the
  slices stacked along the last axis: image float32 (H, W, Z), label map uint8 (H, W, Z).
  **Spacing unknown** (the SSL4MIS HDF5 stores none; ACDC's in-plane pixels are about
  1.4–1.7 mm, its slices 5–10 mm apart): :attr:`Sample.spacing` is None and the exported
  NIfTI files are in voxel units (pixdim 1, spatial unit "unknown") with the slice axis (2)
  marked in ``dim_info`` and in ``segcp_export.json``. Its split is the patient split of the
  2D ACDC tasks (same patients, same fractions, same seed → the same partition), so the 2D
  models' pool patients are its pool patients.

Both protocols give every volume. Axis order is nibabel's (see :mod:`segcp.harness.datasets.volumes`).

:meth:`Task.split` partitions the groups (patients / near-duplicate groups) into train,
calibration and test with a seed; :func:`export_task` writes one part as a data directory
(``images/<id>.npy``, ``masks/<id>.npy``; volume tasks: ``images/<id>.nii.gz``,
``masks/<id>.nii.gz`` with spacing and affine in the header) that ``segcp calibrate --data``
reads once a model has added ``probs/``.

Examples
--------
>>> available_tasks()
['acdc', 'acdc-3d', 'acdc-lv', 'acdc-rv', 'busi', 'la2018']
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from segcp.engine.splits import DEFAULT_FRACTIONS, PARTS, Split, split_ids
from segcp.errors import SegcpError
from segcp.harness.datasets import acdc as _acdc
from segcp.harness.datasets import busi as _busi
from segcp.harness.datasets import la2018 as _la
from segcp.harness.datasets.hashes import DEFAULT_PHASH_MAX_DISTANCE

__all__ = ["EXPORT_MANIFEST", "TASK_SPECS", "Item", "Sample", "Task", "TaskSpec", "available_tasks", "export_task", "get_task", "resolve_data_root"]

Protocol = Literal["rwcp", "all"]
PROTOCOLS = ("rwcp", "all")
#: Name of the JSON file :func:`export_task` writes at the top of the data directory.
EXPORT_MANIFEST = "segcp_export.json"
#: What the three axes of a volume task's arrays are (nibabel's order).
VOLUME_AXES = {
    "la2018": "(X, Y, Z) as stored in the LA 2018 files",
    "acdc-3d": "(H, W, Z): the (H, W) ACDC slices stacked on the last axis, [:, :, k] = slice k + 1",
}


@dataclass(frozen=True)
class TaskSpec:
    """The definition of a task: which dataset, which structure.

    ``label`` is the label value of a binary task in its dataset's label maps (ACDC 3 / 1,
    LA 2018 1; None for BUSI and for the multi-class tasks, whose masks are label maps).
    ``volumes``: an item is a 3D volume (otherwise a 2D image). ``fractions``: the default
    (train, calibration, test) fractions of the groups in :meth:`Task.split`. ``spacing`` and
    ``units``: the voxel size the task reports for its volumes (None: unknown, voxel units).
    """

    name: str
    dataset: str
    label: int | None
    multiclass: bool
    description: str
    volumes: bool = False
    fractions: tuple[float, float, float] = DEFAULT_FRACTIONS
    spacing: tuple[float, float, float] | None = None

    @property
    def units(self) -> str:
        """``"mm"`` when the volumes' spacing is known, else ``"voxel"``."""
        return "mm" if self.spacing is not None else "voxel"


TASK_SPECS: dict[str, TaskSpec] = {
    s.name: s
    for s in (
        TaskSpec("acdc-lv", "acdc", 3, False, "ACDC cine MRI, left-ventricle cavity (label 3), binary"),
        TaskSpec("acdc-rv", "acdc", 1, False, "ACDC cine MRI, right-ventricle cavity (label 1), binary"),
        TaskSpec("acdc", "acdc", None, True, "ACDC cine MRI, label map 0 background / 1 RV / 2 myocardium / 3 LV"),
        TaskSpec("busi", "busi", None, False, "BUSI breast ultrasound, lesion, binary"),
        TaskSpec(
            "la2018",
            "la2018",
            1,
            False,
            "LA 2018 LGE-MRI volumes (X, Y, Z), left-atrium cavity, binary, 0.625 mm isotropic",
            volumes=True,
            fractions=(0.25, 0.5, 0.25),
            spacing=_la.LA_SPACING,
        ),
        TaskSpec(
            "acdc-3d",
            "acdc",
            None,
            True,
            "ACDC (patient, frame) volumes (H, W, Z) of stacked slices, label map 0 / 1 RV / 2 myocardium / 3 LV, spacing unknown (voxel units)",
            volumes=True,
        ),
    )
}

#: The datasets a task can read, and what their folders look like.
DATASETS = ("acdc", "busi", "la2018")


def available_tasks() -> list[str]:
    """Names of the defined tasks, sorted."""
    return sorted(TASK_SPECS)


def _looks_like(dataset: str, p: Path) -> bool:
    if not p.is_dir():
        return False
    if dataset == "busi":
        return (p / "images").is_dir() and (p / "masks").is_dir()
    if dataset == "la2018":
        return (p / "volumes").is_dir()
    if (p / "data").is_dir():
        return True
    return any(q.suffix.lower() == ".h5" for q in p.iterdir())


def resolve_data_root(dataset: str, root: str | os.PathLike[str] | None = None) -> Path:
    """Folder of ``dataset`` (``"acdc"``, ``"busi"`` or ``"la2018"``).

    Order: ``root`` (the dataset folder, or a folder holding ``<dataset>/``), then the
    environment variable ``SEGCP_DATA`` (same two readings), then
    ``../shared/data/<dataset>`` relative to the current directory. Raises
    :class:`SegcpError` naming the place looked at when nothing is found.
    """
    if dataset not in DATASETS:
        raise SegcpError(f"dataset {dataset!r}: expected one of {', '.join(DATASETS)}")
    if root is not None:
        base, how = Path(root), "root argument"
    elif os.environ.get("SEGCP_DATA"):
        base, how = Path(os.environ["SEGCP_DATA"]), "SEGCP_DATA"
    else:
        base, how = Path.cwd() / ".." / "shared" / "data", "default ../shared/data"
    for cand in (base, base / dataset):
        if _looks_like(dataset, cand):
            return cand.resolve()
    expect = {"busi": "images/ and masks/", "la2018": "volumes/<id>/mri_norm2.h5"}.get(dataset, "data/*.h5 or *.h5")
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
    image : (H, W), as stored: ACDC float32 in [0, 1]; BUSI uint8 in [0, 255]. Volume
        tasks: (X, Y, Z) float32 in nibabel's order (``la2018`` z-scored; ``acdc-3d`` the
        (H, W) slices stacked on the last axis, [0, 1]).
    mask : same shape; bool for binary tasks; uint8 label map in {0, 1, 2, 3} for ``acdc``
        and ``acdc-3d``.
    spacing : voxel size per axis in mm, or None (unknown: ACDC and BUSI store none; pixel /
        voxel units). ``la2018``: (0.625, 0.625, 0.625).
    slice_axis : volumes: the axis of the slices a 2D model sees (2 for both volume tasks:
        ACDC's acquisition slices; LA 2018 isotropic, see :func:`segcp.cases.slice_axis`);
        None for 2D images.
    """

    id: str
    group: str
    image: NDArray[Any]
    mask: NDArray[Any]
    spacing: tuple[float, ...] | None = None
    slice_axis: int | None = None


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
        """Read image and mask (see :class:`Sample` for dtypes and axis order)."""
        if self.task.volumes:
            if self.task.dataset == "la2018":
                vimg, vlab = _la.read_la2018(self.source.path)
            else:
                vimg, vlab = _acdc.read_acdc_volume(self.source)
            assert vimg is not None
            vmask: NDArray[Any] = vlab if self.task.multiclass else vlab == self.task.label
            return Sample(self.id, self.group, vimg, vmask, self.task.spacing, 2)
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
        images are near-duplicates (default 84, see :mod:`segcp.harness.datasets.hashes`).
    """

    def __init__(
        self, name: str, root: str | os.PathLike[str] | None = None, *, colour: str = "error", max_distance: int = DEFAULT_PHASH_MAX_DISTANCE
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
        if self.spec.volumes:
            d.update(volumes=True, spacing=self.spec.spacing, units=self.spec.units, axes=VOLUME_AXES[self.name], slice_axis=2)
        return d

    # ---------------------------------------------------------------- items
    def _all_items(self) -> list[Item]:
        if self._all is None:
            if self.spec.dataset == "la2018":
                self._all = [Item(v.id, v.id, self.spec, v, {"patient": v.id}) for v in _la.scan_la2018(self.root)]
            elif self.spec.volumes:
                self._all = [
                    Item(v.id, v.patient, self.spec, v, {"patient": v.patient, "frame": v.frame, "depth": v.depth})
                    for v in _acdc.acdc_volumes(_acdc.scan_acdc(self.root))
                ]
            elif self.spec.dataset == "acdc":
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
            if self.spec.dataset != "acdc" or self.spec.volumes:
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
        structure area; ``"all"``: every slice. BUSI and volume tasks: every item either way.
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
        """Item id → group (patient for ACDC and LA 2018, near-duplicate group for BUSI)."""
        return {it.id: it.group for it in self.items(protocol)}

    # ---------------------------------------------------------------- splits
    def split(
        self,
        seed: int = 0,
        *,
        train: float | None = None,
        calibration: float | None = None,
        test: float | None = None,
        train_protocol: Protocol = "all",
        eval_protocol: Protocol = "rwcp",
    ) -> Split:
        """Seeded train / calibration / test split of the task's groups.

        Groups (patients, near-duplicate groups) are partitioned with the given fractions
        (None: the task's defaults, :attr:`TaskSpec.fractions` — (0.6, 0.2, 0.2), for
        ``la2018`` (0.25, 0.5, 0.25));
        the train part then holds the ``train_protocol`` items of its groups (default: every
        slice), calibration and test the ``eval_protocol`` items (default: RW-CP slices).
        ``Split.pool`` = calibration ∪ test. ``Split.meta`` records task and protocols.
        """
        fr = self.spec.fractions
        train = fr[0] if train is None else train
        calibration = fr[1] if calibration is None else calibration
        test = fr[2] if test is None else test
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
            train_ids,
            cal_ids,
            test_ids,
            used,
            seed,
            base.fractions,
            {"task": self.name, "train_protocol": train_protocol, "eval_protocol": eval_protocol},
        )


def get_task(name: str, root: str | os.PathLike[str] | None = None, **kwargs: Any) -> Task:
    """Build the :class:`Task` ``name`` (see :class:`Task` for the options)."""
    return Task(name, root, **kwargs)


# ------------------------------------------------------------------------ export
def export_task(
    task: Task | str, split_part: str | Iterable[str], out_dir: str | os.PathLike[str], *, split: Split | None = None, seed: int = 0
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

    Volume tasks write NIfTI instead, in nibabel's axis order (see :mod:`segcp.harness.datasets.volumes`):
    ``images/<id>.nii.gz`` float32 and ``masks/<id>.nii.gz`` uint8 (``la2018``: 0/1;
    ``acdc-3d``: the label map, use ``--label``), affine diag(spacing, 1) with qform and
    sform "aligned" — ``la2018``: 0.625 mm, spatial unit mm; ``acdc-3d``: pixdim 1, spatial
    unit "unknown", slice axis 2 in ``dim_info`` — and the geometry in the manifest.
    """
    from segcp.harness.datasets.volumes import write_nifti
    from segcp.io.datadir import index_folder
    from segcp.io.writers import write_json, write_npy

    t = task if isinstance(task, Task) else Task(task)
    if isinstance(split_part, str):
        if split_part not in PARTS:
            raise SegcpError(f"split part {split_part!r}: expected one of {', '.join(PARTS)} or a list of ids")
        sp: Split | None = split if split is not None else t.split(seed=seed)
        assert sp is not None
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
                raise SegcpError(f"{folder}: already holds {len(extra)} file(s) of other ids (e.g. {extra[0]!r}); export into an empty folder")
    groups: dict[str, str] = {}
    spec = t.spec
    geometry = {
        "format": "NIfTI, nibabel axis order",
        "axes": VOLUME_AXES.get(t.name),
        "spacing": spec.spacing,
        "units": spec.units,
        "slice_axis": 2,
        "affine": "diag(spacing, 1)" if spec.spacing is not None else "identity (voxel units; spacing unknown)",
    }
    for ident in ids:
        s = items[ident].load()
        if spec.volumes:
            nifti = {
                "spacing": s.spacing,
                "units": "mm" if s.spacing is not None else "unknown",
                "slice_dim": None if s.spacing is not None else s.slice_axis,
            }
            write_nifti(out / "images" / f"{ident}.nii.gz", s.image.astype(np.float32, copy=False), **nifti)  # type: ignore[arg-type]
            write_nifti(out / "masks" / f"{ident}.nii.gz", s.mask.astype(np.uint8), **nifti)  # type: ignore[arg-type]
        else:
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
        "mask": "label map (uint8, 0..3); pass --label" if t.spec.multiclass else ("binary (uint8 0/1)" if spec.volumes else "binary (bool)"),
    }
    if spec.volumes:
        manifest["geometry"] = geometry
    write_json(out / EXPORT_MANIFEST, manifest)
    return ids
