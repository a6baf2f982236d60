"""The research harness: named datasets and the UNet that made segcp's benchmark outputs.

Not the library: segcp's core (calibration, the set families, the CLI's calibrate / predict /
evaluate / compare / benchmark on data directories) never imports this package. It holds

- :mod:`segcp.harness.datasets`: the real datasets (ACDC HDF5, BUSI PNG folders, LA 2018
  HDF5 volumes), the named tasks built on them, their export to a data directory, and the
  preprocessing the UNet sees;
- :mod:`segcp.harness.models`: the UNet (torch), its training and batched inference
  (``segcp train``, ``segcp infer``).
"""

from __future__ import annotations

import importlib.util

__all__ = ["EXTRA", "require"]

#: How to install what the harness needs (torch first: a bare ``torch`` requirement would pull a CUDA build).
EXTRA = 'install torch first (pip install torch==2.13.0), then pip install "segcp[harness]"'


def require(what: str, *modules: str) -> None:
    """One :class:`~segcp.errors.SegcpError` line naming the extra when a module ``what``
    needs (``"torch"``, ``"h5py"``) is not installed; found modules are not imported."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        from segcp.errors import SegcpError

        raise SegcpError(f"{what} needs {' and '.join(missing)}, which the core install leaves out (the research harness): {EXTRA}")
