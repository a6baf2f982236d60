"""The file CLI contract: calibrate → predict → evaluate, formats, and bad inputs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from segcp import __version__
from segcp.cli import main
from segcp.jobs.predict import PREDICT_MANIFEST
from segcp.metrics import hd95


def blob_case(rng: np.random.Generator, shape=(24, 24)):
    mask = np.zeros(shape, bool)
    c = rng.integers(6, min(shape[-2:]) - 6, size=2)
    r = rng.integers(3, 6)
    yy, xx = np.ogrid[: shape[-2], : shape[-1]]
    disk = (yy - c[0]) ** 2 + (xx - c[1]) ** 2 <= r * r
    mask[...] = disk
    noise = rng.normal(0, 1.2, shape)
    probs = 1 / (1 + np.exp(-(np.where(mask, 2.5, -2.5) + noise)))
    return probs.astype(np.float32), mask


def save(path: Path, arr: np.ndarray, spacing=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, arr)
    elif path.suffix == ".png":
        Image.fromarray(arr).save(path)
    else:
        aff = np.diag([*(spacing or (1.0,) * arr.ndim), 1.0][:4] + [1.0] * (4 - arr.ndim - 1))
        nib.save(nib.Nifti1Image(arr, aff), str(path))


def make_dir(root: Path, n=30, fmt="npy", seed=0, label_map=False, shape=(24, 24), spacing=None) -> Path:
    rng = np.random.default_rng(seed)
    for i in range(n):
        probs, mask = blob_case(rng, shape)
        m = mask.astype(np.uint8) * (3 if label_map else 1)
        if label_map:
            m[0, :4] = 1  # another structure present
        if fmt == "png":
            save(root / "probs" / f"img{i:03d}.png", (probs * 255).round().astype(np.uint8))
            save(root / "masks" / f"img{i:03d}.png", m * (1 if label_map else 255))
        elif fmt == "nii.gz":
            save(root / "probs" / f"img{i:03d}.nii.gz", probs, spacing)
            save(root / "masks" / f"img{i:03d}.nii.gz", m, spacing)
        else:
            save(root / "probs" / f"img{i:03d}.npy", probs)
            save(root / "masks" / f"img{i:03d}.npy", m)
    return root


def run(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(args)
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def ok(args, capsys):
    code, out, err = run(args, capsys)
    assert code in (0, None), err
    return out


@pytest.mark.parametrize("fmt", ["npy", "png", "nii.gz"])
def test_round_trip(tmp_path, capsys, fmt):
    data = make_dir(tmp_path / "data", fmt=fmt, spacing=(1.5, 0.5) if fmt == "nii.gz" else None)
    calib = tmp_path / "calib.json"
    ok(["calibrate", "--method", "threshold", "--alpha", "0.1", "--data", str(data), "--out", str(calib), "-q"], capsys)
    rec = json.loads(calib.read_text())
    assert rec["method"] == "threshold" and rec["alpha"] == 0.1 and rec["n"] == 30
    assert rec["segcp_version"] == __version__ and 0 <= rec["lambda"] <= 1
    sets = tmp_path / "sets"
    ok(["predict", "--calib", str(calib), "--data", str(data), "--out", str(sets), "-q"], capsys)
    if fmt == "nii.gz":  # NIfTI in, NIfTI out: uint8 sets on the input's grid (same affine), for viewers
        files = sorted(sets.glob("*.nii.gz"))
        assert len(files) == 30 and [p.name for p in sets.glob(".*")] == [PREDICT_MANIFEST]
        img = nib.load(str(files[0]))
        s0 = np.asarray(img.dataobj)
        assert s0.dtype == np.uint8 and s0.shape == (24, 24) and set(np.unique(s0)) <= {0, 1}
        assert np.allclose(img.affine, nib.load(str(data / "probs" / files[0].name)).affine)
    else:
        files = sorted(sets.glob("*.npy"))
        assert len(files) == 30 and [p.name for p in sets.glob(".*")] == [PREDICT_MANIFEST]
        s0 = np.load(files[0])
        assert s0.dtype == bool and s0.shape == (24, 24)
    metrics = tmp_path / "m.json"
    ok(["evaluate", "--sets", str(sets), "--data", str(data), "--out", str(metrics), "-q"], capsys)
    res = json.loads(metrics.read_text())
    assert set(res["mean"]) >= {"coverage", "fnr", "stretch", "dice", "hd95", "assd"}
    assert set(res["per_image"]) == {f"img{i:03d}" for i in range(30)}
    assert res["undefined"]["hd95"] == 0
    if fmt == "nii.gz":
        # Distances are in the file's physical units (NIfTI spacing: mm).
        assert res["distance_units"] == "mm"
        pid = "img000"
        mask = np.asarray(nib.load(str(data / "masks" / f"{pid}.nii.gz")).dataobj).astype(bool)
        pred = np.asarray(nib.load(str(sets / f"{pid}.nii.gz")).dataobj).astype(bool)
        assert res["per_image"][pid]["hd95"] == pytest.approx(hd95(pred, mask, (1.5, 0.5)))


def test_label_map_and_class_stack(tmp_path, capsys):
    data = make_dir(tmp_path / "data", label_map=True)
    code, _, err = run(["calibrate", "--data", str(data), "--out", str(tmp_path / "c.json")], capsys)
    assert code == 2 and "not binary" in err and "--label" in err
    ok(["calibrate", "--data", str(data), "--label", "3", "--out", str(tmp_path / "c.json"), "-q"], capsys)
    # A class-probability stack (L, H, W): --label picks the channel.
    stack = tmp_path / "stack"
    for f in (data / "probs").glob("*.npy"):
        p = np.load(f)
        save(stack / "probs" / f.name, np.stack([1 - p, np.zeros_like(p), np.zeros_like(p), p]))
        save(stack / "masks" / f.name, np.load(data / "masks" / f.name))
    ok(["calibrate", "--data", str(stack), "--label", "3", "--out", str(tmp_path / "s.json"), "-q"], capsys)
    a, b = (json.loads((tmp_path / x).read_text())["lambda"] for x in ("c.json", "s.json"))
    assert a == b
    ok(["predict", "--calib", str(tmp_path / "s.json"), "--data", str(stack), "--out", str(tmp_path / "ss"), "-q"], capsys)
    assert np.load(next((tmp_path / "ss").glob("*.npy"))).shape == (24, 24)


def test_3d_volumes(tmp_path, capsys):
    data = make_dir(tmp_path / "data", n=12, shape=(5, 20, 20), fmt="nii.gz", spacing=(3.0, 1.0, 1.0))
    ok(["calibrate", "--alpha", "0.2", "--data", str(data), "--out", str(tmp_path / "c.json"), "-q"], capsys)
    ok(["predict", "--calib", str(tmp_path / "c.json"), "--data", str(data), "--out", str(tmp_path / "s"), "-q"], capsys)
    ok(["evaluate", "--sets", str(tmp_path / "s"), "--data", str(data), "--out", str(tmp_path / "m.json"), "-q"], capsys)
    assert json.loads((tmp_path / "m.json").read_text())["n"] == 12


def corrupt(data: Path, kind: str) -> str:
    """Break the data directory; return a fragment the error line must contain."""
    p = data / "probs" / "img004.npy"
    if kind == "nan":
        a = np.load(p)
        a[3, 3] = np.nan
        np.save(p, a)
        return "img004.npy: probability map contains NaN"
    if kind == "range":
        a = np.load(p)
        a[3, 3] = 1.7
        np.save(p, a)
        return "img004.npy: probabilities must lie in [0, 1]"
    if kind == "shape":
        np.save(p, np.zeros((24, 23), np.float32))
        return "does not match"
    if kind == "unreadable":
        p.write_bytes(b"not a numpy file")
        return "img004.npy: unreadable .npy file"
    if kind == "missing":
        (data / "masks" / "img004.npy").unlink()
        return "no file for id 'img004'"
    if kind == "unmatched":
        np.save(data / "masks" / "extra.npy", np.zeros((24, 24), np.uint8))
        return "extra.npy: no matching file in probs/"
    if kind == "nonbinary":
        m = np.load(data / "masks" / "img004.npy")
        m[0, 0] = 7
        np.save(data / "masks" / "img004.npy", m)
        return "img004.npy: mask is not binary"
    if kind == "empty":
        for f in (data / "probs").glob("*"):
            f.unlink()
        return "probs: no files in a format segcp reads (.npy, .png, .nii.gz, .nii, .npz"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["nan", "range", "shape", "unreadable", "missing", "unmatched", "nonbinary", "empty"])
def test_bad_inputs_one_line_no_output(tmp_path, capsys, kind):
    data = make_dir(tmp_path / "data")
    fragment = corrupt(data, kind)
    out = tmp_path / "calib.json"
    code, _, err = run(["calibrate", "--data", str(data), "--out", str(out)], capsys)
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("segcp: error: ") and fragment in err
    assert "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".calib.json*"))


def test_alpha_too_small_for_n(tmp_path, capsys):
    data = make_dir(tmp_path / "data", n=10)
    code, _, err = run(["calibrate", "--alpha", "0.05", "--data", str(data), "--out", str(tmp_path / "c.json")], capsys)
    assert code == 2 and "alpha=0.05 needs at least 19 calibration images" in err and "got 10" in err
    code, _, err = run(["calibrate", "--alpha", "1.5", "--data", str(data), "--out", str(tmp_path / "c.json")], capsys)
    assert code == 2 and "alpha must be in (0, 1)" in err


def test_predict_failure_leaves_no_partial_sets(tmp_path, capsys):
    data = make_dir(tmp_path / "data")
    calib = tmp_path / "c.json"
    ok(["calibrate", "--data", str(data), "--out", str(calib), "-q"], capsys)
    corrupt(data, "nan")
    code, _, err = run(["predict", "--calib", str(calib), "--data", str(data), "--out", str(tmp_path / "sets")], capsys)
    assert code == 2 and "NaN" in err
    assert not (tmp_path / "sets").exists() and not list(tmp_path.glob(".sets*"))
    (tmp_path / "bad.json").write_text("{not json")
    code, _, err = run(["predict", "--calib", str(tmp_path / "bad.json"), "--data", str(data), "--out", str(tmp_path / "s")], capsys)
    assert code == 2 and "bad.json: not valid JSON" in err


def test_evaluate_errors(tmp_path, capsys):
    data = make_dir(tmp_path / "data")
    sets = tmp_path / "sets"
    sets.mkdir()
    for i in range(30):
        np.save(sets / f"img{i:03d}.npy", np.zeros((24, 24), bool))
    np.save(sets / "img007.npy", np.zeros((5, 5), bool))
    code, _, err = run(["evaluate", "--sets", str(sets), "--data", str(data), "--out", str(tmp_path / "m.json")], capsys)
    assert code == 2 and "img007.npy: set shape (5, 5) does not match mask shape (24, 24)" in err
    assert not (tmp_path / "m.json").exists()
    (sets / "img007.npy").unlink()
    code, _, err = run(["evaluate", "--sets", str(sets), "--data", str(data), "--out", str(tmp_path / "m.json")], capsys)
    assert code == 2 and "no set for id 'img007'" in err


def test_console_script_version_and_help():
    exe = Path(sys.executable).parent / "segcp"
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == f"segcp {__version__}"
    r = subprocess.run([sys.executable, "-m", "segcp", "--version"], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == f"segcp {__version__}"
    r = subprocess.run([str(exe), "calibrate", "--help"], capture_output=True, text=True, check=True)
    assert "--alpha" in r.stdout and "--guarantee" in r.stdout
    r = subprocess.run([str(exe), "calibrate", "--data", "/nonexistent", "--out", "x.json"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr == "segcp: error: /nonexistent: data directory does not exist\n"


def test_written_files_get_the_usual_mode(tmp_path):
    """Atomic writes go through mkstemp (0600); the result must get 0666 & ~umask like open()."""
    import os
    import stat

    from segcp.io import write_json

    write_json(tmp_path / "r.json", {"a": 1})
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(os.stat(tmp_path / "r.json").st_mode) == 0o666 & ~mask


def _npy_dir(root: Path) -> Path:
    """12 random 16 × 16 NPY probability maps and masks."""
    (root / "probs").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        np.save(root / "probs" / f"{i}.npy", rng.random((16, 16)).astype(np.float32))
        np.save(root / "masks" / f"{i}.npy", (rng.random((16, 16)) < 0.3).astype(np.uint8))
    return root


#: Libraries no command below needs (numpy is the core; scipy only measures surface distances).
HEAVY = ("scipy", "matplotlib", "torch", "transformers", "onnxruntime", "nibabel", "PIL", "dask", "distributed")


def _imported(argv: list[str], heavy: tuple[str, ...]) -> list[str]:
    """The modules among ``heavy`` (top-level packages or full module names) that ``segcp ARGV`` imports
    (run in a fresh interpreter)."""
    code = (
        "import sys\n"
        "from segcp.cli import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit as e:\n"
        "    assert not e.code, e.code\n"
        f"print(sorted({{n for m in list(sys.modules) for n in (m, m.split('.')[0])}} & set({heavy!r})))\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1].replace("'", '"'))


def test_threshold_calibrate_imports_only_numpy_and_its_reader(tmp_path):
    """`segcp calibrate` on raw probabilities pays for numpy, typer and the NPY reader: no scipy,
    matplotlib, torch, transformers, onnxruntime, nibabel, PIL or dask (docs/benchmarks/speed.md)."""
    data = _npy_dir(tmp_path / "d")
    assert _imported(["calibrate", "--data", str(data), "--alpha", "0.2", "--out", str(tmp_path / "c.json"), "-q"], HEAVY) == []
    assert json.loads((tmp_path / "c.json").read_text())["n"] == 12


def test_each_command_imports_only_what_it_needs(tmp_path, capsys):
    """Per command, what it does not need is never imported: not pydantic (typer's conversion,
    replaced for segcp's plain options), not rich unless a bar or a table is shown, not numpy for
    ``--version`` and ``--help``, not scipy except to measure surface distances."""
    data = _npy_dir(tmp_path / "d")
    calib, sets = tmp_path / "c.json", tmp_path / "sets"
    ok(["calibrate", "--data", str(data), "--alpha", "0.2", "--out", str(calib), "-q"], capsys)
    ok(["predict", "--calib", str(calib), "--data", str(data), "--out", str(sets), "-q"], capsys)
    lean = ("pydantic", "rich", *HEAVY)
    assert _imported(["calibrate", "--data", str(data), "--alpha", "0.2", "--out", str(tmp_path / "c2.json"), "-q"], lean) == []
    # nor segcp's own modules of other guarantees (two-sided sets, Learn then Test: --pvalue's default is
    # not parsed), nor logging (NIfTI's reader only)
    others = ("segcp.calibration.band", "segcp.calibration.ltt", "segcp.calibration.monitor", "segcp.volumes", "segcp.losses", "logging")
    assert _imported(["calibrate", "--data", str(data), "--alpha", "0.2", "--out", str(tmp_path / "c3.json"), "-q"], others) == []
    assert _imported(["predict", "--calib", str(calib), "--data", str(data), "--out", str(tmp_path / "s2"), "-q"], lean) == []
    assert _imported(["evaluate", "--sets", str(sets), "--data", str(data), "--out", str(tmp_path / "m.json"), "-q"], lean) == ["scipy"]
    for argv in (["--version"], ["--help"]):
        assert _imported(argv, ("numpy", *lean)) == [], argv
    for argv in (["calibrate", "--help"], ["predict", "--help"], ["evaluate", "--help"], ["methods"]):
        assert _imported(argv, lean) == [], argv  # the families' declarations need numpy, nothing more


# ---------------------------------------------------------------------------- the options themselves
def help_text(command: str, capsys) -> str:
    code, out, err = run([command, "--help"], capsys)
    assert code in (0, None), err
    return out


def test_a_run_builds_only_the_command_it_names(capsys):
    """typer turns every command into click objects; a run that names one builds only it (cli._command_line),
    and anything else — no command, the group's options, a mistyped name — gets them all, so click's
    suggestion and the group's help still see every command."""
    from segcp.cli import _command_line

    everything = set(_commands())
    assert len(everything) >= 12
    assert set(_command_line(["calibrate", "--data", "x"]).commands) == {"calibrate"}
    assert set(_command_line(["methods"]).commands) == {"methods"}
    for argv in ([], ["--help"], ["--version"], ["--version", "calibrate"], ["calbrate", "--data", "x"]):
        assert set(_command_line(argv).commands) == everything, argv
    code, _, err = run(["calbrate", "--data", "x"], capsys)
    assert code == 2 and "Did you mean 'calibrate'" in err
    code, out, _ = run(["--help"], capsys)
    assert code in (0, None) and all(name in out for name in everything)


def test_only_the_console_script_freezes_the_collector(tmp_path):
    """`segcp` (the console script, and `python -m segcp`) ends with gc.freeze(), skipping the interpreter's
    final collections; main() — what tests and embedding code call — never freezes."""
    import gc

    from segcp.cli import main

    before = gc.get_freeze_count()
    with pytest.raises(SystemExit):
        main(["--version"])
    assert gc.get_freeze_count() == before
    code = "import gc, sys\nfrom segcp.cli import console\ntry:\n    console()\nexcept SystemExit:\n    pass\nprint(gc.get_freeze_count() > 0)\n"
    r = subprocess.run([sys.executable, "-c", code, "--version"], capture_output=True, text=True, check=True)
    assert r.stdout.split()[-1] == "True"


def _commands():
    """The typer app's click group (every command, as the user meets it)."""
    import typer.main

    from segcp.cli import app

    return typer.main.get_command(app).commands


def test_a_mistyped_option_gets_clicks_error_with_suggestions(tmp_path, capsys):
    data = _npy_dir(tmp_path / "d")
    base = ["calibrate", "--data", str(data), "--out", str(tmp_path / "c.json")]

    def error(argv):
        code, _, err = run(argv, capsys)
        assert code == 2 and err.count("\n") == 1 and err.startswith("segcp: error: ") and "Traceback" not in err, err
        return err

    err = error(["calibrate", "--data", str(data), "--alpah", "0.2"])  # before the missing --out, as click reports it
    assert "No such option: --alpah" in err and "--alpha" in err and "its options" not in err
    err = error([*base, "--method", "rwcp", "--kernal-beta", "50"])  # the chosen method's flags are suggested
    assert "No such option: --kernal-beta" in err and "--kernel-beta" in err
    err = error([*base, "--method", "morph", "--normalise", "max"])  # ...and only the chosen method's
    assert "No such option: --normalise" in err and "--normalize" not in err
    err = error([*base, "--method", "consign", "--k", "3"])  # another method's flag says whose it is
    assert "--k: not an option of --method consign (an option of --method rwcp)" in err and "did you mean --K?" in err
    err = error(["compare", "--data", str(data), "--out", str(tmp_path / "r"), "--n-call", "3"])  # every command alike
    assert "No such option: --n-call" in err and "--n-cal" in err
    assert "Got unexpected extra argument (stray)" in error([*base, "stray"])
    assert "Option '--se' requires an argument." in error([*base, "--method", "morph", "--se"])
    # the method's own flags keep working, in both spellings
    for flag in (["--se", "square"], ["--se=square"]):
        ok([*base, "--method", "morph", *flag, "--alpha", "0.2", "-q"], capsys)
        assert json.loads((tmp_path / "c.json").read_text())["params"]["se"] == "square"


#: Every closed choice of every command and the one place its values come from.
def _closed_choices() -> dict[tuple[str, str], tuple[str, ...]]:
    from segcp.calibration.compact import CURVE_FORMS
    from segcp.calibration.ltt import PVALUES
    from segcp.engine.splits import PARTS
    from segcp.harness.datasets.tasks import available_tasks
    from segcp.harness.models.options import LOSSES, PRESETS
    from segcp.losses import controlled_losses
    from segcp.methods import GUARANTEES, available_methods
    from segcp.specs import CRITERIA

    return {
        ("calibrate", "--method"): tuple(available_methods()),
        ("calibrate", "--guarantee"): tuple(GUARANTEES),
        ("calibrate", "--curves"): tuple(CURVE_FORMS),
        ("calibrate", "--loss"): tuple(controlled_losses()),
        ("calibrate", "--pvalue"): tuple(PVALUES),
        ("tune", "--method"): tuple(available_methods()),
        ("tune", "--criterion"): tuple(CRITERIA),
        ("train", "--task"): tuple(available_tasks()),
        ("train", "--preset"): tuple(PRESETS),
        ("train", "--loss"): tuple(LOSSES),
        ("infer", "--task"): tuple(available_tasks()),
        ("infer", "--split"): tuple(PARTS),
    }


def test_every_closed_choice_lists_its_values_in_help_and_error(tmp_path, capsys):
    from segcp.cli import _choice_of

    expected = _closed_choices()
    found = {
        (name, next(o for o in p.opts if o.startswith("--"))): _choice_of(p).values()
        for name, cmd in _commands().items()
        for p in cmd.params
        if _choice_of(p)
    }
    assert found == expected  # a new closed choice is a Choice, with its source here
    required = {"calibrate": ["--out", "x.json"], "tune": ["-g", "k=1"], "train": ["--out", "m.pt"], "infer": ["--model", "m.pt", "--out", "o"]}
    for (command, option), values in expected.items():
        assert f"{option} <{'|'.join(values)}>" in help_text(command, capsys)
        code, _, err = run([command, *required[command], option, "bogus"], capsys)
        assert code == 2 and err.count("\n") == 1, err
        assert f"Invalid value for '{option}'" in err and f"'bogus' is not one of {', '.join(map(repr, values))}." in err
    # the families' closed choices too: in the help of the command that takes them, and in the error
    calibrate_help = help_text("calibrate", capsys)
    assert "--se cross|square|ball" in calibrate_help and "--normalize none|max|slice|component" in calibrate_help
    code, _, err = run(["calibrate", *required["calibrate"], "--method", "morph", "--se", "disk"], capsys)
    assert code == 2 and "Invalid value for '--se': 'disk' is not one of 'cross', 'square', 'ball'." in err


def _listed_options(text: str) -> list[str]:
    """The options a help text lists: every --name at the start of an entry."""
    import re

    return re.findall(r"^ +(?:-\w, )?(--[\w-]+)", text, flags=re.MULTILINE)


def test_no_command_lists_an_option_twice_and_each_lists_what_acts(capsys):
    from segcp.cli import method_flags

    for command in _commands():
        listed = _listed_options(help_text(command, capsys))
        assert len(listed) == len(set(listed)), (command, sorted(o for o in listed if listed.count(o) > 1))
    text = help_text("calibrate", capsys)
    listed = _listed_options(text)
    assert set(method_flags()) <= set(listed)  # each method's flag once, grouped by method
    assert "  aps, consign:\n    --beta " in text and "  rwcp, threshold:\n    --normalize " in text
    assert text.count("agreement level") == 1 and "kernel scale" in text  # one meaning per flag
    alpha = text[text.index("--alpha") : text.index("-m, --method")]
    assert "default" in alpha and "0.1" in alpha  # the default the code applies is shown
    # options a command accepts (one set of data options for the three commands) but never reads
    assert "--masks" not in _listed_options(help_text("predict", capsys))
    for command in ("predict", "evaluate", "compare", "tune"):
        assert "--dataset-json" not in _listed_options(help_text(command, capsys)), command


def _option_types() -> dict[str, dict[str, type]]:
    """Option name → {command: its value type (list[T] and T | None as T)} over every visible option."""
    import typing

    out: dict[str, dict[str, type]] = {}
    for name, command in _commands().items():
        hints = typing.get_type_hints(command.callback, include_extras=True)
        for param in command.params:
            if param.hidden or param.name not in hints:
                continue
            kind = typing.get_args(hints[param.name])[0]
            while typing.get_args(kind):
                kind = next(a for a in typing.get_args(kind) if a is not type(None))
            for flag in param.opts:
                out.setdefault(flag, {})[name] = kind
    return out


def test_one_meaning_per_option_name(tmp_path, capsys):
    from segcp.cli import method_flags

    types = _option_types()
    for flag, per_command in types.items():
        assert len(set(per_command.values())) == 1, (flag, per_command)
    assert set(types["--samples"].values()) == {Path} and "infer" not in types["--samples"]  # a folder, never a count
    assert types["--n-samples"] == {"infer": int}
    for flag in method_flags():  # a family's flag is nobody else's option (train's step count: --train-steps)
        assert flag not in types, (flag, types.get(flag))
    # the old spellings still work where scripts may use them, with one warning line
    for argv, old in (
        (["infer", "--model", "m.pt", "--task", "busi", "--split", "test", "--out", str(tmp_path / "o")], "--samples"),
        (["train", "--task", "busi", "--out", str(tmp_path / "m.pt")], "--steps"),
    ):
        code, _, err = run([*argv, old, "3", {"--samples": "--n-samples", "--steps": "--train-steps"}[old], "3"], capsys)
        assert code == 2 and f"segcp: warning: {old} is deprecated" in err and "say the same thing" in err, err


def test_infer_takes_the_old_samples_spelling(tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch")
    import segcp.harness.models.infer as infer

    seen = {}

    def fake(models, out, **kwargs):
        seen.update(kwargs)
        return {"ids": [], "dice": None}

    monkeypatch.setattr(infer, "infer_to_dir", fake)
    code, _, err = run(
        ["infer", "--model", str(tmp_path / "m.pt"), "--data", str(tmp_path), "--samples", "7", "--out", str(tmp_path / "o"), "-q"], capsys
    )
    assert code in (0, None) and err == "segcp: warning: --samples is deprecated; use --n-samples N\n", err
    assert seen["samples"] == 7


def test_options_convert_as_typer_does(capsys):
    """segcp converts its plain options itself (cli._PlainValue, no pydantic): every option of every
    command gives the value typer's own conversion gives, and both refuse the same bad values."""
    import typer.main
    from typer._coercion import build_runtime_param

    from segcp.cli import SegcpGroup, _PlainValue, app

    group = typer.main.get_command(app)
    assert isinstance(group, SegcpGroup)
    samples = {
        str: ["abc", "a b"],
        int: ["3", "0", "1.0", "-2", "x", "1.5", "1_000"],
        float: ["0.25", "1e-3", "-1", "inf", "x"],
        Path: ["a/b", "c.json"],
        bool: [True, False],
    }
    checked = 0
    for name, command in group.commands.items():
        ctx = command.make_context(name, [], resilient_parsing=True)
        for param in command.get_params(ctx):
            param._runtime_param = None
            _PlainValue.install(param)
            ours = param._runtime_param
            assert isinstance(ours, _PlainValue), (name, param.name)  # every option of segcp's is a plain one
            theirs = build_runtime_param(param.type_descriptor)
            kind = ours.kind
            values = samples[kind] if ours.parser is None else [*ours.parser.values(), "bogus"]
            if ours.parser is not None and param.default is not None:  # taken unparsed: it must be a value
                assert param.default in ours.parser.values(), (name, param.name, param.default)
            for v in values:
                v = [v, v] if ours.multiple else v
                results = []
                for conv in (ours, theirs):
                    try:
                        results.append(("ok", conv.coerce(v, param=param, ctx=ctx)))
                    except Exception as exc:  # both must refuse, with a click error
                        assert hasattr(exc, "format_message"), exc
                        results.append(("refused", None))
                assert results[0] == results[1], (name, param.name, v, results)
                checked += 1
            param._runtime_param = None
    assert checked > 300
