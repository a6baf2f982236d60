"""Graph diffusion: features → kNN graph → row-stochastic P → Pᵗ s. Knows nothing of conformal prediction.

- :mod:`segcp.graph.knn`: kNN by cosine distance (global; windowed, vectorised over
  shifts; windowed on bilinearly upsampled tokens without materialising them);
- :mod:`segcp.graph.diffusion`: w = exp(−β·d), self-loops, symmetrisation, lazy walk,
  β relative to the distance scale, row normalisation, S ← P S (batched);
- :mod:`segcp.graph.resize`: separable bilinear / area resampling between grids;
- :mod:`segcp.graph.volume`: the graph of a volume (in-plane windows plus neighbouring slices).

Examples
--------
>>> import numpy as np
>>> from segcp.graph import knn_window, transition_matrix, diffuse
>>> rng = np.random.default_rng(0)
>>> F = rng.normal(size=(8, 12, 12))
>>> P = transition_matrix(knn_window(F, k=5, radius=2), beta=50)
>>> bool(np.allclose(P.sum(axis=1), 1.0))
True
>>> s = diffuse(P, rng.random(144), steps=10)
>>> bool(s.min() >= 0 and s.max() <= 1)
True
"""

from typing import Any

from segcp.graph.options import BETA_SCALES, SYMMETRIZE

_SUBMODULE = {
    "block_diag": "diffusion", "diffuse": "diffusion", "effective_beta": "diffusion", "transition_matrix": "diffusion",
    "NeighbourGraph": "knn", "knn_global": "knn", "knn_window": "knn", "knn_window_tokens": "knn",
    "normalise_rows": "knn", "window_offsets": "knn",
    "RESIZE_METHODS": "resize", "bilinear_taps": "resize", "resize2d": "resize", "resize_matrix": "resize",
    "knn_volume": "volume",
}


def __getattr__(name: str) -> Any:  # scipy.sparse is imported when the graph is first used
    if name in _SUBMODULE:
        import importlib

        return getattr(importlib.import_module(f"segcp.graph.{_SUBMODULE[name]}"), name)
    raise AttributeError(f"module 'segcp.graph' has no attribute {name!r}")


__all__ = [
    "BETA_SCALES",
    "RESIZE_METHODS",
    "SYMMETRIZE",
    "NeighbourGraph",
    "bilinear_taps",
    "block_diag",
    "diffuse",
    "effective_beta",
    "knn_global",
    "knn_volume",
    "knn_window",
    "knn_window_tokens",
    "normalise_rows",
    "resize2d",
    "resize_matrix",
    "transition_matrix",
    "window_offsets",
]
