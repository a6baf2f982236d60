"""Two-sided rows of the engine: a row whose guarantee is ``band`` or ``band-risk`` (docs/band.md) — what is
measured per test image and per split, defined once.

Such a row is calibrated like every row (its loss curves through the estimator, ``calibrate_curves`` on a
split's calibration images: λ̂ of ``segcp calibrate --guarantee band``) and its sets are the family's
``predict_band`` of its signed map t at λ̂ (the map the engine keeps for the row: :func:`is_band`). Each test
image is measured by :func:`segcp.jobs.band.band_metrics`, the definition ``segcp evaluate --calib`` uses,
with the split's direct volume interval (:func:`volume_fit`: :func:`segcp.volumes.volume_record` on the
split's calibration images, what ``segcp calibrate --guarantee band`` fits beside the band). A split's
record (:func:`band_split_record`) holds the means of :data:`BAND_METRICS`, the median interval widths, the
mean test loss of the row's guarantee at λ̂ (``risk``, as a controlled-loss row's: 1 − joint coverage for ``band``,
the mean loss for ``band-risk``; from the loss curves) and each test image's true volume and intervals (the volume plot).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, fields
from typing import Any

import numpy as np

from segcp.cases import Case
from segcp.engine.measure import nanmean
from segcp.jobs.band import band_metrics
from segcp.methods.base import BAND_GUARANTEES
from segcp.specs import MethodSpec, TunedSpec
from segcp.volumes import VolumeEstimate, mask_volume, probability_volume, volume_record

__all__ = [
    "BAND_IDENTITY",
    "BAND_METRICS",
    "BAND_SPLIT",
    "VOLUME_INTERVALS",
    "band_image",
    "band_split_record",
    "image_volume",
    "is_band",
    "volume_fit",
]

#: What the cache keys of a two-sided row add to its family's (its score maps are signed maps t, its
#: records :func:`band_split_record`'s; bump when either changes).
BAND_IDENTITY = "two-sided rows: signed maps, band records v2"

#: Per test image (:func:`segcp.jobs.band.band_metrics`), averaged per split over the images where defined.
BAND_METRICS: dict[str, str] = {
    "band_holds": "joint coverage: fraction of test images with I ⊆ Y ⊆ O",
    "inner_precision": "|I ∩ Y| / |I| (undefined for I = ∅)",
    "outer_recall": "|O ∩ Y| / |Y| (undefined for Y = ∅)",
    "band_width": "|O \\ I| / |Y|: the possible region relative to the structure (undefined for Y = ∅)",
    "volume_band_covered": "fraction of test images whose volume lies in [vol(I), vol(O)]",
    "volume_band_width": "mean width of [vol(I), vol(O)] (volume units)",
    "volume_direct_covered": "fraction of test images whose volume lies in the direct split-conformal interval",
    "volume_direct_width": "mean width of the direct interval (volume units)",
}
#: The volume intervals of a two-sided row: the band's own [vol(I), vol(O)], the direct one.
VOLUME_INTERVALS = ("band", "direct")
#: Every number of a split's record (the means, the median widths, the guarantee's test loss).
BAND_SPLIT = (*BAND_METRICS, *(f"volume_{k}_width_median" for k in VOLUME_INTERVALS), "risk")


def is_band(spec: MethodSpec | TunedSpec) -> bool:
    """Whether a row's sets are two-sided (guarantee ``band`` or ``band-risk``)."""
    return spec.candidates[0].guarantee in BAND_GUARANTEES


def image_volume(case: Case) -> dict[str, Any]:
    """What the direct volume interval reads of one labelled case: ``truth`` (the mask's volume) and the
    fields of :func:`segcp.volumes.probability_volume` (estimate, spread, raw interval, unit)."""
    assert case.mask is not None and case.probs is not None  # a pixel-set case, read with its truth
    return {"truth": mask_volume(case.mask, case.spacing)} | asdict(probability_volume(case.probs, case.spacing))


def volume_fit(volumes: Sequence[dict[str, Any]], alpha: float) -> dict[str, Any]:
    """The direct volume interval fitted on calibration images' :func:`image_volume` at ``alpha``, in the form
    ``ConformalSegmenter.volume_`` holds it (calib.json's ``volume``, ``q`` by α)."""
    names = [f.name for f in fields(VolumeEstimate)]
    rec = volume_record([(float(v["truth"]), VolumeEstimate(**{k: v[k] for k in names})) for v in volumes], [alpha])
    return rec | {"q": {alpha: rec["q"]}}


def band_image(case: Case, family: Any, t: Any, lam: float, alpha: float, fit: dict[str, Any]) -> dict[str, float]:
    """One test image's two-sided set at λ̂ (``family.predict_band`` of its signed map ``t``) measured by
    :func:`segcp.jobs.band.band_metrics` with the split's direct interval ``fit`` (bounds included)."""
    inner, outer = family.predict_band(t, lam)
    return band_metrics(case, inner, outer, alpha, fit, bounds=True)


def band_split_record(per: Sequence[dict[str, float]], risk: float, unit: str) -> dict[str, Any]:
    """A split's record from its test images' :func:`band_image` (in test order): the means of
    :data:`BAND_METRICS` where defined, ``undefined`` counts, the median width of each volume interval, the
    guarantee's mean test loss ``risk``, the volume ``unit`` and ``volumes``: per test image the truth and each
    interval's [lower, upper]."""
    rec: dict[str, Any] = {m: nanmean([p[m] for p in per]) for m in BAND_METRICS}
    rec["undefined"] = {m: c for m in BAND_METRICS if (c := int(sum(not math.isfinite(p[m]) for p in per)))}
    for k in VOLUME_INTERVALS:
        widths = [p[f"volume_{k}_width"] for p in per if math.isfinite(p[f"volume_{k}_width"])]
        rec[f"volume_{k}_width_median"] = float(np.median(widths)) if widths else math.nan
    rec["volumes"] = {"truth": [p["volume_truth"] for p in per]} | {
        k: [[p[f"volume_{k}_lower"], p[f"volume_{k}_upper"]] for p in per] for k in VOLUME_INTERVALS
    }
    return rec | {"risk": float(risk), "volume_unit": unit}
