"""Model outputs for the band and volume-interval benchmarks (benchmarks/band_guarantee.py).

Runs a trained 2D UNet of docs/models.md slice by slice on the *pool* volumes of a volume task
(calibration ∪ test of the model's seeded split: patients the model never saw) and keeps, per
volume, only what the benchmarks read: the foreground probability of each structure (float32,
the volume's shape) and, for a model with dropout, the volume of each MC-dropout draw (Σ of the
draw's softmax, voxels) — not the samples themselves (10 draws × 4 classes of an ACDC volume
would be 44 MB each).

    python benchmarks/band_models.py --task acdc-3d --model MODELS/acdc-dropout25.pt --samples 10 --out A/acdc-3d
    python benchmarks/band_models.py --task la2018 --model MODELS/la2018.pt --out A/la2018

writes ``OUT/<id>.npz`` (``probs_<label>``, ``draws_<label>``) and ``OUT/manifest.json`` (ids,
groups, labels, spacing, model, seconds). Research harness: needs torch and h5py.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import numpy as np

from segcp.cases import slice_axis
from segcp.harness.datasets.tasks import get_task
from segcp.harness.models.infer import load_ensemble
from segcp.io import write_json
from segcp.progress import track

#: The structures kept per task (label in the task's label maps).
LABELS = {"acdc-3d": {"rv": 1, "lv": 3}, "la2018": {"la": 1}}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=sorted(LABELS), required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--root", default=None, help="the dataset's folder (default: $SEGCP_DATA/<dataset>)")
    ap.add_argument("--samples", type=int, default=None, help="MC-dropout draws per volume (a model with dropout)")
    ap.add_argument("--seed", type=int, default=0, help="the model's split seed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    task = get_task(a.task, root=a.root)
    split = task.split(a.seed)
    ens = load_ensemble([a.model])
    labels = LABELS[a.task]
    a.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    ids = list(split.pool)
    for ident in track(ids, "volumes"):
        dest = a.out / f"{ident}.npz"
        if dest.exists():
            continue
        sample = task.load(ident)
        axis = slice_axis(sample.image.shape, sample.spacing)
        probs, smp = ens.predict_volume(sample.image, ident, axis=axis, samples=a.samples, seed=0, batch_size=16)
        keep: dict[str, np.ndarray] = {}
        for name, lab in labels.items():
            keep[f"probs_{name}"] = (probs if probs.ndim == sample.image.ndim else probs[lab]).astype(np.float32)
            if smp is not None:
                keep[f"draws_{name}"] = smp[:, lab].reshape(smp.shape[0], -1).astype(np.float64).sum(axis=1)
        tmp = dest.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, **keep)
        os.replace(tmp, dest)
    write_json(
        a.out / "manifest.json",
        {
            "task": a.task,
            "model": str(a.model),
            "split_seed": a.seed,
            "ids": ids,
            "groups": {i: str(split.groups[i]) for i in ids},
            "labels": labels,
            "samples": a.samples,
            "spacing": task.spec.spacing,
            "seconds": time.perf_counter() - t0,
        },
    )
    print(f"{a.out}: {len(ids)} volumes in {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()
