"""Surface-distance metrics: surfaces, directed distances, HD95 and ASSD.

Conventions match MONAI 1.6 (``monai.metrics.utils.get_mask_edges`` /
``get_surface_distance``, ``compute_hausdorff_distance(percentile=95)`` and
``compute_average_surface_distance(symmetric=True)``):

* the surface of a mask is the mask XOR its binary erosion with the
  connectivity-1 structuring element and ``border_value=0``, so foreground voxels on
  the image border are surface voxels (MONAI crops with a one-voxel zero margin,
  which is the same thing);
* distances are exact Euclidean distances in physical units (``spacing`` per axis,
  in the same axis order as the array) from each surface voxel of one mask to the
  nearest surface voxel of the other;
* percentiles use linear interpolation (``np.percentile`` default, like
  ``torch.quantile``).

Empty masks follow the project's rules rather than MONAI's (which gives NaN or inf):
both empty gives 0.0, exactly one empty gives NaN (undefined).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
from scipy import ndimage

from segcp.errors import SegcpError
from segcp.metrics.overlap import as_mask, as_mask_pair

__all__ = ["assd", "hd95", "surface", "surface_distances"]

Spacing = float | Sequence[float] | None


def _spacing(spacing: Spacing, ndim: int) -> tuple[float, ...]:
    """Validate `spacing` (None, a number, or one number per axis); return a tuple."""
    if spacing is None:
        return (1.0,) * ndim
    sp = np.atleast_1d(np.asarray(spacing, dtype=float))
    if sp.ndim != 1 or sp.size not in (1, ndim):
        raise SegcpError(f"spacing must be a number or {ndim} numbers (one per axis), got {spacing!r}")
    if not (np.isfinite(sp).all() and (sp > 0).all()):
        raise SegcpError(f"spacing must be positive and finite, got {spacing!r}")
    return tuple(float(s) for s in np.broadcast_to(sp, (ndim,)))


def _surface(mask: np.ndarray, connectivity: int = 1) -> np.ndarray:
    structure = ndimage.generate_binary_structure(mask.ndim, connectivity)
    return mask ^ ndimage.binary_erosion(mask, structure=structure, border_value=0)


def surface(mask: ArrayLike, connectivity: int = 1) -> np.ndarray:
    """Surface (boundary) voxels of a mask: the mask minus its erosion.

    Parameters
    ----------
    mask : array_like of bool or {0, 1}, shape (H, W) or (D, H, W)
        The mask.
    connectivity : int, default 1
        Connectivity of the structuring element of the erosion
        (``scipy.ndimage.generate_binary_structure(ndim, connectivity)``), 1 to ndim.
        1 (faces only) is MONAI's choice.

    Returns
    -------
    ndarray of bool, same shape as `mask`
        True on the foreground voxels that have a background neighbour. Voxels outside
        the image count as background, so foreground on the image border is surface.

    Examples
    --------
    >>> import numpy as np
    >>> m = np.zeros((5, 5), bool); m[1:4, 1:4] = True
    >>> surface(m).astype(int)
    array([[0, 0, 0, 0, 0],
           [0, 1, 1, 1, 0],
           [0, 1, 0, 1, 0],
           [0, 1, 1, 1, 0],
           [0, 0, 0, 0, 0]])
    >>> int(surface(np.ones((3, 3))).sum())  # the whole border of the image
    8
    """
    m = as_mask(mask, "mask")
    if connectivity not in range(1, m.ndim + 1):
        raise SegcpError(f"connectivity must be an integer from 1 to {m.ndim}, got {connectivity!r}")
    return _surface(m, connectivity)


def _crop_to_union(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Crop two masks to the bounding box of ``a | b`` (both must not be all empty).

    Exact for surfaces (everything outside the box is background, like the image
    border) and for distances from a's surface to b's (both lie inside the box, and an
    EDT is a global nearest-voxel distance, not a path inside the box).
    """
    idx = np.nonzero(a | b)
    box = tuple(slice(i.min(), i.max() + 1) for i in idx)
    return a[box], b[box]


def _directed(surf_a: np.ndarray, surf_b: np.ndarray, sampling: tuple[float, ...]) -> np.ndarray:
    """Distances from each True voxel of `surf_a` to the nearest True voxel of `surf_b`."""
    return ndimage.distance_transform_edt(~surf_b, sampling=sampling)[surf_a]


def _both_directions(a: ArrayLike, b: ArrayLike, spacing: Spacing) -> tuple[np.ndarray, np.ndarray] | None:
    """Surface distances a -> b and b -> a; None when a mask is empty."""
    a_m, b_m = as_mask_pair(a, b, ("a", "b"))
    sampling = _spacing(spacing, a_m.ndim)
    if not (a_m.any() and b_m.any()):
        return None
    sa, sb = (_surface(m) for m in _crop_to_union(a_m, b_m))
    return _directed(sa, sb, sampling), _directed(sb, sa, sampling)


def surface_distances(a: ArrayLike, b: ArrayLike, spacing: Spacing = None) -> np.ndarray:
    """Directed surface distances from the surface of `a` to the surface of `b`.

    Parameters
    ----------
    a, b : array_like of bool or {0, 1}, shape (H, W) or (D, H, W)
        The two masks (same shape).
    spacing : float or sequence of float, optional
        Voxel size in physical units, one number per array axis (in array order) or
        one number for all; default 1 (distances in voxels).

    Returns
    -------
    ndarray of float64, shape (n_surface_voxels_of_a,)
        For each surface voxel of `a` (in C order), the Euclidean distance in physical
        units to the nearest surface voxel of `b`. Empty when `a` is empty; all ``inf``
        when `b` is empty and `a` is not.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((1, 6), bool); a[0, 1] = True
    >>> b = np.zeros((1, 6), bool); b[0, 4:] = True
    >>> surface_distances(a, b, spacing=(1.0, 0.5))
    array([1.5])
    """
    a_m, b_m = as_mask_pair(a, b, ("a", "b"))
    sampling = _spacing(spacing, a_m.ndim)
    if not a_m.any():
        return np.zeros(0)
    if not b_m.any():
        return np.full(np.count_nonzero(_surface(a_m)), np.inf)
    sa, sb = (_surface(m) for m in _crop_to_union(a_m, b_m))
    return _directed(sa, sb, sampling)


def _empty_rule(a: ArrayLike, b: ArrayLike) -> float:
    """Value of a distance when a mask is empty: 0.0 if both are, NaN if one is."""
    return 0.0 if not (np.any(a) or np.any(b)) else float("nan")


def hd95_assd(a: ArrayLike, b: ArrayLike, spacing: Spacing = None) -> tuple[float, float]:
    """(HD95, ASSD) from one computation of the surface distances (see :func:`hd95`, :func:`assd`)."""
    d = _both_directions(a, b, spacing)
    if d is None:
        e = _empty_rule(a, b)
        return e, e
    return float(max(np.percentile(d[0], 95), np.percentile(d[1], 95))), float(np.concatenate(d).mean())


def hd95(a: ArrayLike, b: ArrayLike, spacing: Spacing = None) -> float:
    """95th-percentile symmetric Hausdorff distance between the surfaces of two masks.

    The larger of the two directed 95th percentiles (a -> b and b -> a), as MONAI's
    ``compute_hausdorff_distance(percentile=95)``.

    Parameters
    ----------
    a, b : array_like of bool or {0, 1}, shape (H, W) or (D, H, W)
        The two masks (same shape).
    spacing : float or sequence of float, optional
        Voxel size per array axis in physical units (e.g. mm); default 1.

    Returns
    -------
    float
        HD95 in the units of `spacing`; 0.0 when both masks are empty, NaN when
        exactly one is empty.

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros((8, 8), bool); a[2:5, 2:5] = True
    >>> hd95(a, np.roll(a, 1, axis=1), spacing=(1.0, 2.5))
    2.5
    >>> hd95(a, np.zeros_like(a))
    nan
    """
    return hd95_assd(a, b, spacing)[0]


def assd(a: ArrayLike, b: ArrayLike, spacing: Spacing = None) -> float:
    """Average symmetric surface distance between two masks (arguments as :func:`hd95`).

    The mean of the pooled surface distances of both directions (a -> b and b -> a), as
    MONAI's ``compute_average_surface_distance(symmetric=True)``; in the units of
    ``spacing``, 0.0 when both masks are empty, NaN when exactly one is empty.
    """
    return hd95_assd(a, b, spacing)[1]
