"""SIGTERM and SIGKILL during `segcp predict`: never a half-written --out, and a rerun succeeds."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from segcp.io.writers import TMP_PREFIX
from segcp.jobs.predict import PREDICT_MANIFEST

N = 400


@pytest.fixture(scope="module")
def job(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sig")
    rng = np.random.default_rng(0)
    d = root / "d"
    (d / "probs").mkdir(parents=True)
    (d / "masks").mkdir()
    for i in range(N):
        m = np.zeros((192, 192), np.uint8)
        m[60:120, 50:140] = 1
        np.save(d / "probs" / f"{i:03d}.npy", np.clip(m * 0.7 + rng.random(m.shape) * 0.3, 0, 1).astype(np.float32))
        np.save(d / "masks" / f"{i:03d}.npy", m)
    calib = root / "c.json"
    subprocess.run(_segcp("calibrate", "--method", "morph", "--se", "ball", "--alpha", "0.2", "--data", d, "--out", calib, "-q"), check=True)
    return d, calib


def _segcp(*args: object) -> list[str]:
    return [sys.executable, "-m", "segcp.cli", *map(str, args)]


def _temporaries(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.startswith(TMP_PREFIX)]


def _start_and_signal(job: tuple[Path, Path], out: Path, sig: int) -> subprocess.CompletedProcess[str]:
    d, calib = job
    proc = subprocess.Popen(_segcp("predict", "--calib", calib, "--data", d, "--out", out, "-q"), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # wait until sets are being written into the temporary folder
        tmp = _temporaries(out.parent)
        if tmp and tmp[0].is_dir() and len(list(tmp[0].iterdir())) >= 5:
            break
        if proc.poll() is not None:
            pytest.fail("predict finished before it could be interrupted; make the job larger")
        time.sleep(0.01)
    assert proc.poll() is None, "predict finished before the signal"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, "", err)


@pytest.mark.parametrize(
    ("sig", "status", "line"),
    [(signal.SIGTERM, 143, "segcp: terminated\n"), (signal.SIGINT, 130, "segcp: interrupted\n"), (signal.SIGHUP, 129, "segcp: hung up\n")],
    ids=["SIGTERM", "SIGINT", "SIGHUP"],
)
def test_a_signal_removes_the_temporary_says_so_and_a_rerun_succeeds(job, tmp_path, sig, status, line):
    """SIGINT (Ctrl-C; typer alone would exit 130 without a word), SIGTERM and SIGHUP: one line,
    128 + the signal's number, and no temporary folder left behind."""
    out = tmp_path / "sets"
    res = _start_and_signal(job, out, sig)
    assert res.returncode == status and res.stderr == line
    assert not out.exists() and not _temporaries(tmp_path)
    d, calib = job
    subprocess.run(_segcp("predict", "--calib", calib, "--data", d, "--out", out, "-q"), check=True)
    assert len(list(out.iterdir())) == N + 1 and (out / PREDICT_MANIFEST).is_file()  # the sets and the manifest


def test_sigkill_leaves_no_output_and_the_rerun_removes_the_stale_temporary(job, tmp_path):
    out = tmp_path / "sets"
    res = _start_and_signal(job, out, signal.SIGKILL)
    assert res.returncode == -signal.SIGKILL
    assert not out.exists()  # nothing half-written in --out: the sets were in the temporary
    stale = _temporaries(tmp_path)
    assert stale  # a killed process cannot clean up ...
    d, calib = job
    subprocess.run(_segcp("predict", "--calib", calib, "--data", d, "--out", out, "-q"), check=True)
    assert len(list(out.iterdir())) == N + 1 and (out / PREDICT_MANIFEST).is_file()  # the sets and the manifest
    assert not _temporaries(tmp_path)  # ... the next run into the same folder does


def test_a_closed_stdout_ends_with_one_line():
    """`segcp methods | head -c1`: the reader of stdout is gone; one line on stderr and status 141
    (as a shell reports SIGPIPE), not typer's silent exit 1. The read end is closed before segcp
    starts, so its first write meets the broken pipe whatever the pipe's buffer size."""
    import os

    r, w = os.pipe()
    os.close(r)
    try:
        res = subprocess.run(_segcp("methods"), stdout=w, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(w)
    assert res.returncode == 141
    assert res.stderr == "segcp: stopped: the reader of the output closed it (broken pipe)\n"
