"""Array readers for the formats users hold (NPY, PNG, NIfTI, nnU-Net's NPZ), and JSON.

Every failure becomes a :class:`~segcp.errors.SegcpError` whose one-line message names the
file and the problem. (The writers are in :mod:`segcp.io.writers`.)

Axis order. NIfTI arrays are returned as nibabel gives them, in voxel order (x, y, z). nnU-Net
v2 writes its probabilities (``nnUNetv2_predict --save_probabilities``) as ``<case>.npz`` with
the key ``probabilities``, shape (C, *spatial) in SimpleITK's array order — (C, z, y, x) for
3D, (C, 1, y, x) for 2D — i.e. the spatial axes reversed with respect to nibabel's. An
``.npz`` file is read as such an export: the spatial axes are reversed back, so that channel
c lines up voxel for voxel with the NIfTI files next to it (the argmax ``<case>.nii.gz`` and
the ``labelsTr`` ground truth). Its spacing and geometry come from a NIfTI file (never from
nnU-Net's ``.pkl``, which segcp never unpickles).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError

__all__ = ["EXTENSIONS", "NIFTI", "Geometry", "read_array", "read_geometry", "read_json", "read_probabilities", "split_ext"]

#: Recognised file extensions, longest first so that ``.nii.gz`` wins over ``.gz``.
EXTENSIONS = (".nii.gz", ".nii", ".npy", ".npz", ".png")
NIFTI = (".nii.gz", ".nii")
#: The key of nnU-Net v2's probability exports.
NNUNET_KEY = "probabilities"


class Geometry:
    """Where a NIfTI array lives: its affine (voxel → world, mm) and header, for writing sets
    that a viewer overlays on the input (same grid, same affine)."""

    def __init__(self, affine: NDArray[np.float64], header: Any, source: Path) -> None:
        self.affine = np.asarray(affine, dtype=np.float64)
        self.header = header
        self.source = source

    def same_grid(self, other: Geometry, shape: tuple[int, ...] | None = None) -> bool:
        """Whether two geometries place voxels at the same world positions (affines within 1e-4 mm)."""
        return bool(np.allclose(self.affine, other.affine, atol=1e-4))

    def __repr__(self) -> str:
        return f"Geometry(source={str(self.source)!r})"


def read_geometry(path: str | os.PathLike[str]) -> Geometry | None:
    """The geometry of a NIfTI file (None for other formats)."""
    if not os.fspath(path).lower().endswith(NIFTI):  # cheap: called for every file of a data set
        return None
    p = Path(path)
    parts = split_ext(p.name)
    if parts is None or parts[1] not in NIFTI:
        return None
    import nibabel as nib

    try:
        img = nib.load(str(p))
    except Exception as exc:  # noqa: BLE001 - any reader failure is one line naming the file
        raise SegcpError(f"{p}: unreadable NIfTI file ({' '.join(str(exc).split()) or type(exc).__name__})") from None
    return Geometry(img.affine, img.header, p)


def _read_npz(path: Path) -> NDArray[Any]:
    with np.load(path, allow_pickle=False) as f:
        if not hasattr(f, "files"):
            raise SegcpError(f"{path}: not an .npz archive")
        if NNUNET_KEY not in f.files:
            raise SegcpError(f"{path}: no '{NNUNET_KEY}' array (keys: {', '.join(f.files) or 'none'}); expected nnU-Net's --save_probabilities export")
        arr = np.asarray(f[NNUNET_KEY])
    if arr.ndim not in (3, 4):
        raise SegcpError(f"{path}: '{NNUNET_KEY}' of shape {arr.shape}; expected (C, z, y, x) or (C, 1, y, x)")
    arr = np.ascontiguousarray(arr.transpose(0, *range(arr.ndim - 1, 0, -1)))  # SimpleITK order → nibabel order
    while arr.ndim > 3 and arr.shape[-1] == 1:  # 2D export (C, 1, y, x) → (C, x, y)
        arr = arr[..., 0]
    return arr


#: Parsed NPY headers, keyed by their raw bytes: the files of one data set share a few.
_NPY_HEADERS: dict[bytes, tuple[tuple[int, ...], bool, np.dtype[Any]]] = {}
_NPY_MAX_HEADER = 10_000  # numpy's own default limit (np.load's max_header_size)


def _read_npy(path: Path) -> NDArray[Any] | None:
    """A well-formed ``.npy`` file read in one ``readinto``, or None to let ``np.load`` read it.

    Why by hand: ``np.load`` parses every file's header with ``ast.literal_eval`` (a third
    of its time on a 256² float32 map); the files of a data set share a handful of headers,
    so each distinct header is parsed once, by numpy's own ``read_array_header_*``, and
    remembered by its bytes. The array is the file's bytes in the stored dtype, byte order
    and memory order, exactly what ``np.load`` returns. Anything unusual — another magic
    (an ``.npz`` zip), an unknown version, an object dtype, a header numpy refuses, a
    truncated body — returns None (truncation: raises), so ``np.load`` keeps every error
    message and the pickle refusal.
    """
    with open(path, "rb") as f:
        prefix = f.read(12)
        if len(prefix) < 10 or prefix[:6] != np.lib.format.MAGIC_PREFIX or prefix[6] not in (1, 2, 3):
            return None
        size = int.from_bytes(prefix[8:10] if prefix[6] == 1 else prefix[8:12], "little")
        if size > _NPY_MAX_HEADER:  # np.load refuses it too, with its reason
            return None
        start = (10 if prefix[6] == 1 else 12) + size
        f.seek(0)
        head = f.read(start)
        parsed = _NPY_HEADERS.get(head)
        if parsed is None:
            import io

            try:
                fp = io.BytesIO(head)
                version = np.lib.format.read_magic(fp)
                reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = reader(fp)
            except Exception:  # noqa: BLE001 - np.load gives the one-line reason
                return None
            if dtype.hasobject or dtype.itemsize == 0 or fp.tell() != start:
                return None
            parsed = (tuple(int(n) for n in shape), bool(fortran), dtype)
            if len(_NPY_HEADERS) < 256:
                _NPY_HEADERS[head] = parsed
        shape, fortran, dtype = parsed
        count = math.prod(shape)
        have = os.fstat(f.fileno()).st_size - start
        if count * dtype.itemsize > have:  # before allocating what a corrupt header claims
            raise SegcpError(f"{path}: unreadable .npy file (truncated: {have} of {count * dtype.itemsize} data bytes)")
        flat = np.empty(count, dtype=dtype)
        if flat.nbytes and f.readinto(flat.view(np.uint8)) != flat.nbytes:
            raise SegcpError(f"{path}: unreadable .npy file (shorter than its size while read)")
    return flat.reshape(shape, order="F" if fortran else "C")


def split_ext(name: str) -> tuple[str, str] | None:
    """Split a file name into (id, extension) for a recognised extension, else None."""
    low = name.lower()
    for ext in EXTENSIONS:
        if low.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)], ext
    return None


def _read_png(path: Path, color: bool = False) -> NDArray[Any]:
    import warnings

    from PIL import Image

    with warnings.catch_warnings():  # Pillow's size warnings would print before our one line
        warnings.simplefilter("ignore")
        with Image.open(path) as im:
            im.load()
            return _png_array(path, im, color)


def _png_array(path: Path, im: Any, color: bool) -> NDArray[Any]:
    if im.mode in ("RGB", "RGBA"):
        arr = np.asarray(im)[..., :3]
        if np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(arr[..., 0], arr[..., 2]):
            return arr[..., 0].copy()
        if color:
            return arr.copy()  # (H, W, 3): images for image-aware methods may be in colour
        raise SegcpError(f"{path}: colour PNG; expected a single-channel (grayscale) map")
    if im.mode in ("LA", "P"):
        im = im.convert("L")
    return np.asarray(im).copy()


def _raw_pixdim(path: Path) -> NDArray[np.float64]:
    """The header's pixdim as stored (nibabel replaces 0 by 1 and negatives by |·| on load)."""
    import nibabel as nib
    from nibabel.openers import ImageOpener

    with ImageOpener(str(path)) as f:
        size = f.read(4)
        f.seek(0)
        nifti2 = size in ((540).to_bytes(4, "little"), (540).to_bytes(4, "big"))
        hdr = (nib.Nifti2Header if nifti2 else nib.Nifti1Header).from_fileobj(f, check=False)
    return np.asarray(hdr["pixdim"], dtype=np.float64)


def _read_nifti(path: Path) -> tuple[NDArray[Any], tuple[float, ...]]:
    import logging

    import nibabel as nib

    log = logging.getLogger("nibabel.global")
    level = log.level
    log.setLevel(logging.CRITICAL)  # its header fix-ups would print; we refuse such headers instead
    try:
        img = nib.load(str(path))
        pixdim = _raw_pixdim(path)
    finally:
        log.setLevel(level)
    arr = np.asanyarray(img.dataobj)
    # Drop trailing singleton axes (e.g. (X, Y, 1) slices), keeping spacing aligned.
    while arr.ndim > 2 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    raw = tuple(float(z) for z in pixdim[1 : 1 + arr.ndim])
    if not all(np.isfinite(z) and z > 0 for z in raw):
        raise SegcpError(f"{path}: voxel spacing {raw} (NIfTI pixdim) must be positive and finite")
    zooms = tuple(float(z) for z in img.header.get_zooms()[: arr.ndim])
    return np.asarray(arr), zooms


def read_array(path: str | os.PathLike[str], *, color: bool = False) -> tuple[NDArray[Any], tuple[float, ...] | None]:
    """Read one array file.

    Parameters
    ----------
    path : path to a ``.npy``, ``.npz`` (nnU-Net), ``.png``, ``.nii`` or ``.nii.gz`` file.
    color : a colour PNG is returned as (H, W, 3) instead of refused (images of image-aware
        methods; probabilities and masks are single-channel).

    Returns
    -------
    (array, spacing)
        ``array`` as stored (PNG: uint8/uint16 (H, W); NIfTI: the data array in voxel
        order; nnU-Net NPZ: the probabilities (C, *spatial) in nibabel's voxel order, see the
        module docstring); ``spacing`` the voxel size per axis in the file's units (NIfTI:
        mm), or None when the format has none (NPY, NPZ, PNG).
    """
    p = path if isinstance(path, Path) else Path(path)
    parts = split_ext(p.name)
    if parts is None:
        raise SegcpError(f"{p}: unsupported file type; expected one of {', '.join(EXTENSIONS)}")
    ext = parts[1]
    try:
        if ext == ".npy":
            fast = _read_npy(p)
            if fast is not None:
                return fast, None
            arr = np.load(p, allow_pickle=False)
            if not isinstance(arr, np.ndarray):  # np.load opens a zip as an .npz archive
                getattr(arr, "close", lambda: None)()
                raise SegcpError(f"{p}: an .npz archive (a zip of arrays), not an .npy array")
            return arr, None
        if ext == ".npz":
            return _read_npz(p), None
        if ext == ".png":
            return _read_png(p, color), None
        return _read_nifti(p)
    except SegcpError:
        raise
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise SegcpError(f"{p}: no such file") from None
    except Exception as exc:  # any reader failure: one clear line naming the file
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise SegcpError(f"{p}: unreadable {ext} file ({reason})") from None


#: Largest JSON file segcp reads (a calibration of a million images is ~25 MB).
MAX_JSON_BYTES = 256 * 2**20
#: Deepest nesting of lists/objects segcp accepts in a JSON file (its own are ≤ 4 deep).
MAX_JSON_DEPTH = 32


def _depth(obj: Any) -> int:
    depth, level = 0, [obj]
    while level:
        depth += 1
        level = [v for o in level for v in (o.values() if isinstance(o, dict) else o if isinstance(o, list) else ())
                 if isinstance(v, (dict, list))]
    return depth


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON object file with one-line errors (size and nesting are bounded)."""
    p = Path(path)
    if not p.is_file():
        raise SegcpError(f"{p}: no such file")
    try:
        if p.stat().st_size > MAX_JSON_BYTES:
            raise SegcpError(f"{p}: larger than {MAX_JSON_BYTES // 2**20} MiB; not a segcp JSON file")
        obj = json.loads(p.read_text())
    except RecursionError:
        raise SegcpError(f"{p}: JSON nested too deeply") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise SegcpError(f"{p}: not valid JSON ({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(obj, dict):
        raise SegcpError(f"{p}: expected a JSON object at the top level")
    if _depth(obj) > MAX_JSON_DEPTH:
        raise SegcpError(f"{p}: JSON nested more than {MAX_JSON_DEPTH} levels deep")
    return obj


def read_probabilities(path: str | os.PathLike[str]) -> tuple[NDArray[Any], tuple[float, ...] | None]:
    """Read a file of probabilities (any shape): PNG integers are scaled to [0, 1].

    An 8-bit PNG holds probability × 255 and a 16-bit PNG probability × 65535; NPY and NIfTI
    are returned as stored (the caller validates the range). Returns (array, spacing).
    """
    arr, spacing = read_array(path)
    if str(path).lower().endswith(".png"):
        if arr.dtype == np.uint8:
            arr = arr / 255.0
        elif arr.dtype == np.uint16:
            arr = arr / 65535.0
    return arr, spacing
