"""Graph diffusion: features → kNN graph → row-stochastic P → Pᵗ s. Knows nothing of conformal prediction.

- :mod:`segcp.graph.knn`: kNN by cosine distance (global; windowed, vectorised over
  shifts; windowed on bilinearly upsampled tokens without materialising them);
- :mod:`segcp.graph.diffusion`: w = exp(−β·d), self-loops, symmetrisation, lazy walk,
  β relative to the distance scale, row normalisation, S ← P S (batched);
- :mod:`segcp.graph.resize`: separable bilinear / area resampling between grids;
- :mod:`segcp.graph.volume`: the graph of a volume (in-plane windows plus neighbouring slices),
  slice by slice;
- :mod:`segcp.graph.ops`: the few array operations numpy and torch spell differently, so that
  the same code runs on the CPU (numpy/scipy, the default) or on a GPU (torch).

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

from segcp.graph.options import BETA_SCALES, DEVICES, SYMMETRIZE
from segcp.registry import lazy_attributes

_SUBMODULE = {
    "block_diag": "diffusion",
    "diffuse": "diffusion",
    "diffuse_rows": "diffusion",
    "effective_beta": "diffusion",
    "transition_matrix": "diffusion",
    "transition_rows": "diffusion",
    "NeighbourGraph": "knn",
    "knn_global": "knn",
    "knn_window": "knn",
    "knn_window_tokens": "knn",
    "normalise_rows": "knn",
    "window_offsets": "knn",
    "RESIZE_METHODS": "resize",
    "bilinear_taps": "resize",
    "resize2d": "resize",
    "resize_matrix": "resize",
    "knn_volume": "volume",
    "volume_rows": "volume",
    "get_ops": "ops",
    "resolve_device": "ops",
    "pair_matrix": "resize",
}


# scipy.sparse is imported when the graph is first used
__getattr__ = lazy_attributes(__name__, {name: f"segcp.graph.{module}" for name, module in _SUBMODULE.items()})


__all__ = [
    "BETA_SCALES",
    "DEVICES",
    "RESIZE_METHODS",
    "SYMMETRIZE",
    "NeighbourGraph",
    "bilinear_taps",
    "block_diag",
    "diffuse",
    "diffuse_rows",
    "effective_beta",
    "get_ops",
    "knn_global",
    "knn_volume",
    "knn_window",
    "knn_window_tokens",
    "normalise_rows",
    "pair_matrix",
    "resize2d",
    "resize_matrix",
    "resolve_device",
    "transition_matrix",
    "transition_rows",
    "volume_rows",
    "window_offsets",
]
