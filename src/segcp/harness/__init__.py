"""The research harness: named datasets and the UNet that made segcp's benchmark outputs.

Not the library: segcp's core (calibration, the set families, the CLI's calibrate / predict /
evaluate / compare / benchmark on data directories) never imports this package. It holds

- :mod:`segcp.harness.datasets`: the real datasets (ACDC HDF5, BUSI PNG folders, LA 2018
  HDF5 volumes), the named tasks built on them, their export to a data directory, and the
  preprocessing the UNet sees;
- :mod:`segcp.harness.models`: the UNet (torch), its training and batched inference
  (``segcp train``, ``segcp infer``).
"""
