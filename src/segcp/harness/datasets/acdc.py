"""ACDC in the SSL4MIS HDF5 layout: 2D slice files and 3D volume files.

Two file kinds are read, both holding the datasets ``image`` and ``label``:

- slice files ``patientXXX_frameYY_slice_N.h5``: ``image`` float (H, W), ``label`` integer
  (H, W);
- volume files ``patientXXX_frameYY.h5``: ``image`` float (Z, H, W), ``label`` integer
  (Z, H, W). Slice ``z`` (0-based in the array) gets the id ``patientXXX_frameYY_slice_{z+1}``,
  the 1-based numbering of the slice files shipped with the data.

3D volumes (task ``acdc-3d``): :func:`acdc_volumes` groups the slices of each (patient, frame)
and :func:`read_acdc_volume` stacks them along the LAST axis, (H, W, Z), slice k + 1 at
``[:, :, k]`` — nibabel's order, the slice axis third — whatever file kind they came from.

Labels: 0 background, 1 right-ventricle cavity, 2 myocardium, 3 left-ventricle cavity.
No pixel spacing is stored in these files (spacing is ``None``: pixel units).

Every problem (truncated or non-HDF5 file, missing dataset, shape mismatch, non-integer or
out-of-range labels, a name that does not follow the pattern) raises one
:class:`~segcp.errors.SegcpError` line naming the file.

Examples
--------
>>> parse_acdc_name("patient003_frame01_slice_5.h5")
AcdcKey(patient='patient003', frame='frame01', slice=5)
>>> parse_acdc_name("patient003_frame01.h5").slice is None
True
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError
from segcp.harness.datasets._h5 import check_image, check_label, h5py_module, open_datasets, read_image_label, unreadable

__all__ = [
    "ACDC_LABELS",
    "AcdcKey",
    "AcdcSlice",
    "AcdcVolume",
    "acdc_files",
    "acdc_volumes",
    "label_areas",
    "parse_acdc_name",
    "read_acdc_h5",
    "read_acdc_slice",
    "read_acdc_volume",
    "scan_acdc",
]

#: Label values of the ACDC label maps and their meaning.
ACDC_LABELS: dict[int, str] = {0: "background", 1: "right ventricle cavity", 2: "myocardium", 3: "left ventricle cavity"}
N_LABELS = len(ACDC_LABELS)

_NAME = re.compile(r"^(patient\d+)_(frame\d+)(?:_slice_(\d+))?\.h5$", re.IGNORECASE)


@dataclass(frozen=True)
class AcdcKey:
    """What a file name says: patient (``'patient003'``), frame (``'frame01'``), slice.

    ``slice`` is the 1-based slice number of a slice file, or None for a volume file.
    """

    patient: str
    frame: str
    slice: int | None


@dataclass(frozen=True)
class AcdcSlice:
    """One 2D slice: its id, where it comes from, and how to find it in the file.

    ``index`` is the 0-based position along Z inside a volume file, or None when ``path``
    is a 2D slice file.
    """

    id: str
    patient: str
    frame: str
    slice: int
    path: Path
    index: int | None = None

    @property
    def volume(self) -> tuple[str, str]:
        """The (patient, frame) pair: one 3D volume (one cardiac phase of one patient)."""
        return (self.patient, self.frame)


def parse_acdc_name(name: str | os.PathLike[str]) -> AcdcKey:
    """Parse ``patientXXX_frameYY[_slice_N].h5`` (a path is accepted; only its name is read).

    Raises :class:`SegcpError` for a name that does not follow the pattern.
    """
    base = Path(name).name
    m = _NAME.match(base)
    if m is None:
        raise SegcpError(f"{name}: not an ACDC file name; expected patientXXX_frameYY_slice_N.h5 or patientXXX_frameYY.h5")
    patient, frame, sl = m.groups()
    return AcdcKey(patient.lower(), frame.lower(), None if sl is None else int(sl))


def acdc_files(root: str | os.PathLike[str]) -> list[Path]:
    """The ``.h5`` files of an ACDC folder: ``root/data/*.h5`` if that folder exists, else ``root/*.h5``."""
    root = Path(root)
    if not root.is_dir():
        raise SegcpError(f"{root}: ACDC folder does not exist")
    folder = root / "data" if (root / "data").is_dir() else root
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() == ".h5" and not p.name.startswith("."))
    if not files:
        raise SegcpError(f"{folder}: no .h5 files (expected the SSL4MIS ACDC layout)")
    return files


# --------------------------------------------------------------------------- reading
def _check_label(path: Path, label: NDArray[Any]) -> NDArray[np.uint8]:
    """Label map as uint8 in {0, 1, 2, 3}, or one error line naming ``path``."""
    return check_label(path, label, N_LABELS)


def _check_shapes(path: Path, image_shape: tuple[int, ...], label_shape: tuple[int, ...]) -> None:
    if len(label_shape) not in (2, 3):
        raise SegcpError(f"{path}: 'label' must be 2D (H, W) or 3D (Z, H, W), got shape {label_shape}")
    if image_shape != label_shape:
        raise SegcpError(f"{path}: 'image' shape {image_shape} does not match 'label' shape {label_shape}")


def read_acdc_h5(path: str | os.PathLike[str], *, with_image: bool = True) -> tuple[NDArray[np.float32] | None, NDArray[np.uint8]]:
    """Read and validate one SSL4MIS ACDC file (slice or volume).

    Parameters
    ----------
    path : the ``.h5`` file.
    with_image : False reads only the label (the image shape is still checked).

    Returns
    -------
    (image, label)
        ``image`` float32, (H, W) or (Z, H, W), as stored (the SSL4MIS files hold [0, 1]),
        or None when ``with_image`` is False; ``label`` uint8 of the same shape with values
        in {0, 1, 2, 3}.
    """
    p = Path(path)
    image, label = read_image_label(p, _check_shapes, with_image=with_image)
    lab = _check_label(p, label)
    img = check_image(p, image) if image is not None else None
    return img, lab


def _read_one(s: AcdcSlice, with_image: bool) -> tuple[NDArray[np.float32] | None, NDArray[np.uint8]]:
    h5py = h5py_module()

    if s.index is None:
        img, lab = read_acdc_h5(s.path, with_image=with_image)
        if lab.ndim != 2:
            raise SegcpError(f"{s.path}: a slice file must hold 2D arrays, got shape {lab.shape}")
        return img, lab
    p = s.path
    try:
        with h5py.File(p, "r") as h5:
            ds_img, ds_lab = open_datasets(h5, p, ("image", "label"))
            _check_shapes(p, tuple(ds_img.shape), tuple(ds_lab.shape))
            if len(ds_lab.shape) != 3 or not 0 <= s.index < ds_lab.shape[0]:
                raise SegcpError(f"{p}: no slice index {s.index} in a volume of shape {tuple(ds_lab.shape)}")
            label = ds_lab[s.index]
            image = ds_img[s.index] if with_image else None
    except SegcpError:
        raise
    except Exception as exc:
        raise unreadable(p, exc) from None
    return (check_image(p, image) if image is not None else None), _check_label(p, label)


def read_acdc_slice(s: AcdcSlice) -> tuple[NDArray[np.float32], NDArray[np.uint8]]:
    """Image float32 (H, W) and label uint8 (H, W) of one slice (from a slice or volume file)."""
    img, lab = _read_one(s, with_image=True)
    assert img is not None
    return img, lab


def _volume_depth(path: Path) -> int:
    h5py = h5py_module()

    try:
        with h5py.File(path, "r") as h5:
            ds_img, ds_lab = open_datasets(h5, path, ("image", "label"))
            _check_shapes(path, tuple(ds_img.shape), tuple(ds_lab.shape))
            if len(ds_lab.shape) != 3:
                raise SegcpError(f"{path}: a volume file (no _slice_N in its name) must hold 3D arrays (Z, H, W), got shape {tuple(ds_lab.shape)}")
            return int(ds_lab.shape[0])
    except SegcpError:
        raise
    except Exception as exc:
        raise unreadable(path, exc) from None


def scan_acdc(root: str | os.PathLike[str]) -> list[AcdcSlice]:
    """Index every slice of an ACDC folder (slice files and/or volume files).

    Volume files are opened to read their depth (metadata only). The result is sorted by
    (patient, frame, slice). Two sources for the same slice id raise :class:`SegcpError`.
    """
    out: dict[str, AcdcSlice] = {}
    for path in acdc_files(root):
        key = parse_acdc_name(path)
        if key.slice is not None:
            entries = [AcdcSlice(f"{key.patient}_{key.frame}_slice_{key.slice}", key.patient, key.frame, key.slice, path)]
        else:
            depth = _volume_depth(path)
            entries = [AcdcSlice(f"{key.patient}_{key.frame}_slice_{z + 1}", key.patient, key.frame, z + 1, path, z) for z in range(depth)]
        for e in entries:
            if e.id in out:
                raise SegcpError(f"{path}: slice {e.id} is also provided by {out[e.id].path.name}")
            out[e.id] = e
    return sorted(out.values(), key=lambda s: (s.patient, s.frame, s.slice))


# ------------------------------------------------------------------- 3D volumes
@dataclass(frozen=True)
class AcdcVolume:
    """One ACDC (patient, frame) volume: its slices in slice order (1, 2, …, Z).

    ``id`` is ``patientXXX_frameYY``; the volume is one cardiac phase of one patient.
    """

    id: str
    patient: str
    frame: str
    slices: tuple[AcdcSlice, ...]

    @property
    def depth(self) -> int:
        """Number of slices Z."""
        return len(self.slices)


def acdc_volumes(slices: list[AcdcSlice]) -> list[AcdcVolume]:
    """Group the slices of :func:`scan_acdc` into (patient, frame) volumes, sorted by id.

    The slice numbers of each volume must be exactly 1..Z (a missing slice would put the
    neighbouring ones next to each other in the stack); otherwise one error line names the
    volume and the first missing number.
    """
    groups: dict[tuple[str, str], list[AcdcSlice]] = {}
    for s in slices:
        groups.setdefault(s.volume, []).append(s)
    out = []
    for (patient, frame), members in sorted(groups.items()):
        members.sort(key=lambda s: s.slice)
        numbers = [s.slice for s in members]
        if numbers != list(range(1, len(members) + 1)):
            missing = next(k for k in range(1, numbers[-1] + 1) if k not in set(numbers))
            raise SegcpError(
                f"{members[0].path.parent}: {patient}_{frame} has slices {numbers[0]}..{numbers[-1]} "
                f"but no slice {missing}; cannot stack it into a volume"
            )
        out.append(AcdcVolume(f"{patient}_{frame}", patient, frame, tuple(members)))
    return out


def read_acdc_volume(vol: AcdcVolume, *, with_image: bool = True) -> tuple[NDArray[np.float32] | None, NDArray[np.uint8]]:
    """Stack the slices of one volume along the LAST axis.

    Returns
    -------
    (image, label)
        ``image`` float32 (H, W, Z) as stored ([0, 1], min-max normalised per volume by
        SSL4MIS), or None when ``with_image`` is False; ``label`` uint8 (H, W, Z) in
        {0, 1, 2, 3}. ``[:, :, k]`` is the slice numbered k + 1 (id ``…_slice_{k+1}``).
        Every slice must have the same (H, W) (one error line names the first that does not).
    """
    images: list[NDArray[np.float32]] = []
    labels: list[NDArray[np.uint8]] = []
    for s in vol.slices:
        img, lab = _read_one(s, with_image)
        if labels and lab.shape != labels[0].shape:
            raise SegcpError(
                f"{s.path}: slice shape {lab.shape} differs from {vol.slices[0].path.name} {labels[0].shape}; cannot stack {vol.id} into a volume"
            )
        labels.append(lab)
        if img is not None:
            images.append(img)
    label = np.stack(labels, axis=-1)
    return (np.stack(images, axis=-1) if with_image else None), label


# ------------------------------------------------------------------- label areas
_AREA_CACHE: dict[tuple[str, int, int], NDArray[np.int64]] = {}


def _file_areas(path: Path) -> NDArray[np.int64]:
    """Per-slice label counts of one file, shape (Z, 4) (Z = 1 for a slice file); cached."""
    st = path.stat()
    key = (str(path.resolve()), st.st_mtime_ns, st.st_size)
    hit = _AREA_CACHE.get(key)
    if hit is not None:
        return hit
    _, lab = read_acdc_h5(path, with_image=False)
    lab3 = lab[None] if lab.ndim == 2 else lab
    flat = lab3.reshape(lab3.shape[0], -1).astype(np.int64)
    counts = np.stack([(flat == k).sum(axis=1) for k in range(N_LABELS)], axis=1)
    _AREA_CACHE[key] = counts
    return counts


def label_areas(slices: list[AcdcSlice]) -> NDArray[np.int64]:
    """Pixel counts of each label for each slice, int64 (n_slices, 4), columns = labels 0..3.

    Reads labels only, one read per file, and caches the counts in memory (keyed by path,
    modification time and size), so a second call is instant. Cold, the 1312 ACDC slice
    files take about 2.5 s.
    """
    out = np.zeros((len(slices), N_LABELS), dtype=np.int64)
    for i, s in enumerate(slices):
        counts = _file_areas(s.path)
        row = 0 if s.index is None else s.index
        if row >= counts.shape[0]:
            raise SegcpError(f"{s.path}: no slice index {row} in a volume of depth {counts.shape[0]}")
        out[i] = counts[row]
    return out
