"""``ConformalSetsd``: the calibrated sets of a calib.json as a MONAI dictionary transform."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any, cast

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform
from monai.utils import convert_to_dst_type

from segcp.conformal import ConformalSegmenter
from segcp.errors import SegcpError
from segcp.io.viewer import band_labels
from segcp.jobs.tasks import calibrated_models
from segcp.methods import MaskFamily, SegmentationSetFamily
from segcp.methods.base import BAND_GUARANTEES
from segcp.monai.cases import Target, item_arrays
from segcp.record import Calibration, read_calibration

__all__ = ["ConformalSetsd"]


class ConformalSetsd(MapTransform):
    """The calibrated prediction sets of a model's probabilities, in a MONAI post-processing chain.

    Each key holds one item's probabilities (C, *S), float in [0, 1] (after
    ``Activationsd(softmax=True)``; C = 1 for a sigmoid output), S the 2D or 3D grid. The transform
    writes, under ``<key>_<output_postfix>`` (or over the key when ``output_postfix`` is None), the
    sets of the calibration (:attr:`names`: one channel per structure of a per-structure calib.json,
    in its order): uint8 (K, *S), 1 inside the set — for a two-sided calibration (``--guarantee band`` or
    ``band-risk``) the band as ``segcp predict`` writes it in ``band/``: 0 outside the outer set, 1 in the
    outer set only, 2 in the inner set (:func:`segcp.io.viewer.band_labels`). The output has the input's type; a MetaTensor keeps
    the input's affine, metadata and applied operations, so that ``Invertd`` (nearest) and
    ``SaveImaged(output_dtype=np.uint8)`` write the sets on the original image's grid, and
    ``SplitDimd(output_postfixes=transform.names)`` gives one key per structure. Spacing (mm, for
    ``morph``'s ball) is read from the MetaTensor's affine.

    The sets are those of ``segcp predict`` with the same calib.json on the same probabilities, bit for
    bit (the same families and λ̂: :func:`segcp.record.read_calibration`); apply the transform after
    ``Invertd`` to compute them on the original grid, as ``segcp predict`` on the saved probabilities does.

    Parameters
    ----------
    keys : the probability keys (MONAI's ``KeysCollection``).
    calib : a calib.json written by ``segcp calibrate`` or :func:`segcp.monai.calibrate_loader`, or a
        :class:`segcp.record.Calibration` read already.
    output_postfix : the sets go to ``<key>_<output_postfix>``; None: over the key.
    alpha : the risk level, when the calibration holds several.
    overrides : run-time options of the family (``{"threads": 2}``), as ``segcp predict -p``.
    image_key : the image on the probabilities' grid, for image-aware families (``rwcp``).
    allow_missing_keys : MONAI's.
    """

    def __init__(
        self,
        keys: KeysCollection,
        calib: str | os.PathLike[str] | Calibration,
        *,
        output_postfix: str | None = "sets",
        alpha: float | None = None,
        overrides: dict[str, Any] | None = None,
        image_key: str | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.calibration = calib if isinstance(calib, Calibration) else read_calibration(calib, overrides)
        models = calibrated_models(self.calibration, alpha)
        self.families = tuple(m.method_ for m in models)
        self.lambdas = tuple(float(m.lambda_) for m in models)
        #: Two-sided sets: each channel is the band (0/1/2), not a mask.
        self.two_sided = isinstance(models[0], ConformalSegmenter) and models[0].guarantee_ in BAND_GUARANTEES
        if isinstance(self.families[0], SegmentationSetFamily):
            raise SegcpError(
                f"{self.calibration.path}: {self.families[0].name} calibrates sets of segmentations (drawn with segcp predict --draws); "
                "ConformalSetsd makes the pixel sets of threshold, morph and rwcp"
            )
        if image_key is None and "image" in self.families[0].inputs:
            raise SegcpError(f"{self.calibration.path}: {self.families[0].name} reads the image: give image_key")
        self.target = Target.of(self.calibration)
        self.output_postfix = output_postfix
        self.image_key = image_key

    @property
    def names(self) -> list[str]:
        """The name of each output channel (the structures' folder names of ``segcp predict``)."""
        return self.target.names

    def sets(self, pred: Any, image: Any = None) -> Any:
        """The sets (K, *S) uint8 of one item's probabilities (C, *S), of the input's type and metadata."""
        ident, probs, spacing, img = item_arrays(pred, 0, image)
        cases = self.target.cases(ident, probs, spacing=spacing, image=img)
        if self.two_sided:
            masks = [
                band_labels(*cast(MaskFamily, fam).predict_band(case, lam)) for case, fam, lam in zip(cases, self.families, self.lambdas, strict=True)
            ]
        else:
            masks = [fam.predict(case, lam) for case, fam, lam in zip(cases, self.families, self.lambdas, strict=True)]
        out, *_ = convert_to_dst_type(np.stack(masks).astype(np.uint8), pred, dtype=torch.uint8 if isinstance(pred, torch.Tensor) else np.uint8)
        return out

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = None if self.image_key is None else d[self.image_key]
        for key in self.key_iterator(d):
            out = key if self.output_postfix is None else f"{key}_{self.output_postfix}"
            d[out] = self.sets(d[key], image)
        return d
