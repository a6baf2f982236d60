"""The one evaluation engine: repeated group-aware calibration/test splits × α × calibration size.

- :mod:`segcp.engine.splits`: the one place that splits by group (patients, near-duplicate
  groups), seeded and reproducible.
- the plan (tasks × rows × α × splits × n), the content-keyed cache, the measurement of each
  split, tuned rows and their selection, and the run on the one map path (:mod:`segcp.parallel`).
"""
