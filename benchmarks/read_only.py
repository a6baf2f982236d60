"""The baseline of ``bench_speed.py calibration``: only read a data directory's files.

``np.load`` every probability map and its mask and read the truth pixels — the physical limit of
an I/O-bound calibration as numpy reads files. Imported by the benchmarks (in-process timing),
and run as a script for the same loop with the interpreter's start-up and numpy's import
included, as ``segcp calibrate`` is timed::

    python benchmarks/read_only.py DIR      # prints the number of truth pixels read
"""

import sys
from pathlib import Path

import numpy as np


def read_only(d: Path) -> int:
    """Load every ``probs/`` file and its ``masks/`` file of ``d``; the number of truth pixels."""
    n = 0
    for f in sorted((d / "probs").iterdir()):
        p = np.load(f)
        m = np.load(d / "masks" / f.name)
        n += p[m.astype(bool)].size
    return n


if __name__ == "__main__":
    print(read_only(Path(sys.argv[1])))
