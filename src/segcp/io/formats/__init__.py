"""One class per file format behind one interface (:class:`~segcp.io.formats.base.Format`).

=================  ======================  ===================================================
format             suffixes                spacing / geometry
=================  ======================  ===================================================
NPY                ``.npy``                none
PNG                ``.png``                none (2D)
NIfTI              ``.nii.gz``, ``.nii``   pixdim; affine + header (sets written on it)
nnU-Net NPZ        ``.npz``                from the file of the same id beside it (NIfTI…)
NRRD               ``.nrrd``, ``.nhdr``    space directions / origin; affine + header
=================  ======================  ===================================================

Every reader of segcp (:func:`segcp.io.readers.read_array`, the data-directory index of
:mod:`segcp.io.datadir`, the set writer :func:`segcp.io.writers.write_set`) asks the registry
(:func:`format_of`); adding a format is one class decorated with :func:`register`, in a
module imported here (or by the user's code before segcp reads files).
"""

from segcp.io.formats import base
from segcp.io.formats.base import *  # noqa: F403 (the interface and the registry: all of base.__all__)

# The import order is the registration order (the order suffixes are listed in messages).
# isort: off
from segcp.io.formats.npy import NPY
from segcp.io.formats.png import PNG
from segcp.io.formats.nifti import NIfTI
from segcp.io.formats.nnunet import NnUNetNPZ
from segcp.io.formats.nrrd import NRRD
# isort: on

__all__ = [*base.__all__, "NPY", "NRRD", "PNG", "NIfTI", "NnUNetNPZ"]
