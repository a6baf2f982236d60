"""The page of ``segcp view``: one self-contained HTML file (no server, no network) showing, per
case, the image, the truth and each structure's set (or band: inner and outer set) as contours
or translucent fills on a slice of each of the three orthogonal planes (one plane in 2D), with
sliders and the arrow keys, the case's metrics beside it and the list of cases.

How the volumes travel: per case one ``deflate`` stream (:mod:`zlib`), in base64, of the image
(uint8, windowed to its 0.5–99.5 percentiles; RGB interleaved) followed by one bit-coded label
volume (structure s: bit 3s truth, 3s + 1 the set / outer set, 3s + 2 the inner set;
little-endian uint8/16/32); the browser inflates it with its own ``DecompressionStream`` (no
script library) and draws on canvases (``viewer.js``). Size: when the page would exceed
``max_bytes``, every case is shown downsampled by the smallest factor of :data:`FACTORS` that
fits (mean of the image, union of the labels over each block; an axis of fewer than 64 voxels
is kept whole), and the page says so; the metrics are always of the full-resolution files.

The page's URL fragment sets what it shows (``#case=<id>&axis=2&slice=40&mode=fill``) and
``#check`` makes it decode and draw every case and write, per case, the voxel count of each
label bit into ``<pre id="segcp-check">`` (what the browser test reads).
"""

from __future__ import annotations

import base64
import functools
import html
import json
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.cases import slice_axis
from segcp.errors import SegcpError
from segcp.io.formats.base import SPACING_UNIT
from segcp.losses.base import voxel_volume
from segcp.report.html import Cell, Table, page

__all__ = ["BITS_PER_STRUCTURE", "FACTORS", "build_page", "label_bits", "pool", "volume_unit"]

#: Display downsampling factors tried, smallest first, until the page fits its size.
FACTORS = (1, 2, 3, 4, 6, 8)
#: Axes shorter than this are never downsampled (ACDC's 10 slices stay 10).
MIN_POOLED = 64
#: Label bits per structure: truth, set (outer), inner.
BITS_PER_STRUCTURE = 3
#: Colours of the structures (matplotlib's colour-blind-friendly "tab10"); the truth is white.
PALETTE = "tab10"


def pool(a: NDArray[Any], factors: Sequence[int], ufunc: np.ufunc) -> NDArray[Any]:
    """Reduce ``a`` over blocks of ``factors`` voxels per leading axis with ``ufunc`` (``np.add``,
    ``np.bitwise_or``); an incomplete last block is reduced as it is."""
    for ax, f in enumerate(factors):
        if f > 1:
            a = ufunc.reduceat(a, np.arange(0, a.shape[ax], f), axis=ax)
    return a


def _axis_factors(shape: Sequence[int], f: int) -> tuple[int, ...]:
    return tuple(f if n >= MIN_POOLED else 1 for n in shape)


def label_bits(structures: Sequence[Any]) -> NDArray[np.unsignedinteger]:
    """The bit-coded label volume of a case's structures (:class:`~segcp.jobs.view.StructureView`):
    bit 3s its truth, 3s + 1 its set (outer), 3s + 2 its inner set; the smallest unsigned dtype."""
    n = BITS_PER_STRUCTURE * len(structures)
    if n > 32:
        raise SegcpError(f"the viewer shows at most {32 // BITS_PER_STRUCTURE} structures, got {len(structures)}")
    dtype = np.uint8 if n <= 8 else np.uint16 if n <= 16 else np.uint32
    out = np.zeros(structures[0].outer.shape, dtype)
    for s, st in enumerate(structures):
        for b, m in enumerate((st.truth, st.outer, st.inner)):
            if m is not None:
                out |= m.astype(dtype) << dtype(BITS_PER_STRUCTURE * s + b)
    return out


def volume_unit(ndim: int, spacing: tuple[float, ...] | None) -> tuple[str, float]:
    """(unit, size of one voxel in it): mL in 3D and mm² in 2D with a spacing in mm, else voxels / pixels."""
    if spacing is None:
        return ("voxels" if ndim == 3 else "pixels"), 1.0
    v = voxel_volume(spacing, ndim)
    return ("mL", v / 1000.0) if ndim == 3 else (f"{SPACING_UNIT}²", v)


def _grey8(image: NDArray[Any], ndim: int) -> tuple[NDArray[np.uint8], bool]:
    """(the image as uint8, whether RGB): a uint8 image as it is, others windowed to their
    0.5–99.5 percentiles; channels last (RGB/RGBA → RGB, another count → its first channel)."""
    img = np.asarray(image)
    rgb = img.ndim == ndim + 1 and img.shape[-1] in (3, 4)
    if img.ndim == ndim + 1:
        img = img[..., :3] if rgb else img[..., 0]
    if img.dtype == np.uint8:
        return img, rgb
    x = img.astype(np.float32)
    finite = x[np.isfinite(x)]
    lo, hi = np.percentile(finite, [0.5, 99.5]) if finite.size else (0.0, 1.0)
    return np.clip(np.nan_to_num((x - lo) / max(float(hi - lo), 1e-12) * 255.0 + 0.5), 0, 255).astype(np.uint8), rgb


@dataclass
class _Encoded:
    """One case at every factor of :data:`FACTORS`: (shape, base64 payload) per factor."""

    meta: dict[str, Any]
    payloads: dict[int, tuple[tuple[int, ...], str]]


def _mean_pool(img: NDArray[np.uint8], factors: Sequence[int]) -> NDArray[np.uint8]:
    """The mean of ``img`` over blocks of ``factors`` voxels per leading axis, rounded (uint8)."""
    if all(f == 1 for f in factors):
        return img
    sums = pool(img.astype(np.float32), factors, np.add)
    sizes = [np.diff(np.r_[np.arange(0, n, f), n]) for n, f in zip(img.shape, factors, strict=False)]  # block sizes per axis
    counts = functools.reduce(np.multiply, np.ix_(*sizes)).reshape(sums.shape[: len(sizes)] + (1,) * (img.ndim - len(sizes)))
    return (sums / counts).round().astype(np.uint8)


def _encode(case: Any, bits: NDArray[Any], factors: Sequence[int]) -> _Encoded:
    shape = tuple(bits.shape)
    img, rgb = (None, False) if case.image is None else _grey8(case.image, len(shape))
    payloads: dict[int, tuple[tuple[int, ...], str]] = {}
    last: tuple[tuple[int, ...], tuple[tuple[int, ...], str]] | None = None
    for f in factors:
        fac = _axis_factors(shape, f)
        if last is not None and fac == last[0]:  # nothing more pooled at this factor
            payloads[f] = last[1]
            continue
        b = pool(bits, fac, np.bitwise_or)
        raw = b"" if img is None else _mean_pool(img, fac).tobytes()
        data = zlib.compress(raw + b.astype(b.dtype.newbyteorder("<"), copy=False).tobytes(), 6)
        payloads[f] = (tuple(b.shape), base64.b64encode(data).decode("ascii"))
        last = (fac, payloads[f])
    outer = np.zeros(shape, bool)
    for s in range(len(case.structures)):
        outer |= (bits >> (BITS_PER_STRUCTURE * s + 1)) & 1 > 0
    if not outer.any():
        outer = bits > 0
    centre = np.argwhere(outer).mean(axis=0) if outer.any() else np.asarray(shape) / 2 - 0.5
    meta = {
        "id": case.id,
        "full": list(shape),
        "rgb": rgb,
        "image": img is not None,
        "spacing": None if case.spacing is None else list(case.spacing),
        "centre": [float(c) for c in centre],
        "axis": slice_axis(shape, case.spacing) if len(shape) == 3 else None,
    }
    return _Encoded(meta, payloads)


def _fmt(v: float, digits: int = 3) -> str:
    """``v`` with ``digits`` decimals; volumes (``digits`` 1) under 1 with 3 significant digits (0.046 mL, not 0.0)."""
    if v is None or not np.isfinite(v):
        return "—"
    return f"{v:.3g}" if digits == 1 and 0 < abs(v) < 1 else f"{v:.{digits}f}"


def _metrics_table(case: Any, metrics: list[dict[str, float]], names: Sequence[str]) -> Table:
    unit, _ = volume_unit(len(case.structures[0].outer.shape), case.spacing)
    vd = 0 if unit in ("voxels", "pixels") else 1
    dist = "mm" if case.spacing is not None else "voxels"
    band = any(s.inner is not None for s in case.structures)
    header = ["structure", f"set ({unit})", f"truth ({unit})"] + ([f"band [inner, outer] ({unit})", "truth in band"] if band else [])
    header += ["coverage", "Dice", f"HD95 ({dist})"]
    rows: list[list[Cell | str]] = []
    for name, s, m in zip(names, case.structures, metrics, strict=True):
        row: list[Cell | str] = [name, _fmt(m["volume"], vd), _fmt(m["truth_volume"], vd)]
        if band:
            inside = m["in_interval"]
            row += [
                "—" if s.inner is None else f"[{_fmt(m['inner_volume'], vd)}, {_fmt(m['volume'], vd)}]",
                "—" if not np.isfinite(inside) else Cell("yes" if inside else "no", bold=not inside),
            ]
        row += [_fmt(m.get("coverage", np.nan)), _fmt(m.get("dice", np.nan)), _fmt(m.get("hd95", np.nan), 1)]
        rows.append(row)
    note = "Coverage: the fraction of the truth inside the set (outer set of a band); metrics of the full-resolution files."
    return Table(f"{case.id}", header, rows, note=note)


def _list_row(k: int, case: Any, metrics: list[dict[str, float]]) -> list[Cell | str]:
    unit, _ = volume_unit(len(case.structures[0].outer.shape), case.spacing)
    vd = 0 if unit in ("voxels", "pixels") else 1
    row: list[Cell | str] = [str(k + 1), case.id]
    for m in metrics:
        cov = m.get("coverage", np.nan)
        row += [f"{_fmt(m['volume'], vd)} {unit}", Cell(_fmt(cov, 2), bold=bool(np.isfinite(cov) and cov < 1.0))]
    return row


def _layers(names: Sequence[str], bands: Sequence[bool], truth: Sequence[bool]) -> list[dict[str, Any]]:
    from matplotlib import colormaps

    cmap = colormaps[PALETTE]
    out = []
    for s, name in enumerate(names):
        rgb = [round(255 * c) for c in cmap(s % cmap.N)[:3]]
        pale = [round(c + (255 - c) * 0.5) for c in rgb]
        if truth[s]:
            out.append({"bit": BITS_PER_STRUCTURE * s, "name": f"{name} truth", "colour": [255, 255, 255], "truth": True})
        if bands[s]:
            out.append({"bit": BITS_PER_STRUCTURE * s + 1, "name": f"{name} outer (possible)", "colour": pale})
            out.append({"bit": BITS_PER_STRUCTURE * s + 2, "name": f"{name} inner (certain)", "colour": rgb})
        else:
            out.append({"bit": BITS_PER_STRUCTURE * s + 1, "name": f"{name} set", "colour": rgb})
    return out


def _script_json(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":")).replace("</", "<\\/")


def build_page(
    cases: Iterable[tuple[Any, list[dict[str, float]]]], names: Sequence[str], *, title: str, source: str, max_bytes: int
) -> tuple[str, dict[str, Any]]:
    """The viewer page of ``cases`` (each a :class:`~segcp.jobs.view.CaseView` and its metrics
    per structure, named ``names``) within ``max_bytes`` bytes, and ``{"factor": the display
    downsampling}``. One-line error when even :data:`FACTORS`' largest does not fit."""
    encoded: list[_Encoded] = []
    tables: list[str] = []
    rows: list[list[Cell | str]] = []
    bands = [False] * len(names)
    truth = [False] * len(names)
    dtype_bytes = 1
    alive = list(FACTORS)  # the factors whose payloads still fit in max_bytes (the others are dropped as soon as they do not)
    totals = dict.fromkeys(FACTORS, 0)
    for k, (case, metrics) in enumerate(cases):
        bits = label_bits(case.structures)
        dtype_bytes = bits.dtype.itemsize
        encoded.append(_encode(case, bits, alive))
        for f in list(alive):
            totals[f] += len(encoded[-1].payloads[f][1])
            if totals[f] > max_bytes:
                alive.remove(f)
                for e in encoded:
                    e.payloads.pop(f, None)
        if not alive:
            break
        tables.append(_metrics_table(case, metrics, names).html())
        rows.append(_list_row(k, case, metrics))
        for s, st in enumerate(case.structures):
            bands[s] |= st.inner is not None
            truth[s] |= st.truth is not None
    header = ["#", "case"] + [x for n in names for x in (f"{n} set", f"{n} cov.")]
    case_list = Table(f"{len(encoded)} cases", header, rows, note="Click a case (or PageUp / PageDown). Bold: the set misses part of the truth.")
    layers = _layers(names, bands, truth)
    js = files("segcp.report").joinpath("viewer.js").read_text(encoding="utf-8")
    for f in alive:
        cases_meta = [e.meta | {"shape": list(e.payloads[f][0])} for e in encoded]
        meta = {"title": title, "source": source, "factor": f, "bytes": dtype_bytes, "layers": layers, "cases": cases_meta}
        blobs = "\n".join(f'<script class="segcp-case" type="application/octet-stream">{e.payloads[f][1]}</script>' for e in encoded)
        shown = "full resolution" if f == 1 else f"downsampled {f}× per axis of 64 voxels or more (to stay under {max_bytes / 2**20:.0f} MiB)"
        body = (
            BODY.format(
                title=html.escape(title),
                source=html.escape(source),
                n=len(encoded),
                shown=html.escape(shown),
                cases=case_list.html(),
                metrics="\n".join(f'<div class="case-metrics" hidden>{t}</div>' for t in tables),
            )
            + f'\n<script id="segcp-meta" type="application/json">{_script_json(meta)}</script>\n{blobs}\n<script>{js}</script>'
        )
        text = page(title, body, css=CSS, generator="segcp view")
        if len(text.encode()) <= max_bytes:
            return text, {"factor": f}
    raise SegcpError(
        f"{source}: its cases do not fit in {max_bytes / 2**20:.1f} MiB even downsampled {FACTORS[-1]}×; "
        "raise --max-mb or view the cases in smaller folders"
    )


BODY = """<header><h1>{title}</h1><p class="note">{n} cases from <code>{source}</code>; shown at {shown}.
Arrow keys: slice of the active plane (click a plane to make it active and move the other planes there);
PageUp / PageDown: case.</p></header>
<div id="viewer"><nav id="cases">{cases}</nav>
<main><div id="toolbar"><b id="case-name"></b>
<button type="button" id="prev">&#8592; case</button><button type="button" id="next">case &#8594;</button>
<label>draw <select id="mode"><option value="contour">contours</option><option value="fill">fills</option>
<option value="both">both</option></select></label><span id="legend"></span></div>
<div id="planes"></div><div id="metrics">{metrics}</div>
<output id="segcp-state"></output><pre id="segcp-check" hidden></pre></main></div>"""

CSS = """
body { max-width: none; margin: 0.6em 1em; } header h1 { margin: 0.1em 0; font-size: 1.4em; }
#viewer { display: flex; gap: 1em; align-items: flex-start; }
#cases { flex: 0 0 auto; max-height: 92vh; overflow-y: auto; } #cases tbody tr { cursor: pointer; }
#cases tbody tr.current { background: #ffe9a8; } main { flex: 1 1 auto; min-width: 0; }
#toolbar { display: flex; flex-wrap: wrap; gap: 0.8em; align-items: center; margin-bottom: 0.4em; }
#legend label { margin-right: 0.7em; white-space: nowrap; } .swatch { display: inline-block; width: 0.9em; height: 0.9em;
  vertical-align: -0.1em; border: 1px solid #555; margin-right: 0.2em; }
#planes { display: flex; flex-wrap: wrap; gap: 0.8em; } .plane { margin: 0; background: #111; padding: 4px; border: 2px solid #111; }
.plane.active { border-color: #e6a700; } .plane canvas { display: block; image-rendering: pixelated; cursor: crosshair; }
.plane input { width: 100%; } .plane figcaption { color: #ddd; font-size: 0.8em; } #segcp-state { display: none; }
"""
