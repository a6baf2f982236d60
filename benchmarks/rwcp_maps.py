"""Figures of the maps behind a comparison: where a method wins and loses against Standard CRC.

For one calibration/test split of a data directory (the first split of ``segcp compare`` with
the same seed and n_cal), calibrates Standard CRC and a probability family (``--method``, RW-CP
by default, with the given parameters) at α on the calibration images and, for the test
images where its Dice is most above and most below Standard CRC's, draws: the image, the
model's probability, the method's map s' (diffused and/or normalised probability, r = 1 − s'),
and both sets at their λ̂ with the true contour.

    python benchmarks/rwcp_maps.py --data out/probs/acdc-rv --out docs/results/acdc-rv/maps.png \
        --alpha 0.1 --param encoder=dinov2-small --param threads=1
    python benchmarks/rwcp_maps.py --data out/probs/acdc-rv --out maps.png --method threshold \
        --param normalize=max --label "CRC, p / max(max p, 0.1)"

RW-CP needs the encoder's features (cached after the first run of `segcp compare`). Volumes are
shown by the slice (along RW-CP's slice axis) with the largest true area; Dice is the volume's.

    python benchmarks/rwcp_maps.py --data /work/artifacts3d/probs/la2018 --n-cal 10 --alpha 0.1 \
        --out docs/results/la2018/maps.png --label RW-CP-3D
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from segcp import ConformalSegmenter
from segcp.compare import load_groups
from segcp.engine.splits import random_cal_test_splits
from segcp.io import DataDir
from segcp.metrics import evaluate_set
from segcp.specs import parse_params


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--alpha", type=float, default=0.1)
    ap.add_argument("--n-cal", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--method", default="rwcp", help="the family compared with Standard CRC (threshold or rwcp)")
    ap.add_argument("--label", default=None, help="its name in the figure (default: RW-CP, or the method and params)")
    ap.add_argument("--param", action="append", default=[], help="its KEY=VALUE parameters")
    ap.add_argument("--rows", type=int, default=2, help="images per side (wins, losses)")
    a = ap.parse_args(argv)

    params = parse_params(a.param)
    name = a.label or (
        "RW-CP" if a.method == "rwcp" and not params.get("normalize") else f"{a.method} ({', '.join(f'{k}={v}' for k, v in params.items())})"
    )
    methods = {"Standard CRC": ConformalSegmenter("threshold", a.alpha), name: ConformalSegmenter(a.method, a.alpha, method_params=params)}
    dd = DataDir(a.data)
    reader = dd.reader(methods[name].family)
    cases = [reader.read(i) for i in reader.ids]
    groups, _ = load_groups(a.data, reader.ids)
    cal, test = next(iter(random_cal_test_splits(groups, a.n_cal, 1, seed=a.seed)))
    maps, lams = {}, {}
    for key, cs in methods.items():
        prepared = dict(zip(list(cal) + list(test), cs.prepare([cases[i] for i in list(cal) + list(test)])))
        maps[key] = {i: cs.family.scores(p) for i, p in prepared.items()}
        lams[key] = cs.calibrate([prepared[i] for i in cal]).lambda_
    dice = {
        key: {i: evaluate_set(maps[key][i] <= lams[key], cases[i].mask, cases[i].model_mask, cases[i].spacing)["dice"] for i in test}
        for key in methods
    }
    diff = sorted(test, key=lambda i: dice[name][i] - dice["Standard CRC"][i])
    chosen = list(diff[-a.rows :][::-1]) + list(diff[: a.rows])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(chosen), 5, figsize=(15, 3.1 * len(chosen)))
    from segcp.methods.rwcp import slice_axis

    for r, i in enumerate(chosen):
        c = cases[i]
        image = c.image if c.image is not None else dd.read("images", c.id)[0]  # threshold reads no image: shown only
        view, where = (lambda a: a), ""
        if c.mask.ndim == 3:  # a volume: the slice (along the slice axis) with the largest true area
            ax_ = slice_axis(c.mask.shape, c.spacing)
            z = int(np.argmax(np.moveaxis(c.mask, ax_, 0).reshape(c.mask.shape[ax_], -1).sum(axis=1)))
            view, where = (lambda a, ax_=ax_, z=z: np.take(np.asarray(a), z, axis=ax_)), f", slice {z} of axis {ax_}"
        lo, hi = float(np.min(image)), float(np.max(image))
        panels = [
            ((view(image) - lo) / (hi - lo or 1.0), "gray", f"{c.id}{where}"),
            (view(c.probs), "magma", f"model probability (max {c.probs.max():.2f})"),
            (view(1.0 - maps[name][i]), "magma", f"{name}: map s'"),
            (view(maps["Standard CRC"][i] <= lams["Standard CRC"]), "Blues", f"Standard CRC set, Dice {dice['Standard CRC'][i]:.2f}"),
            (view(maps[name][i] <= lams[name]), "Greens", f"{name} set, Dice {dice[name][i]:.2f}"),
        ]
        for ax, (img, cmap, title) in zip(axes[r], panels):
            ax.imshow(img, cmap=cmap, vmin=0, vmax=1)
            ax.contour(view(c.mask), levels=[0.5], colors="r", linewidths=0.8)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.suptitle(
        f"{a.data.name}: α = {a.alpha}, split seed {a.seed}; λ̂ Standard CRC {lams['Standard CRC']:.3f}, "
        f"{name} {lams[name]:.3f} ({', '.join(f'{k}={v}' for k, v in params.items())}); "
        f"top {a.rows} rows: its best test images against Standard CRC, bottom {a.rows}: its worst (red: true contour)",
        fontsize=9,
    )
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=90)
    print(
        f"wrote {a.out}; mean test Dice Standard CRC {np.mean(list(dice['Standard CRC'].values())):.3f}, {name} {np.mean(list(dice[name].values())):.3f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
