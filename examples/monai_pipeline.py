"""segcp in a MONAI pipeline: calibrate through a data loader, then the sets in the post-processing chain.

    pip install torch==2.13.0 && pip install "segcp[monai]"
    python examples/monai_pipeline.py --out monai-demo/

Makes a few synthetic 3D NIfTI volumes (anisotropic voxels, an oblique affine; use your own files in
their place) and a tiny untrained MONAI UNet (your trained network in its place), then

1. calibrates one λ̂ per structure through the MONAI data loader and the model, streaming (only the
   loss curves are kept): OUT/calib.json, the record ``segcp calibrate`` writes;
2. runs the test volumes through ``Activationsd → Invertd → ConformalSetsd → SplitDimd → SaveImaged``:
   OUT/probs/<id>_prob.nii.gz (the probabilities on the original grid) and OUT/sets/<structure>/<id>.nii.gz
   (each structure's set, uint8, on the original image's grid).

``segcp predict --calib OUT/calib.json --probs OUT/probs --match probs={id}_prob --out OUT/cli_sets`` writes
the same sets from the saved probabilities.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from monai.data import DataLoader, Dataset, decollate_batch
from monai.networks.nets import UNet
from monai.transforms import (
    Activationsd,
    Compose,
    DivisiblePadd,
    EnsureChannelFirstd,
    Invertd,
    LoadImaged,
    Orientationd,
    SaveImaged,
    ScaleIntensityd,
    Spacingd,
    SplitDimd,
)

from segcp.monai import ConformalSetsd, calibrate_loader

SHAPE = (18, 14, 7)


def oblique_affine() -> np.ndarray:
    """Voxels of 1.2 × 0.9 × 3.0 mm, the in-plane axes swapped and rotated by 20°, shifted."""
    t = np.deg2rad(20.0)
    rot = np.array([[np.cos(t), -np.sin(t), 0.0], [np.sin(t), np.cos(t), 0.0], [0.0, 0.0, 1.0]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.array([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([1.2, 0.9, 3.0])
    aff[:3, 3] = [12.0, -7.5, 30.0]
    return aff


def synthetic_volumes(root: Path, n: int, seed: int) -> list[dict[str, str]]:
    """root/images/<id>.nii.gz and root/labels/<id>.nii.gz: two nested boxes (labels 1, 2) in noise."""
    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(exist_ok=True)
    items = []
    for i in range(n):
        lab = np.zeros(SHAPE, np.uint8)
        c = rng.integers(6, 10, 2)
        lab[c[0] - 4 : c[0] + 4, c[1] - 3 : c[1] + 3, 1:6] = 1
        lab[c[0] - 2 : c[0] + 2, c[1] - 1 : c[1] + 2, 2:5] = 2
        img = (lab * 40.0 + rng.normal(0.0, 15.0, SHAPE)).astype(np.float32)
        files = {kind: str(root / f"{kind}s" / f"case{seed}{i:02d}.nii.gz") for kind in ("image", "label")}
        nib.save(nib.Nifti1Image(img, oblique_affine()), files["image"])
        nib.save(nib.Nifti1Image(lab, oblique_affine()), files["label"])
        items.append(files)
    return items


def preprocessing() -> Compose:
    """Resample the image for the network; the label stays on the original grid (where sets are calibrated)."""
    return Compose(
        [
            LoadImaged(["image", "label"]),
            EnsureChannelFirstd(["image", "label"]),
            Orientationd("image", axcodes="RAS", labels=None),
            Spacingd("image", pixdim=(1.5, 1.5, 2.0), mode="bilinear"),
            ScaleIntensityd("image"),
            DivisiblePadd("image", k=4),
        ]
    )


def tiny_unet() -> torch.nn.Module:
    """An untrained 3-class UNet (weights doubled for a peaked softmax); a trained network goes here."""
    torch.manual_seed(0)
    model = UNet(spatial_dims=3, in_channels=1, out_channels=3, channels=(4, 8), strides=(2,), num_res_units=0).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    return model


def main(out: Path, alpha: float = 0.2) -> None:
    pre, model = preprocessing(), tiny_unet()
    to_original_grid = Compose([Activationsd("pred", softmax=True), Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False)])
    cal = DataLoader(Dataset(synthetic_volumes(out / "data" / "cal", 8, 1), pre), batch_size=2)
    calibrate_loader(cal, model, post=to_original_grid, alpha=alpha, out=out / "calib.json")

    sets = ConformalSetsd("pred", out / "calib.json")  # one channel per structure, in sets.names
    save = dict(separate_folder=False, print_log=False)
    post = Compose(
        [
            to_original_grid,
            SaveImaged("pred", output_dir=str(out / "probs"), output_postfix="prob", output_dtype=np.float32, **save),
            sets,
            SplitDimd("pred_sets", output_postfixes=sets.names),
            *(
                SaveImaged(f"pred_sets_{name}", output_dir=str(out / "sets" / name), output_postfix="", output_dtype=np.uint8, **save)
                for name in sets.names
            ),
        ]
    )
    for batch in DataLoader(Dataset(synthetic_volumes(out / "data" / "test", 3, 2), pre), batch_size=2):
        with torch.no_grad():
            batch["pred"] = model(batch["image"])
        for item in decollate_batch(batch):
            post(item)
    print(f"calibration: {out / 'calib.json'}; sets: {out / 'sets'} ({', '.join(sets.names)})")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("monai-demo"))
    parser.add_argument("--alpha", type=float, default=0.2)
    main(parser.parse_args().out, parser.parse_args().alpha)
