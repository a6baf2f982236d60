"""What a viewer shows of a two-sided set: a label volume, an ITK-SNAP label description, a 3D
Slicer segmentation.

A two-sided set of one structure is the pair (I, O), I ⊆ O (:func:`segcp.methods.base.band_sets`).
A viewer shows it as two colours:

=====  ============  ==============================================
label  name          voxels
=====  ============  ==============================================
0      outside       not in O: the structure is (with the guarantee) not there
1      possible      O \\ I: it may be there
2      certain       I: it is there
=====  ============  ==============================================

* :func:`write_band` — one label volume per case and structure, on the input's grid in its
  format (NIfTI in → NIfTI out with the input's affine and header; NRRD in → NRRD out with its
  space directions; an input without a grid → ``.npy``), through :func:`~segcp.io.writers.write_set`;
* :func:`band_labels` / :func:`multi_band_labels` — the label arrays (several structures in one
  file: structure k takes 2k + 1 (possible) and 2k + 2 (certain); where bands overlap, *certain*
  beats *possible*, then the earlier structure wins — the layered ``.seg.nrrd`` keeps every band
  whole);
* :func:`write_itksnap_labels` — the ITK-SNAP label description file naming those labels
  (``Segmentation → Import Label Descriptions``), with colours;
* :func:`write_slicer_segmentation` — a 3D Slicer segmentation ``.seg.nrrd`` on the same grid:
  segments named "<structure> certain" / "<structure> possible" with their colours, label values
  and layers (one layer per structure, so overlapping bands stay whole), in the
  ``Segment<i>_Name/_Color/_LabelValue/_Layer/_Extent`` header fields Slicer reads.

Every file is written atomically (:mod:`segcp.io.writers`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError
from segcp.io.writers import atomic_path, write_set, write_text

__all__ = [
    "BAND_CLASSES",
    "band_colors",
    "band_labels",
    "multi_band_labels",
    "segment_names",
    "write_band",
    "write_itksnap_labels",
    "write_slicer_segmentation",
]

#: Label value → name, for one structure.
BAND_CLASSES = {0: "outside", 1: "possible", 2: "certain"}

#: Base colours (RGB 0–255) of the structures, in order (a colour-blind-safe set).
_PALETTE = ((213, 94, 0), (0, 114, 178), (0, 158, 115), (204, 121, 167), (230, 159, 0), (86, 180, 233), (240, 228, 66))

#: NRRD's LPS frame from the RAS+ affine of a Geometry: x and y negated.
_RAS_TO_LPS = np.array([-1.0, -1.0, 1.0])


def _check_band(inner: Any, outer: Any, where: str) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    i, o = np.asarray(inner), np.asarray(outer)
    if i.shape != o.shape or i.ndim not in (2, 3):
        raise SegcpError(f"{where}: the inner and outer sets must be 2D or 3D masks of one shape, got {i.shape} and {o.shape}")
    i, o = i.astype(bool, copy=False), o.astype(bool, copy=False)
    if np.any(i & ~o):
        raise SegcpError(f"{where}: the inner set is not inside the outer set")
    return i, o


def band_labels(inner: Any, outer: Any) -> NDArray[np.uint8]:
    """The label array of one structure's band: 0 outside O, 1 in O \\ I, 2 in I (uint8, the
    masks' shape). One-line error when I ⊄ O.

    Examples
    --------
    >>> band_labels(np.array([[0, 1, 0]]), np.array([[1, 1, 0]])).tolist()
    [[1, 2, 0]]
    """
    i, o = _check_band(inner, outer, "band")
    return (o.astype(np.uint8) + i.astype(np.uint8)).astype(np.uint8)


def multi_band_labels(bands: Sequence[tuple[Any, Any]]) -> NDArray[np.uint8]:
    """One label array for several structures' bands: structure k (0-based) is 2k + 1 where
    possible and 2k + 2 where certain; overlaps go to *certain* first, then to the earlier
    structure. uint8 (up to 127 structures)."""
    if not bands:
        raise SegcpError("band labels: no structure")
    if len(bands) > 127:
        raise SegcpError(f"band labels: {len(bands)} structures do not fit one uint8 label volume")
    checked = [_check_band(i, o, f"structure {k + 1}") for k, (i, o) in enumerate(bands)]
    shape = checked[0][0].shape
    if any(i.shape != shape for i, _ in checked):
        raise SegcpError("band labels: the structures' bands are on different grids")
    out = np.zeros(shape, np.uint8)
    for k, (_, o) in reversed(list(enumerate(checked))):  # earlier structures painted last: they win
        out[o] = 2 * k + 1
    for k, (i, _) in reversed(list(enumerate(checked))):  # certain beats possible
        out[i] = 2 * k + 2
    return out


def segment_names(structures: Sequence[str]) -> list[tuple[int, str]]:
    """(label value, name) of every label of :func:`multi_band_labels` (one structure: 1 and 2)."""
    return [(2 * k + v, f"{s} {BAND_CLASSES[v]}") for k, s in enumerate(structures) for v in (1, 2)]


def band_colors(k: int) -> dict[int, tuple[int, int, int]]:
    """The colours (RGB 0–255) of structure k's labels: 2 = certain (its full colour), 1 =
    possible (the same, halfway to white)."""
    base = np.asarray(_PALETTE[k % len(_PALETTE)], dtype=np.float64)
    pale = np.round(base + (255.0 - base) * 0.5).astype(int)
    return {2: tuple(int(c) for c in base), 1: tuple(int(c) for c in pale)}  # type: ignore[dict-item]


def write_band(folder: str | os.PathLike[str], ident: str, inner: Any, outer: Any, geometry: Any = None) -> Path:
    """Write one structure's band as a label volume (0/1/2, uint8) on the input's grid:
    ``<folder>/<ident><suffix of the input's format>``, or ``.npy`` without a geometry
    (:func:`~segcp.io.writers.write_set`; ``folder`` must exist). Returns the path."""
    return write_set(folder, ident, band_labels(inner, outer), geometry)


def write_itksnap_labels(dest: str | os.PathLike[str], structures: Sequence[str]) -> Path:
    """An ITK-SNAP label description file for the labels of :func:`multi_band_labels` (one
    structure: 1 possible, 2 certain). Returns the path."""
    if not structures:
        raise SegcpError("ITK-SNAP labels: no structure")
    lines = [
        "################################################",
        "# ITK-SnAP Label Description File (segcp: two-sided sets)",
        "# File format: ",
        "# IDX   -R-  -G-  -B-  -A--  VIS MSH  LABEL",
        "# Fields: ",
        "#    IDX:   Zero-based index ",
        "#    -R-:   Red color component (0..255)",
        "#    -G-:   Green color component (0..255)",
        "#    -B-:   Blue color component (0..255)",
        "#    -A-:   Label transparency (0.00 .. 1.00)",
        "#    VIS:   Label visibility (0 or 1)",
        "#    MSH:   Label mesh visibility (0 or 1)",
        "#  LABEL:   Label description ",
        "################################################",
        f'{0:>5} {0:>5} {0:>4} {0:>4} {0:>8} {0:>2} {0:>2}    "Clear Label"',
    ]
    for value, name in segment_names(structures):
        r, g, b = band_colors((value - 1) // 2)[2 - value % 2]
        if '"' in name:
            raise SegcpError(f"ITK-SNAP labels: a structure name may not contain a double quote: {name!r}")
        lines.append(f'{value:>5} {r:>5} {g:>4} {b:>4} {1:>8} {1:>2} {1:>2}    "{name}"')
    return write_text(dest, "\n".join(lines) + "\n")


def _grid(geometry: Any, shape: tuple[int, ...], spacing: Sequence[float] | None) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """(space directions (3, 3): one row per array axis, space origin (3,)) in LPS for an array
    of ``shape`` (2D arrays get a third, singleton axis)."""
    if geometry is not None:
        aff = np.asarray(geometry.affine, dtype=np.float64)
        grid = None if geometry.shape is None else tuple(int(n) for n in geometry.shape)
        if grid is not None and (grid[: len(shape)] != tuple(shape) or any(n != 1 for n in grid[len(shape) :])):
            raise SegcpError(f"{geometry.source}: the band of shape {shape} does not lie on the grid {tuple(geometry.shape)}")
        dirs = (aff[:3, :3] * _RAS_TO_LPS[:, None]).T
        origin = aff[:3, 3] * _RAS_TO_LPS
        return dirs, origin
    sp = [1.0] * len(shape) if spacing is None else [float(s) for s in spacing]
    if len(sp) != len(shape) or not all(np.isfinite(s) and s > 0 for s in sp):
        raise SegcpError(f"Slicer segmentation: spacing {tuple(sp)} must give one positive size per axis of {shape}")
    return np.diag(sp + [1.0] * (3 - len(sp))), np.zeros(3)


def _extent(mask: NDArray[np.bool_]) -> str:
    """Slicer's segment extent: first and last index of the segment along each axis ("0 -1 …" when empty)."""
    if not mask.any():
        return " ".join(["0 -1"] * mask.ndim)
    parts = []
    for ax in range(mask.ndim):
        hit = np.flatnonzero(np.any(mask, axis=tuple(a for a in range(mask.ndim) if a != ax)))
        parts.append(f"{int(hit[0])} {int(hit[-1])}")
    return " ".join(parts)


def write_slicer_segmentation(
    dest: str | os.PathLike[str],
    bands: Sequence[tuple[Any, Any]],
    structures: Sequence[str],
    geometry: Any = None,
    spacing: Sequence[float] | None = None,
) -> Path:
    """Write a 3D Slicer segmentation (``dest`` ends in ``.seg.nrrd``) of the bands of one or more
    structures on the input's grid: ``geometry`` (a :class:`~segcp.io.formats.Geometry`, from
    NIfTI or NRRD; its RAS+ affine becomes NRRD's LPS space directions and origin) or, without
    one, ``spacing`` (mm per axis; 1 without) at the origin. One layer per structure (a 4D file
    with a list axis first for several), labels 1 possible / 2 certain in each, segments named
    "<structure> possible" / "<structure> certain". A 2D band gets a singleton third axis.
    Returns the path.
    """
    dest = Path(dest)
    if not dest.name.lower().endswith(".seg.nrrd"):
        raise SegcpError(f"{dest}: a Slicer segmentation's name must end in .seg.nrrd")
    if len(bands) != len(structures) or not bands:
        raise SegcpError(f"Slicer segmentation: {len(bands)} bands for {len(structures)} structure names")
    layers = [band_labels(i, o) for i, o in bands]
    shape = layers[0].shape
    if any(x.shape != shape for x in layers):
        raise SegcpError("Slicer segmentation: the structures' bands are on different grids")
    dirs, origin = _grid(geometry, shape, spacing)
    if len(shape) == 2:
        layers = [x[..., None] for x in layers]
    data = layers[0] if len(layers) == 1 else np.stack(layers)
    header: dict[str, Any] = {
        "space": "left-posterior-superior",
        "space origin": origin,
        "space directions": dirs if len(layers) == 1 else np.vstack([np.full((1, 3), np.nan), dirs]),
        "kinds": ["domain"] * 3 if len(layers) == 1 else ["list", "domain", "domain", "domain"],
        "encoding": "gzip",
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
    }
    seg = 0
    for k, (name, layer) in enumerate(zip(structures, layers)):
        for value in (2, 1):
            r, g, b = band_colors(k)[value]
            header.update(
                {
                    f"Segment{seg}_ID": f"{name}_{BAND_CLASSES[value]}".replace(" ", "_"),
                    f"Segment{seg}_Name": f"{name} {BAND_CLASSES[value]}",
                    f"Segment{seg}_NameAutoGenerated": "0",
                    f"Segment{seg}_Color": f"{r / 255:.6g} {g / 255:.6g} {b / 255:.6g}",
                    f"Segment{seg}_ColorAutoGenerated": "0",
                    f"Segment{seg}_LabelValue": str(value),
                    f"Segment{seg}_Layer": str(k),
                    f"Segment{seg}_Extent": _extent(layer == value),
                    f"Segment{seg}_Tags": "Segmentation.Status:inprogress|",
                }
            )
            seg += 1
    import nrrd

    with atomic_path(dest, suffix=".seg.nrrd") as tmp:
        nrrd.write(str(tmp), np.ascontiguousarray(data), header, index_order="F", compression_level=1)
    return dest
