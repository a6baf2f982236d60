"""The habits that keep the code one way, run with the suite (so by .ci/run): the linter and the formatter
(ruff: rules and line length in pyproject.toml) and the type checker (mypy on src/), all clean.

Their versions are pinned in the test extra (their rules change between versions); without them
installed the tests skip with a message, and fail under CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TREES = ["src", "tests", "benchmarks", "examples"]


def _tool(name: str) -> list[str]:
    exe = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is not installed (it is in the test extra)")
        pytest.skip(f"{name} is not installed (pip install -e '.[test]')")
    return [exe]


def _clean(cmd: list[str]) -> None:
    run = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"{' '.join(cmd[1:])} is not clean:\n{run.stdout[-4000:]}{run.stderr[-2000:]}"


def test_ruff_check_is_clean():
    _clean([*_tool("ruff"), "check", *TREES])


def test_ruff_format_is_clean():
    _clean([*_tool("ruff"), "format", "--check", *TREES])


@pytest.mark.slow
def test_mypy_is_clean():
    _clean([*_tool("mypy"), "--cache-dir", os.environ.get("MYPY_CACHE_DIR", str(ROOT / ".mypy_cache"))])
