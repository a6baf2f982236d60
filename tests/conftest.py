"""Shared fixtures: where the real data lives, and offline mode for model hubs.

Every test runs with its own ``SEGCP_CACHE`` (a temporary folder), never ``~/.cache``.
Real-data tests use the ``shared_data`` / ``acdc_dir`` / ``busi_dir`` / ``la2018_dir`` fixtures. When the data
is absent they skip with a message on a user's machine, but fail under CI (``CI`` set), so
that CI always runs them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
# benchmark modules that tests reuse (the guarantee machinery, reference procedures)
sys.path.insert(0, str(ROOT / "benchmarks"))


def _data_root() -> Path:
    env = os.environ.get("SEGCP_DATA")
    return Path(env) if env else ROOT.parent / "shared" / "data"


def _require(path: Path) -> Path:
    if path.is_dir():
        return path
    msg = f"real data not found at {path}; set SEGCP_DATA to the folder holding acdc/ and busi/"
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{msg} (CI must run the real-data tests)")
    pytest.skip(msg)


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Every test gets its own feature/model cache: nothing is read from or written to ~/.cache."""
    monkeypatch.setenv("SEGCP_CACHE", str(tmp_path / "segcp-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # captured stderr is not a terminal: no plain-text progress lines in what tests compare, however
    # slow a loaded machine makes them (tests/test_nnunet.py::test_progress_lines_* sets its own interval)
    monkeypatch.setenv("SEGCP_PROGRESS_INTERVAL", "86400")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The folder holding ``acdc/`` and ``busi/`` (skip, or fail under CI, when absent)."""
    return _require(_data_root())


@pytest.fixture(scope="session")
def acdc_dir(shared_data: Path) -> Path:
    return _require(shared_data / "acdc")


@pytest.fixture(scope="session")
def busi_dir(shared_data: Path) -> Path:
    return _require(shared_data / "busi")


@pytest.fixture(scope="session")
def demo_report(tmp_path_factory):
    """`segcp demo --out DIR` (the README's main command), run once per session.

    Returns (DIR, what it printed on stdout, its exit code). Its cache is private to the session.
    """
    import contextlib
    import io

    from segcp.cli import main

    root = tmp_path_factory.mktemp("demo")
    out = root / "demo-out"
    buf = io.StringIO()
    code = None
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(buf):
        mp.setenv("SEGCP_CACHE", str(root / "segcp-cache"))
        try:
            main(["demo", "--out", str(out)])
        except SystemExit as exc:
            code = exc.code
    return out, buf.getvalue(), code


@pytest.fixture(scope="session")
def la2018_dir(shared_data: Path) -> Path:
    return _require(shared_data / "la2018")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: one torch thread is fastest, and avoids OpenMP spin-waits on a loaded CI box."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def empty_prediction_cases():
    """A factory of ``n`` square-structure cases, every third with an all-zero prediction
    (Consema has nothing to grow there: its sets never cover those truths)."""
    from segcp.methods import Case

    def make(n: int) -> list[Case]:
        rng = np.random.default_rng(0)
        cases = []
        for i in range(n):
            mask = np.zeros((16, 16), bool)
            mask[5:9, 5:9] = True
            probs = np.where(mask, 0.9, 0.05) if i % 3 else np.zeros((16, 16))
            cases.append(Case(f"c{i}", probs + rng.uniform(0, 0.01, probs.shape), mask=mask))
        return cases

    return make


@pytest.fixture
def phantom_dir():
    """A factory of data directories of ``segcp.synthetic`` phantoms: ``probs/`` and ``masks/`` (the LV cavity,
    label 3) as .npy and ``groups.json`` (the phantoms' subjects); returns the folder."""
    import json

    from segcp.synthetic import make_phantoms

    def make(root: Path, n: int = 40, shape: tuple[int, int] = (48, 48), seed: int = 0) -> Path:
        ph = make_phantoms(n, shape=shape, seed=seed)
        for sub in ("probs", "masks"):
            (root / sub).mkdir(parents=True)
        for p in ph:
            np.save(root / "probs" / f"{p.id}.npy", p.probs)
            np.save(root / "masks" / f"{p.id}.npy", p.label == 3)
        (root / "groups.json").write_text(json.dumps({p.id: p.group for p in ph}))
        return root

    return make
