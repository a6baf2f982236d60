"""The data-directory contract: one loader for every command and every set family.

A data directory holds, per image id::

    probs/<id>.<ext>     foreground probability, float in [0, 1]  (PNG: uint8/255, uint16/65535);
                         or a class-probability stack (L, *S) or (*S, L): one channel with
                         --label L (pixel-set families), all of them for the multi-class ones
    samples/<id>.<ext>   N sampled softmax maps (N, L, *S) (MC dropout, ensemble members);
                         (N, *S) is read as binary foreground samples (L = 2)
    masks/<id>.<ext>     binary mask, or a label map (with --label L for pixel-set families)
    images/<id>.<ext>    the image (image-aware families: rwcp), grey or colour

with ``ext`` any suffix of a registered format (:mod:`segcp.io.formats`: npy, npz, png,
nii.gz, nii, ...). The folders need not sit in one directory
(:class:`DataSpec`: ``--probs DIR --masks DIR ...`` on the command line), and file names need
not be the ids themselves (``--match images={id}_0000`` for nnU-Net's ``imagesTr``,
``--match probs={id}_prob`` for MONAI's postfixes).

nnU-Net v2 prediction folders work as they are: ``<case>.npz`` (``probabilities``, see
:mod:`segcp.io.readers` for the axis order) next to ``<case>.nii.gz`` (its argmax) is one id,
the NPZ read for the probabilities and the NIfTI for the geometry (spacing, affine); nnU-Net's
``.pkl`` files are ignored, never unpickled. Its ``dataset.json`` names the labels: the one
``nnUNetv2_predict`` copies into the prediction folder, else the raw dataset's.

NIfTI spacing is read (mask first, then the model output, then the image) and used by the
metrics and spacing-aware methods; when both the model output and the mask carry a NIfTI
geometry they must be the same grid (shape and affine), or the case is refused. The model output
defines the cases: every other folder a command reads must hold each of its ids; inside a data
directory the ids must match exactly, while a folder given on its own (nnU-Net's ``labelsTr`` or
``imagesTr``, which hold the training cases too) may hold more, which are counted and left out. :meth:`DataDir.reader` builds, for a set family, the
:class:`~segcp.cases.Case` of every id with one-line errors naming the file at fault.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.cases import Case, binarize_mask, channel_of, check_class_probs, check_label_map, check_probabilities, check_samples
from segcp.errors import SegcpError
from segcp.io.formats import Geometry, format_of, read_geometry, suffixes
from segcp.io.readers import check_regular_file, read_array, read_probabilities

__all__ = ["FOLDER_OF", "SUBDIRS", "CaseReader", "DataDir", "DataSpec", "data_home", "data_inputs", "describe_data", "index_folder", "label_names"]

SUBDIRS = ("probs", "masks", "images", "samples")
#: The folder each case input is read from.
FOLDER_OF = {"probs": "probs", "image": "images", "samples": "samples", "class_probs": "probs"}


@dataclass(frozen=True)
class DataSpec:
    """Where a command finds its inputs.

    Attributes
    ----------
    root : the data directory (its ``probs/``, ``masks/``, ``images/``, ``samples/``), or None.
    folders : folder per kind, overriding ``root/<kind>`` (e.g. an nnU-Net prediction folder
        as ``probs``, its ``labelsTr`` as ``masks``).
    patterns : file-name template per kind, with ``{id}`` standing for the id
        (``{id}_0000`` for nnU-Net images, ``{id}_prob`` for MONAI outputs).
    dataset_json : an nnU-Net ``dataset.json`` naming the labels (default: ``root/dataset.json``,
        the prediction folder's, or the masks folder's parent's, when present).
    """

    root: Path | None = None
    folders: tuple[tuple[str, Path], ...] = ()
    patterns: tuple[tuple[str, str], ...] = ()
    dataset_json: Path | None = None

    @classmethod
    def make(
        cls,
        root: str | os.PathLike[str] | None = None,
        *,
        folders: Mapping[str, str | os.PathLike[str] | None] | None = None,
        patterns: Mapping[str, str] | None = None,
        dataset_json: str | os.PathLike[str] | None = None,
    ) -> DataSpec:
        """A spec from a root and optional per-kind folders / name patterns (None entries ignored)."""
        bad = sorted(set(folders or {}) - set(SUBDIRS)) + sorted(set(patterns or {}) - set(SUBDIRS))
        if bad:
            raise SegcpError(f"unknown input kind {bad[0]!r}; expected one of {', '.join(SUBDIRS)}")
        return cls(
            None if root is None else Path(root),
            tuple(sorted((k, Path(v)) for k, v in (folders or {}).items() if v is not None)),
            tuple(sorted((patterns or {}).items())),
            None if dataset_json is None else Path(dataset_json),
        )

    @property
    def folder_map(self) -> dict[str, Path]:
        return dict(self.folders)

    @property
    def pattern_map(self) -> dict[str, str]:
        return dict(self.patterns)

    def folder(self, kind: str) -> Path | None:
        f = self.folder_map.get(kind)
        if f is not None:
            return f
        return None if self.root is None else Path(self.root) / kind

    def describe(self) -> str:
        return str(self.root) if self.root is not None else ", ".join(f"--{k} {v}" for k, v in self.folders)


def _spec(data: str | os.PathLike[str] | DataSpec) -> DataSpec:
    return data if isinstance(data, DataSpec) else DataSpec(root=Path(data))


def describe_data(data: str | os.PathLike[str] | DataSpec) -> str:
    """How reports name the inputs (the data directory, or its folders)."""
    return _spec(data).describe()


def data_home(data: str | os.PathLike[str] | DataSpec) -> Path:
    """The folder holding groups.json / segcp_export.json: the data directory, else the outputs' folder."""
    spec = _spec(data)
    return Path(spec.root) if spec.root is not None else (spec.folder("probs") or spec.folder("samples") or Path("."))


def data_inputs(data: str | os.PathLike[str] | DataSpec) -> list[Path]:
    """The files and folders of a data directory that commands read: outputs must stay out of
    them (``predict --out data/masks`` would replace the truth)."""
    spec = _spec(data)
    out = [p for p in (spec.folder(k) for k in SUBDIRS) if p is not None and p.exists()]
    if spec.root is not None:
        out += [Path(spec.root) / f for f in ("segcp_export.json", "groups.json", "dataset.json") if (Path(spec.root) / f).exists()]
    if spec.dataset_json is not None:
        out.append(Path(spec.dataset_json))
    return out


def _template(pattern: str | None) -> re.Pattern[str] | None:
    if pattern is None:
        return None
    if pattern.count("{id}") != 1:
        raise SegcpError(f"--match pattern {pattern!r}: must contain {{id}} exactly once")
    head, tail = pattern.split("{id}")
    return re.compile(re.escape(head) + r"(?P<id>.+?)" + re.escape(tail) + r"\Z")


def index_folder(folder: Path, pattern: str | None = None) -> dict[str, Path]:
    """Map id → file for the recognised files of one folder (hidden files ignored).

    With ``pattern`` (``{id}`` in it), only names matching it count, and the id is the part
    that ``{id}`` matches. An id with a file in a format that takes its geometry from a
    companion (nnU-Net's ``.npz``) and a file in a format with geometry (its ``.nii.gz``) maps
    to the first; the second gives its grid (:meth:`DataDir.geometry`).
    """
    return _index(folder, pattern)[0]


def _is_data_file(entry: os.DirEntry[str]) -> bool:
    """Whether a listed entry is a file to index; a data file behind a broken link (a loop, a
    link to nothing) is named in one line instead of vanishing from the listing."""
    try:
        if entry.is_file():
            return True
    except OSError:  # a link loop
        pass
    if entry.is_symlink() and format_of(entry.name) is not None:
        check_regular_file(Path(entry.path))
    return False


def _index(folder: Path, pattern: str | None = None) -> tuple[dict[str, Path], dict[str, Path]]:
    rx = _template(pattern)
    out: dict[str, Path] = {}
    geometry: dict[str, Path] = {}
    try:
        with os.scandir(folder) as it:  # scandir: the file type comes with the listing, no stat per file
            names = sorted(e.name for e in it if not e.name.startswith(".") and _is_data_file(e))
    except OSError as exc:
        raise SegcpError(f"{folder}: cannot list the folder ({exc.strerror or type(exc).__name__})") from None
    kinds: dict[str, Any] = {}
    for name in names:
        hit = format_of(name)
        if hit is None:
            continue
        fmt, stem, _ = hit
        if rx is not None:
            m = rx.match(stem)
            if m is None:
                continue
            stem = m.group("id")
        if stem in out:
            other = kinds[stem]
            # a format without geometry of its own beside a file that has one (nnU-Net: the
            # .npz probabilities and the argmax .nii.gz): the first is read, the second gives the grid
            pair = [(f, p) for f, p in ((other, out[stem]), (fmt, folder / name)) if f.takes_companion_geometry]
            companion = [(f, p) for f, p in ((other, out[stem]), (fmt, folder / name)) if f.has_geometry]
            if len(pair) == 1 and len(companion) == 1 and stem not in geometry:
                out[stem], geometry[stem] = pair[0][1], companion[0][1]
                kinds[stem] = pair[0][0]
                continue
            raise SegcpError(
                f"{folder}: id {stem!r} has two files ({out[stem].name}" + (f", {geometry[stem].name}" if stem in geometry else "") + f", {name})"
            )
        out[stem] = folder / name
        kinds[stem] = fmt
    return out, geometry


def label_names(path: str | os.PathLike[str]) -> dict[int, str]:
    """Label value → name from an nnU-Net ``dataset.json`` (``"labels": {"background": 0, "RV": 1}``)."""
    from segcp.io.readers import read_json

    rec = read_json(path)
    labels = rec.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise SegcpError(f'{path}: no \'labels\' object (expected nnU-Net\'s {{"background": 0, "RV": 1, ...}})')
    out: dict[int, str] = {}
    for name, value in labels.items():
        if isinstance(name, str) and name.isdigit() and isinstance(value, str):  # older {"0": "background"} style
            name, value = value, int(name)
        if isinstance(value, bool) or not isinstance(value, int):
            raise SegcpError(f"{path}: label {name!r} has value {value!r}; segcp reads integer labels (not regions)")
        if value in out:
            raise SegcpError(f"{path}: labels {out[value]!r} and {name!r} share the value {value}")
        out[value] = str(name)
    return out


class DataDir:
    """An indexed data directory (see the module docstring for the layout)."""

    def __init__(self, data: str | os.PathLike[str] | DataSpec) -> None:
        self.spec = _spec(data)
        self.root = Path(self.spec.root) if self.spec.root is not None else None
        if self.root is not None and not self.root.is_dir():
            raise SegcpError(f"{self.root}: data directory does not exist")
        self.files: dict[str, dict[str, Path]] = {}
        self.geometry_files: dict[str, dict[str, Path]] = {}
        #: files per folder that :meth:`ids` left unread (a folder given on its own holding more cases)
        self.unused: dict[str, int] = {}
        for sub in SUBDIRS:
            folder = self.spec.folder(sub)
            if folder is None:
                continue
            if sub in self.spec.folder_map and not folder.is_dir():
                raise SegcpError(f"{folder}: --{sub} folder does not exist")
            if folder.is_dir():
                self.files[sub], self.geometry_files[sub] = _index(folder, self.spec.pattern_map.get(sub))

    def folder(self, sub: str) -> Path:
        """The folder of ``sub`` (for messages)."""
        f = self.spec.folder(sub)
        return f if f is not None else Path(sub)

    def has(self, sub: str) -> bool:
        return sub in self.files

    def ids(self, require: Iterable[str] = ("probs",)) -> list[str]:
        """Sorted ids: those of the first required folder (the model output), each of which every
        other required folder must hold. A folder given on its own (``--masks labelsTr``,
        ``--images imagesTr``) may hold more cases: they are left out and counted
        (:attr:`unused`, :meth:`unused_note`); inside a data directory the ids must match exactly."""
        require = list(require)
        for sub in require:
            if sub not in self.files:
                where = self.spec.describe()
                raise SegcpError(f"{where}: missing folder {sub}/" + (" (or --" + sub + " DIR)" if self.root is None else ""))
            if not self.files[sub]:
                raise SegcpError(
                    f"{self.folder(sub)}: no files in a format segcp reads ({', '.join(suffixes())})"
                    + (f" matching {self.spec.pattern_map[sub]!r}" if sub in self.spec.pattern_map else "")
                )
        if "masks" in require and require[0] in ("probs", "samples") and self.folder("masks").resolve() == self.folder(require[0]).resolve():
            raise SegcpError(self._masks_are_predictions("masks"))
        base = require[0]
        ids = set(self.files[base])
        for sub in require[1:]:
            other = set(self.files[sub])
            missing = sorted(ids - other)
            if missing:
                src = self.files[base][missing[0]].name
                raise SegcpError(
                    f"{self.folder(sub)}: no file for id {missing[0]!r} (from {base}/{src})"
                    + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                    + self._match_hint(sub, missing[0])
                )
            extra = sorted(other - ids)
            if extra and sub in self.spec.folder_map:  # a folder of its own (nnU-Net's labelsTr): the model output picks the cases
                self.unused[sub] = len(extra)
            elif extra:
                raise SegcpError(
                    f"{self.folder(sub)}/{self.files[sub][extra[0]].name}: no matching file in {base}/"
                    + (f" ({len(extra) - 1} more unmatched)" if len(extra) > 1 else "")
                )
        return sorted(ids)

    def _match_hint(self, sub: str, ident: str) -> str:
        """``; its files are named <id>_0000...: pass --match images={id}_0000`` when ``sub``'s
        files are named by the id plus a suffix (nnU-Net's imagesTr), else nothing."""
        if sub in self.spec.pattern_map:
            return ""
        named = sorted(s for s in self.files[sub] if s.startswith(ident) and len(s) > len(ident))
        if not named:
            return ""
        suffix = named[0][len(ident) :]
        return f"; its files are named <id>{suffix} ({self.files[sub][named[0]].name}): pass --match {sub}={{id}}{suffix}"

    def unused_note(self, source: str | os.PathLike[str] | None = None) -> str | None:
        """What :meth:`ids` left unread: ``<folder>: N files not used (the cases are those of <probs>)``
        per folder given on its own that holds more cases than the model output (``source``, when
        another folder chose the cases), or None."""
        if not self.unused:
            return None
        if source is None:
            source = self.folder(next((k for k in ("probs", "samples") if self.has(k)), "probs"))
        parts = [f"{self.folder(sub)}: {n} file{'s' * (n != 1)} not used" for sub, n in sorted(self.unused.items())]
        return "; ".join(parts) + f" (the cases are those of {source})"

    def path(self, sub: str, ident: str) -> Path:
        try:
            return self.files[sub][ident]
        except KeyError:
            raise SegcpError(f"{self.folder(sub)}: no file for id {ident!r}") from None

    def geometry(self, sub: str, ident: str, shape: tuple[int, ...] | None = None) -> Geometry | None:
        """The geometry of ``sub``'s file for ``ident`` (of its companion for an nnU-Net NPZ).

        ``shape``: the spatial shape of the array read for ``ident``; a companion that stores
        another grid (nnU-Net's argmax of another case or resolution) is refused in one line.
        """
        companion = self.geometry_files.get(sub, {}).get(ident)
        g = read_geometry(companion if companion is not None else self.path(sub, ident))
        if companion is not None and g is not None and g.shape is not None and shape is not None:
            stored = tuple(g.shape)
            while len(stored) > len(shape) and stored[-1] == 1:
                stored = stored[:-1]
            if stored != tuple(shape):
                raise SegcpError(
                    f"{companion}: its grid is {stored}, but {self.path(sub, ident).name} holds {tuple(shape)}: not the same case or resolution"
                )
        return g

    def dataset_json(self) -> Path | None:
        """The nnU-Net ``dataset.json`` that names the labels, when there is one: ``--dataset-json``,
        else the data directory's, the prediction folder's (``nnUNetv2_predict`` copies it there),
        the masks folder's or its parent's (nnU-Net's raw dataset)."""
        if self.spec.dataset_json is not None:
            return Path(self.spec.dataset_json)
        masks = self.spec.folder("masks")
        for folder in (self.root, self.spec.folder("probs"), masks, None if masks is None else masks.parent):
            if folder is not None and (Path(folder) / "dataset.json").is_file():
                return Path(folder) / "dataset.json"
        return None

    # ------------------------------------------------------------------ loading
    def read(self, sub: str, ident: str) -> tuple[NDArray[Any], tuple[float, ...] | None]:
        return read_array(self.path(sub, ident), color=sub == "images")

    def _spacing(self, sub: str, ident: str, spacing: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if spacing is not None or ident not in self.geometry_files.get(sub, {}):
            return spacing
        _, sp = read_array(self.geometry_files[sub][ident])
        return sp

    def channel_axis(self, ident: str) -> str | None:
        """``"first"`` when probs/<id> is a (L, *S) stack of masks/<id>'s grid, ``"last"`` for
        (*S, L) (MONAI-style channel-last volumes), None for a single map."""
        pa, _ = read_probabilities(self.path("probs", ident))
        ma, _ = read_array(self.path("masks", ident))
        if pa.ndim == ma.ndim + 1:
            if pa.shape[1:] == ma.shape:
                return "first"
            if pa.shape[:-1] == ma.shape:
                return "last"
        return None

    def not_a_stack(self, ident: str) -> str:
        """Why probs/<id> is no class stack (L, *S) of masks/<id>'s grid, in one line for ``--labels``:
        ``--masks`` pointed at the prediction folder, nnU-Net run without ``--save_probabilities``
        (segmentations, not probabilities), a stack whose spatial axes are in another order than the
        mask's, or else the shapes."""
        p, m = self.path("probs", ident), self.path("masks", ident)
        if ident in self.geometry_files.get("masks", {}):  # an .npz beside its argmax: nnU-Net's predictions
            return self._masks_are_predictions(ident)
        pa, _ = read_probabilities(p)
        ma, _ = read_array(m)
        if pa.ndim == ma.ndim and pa.dtype.kind in "iub":
            return (
                f"{p}: a segmentation (one label per voxel, {pa.dtype}), not class probabilities: rerun nnUNetv2_predict "
                "with --save_probabilities (it writes <case>.npz beside <case>.nii.gz) and point --probs at that folder"
            )
        if pa.ndim == ma.ndim + 1 and sorted(pa.shape[1:]) == sorted(ma.shape) and pa.shape[1:] != ma.shape:
            return (
                f"{p}: a stack of shape {pa.shape}: its spatial axes are in another order than the mask's {ma.shape} "
                f"({m.name}); expected (L, {', '.join(map(str, ma.shape))}). An nnU-Net .npz holds (C, z, y, x), as "
                "nnUNetv2_predict writes it, not (C, x, y, z)"
            )
        return (
            f"{p}: --labels needs class-probability stacks (L, *S), one channel per label, on the mask's grid "
            f"{ma.shape} ({m.name}); got shape {pa.shape}"
        )

    def _masks_are_predictions(self, ident: str) -> str:
        """The line for ``--masks`` pointed at a prediction folder (``ident``: a case of it, or ``"masks"``)."""
        shown = self.files["masks"].get(ident) or next(iter(self.files["masks"].values()), None)
        what = f" ({shown.name} holds the model's output)" if shown is not None else ""
        return (
            f"{self.folder('masks')}: --masks is a prediction folder{what}; point it at the ground truth "
            "(nnU-Net's labelsTr) and --probs at the predictions"
        )

    def probs_have_channels(self, ident: str) -> bool:
        """True when probs/<id> has one more axis than masks/<id> (a class stack)."""
        return self.channel_axis(ident) is not None

    def _read_stack(self, ident: str, channels: str | None) -> tuple[Path, NDArray[Any], tuple[float, ...] | None]:
        """(path, array, spacing of its grid) of one id's probability file, as stored; with
        ``channels`` (``"first"`` or ``"last"``) the array is a class stack, returned
        channel-first (L, *S), and the spacing is that of S."""
        p = self.path("probs", ident)
        arr, spacing = read_probabilities(p)
        spacing = self._spacing("probs", ident, spacing)
        if channels == "last":
            arr = np.moveaxis(arr, -1, 0)
            if spacing is not None and len(spacing) == arr.ndim:
                spacing = spacing[:-1]
        elif channels is not None and spacing is not None and len(spacing) == arr.ndim:
            spacing = spacing[1:]
        return p, arr, spacing

    def _raw_probs(self, ident: str, label: int | None, channels: bool | str) -> tuple[NDArray[Any], tuple[float, ...] | None]:
        """The probability map of one id as read (channel picked, dimensionality checked)."""
        p, arr, spacing = self._read_stack(ident, ("last" if channels == "last" else "first") if channels else None)
        if channels:
            if label is None:
                raise SegcpError(f"{p}: class-probability stack of shape {arr.shape}; pass --label L to pick a class")
            if arr.ndim < 3:
                raise SegcpError(f"{p}: cannot take class {label} from a probability stack of shape {arr.shape}")
            arr = arr[channel_of(label, arr.shape, str(p))]
        if np.ndim(arr) not in (2, 3):
            raise SegcpError(f"{p}: probability map must be 2D or 3D, got shape {np.shape(arr)}")
        return arr, spacing

    def load_probs(
        self, ident: str, *, label: int | None = None, channels: bool | str = False
    ) -> tuple[NDArray[np.floating], tuple[float, ...] | None]:
        """Foreground probabilities of one id, validated, and the file's spacing.

        ``channels``: the file is a class stack, ``"first"`` (L, *S) (or True) or ``"last"``
        (*S, L), and ``label`` picks the class.
        """
        arr, spacing = self._raw_probs(ident, label, channels)
        return check_probabilities(arr, str(self.path("probs", ident))), spacing

    def load_mask(self, ident: str, *, label: int | None = None) -> tuple[NDArray[np.bool_], tuple[float, ...] | None]:
        p = self.path("masks", ident)
        arr, spacing = read_array(p)
        return binarize_mask(arr, label, str(p)), spacing

    def labels_present(self, ids: Sequence[str], limit: int = 16) -> list[int]:
        """The label values of the masks of the first ``limit`` of ``ids`` (for error messages)."""
        values: set[int] = set()
        for ident in list(ids)[:limit]:
            raw, _ = self.read("masks", ident)
            values |= {int(v) for v in np.unique(np.asarray(raw))}
        return sorted(values)

    def check_grid(self, ident: str, shape: tuple[int, ...]) -> Geometry | None:
        """The geometry of the model output; refused when the mask's NIfTI is another grid."""
        g = self.geometry("probs", ident, shape) if self.has("probs") and ident in self.files["probs"] else None
        if self.has("masks") and ident in self.files["masks"]:
            gm = self.geometry("masks", ident)
            if g is not None and gm is not None and not g.same_grid(gm):
                raise SegcpError(
                    f"{self.path('masks', ident)}: its affine differs from the model output's ({g.source.name}): "
                    f"not the same grid (resample one onto the other first)"
                )
            g = g or gm
        return g

    def _check_truth_shape(self, ident: str, truth: str, shape: tuple[int, ...], grid: tuple[int, ...], output: str) -> None:
        """One line naming the truth's file when the ``truth``'s ``shape`` is not the model output's
        ``grid`` (``output``: that grid in words, with its file)."""
        if shape != grid:
            raise SegcpError(f"{self.path('masks', ident)}: {truth} shape {shape} does not match {output}")

    def _image_and_grid(
        self, ident: str, grid: tuple[int, ...], spacing: tuple[float, ...] | None, *, with_mask: bool, with_image: bool
    ) -> tuple[NDArray[Any] | None, tuple[float, ...] | None, Geometry | None]:
        """A case's image (when asked; its spacing fills in a missing one) and the geometry of its grid
        (checked against the truth's file when the truth is read): ``(image, spacing, geometry)``."""
        image = None
        if with_image:
            image, ispacing = self.read("images", ident)
            spacing = spacing or ispacing
        geometry = self.check_grid(ident, grid) if with_mask else self.geometry("probs", ident, grid)
        return image, spacing, geometry

    def load_case(
        self, ident: str, *, label: int | None = None, channels: bool | str = False, with_mask: bool = True, with_image: bool = False
    ) -> Case:
        """Build a :class:`Case` for one id, with one-line errors naming the files.

        The probabilities are validated once, by :class:`Case` (which names the file).
        """
        probs, spacing = self._raw_probs(ident, label, channels)
        mask = None
        if with_mask:
            mask, mspacing = self.load_mask(ident, label=label)
            output = f"probability map shape {probs.shape} ({self.path('probs', ident).name})"
            self._check_truth_shape(ident, "mask", mask.shape, probs.shape, output)
            spacing = mspacing or spacing
        image, spacing, geometry = self._image_and_grid(ident, probs.shape, spacing, with_mask=with_mask, with_image=with_image)
        return Case(id=ident, probs=probs, mask=mask, image=image, spacing=spacing, geometry=geometry, where=str(self.path("probs", ident)))

    def load_stack(self, ident: str, *, channels: str, with_mask: bool = True, with_image: bool = False) -> Case:
        """A case with the whole class stack (``class_probs``, (L, *S)) and the label map, for
        per-structure calibration (``--labels``)."""
        p, arr, spacing = self._read_stack(ident, channels)
        if arr.ndim not in (3, 4):
            raise SegcpError(f"{p}: expected a class-probability stack (L, *S), got shape {arr.shape}")
        label_map = None
        if with_mask:
            m, mspacing = read_array(self.path("masks", ident))
            label_map = check_label_map(m, str(self.path("masks", ident)), arr.shape[0])
            self._check_truth_shape(ident, "label map", label_map.shape, arr.shape[1:], f"the probability stack's grid {arr.shape[1:]} ({p.name})")
            spacing = mspacing or spacing
        image, spacing, geometry = self._image_and_grid(ident, arr.shape[1:], spacing, with_mask=with_mask, with_image=with_image)
        return Case(
            id=ident,
            class_probs=check_class_probs(arr, str(p), tuple(arr.shape[1:])),
            label_map=label_map,
            image=image,
            spacing=spacing,
            geometry=geometry,
            where=str(p),
        )

    def reader(self, family: Any, *, label: int | None = None, with_truth: bool = True, channels: bool | str | None = None) -> CaseReader:
        """The :class:`CaseReader` of ``family`` (a :class:`~segcp.methods.SetFamily`) on this directory."""
        return CaseReader(self, family, label=label, with_truth=with_truth, channels=channels)


class CaseReader:
    """Reads, for one set family, the :class:`~segcp.cases.Case` of each id of a data directory.

    The family says which folders it reads (:meth:`SetFamily.folders`) and which truth
    (``mask``: a binary mask, ``--label L`` for one structure of a label map; ``label_map``: the
    multi-class ground truth). ``ids`` are the ids present in every folder read (a one-line
    error names the first missing or unmatched file). ``channels``: whether probs/ holds class
    stacks from which ``label`` picks one — ``"first"`` (L, *S), ``"last"`` (*S, L) or False;
    decided on the first id when None.
    """

    def __init__(self, dd: DataDir, family: Any, *, label: int | None = None, with_truth: bool = True, channels: bool | str | None = None) -> None:
        self.dd = dd
        self.family = family
        self.label = label
        self.with_truth = with_truth
        self.folders = list(dict.fromkeys(FOLDER_OF.get(f, f) for f in family.folders(set(dd.files))))
        self.multiclass = family.truth == "label_map"
        require = self.folders[:1] + (["masks"] if with_truth else []) + self.folders[1:]
        self.ids = dd.ids(require)
        if channels is None:
            channels = False
            if not self.multiclass and "probs" in self.folders:
                channels = (dd.channel_axis(self.ids[0]) or False) if dd.has("masks") else False
                if channels and label is None:
                    raise SegcpError(f"{dd.path('probs', self.ids[0])}: class-probability stack (one more axis than the mask); pass --label L")
        self.channels: bool | str = "first" if channels is True else channels
        self.label_seen = False
        self.allow_empty = False  # calibrate --allow-empty-masks

    def require_label_seen(self) -> None:
        """One-line error when ``--label L`` selected a structure that no mask read holds, or when every
        binary mask is empty (the FNR is undefined on an empty truth: λ̂ = λ_min with a "risk 0" that
        guarantees nothing) unless :attr:`allow_empty` (asked for by name)."""
        if not self.with_truth or self.multiclass or self.label_seen:
            return
        if self.label is None:
            if self.allow_empty:
                return
            raise SegcpError(
                f"{self.dd.folder('masks')}: every mask is empty: the FNR is undefined on empty truths (lambda would be "
                "its minimum with a risk of 0 that guarantees nothing); check the masks, or calibrate --allow-empty-masks"
            )
        raise SegcpError(
            f"{self.dd.folder('masks')}: no mask holds label {self.label} (labels present: "
            f"{', '.join(map(str, self.dd.labels_present(self.ids)))}); check --label"
        )

    @property
    def source(self) -> str:
        """The folder of the model output (probs or samples)."""
        return self.folders[0]

    def __len__(self) -> int:
        return len(self.ids)

    def read(self, ident: str) -> Case:
        """The case of one id (with its truth when the reader was made ``with_truth``)."""
        if not self.multiclass:
            case = self.dd.load_case(ident, label=self.label, channels=self.channels, with_mask=self.with_truth, with_image="images" in self.folders)
            self.label_seen = self.label_seen or bool(case.mask is not None and case.mask.any())  # one pass until one is seen
            return case
        return self._read_multiclass(ident)

    def _read_multiclass(self, ident: str) -> Case:
        dd, src = self.dd, self.source
        x_path = dd.path(src, ident)
        raw, spacing = read_probabilities(x_path)
        spacing = dd._spacing(src, ident, spacing)
        truth = None
        spatial: tuple[int, ...] | None = None
        if self.with_truth:
            m_raw, mspacing = dd.read("masks", ident)
            truth = np.asarray(m_raw)
            spatial = tuple(truth.shape)
            spacing = mspacing or spacing
        fields: dict[str, Any] = {}
        if src == "samples":
            x = check_samples(raw, str(x_path), spatial)
            fields["samples"] = x
            n_labels = x.shape[1]
        else:
            if spatial is not None and raw.ndim == len(spatial) + 1 and raw.shape[:-1] == spatial and raw.shape[1:] != spatial:
                raw = np.moveaxis(raw, -1, 0)  # channel-last class probabilities
            x = check_class_probs(raw, str(x_path), spatial or tuple(np.shape(raw)[1:]))
            fields["class_probs"] = x
            n_labels = x.shape[0]
        if truth is not None:
            fields["label_map"] = check_label_map(truth, str(dd.path("masks", ident)), n_labels)
        spatial_ndim = len(x.shape) - (2 if src == "samples" else 1)
        if spacing is not None and len(spacing) != spatial_ndim:
            spacing = spacing[-spatial_ndim:] if len(spacing) > spatial_ndim else None
        geometry = dd.check_grid(ident, x.shape[-spatial_ndim:]) if self.with_truth else dd.geometry(src, ident, x.shape[-spatial_ndim:])
        return Case(ident, spacing=spacing, geometry=geometry, where=str(x_path), **fields)
