"""A weight-free encoder: multi-scale Gaussian-derivative and local-statistics features.

Needs numpy and scipy only (no torch, no weights), for tests, quick runs and the demo. The
image (grayscale = mean of the RGB channels, in [0, 1]) is resized to
``input_size`` × ``input_size`` (bilinear, scipy), then for every scale σ in ``sigmas``
(input pixels) we compute

- the smoothed intensity G_σ * I,
- the gradient magnitude |∇(G_σ * I)| · σ (scale-normalised),
- the Laplacian of Gaussian ∇²(G_σ * I) · σ²,
- the local standard deviation sqrt(G_σ * I² − (G_σ * I)²),

plus the raw intensity: 1 + 4·len(sigmas) channels. They are averaged over
``patch_size`` × ``patch_size`` patches (default 224 / 7 → a 32 × 32 grid, like DINOv2-S/14
at 448) and each channel is standardised over the image's grid (zero mean, unit standard
deviation) so that no channel dominates the cosine distance. These are not semantic
features: they make RW-CP's graph follow intensity structure, which is enough to exercise
the method end to end.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.encoders.base import Encoder, input_shape
from segcp.errors import SegcpError

__all__ = ["FallbackEncoder"]


class FallbackEncoder(Encoder):
    """Weight-free features (see the module docstring).

    Parameters
    ----------
    input_size : side of the square resized image (a multiple of ``patch_size``).
    patch_size : pooling patch (pixels of the resized image).
    sigmas : Gaussian scales in resized-image pixels.
    keep_aspect : keep the aspect ratio (long side = ``input_size``).
    """

    name = "fallback (Gaussian-derivative features, no weights)"

    def __init__(
        self,
        input_size: int | None = 224,
        patch_size: int = 7,
        sigmas: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0),
        keep_aspect: bool = False,
        batch_size: int = 16,
    ) -> None:
        if int(patch_size) < 1:
            raise SegcpError(f"fallback encoder: patch_size must be >= 1, got {patch_size}")
        if not sigmas or any(float(s) <= 0 for s in sigmas):
            raise SegcpError(f"fallback encoder: sigmas must be positive, got {sigmas}")
        self.input_size = None if input_size is None else int(input_size)
        self.patch_size = int(patch_size)
        self.sigmas = tuple(float(s) for s in sigmas)
        self.keep_aspect = bool(keep_aspect)
        self.batch_size = int(batch_size)
        self.dim = 1 + 4 * len(self.sigmas)

    @property
    def id(self) -> str:
        return f"fallback:v1:in={self.input_size}:patch={self.patch_size}:sigmas={self.sigmas}:aspect={int(self.keep_aspect)}"

    def input_shape(self, image_shape: tuple[int, int]) -> tuple[int, int]:
        return input_shape(image_shape, self.input_size, self.patch_size, self.keep_aspect)

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(input_size=self.input_size, sigmas=list(self.sigmas))
        return d

    def _one(self, x: NDArray[np.float32], shape: tuple[int, int]) -> NDArray[np.float32]:
        from scipy import ndimage

        g = x.mean(axis=0, dtype=np.float64)
        if g.shape != tuple(shape):
            zoom = (shape[0] / g.shape[0], shape[1] / g.shape[1])
            g = ndimage.zoom(g, zoom, order=1, mode="nearest", grid_mode=True)
            g = g[: shape[0], : shape[1]]
            if g.shape != tuple(shape):  # zoom rounding: pad by edge values
                g = np.pad(g, [(0, shape[0] - g.shape[0]), (0, shape[1] - g.shape[1])], mode="edge")
        chans = [g]
        for s in self.sigmas:
            sm = ndimage.gaussian_filter(g, s, mode="reflect")
            gy = ndimage.gaussian_filter(g, s, order=(1, 0), mode="reflect")
            gx = ndimage.gaussian_filter(g, s, order=(0, 1), mode="reflect")
            log = ndimage.gaussian_laplace(g, s, mode="reflect")
            sq = ndimage.gaussian_filter(g * g, s, mode="reflect")
            chans += [sm, np.hypot(gy, gx) * s, log * s * s, np.sqrt(np.maximum(sq - sm * sm, 0.0))]
        f = np.stack(chans)  # (d, H', W')
        p = self.patch_size
        h, w = shape[0] // p, shape[1] // p
        f = f[:, : h * p, : w * p].reshape(len(chans), h, p, w, p).mean(axis=(2, 4))
        mu = f.mean(axis=(1, 2), keepdims=True)
        sd = f.std(axis=(1, 2), keepdims=True)
        f = (f - mu) / np.where(sd > 1e-12, sd, 1.0)
        return f.astype(np.float32)

    def _encode(self, images: list[NDArray[np.float32]], shape: tuple[int, int]) -> NDArray[np.float32]:
        return np.stack([self._one(x, shape) for x in images])
