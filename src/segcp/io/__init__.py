"""Reading and writing user files: arrays (NPY, PNG, NIfTI), JSON, data directories.

- :mod:`~segcp.io.readers`: one array reader per format, JSON, probabilities from PNG;
- :mod:`~segcp.io.writers`: the atomic writers every output goes through;
- :mod:`~segcp.io.datadir`: the data-directory layout and the one case loader.
"""

from segcp.io.datadir import FOLDER_OF, CaseReader, DataDir, index_folder
from segcp.io.readers import EXTENSIONS, read_array, read_json, read_probabilities, split_ext
from segcp.io.writers import atomic_dir, atomic_path, check_output, to_jsonable, umask, write_json, write_npy, write_set, write_text

__all__ = [
    "EXTENSIONS",
    "FOLDER_OF",
    "CaseReader",
    "DataDir",
    "atomic_dir",
    "atomic_path",
    "check_output",
    "index_folder",
    "read_array",
    "read_json",
    "read_probabilities",
    "split_ext",
    "to_jsonable",
    "umask",
    "write_json",
    "write_npy",
    "write_set",
    "write_text",
]
