"""Figures of the maps behind a comparison: where RW-CP wins and loses against Standard CRC.

For one calibration/test split of a data directory (the first split of ``segcp compare`` with
the same seed and n_cal), calibrates Standard CRC and RW-CP (given parameters) at α on the
calibration images and, for the test images where RW-CP's Dice is most above and most below
Standard CRC's, draws: the image, the model's probability, the diffused probability, and both
sets at their λ̂ with the true contour.

    python benchmarks/rwcp_maps.py --data out/probs/acdc-rv --out docs/results/acdc-rv/maps.png \
        --alpha 0.1 --param encoder=dinov2-small --param threads=1

Needs the encoder's features (cached after the first run of `segcp compare`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from segcp import ConformalSegmenter
from segcp.compare import load_groups
from segcp.data.splits import random_cal_test_splits
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
    ap.add_argument("--param", action="append", default=[], help="rwcp KEY=VALUE")
    ap.add_argument("--rows", type=int, default=2, help="images per side (wins, losses)")
    a = ap.parse_args(argv)

    params = parse_params(a.param)
    methods = {
        "Standard CRC": ConformalSegmenter("threshold", a.alpha),
        "RW-CP": ConformalSegmenter("rwcp", a.alpha, method_params=params),
    }
    reader = DataDir(a.data).reader(methods["RW-CP"].family)
    cases = [reader.read(i) for i in reader.ids]
    groups, _ = load_groups(a.data, reader.ids)
    cal, test = next(iter(random_cal_test_splits(groups, a.n_cal, 1, seed=a.seed)))
    maps, lams = {}, {}
    for name, cs in methods.items():
        prepared = dict(zip(list(cal) + list(test), cs.prepare([cases[i] for i in list(cal) + list(test)])))
        maps[name] = {i: cs.family.scores(p) for i, p in prepared.items()}
        lams[name] = cs.calibrate([prepared[i] for i in cal]).lambda_
    dice = {
        name: {i: evaluate_set(maps[name][i] <= lams[name], cases[i].mask, cases[i].model_mask, cases[i].spacing)["dice"] for i in test}
        for name in methods
    }
    diff = sorted(test, key=lambda i: dice["RW-CP"][i] - dice["Standard CRC"][i])
    chosen = list(diff[-a.rows :][::-1]) + list(diff[: a.rows])

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(chosen), 5, figsize=(15, 3.1 * len(chosen)))
    for r, i in enumerate(chosen):
        c = cases[i]
        diffused = 1.0 - maps["RW-CP"][i]
        panels = [
            (c.image, "gray", f"{c.id}"),
            (c.probs, "magma", "model probability"),
            (diffused, "magma", "diffused (RW-CP)"),
            (maps["Standard CRC"][i] <= lams["Standard CRC"], "Blues", f"Standard CRC set, Dice {dice['Standard CRC'][i]:.2f}"),
            (maps["RW-CP"][i] <= lams["RW-CP"], "Greens", f"RW-CP set, Dice {dice['RW-CP'][i]:.2f}"),
        ]
        for ax, (img, cmap, title) in zip(axes[r], panels):
            ax.imshow(img, cmap=cmap, vmin=0, vmax=1 if img.dtype != bool else 1)
            ax.contour(c.mask, levels=[0.5], colors="r", linewidths=0.8)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    fig.suptitle(
        f"{a.data.name}: α = {a.alpha}, split seed {a.seed}; λ̂ Standard CRC {lams['Standard CRC']:.3f}, "
        f"RW-CP {lams['RW-CP']:.3f} ({', '.join(f'{k}={v}' for k, v in params.items())}); "
        f"top {a.rows} rows: RW-CP's best test images, bottom {a.rows}: its worst (red: true contour)",
        fontsize=9,
    )
    fig.tight_layout()
    a.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(a.out, dpi=90)
    print(f"wrote {a.out}; mean test Dice Standard CRC {np.mean(list(dice['Standard CRC'].values())):.3f}, RW-CP {np.mean(list(dice['RW-CP'].values())):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
