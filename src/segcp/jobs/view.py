"""``segcp view``: the sets of a ``predict`` folder, with their images and truth, in one HTML file.

The prediction folder defines the cases: ``sets/<id>`` (one structure) or ``sets/<name>/<id>``
(one folder per structure, as ``predict`` writes for ``calibrate --labels``; ``combined/`` is
skipped). A set file is a mask (bool or 0/1), or a two-sided set's band label volume (0 outside,
1 possible = O \\ I, 2 certain = I; :mod:`segcp.io.viewer` of the two-sided sets): its outer set
O is the voxels ≥ 1, its inner set I the voxels = 2. Images and truth come from the data
folders (``--data`` or ``--images`` / ``--masks``) through :class:`~segcp.io.DataDir`, read for
the ids of the prediction folder only (their other files are left unused and counted). Each
structure's truth is ``mask == label``: ``--label`` for one structure; per structure, the
label of its folder from ``--calib``, ``structures.json`` (``predict --combined``) or the
nnU-Net ``dataset.json``.

Per case and structure, at full resolution: the volume of the set (mL in 3D with a spacing in
mm, mm² in 2D, else voxels), of the truth, the band's volume interval [vol(I), vol(O)] and
whether the truth's volume lies in it, and the metrics of :func:`segcp.metrics.evaluate_set`
(coverage, Dice, HD95) of the set (O for a band) against the truth.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError
from segcp.io import DataDir, check_output, index_folder, read_array, read_geometry, read_json, suffixes, write_text
from segcp.io.datadir import DataSpec, data_inputs, label_names
from segcp.jobs.evaluate import check_set
from segcp.jobs.predict import COMBINED, LEGEND
from segcp.progress import track
from segcp.record import Structure, read_calibration
from segcp.report.viewer import build_page, volume_unit

__all__ = ["BAND_VALUES", "CaseView", "StructureView", "read_band", "view_dir"]

#: What a two-sided set's label volume holds: 0 outside O, 1 in O \\ I, 2 in I.
BAND_VALUES = (0, 1, 2)


@dataclass
class StructureView:
    """One structure of a case as the viewer shows it (arrays of the case's shape S)."""

    outer: NDArray[np.bool_]  # the set (O for a band)
    inner: NDArray[np.bool_] | None  # I for a band, None for a set
    truth: NDArray[np.bool_] | None


@dataclass
class CaseView:
    """One case: its image (as read, or None), its structures in order, its voxel size (or None)."""

    id: str
    image: NDArray[Any] | None
    structures: list[StructureView]
    spacing: tuple[float, ...] | None


def read_band(path: Path, shape: tuple[int, ...] | None = None) -> tuple[NDArray[np.bool_], NDArray[np.bool_] | None, tuple[float, ...] | None]:
    """(O, I or None, spacing) of one set file: a mask (I None) or a band label volume (values in
    :data:`BAND_VALUES`, a 2 present); one-line error naming the file otherwise."""
    arr, spacing = read_array(path)
    arr = np.asarray(arr)
    if arr.ndim not in (2, 3):
        raise SegcpError(f"{path}: a set must be a 2D or 3D mask, got shape {arr.shape} (sets of segmentations are not shown)")
    if arr.dtype.kind in "iu" and arr.max(initial=0) == 2 and arr.min(initial=0) >= 0:
        return arr >= 1, arr == 2, spacing
    return check_set(arr, path, shape or arr.shape), None, spacing


def _layout(sets: Path) -> tuple[list[str], list[dict[str, Path]]]:
    """The structure folders of a prediction folder ([""] for one structure) and their files by id."""
    if not sets.is_dir():
        raise SegcpError(f"{sets}: sets directory does not exist")
    top = index_folder(sets)
    subs = sorted(d.name for d in sets.iterdir() if d.is_dir() and not d.name.startswith(".") and d.name != COMBINED)
    subs = [s for s in subs if index_folder(sets / s)]
    if top and subs:
        raise SegcpError(f"{sets}: holds both set files and structure folders ({subs[0]}/); give one prediction folder")
    if not top and not subs:
        raise SegcpError(f"{sets}: no set files ({', '.join(suffixes())}) and no structure folders of them")
    if top:
        return [""], [top]
    files = [index_folder(sets / s) for s in subs]
    ids = set(files[0])
    for s, f in zip(subs[1:], files[1:], strict=True):
        odd = sorted(ids ^ set(f))
        if odd:
            where = sets / (s if odd[0] in ids else subs[0])
            raise SegcpError(f"{where}: no set for id {odd[0]!r} (the structure folders must hold the same cases)")
    return subs, files


def _structure_labels(sets: Path, subs: list[str], dd: DataDir | None, calib: Path | None) -> dict[str, int]:
    """The label value of each structure folder, from the calibration, the combined legend or dataset.json."""
    known: list[Structure] = []
    if calib is not None:
        known = list(read_calibration(calib).structures)
    elif (sets / LEGEND).is_file():
        bits = read_json(sets / LEGEND).get("bits", {})
        known = [Structure.make(int(s["label"]), str(s["name"])) for s in bits.values() if isinstance(s, dict) and "label" in s]
    elif dd is not None and (names := dd.dataset_json()) is not None:
        known = [Structure.make(v, n) for v, n in label_names(names).items()]
    by_name = {s.name: s.value for s in known}
    for s in subs:  # predict's own names for structures without a dataset.json: label<value>
        if s not in by_name and s.startswith("label") and s[5:].isdigit():
            by_name[s] = int(s[5:])
    return by_name


def _read_case(
    ident: str, sets: Path, subs: list[str], files: list[dict[str, Path]], dd: DataDir | None, label: int | None, labels: dict[str, int]
) -> CaseView:
    structures: list[tuple[NDArray[np.bool_], NDArray[np.bool_] | None]] = []
    spacing: tuple[float, ...] | None = None
    source = files[0][ident]  # the file the spacing is read from
    for f in files:
        o, i, sp = read_band(f[ident])
        if structures and o.shape != structures[0][0].shape:
            raise SegcpError(f"{f[ident]}: set shape {o.shape} differs from {files[0][ident].name}'s {structures[0][0].shape}")
        structures.append((o, i))
        spacing, source = (spacing, source) if spacing else (sp, f[ident])
    shape = structures[0][0].shape
    truths: list[NDArray[np.bool_] | None] = [None] * len(subs)
    image = None
    if dd is not None and dd.has("masks"):
        if subs == [""]:
            mask, sp = dd.load_mask(ident, label=label)
            truths = [mask]
        else:
            raw, sp = dd.read("masks", ident)
            truths = [np.asarray(raw) == labels[s] for s in subs]
        if truths[0] is not None and truths[0].shape != shape:
            raise SegcpError(f"{dd.path('masks', ident)}: mask shape {truths[0].shape} does not match the set's {shape} ({files[0][ident].name})")
        spacing, source = (sp, dd.path("masks", ident)) if sp else (spacing, source)
    if dd is not None and dd.has("images"):
        image, sp = dd.read("images", ident)
        if tuple(image.shape[: len(shape)]) != shape or image.ndim not in (len(shape), len(shape) + 1):
            raise SegcpError(f"{dd.path('images', ident)}: image shape {image.shape} does not match the set's {shape} ({files[0][ident].name})")
        spacing, source = (spacing, source) if spacing else (sp, dd.path("images", ident))
    if spacing is not None and (len(spacing) != len(shape) or not _physical(source, spacing)):
        spacing = None
    views = [StructureView(o, i, t) for (o, i), t in zip(structures, truths, strict=True)]
    return CaseView(ident, image, views, None if spacing is None else tuple(float(x) for x in spacing))


def _physical(path: Path, spacing: tuple[float, ...]) -> bool:
    """Whether ``spacing`` (read with ``path``) is a size in mm: not the pixdim 1 of a NIfTI whose
    spatial unit is "unknown" (how volumes without a spacing are written, ACDC's among them)."""
    g = read_geometry(path)
    units = getattr(getattr(g, "header", None), "get_xyzt_units", None)
    return not (units is not None and units()[0] == "unknown" and all(x == 1.0 for x in spacing))


def case_metrics(case: CaseView) -> list[dict[str, float]]:
    """Per structure of ``case``: ``volume`` of the set (of O for a band), ``inner_volume`` (NaN
    for a set), ``truth_volume``, ``in_interval`` (1 when vol(truth) ∈ [vol(I), vol(O)]) and,
    with a truth, :func:`~segcp.metrics.evaluate_set`'s metrics of the set; volumes in
    :func:`volume_unit`'s unit, distances in the spacing's unit (voxels without one)."""
    from segcp.metrics import evaluate_set

    out = []
    for s in case.structures:
        _, per_voxel = volume_unit(s.outer.ndim, case.spacing)
        m = {
            "volume": float(np.count_nonzero(s.outer)) * per_voxel,
            "inner_volume": float("nan"),
            "truth_volume": float("nan"),
            "in_interval": float("nan"),
        }
        if s.inner is not None:
            m["inner_volume"] = float(np.count_nonzero(s.inner)) * per_voxel
        if s.truth is not None:
            m["truth_volume"] = float(np.count_nonzero(s.truth)) * per_voxel
            if s.inner is not None:
                m["in_interval"] = float(m["inner_volume"] <= m["truth_volume"] <= m["volume"])
            m |= evaluate_set(s.outer, s.truth, spacing=case.spacing)
        out.append(m)
    return out


def view_dir(
    sets: str | os.PathLike[str],
    out: str | os.PathLike[str],
    data: str | os.PathLike[str] | DataSpec | None = None,
    *,
    label: int | None = None,
    calib: str | os.PathLike[str] | None = None,
    max_mb: float = 32.0,
    title: str | None = None,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Write ``out``, one self-contained HTML viewer of the sets in ``sets`` (with the images and
    truth of ``data`` when given), at most ``max_mb`` MiB (volumes downsampled for display when
    needed; the metrics are of the full-resolution files). Returns what was written: ``path``,
    ``bytes``, ``cases``, ``factor`` (the display downsampling), ``unused`` (files of the data
    folders with no set), ``seconds``."""
    t0 = time.perf_counter()
    sets, out = Path(sets), Path(out)
    if not max_mb > 0:
        raise SegcpError(f"--max-mb must be positive, got {max_mb}")
    check_output(out, [sets, *(data_inputs(data) if data is not None else []), *([calib] if calib is not None else [])])
    if out.suffix.lower() not in (".html", ".htm"):
        raise SegcpError(f"{out}: the viewer is one HTML file; name it *.html")
    subs, files = _layout(sets)
    ids = sorted(files[0])
    dd = DataDir(data) if data is not None else None
    unused = 0
    for kind in ("masks", "images"):
        if dd is not None and dd.has(kind):
            missing = [i for i in ids if i not in dd.files[kind]]
            if missing:
                raise SegcpError(
                    f"{dd.folder(kind)}: no file for id {missing[0]!r} (from {files[0][missing[0]]})"
                    + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                )
            unused += len(set(dd.files[kind]) - set(ids))
    labels = _structure_labels(sets, subs, dd, Path(calib) if calib is not None else None)
    if dd is not None and dd.has("masks") and subs != [""]:
        unknown = [s for s in subs if s not in labels]
        if unknown:
            raise SegcpError(f"{sets / unknown[0]}: which label of the masks is this structure? give --calib (the calib.json that made the sets)")
    cases = ((c, case_metrics(c)) for c in (_read_case(i, sets, subs, files, dd, label, labels) for i in ids))
    names = [s or (f"label {label}" if label is not None else "foreground") for s in subs]
    html, info = build_page(
        track(cases, "reading sets", enabled=show_progress, total=len(ids)),
        names,
        title=title or f"segcp view: {sets.name}",
        source=str(sets),
        max_bytes=int(max_mb * 2**20),
    )
    write_text(out, html)
    return {"path": str(out), "bytes": len(html.encode()), "cases": len(ids), "unused": unused, "seconds": time.perf_counter() - t0} | info
