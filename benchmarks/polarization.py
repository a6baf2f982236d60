"""How polarized a model's probabilities are: mass near 0 and 1, ties, and a histogram.

nnU-Net's probabilities are known to be extremely polarized (values such as 1e-4 / 0.9999 and
many exact ties), the over-confident regime in which a threshold on the raw probabilities has
little room between "in" and "out". This module measures it on the probability maps of a
data directory (``probs/``, binary foreground maps (H, W) or (X, Y, Z), float32 as written by
``segcp infer``), so a cross-entropy model and a Dice + CE model can be compared:

- ``low`` / ``high``: fraction of pixels with p < ε / p > 1 − ε (ε = 1e-3), their sum
  ``polarized``; ``zero`` / ``one``: fraction exactly 0.0 / 1.0 in the stored dtype;
- ``tied``: fraction of pixels whose value occurs at least twice in the same image (a tie in
  the score 1 − p that the exact CRC merges into one breakpoint); ``distinct``: mean number of
  distinct values per image;
- the same over the ground-truth pixels only (``truth_*``): ``truth_low`` is the fraction of
  the structure the model is sure is background — a threshold set has to grow to λ ≈ 1 to
  cover it.

Fractions are pooled over all pixels of the chosen images (not averaged per image).

Command line (writes the JSON summary and the figure)::

    python benchmarks/polarization.py --pair acdc-lv CE_DIR DICECE_DIR --pair acdc-rv CE_DIR DICECE_DIR \\
        --part test --out docs/models-polarization.png --json polarization.json
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from segcp.errors import SegcpError

__all__ = ["EPS", "main", "polarization", "polarization_of_dir"]

#: "Near 0 / near 1" threshold of the summary fractions.
EPS = 1e-3
#: Histogram of log10(min(p, 1 − p)): bins from 10^-8 (exact 0/1 are put in the first bin) to 1/2.
LOG_BINS = np.linspace(-8.0, np.log10(0.5), 41)


def _counts(p: NDArray[Any], eps: float) -> dict[str, float]:
    flat = np.asarray(p).ravel()
    n = flat.size
    _, counts = np.unique(flat, return_counts=True)
    return {
        "n": float(n),
        "low": float(np.count_nonzero(flat < eps)),
        "high": float(np.count_nonzero(flat > 1 - eps)),
        "zero": float(np.count_nonzero(flat == 0)),
        "one": float(np.count_nonzero(flat == 1)),
        "tied": float(counts[counts > 1].sum()),
        "distinct": float(counts.size),
    }


def polarization(probs: Sequence[NDArray[Any]], masks: Sequence[NDArray[Any]] | None = None, eps: float = EPS) -> dict[str, float]:
    """Pooled polarization fractions of foreground probability maps (see the module docstring).

    ``probs``: maps in [0, 1] (any shape, e.g. (H, W) float32); ``masks``: the matching
    boolean ground truths, for the ``truth_*`` fractions. Returns fractions in [0, 1] plus
    ``n_images``, ``n_pixels`` and ``distinct`` (mean distinct values per image).
    """
    if not probs:
        raise SegcpError("polarization: no probability maps")
    tot: dict[str, float] = {}
    truth: dict[str, float] = {}
    for k, p in enumerate(probs):
        for key, v in _counts(p, eps).items():
            tot[key] = tot.get(key, 0.0) + v
        if masks is not None:
            m = np.asarray(masks[k], dtype=bool)
            if m.shape != np.shape(p):
                raise SegcpError(f"polarization: mask {k} of shape {m.shape} does not match its map {np.shape(p)}")
            if m.any():
                for key, v in _counts(np.asarray(p)[m], eps).items():
                    truth[key] = truth.get(key, 0.0) + v
    n = tot["n"]
    out = {"n_images": float(len(probs)), "n_pixels": n, "eps": eps, "distinct": tot["distinct"] / len(probs)}
    for key in ("low", "high", "zero", "one", "tied"):
        out[key] = tot[key] / n
    out["polarized"] = out["low"] + out["high"]
    if truth:
        nt = truth["n"]
        out["truth_pixels"] = nt
        for key in ("low", "high", "tied"):
            out[f"truth_{key}"] = truth[key] / nt
    return out


def _ids_of(data: Path, part: str | None) -> list[str]:
    from segcp.io import DataDir, read_json

    ids = DataDir(data).ids(["probs"])
    if part is None:
        return ids
    man = data / "segcp_export.json"
    if not man.is_file():
        raise SegcpError(f"{man}: no such file; --part needs the split written by segcp infer --task")
    split = read_json(man).get("split") or {}
    chosen = split.get(part)
    if not isinstance(chosen, list):
        raise SegcpError(f"{man}: no split part {part!r}")
    return [i for i in ids if i in set(chosen)]


def polarization_of_dir(
    data: str | os.PathLike[str], *, part: str | None = "test", label: int | None = None, eps: float = EPS
) -> tuple[dict[str, float], NDArray[np.float64]]:
    """Summary and log-histogram counts of the ``probs/`` of a data directory.

    ``part``: the split part recorded in ``segcp_export.json`` (None: every id). ``label``:
    the structure in label-map masks. Returns (summary, counts (2, bins) over :data:`LOG_BINS`
    of log10(min(p, 1 − p)) — row 0 every pixel, row 1 the ground-truth pixels —, exact 0 and
    1 counted in the first bin).
    """
    from segcp.io import DataDir

    root = Path(data)
    dd = DataDir(root)
    ids = _ids_of(root, part)
    if not ids:
        raise SegcpError(f"{root}: no images in part {part!r}")
    probs, masks = [], []
    hist = np.zeros((2, len(LOG_BINS) - 1))
    for i in ids:
        p, _ = dd.load_probs(i)
        probs.append(p.astype(np.float32))
        m = dd.load_mask(i, label=label)[0] if dd.has("masks") else np.zeros(p.shape, bool)
        masks.append(m)
        with np.errstate(divide="ignore"):
            logd = np.clip(np.log10(np.minimum(p, 1 - p)), LOG_BINS[0], LOG_BINS[-1])
        hist[0] += np.histogram(logd, LOG_BINS)[0]
        hist[1] += np.histogram(logd[m], LOG_BINS)[0]
    return polarization(probs, masks if dd.has("masks") else None, eps), hist


def plot(results: dict[str, dict[str, tuple[dict[str, float], NDArray[np.float64]]]], out: Path) -> None:
    """Per task (columns): the share of pixels per bin of log10(min(p, 1 − p)), one line per model;
    top row every pixel of the test images, bottom row the ground-truth pixels only."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(results)
    fig, axes = plt.subplots(2, len(tasks), figsize=(5.4 * len(tasks), 7.0), squeeze=False)
    centres = 0.5 * (LOG_BINS[1:] + LOG_BINS[:-1])
    for col, task in enumerate(tasks):
        for row, (what, _key) in enumerate((("all pixels", "polarized"), ("ground-truth pixels", "truth_high"))):
            ax = axes[row][col]
            for model, (summ, hist) in results[task].items():
                h = hist[row]
                label = (
                    f"{model}: {100 * summ['polarized']:.1f} % with p<1e-3 or p>1-1e-3, {100 * summ['tied']:.1f} % tied"
                    if row == 0
                    else f"{model}: {100 * summ.get('truth_high', np.nan):.1f} % p>1-1e-3, {100 * summ.get('truth_low', np.nan):.2f} % p<1e-3"
                )
                ax.step(centres, h / max(h.sum(), 1), where="mid", label=label)
            ax.axvline(np.log10(EPS), color="grey", lw=0.8, ls="--")
            ax.set_yscale("log")
            ax.set_xlabel("log10 min(p, 1 − p)   (first bin: ≤ 1e-8, exact 0 / 1 included)")
            ax.set_ylabel("share of pixels")
            ax.set_title(f"{task}, test images: {what}")
            ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    from segcp.io import atomic_path

    with atomic_path(out, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=130)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line (see the module docstring); returns the JSON-ready results."""
    ap = argparse.ArgumentParser(prog="python benchmarks/polarization.py", description=__doc__.split("\n")[0])
    ap.add_argument("--pair", nargs=3, action="append", metavar=("TASK", "CE_DIR", "DICECE_DIR"), required=True)
    ap.add_argument("--part", default="test", help="split part of segcp_export.json (default test; 'all' for every id)")
    ap.add_argument("--out", type=Path, required=True, help="figure (.png)")
    ap.add_argument("--json", type=Path, help="summary (.json)")
    args = ap.parse_args(argv)
    part = None if args.part == "all" else args.part
    results: dict[str, dict[str, tuple[dict[str, float], NDArray[np.float64]]]] = {}
    for task, ce, dc in args.pair:
        results[task] = {"CE": polarization_of_dir(ce, part=part), "Dice+CE": polarization_of_dir(dc, part=part)}
    plot(results, args.out)
    summary = {
        task: {model: {**s, "dir": str(Path(d).resolve())} for (model, (s, _)), d in zip(res.items(), (ce, dc))}
        for (task, res), (_, ce, dc) in zip(results.items(), args.pair)
    }
    if args.json:
        from segcp.io import write_json

        write_json(args.json, {"part": args.part, "eps": EPS, "results": summary})
    for task, res in summary.items():
        for model, s in res.items():
            print(
                f"{task:8s} {model:8s} p<{EPS:g}: {s['low']:.4f}  p>1-{EPS:g}: {s['high']:.4f}  polarized: {s['polarized']:.4f}  "
                f"exact 0/1: {s['zero']:.4f}/{s['one']:.4f}  tied: {s['tied']:.4f}  distinct/image: {s['distinct']:.0f}  "
                f"truth p<eps: {s.get('truth_low', float('nan')):.4f}  truth p>1-eps: {s.get('truth_high', float('nan')):.4f}"
            )
    return summary


if __name__ == "__main__":  # pragma: no cover
    main()
