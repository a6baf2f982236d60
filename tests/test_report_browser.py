"""The demo's HTML report in a real headless browser (Debian's chromium): it renders, every figure loads, it prints.

Skips with a message when chromium is missing on a user's machine; fails under CI (``CI`` set),
whose ``.ci/run`` installs it. The report is the demo's (one run per session, shared with
tests/test_demo.py); nothing here reruns experiments.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--hide-scrollbars",
    "--mute-audio",
)

PROBE = """<script>
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0 && i.naturalHeight > 0; });
  var p = document.createElement('pre');
  p.id = 'segcp-probe';
  p.textContent = 'images=' + imgs.length + ' loaded=' + ok.length + ' widths=' + ok.map(function (i) { return i.naturalWidth; }).join(',');
  document.body.appendChild(p);
});
</script>"""


def _browser() -> str:
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    msg = "no headless chromium found (Debian: apt-get install chromium); the HTML report's browser test needs one"
    if os.environ.get("CI", "").lower() not in ("", "0", "false"):
        pytest.fail(f"{msg} (CI must run it: .ci/run installs chromium)")
    pytest.skip(msg)


def _run(browser: str, profile: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cmd = [browser, *FLAGS, f"--user-data-dir={profile}", *args]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, f"{' '.join(cmd)}: exit {proc.returncode}\n{proc.stderr[-2000:]}"
    return proc


@pytest.fixture(scope="module")
def browser():
    return _browser()


def test_every_figure_loads(demo_report, browser, tmp_path):
    out = demo_report[0]
    html = (out / "report.html").read_text()
    n_img = len(re.findall(r"<img\b", html))
    assert n_img >= 8
    probe = tmp_path / "probe.html"  # the report plus a probe script; the report itself has no script
    probe.write_text(html.replace("</body>", PROBE + "</body>"))
    proc = _run(browser, tmp_path / "profile", "--virtual-time-budget=20000", "--dump-dom", probe.as_uri())
    m = re.search(r"images=(\d+) loaded=(\d+) widths=([\d,]*)", proc.stdout)
    assert m, f"the probe did not run: {proc.stdout[-500:]}"
    assert int(m.group(1)) == n_img and int(m.group(2)) == n_img
    assert all(int(w) >= 200 for w in m.group(3).split(","))


def test_screenshot_is_not_blank(demo_report, browser, tmp_path):
    from PIL import Image

    shot = tmp_path / "shot.png"
    _run(browser, tmp_path / "profile", "--window-size=1280,2600", f"--screenshot={shot}", (demo_report[0] / "report.html").as_uri())
    img = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert img.shape[0] >= 2000 and img.shape[1] >= 1200
    ink = np.any(img < 235, axis=2)  # anything but the white page
    assert ink.mean() > 0.05, f"the page is blank ({ink.mean():.3f} of the pixels have ink)"
    colour = (img.max(axis=2) - img.min(axis=2)) > 60  # saturated pixels: the figures, not text
    assert colour.mean() > 0.002, "no figure drawn in the first screen"
    assert len(np.unique(img.reshape(-1, 3)[::7], axis=0)) > 200


def test_it_prints(demo_report, browser, tmp_path):
    pdf = tmp_path / "report.pdf"
    _run(browser, tmp_path / "profile", "--no-pdf-header-footer", f"--print-to-pdf={pdf}", (demo_report[0] / "report.html").as_uri())
    data = pdf.read_bytes()
    assert data.startswith(b"%PDF")
    pages = len(re.findall(rb"/Type\s*/Page(?!s)", data))
    assert pages >= 3, f"{pages} page(s): the print stylesheet starts each task on a new page"
