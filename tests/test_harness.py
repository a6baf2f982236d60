"""The library and, beside it, the research harness: the core imports neither torch nor h5py,
and what needs the harness says so in one line naming the extra."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

#: Make every import of these modules fail in the child: the core must not need them.
NO_HARNESS = "import sys\nsys.modules['torch'] = None\nsys.modules['h5py'] = None\n"


def _child(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", NO_HARNESS + code], capture_output=True, text=True)


def test_the_core_imports_neither_torch_nor_h5py():
    code = (
        "import segcp, segcp.cli, segcp.io, segcp.methods, segcp.conformal, segcp.jobs, segcp.parallel, segcp.engine.splits\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'h5py') and sys.modules[m] is not None))\n"
        "print(sorted(m for m in sys.modules if m.startswith('segcp.harness')))\n"
    )
    r = _child(code)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split("\n")[:2] == ["[]", "[]"], r.stdout
    # and in a plain interpreter, `import segcp.cli` loads neither
    r = subprocess.run(
        [sys.executable, "-c", "import sys, segcp.cli; print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'h5py')))"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert r.stdout.strip() == "[]"


def test_calibrate_predict_and_demo_help_without_the_harness(tmp_path):
    d = tmp_path / "d"
    for sub in ("probs", "masks"):
        (d / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(12):
        np.save(d / "probs" / f"{i}.npy", rng.random((8, 8)))
        np.save(d / "masks" / f"{i}.npy", rng.random((8, 8)) < 0.3)
    code = (
        "from segcp.cli import main\n"
        'for argv in (["calibrate", "--data", D, "--alpha", "0.2", "--method", "morph", "--out", C, "-q"],\n'
        '             ["predict", "--calib", C, "--data", D, "--out", S, "-q"], ["demo", "--help"]):\n'
        "    try:\n"
        "        main(argv)\n"
        "    except SystemExit as e:\n"
        "        assert not e.code, (argv, e.code)\n"
    )
    r = _child(f"D, C, S = {str(d)!r}, {str(tmp_path / 'c.json')!r}, {str(tmp_path / 's')!r}\n" + code)
    assert r.returncode == 0, r.stderr
    assert len(list((tmp_path / "s").glob("*.npy"))) == 12


def test_train_infer_and_hdf5_tasks_name_the_extra_when_it_is_missing(tmp_path):
    for argv in (
        ["train", "--task", "acdc-lv", "--out", str(tmp_path / "m.pt")],
        ["infer", "--model", str(tmp_path / "m.pt"), "--task", "acdc-lv", "--split", "test", "--out", str(tmp_path / "o")],
    ):
        r = _child(f"from segcp.cli import main\nmain({argv!r})")
        assert r.returncode == 2, r.stderr
        err = r.stderr
        assert err.startswith(f"segcp: error: segcp {argv[0]}") and err.count("\n") == 1, err
        assert "needs torch" in err and 'pip install "segcp[harness]"' in err and "torch==2.13.0" in err
        assert not (tmp_path / "m.pt").exists() and not (tmp_path / "o").exists()
    h5 = tmp_path / "patient001_frame01_slice_1.h5"
    h5.write_bytes(b"not read")
    r = _child(f"from segcp.harness.datasets import acdc\nacdc.read_acdc_h5({str(h5)!r})")
    assert "SegcpError: reading the ACDC / LA 2018 HDF5 files needs h5py" in r.stderr and "segcp[harness]" in r.stderr
