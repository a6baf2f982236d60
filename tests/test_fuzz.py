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

FUZZ = settings(
    max_examples=int(os.environ.get("SEGCP_FUZZ_EXAMPLES", "40")), deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


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
    st.none() | st.booleans() | st.integers(-(10**30), 10**30) | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3),
    max_leaves=8,
)


@FUZZ
@given(
    key=st.sampled_from(
        [
            "method",
            "params",
            "alpha",
            "lambda",
            "n",
            "guarantee",
            "tau",
            "schema",
            "schema_version",
            "segcp_version",
            "label",
            "probs_channels",
            "scores",
            "empirical_risk",
            "bound",
            "identity",
        ]
    ),
    value=json_values,
    delete=st.booleans(),
)
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
@given(
    option=st.sampled_from(
        ["--alpha", "--tau", "--label", "--guarantee", "--method", "-p k", "-p se", "-p threshold", "-p empty_prediction", "--se"]
    ),
    value=option_text,
)
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
@given(
    parts=st.lists(segment, min_size=1, max_size=3),
    command=st.sampled_from(["calibrate", "predict", "evaluate"]),
    prepare=st.sampled_from(["none", "file", "dir", "nonempty"]),
)
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


# ---------------------------------------------------------------------------- issue 23: records as untrusted input
def make_stacks(root: Path, n: int = 8, shape=(10, 10), labels: int = 3, seed: int = 0) -> Path:
    """Class-probability stacks (L, *S) and label maps: every structure in some mask."""
    rng = np.random.default_rng(seed)
    for sub in ("probs", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        lab = rng.integers(0, labels, shape).astype(np.uint8)
        lab.flat[:labels] = np.arange(labels)
        onehot = np.stack([lab == v for v in range(labels)]).astype(np.float64) + rng.uniform(0, 0.8, (labels, *shape))
        np.save(root / "probs" / f"{i}.npy", (onehot / onehot.sum(0)).astype(np.float32))
        np.save(root / "masks" / f"{i}.npy", lab)
    return root


class NestedWorkspace(Workspace):
    """A workspace two folders below a fresh temporary root, so that a write through ``..``
    (or next to the workspace) lands inside what the test watches."""

    def __init__(self, template: Path) -> None:
        self.top = Path(tempfile.mkdtemp(prefix="segcp-fuzz-"))
        self.root = self.top / "a" / "b" / "ws"
        shutil.copytree(template, self.root)

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.top, ignore_errors=True)


@pytest.fixture(scope="module")
def stacks(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("stacks")
    make_stacks(root / "d")
    code, _, err = run_quiet(["calibrate", "--labels", "all", "--alpha", "0.3", "--data", root / "d", "--out", root / "c.json", "-q"])
    assert code == 0, err
    return root


def run_quiet(argv: list) -> tuple[int, str, str]:
    """Run the CLI in this process, capturing its output without pytest's capsys."""
    import contextlib
    import io

    from segcp.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in argv])
            code = 0
        except SystemExit as exc:
            code = 0 if exc.code is None else int(exc.code)
    return code, out.getvalue(), err.getvalue()


names = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "..",
            ".",
            "../..",
            "../../../evil",
            "/tmp/evil",
            "a/b",
            "a\\b",
            "C:\\x",
            "C:",
            "CON",
            "nul.txt",
            "Com1",
            "combined",
            "structures.json",
            "\x00",
            "\x1b[1m",
            "-rf",
            ".hidden",
            "x" * 300,
            "RV",
            "rv",
            "label1",
            "ü",
            "左心室",
        ]
    ),
)
labels = st.one_of(st.integers(-3, 5), st.sampled_from([2**31, -(2**63), 10**30]), st.booleans(), st.none(), st.text(max_size=2), st.floats())


@FUZZ
@given(entries=st.lists(st.tuples(names, labels), min_size=1, max_size=4), combined=st.booleans(), resume=st.booleans())
@example(entries=[("../../../evil", 1)], combined=False, resume=False)
@example(entries=[("/tmp/evil", 1), ("..", 2)], combined=True, resume=True)
@example(entries=[("combined", 1), ("RV", 2)], combined=True, resume=False)
@example(entries=[("RV", 1), ("rv", 2)], combined=False, resume=False)
@example(entries=[("CON", 1), ("x", -1)], combined=False, resume=False)
def test_no_calibration_record_makes_predict_write_outside_out(stacks, entries, combined, resume):
    """A crafted per-structure calib.json: predict writes inside --out or nowhere (one line)."""
    with NestedWorkspace(stacks) as root:
        rec = json.loads((root / "c.json").read_text())
        proto = rec["structures"][0]
        rec["structures"] = [proto | {"name": n, "label": v} for n, v in entries]
        (root / "c.json").write_text(json.dumps(rec, allow_nan=True))
        out = root / "out" / "sets"
        before = snapshot(root.parents[2])
        argv = [
            "predict",
            "--calib",
            root / "c.json",
            "--data",
            root / "d",
            "--out",
            out,
            "-q",
            *(["--combined"] if combined else []),
            *(["--resume"] if resume else []),
        ]
        code, _, err = run_quiet(argv)
        after = snapshot(root.parents[2])
        assert code in (0, 2), err
        if code == 2:
            assert err.count("\n") == 1 and err.startswith("segcp: error: ") and "Traceback" not in err, err
        inside = "a/b/ws/out"
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        assert all(k == inside or k.startswith(inside + "/") for k in changed), (changed, err)
        if code == 0:
            written = {k for k in changed if k.startswith(inside + "/sets/")}
            folders = {k.split("/")[5] for k in written}
            assert all(f and f not in (".", "..") and f.isascii() and "\\" not in f for f in folders), folders


@FUZZ
@given(
    n=st.one_of(st.integers(-2, 60), st.sampled_from([2**31, 10**400])),
    alpha=st.one_of(st.floats(0.0, 1.0), st.sampled_from([5e-324, 1e-310, 0.02, 0.05, 0.5])),
)
@example(n=1, alpha=0.01)  # the "no calibration could produce it"
@example(n=10**400, alpha=0.1)
@example(n=19, alpha=0.05)
@example(n=18, alpha=0.05)
def test_a_record_is_accepted_only_if_a_calibration_could_have_made_it(template, n, alpha):
    """n and α: accepted exactly when n ≥ 1/α − 1 (and both in range); else one line naming the field."""
    from segcp.calibration import min_calibration_size
    from segcp.errors import SegcpError

    with Workspace(template) as root:
        rec = json.loads((root / "c.json").read_text())
        for key in ("empirical_risk", "bound", "statement"):
            rec.pop(key)
        rec["n"], rec["alpha"] = n, alpha
        (root / "c.json").write_text(json.dumps(rec))
        code, _, err = run_quiet(["predict", "--calib", root / "c.json", "--data", root / "d", "--out", root / "sets", "-q"])
        try:
            possible = 1 <= n <= 2**31 - 1 and 0 < alpha < 1 and n >= min_calibration_size(alpha)
        except SegcpError:  # α too small for any n
            possible = False
        assert code == (0 if possible else 2), err
        if not possible:
            assert err.count("\n") == 1 and ("field 'n'" in err or "field 'alpha'" in err), err


@pytest.mark.parametrize(
    "field, value, fragment",
    [
        ("segcp_version", "\u0663.0.0", "version string"),  # ARABIC-INDIC DIGIT THREE: isdigit() but not ASCII
        ("segcp_version", "\u00b2.1", "version string"),  # SUPERSCRIPT TWO: isdigit(), int() refuses
        ("segcp_version", "1" * 100, "version string"),
        ("bound", 0.5, "exceeds alpha"),
        ("empirical_risk", 1.5, "outside [0, 1]"),
        ("n", 10**400, "positive integer"),
        ("n", 1, "too small for alpha"),
        ("alpha", 5e-324, "field 'alpha'"),
        ("lambda", [0.1, 0.9], "grows with alpha"),  # alpha [0.3, 0.4]: a larger alpha with a larger lambda
        ("label", -1, "field 'label'"),
        ("label", 2**40, "field 'label'"),
    ],
)
def test_implausible_record_fields_are_one_line(template, capsys, field, value, fragment):
    with Workspace(template) as root:
        rec = json.loads((root / "c.json").read_text())
        rec[field] = value
        if field == "lambda":
            rec |= {"alpha": [0.3, 0.4], "empirical_risk": None, "bound": None, "statement": None}
        if field == "bound":
            rec["empirical_risk"] = None
        (root / "c.json").write_text(json.dumps(rec))
        err = _fails_cli(["predict", "--calib", root / "c.json", "--data", root / "d", "--out", root / "sets", "-q"], capsys, root)
        assert fragment in err, err


@pytest.mark.parametrize(
    "entry, fragment",
    [
        ({"label": 7}, "cannot take class 7"),  # a channel the stacks do not have
        ({"label": -1}, "structures[0].label"),  # never Python's negative indexing
        ({"label": True}, "structures[0].label"),
        ({"name": 5}, "must be an object with an integer 'label' and a 'name'"),
    ],
)
def test_structure_labels_become_channels_only_when_the_stack_has_them(stacks, capsys, entry, fragment):
    with Workspace(stacks) as root:
        rec = json.loads((root / "c.json").read_text())
        rec["structures"][0] |= entry
        (root / "c.json").write_text(json.dumps(rec))
        err = _fails_cli(["predict", "--calib", root / "c.json", "--data", root / "d", "--out", root / "sets", "-q"], capsys, root)
        assert fragment in err, err


def _fails_cli(argv, capsys, root: Path) -> str:
    before = snapshot(root)
    code, _, err = run(argv, capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("segcp: error: "), (code, err)
    assert snapshot(root) == before
    return err


def test_structure_names_are_made_safe_and_collisions_refused(stacks, capsys):
    with Workspace(stacks) as root:
        rec = json.loads((root / "c.json").read_text())
        rec["structures"][0]["name"], rec["structures"][1]["name"] = "../../../x y", "CON"
        (root / "c.json").write_text(json.dumps(rec))
        run(["predict", "--calib", root / "c.json", "--data", root / "d", "--out", root / "sets", "-q"], capsys)
        assert sorted(p.name for p in (root / "sets").iterdir()) == [".segcp-predict.json", "CON_", "x_y"]  # the sets and the manifest
        rec["structures"][1]["name"] = "x?y"  # "x_y" after the safe form: the same folder
        rec["structures"][0]["name"] = "x y"
        (root / "c.json").write_text(json.dumps(rec))
        err = _fails_cli(["predict", "--calib", root / "c.json", "--data", root / "d", "--out", root / "s2", "-q"], capsys, root)
        assert "share the folder" in err
        rec["structures"][1]["name"] = "combined"
        (root / "c.json").write_text(json.dumps(rec))
        err = _fails_cli(["predict", "--calib", root / "c.json", "--data", root / "d", "--out", root / "s3", "--combined", "-q"], capsys, root)
        assert "collide" in err


@FUZZ
@given(
    tokens=st.lists(st.sampled_from(["0", "00", "1", "2", "3", "-1", "background", "RV", "LV", "all", "x", " "]), min_size=1, max_size=4),
    names=st.one_of(st.none(), st.dictionaries(st.sampled_from(["background", "RV", "LV"]), st.integers(0, 3), min_size=1, max_size=3)),
)
@example(tokens=["0", "1"], names=None)
@example(tokens=["background", "1"], names=None)
@example(tokens=["all"], names={"background": 0, "RV": 1})
@example(tokens=["all"], names={"background": 0, "RV": 1, "LV": 2})
def test_labels_calibrate_what_they_name_or_say_why(stacks, tokens, names):
    """`--labels` on 3-class stacks, with or without a dataset.json (issue 23: `--labels 0,1` calibrated the
    background, and a dataset.json lacking a structure left it out without a word): success only when every
    structure calibrated was asked for — the background only by name, `all` only when dataset.json names
    every channel; otherwise one line and nothing written."""
    with Workspace(stacks) as root:
        if names is not None:
            (root / "d" / "dataset.json").write_text(json.dumps({"labels": names}))
        before = snapshot(root)
        code, _, err = run_quiet(["calibrate", "--labels", ",".join(tokens), "--alpha", "0.3", "--data", root / "d", "--out", root / "n.json", "-q"])
        assert code in (0, 2), err
        if code == 2:
            assert err.count("\n") == 1 and err.startswith("segcp: error: ") and "Traceback" not in err, err
            assert snapshot(root) == before
            return
        got = [e["label"] for e in json.loads((root / "n.json").read_text())["structures"]]
        if tokens == ["all"]:
            assert got == [1, 2]  # every channel but the background, each named when a dataset.json is there
        else:
            by_name = {"background": 0} | {n: v for n, v in (names or {}).items()}
            assert not {"0", "00"} & set(tokens) and (0 not in got or any(by_name.get(t) == 0 for t in tokens))


def test_a_one_channel_stack_with_label_0_is_one_line(tmp_path, capsys):
    """(H, W, 1) probabilities with --label 0 would compare the one channel with the background."""
    d = make_stacks(tmp_path / "d", labels=2)
    for f in (d / "probs").iterdir():
        np.save(f, np.load(f)[1][..., None])  # the foreground map saved with a channel axis
    err = _fails_cli(["calibrate", "--data", d, "--label", "0", "--alpha", "0.3", "--out", tmp_path / "c.json"], capsys, tmp_path)
    assert "one channel" in err
    err = _fails_cli(["calibrate", "--data", d, "--label", "1", "--alpha", "0.3", "--out", tmp_path / "c.json"], capsys, tmp_path)
    assert "one channel" in err  # the real problem, whatever the label


# ---------------------------------------------------------------------------- issue 23: the map path's options
@pytest.mark.parametrize("command", ["calibrate", "predict", "evaluate"])
@pytest.mark.parametrize(
    "option, value, fragment",
    [
        ("--chunk-size", "-1", "--chunk-size"),
        ("--chunk-size", "0", "--chunk-size"),
        ("--workers", "0", "--workers"),
        ("--workers", "-3", "--workers"),
        ("--seed", "-1", "--seed"),
    ],
)
def test_map_options_are_checked_at_the_boundary(template, capsys, command, option, value, fragment):
    if option == "--seed" and command == "calibrate":
        return  # calibrate draws nothing
    with Workspace(template) as root:
        argv = {
            "calibrate": ["calibrate", "--alpha", "0.3", "--data", root / "d", "--out", root / "new.json"],
            "predict": ["predict", "--calib", root / "c.json", "--data", root / "d", "--out", root / "sets"],
            "evaluate": ["evaluate", "--calib", root / "c.json", "--data", root / "d", "--out", root / "m.json"],
        }[command]
        err = _fails_cli([*argv, option, value, "-q"], capsys, root)
        assert fragment in err, err


def test_library_calls_check_chunk_size_and_seed(template, tmp_path):
    from segcp.errors import SegcpError
    from segcp.jobs import calibrate_dir, evaluate_dir, predict_dir

    with pytest.raises(SegcpError, match="--chunk-size"):
        calibrate_dir(template / "d", alpha=0.3, show_progress=False, chunk_size=-1)
    with pytest.raises(SegcpError, match="--chunk-size"):
        evaluate_dir(None, template / "d", calib=template / "c.json", show_progress=False, chunk_size=-2)  # was: exit 0, n = 0
    with pytest.raises(SegcpError, match="--seed"):
        predict_dir(template / "c.json", template / "d", tmp_path / "s", seed=-1, show_progress=False)
    with pytest.raises(SegcpError, match="--seed"):
        evaluate_dir(None, template / "d", calib=template / "c.json", seed=-5, show_progress=False)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize(
    "address, fragment",
    [
        ("http://10.0.0.5:8786", "unknown transport"),
        ("tcp://exa mple:8786", "not a scheduler address"),
        ("10.0.0.5", "not a scheduler address"),
        ("tcp://10.0.0.5:99999", "not a scheduler address"),
        ("tcp://[::1:8786", "not a scheduler address"),
        ("tcp://[fffff::1]:8786", "not an IPv6 address"),
        ("tcp://ho\nst:80", "not a scheduler address"),
        ("", "empty"),
        ("tcp://-bad-.org:1", "not a scheduler address"),
    ],
)
def test_a_malformed_scheduler_address_is_refused_before_connecting(template, capsys, monkeypatch, address, fragment):
    """By syntax, before anything is tried: here dask cannot even be imported, so any attempt to
    connect would say "pip install" instead."""
    import sys

    monkeypatch.setitem(sys.modules, "distributed", None)
    monkeypatch.delenv("DASK_SCHEDULER_ADDRESS", raising=False)
    with Workspace(template) as root:
        argv = ["calibrate", "--alpha", "0.3", "--data", root / "d", "--out", root / "new.json", "-q"]
        err = _fails_cli([*argv, "--scheduler", address], capsys, root)
        assert fragment in err and "pip install" not in err, err
        monkeypatch.setenv("DASK_SCHEDULER_ADDRESS", address)
        if address.strip():  # an empty variable means "not set"
            err = _fails_cli(argv, capsys, root)
            assert "$DASK_SCHEDULER_ADDRESS" in err and fragment in err, err


def test_workers_without_dask_run_a_process_pool_and_are_capped(template, capsys, monkeypatch):
    """--workers N without dask: N local processes (the same record); far more than the cores: capped, one note."""
    import sys

    from segcp.parallel import MAX_WORKERS_PER_CORE, PoolExecutor, cores, open_executor

    monkeypatch.setitem(sys.modules, "distributed", None)
    with open_executor(workers=10_000) as ex:
        assert isinstance(ex, PoolExecutor) and ex.workers == MAX_WORKERS_PER_CORE * cores()
        assert ex.note is not None and "capped" in ex.note
    with Workspace(template) as root:
        base = ["calibrate", "--alpha", "0.3", "--data", root / "d", "-q"]
        code, _, err = run([*base, "--out", root / "one.json"], capsys)
        assert code == 0, err
        code, _, err = run([*base, "--out", root / "many.json", "--workers", "10000"], capsys)
        assert code == 0 and err.splitlines() == [
            f"segcp: note: --workers 10000 capped at {MAX_WORKERS_PER_CORE * cores()} ({MAX_WORKERS_PER_CORE} per core, {cores()} cores)"
        ], err
        code, _, err = run([*base, "--out", root / "old.json", "-p", "n_jobs=2"], capsys)  # the old spelling, mapped onto --workers
        assert code == 0 and err.splitlines() == ["segcp: warning: -p n_jobs=N is deprecated; use --workers N"], err

        def fields(name: str) -> dict:
            return {k: v for k, v in json.loads((root / name).read_text()).items() if k != "seconds"}

        assert fields("one.json") == fields("many.json") == fields("old.json")
