"""Datasets for segcp's benchmarks and tests: readers, named tasks, near-duplicate groups, preprocessing.

- :mod:`segcp.harness.datasets.acdc`: ACDC cine MRI in the SSL4MIS HDF5 layout (2D slices, 3D volumes;
  the slices of a (patient, frame) stacked into an (H, W, Z) volume).
- :mod:`segcp.harness.datasets.la2018`: LA 2018 LGE-MRI volumes (X, Y, Z), left atrium, 0.625 mm.
- :mod:`segcp.harness.datasets.busi`: BUSI-style PNG folders (``images/``, ``masks/``), near-duplicate groups.
- :mod:`segcp.harness.datasets.tasks`: named tasks (``acdc-lv``, ``acdc-rv``, ``acdc``, ``busi``; volume
  tasks ``la2018``, ``acdc-3d``), the RW-CP slice protocol, export to a CLI data directory
  (NIfTI volumes with their spacing and affine for the volume tasks).
- :mod:`segcp.harness.datasets.volumes`: the 3D conventions (nibabel's axis order, spacing, the slice axis
  a 2D model runs along: the coarsest spacing, ties → the fewest voxels), NIfTI geometry checks
  and the NIfTI writer that keeps a reference image's grid and header.
- :mod:`segcp.harness.datasets.hashes`: BUSI's near-duplicate groups by perceptual hash
  (the splits that keep a group on one side are the engine's, :mod:`segcp.engine.splits`).
- :mod:`segcp.harness.datasets.preprocess`: optional resampling, intensity clipping/windowing,
  crop/resize, recorded so that outputs can be mapped back to the original grid.

Nothing here knows about conformal prediction; calibration never imports this package.
"""

from segcp.harness.datasets.preprocess import Preprocessed, Preprocessing, preprocess, restore_to_original
from segcp.harness.datasets.tasks import Item, Sample, Task, available_tasks, export_task, get_task, resolve_data_root

__all__ = [
    "Item",
    "Preprocessed",
    "Preprocessing",
    "Sample",
    "Task",
    "available_tasks",
    "export_task",
    "get_task",
    "preprocess",
    "resolve_data_root",
    "restore_to_original",
]
