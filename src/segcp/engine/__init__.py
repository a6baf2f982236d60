"""The one evaluation engine: repeated group-aware calibration/test splits × α × calibration size (docs/design.md)."""
