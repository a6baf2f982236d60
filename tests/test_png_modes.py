"""Masks in every PNG mode give the mask a user means, or one line (issue: palette PNGs).

An indexed-colour (palette, Pillow mode "P") mask is read by index, not brightness: a palette
whose index 0 is white gave inverted masks silently (λ̂ ≈ 1), a dark palette empty ones (λ̂ = 0).
Each mode is run through `segcp calibrate` and compared with the same masks as NPY.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from segcp.cli import main
from segcp.io import read_array

N, SHAPE = 12, (20, 24)


def _masks() -> list[np.ndarray]:
    rng = np.random.default_rng(7)
    out = []
    for _i in range(N):
        m = np.zeros(SHAPE, bool)
        r, c = rng.integers(2, 10, 2)
        m[r : r + 8, c : c + 10] = True
        out.append(m)
    return out


def _palette_image(index: np.ndarray, colours: list[tuple[int, int, int]]) -> Image.Image:
    im = Image.fromarray(index.astype(np.uint8), mode="P")
    flat = [v for c in colours for v in c]
    im.putpalette(flat + [0] * (768 - len(flat)))
    return im


def _rgba(gray: np.ndarray, alpha: np.ndarray) -> Image.Image:
    return Image.fromarray(np.stack([gray, gray, gray, alpha], axis=-1).astype(np.uint8), mode="RGBA")


#: mode → (how a mask m is saved, what `read_array` must give, or the error fragment)
MEANT = {
    "1": lambda m: Image.fromarray(m),
    "L": lambda m: Image.fromarray(m.astype(np.uint8) * 255),
    "I;16": lambda m: Image.fromarray(m.astype(np.uint16)),  # a 16-bit label map {0, 1}
    "P (index 0 white)": lambda m: _palette_image(m, [(255, 255, 255), (200, 0, 0)]),
    "P (dark palette)": lambda m: _palette_image(m, [(0, 0, 0), (3, 2, 1)]),
    "P (grey ramp)": lambda m: _palette_image(m.astype(np.uint8) * 255, [(v, v, v) for v in range(256)]),
    "LA (opaque)": lambda m: Image.fromarray(np.stack([m * 255, np.full(m.shape, 255)], -1).astype(np.uint8), mode="LA"),
    "LA (transparent background)": lambda m: Image.fromarray(np.stack([m * 255, m * 255], -1).astype(np.uint8), mode="LA"),
    "RGB (grey)": lambda m: Image.fromarray(np.stack([m * 255] * 3, -1).astype(np.uint8)),
    "RGBA (opaque grey)": lambda m: _rgba(m * 255, np.full(m.shape, 255)),
}
REFUSED = {
    "LA (mask in the alpha channel)": (
        lambda m: Image.fromarray(np.stack([np.full(m.shape, 255), m * 255], -1).astype(np.uint8), mode="LA"),
        "PNG with transparency (mode LA) that its values do not show",
    ),
    "RGB (red on black)": (lambda m: Image.fromarray(np.stack([m * 255, 0 * m, 0 * m], -1).astype(np.uint8)), "colour PNG (mode RGB)"),
    "RGBA (white, mask in alpha)": (lambda m: _rgba(np.full(m.shape, 255), m * 255), "PNG with transparency (mode RGBA) that its values do not show"),
}


def _data(root, save):
    rng = np.random.default_rng(3)
    for sub in ("probs", "masks", "npy_masks"):
        (root / sub).mkdir(parents=True)
    for i, m in enumerate(_masks()):
        np.save(root / "probs" / f"c{i:02d}.npy", np.clip(m * 0.5 + rng.random(SHAPE) * 0.5, 0, 1))
        save(m).save(root / "masks" / f"c{i:02d}.png")
        np.save(root / "npy_masks" / f"c{i:02d}.npy", m)
    return root


def _calibrate(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(["calibrate", "--alpha", "0.2", "-q", *map(str, args)])
    return e.value.code, capsys.readouterr().err


@pytest.mark.parametrize("mode", list(MEANT))
def test_every_png_mode_gives_the_mask_meant(tmp_path, capsys, mode):
    data = _data(tmp_path / "d", MEANT[mode])
    got, _ = read_array(data / "masks" / "c00.png")
    assert Image.open(data / "masks" / "c00.png").mode == mode.split(" ")[0]
    assert np.array_equal(got.astype(bool), _masks()[0]) and got.ndim == 2, mode
    for args, out in (([], "png.json"), (["--masks", data / "npy_masks"], "npy.json")):
        code, err = _calibrate(["--data", data, *args, "--out", tmp_path / out], capsys)
        assert not code, err
    png, npy = (json.loads((tmp_path / f).read_text()) for f in ("png.json", "npy.json"))
    assert png["lambda"] == npy["lambda"] and 0 < png["lambda"] < 1


@pytest.mark.parametrize("mode", list(REFUSED))
def test_png_modes_that_hide_the_mask_are_one_line(tmp_path, capsys, mode):
    save, fragment = REFUSED[mode]
    data = _data(tmp_path / "d", save)
    code, err = _calibrate(["--data", data, "--out", tmp_path / "c.json"], capsys)
    assert code == 2 and err.startswith(f"segcp: error: {data / 'masks'}") and err.count("\n") == 1, err
    assert fragment in err and "Traceback" not in err
    assert not (tmp_path / "c.json").exists()


def test_palette_probabilities_and_images():
    """A palette probability map is its index / 255; an image (image-aware methods) is what it shows."""
    import tempfile
    from pathlib import Path

    from segcp.io import read_probabilities

    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "p.png"
        _palette_image(np.array([[0, 51], [255, 102]]), [(255 - v, 0, v) for v in range(256)]).save(f)
        p, _ = read_probabilities(f)
        assert np.allclose(p, [[0.0, 0.2], [1.0, 0.4]])
        img, _ = read_array(f, color=True)
        assert img.shape == (2, 2, 3) and tuple(img[0, 0]) == (255, 0, 0)
        _palette_image(np.array([[0, 1]]), [(9, 9, 9), (30, 30, 30)]).save(f)
        assert read_array(f, color=True)[0].tolist() == [[9, 30]]  # a grey palette: a grey image


@settings(max_examples=60, deadline=None)
@given(
    mask=st.lists(st.lists(st.booleans(), min_size=1, max_size=9), min_size=1, max_size=9).filter(lambda r: len({len(x) for x in r}) == 1),
    colours=st.lists(st.tuples(*[st.integers(0, 255)] * 3), min_size=2, max_size=2),
    mode=st.sampled_from(["P", "LA", "RGBA", "1", "L"]),
)
def test_masks_read_back_whatever_the_palette_or_alpha(tmp_path_factory, mask, colours, mode):
    """Property: any palette (index 0 any colour, index 1 any colour, the same colour even) gives
    the indices; an alpha channel that follows the mask (or is constant) does not change it."""
    m = np.asarray(mask, dtype=bool)
    f = tmp_path_factory.mktemp("png") / "m.png"
    if mode == "P":
        _palette_image(m, colours).save(f)
    elif mode == "LA":
        alpha = (m * 255) if colours[0][0] % 2 else np.full(m.shape, colours[0][1])
        Image.fromarray(np.stack([m * 255, alpha], -1).astype(np.uint8), mode="LA").save(f)
    elif mode == "RGBA":
        _rgba(m * 255, (m * 255) if colours[0][0] % 2 else np.full(m.shape, 255)).save(f)
    else:
        Image.fromarray(m if mode == "1" else m.astype(np.uint8) * 255).save(f)
    got, _ = read_array(f)
    assert np.array_equal(got.astype(bool), m)
