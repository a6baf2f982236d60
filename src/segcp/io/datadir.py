"""The data-directory contract: one loader for every command and every set family.

A data directory holds, per image id::

    probs/<id>.<ext>     foreground probability, float in [0, 1]  (PNG: uint8/255, uint16/65535);
                         or a class-probability stack (L, *S): one channel with --label L
                         (pixel-set families), all of them for the multi-class ones (aps)
    samples/<id>.<ext>   N sampled softmax maps (N, L, *S) (MC dropout, ensemble members);
                         (N, *S) is read as binary foreground samples (L = 2)
    masks/<id>.<ext>     binary mask, or a label map (with --label L for pixel-set families)
    images/<id>.<ext>    the image (image-aware families: rwcp)

with ``ext`` ∈ {npy, png, nii.gz, nii}. NIfTI spacing is read (mask first, then the model
output, then the image) and used by the metrics and spacing-aware methods. Ids must match
across the folders a command reads. :meth:`DataDir.reader` builds, for a set family, the
:class:`~segcp.cases.Case` of every id with one-line errors naming the file at fault.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError
from segcp.cases import Case, binarize_mask, check_class_probs, check_label_map, check_probabilities, check_samples
from segcp.io.readers import read_array, read_probabilities, split_ext

__all__ = ["FOLDER_OF", "SUBDIRS", "CaseReader", "DataDir", "data_inputs", "index_folder"]

SUBDIRS = ("probs", "masks", "images", "samples")
#: The folder each case input is read from.
FOLDER_OF = {"probs": "probs", "image": "images", "samples": "samples", "class_probs": "probs"}


def data_inputs(data: str | os.PathLike[str]) -> list[Path]:
    """The files and folders of a data directory that commands read: outputs must stay out of
    them (``predict --out data/masks`` would replace the truth)."""
    root = Path(data)
    return [root / sub for sub in (*SUBDIRS, "segcp_export.json", "groups.json") if (root / sub).exists()]


def index_folder(folder: Path) -> dict[str, Path]:
    """Map id → file for the recognised files of one folder (hidden files ignored)."""
    out: dict[str, Path] = {}
    try:
        with os.scandir(folder) as it:  # scandir: the file type comes with the listing, no stat per file
            names = sorted(e.name for e in it if not e.name.startswith(".") and e.is_file())
    except OSError as exc:
        raise SegcpError(f"{folder}: cannot list the folder ({exc.strerror or type(exc).__name__})") from None
    for name in names:
        parts = split_ext(name)
        if parts is None:
            continue
        ident = parts[0]
        if ident in out:
            raise SegcpError(f"{folder}: id {ident!r} has two files ({out[ident].name}, {name})")
        out[ident] = folder / name
    return out


@dataclass
class DataDir:
    """An indexed data directory (see the module docstring for the layout)."""

    root: Path

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise SegcpError(f"{self.root}: data directory does not exist")
        self.files: dict[str, dict[str, Path]] = {}
        for sub in SUBDIRS:
            folder = self.root / sub
            if folder.is_dir():
                self.files[sub] = index_folder(folder)

    def has(self, sub: str) -> bool:
        return sub in self.files

    def ids(self, require: Iterable[str] = ("probs",)) -> list[str]:
        """Sorted ids, checking that every required folder exists and ids match exactly."""
        require = list(require)
        for sub in require:
            if sub not in self.files:
                raise SegcpError(f"{self.root}: missing folder {sub}/")
            if not self.files[sub]:
                raise SegcpError(f"{self.root / sub}: no .npy, .png, .nii or .nii.gz files")
        base = require[0]
        ids = set(self.files[base])
        for sub in require[1:]:
            other = set(self.files[sub])
            missing = sorted(ids - other)
            if missing:
                src = self.files[base][missing[0]].name
                raise SegcpError(
                    f"{self.root / sub}: no file for id {missing[0]!r} (from {base}/{src})"
                    + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                )
            extra = sorted(other - ids)
            if extra:
                raise SegcpError(
                    f"{self.root / sub}/{self.files[sub][extra[0]].name}: no matching file in {base}/"
                    + (f" ({len(extra) - 1} more unmatched)" if len(extra) > 1 else "")
                )
        return sorted(ids)

    def path(self, sub: str, ident: str) -> Path:
        try:
            return self.files[sub][ident]
        except KeyError:
            raise SegcpError(f"{self.root / sub}: no file for id {ident!r}") from None

    # ------------------------------------------------------------------ loading
    def read(self, sub: str, ident: str) -> tuple[NDArray[Any], tuple[float, ...] | None]:
        return read_array(self.path(sub, ident))

    def load_probs(self, ident: str, *, label: int | None = None, channels: bool = False) -> tuple[NDArray[np.float64], tuple[float, ...] | None]:
        """Foreground probabilities of one id, float64 in [0, 1], and the file's spacing.

        ``channels=True``: the file is a (L, *S) stack and ``label`` picks the channel.
        """
        arr, spacing = self._raw_probs(ident, label, channels)
        return check_probabilities(arr, str(self.path("probs", ident))), spacing

    def _raw_probs(self, ident: str, label: int | None, channels: bool) -> tuple[NDArray[Any], tuple[float, ...] | None]:
        """The probability map of one id as read (channel picked, dimensionality checked)."""
        p = self.path("probs", ident)
        arr, spacing = read_probabilities(p)
        if channels:
            if label is None:
                raise SegcpError(f"{p}: class-probability stack of shape {arr.shape}; pass --label L to pick a class")
            if arr.ndim < 3 or not 0 <= label < arr.shape[0]:
                raise SegcpError(f"{p}: cannot take class {label} from a probability stack of shape {arr.shape}")
            arr = arr[label]
            if spacing is not None:
                spacing = spacing[1:]
        if np.ndim(arr) not in (2, 3):
            raise SegcpError(f"{p}: probability map must be 2D or 3D, got shape {np.shape(arr)}")
        return arr, spacing

    def load_mask(self, ident: str, *, label: int | None = None) -> tuple[NDArray[np.bool_], tuple[float, ...] | None]:
        p = self.path("masks", ident)
        arr, spacing = read_array(p)
        return binarize_mask(arr, label, str(p)), spacing

    def probs_have_channels(self, ident: str) -> bool:
        """True when probs/<id> has one more axis than masks/<id> (a class stack)."""
        pa, _ = read_array(self.path("probs", ident))
        ma, _ = read_array(self.path("masks", ident))
        return pa.ndim == ma.ndim + 1 and pa.shape[1:] == ma.shape

    def load_case(
        self,
        ident: str,
        *,
        label: int | None = None,
        channels: bool = False,
        with_mask: bool = True,
        with_image: bool = False,
    ) -> Case:
        """Build a :class:`Case` for one id, with one-line errors naming the files.

        The probabilities are validated once, by :class:`Case` (which names the file).
        """
        probs, spacing = self._raw_probs(ident, label, channels)
        mask = None
        if with_mask:
            mask, mspacing = self.load_mask(ident, label=label)
            if mask.shape != probs.shape:
                raise SegcpError(
                    f"{self.path('masks', ident)}: mask shape {mask.shape} does not match "
                    f"probability map shape {probs.shape} ({self.path('probs', ident).name})"
                )
            spacing = mspacing or spacing
        image = None
        if with_image:
            image, ispacing = self.read("images", ident)
            spacing = spacing or ispacing
        return Case(id=ident, probs=probs, mask=mask, image=image, spacing=spacing, where=str(self.path("probs", ident)))

    def reader(self, family: Any, *, label: int | None = None, with_truth: bool = True, channels: bool | None = None) -> CaseReader:
        """The :class:`CaseReader` of ``family`` (a :class:`~segcp.methods.SetFamily`) on this directory."""
        return CaseReader(self, family, label=label, with_truth=with_truth, channels=channels)


class CaseReader:
    """Reads, for one set family, the :class:`~segcp.cases.Case` of each id of a data directory.

    The family says which folders it reads (:meth:`SetFamily.folders`) and which truth
    (``mask``: a binary mask, ``--label L`` for one structure of a label map; ``label_map``: the
    multi-class ground truth). ``ids`` are the ids present in every folder read (a one-line
    error names the first missing or unmatched file). ``channels``: whether probs/ holds class
    stacks (L, *S) from which ``label`` picks one (decided on the first id when None).
    """

    def __init__(self, dd: DataDir, family: Any, *, label: int | None = None, with_truth: bool = True, channels: bool | None = None) -> None:
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
                channels = dd.probs_have_channels(self.ids[0]) if dd.has("masks") else False
                if channels and label is None:
                    raise SegcpError(
                        f"{dd.path('probs', self.ids[0])}: class-probability stack (one more axis than the mask); pass --label L"
                    )
        self.channels = bool(channels)
        self.label_seen = False

    def require_label_seen(self) -> None:
        """One-line error when ``--label L`` selected a structure that no mask read holds."""
        if self.label is None or not self.with_truth or self.multiclass or self.label_seen:
            return
        values: set[int] = set()
        for ident in self.ids[:16]:
            raw, _ = self.dd.read("masks", ident)
            values |= {int(v) for v in np.unique(np.asarray(raw))}
        raise SegcpError(
            f"{self.dd.root / 'masks'}: no mask holds label {self.label} (labels present: "
            f"{', '.join(map(str, sorted(values)))}); check --label"
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
            case = self.dd.load_case(
                ident, label=self.label, channels=self.channels, with_mask=self.with_truth, with_image="images" in self.folders
            )
            self.label_seen |= bool(case.mask is not None and case.mask.any())
            return case
        return self._read_multiclass(ident)

    def _read_multiclass(self, ident: str) -> Case:
        dd, src = self.dd, self.source
        x_path = dd.path(src, ident)
        raw, spacing = read_probabilities(x_path)
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
            x = check_class_probs(raw, str(x_path), spatial or tuple(np.shape(raw)[1:]))
            fields["class_probs"] = x
            n_labels = x.shape[0]
        if truth is not None:
            fields["label_map"] = check_label_map(truth, str(dd.path("masks", ident)), n_labels)
        if spacing is not None and len(spacing) != len(x.shape) - (2 if src == "samples" else 1):
            spacing = None  # the channel axes carry no spacing; the mask's grid does
        return Case(ident, spacing=spacing, where=str(x_path), **fields)
