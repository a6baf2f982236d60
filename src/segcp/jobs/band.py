"""``segcp predict`` of two-sided sets (calibrated with ``--guarantee band`` or ``band-risk``).

Per id and structure (``<s>/``: the structure's folder of a per-structure calibration, else the output
folder itself), on the model output's grid (its format when it has one, else ``.npy``):

* ``<s>/inner/<id>``, ``<s>/outer/<id>`` — the inner set I (certainly structure) and the outer set O
  (possibly), I ⊆ O;
* ``<s>/band/<id>`` — one label volume 0 outside / 1 possible (O \\ I) / 2 certain (I)
  (:func:`segcp.io.viewer.write_band`), with ``<s>/band/itksnap_labels.txt`` naming the labels;
* ``slicer/<id>.seg.nrrd`` — a 3D Slicer segmentation with the segments "<structure> certain" and
  "<structure> possible" of every structure, one layer each;
* ``volumes.csv`` — per id and structure the volume estimate V̂ = Σp·u and two intervals, in mL
  (mm2 in 2D, voxels without a spacing): ``band`` [vol(I), vol(O)] (valid by containment when the
  band holds) and ``direct`` (the split-conformal interval calibrated on the volume itself, calib.json's
  ``volume``; :func:`segcp.volumes.interval_inputs`).

The whole folder is written into a temporary sibling that replaces ``out`` on success.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.calibration import IntervalFit
from segcp.errors import SegcpError
from segcp.io import write_set, write_text
from segcp.io.viewer import write_band, write_itksnap_labels, write_slicer_segmentation
from segcp.jobs.tasks import Job, worker_family
from segcp.methods import SetFamily
from segcp.volumes import band_volumes, interval_inputs, mask_volume, probability_volume

__all__ = ["SLICER", "VOLUMES_CSV", "VOLUME_COLUMNS", "band_folders", "band_metrics", "band_volume_rows", "write_band_chunk", "write_volumes_csv"]

#: The folder of the Slicer segmentations and the name of the volume table.
SLICER = "slicer"
VOLUMES_CSV = "volumes.csv"
#: The columns of volumes.csv.
VOLUME_COLUMNS = ("id", "structure", "interval", "estimate", "lower", "upper", "unit", "alpha", "guarantee")
#: The subfolders of one structure's two-sided sets.
PARTS = ("inner", "outer", "band")


def band_folders(root: Path, subs: Sequence[str], names: Sequence[str]) -> None:
    """Create the folders of :func:`write_band_chunk` under ``root`` and each structure's ITK-SNAP labels."""
    (root / SLICER).mkdir(exist_ok=True)
    for sub, name in zip(subs, names, strict=True):
        for part in PARTS:
            (root / sub / part).mkdir(parents=True, exist_ok=True)
        write_itksnap_labels(root / sub / "band" / "itksnap_labels.txt", [name])


def band_volume_rows(ident: str, name: str, case: Any, inner: Any, outer: Any, alpha: float, volume: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The rows of volumes.csv of one case and structure: the band's [vol(I), vol(O)] and, when the
    calibration holds one (``volume``: :func:`segcp.record.read_volume`), the direct interval."""
    est = probability_volume(case.probs, case.spacing)
    lo, hi = band_volumes(inner, outer, case.spacing)
    rows = [
        {
            "id": ident,
            "structure": name,
            "interval": "band",
            "estimate": est.estimate,
            "lower": lo,
            "upper": hi,
            "unit": est.unit,
            "alpha": alpha,
            "guarantee": f"vol(inner) <= V <= vol(outer) whenever inner in truth in outer (P >= {1 - alpha:g} for band)",
        }
    ]
    if volume is not None:
        if volume["unit"] != est.unit:
            raise SegcpError(
                f"case {ident}: its volume is in {est.unit} but the calibration's volume interval in {volume['unit']} "
                "(spacing present in one and missing in the other)"
            )
        fit = IntervalFit(volume["score"], alpha, volume["n"], volume["q"][alpha])
        d_lo, d_hi = fit.bounds(**interval_inputs([est], volume["score"]))
        rows.append(
            {
                "id": ident,
                "structure": name,
                "interval": "direct",
                "estimate": est.estimate,
                "lower": max(float(d_lo[0]), 0.0),
                "upper": float(d_hi[0]),
                "unit": est.unit,
                "alpha": alpha,
                "guarantee": f"{fit.guarantee}, score {fit.score}",
            }
        )
    return rows


def write_band_chunk(
    task: tuple[
        Job,
        tuple[SetFamily, ...],
        tuple[float, ...],
        tuple[str, ...],
        tuple[str, ...],
        float,
        tuple[dict[str, Any] | None, ...],
        str,
        list[tuple[int, str]],
    ],
) -> list[dict[str, Any]]:
    """Worker: write each id's two-sided sets, band label volumes and Slicer segmentation into ``folder``;
    returns the ids' volumes.csv rows."""
    job, families, lambdas, subs, names, alpha, volumes, folder, items = task
    fams = [worker_family(f) for f in families]
    root = Path(folder)
    rows: list[dict[str, Any]] = []
    for _, ident in items:
        cases = job.read(ident)
        bands = []
        for case, fam, lam, sub, name, vol in zip(cases, fams, lambdas, subs, names, volumes, strict=True):
            inner, outer = fam.predict_band(case, lam)
            write_set(root / sub / "inner", ident, inner, case.geometry, clean_stale=False)
            write_set(root / sub / "outer", ident, outer, case.geometry, clean_stale=False)
            write_band(root / sub / "band", ident, inner, outer, case.geometry)
            bands.append((inner, outer))
            rows += band_volume_rows(ident, name, case, inner, outer, alpha, vol)
        write_slicer_segmentation(root / SLICER / f"{ident}.seg.nrrd", bands, names, cases[0].geometry, cases[0].spacing)
    return rows


def write_volumes_csv(dest: Path, rows: Sequence[dict[str, Any]]) -> Path:
    """volumes.csv (:data:`VOLUME_COLUMNS`), numbers with 6 significant digits; atomic."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=VOLUME_COLUMNS, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in r.items()})
    return write_text(dest, buf.getvalue())


def band_metrics(
    case: Any, inner: NDArray[np.bool_], outer: NDArray[np.bool_], alpha: float, volume: dict[str, Any] | None, *, bounds: bool = False
) -> dict[str, float]:
    """One case's metrics of its two-sided set against its truth (``segcp evaluate``, and the two-sided rows
    of ``segcp benchmark`` / ``compare``: :mod:`segcp.engine.band`; means over cases are the rates):
    ``band_holds`` 1{I ⊆ Y ⊆ O} (its mean: the joint coverage), ``inner_precision`` |I ∩ Y| / |I| (NaN
    for I = ∅), ``outer_recall`` |O ∩ Y| / |Y| and ``band_width`` |O \\ I| / |Y| (NaN for Y = ∅), and per
    volume interval of :func:`band_volume_rows` (``band``, ``direct``) whether it holds the true volume
    and its width (in the case's unit). ``bounds``: also ``volume_truth`` and each interval's
    ``volume_<interval>_lower`` / ``_upper`` (the benchmark's volume plot)."""
    y = np.asarray(case.mask, dtype=bool)
    m, i_n = int(y.sum()), int(inner.sum())
    nan = float("nan")
    out = {
        "band_holds": float(not np.any(inner & ~y) and not np.any(y & ~outer)),
        "inner_precision": float((inner & y).sum()) / i_n if i_n else nan,
        "outer_recall": float((outer & y).sum()) / m if m else nan,
        "band_width": float((outer & ~inner).sum()) / m if m else nan,
    }
    truth = mask_volume(y, case.spacing)
    for r in band_volume_rows("", "", case, inner, outer, alpha, volume):
        out[f"volume_{r['interval']}_covered"] = float(r["lower"] <= truth <= r["upper"])
        out[f"volume_{r['interval']}_width"] = float(r["upper"] - r["lower"])
        if bounds:
            out[f"volume_{r['interval']}_lower"], out[f"volume_{r['interval']}_upper"] = float(r["lower"]), float(r["upper"])
    if bounds:
        out["volume_truth"] = truth
    return out
