"""Make an over-confident copy of a probability data directory (temperature sharpening).

p' = σ(T · logit(p)) for binary maps (T > 1 pushes every probability toward 0 or 1 without
moving the 0.5 boundary, so the model's mask p ≥ 0.5 is unchanged). This isolates one
property of the RW-CP paper's base models — they were far more over-confident than segcp's
CPU UNets (docs/results/README.md) — and lets `segcp compare` measure whether RW-CP's gain over
Standard CRC grows with over-confidence, without retraining.

    python benchmarks/sharpen_probs.py --data out/probs/acdc-rv --out out/probs/acdc-rv-T4 --temperature 4

``images/``, ``masks/`` and ``segcp_export.json`` are copied unchanged; ``probs/`` must hold
binary (H, W) maps. The output folder must not exist (written to a temporary folder first).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np

from segcp.errors import SegcpError
from segcp.io import index_folder, read_array


def sharpen(p: np.ndarray, temperature: float) -> np.ndarray:
    """σ(T · logit(p)) in float32, exact at 0 and 1 (logits clipped at ±30)."""
    p = np.asarray(p, dtype=np.float64)
    with np.errstate(divide="ignore"):
        z = np.log(p) - np.log1p(-p)
    z = np.clip(z, -30.0, 30.0) * float(temperature)
    return (0.5 * (1.0 + np.tanh(0.5 * z))).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--temperature", required=True, type=float)
    a = ap.parse_args(argv)
    try:
        if a.temperature <= 0:
            raise SegcpError(f"--temperature must be > 0, got {a.temperature}")
        if a.out.exists():
            raise SegcpError(f"{a.out}: already exists")
        probs = index_folder(a.data / "probs")
        tmp = a.out.with_name(a.out.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        (tmp / "probs").mkdir(parents=True)
        for sub in ("images", "masks"):
            if (a.data / sub).is_dir():
                shutil.copytree(a.data / sub, tmp / sub)
        if (a.data / "segcp_export.json").is_file():
            shutil.copy2(a.data / "segcp_export.json", tmp / "segcp_export.json")
        for i, f in probs.items():
            p, _ = read_array(f)
            if p.ndim != 2:
                raise SegcpError(f"{f}: expected a binary (H, W) probability map, got shape {p.shape}")
            np.save(tmp / "probs" / f"{i}.npy", sharpen(p, a.temperature))
        (tmp / "sharpen.json").write_text(json.dumps({"source": str(a.data), "temperature": a.temperature}))
        tmp.rename(a.out)
    except SegcpError as e:
        print(f"sharpen_probs: error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {a.out} ({len(probs)} maps, T = {a.temperature:g})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
