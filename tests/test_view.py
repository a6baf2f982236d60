"""``segcp view``: the sets of a prediction folder in one self-contained HTML page.

Synthetic folders (3D NIfTI with per-structure sets and a band, 2D colour PNGs with one set)
check what the page holds (volumes, metrics, the size bound) and the command's errors; the page
is then driven in Debian's headless chromium (the helpers of tests/test_report_browser.py):
every case decodes to the voxel counts written, the URL fragment and the keyboard and the
slider choose the slice drawn, and it draws something.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from test_faults import fails, ok
from test_report_browser import _browser, _run

from segcp.errors import SegcpError
from segcp.jobs.view import CaseView, StructureView, case_metrics, view_dir
from segcp.report.viewer import FACTORS, MIN_POOLED, _mean_pool, pool

SPACING = (0.8, 0.7, 2.5)
SHAPE = (MIN_POOLED + 6, 24, 12)  # axis 0 is pooled when downsampled, the others are not


def _nifti(path: Path, arr: np.ndarray, spacing=SPACING) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(arr, np.diag([*spacing, 1.0]))
    img.header.set_xyzt_units("mm")
    nib.save(img, str(path))


def _ball(shape, centre, radius) -> np.ndarray:
    grid = np.ogrid[tuple(slice(0, n) for n in shape)]
    return sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= radius**2


def make_volumes(root: Path, n: int = 3) -> dict[str, dict[str, np.ndarray]]:
    """Images, label maps (1 = A, 2 = B), set folders A/ (a set) and B/ (a band, 0/1/2) and a
    dataset.json naming the labels; returns each case's arrays."""
    rng = np.random.default_rng(0)
    out = {}
    for i in range(n):
        ident = f"vol{i}"
        a = _ball(SHAPE, (30 + 3 * i, 12, 5), 6 + i)
        b = _ball(SHAPE, (45, 10, 7), 4) & ~a
        labels = a.astype(np.uint8) + 2 * b.astype(np.uint8)
        set_a = _ball(SHAPE, (30 + 3 * i, 12, 5), 7 + i)  # covers A
        outer = _ball(SHAPE, (45, 10, 7), 5 + (i == 1))
        inner = _ball(SHAPE, (45, 10, 7), 2)
        band = outer.astype(np.uint8) + inner.astype(np.uint8)
        image = rng.normal(0, 1, SHAPE).astype(np.float32) + 3 * labels
        _nifti(root / "data" / "images" / f"{ident}.nii.gz", image)
        _nifti(root / "data" / "masks" / f"{ident}.nii.gz", labels)
        _nifti(root / "sets" / "A" / f"{ident}.nii.gz", set_a.astype(np.uint8))
        _nifti(root / "sets" / "B" / f"{ident}.nii.gz", band)
        out[ident] = {"A truth": labels == 1, "A set": set_a, "B truth": labels == 2, "B outer (possible)": outer, "B inner (certain)": inner}
    (root / "data" / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "A": 1, "B": 2}}))
    return out


def make_images(root: Path, n: int = 4) -> dict[str, dict[str, np.ndarray]]:
    """Colour PNG images, 0/255 masks and one flat folder of boolean .npy sets."""
    rng = np.random.default_rng(1)
    out = {}
    for i in range(n):
        ident = f"img{i}"
        truth = _ball((40, 50), (20, 20 + i), 8)
        s = _ball((40, 50), (20, 21 + i), 10)
        rgb = (rng.random((40, 50, 3)) * 120 + 60 * truth[..., None]).astype(np.uint8)
        for sub, arr in (("images", rgb), ("masks", truth.astype(np.uint8) * 255)):
            (root / "data" / sub).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / "data" / sub / f"{ident}.png")
        (root / "sets").mkdir(exist_ok=True)
        np.save(root / "sets" / f"{ident}.npy", s)
        out[ident] = {"foreground truth": truth, "foreground set": s}
    return out


def page_meta(html: str) -> dict:
    m = re.search(r'<script id="segcp-meta" type="application/json">(.*?)</script>', html, re.DOTALL)
    assert m
    return json.loads(m.group(1).replace("<\\/", "</"))


@pytest.fixture(scope="module")
def volumes(tmp_path_factory):
    root = tmp_path_factory.mktemp("view3d")
    arrays = make_volumes(root)
    info = view_dir(root / "sets", root / "view.html", root / "data", show_progress=False)
    return root, arrays, info


# ------------------------------------------------------------------ the page's content
def test_pool_reduces_blocks_with_a_short_last_block():
    a = np.arange(7 * 4).reshape(7, 4)
    got = pool(a, (3, 2), np.add)
    assert got.shape == (3, 2)
    assert got[0, 0] == a[:3, :2].sum() and got[2, 1] == a[6:, 2:].sum()
    bits = np.zeros((5, 5), np.uint8)
    bits[4, 4] = 4
    assert pool(bits, (2, 2), np.bitwise_or)[2, 2] == 4  # a lone voxel survives downsampling
    rgb = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    mean = _mean_pool(rgb, (3, 2))  # the image: the mean of each block, channels kept
    assert mean.shape == (3, 3, 3) and mean[2, 2, 1] == round(rgb[6:, 4:, 1].mean()) and mean[0, 0, 2] == round(rgb[:3, :2, 2].mean())


def test_volumes_metrics_and_layers(volumes):
    root, arrays, info = volumes
    html = (root / "view.html").read_text()
    meta = page_meta(html)
    assert info["factor"] == 1 and info["cases"] == 3 and info["bytes"] == len(html.encode())
    assert [c["id"] for c in meta["cases"]] == ["vol0", "vol1", "vol2"]
    assert [ly["name"] for ly in meta["layers"]] == list(arrays["vol0"])
    assert all(c["shape"] == list(SHAPE) and c["spacing"] == pytest.approx(SPACING) for c in meta["cases"])
    ml = np.prod(SPACING) / 1000
    a = arrays["vol1"]
    # the set's and truth's volumes in mL, the band's interval, and whether the truth lies in it
    assert f"{a['A set'].sum() * ml:.1f}" in html and f"{a['A truth'].sum() * ml:.1f}" in html
    inner = a["B inner (certain)"].sum() * ml
    assert inner < 0.1 and f"[{inner:.3g}, {a['B outer (possible)'].sum() * ml:.1f}]" in html  # small volumes: 3 significant digits
    assert "set (mL)" in html and "HD95 (mm)" in html and "<script src" not in html and "http" not in html.split("<script")[0]


def test_case_metrics_volumes_and_band():
    t = np.zeros((4, 4, 4), bool)
    t[1:3, 1:3, 1:3] = True  # 8 voxels
    o = np.ones_like(t)
    i = np.zeros_like(t)
    i[1, 1, 1] = True
    case = CaseView("c", None, [StructureView(o, i, t), StructureView(t, None, None)], (2.0, 1.0, 0.5))
    band, plain = case_metrics(case)
    assert band["volume"] == pytest.approx(64 * 1e-3) and band["inner_volume"] == pytest.approx(1e-3)
    assert band["truth_volume"] == pytest.approx(8e-3) and band["in_interval"] == 1.0 and band["coverage"] == 1.0
    assert plain["volume"] == pytest.approx(8e-3) and np.isnan(plain["truth_volume"]) and "coverage" not in plain
    voxels = case_metrics(CaseView("c", None, [StructureView(o, None, t)], None))[0]
    assert voxels["volume"] == 64 and voxels["truth_volume"] == 8 and voxels["coverage"] == 1.0


def test_downsampled_to_stay_under_the_stated_size(volumes, tmp_path):
    root, _, info = volumes
    limit = int(info["bytes"] * 0.8)
    small = view_dir(root / "sets", tmp_path / "small.html", root / "data", max_mb=limit / 2**20, show_progress=False)
    assert small["factor"] in FACTORS[1:] and small["bytes"] <= limit == int(limit)
    assert (tmp_path / "small.html").stat().st_size == small["bytes"]
    meta = page_meta((tmp_path / "small.html").read_text())
    f = small["factor"]
    assert meta["factor"] == f and meta["cases"][0]["shape"] == [-(-SHAPE[0] // f), SHAPE[1], SHAPE[2]]  # short axes kept whole
    with pytest.raises(SegcpError, match="do not fit"):
        view_dir(root / "sets", tmp_path / "tiny.html", root / "data", max_mb=0.01, show_progress=False)
    assert not (tmp_path / "tiny.html").exists()


def test_the_command_and_its_one_line_errors(tmp_path, capsys):
    arrays = make_images(tmp_path)
    out = ok(["view", "--sets", tmp_path / "sets", "--data", tmp_path / "data", "--out", tmp_path / "v.html"], capsys)
    assert "4 cases" in out and (tmp_path / "v.html").is_file()
    html = (tmp_path / "v.html").read_text()
    assert page_meta(html)["cases"][0]["rgb"] is True and "set (pixels)" in html
    (tmp_path / "v.html").unlink()
    base = ["view", "--data", tmp_path / "data"]
    fails([*base, "--sets", tmp_path / "nope", "--out", tmp_path / "v.html"], capsys, tmp_path, "does not exist")
    fails([*base, "--sets", tmp_path / "sets", "--out", tmp_path / "sets" / "v.html"], capsys, tmp_path)  # inside an input
    fails([*base, "--sets", tmp_path / "sets", "--out", tmp_path / "v.png"], capsys, tmp_path, "name it *.html")
    fails([*base, "--sets", tmp_path / "sets", "--out", tmp_path / "v.html", "--max-mb", "0.001"], capsys, tmp_path, "do not fit")
    (tmp_path / "data" / "masks" / "img2.png").rename(tmp_path / "img2.png")
    fails([*base, "--sets", tmp_path / "sets", "--out", tmp_path / "v.html"], capsys, tmp_path, "no file for id 'img2'")
    (tmp_path / "img2.png").rename(tmp_path / "data" / "masks" / "img2.png")
    np.save(tmp_path / "sets" / "img1.npy", np.full((40, 50), 3, np.uint8))
    fails([*base, "--sets", tmp_path / "sets", "--out", tmp_path / "v.html"], capsys, tmp_path, "img1.npy: a set must be boolean")
    np.save(tmp_path / "sets" / "img1.npy", np.zeros((40, 49), bool))
    fails([*base, "--sets", tmp_path / "sets", "--out", tmp_path / "v.html"], capsys, tmp_path, "does not match")
    np.save(tmp_path / "sets" / "img1.npy", arrays["img1"]["foreground set"])
    (tmp_path / "sets" / "S").mkdir()
    np.save(tmp_path / "sets" / "S" / "img0.npy", arrays["img0"]["foreground set"])
    fails([*base, "--sets", tmp_path / "sets", "--out", tmp_path / "v.html"], capsys, tmp_path, "both set files and structure folders")


def test_per_structure_folders_need_their_labels(tmp_path, capsys):
    make_volumes(tmp_path, n=1)
    (tmp_path / "data" / "dataset.json").unlink()
    argv = ["view", "--sets", tmp_path / "sets", "--data", tmp_path / "data", "--out", tmp_path / "v.html"]
    fails(argv, capsys, tmp_path, "which label of the masks is this structure")
    (tmp_path / "sets" / "A").rename(tmp_path / "sets" / "label1")
    (tmp_path / "sets" / "B").rename(tmp_path / "sets" / "label2")  # predict's names without a dataset.json
    ok(argv + ["-q"], capsys)
    assert [ly["name"] for ly in page_meta((tmp_path / "v.html").read_text())["layers"]][:2] == ["label1 truth", "label1 set"]


# ------------------------------------------------------------------ in the browser
@pytest.fixture(scope="module")
def browser():
    return _browser()


def _dom(browser: str, tmp_path: Path, url: str) -> str:
    return _run(browser, tmp_path / "profile", "--virtual-time-budget=30000", "--dump-dom", url).stdout


def _state(dom: str) -> dict:
    m = re.search(r'<output id="segcp-state" data-ready="1">(.*?)</output>', dom, re.DOTALL)
    assert m, f"the page drew nothing: {dom[-800:]}"
    return json.loads(m.group(1).replace("&amp;", "&"))


def _counts(arrays: dict[str, np.ndarray], factor: int = 1) -> list[int]:
    return [int(pool(a.astype(np.uint8), tuple(factor if n >= MIN_POOLED else 1 for n in a.shape), np.bitwise_or).sum()) for a in arrays.values()]


@pytest.mark.parametrize("small", [False, True], ids=["full", "downsampled"])
def test_every_case_loads(volumes, browser, tmp_path, small):
    root, arrays, info = volumes
    page = root / "view.html"
    if small:
        page = tmp_path / "small.html"
        info = view_dir(root / "sets", page, root / "data", max_mb=info["bytes"] * 0.8 / 2**20, show_progress=False)
        assert info["factor"] > 1
    m = re.search(r'<pre id="segcp-check">(.*?)</pre>', _dom(browser, tmp_path, page.as_uri() + "#check"), re.DOTALL)
    assert m, "the check did not finish"
    check = json.loads(m.group(1))
    assert check["failed"] == [] and check["loaded"] == check["n"] == len(arrays)
    assert check["counts"] == {i: _counts(a, info["factor"]) for i, a in arrays.items()}  # every voxel of every layer decoded


def test_the_fragment_chooses_the_slice(volumes, browser, tmp_path):
    root, arrays, _ = volumes
    seen = []
    for z in (3, 8):
        st = _state(_dom(browser, tmp_path, (root / "view.html").as_uri() + f"#case=vol1&axis=2&slice={z}"))
        assert st["case"] == "vol1" and st["axis"] == 2 and st["slices"][2] == z
        ink = st["ink"][2]  # the plane across axis 2, per layer: the voxels of the slice drawn
        assert ink == [int(a[:, :, z].sum()) for a in arrays["vol1"].values()]
        seen.append(ink)
    assert seen[0] != seen[1]


KEYS = """<script>
window.addEventListener('load', function () {
  var n = 0;
  (function wait() {
    var out = document.getElementById('segcp-state');
    if (!out.getAttribute('data-ready')) { if (n++ < 200) setTimeout(wait, 50); return; }
    var before = JSON.parse(out.textContent);
    ['ArrowUp', 'ArrowUp', 'ArrowUp', 'ArrowDown'].forEach(function (k) {
      document.dispatchEvent(new KeyboardEvent('keydown', { key: k, bubbles: true }));
    });
    setTimeout(function () {
      var keyed = JSON.parse(out.textContent);
      var slider = document.querySelectorAll('.plane input')[0];
      slider.value = 42;
      slider.dispatchEvent(new Event('input'));
      setTimeout(function () {
        var p = document.createElement('pre');
        p.id = 'segcp-probe';
        p.textContent = JSON.stringify({ before: before, keyed: keyed, slid: JSON.parse(out.textContent), hash: location.hash });
        document.body.appendChild(p);
      }, 200);
    }, 200);
  })();
});
</script>"""


def test_arrow_keys_and_slider_move_the_slice(volumes, browser, tmp_path):
    root, arrays, _ = volumes
    probe = tmp_path / "probe.html"
    probe.write_text((root / "view.html").read_text().replace("</body>", KEYS + "</body>"))
    dom = _dom(browser, tmp_path, probe.as_uri() + "#case=vol2&axis=2&slice=4")
    m = re.search(r'<pre id="segcp-probe">(.*?)</pre>', dom, re.DOTALL)
    assert m, "the probe did not run"
    r = json.loads(m.group(1).replace("&amp;", "&"))
    assert r["before"]["slices"][2] == 4 and r["keyed"]["slices"][2] == 6 and r["keyed"]["axis"] == 2
    assert r["slid"]["axis"] == 0 and r["slid"]["slices"][0] == 42 and r["slid"]["slices"][2] == 6
    ink = r["slid"]["ink"][0]
    assert ink == [int(a[42].sum()) for a in arrays["vol2"].values()] and sum(x > 0 for x in ink) >= 3
    assert "case=vol2" in r["hash"] and "axis=0" in r["hash"] and "slice=42" in r["hash"]


def test_screenshot_shows_the_sets(volumes, browser, tmp_path):
    root, _, _ = volumes
    shot = tmp_path / "shot.png"
    _run(
        browser,
        tmp_path / "profile",
        "--window-size=1400,900",
        "--virtual-time-budget=30000",
        f"--screenshot={shot}",
        (root / "view.html").as_uri() + "#case=vol1&axis=2&slice=6&mode=both",
    )
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    dark = np.all(img < 40, axis=2)
    assert dark.mean() > 0.05, "no plane drawn"
    colour = (img.max(axis=2) - img.min(axis=2)) > 80
    assert colour.mean() > 0.002, "no set drawn in colour"
