"""Reading and writing user files: arrays (NPY, PNG, NIfTI), JSON, data directories."""

from segcp.io.datadir import DataDir, index_folder
from segcp.io.readers import (
    EXTENSIONS,
    atomic_path,
    read_array,
    read_json,
    split_ext,
    to_jsonable,
    write_json,
    write_npy,
)

__all__ = [
    "EXTENSIONS",
    "DataDir",
    "atomic_path",
    "index_folder",
    "read_array",
    "read_json",
    "split_ext",
    "to_jsonable",
    "write_json",
    "write_npy",
]
