"""Validation shared by the HDF5 dataset readers (ACDC, LA 2018): one-line errors naming the file.

Both datasets store the datasets ``image`` (float) and ``label`` (small integers) in one
``.h5`` file; these helpers open them, check dtypes and values, and turn any h5py failure
into a :class:`~segcp.errors.SegcpError` whose message names the file.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError

__all__ = ["check_image", "check_label", "open_datasets", "read_image_label", "unreadable"]


def h5py_module() -> Any:
    """The h5py module, or one line naming the extra that installs it."""
    from segcp.harness import require

    require("reading the ACDC / LA 2018 HDF5 files", "h5py")
    import h5py

    return h5py


def unreadable(path: Path, exc: BaseException) -> SegcpError:
    """The one-line error for an HDF5 file h5py cannot read (truncated, not HDF5, bad chunk)."""
    reason = " ".join(str(exc).split()) or type(exc).__name__
    return SegcpError(f"{path}: unreadable HDF5 file ({reason})")


def open_datasets(h5: Any, path: Path, names: tuple[str, ...]) -> list[Any]:
    """The datasets ``names`` of an open h5py file, or one error line naming ``path``."""
    out = []
    for name in names:
        if name not in h5:
            found = ", ".join(sorted(h5.keys())) or "nothing"
            raise SegcpError(f"{path}: no {name!r} dataset (found: {found}); expected 'image' and 'label'")
        ds = h5[name]
        if not hasattr(ds, "shape") or not hasattr(ds, "dtype"):
            raise SegcpError(f"{path}: {name!r} is a group, not a dataset")
        out.append(ds)
    return out


def check_label(path: Path, label: NDArray[Any], n_labels: int) -> NDArray[np.uint8]:
    """A label map as uint8 with values in ``0..n_labels - 1``, or one error line naming ``path``.

    bool is accepted (as 0/1); floats must hold integers; any shape.
    """
    lab = np.asarray(label)
    if lab.dtype == bool:
        return lab.astype(np.uint8)
    if np.issubdtype(lab.dtype, np.floating):
        if not np.all(np.isfinite(lab)) or not np.array_equal(lab, np.round(lab)):
            raise SegcpError(f"{path}: 'label' has non-integer values (dtype {lab.dtype}); expected integer labels 0..{n_labels - 1}")
    elif not np.issubdtype(lab.dtype, np.integer):
        raise SegcpError(f"{path}: 'label' must be an integer label map, got dtype {lab.dtype}")
    if lab.size:
        lo, hi = lab.min(), lab.max()
        if lo < 0 or hi >= n_labels:
            raise SegcpError(f"{path}: 'label' values must lie in 0..{n_labels - 1}, found range [{lo:g}, {hi:g}]")
    return lab.astype(np.uint8, copy=False)


def check_image(path: Path, image: NDArray[Any]) -> NDArray[np.float32]:
    """A numeric, finite image as float32 (any shape), or one error line naming ``path``."""
    img = np.asarray(image)
    if img.dtype == bool or not (np.issubdtype(img.dtype, np.floating) or np.issubdtype(img.dtype, np.integer)):
        raise SegcpError(f"{path}: 'image' must be numeric, got dtype {img.dtype}")
    img = img.astype(np.float32, copy=False)
    if not np.all(np.isfinite(img)):
        raise SegcpError(f"{path}: 'image' contains NaN or inf")
    return img


def read_image_label(
    path: Path, check_shapes: Callable[[Path, tuple[int, ...], tuple[int, ...]], None], *, with_image: bool = True
) -> tuple[NDArray[Any] | None, NDArray[Any]]:
    """(image or None, label) of an HDF5 file as stored, after ``check_shapes(path, image
    shape, label shape)`` (which raises for a bad pair); one error line names the file."""
    h5py = h5py_module()

    if not path.is_file():
        raise SegcpError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as h5:
            ds_img, ds_lab = open_datasets(h5, path, ("image", "label"))
            check_shapes(path, tuple(ds_img.shape), tuple(ds_lab.shape))
            label = ds_lab[()]
            image = ds_img[()] if with_image else None
    except SegcpError:
        raise
    except Exception as exc:  # truncated file, not HDF5, unreadable chunk...
        raise unreadable(path, exc) from None
    return image, label
