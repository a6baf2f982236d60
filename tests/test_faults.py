"""Bad input and faults, class by class (docs/reliability.md): the reproductions of issue 15.

Every failing command must end with exit status 2, exactly one ``segcp: error:`` line on
stderr, no traceback, and leave every file of the workspace byte-identical (no partial or
stray output, inputs untouched).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from segcp.cli import main


# ---------------------------------------------------------------------------- helpers
def snapshot(root: Path) -> dict[str, tuple[str, str]]:
    """Every entry under ``root``: (kind, content hash) — to prove nothing changed."""
    out: dict[str, tuple[str, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", "")
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
            else:
                out[rel] = ("other", str(st.st_mode))
    return out


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in argv])
    out = capsys.readouterr()
    code = exc.value.code
    return (0 if code is None else int(code)), out.out, out.err


def fails(argv: list[str], capsys, root: Path, fragment: str = "") -> str:
    """Run ``argv``; assert the failure contract; return the error line."""
    before = snapshot(root)
    code, _, err = run(argv, capsys)
    assert code == 2, (code, err)
    assert err.count("\n") == 1 and err.startswith("segcp: error: "), err
    assert "Traceback" not in err and "\x1b" not in err
    assert fragment in err, err
    assert snapshot(root) == before, "a failed command changed the workspace"
    return err


def ok(argv: list[str], capsys) -> str:
    code, out, err = run(argv, capsys)
    assert code == 0, err
    return out


def make_data(root: Path, n: int = 5, shape=(8, 8), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for sub in ("probs", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(n):
        mask = rng.random(shape) < 0.4
        mask[0, 0] = True
        np.save(root / "probs" / f"{i}.npy", np.clip(mask * 0.6 + 0.4 * rng.random(shape), 0, 1))
        np.save(root / "masks" / f"{i}.npy", mask.astype(np.uint8))
    return root


@pytest.fixture()
def ws(tmp_path: Path, capsys):
    """The issue's workspace: d/ (5 random 8 × 8 probs/masks) and c.json (alpha 0.25)."""
    d = make_data(tmp_path / "d")
    ok(["calibrate", "--alpha", "0.25", "--data", d, "--out", tmp_path / "c.json", "-q"], capsys)
    return tmp_path


# ---------------------------------------------------------------------------- 1. inputs overwritten
@pytest.mark.parametrize("target", ["d/probs", "d/masks", "d", "c.json"])
def test_predict_never_writes_over_its_inputs(ws, capsys, target):
    fails(["predict", "--calib", ws / "c.json", "--data", ws / "d", "--out", ws / target, "--overwrite"], capsys, ws, "input")


@pytest.mark.parametrize("target", ["d/probs/0.npy", "d/masks/new.json", "d/probs"])
def test_calibrate_never_writes_into_its_inputs(ws, capsys, target):
    fails(["calibrate", "--alpha", "0.25", "--data", ws / "d", "--out", ws / target], capsys, ws)


def test_output_that_is_a_device_fifo_or_link_is_refused(ws, capsys):
    os.mkfifo(ws / "fifo")
    fails(["calibrate", "--alpha", "0.25", "--data", ws / "d", "--out", ws / "fifo"], capsys, ws, "not a regular file")
    (ws / "real.json").write_text("{}")
    (ws / "link.json").symlink_to(ws / "real.json")
    fails(["calibrate", "--alpha", "0.25", "--data", ws / "d", "--out", ws / "link.json"], capsys, ws, "symbolic link")
    fails(["calibrate", "--alpha", "0.25", "--data", ws / "d", "--out", "/dev/null"], capsys, ws, "not a regular file")


def test_inputs_that_are_not_regular_files_are_named_for_what_they_are(ws, capsys):
    """A --calib that is a FIFO, a link to /dev/zero, a link loop or a link to nothing, and a data
    file behind a link loop: each one line saying what it is (it was "no such file", or for a
    link loop in probs/ the folder was blamed); a FIFO is never opened (it would block)."""
    base = ["predict", "--data", ws / "d", "--out", ws / "s"]
    os.mkfifo(ws / "fifo.json")
    fails([*base, "--calib", ws / "fifo.json"], capsys, ws, "fifo.json: not a regular file (a FIFO, socket or device)")
    (ws / "zero.json").symlink_to("/dev/zero")
    fails([*base, "--calib", ws / "zero.json"], capsys, ws, "zero.json: not a regular file")
    (ws / "loop.json").symlink_to(ws / "loop.json")
    fails([*base, "--calib", ws / "loop.json"], capsys, ws, "loop.json: a symbolic link loop")
    (ws / "gone.json").symlink_to(ws / "nothing.json")
    fails([*base, "--calib", ws / "gone.json"], capsys, ws, "gone.json: a symbolic link to a missing file")
    fails([*base, "--calib", ws / "d"], capsys, ws, "is a directory")
    (ws / "d" / "probs" / "9.npy").symlink_to(ws / "d" / "probs" / "9.npy")
    fails(["calibrate", "--alpha", "0.25", "--data", ws / "d", "--out", ws / "new.json"], capsys, ws, "9.npy: a symbolic link loop")


# ---------------------------------------------------------------------------- 2. output problems
def test_output_path_problems_are_one_line(ws, capsys):
    base = ["calibrate", "--alpha", "0.25", "--data", ws / "d", "--out"]
    (ws / "adir").mkdir()
    fails(base + [ws / "adir"], capsys, ws, "is a directory")
    (ws / "afile").write_text("x")
    fails(base + [ws / "afile" / "c.json"], capsys, ws, "not a directory")
    fails(base + [""], capsys, ws, "empty path")
    fails(["predict", "--calib", ws / "c.json", "--data", ws / "d", "--out", "."], capsys, ws)
    fails(["predict", "--calib", ws / "c.json", "--data", ws / "d", "--out", ""], capsys, ws)


def test_a_long_output_name_works(ws, capsys):
    name = "x" * 245 + ".json"  # 250 characters: the temporary name must not push it over the limit
    ok(["calibrate", "--alpha", "0.25", "--data", ws / "d", "--out", ws / name, "-q"], capsys)
    assert (ws / name).is_file() and not [p for p in ws.iterdir() if p.name.startswith(".")]
    fails(["calibrate", "--alpha", "0.25", "--data", ws / "d", "--out", ws / ("y" * 300 + ".json")], capsys, ws, "File name too long")


def test_os_errors_while_writing_or_listing_are_one_line(ws, capsys, monkeypatch):
    import segcp.io.writers as writers

    def denied(*a, **k):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(writers.os, "replace", denied)
    fails(["calibrate", "--alpha", "0.25", "--data", ws / "d", "--out", ws / "new.json"], capsys, ws, "Permission denied")
    monkeypatch.undo()
    import segcp.io.datadir as datadir

    real_scandir = os.scandir

    def scandir(path):
        if Path(path).name == "probs":
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(datadir.os, "scandir", scandir)
    fails(["calibrate", "--alpha", "0.25", "--data", ws / "d", "--out", ws / "new.json"], capsys, ws, "cannot list")


# ---------------------------------------------------------------------------- 3. partial output
def test_a_failed_write_leaves_no_folders_it_made(ws, capsys):
    """`predict --out a/b/c/sets` that fails half-way (a corrupt file after the first sets) removes
    the temporary folder and the folders a/, a/b/, a/b/c/ it made for the output (issue 23)."""
    (ws / "d" / "probs" / "4.npy").write_bytes(b"not an array")
    fails(["predict", "--calib", ws / "c.json", "--data", ws / "d", "--out", ws / "a" / "b" / "c" / "sets"], capsys, ws, "4.npy")
    (ws / "keep").mkdir()  # an existing ancestor stays: only what the command made goes
    fails(["predict", "--calib", ws / "c.json", "--data", ws / "d", "--out", ws / "keep" / "x" / "sets"], capsys, ws, "4.npy")
    assert (ws / "keep").is_dir()


def test_predict_replaces_a_folder_whole_or_refuses(ws, capsys):
    """A non-empty --out is refused without --overwrite; with it, only a previous predict output (its
    manifest) is replaced — whole, never merged. A folder predict did not write (here a copy of the
    data) is refused even with --overwrite (issue 23: it was deleted)."""
    s = ws / "s"
    (s / "100.npy").mkdir(parents=True)  # a folder in the way, as in the issue
    np.save(s / "other.npy", np.zeros((8, 8), bool))
    predict = ["predict", "--calib", ws / "c.json", "--data", ws / "d", "--out", s]
    fails(predict, capsys, ws, "--overwrite")
    fails([*predict, "--overwrite"], capsys, ws, "s: not a folder that segcp predict wrote (no .segcp-predict.json)")
    (s / ".segcp-predict.json").write_text("{}")  # what a previous predict leaves beside its sets
    ok([*predict, "--overwrite", "-q"], capsys)
    assert sorted(p.name for p in s.iterdir()) == [".segcp-predict.json"] + [f"{i}.npy" for i in range(5)]  # replaced, never merged
    assert not [p for p in ws.iterdir() if p.name.startswith(".")]
    shutil.copytree(ws / "d", ws / "copy")
    fails(
        ["predict", "--calib", ws / "c.json", "--data", ws / "d", "--out", ws / "copy", "--overwrite"],
        capsys,
        ws,
        "not a folder that segcp predict wrote",
    )


def test_compare_refuses_a_report_folder_it_cannot_fill(ws, capsys):
    (ws / "rep" / "report.md").mkdir(parents=True)
    fails(["compare", "--data", ws / "d", "--out", ws / "rep", "--n-cal", "3", "--splits", "2", "--alpha", "0.25"], capsys, ws, "report.md")


# ---------------------------------------------------------------------------- 4. calib.json is data
def _record(ws: Path) -> dict:
    return json.loads((ws / "c.json").read_text())


BAD_RECORDS = {
    "lambda NaN": ("lambda", float("nan"), "finite"),
    "lambda Infinity": ("lambda", float("inf"), "finite"),
    "lambda -5": ("lambda", -5, "outside the range"),
    "lambda 1e300": ("lambda", 1e300, "outside the range"),
    "lambda string": ("lambda", "nan", "must be a number"),
    "lambda true": ("lambda", True, "must be a number"),
    "lambda 400 digits": ("lambda", int("9" * 400), "too large"),
    "method list": ("method", ["threshold"], "method name"),
    "newer segcp": ("segcp_version", "99.0.0", "newer"),
    "newer schema": ("schema_version", 3, "newer"),
    "n negative": ("n", -3, "positive integer"),
    "channels string": ("probs_channels", "false", "true or false"),
    "unknown param": ("params", {"k": 3}, "unknown parameter"),
    "alpha out of range": ("alpha", 1.5, "(0, 1)"),
    "ndim 4": ("ndim", 4, "field 'ndim'"),
    "ndim of another grid": ("ndim", 3, "0.npy: a 2-D image, but the calibration was made on 3-D images"),
}


@pytest.mark.parametrize("case", sorted(BAD_RECORDS))
def test_calib_json_is_validated(ws, capsys, case):
    key, value, fragment = BAD_RECORDS[case]
    rec = _record(ws)
    rec[key] = value
    (ws / "bad.json").write_text(json.dumps(rec))
    fails(["predict", "--calib", ws / "bad.json", "--data", ws / "d", "--out", ws / "s"], capsys, ws, fragment)


def test_calib_json_structure_limits(ws, capsys):
    (ws / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    fails(["predict", "--calib", ws / "deep.json", "--data", ws / "d", "--out", ws / "s"], capsys, ws, "nested")
    (ws / "deep2.json").write_text('{"a": ' + "[" * 40 + "]" * 40 + "}")
    fails(["predict", "--calib", ws / "deep2.json", "--data", ws / "d", "--out", ws / "s"], capsys, ws, "nested")


def test_consign_scores_are_validated(tmp_path, capsys):
    rec = {"method": "consign", "params": {"K": 2, "beta": 0.8, "box_alpha": 0.2}, "alpha": 0.2, "lambda": 0.5, "n": 2, "scores": ["abc", 0.1]}
    (tmp_path / "c.json").write_text(json.dumps(rec))
    make_data(tmp_path / "d")
    fails(["predict", "--calib", tmp_path / "c.json", "--data", tmp_path / "d", "--out", tmp_path / "s"], capsys, tmp_path, "scores")


def test_run_time_paths_never_come_from_a_calib_file(ws, capsys, tmp_path):
    rec = {"method": "rwcp", "params": {"encoder": str(tmp_path / "ckpt"), "cache_dir": str(tmp_path / "evil")}, "alpha": 0.25, "lambda": 0.5, "n": 5}
    (tmp_path / "ckpt").mkdir()
    (ws / "r.json").write_text(json.dumps(rec))
    fails(["predict", "--calib", ws / "r.json", "--data", ws / "d", "--out", ws / "s"], capsys, ws, "never chooses paths")
    assert not (tmp_path / "evil").exists()


# ---------------------------------------------------------------------------- 5. silent nonsense
def test_an_absent_structure_is_an_error(tmp_path, capsys):
    d = make_data(tmp_path / "d")
    err = fails(
        ["calibrate", "--alpha", "0.25", "--label", "3", "--data", d, "--out", tmp_path / "c.json"], capsys, tmp_path, "no mask holds label 3"
    )
    assert "labels present: 0, 1" in err


def test_compare_alpha_zero_and_bad_values(ws, capsys):
    fails(["compare", "--data", ws / "d", "--out", ws / "rep", "--alpha", "0", "--n-cal", "3", "--splits", "2"], capsys, ws, "alpha")
    np.save(ws / "d" / "probs" / "0.npy", np.zeros((8, 8), dtype="timedelta64[s]"))
    fails(["calibrate", "--alpha", "0.25", "--data", ws / "d", "--out", ws / "x.json"], capsys, ws, "numeric")


def test_parameter_values_are_checked(tmp_path, capsys):
    d = make_data(tmp_path / "d")
    (d / "images").mkdir()
    for f in (d / "probs").iterdir():
        np.save(d / "images" / f.name, np.load(f))
    base = ["calibrate", "--method", "rwcp", "--encoder", "fallback", "--alpha", "0.25", "--data", d, "--out", tmp_path / "c.json"]
    fails(base + ["-p", "center=maybe"], capsys, tmp_path, "center must be true or false")
    fails(base + ["--steps", "100000000"], capsys, tmp_path, "steps must be in [0, 1000]")
    fails(base[:3] + ["--encoder", "nope"] + base[5:], capsys, tmp_path, "encoder 'nope'")


# ---------------------------------------------------------------------------- 6. more tracebacks
def test_npz_renamed_npy(ws, capsys):
    np.savez(ws / "z.npz", a=np.zeros((8, 8)))
    (ws / "z.npz").replace(ws / "d" / "probs" / "0.npy")
    fails(["calibrate", "--alpha", "0.25", "--data", ws / "d", "--out", ws / "x.json"], capsys, ws, ".npz archive")


def test_npz_renamed_npy_in_sets(ws, capsys):
    ok(["predict", "--calib", ws / "c.json", "--data", ws / "d", "--out", ws / "s", "-q"], capsys)
    np.savez(ws / "z.npz", a=np.zeros((8, 8)))
    (ws / "z.npz").replace(ws / "s" / "0.npy")
    fails(["evaluate", "--sets", ws / "s", "--data", ws / "d", "--out", ws / "m.json"], capsys, ws, ".npz archive")


@pytest.mark.parametrize("spec, fragment", [("morph:tau=abc", "tau"), ("morph:se=cross,folds=abc", "folds"), ("morph:se=disk", "se")])
def test_bad_compare_specs(ws, capsys, spec, fragment):
    fails(["compare", "--data", ws / "d", "--out", ws / "rep", "-m", spec, "--n-cal", "3", "--splits", "2", "--alpha", "0.25"], capsys, ws, fragment)


@pytest.mark.parametrize("extra, fragment", [(["--folds", "1"], "folds"), (["--folds", "0"], "folds"), (["-p", "tau=abc"], "tau")])
def test_bad_tune_options(ws, capsys, extra, fragment):
    fails(["tune", "--data", ws / "d", "-m", "morph", "-g", "se=cross|square", "--alpha", "0.25", *extra], capsys, ws, fragment)


# ---------------------------------------------------------------------------- 7. error format
def test_option_errors_are_one_line(ws, capsys):
    fails(["calibrate", "--data", ws / "d", "--out", ws / "x.json", "--alpha", "abc"], capsys, ws, "--alpha")
    fails(["calibrate", "--data", ws / "d"], capsys, ws, "--out")
    fails(["predict", "--nope"], capsys, ws)


@pytest.mark.parametrize(
    "extra, fragment",
    [
        (["--alpah", "0.2"], "No such option: --alpah"),  # a typo: click's error and its suggestions, never a method's option list
        (["--method", "threshold", "--K", "2"], "--K: not an option of --method threshold (an option of --method consign)"),
        (["--method", "morph", "--se", "disk"], "Invalid value for '--se': 'disk' is not one of 'cross', 'square', 'ball'."),
        (["--curves", "fast"], "Invalid value for '--curves': 'fast' is not one of 'auto', 'exact', 'compact'."),
        (["--method", "morph", "--se"], "Option '--se' requires an argument."),
        (["stray"], "Got unexpected extra argument (stray)"),
    ],
)
def test_option_typos_and_bad_choices_are_one_line(ws, capsys, extra, fragment):
    fails(["calibrate", "--data", ws / "d", "--out", ws / "x.json", *extra], capsys, ws, fragment)


@pytest.mark.parametrize("shape", [(), (8,), (2, 2, 8, 8)])
def test_wrong_dimensions_name_the_file(ws, capsys, shape):
    np.save(ws / "d" / "probs" / "0.npy", np.full(shape, 0.5))
    fails(["calibrate", "--alpha", "0.25", "--data", ws / "d", "--out", ws / "x.json"], capsys, ws, "probs/0.npy")


def test_nifti_spacing_must_be_positive_and_finite(tmp_path, capsys):
    d = tmp_path / "d"
    for sub in ("probs", "masks"):
        (d / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        mask = (rng.random((6, 6)) < 0.5).astype(np.uint8)
        nib.save(nib.Nifti1Image(rng.random((6, 6)).astype(np.float32), np.eye(4)), str(d / "probs" / f"{i}.nii.gz"))
        nib.save(nib.Nifti1Image(mask, np.eye(4)), str(d / "masks" / f"{i}.nii.gz"))
    for bad in (0.0, -1.0, float("nan")):
        img = nib.Nifti1Image(np.zeros((6, 6), np.uint8), np.eye(4))
        img.header["pixdim"][1] = bad
        nib.save(img, str(d / "masks" / "0.nii.gz"))
        fails(["calibrate", "--alpha", "0.34", "--data", d, "--out", tmp_path / "c.json"], capsys, tmp_path, "masks/0.nii.gz: voxel spacing")


def test_a_non_finite_affine_is_refused_not_written_into_the_sets(tmp_path, capsys):
    """A NaN in a NIfTI's sform (its affine): one line naming the file, at calibrate and predict
    (it was written into the sets, which then overlay nothing)."""
    d = tmp_path / "d"
    for sub in ("probs", "masks"):
        (d / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        mask = (rng.random((6, 6, 3)) < 0.5).astype(np.uint8)
        nib.save(nib.Nifti1Image(rng.random((6, 6, 3)).astype(np.float32), np.eye(4)), str(d / "probs" / f"{i}.nii.gz"))
        nib.save(nib.Nifti1Image(mask, np.eye(4)), str(d / "masks" / f"{i}.nii.gz"))
    ok(["calibrate", "--alpha", "0.34", "--data", d, "--out", tmp_path / "c.json", "-q"], capsys)
    affine = np.eye(4)
    affine[0, 3] = np.nan
    img = nib.Nifti1Image(rng.random((6, 6, 3)).astype(np.float32), affine)
    img.set_qform(None, code=0)
    nib.save(img, str(d / "probs" / "3.nii.gz"))
    fails(
        ["predict", "--calib", tmp_path / "c.json", "--data", d, "--out", tmp_path / "s"],
        capsys,
        tmp_path,
        "probs/3.nii.gz: its voxel-to-world matrix",
    )
    fails(["calibrate", "--alpha", "0.34", "--data", d, "--out", tmp_path / "c2.json"], capsys, tmp_path, "probs/3.nii.gz: its voxel-to-world matrix")


def test_an_nnunet_npz_and_its_nifti_companion_must_share_a_grid(tmp_path, capsys):
    """nnU-Net's <case>.npz takes its geometry from the <case>.nii.gz beside it: a companion of
    another shape (another case or resolution) is refused in one line, at calibrate and predict."""
    d = tmp_path / "d"
    for sub in ("probs", "masks"):
        (d / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        mask = (rng.random((6, 5, 4)) < 0.5).astype(np.uint8)
        p = rng.random((6, 5, 4))
        np.savez(d / "probs" / f"{i}.npz", probabilities=np.stack([1 - p, p]).transpose(0, 3, 2, 1).astype(np.float32))
        nib.save(nib.Nifti1Image(mask, np.eye(4)), str(d / "probs" / f"{i}.nii.gz"))
        nib.save(nib.Nifti1Image(mask, np.eye(4)), str(d / "masks" / f"{i}.nii.gz"))
    ok(["calibrate", "--alpha", "0.34", "--label", "1", "--data", d, "--out", tmp_path / "c.json", "-q"], capsys)
    nib.save(nib.Nifti1Image(np.zeros((12, 10, 8), np.uint8), np.eye(4)), str(d / "probs" / "2.nii.gz"))
    fails(
        ["predict", "--calib", tmp_path / "c.json", "--data", d, "--out", tmp_path / "s"], capsys, tmp_path, "probs/2.nii.gz: its grid is (12, 10, 8)"
    )
    fails(
        ["calibrate", "--alpha", "0.34", "--label", "1", "--data", d, "--out", tmp_path / "c2.json"], capsys, tmp_path, "probs/2.nii.gz: its grid is"
    )


def test_huge_png_header_gives_one_line_and_no_warnings(ws, capsys):
    Image.new("L", (1, 1)).save(ws / "tiny.png")
    raw = bytearray((ws / "tiny.png").read_bytes())
    raw[16:24] = (10000).to_bytes(4, "big") * 2  # IHDR width and height claim 10000 × 10000
    (ws / "d" / "probs" / "0.npy").unlink()
    (ws / "d" / "probs" / "0.png").write_bytes(bytes(raw))
    (ws / "tiny.png").unlink()
    err = fails(["calibrate", "--alpha", "0.25", "--data", ws / "d", "--out", ws / "x.json"], capsys, ws, "0.png")
    assert "Warning" not in err


def test_control_characters_in_file_names_are_escaped(tmp_path, capsys):
    d = make_data(tmp_path / "d")
    for sub in ("probs", "masks"):
        (d / sub / "0.npy").rename(d / sub / "\x1b[31mred.npy")
    np.save(d / "probs" / "\x1b[31mred.npy", np.full((8, 8), np.nan))
    err = fails(["calibrate", "--alpha", "0.25", "--data", d, "--out", tmp_path / "c.json"], capsys, tmp_path, "NaN")
    assert "\\x1b[31mred" in err


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.uint8])
def test_an_empty_mask_array_is_one_line(ws, capsys, dtype):
    """A zero-size mask (found by the fuzz suite: min() of an empty float array) is a shape error."""
    np.save(ws / "d" / "masks" / "0.npy", np.zeros((0,), dtype=dtype))
    fails(["calibrate", "--alpha", "0.25", "--data", ws / "d", "--out", ws / "x.json"], capsys, ws, "0.npy")


# ---------------------------------------------------------------------------- 8. issue 23: extreme options, accepted nonsense, silent mixtures
def test_tune_refuses_more_folds_than_groups(ws, capsys):
    """`tune --folds 1000` on 5 images printed a "1000-fold CV" (run with one fold per image)."""
    fails(
        ["tune", "--data", ws / "d", "-m", "morph", "-g", "se=cross|square", "--alpha", "0.25", "--folds", "1000"],
        capsys,
        ws,
        "--folds 1000: more folds than the 5 groups (patients) of the calibration set; give at most 5",
    )


@pytest.mark.parametrize("command", ["compare", "tune"])
def test_a_negative_seed_is_one_line(ws, capsys, command):
    """`compare --seed -1` (and tune) ended in numpy's ValueError traceback."""
    extra = ["--out", ws / "rep", "--n-cal", "3", "--splits", "2"] if command == "compare" else ["-m", "morph", "-g", "se=cross|square"]
    fails([command, "--data", ws / "d", "--alpha", "0.25", "--seed", "-1", *extra], capsys, ws, "--seed")


def test_all_empty_calibration_masks_are_refused_unless_asked_for(tmp_path, capsys):
    """Every mask empty gave λ̂ = 0 with "risk 0" (the FNR is undefined on empty truths), exit 0: refused
    (calibrate, compare) unless --allow-empty-masks."""
    d = make_data(tmp_path / "d")
    for f in (d / "masks").iterdir():
        np.save(f, np.zeros((8, 8), np.uint8))
    base = ["calibrate", "--alpha", "0.25", "--data", d, "--out", tmp_path / "c.json"]
    fails(base, capsys, tmp_path, "masks: every mask is empty: the FNR is undefined on empty truths")
    fails(
        ["compare", "--data", d, "--out", tmp_path / "rep", "--n-cal", "3", "--splits", "2", "--alpha", "0.25"],
        capsys,
        tmp_path,
        "every mask is empty",
    )
    ok([*base, "--allow-empty-masks", "-q"], capsys)
    assert json.loads((tmp_path / "c.json").read_text())["empirical_risk"] == 0  # what it was refused for, asked for by name


def test_mixed_dimensionality_is_refused_and_the_calibration_keeps_its_own(tmp_path, capsys):
    """Five volumes and one 2-D slice calibrated as n = 6, and a 3-D calibration predicted on 2-D files:
    a folder holds one dimensionality, and the record's ``ndim`` is checked by predict and evaluate."""
    vols = make_data(tmp_path / "vols", shape=(4, 8, 8))
    ok(["calibrate", "--alpha", "0.25", "--data", vols, "--out", tmp_path / "c3.json", "-q"], capsys)
    assert json.loads((tmp_path / "c3.json").read_text())["ndim"] == 3
    cache = ["--cache", tmp_path / "cache"]  # filled before the odd file comes: its curves would be read from it
    ok(["compare", "--data", vols, "--n-cal", "3", "--splits", "2", "--alpha", "0.25", "--out", tmp_path / "cmp0", "-q", *cache], capsys)
    slices = make_data(tmp_path / "slices", seed=1)
    shutil.copy(slices / "probs" / "0.npy", vols / "probs" / "9.npy")
    shutil.copy(slices / "masks" / "0.npy", vols / "masks" / "9.npy")
    fails(
        ["calibrate", "--alpha", "0.25", "--data", vols, "--out", tmp_path / "mix.json"],
        capsys,
        tmp_path,
        "9.npy: a 2-D image among 5 3-D ones; a calibration set holds images of one dimensionality",
    )
    mixed = "9.npy: a 2-D image among 5 3-D ones"  # the engine's commands too, though their cache would not read the files
    for argv in (
        ["compare", "--data", vols, "--n-cal", "3", "--splits", "2", "--alpha", "0.25", "--out", tmp_path / "cmp", *cache],
        [
            "tune",
            "--data",
            vols,
            "-m",
            "threshold",
            "--grid",
            "normalize=none|max",
            "--folds",
            "2",
            "--alpha",
            "0.25",
            "--out",
            tmp_path / "t.json",
            *cache,
        ],
    ):
        fails(argv, capsys, tmp_path, mixed)
    other = "0.npy: a 2-D image, but the calibration was made on 3-D images"
    fails(["predict", "--calib", tmp_path / "c3.json", "--data", slices, "--out", tmp_path / "s"], capsys, tmp_path, other)
    fails(["predict", "--calib", tmp_path / "c3.json", "--data", slices, "--out", tmp_path / "a" / "s", "--resume"], capsys, tmp_path, other)
    fails(["evaluate", "--calib", tmp_path / "c3.json", "--data", slices, "--out", tmp_path / "m.json"], capsys, tmp_path, other)


def test_a_failed_resume_leaves_no_hollow_folder(ws, capsys):
    """A `predict --resume` that failed before its first set left its manifest (and the folders made for
    it) and no sets; now nothing. Sets finished before a failure stay (what --resume is for)."""
    (ws / "d" / "probs" / "0.npy").write_bytes(b"not an array")
    fails(["predict", "--calib", ws / "c.json", "--data", ws / "d", "--out", ws / "a" / "b" / "sets", "--resume"], capsys, ws, "0.npy")
    (ws / "empty").mkdir()
    fails(["predict", "--calib", ws / "c.json", "--data", ws / "d", "--out", ws / "empty", "--resume"], capsys, ws, "0.npy")
    (ws / "d" / "probs" / "3.npy").write_bytes(b"not an array")
    (ws / "d" / "probs" / "0.npy").unlink()
    (ws / "d" / "masks" / "0.npy").unlink()
    code, _, err = run(["predict", "--calib", ws / "c.json", "--data", ws / "d", "--out", ws / "part", "--resume"], capsys)
    assert code == 2 and "3.npy" in err
    assert sorted(p.name for p in (ws / "part").iterdir()) == [".segcp-predict.json", "1.npy", "2.npy"]


def _stacks(root: Path, labels: dict[str, int] | None) -> Path:
    """Six 4-class stacks (4, 8, 8) with label maps holding every label; ``labels``: a dataset.json."""
    rng = np.random.default_rng(0)
    for sub in ("probs", "masks"):
        (root / sub).mkdir(parents=True)
    for i in range(6):
        lab = rng.integers(0, 4, (8, 8))
        p = rng.random((4, 8, 8)) + 3 * (np.arange(4)[:, None, None] == lab)
        np.save(root / "probs" / f"{i}.npy", p / p.sum(0))
        np.save(root / "masks" / f"{i}.npy", lab.astype(np.uint8))
    if labels is not None:
        (root / "dataset.json").write_text(json.dumps({"labels": labels}))
    return root


def test_a_dataset_json_lacking_a_structure_of_the_stacks_is_one_line(tmp_path, capsys):
    """A dataset.json naming labels 0-2 of 4-class stacks calibrated 1 and 2 and left 3 out without a word."""
    d = _stacks(tmp_path / "d", {"background": 0, "RV": 1, "LV": 2})
    fails(
        ["calibrate", "--labels", "all", "--alpha", "0.25", "--data", d, "--out", tmp_path / "c.json"],
        capsys,
        tmp_path,
        "dataset.json: no label has the value 3, a structure of the probability stacks (4 channels",
    )
    ok(["calibrate", "--labels", "RV,LV", "--alpha", "0.25", "--data", d, "--out", tmp_path / "c.json", "-q"], capsys)  # listed: not silent


def test_labels_calibrate_the_background_only_when_it_is_named(tmp_path, capsys):
    """`--labels 0,1` calibrated the background as a structure: label 0 only by name."""
    d = _stacks(tmp_path / "d", None)
    fails(
        ["calibrate", "--labels", "0,1", "--alpha", "0.25", "--data", d, "--out", tmp_path / "c.json"],
        capsys,
        tmp_path,
        "--labels: label 0 is the background; to calibrate a set for it anyway, name it (--labels background,...)",
    )
    ok(["calibrate", "--labels", "background,1", "--alpha", "0.25", "--data", d, "--out", tmp_path / "c.json", "-q"], capsys)
    assert [s["label"] for s in json.loads((tmp_path / "c.json").read_text())["structures"]] == [0, 1]
