"""Stand-in model outputs for a task's pool, when the trained models of docs/models.md are not at hand.

The pool of a task's seeded split (``segcp.harness.datasets.tasks``: e.g. acdc-lv, split seed 0, RW-CP
protocol: 56 images of 28 patients) is exported with its real images and masks, and probs/ gets a
model-free probability map per image (:func:`fixed_score`, the real-data guarantee tests' score:
blurred mask, shifted boundary, smooth logit noise, seeded by the image's index; float32). Any fixed score keeps the
guarantees, so the folder runs every `segcp compare` / `segcp benchmark` config of the task: it
is how docs/reports/README.md checks that the code reproduces its numbers across a refactor
(same inputs, old code and new code, `benchmarks/diff_results.py`).

    python benchmarks/standin_probs.py --task acdc-lv --out /tmp/probs   # writes /tmp/probs/acdc-lv
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy import ndimage

from segcp.harness.datasets.tasks import export_task, get_task


def fixed_score(mask: np.ndarray, seed: int) -> np.ndarray:
    """A model-free probability map (float64, the mask's shape): blurred mask, shifted boundary,
    smooth logit noise (the real-data guarantee tests' score: tests/test_guarantee_acdc.py)."""
    rng = np.random.default_rng(seed)
    blurred = ndimage.gaussian_filter(mask.astype(float), sigma=2.0)
    noise = ndimage.gaussian_filter(rng.normal(0, 1, mask.shape), sigma=4.0)
    noise /= noise.std() + 1e-12
    logit = 10.0 * (blurred - 0.55) + 1.5 * noise
    return 1.0 / (1.0 + np.exp(-logit))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", default="acdc-lv")
    ap.add_argument("--root", default=None, help="the dataset's folder (default: $SEGCP_DATA/<dataset>)")
    ap.add_argument("--seed", type=int, default=0, help="the split's seed")
    ap.add_argument("--out", type=Path, required=True, help="writes OUT/<task> (images/, masks/, probs/, segcp_export.json)")
    a = ap.parse_args(argv)
    out = a.out / a.task
    ids = export_task(get_task(a.task, root=a.root), "pool", out, seed=a.seed)
    (out / "probs").mkdir(exist_ok=True)
    for i, ident in enumerate(ids):
        np.save(out / "probs" / f"{ident}.npy", fixed_score(np.load(out / "masks" / f"{ident}.npy"), i).astype(np.float32))
    print(f"{out}: {len(ids)} images")


if __name__ == "__main__":
    main()
