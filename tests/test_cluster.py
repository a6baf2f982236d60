"""Directory jobs on a real Dask ``LocalCluster`` (two worker processes, one thread each).

What must hold: the λ̂ (and every record field, every set, every metric) of a cluster run
equals the single-process one bit for bit, for every method and both curve forms; a worker
killed during calibration changes nothing; a corrupt file on a worker ends the job with the
single-process run's one error line, exit 2, and nothing written; ``predict --resume`` redoes
only what an interrupted run did not finish. Each test has a time limit (SIGALRM), so a hung
cluster fails the test instead of the suite.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")

from consign_toy import make_toy_cases
from test_one_stack import FIVE, _write

from segcp.cli import main
from segcp.errors import SegcpError
from segcp.io.datadir import DataSpec
from segcp.io.writers import TMP_PREFIX
from segcp.jobs import PREDICT_MANIFEST, Job, calibrate_dir, evaluate_dir, predict_dir
from segcp.parallel import DaskExecutor, PoolExecutor, open_executor

LIMIT_S = 180
PARAMS = {
    "threshold": {},
    "morph": {"se": "square"},
    "rwcp": {"encoder": "fallback", "k": 6, "steps": 3, "cache": False},
    "consign": {"K": 2, "beta": 0.8},
    "aps": {"beta": 0.8},
}


class _TimeLimit(Exception):
    pass


@pytest.fixture(autouse=True)
def _time_limit():
    def _raise(signum, frame):
        raise _TimeLimit(f"test took more than {LIMIT_S} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(LIMIT_S)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, dashboard_address=None, silence_logs=logging.CRITICAL)
    c = distributed.Client(cluster, set_as_default=False)
    yield c
    c.close()
    cluster.close()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    """A directory every family reads (probs/, samples/, images/, masks/), 14 images of 28²."""
    return _write(tmp_path_factory.mktemp("cluster") / "d", make_toy_cases(14, shape=(28, 28), n_labels=2, n_samples=8, seed=11))


@pytest.fixture(scope="module")
def many(tmp_path_factory) -> Path:
    """60 binary images of 64² (one task per image in the fault tests)."""
    root = tmp_path_factory.mktemp("many") / "d"
    rng = np.random.default_rng(5)
    (root / "probs").mkdir(parents=True)
    (root / "masks").mkdir()
    yy, xx = np.mgrid[:64, :64]
    for i in range(60):
        m = (yy - 32 - rng.integers(-8, 8)) ** 2 + (xx - 32) ** 2 < rng.integers(60, 300)
        p = np.clip(0.8 * m + 0.35 * rng.random(m.shape), 0, 1).astype(np.float32)
        np.save(root / "probs" / f"img{i:03d}.npy", p)
        np.save(root / "masks" / f"img{i:03d}.npy", m)
    return root


def _calibration_fields(rec):
    """A record without its timings (``seconds``, ``seconds_*``), recursively."""
    if isinstance(rec, dict):
        return {k: _calibration_fields(v) for k, v in rec.items() if not k.startswith("seconds")}
    return rec


@pytest.mark.parametrize("method", FIVE)
def test_cluster_equals_single_process_bit_for_bit(method, data, client, tmp_path):
    ex = DaskExecutor(client)
    forms = ["exact", "compact"] if method in ("threshold", "morph", "rwcp") else ["auto"]
    for form in forms:
        kw = dict(method=method, alpha=0.2, method_params=PARAMS[method], show_progress=False, curve_form=form)
        local = calibrate_dir(data, out=tmp_path / f"{form}-local.json", **kw)
        remote = calibrate_dir(data, out=tmp_path / f"{form}-cluster.json", executor=ex, chunk_size=3, **kw)
        assert _calibration_fields(local) == _calibration_fields(remote)  # lambda, risk, bound, scores, ids… identical
        assert ("curves" in remote) == (form == "compact")
    calib = tmp_path / f"{forms[-1]}-cluster.json"
    predict_dir(calib, data, tmp_path / "sets-local", draws=5, show_progress=False)
    predict_dir(calib, data, tmp_path / "sets-cluster", draws=5, show_progress=False, executor=ex, chunk_size=4)
    names = sorted(p.name for p in (tmp_path / "sets-local").iterdir() if p.name != PREDICT_MANIFEST)  # the sets; the manifest marks the folder
    assert names == sorted(p.name for p in (tmp_path / "sets-cluster").iterdir() if p.name != PREDICT_MANIFEST) and len(names) == 14
    for name in names:
        assert (tmp_path / "sets-local" / name).read_bytes() == (tmp_path / "sets-cluster" / name).read_bytes()
    if method in ("consign", "aps"):
        a = evaluate_dir(None, data, calib=calib, draws=5, show_progress=False)
        b = evaluate_dir(None, data, calib=calib, draws=5, show_progress=False, executor=ex, chunk_size=5)
    else:
        a = evaluate_dir(tmp_path / "sets-local", data, show_progress=False)
        b = evaluate_dir(tmp_path / "sets-cluster", data, show_progress=False, executor=ex, chunk_size=5)
    assert json.dumps(_calibration_fields(a), sort_keys=True) == json.dumps(_calibration_fields(b), sort_keys=True)


def test_the_encoder_is_loaded_once_per_worker(data, client):
    """RW-CP's encoder lives in a per-process cache: one load per worker, not per task."""
    client.restart()  # fresh worker processes: empty caches
    rec = calibrate_dir(
        data, method="rwcp", alpha=0.2, method_params=PARAMS["rwcp"], show_progress=False, executor=DaskExecutor(client), chunk_size=1
    )  # 14 tasks on 2 workers
    assert rec["n"] == 14
    info = client.run(lambda: __import__("segcp.methods.rwcp", fromlist=["_encoder"])._encoder.cache_info()._asdict())
    assert len(info) == 2
    assert all(i["misses"] <= 1 for i in info.values()), info  # built at most once in each worker
    assert sum(i["hits"] + i["misses"] for i in info.values()) >= 14  # …and used by every case
    # an unset encoder thread count becomes the worker's (1 thread per worker process), here unchanged
    from segcp.jobs import worker_family
    from segcp.methods import get_method

    fam = get_method("rwcp", **PARAMS["rwcp"])
    assert client.submit(worker_family, fam).result().threads == 1 and worker_family(fam).threads is None
    assert client.submit(worker_family, get_method("rwcp", threads=3, **PARAMS["rwcp"])).result().threads == 3


class _KillingExecutor(DaskExecutor):
    """Kills (SIGKILL) a worker that is running tasks as soon as the first result arrives."""

    killed: dict | None = None

    def imap(self, fn, tasks, **kw):
        for k, (i, r) in enumerate(super().imap(fn, tasks, **kw)):
            if k == 0:
                # the scheduler hands the next tasks out just after a result: wait (briefly) until a worker holds some
                deadline = time.monotonic() + 10
                while not (busy := {w: keys for w, keys in self.client.processing().items() if keys}) and time.monotonic() < deadline:
                    time.sleep(0.01)
                victim = next(iter(busy))
                pid = self.client.run(os.getpid, workers=[victim])[victim]
                os.kill(pid, signal.SIGKILL)
                self.killed = {"worker": victim, "pid": pid, "running": len(busy[victim]), "left": len(tasks) - 1}
            yield i, r


@pytest.mark.parametrize("form", ["exact", "compact"])
def test_a_worker_killed_during_calibration_changes_nothing(form, many, client):
    client.wait_for_workers(2, timeout=60)
    kw = dict(alpha=0.1, show_progress=False, curve_form=form)
    want = calibrate_dir(many, **kw)
    ex = _KillingExecutor(client)
    got = calibrate_dir(many, executor=ex, chunk_size=1, **kw)
    assert ex.killed is not None and ex.killed["running"] >= 1 and ex.killed["left"] == 59, ex.killed  # it died mid-run, holding work
    assert _calibration_fields(got) == _calibration_fields(want)
    deadline = time.monotonic() + 60  # gone once its nanny has reaped it (slow on a loaded machine)
    while _alive(ex.killed["pid"]) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(ex.killed["pid"]), ex.killed
    client.wait_for_workers(2, timeout=60)  # the nanny brought a new worker up


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _run(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out = capsys.readouterr()
    return exc.value.code, out.err


def test_a_corrupt_file_on_a_worker_is_one_line_exit_2_nothing_written(many, client, tmp_path, capsys, monkeypatch):
    bad = tmp_path / "bad"
    os.system(f"cp -r {many} {bad}")
    target = bad / "probs" / "img031.npy"
    target.write_bytes(b"\x93NUMPY garbage, not an array")
    address = client.scheduler.address
    calib_ok = tmp_path / "ok.json"
    assert _run(["calibrate", "--data", str(many), "--out", str(calib_ok), "-q"], capsys)[0] in (0, None)
    jobs = {
        "calibrate": ["calibrate", "--data", str(bad), "--out", str(tmp_path / "c.json"), "-q"],
        "compact": ["calibrate", "--data", str(bad), "--out", str(tmp_path / "c.json"), "--curves", "compact", "-q"],
        "predict": ["predict", "--calib", str(calib_ok), "--data", str(bad), "--out", str(tmp_path / "sets"), "-q"],
    }
    before = sorted(p.name for p in tmp_path.iterdir())
    for name, argv in jobs.items():
        code_local, err_local = _run(argv, capsys)
        code, err = _run([*argv, "--scheduler", address, "--chunk-size", "4"], capsys)
        assert code_local == code == 2, (name, err)
        assert err == err_local and err.count("\n") == 1 and err.startswith(f"segcp: error: {target}"), (name, err)
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no temporaries left
    # the usual environment variable reaches the same cluster
    monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)
    code, err = _run(jobs["calibrate"][:-1], capsys)
    assert code == 2 and err.splitlines() == [f"segcp: running on the Dask cluster at {address}", err_local.strip()]


def test_predict_resume_redoes_only_what_an_interrupted_run_left(many, client, tmp_path, capsys):
    data = tmp_path / "d"
    os.system(f"cp -r {many} {data}")
    calib = tmp_path / "c.json"
    calibrate_dir(data, alpha=0.1, out=calib, show_progress=False)
    clean = tmp_path / "clean"
    predict_dir(calib, data, clean, show_progress=False)
    good = (data / "probs" / "img040.npy").read_bytes()
    (data / "probs" / "img040.npy").write_bytes(b"not a file")  # the run stops here
    out = tmp_path / "sets"
    argv = ["predict", "--calib", str(calib), "--data", str(data), "--out", str(out), "--resume", "-q"]
    code, err = _run([*argv, "--scheduler", client.scheduler.address, "--chunk-size", "1"], capsys)
    assert code == 2 and err.startswith(f"segcp: error: {data / 'probs' / 'img040.npy'}")
    first = {p.name: p.stat() for p in out.glob("*.npy")}
    assert "img040.npy" not in first and (out / PREDICT_MANIFEST).is_file()
    assert not [p for p in out.iterdir() if p.name.startswith(TMP_PREFIX)]  # every set written is whole
    (data / "probs" / "img040.npy").write_bytes(good)
    damaged = sorted(first)[0]
    (out / damaged).write_bytes((out / damaged).read_bytes()[:-10])  # e.g. a copy cut short
    code, err = _run([*argv, "--scheduler", client.scheduler.address], capsys)
    assert code in (0, None), err
    for name, st in first.items():
        if name != damaged:
            assert (out / name).stat().st_mtime_ns == st.st_mtime_ns and (out / name).stat().st_ino == st.st_ino  # skipped
    clean_sets = [p for p in clean.iterdir() if p.name != PREDICT_MANIFEST]
    assert sorted(p.name for p in out.glob("*.npy")) == sorted(p.name for p in clean_sets)
    for p in clean_sets:
        assert (out / p.name).read_bytes() == p.read_bytes()
    # another calibration's sets are never mixed in
    other = tmp_path / "c2.json"
    calibrate_dir(data, alpha=0.2, out=other, show_progress=False)
    code, err = _run(["predict", "--calib", str(other), "--data", str(data), "--out", str(out), "--resume", "-q"], capsys)
    assert code == 2 and "another" in err and "alpha" in err
    code, err = _run([*argv, "--overwrite"], capsys)
    assert code == 2 and "--resume" in err


def test_options_and_errors_without_a_cluster(many, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    assert open_executor().where == "this process"
    # the local process pool (--workers 2 without dask, the estimator's n_jobs) maps the same chunked tasks: the same record
    for form in ("exact", "compact"):
        a = calibrate_dir(many, alpha=0.1, show_progress=False, curve_form=form)
        with PoolExecutor(2) as pool:
            b = calibrate_dir(many, alpha=0.1, show_progress=False, curve_form=form, executor=pool, chunk_size=7)
        assert _calibration_fields(a) == _calibration_fields(b)
    with pytest.raises(SegcpError, match="give one of them"):
        open_executor(workers=2, scheduler="tcp://127.0.0.1:1")
    with pytest.raises(SegcpError, match="cannot reach the Dask scheduler"):
        DaskExecutor.connect("tcp://127.0.0.1:1", timeout=2)
    with pytest.raises(SegcpError, match="same segcp"):
        Job(DataSpec.make(tmp_path), None, version="0.0.0-other").reader()  # type: ignore[arg-type]
    code, err = _run(["calibrate", "--data", str(tmp_path), "--out", str(tmp_path / "c.json"), "--workers", "2", "-p", "n_jobs=2"], capsys)
    assert code == 2 and "give one of them" in err
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if dask were not installed
    with pytest.raises(SegcpError, match=r'pip install "segcp\[dask\]"'):
        open_executor(scheduler="tcp://127.0.0.1:1")  # an existing cluster needs dask
    with open_executor(workers=2) as ex:  # N local processes need no dask: a process pool, the same record
        assert isinstance(ex, PoolExecutor) and ex.where == "2 local processes"
        pooled = calibrate_dir(many, alpha=0.1, show_progress=False, executor=ex)
    assert _calibration_fields(pooled) == _calibration_fields(calibrate_dir(many, alpha=0.1, show_progress=False))


def test_compare_on_the_cluster_equals_single_process(many, client, tmp_path):
    from segcp.compare import compare_dir
    from segcp.specs import parse_spec

    specs = [parse_spec("threshold"), parse_spec("morph:se=cross")]
    kw = dict(alphas=[0.2, 0.1], n_cal=20, n_splits=6, seed=3, show_progress=False)
    local = compare_dir(many, specs, **kw)
    remote = compare_dir(many, specs, executor=DaskExecutor(client), chunk_size=7, **kw)
    assert json.dumps(local, sort_keys=True) == json.dumps(remote, sort_keys=True)
    # a tuned row chooses per split on the workers too (its CV measures the held-out folds there): the same choices and numbers
    tuned = [parse_spec("threshold"), parse_spec("morph:se=cross|square,folds=3")]
    local = compare_dir(many, tuned, **kw)
    remote = compare_dir(many, tuned, executor=DaskExecutor(client), chunk_size=7, **kw)
    assert any("chosen" in r for r in local["splits"])
    assert json.dumps(local, sort_keys=True) == json.dumps(remote, sort_keys=True)


# ---------------------------------------------------------------------------- every structure on the map path
NNUNET = Path(__file__).parent / "fixtures" / "nnunet"


def _nn_args(nn: Path) -> list:
    return ["--probs", nn / "pred", "--masks", nn / "raw" / "labelsTr", "--dataset-json", nn / "raw" / "dataset.json"]


def _same_sets(a: Path, b: Path) -> None:
    """The same files under a and b, with the same voxels and geometry (NIfTI) or bytes (NPY)."""
    import nibabel as nib

    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file() and p.name != PREDICT_MANIFEST)  # the manifest names the calib file
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file() and p.name != PREDICT_MANIFEST) and files
    for f in files:
        if f.name.endswith(".nii.gz"):
            x, y = nib.load(str(a / f)), nib.load(str(b / f))
            np.testing.assert_array_equal(np.asarray(x.dataobj), np.asarray(y.dataobj))
            np.testing.assert_array_equal(x.affine, y.affine)
            assert x.get_data_dtype() == y.get_data_dtype()
        else:
            assert (a / f).read_bytes() == (b / f).read_bytes(), f


def test_labels_all_on_two_workers_equals_single_process(tmp_path, capsys):
    """--labels (one λ̂ per structure) runs on the same map path: calibrate, predict and evaluate
    with --workers 2 give the single process's records, sets and metrics."""
    import shutil

    nn = tmp_path / "nn"
    shutil.copytree(NNUNET, nn, ignore=shutil.ignore_patterns("*.py"))
    out = {}
    for name, extra in (("one", []), ("two", ["--workers", "2", "--chunk-size", "3"])):
        calib, sets = tmp_path / f"{name}.json", tmp_path / f"{name}-sets"
        for argv in (
            ["calibrate", *_nn_args(nn), "--labels", "all", "--alpha", "0.2", "--out", calib, "-q"],
            ["predict", "--calib", calib, *_nn_args(nn), "--out", sets, "--combined", "-q"],
            ["evaluate", "--calib", calib, *_nn_args(nn), "--sets", sets, "--out", tmp_path / f"{name}-m.json", "-q"],
            ["evaluate", "--calib", calib, *_nn_args(nn), "--out", tmp_path / f"{name}-fly.json", "-q"],
        ):
            code, err = _run([str(a) for a in argv] + extra, capsys)
            assert code in (0, None), err
        out[name] = [_calibration_fields(json.loads((tmp_path / f"{name}{s}").read_text())) for s in (".json", "-m.json", "-fly.json")]
    assert out["one"] == out["two"]
    assert [s["name"] for s in out["one"][0]["structures"]] == ["RV", "MYO", "LV"]
    _same_sets(tmp_path / "one-sets", tmp_path / "two-sets")


def test_predict_resume_with_labels(client, tmp_path, capsys):
    """A per-structure predict --resume, interrupted by a bad file on a worker, then rerun."""
    import shutil

    nn = tmp_path / "nn"
    shutil.copytree(NNUNET, nn, ignore=shutil.ignore_patterns("*.py"))
    calib = tmp_path / "c.json"
    assert _run(["calibrate", *map(str, _nn_args(nn)), "--labels", "all", "--alpha", "0.2", "--out", str(calib), "-q"], capsys)[0] in (0, None)
    clean = tmp_path / "clean"
    assert _run(["predict", "--calib", str(calib), *map(str, _nn_args(nn)), "--out", str(clean), "--combined", "-q"], capsys)[0] in (0, None)
    bad = nn / "pred" / "case_007.npz"
    good = bad.read_bytes()
    bad.write_bytes(b"not a zip")
    out = tmp_path / "sets"
    argv = [
        "predict",
        "--calib",
        str(calib),
        *map(str, _nn_args(nn)),
        "--out",
        str(out),
        "--combined",
        "--resume",
        "-q",
        "--scheduler",
        client.scheduler.address,
        "--chunk-size",
        "1",
    ]
    code, err = _run(argv, capsys)
    assert code == 2 and err.startswith(f"segcp: error: {bad}"), err
    assert (out / PREDICT_MANIFEST).is_file() and not (out / "LV" / "case_007.nii.gz").exists()
    first = {
        p.relative_to(out): p.stat().st_mtime_ns for p in out.rglob("*.nii.gz") if not p.name.startswith(TMP_PREFIX)
    }  # (a straggler may still be writing)
    bad.write_bytes(good)
    code, err = _run(argv, capsys)
    assert code in (0, None), err
    for rel, mtime in first.items():
        assert (out / rel).stat().st_mtime_ns == mtime  # skipped: already there and whole
    (out / PREDICT_MANIFEST).unlink()
    _same_sets(clean, out)


def test_workers_leave_no_dask_scratch_space(tmp_path):
    """--workers: Dask's lock files and spill folders live in a private folder, removed after the job."""
    import subprocess

    data = tmp_path / "d"
    (data / "probs").mkdir(parents=True)
    (data / "masks").mkdir()
    rng = np.random.default_rng(1)
    for i in range(6):
        m = rng.random((16, 16)) < 0.4
        np.save(data / "probs" / f"{i}.npy", np.clip(m * 0.7 + 0.3 * rng.random(m.shape), 0, 1))
        np.save(data / "masks" / f"{i}.npy", m)
    tmp = tmp_path / "tmpdir"
    tmp.mkdir()
    env = dict(os.environ, TMPDIR=str(tmp), PYTHONPATH=os.pathsep.join(sys.path))
    env.pop("DASK_SCHEDULER_ADDRESS", None)
    r = subprocess.run(
        [sys.executable, "-m", "segcp.cli", "calibrate", "--data", str(data), "--alpha", "0.3", "--out", str(tmp_path / "c.json"), "--workers", "2"],
        capture_output=True,
        text=True,
        env=env,
        timeout=LIMIT_S,
    )
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == ["segcp: running on a local Dask cluster of 2 workers"], r.stderr
    assert sorted(p.name for p in tmp.rglob("*")) == [], sorted(str(p) for p in tmp.rglob("*"))


def test_an_unreachable_scheduler_gives_up_after_the_stated_timeout(many, tmp_path, capsys, monkeypatch):
    import segcp.parallel.cluster as cluster_mod

    monkeypatch.setattr(cluster_mod, "CONNECT_TIMEOUT_S", 1.0)
    code, err = _run(["calibrate", "--data", str(many), "--out", str(tmp_path / "c.json"), "--scheduler", "tcp://127.0.0.1:1", "-q"], capsys)
    assert code == 2 and err.count("\n") == 1 and "cannot reach the Dask scheduler within 1 s" in err, err
    assert not (tmp_path / "c.json").exists()
