"""Reading and writing user files: arrays in every registered format, JSON, data directories.

- :mod:`~segcp.io.formats`: one class per file format (NPY, PNG, NIfTI, nnU-Net NPZ, ...)
  behind one interface, and their registry;
- :mod:`~segcp.io.files`: regular files only (the one set of refusals of a FIFO, device, folder, link);
- :mod:`~segcp.io.readers`: :func:`read_array` in any registered format, JSON, probabilities;
- :mod:`~segcp.io.writers`: the atomic writers every output goes through;
- :mod:`~segcp.io.viewer`: what a viewer shows of a two-sided set (the 0/1/2 band label volume
  on the input's grid, the ITK-SNAP label description, the 3D Slicer ``.seg.nrrd``);
- :mod:`~segcp.io.datadir`: the data-directory layout and the one case loader.
"""

from segcp.io import writers
from segcp.io.datadir import FOLDER_OF, CaseReader, DataDir, index_folder
from segcp.io.formats import Format, Geometry, format_of, read_geometry, register, split_ext, suffixes
from segcp.io.readers import read_array, read_json, read_probabilities
from segcp.io.writers import *  # noqa: F403 (the package's writers are all of writers.__all__)

__all__ = [
    "FOLDER_OF",
    "CaseReader",
    "DataDir",
    "Format",
    "Geometry",
    "format_of",
    "index_folder",
    "read_array",
    "read_geometry",
    "read_json",
    "read_probabilities",
    "register",
    "split_ext",
    "suffixes",
    *writers.__all__,
]
