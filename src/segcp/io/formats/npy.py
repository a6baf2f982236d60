"""NumPy ``.npy``: the array as stored, no spacing, no geometry."""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError
from segcp.io.files import open_regular
from segcp.io.formats.base import Format, register

__all__ = ["NPY"]

#: Parsed NPY headers, keyed by their raw bytes: the files of one data set share a few.
_NPY_HEADERS: dict[bytes, tuple[tuple[int, ...], bool, np.dtype[Any]]] = {}
_NPY_MAX_HEADER = 10_000  # numpy's own default limit (np.load's max_header_size)


def _read_into(f: io.RawIOBase, buf: memoryview) -> int:
    """Fill ``buf`` from the unbuffered file ``f``; the bytes read (fewer only at the file's end). One
    ``read`` returns at most ~2 GiB on Linux, so a larger array takes several."""
    got = 0
    while got < buf.nbytes:
        n = f.readinto(buf[got:])
        if not n:
            break
        got += n
    return got


def _read_npy(path: Path) -> NDArray[Any] | None:
    """A well-formed ``.npy`` file read straight into its array, or None to let ``np.load`` read it.

    Why by hand: ``np.load`` parses every file's header with ``ast.literal_eval`` (a third
    of its time on a 256² float32 map); the files of a data set share a handful of headers,
    so each distinct header is parsed once, by numpy's own ``read_array_header_*``, and
    remembered by its bytes. The array is the file's bytes in the stored dtype, byte order
    and memory order, exactly what ``np.load`` returns. Anything unusual — another magic
    (an ``.npz`` zip), an unknown version, an object dtype, a header numpy refuses, a
    truncated body — returns None (truncation: raises), so ``np.load`` keeps every error
    message and the pickle refusal.
    """
    f, st = open_regular(path)
    with f:
        prefix = f.read(12)
        if len(prefix) < 10 or prefix[:6] != np.lib.format.MAGIC_PREFIX or prefix[6] not in (1, 2, 3):
            return None
        size = int.from_bytes(prefix[8:10] if prefix[6] == 1 else prefix[8:12], "little")
        if size > _NPY_MAX_HEADER:  # np.load refuses it too, with its reason
            return None
        start = (10 if prefix[6] == 1 else 12) + size
        if start < len(prefix):  # no room for a header: np.load says why
            return None
        head = prefix + f.read(start - len(prefix))
        parsed = _NPY_HEADERS.get(head)
        if parsed is None:
            try:
                fp = io.BytesIO(head)
                version = np.lib.format.read_magic(fp)
                reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = reader(fp)
            except Exception:  # np.load gives the one-line reason
                return None
            if dtype.hasobject or dtype.itemsize == 0 or fp.tell() != start:
                return None
            parsed = (tuple(int(n) for n in shape), bool(fortran), dtype)
            if len(_NPY_HEADERS) < 256:
                _NPY_HEADERS[head] = parsed
        shape, fortran, dtype = parsed
        count = math.prod(shape)
        have = st.st_size - start
        if count * dtype.itemsize > have:  # before allocating what a corrupt header claims
            raise SegcpError(f"{path}: unreadable .npy file (truncated: {have} of {count * dtype.itemsize} data bytes)")
        flat = np.empty(count, dtype=dtype)
        if _read_into(f, flat.view(np.uint8).data) != flat.nbytes:
            raise SegcpError(f"{path}: unreadable .npy file (shorter than its size while read)")
    return flat.reshape(shape, order="F" if fortran else "C")


@register
class NPY(Format):
    """NumPy ``.npy`` arrays (any shape and numeric dtype; never unpickled)."""

    name = "NPY"
    suffixes = (".npy",)
    opens_regular = True

    def read(self, path: Path, *, color: bool = False) -> tuple[NDArray[Any], tuple[float, ...] | None]:
        fast = _read_npy(path)
        if fast is not None:
            return fast, None
        arr = np.load(path, allow_pickle=False)
        if not isinstance(arr, np.ndarray):  # np.load opens a zip as an .npz archive
            getattr(arr, "close", lambda: None)()
            raise SegcpError(f"{path}: an .npz archive (a zip of arrays), not an .npy array")
        return arr, None
