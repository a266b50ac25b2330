"""The standard MONAI pipeline of issue 17, trained for the same budget on a densemed recipe's split.

Run from the repository root (CPU; one thread unless ``--threads``)::

    python -m benchmarks.monai_pipeline configs/unet_border_weights_dsb2018.yaml --out runs/monai_dsb \
        --budget 600 --seed 0 [--instances watershed|components]
    densemed evaluate --pred runs/monai_dsb/pred --truth VAL_LABELS --instances

The reference side, written with MONAI only (densemed is used for nothing but the file list of the
recipe's train / validation split, so both sides see the same images): MONAI ``BasicUNet`` (2D,
default features 32-32-64-128-256-32), ``DiceCELoss`` (softmax, one-hot), Adam lr 1e-3, batch 4,
random 256x256 crops (half centred on foreground, ``RandCropByPosNegLabeld``) with flips, quarter
turns and an affine (p 0.3, ±10°, scale 0.9-1.1), per-image z-score; trained until ``--budget``
seconds of training have passed (whole-image validation would cost budget and is left out: the last
weights are used). Prediction: ``sliding_window_inference`` (256², overlap 0.5, Gaussian),
foreground = softmax > 0.5, then instances by ``--instances``:

* ``watershed`` (default; the issue's "U-Net + distance-transform watershed"): markers = local maxima
  of the Euclidean distance transform at least 5 px apart (``skimage.feature.peak_local_max``), grown
  by ``skimage.segmentation.watershed`` of the negated distance inside the foreground;
* ``components``: 8-connected components.

Objects under 10 px are dropped in both. Writes ``OUT/pred/<stem>.png`` (instance ids) and
``OUT/run.json`` (steps, seconds). The choices above that the issue does not state (features,
crop sampling, peak distance, minimum size) are the MONAI defaults or the common tutorial values.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch


def _split(recipe: str) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    from densemed import config
    from densemed.data.dataset import discover_pairs, split

    cfg = config.load(recipe)
    root = config.resolve_data_root(cfg.data.root)
    pairs = discover_pairs(root, cfg.data.image_dir, cfg.data.label_dir)
    train, val = split([s for s, _, _ in pairs], cfg.data)
    by_stem = {s: (img, lab) for s, img, lab in pairs}
    return [by_stem[s] for s in train], [by_stem[s] for s in val]


def _read(img_path: Path, lab_path: Path | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Image (C, H, W) float32 z-scored per image; label (1, H, W) binary foreground."""
    from PIL import Image

    img = np.asarray(Image.open(img_path))
    if img.ndim == 2:
        img = img[..., None]
    img = img[..., :3].astype(np.float32).transpose(2, 0, 1)  # RGBA PNGs: the alpha channel is constant
    img = (img - img.mean()) / max(float(img.std()), 1e-6)
    lab = None
    if lab_path is not None:
        lab = (np.asarray(Image.open(lab_path)) > 0).astype(np.float32)[None]
    return img, lab


def _instances(fg: np.ndarray, method: str) -> np.ndarray:
    from scipy import ndimage
    from skimage.feature import peak_local_max
    from skimage.segmentation import watershed

    if method == "components":
        lab, _ = ndimage.label(fg, structure=np.ones((3, 3)))
    else:
        dist = ndimage.distance_transform_edt(fg)
        peaks = peak_local_max(dist, min_distance=5, labels=ndimage.label(fg)[0], exclude_border=False)
        markers = np.zeros(fg.shape, np.int32)
        markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
        lab = watershed(-dist, markers, mask=fg)
    sizes = np.bincount(lab.ravel())
    small = np.flatnonzero(sizes < 10)
    lab[np.isin(lab, small[small > 0])] = 0
    return lab.astype(np.uint16)


def main(argv: list[str] | None = None) -> int:
    from monai.data import DataLoader, Dataset
    from monai.inferers import sliding_window_inference
    from monai.losses import DiceCELoss
    from monai.networks.nets import BasicUNet
    from monai.transforms import Compose, RandAffined, RandCropByPosNegLabeld, RandFlipd, RandRotate90d, SpatialPadd
    from monai.utils import set_determinism
    from PIL import Image

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("recipe")
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget", type=float, default=600.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--instances", choices=("watershed", "components"), default="watershed")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    set_determinism(args.seed)
    out = Path(args.out)
    (out / "pred").mkdir(parents=True, exist_ok=True)
    train, val = _split(args.recipe)
    items = []
    for img_path, lab_path in train:
        img, lab = _read(img_path, lab_path)
        items.append({"image": img, "label": lab})
    keys = ["image", "label"]
    tf = Compose([
        SpatialPadd(keys, spatial_size=(256, 256)),
        RandCropByPosNegLabeld(keys, label_key="label", spatial_size=(256, 256), pos=1, neg=1, num_samples=1),
        RandFlipd(keys, prob=0.5, spatial_axis=0), RandFlipd(keys, prob=0.5, spatial_axis=1),
        RandRotate90d(keys, prob=0.5),
        RandAffined(keys, prob=0.3, rotate_range=(np.pi / 18,), scale_range=(0.1, 0.1), mode=("bilinear", "nearest")),
    ])
    loader = DataLoader(Dataset(items, tf), batch_size=4, shuffle=True, num_workers=0, drop_last=True)
    net = BasicUNet(spatial_dims=2, in_channels=items[0]["image"].shape[0], out_channels=2)
    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    steps, spent = 0, 0.0
    net.train()
    while spent < args.budget:
        for batch in loader:
            t0 = time.perf_counter()
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(net(batch["image"]), batch["label"])
            loss.backward()
            opt.step()
            spent += time.perf_counter() - t0
            steps += 1
            if spent >= args.budget:
                break

    net.eval()
    t0 = time.perf_counter()
    with torch.inference_mode():
        for img_path, _ in val:
            img, _ = _read(img_path, None)
            logits = sliding_window_inference(torch.from_numpy(img)[None], (256, 256), 4, net, overlap=0.5,
                                              mode="gaussian")
            fg = torch.softmax(logits, 1)[0, 1].numpy() > 0.5
            Image.fromarray(_instances(fg, args.instances)).save(out / "pred" / f"{img_path.stem}.png")
    record = {"steps": steps, "train_seconds": round(spent, 1), "predict_seconds": round(time.perf_counter() - t0, 1),
              "seed": args.seed, "budget": args.budget, "instances": args.instances, "val_images": len(val)}
    (out / "run.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
