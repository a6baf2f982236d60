"""Fuzzing the CLI contract (hypothesis): corrupted data files, calib.json, option values and
output paths (``SEGCP_FUZZ_EXAMPLES`` sets the number of examples per test, default 40). Whatever the corruption, a command either succeeds or ends with exit 2, exactly
one ``segcp: error:`` line, no traceback — and never changes a file it did not mean to write:
the inputs stay byte-identical, and a failure leaves the workspace as it was.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from test_faults import make_data, run, snapshot

FUZZ = settings(max_examples=int(os.environ.get("SEGCP_FUZZ_EXAMPLES", "40")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


class Workspace:
    """A fresh copy of a small data directory and its calibration, per example."""

    def __init__(self, template: Path) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="segcp-fuzz-"))
        shutil.copytree(template, self.root, dirs_exist_ok=True)

    def __enter__(self) -> Path:
        return self.root

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("template")
    make_data(root / "d", n=6)
    from segcp.cli import main

    with pytest.raises(SystemExit):
        main(["calibrate", "--alpha", "0.3", "--data", str(root / "d"), "--out", str(root / "c.json"), "-q"])
    return root


def check_contract(argv: list, capsys, root: Path, outputs: tuple[str, ...]) -> int:
    """Run; on failure the contract holds and nothing changed; on success only ``outputs`` changed."""
    before = snapshot(root)
    code, _, err = run(argv, capsys)
    after = snapshot(root)
    assert code in (0, 2), (code, err)
    if code == 2:
        assert err.count("\n") == 1 and err.startswith("segcp: error: ") and "Traceback" not in err, err
        assert after == before, f"a failed command changed the workspace: {err}"
    else:
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        # the outputs, what is inside them, and the new folders that lead to them
        assert all(any(k == o or k.startswith(o + "/") or o.startswith(k + "/") for o in outputs) for k in changed), changed
    return code


# ---------------------------------------------------------------------------- data files
def _npy_bytes(arr: np.ndarray) -> bytes:
    import io

    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


corruption = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0.0, 0.99)),
    st.tuples(st.just("dtype"), st.sampled_from(["bool", "complex64", "int8", "uint16", "float16", "timedelta64[s]", "U3", "float64"])),
    st.tuples(st.just("shape"), st.lists(st.integers(0, 9), min_size=0, max_size=4).map(tuple)),
    st.tuples(st.just("header"), st.integers(0, 127), st.integers(0, 255)),
    st.tuples(st.just("values"), st.sampled_from([np.nan, np.inf, -1.0, 2.0, 255.0, 1e300])),
    st.tuples(st.just("bytes"), st.binary(min_size=0, max_size=200)),
)


def _corrupt(path: Path, how: tuple) -> None:
    raw = path.read_bytes()
    arr = np.load(path)
    kind = how[0]
    if kind == "truncate":
        path.write_bytes(raw[: int(len(raw) * how[1])])
    elif kind == "dtype":
        try:
            path.write_bytes(_npy_bytes(arr.astype(how[1])))
        except (TypeError, ValueError):
            path.write_bytes(_npy_bytes(np.zeros(arr.shape, dtype=how[1])))
    elif kind == "shape":
        path.write_bytes(_npy_bytes(np.full(how[1], 0.5)))
    elif kind == "header":
        b = bytearray(raw)
        b[how[1] % len(b)] = how[2]
        path.write_bytes(bytes(b))
    elif kind == "values":
        a = arr.astype(np.float64)
        a.flat[0] = how[1]
        path.write_bytes(_npy_bytes(a))
    else:
        path.write_bytes(how[1])


@FUZZ
@given(which=st.sampled_from(["probs", "masks"]), index=st.integers(0, 5), how=corruption)
@example(which="masks", index=0, how=("shape", (0,)))  # an empty mask (found by CI)
@example(which="probs", index=0, how=("shape", (0, 4)))
def test_corrupted_data_files(template, capsys, which, index, how):
    with Workspace(template) as root:
        _corrupt(root / "d" / which / f"{index}.npy", how)
        check_contract(["calibrate", "--alpha", "0.3", "--data", root / "d", "--out", root / "new.json", "-q"], capsys, root, ("new.json",))
        check_contract(["predict", "--calib", root / "c.json", "--data", root / "d", "--out", root / "sets", "-q"], capsys, root, ("sets",))


# ---------------------------------------------------------------------------- calib.json
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**30, 10**30) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


@FUZZ
@given(key=st.sampled_from(["method", "params", "alpha", "lambda", "n", "guarantee", "tau", "schema", "schema_version",
                            "segcp_version", "label", "probs_channels", "scores", "empirical_risk", "bound", "identity"]),
       value=json_values, delete=st.booleans())
def test_corrupted_calibration_records(template, capsys, key, value, delete):
    with Workspace(template) as root:
        rec = json.loads((root / "c.json").read_text())
        if delete:
            rec.pop(key, None)
        else:
            rec[key] = value
        (root / "c.json").write_text(json.dumps(rec, allow_nan=True))
        check_contract(["predict", "--calib", root / "c.json", "--data", root / "d", "--out", root / "sets", "-q"], capsys, root, ("sets",))


@FUZZ
@given(text=st.text(max_size=60))
def test_calibration_record_text(template, capsys, text):
    with Workspace(template) as root:
        (root / "c.json").write_text(text)
        check_contract(["predict", "--calib", root / "c.json", "--data", root / "d", "--out", root / "sets", "-q"], capsys, root, ("sets",))


# ---------------------------------------------------------------------------- option values
option_text = st.one_of(st.text(max_size=12), st.sampled_from(["0", "-1", "1", "1e9", "nan", "inf", "0.5", "", "true", "x=y", "5e-324", "1e-310"]))


@FUZZ
@given(option=st.sampled_from(["--alpha", "--tau", "--label", "--guarantee", "--method", "-p k", "-p se", "-p threshold",
                               "-p empty_prediction", "--se"]),
       value=option_text)
@example(option="--alpha", value="5e-324")  # subnormal: 1/alpha overflows (was an OverflowError traceback)
@example(option="--alpha", value="2.2250738585072014e-308")
@example(option="--alpha", value="1e-20")
def test_option_values(template, capsys, option, value):
    with Workspace(template) as root:
        if option.startswith("-p "):
            extra = ["-p", f"{option[3:]}={value}"]
            method = ["--method", "morph"]
        elif option == "--se":
            extra, method = ["--se", value], ["--method", "morph"]
        else:
            extra, method = [option, value], []
        check_contract(["calibrate", *method, "--data", root / "d", "--out", root / "new.json", "-q", *extra], capsys, root, ("new.json",))


# ---------------------------------------------------------------------------- output paths
segment = st.sampled_from(["", ".", "d", "probs", "masks", "c.json", "x" * 250, "new", "a b", "\x1b[1m", "sets", "0.npy"])


@FUZZ
@given(parts=st.lists(segment, min_size=1, max_size=3), command=st.sampled_from(["calibrate", "predict", "evaluate"]),
       prepare=st.sampled_from(["none", "file", "dir", "nonempty"]))
def test_output_paths(template, capsys, parts, command, prepare):
    with Workspace(template) as root:
        out = root.joinpath(*parts) if parts != [""] else Path("")
        safe = out != Path("") and root in out.resolve().parents
        if safe and not out.exists():
            try:  # the test's own set-up may be impossible (a folder under a file): then none
                if prepare == "file":
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_text("old")
                elif prepare in ("dir", "nonempty"):
                    out.mkdir(parents=True, exist_ok=True)
                    if prepare == "nonempty":
                        (out / "keep.txt").write_text("keep")
            except OSError:
                pass
        if command == "calibrate":
            argv = ["calibrate", "--alpha", "0.3", "--data", root / "d", "--out", out, "-q"]
            inputs: tuple[str, ...] = ("d/probs", "d/masks")
        elif command == "predict":
            argv = ["predict", "--calib", root / "c.json", "--data", root / "d", "--out", out, "-q"]
            inputs = ("d/probs", "d/masks", "c.json")
        else:
            run(["predict", "--calib", root / "c.json", "--data", root / "d", "--out", root / "s0", "-q"], capsys)
            argv = ["evaluate", "--sets", root / "s0", "--data", root / "d", "--out", out, "-q"]
            inputs = ("d/probs", "d/masks", "s0")

        def of_inputs(snap: dict) -> dict:
            return {k: v for k, v in snap.items() if any(k == i or k.startswith(i + "/") for i in inputs)}

        rel = str(out.resolve().relative_to(root.resolve())) if safe else "__outside__"
        before_inputs = of_inputs(snapshot(root))
        code = check_contract(argv, capsys, root, (rel,))
        after_inputs = of_inputs(snapshot(root))
        assert after_inputs == before_inputs  # inputs byte-identical, whatever happened
        if code == 0:
            assert safe
