"""The evaluation engine: repeated group-aware calibration/test splits × α × calibration size.

- :mod:`segcp.engine.splits`: the one place that splits by group (patients, near-duplicate
  groups), seeded and reproducible.
"""
