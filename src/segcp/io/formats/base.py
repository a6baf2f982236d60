"""The interface of a file format, its registry, and the geometry a format reads and writes on.

A format is one class (in the spirit of MONAI's ``ImageReader``): the suffixes it takes, how
it reads a file into an array and a voxel spacing, and — for formats that place their grid in
the world (NIfTI, NRRD) — the :class:`Geometry` of a file and how to write an array on it, so
that prediction sets are written in the input's format and overlay it in a viewer.
:func:`register` adds a class to the registry that every reader of segcp consults
(:func:`format_of`): adding a format is one class, nothing else edited.

The heavy libraries (nibabel, Pillow, pynrrd) are imported inside the methods, never when the
registry is imported: ``segcp calibrate`` on NPY files loads none of them.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError

__all__ = [
    "GRID_ATOL",
    "SPACING_UNIT",
    "Format",
    "Geometry",
    "format_of",
    "formats",
    "read_geometry",
    "register",
    "split_ext",
    "suffixes",
    "unregister",
]

#: Largest difference (mm, per affine entry) between two affines of "the same grid".
GRID_ATOL = 1e-4
#: The unit of every voxel spacing a format reads (NIfTI pixdim, NRRD space directions: the mm
#: of their world frames, as ITK, nnU-Net and 3D Slicer write them); distances measured with a
#: spacing are in it, those of files without one in pixels.
SPACING_UNIT = "mm"


class Geometry:
    """Where an array lives in the world, as a format recorded it, so that a set written on it
    overlays the input in a viewer.

    Attributes
    ----------
    affine : float64 (4, 4): voxel index (i, j, k, 1) → world position in mm, in NIfTI's RAS+
        frame whatever the file's own convention (so that grids of two formats compare).
    header : the format's own header, carried into what is written on this grid (a nibabel
        header; NRRD's header dict).
    source : the file it was read from (for messages).
    format : the :class:`Format` that read it, and writes sets on it.
    shape : the spatial shape the file stores (None when the format does not say).
    """

    def __init__(
        self, affine: NDArray[np.float64], header: Any, source: Path, format: Format | None = None, shape: tuple[int, ...] | None = None
    ) -> None:
        self.affine = np.asarray(affine, dtype=np.float64)
        if not np.all(np.isfinite(self.affine)) or abs(np.linalg.det(self.affine[:-1, :-1])) == 0:
            raise SegcpError(
                f"{source}: its voxel-to-world matrix (affine) is not finite or not invertible; sets written on it "
                "would not overlay the image (fix the file's header)"
            )
        self.header = header
        self.source = source
        self.format = format
        self.shape = shape

    def same_grid(self, other: Geometry) -> bool:
        """Whether two geometries place voxels at the same world positions (affines within
        :data:`GRID_ATOL` mm; the shapes of the arrays are the caller's to compare)."""
        return self.affine.shape == other.affine.shape and bool(np.allclose(self.affine, other.affine, atol=GRID_ATOL))

    def __repr__(self) -> str:
        name = self.format.name if self.format is not None else "?"
        return f"Geometry({name}, source={str(self.source)!r})"


class Format:
    """One file format: which suffixes it takes, how it reads, and (output formats) how it writes.

    Subclass it, set :attr:`name` and :attr:`suffixes`, implement :meth:`read`, and decorate
    the class with :func:`register`. A format whose files carry a grid in the world overrides
    :meth:`geometry` and :meth:`write` (and sets :attr:`has_geometry`): sets of such inputs
    are then written in it, on the input's grid.
    """

    #: A short name for messages ("NIfTI").
    name: ClassVar[str] = ""
    #: The file-name endings it takes, lower case with the dot; the first is the one written.
    suffixes: ClassVar[tuple[str, ...]] = ()
    #: Its files carry a geometry (:meth:`geometry`), and sets are written in it (:meth:`write`).
    has_geometry: ClassVar[bool] = False
    #: Its files carry no geometry of their own but take one from a file of the same id in a
    #: format that has one, beside it (nnU-Net's ``.npz`` next to its ``.nii.gz``).
    takes_companion_geometry: ClassVar[bool] = False
    #: Its :meth:`read` opens the file with :func:`segcp.io.files.open_regular` (refusing a FIFO,
    #: a device or a folder on the open file): the readers skip their own look before it.
    opens_regular: ClassVar[bool] = False

    def read(self, path: Path, *, color: bool = False) -> tuple[NDArray[Any], tuple[float, ...] | None]:
        """(array as stored, voxel spacing per axis or None). ``color``: the file is an image
        of an image-aware method, which may be (H, W, 3); probabilities and masks are single-channel.

        Raise :class:`~segcp.errors.SegcpError` for a file that is not what it should be; any
        other exception becomes one line ``<file>: unreadable <suffix> file (<reason>)``."""
        raise NotImplementedError

    def probabilities(self, array: NDArray[Any]) -> NDArray[Any]:
        """A stored array of probabilities as values in [0, 1] (formats that store integers scale them)."""
        return array

    def geometry(self, path: Path) -> Geometry | None:
        """The file's geometry (formats with :attr:`has_geometry`), read from its header only."""
        return None

    def write(self, path: Path, array: NDArray[Any], geometry: Geometry) -> None:
        """Write ``array`` (its dtype kept; bool as uint8) to ``path`` on ``geometry``'s grid,
        with its header. ``path`` is a temporary name ending in this format's suffix; the
        caller (:func:`segcp.io.writers.write_on_grid`) renames it into place."""
        raise NotImplementedError(f"{self.name} files carry no geometry; sets are written as .npy")

    def __repr__(self) -> str:
        return f"<format {self.name} {'/'.join(self.suffixes)}>"


_FORMATS: list[Format] = []
#: (suffix, format), longest suffix first so that ``.nii.gz`` wins over a ``.gz``.
_SUFFIXES: list[tuple[str, Format]] = []


def _index() -> None:
    _SUFFIXES[:] = sorted(((s, f) for f in _FORMATS for s in f.suffixes), key=lambda sf: -len(sf[0]))
    _format_of_name.cache_clear()


def register(cls: type[Format]) -> type[Format]:
    """Class decorator: add a format to the registry (its suffixes must be new)."""
    if not cls.suffixes or any(s != s.lower() or not s.startswith(".") for s in cls.suffixes):
        raise ValueError(f"{cls.__name__}: suffixes must be lower case and start with a dot, got {cls.suffixes!r}")
    taken = {s for f in _FORMATS for s in f.suffixes if type(f) is not cls}
    if taken & set(cls.suffixes):
        raise ValueError(f"{cls.__name__}: suffix {sorted(taken & set(cls.suffixes))[0]} is taken")
    _FORMATS[:] = [f for f in _FORMATS if type(f) is not cls] + [cls()]
    _index()
    return cls


def unregister(cls: type[Format]) -> None:
    """Remove a format from the registry (tests)."""
    _FORMATS[:] = [f for f in _FORMATS if type(f) is not cls]
    _index()


def formats() -> list[Format]:
    """The registered formats, in registration order."""
    return list(_FORMATS)


def suffixes() -> tuple[str, ...]:
    """Every suffix a registered format takes, in registration order."""
    return tuple(s for f in _FORMATS for s in f.suffixes)


def format_of(name: str | os.PathLike[str]) -> tuple[Format, str, str] | None:
    """(format, id, suffix) of a file name (or path: its last part) in a registered format, else None.

    The suffix is matched case-insensitively and returned as written; the id is the rest of the name.
    """
    return _format_of_name(os.path.basename(os.fspath(name)))


@functools.lru_cache(maxsize=8192)
def _format_of_name(base: str) -> tuple[Format, str, str] | None:
    """:func:`format_of` of a bare name, remembered: a data set's readers ask it of the same names
    several times per case (indexing, geometry, reading); the registry's changes clear it."""
    low = base.lower()
    for suffix, fmt in _SUFFIXES:
        if low.endswith(suffix) and len(base) > len(suffix):
            return fmt, base[: -len(suffix)], base[-len(suffix) :]
    return None


def split_ext(name: str) -> tuple[str, str] | None:
    """Split a file name into (id, suffix) for a registered format, else None."""
    hit = format_of(name)
    return None if hit is None else (hit[1], hit[2])


def read_geometry(path: str | os.PathLike[str]) -> Geometry | None:
    """The geometry of a file (None for formats without one)."""
    hit = format_of(path)
    if hit is None or not hit[0].has_geometry:  # cheap: called for every file of a data set
        return None
    try:
        return hit[0].geometry(Path(path))
    except SegcpError:
        raise
    except Exception as exc:  # any reader failure is one line naming the file
        raise SegcpError(f"{path}: unreadable {hit[0].name} file ({' '.join(str(exc).split()) or type(exc).__name__})") from None
