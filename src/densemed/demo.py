"""``densemed demo``: the main job end to end on an embedded default.

Generates 48 images of touching cells (:mod:`densemed.data.synthetic`), trains a small U-Net
(base width 16, depth 3) on 38 of them within a time budget (90 s by default), predicts the 10
held-out images with sliding windows, prints their Dice and writes ``overlay.png`` (image, truth,
prediction). With ``--data DIR`` the same happens on a real folder of images and labels.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from densemed import config
from densemed.config import Config
from densemed.errors import DensemedError


def demo_config(out: str, data: str | None, budget: float, device: str) -> Config:
    """The demo recipe: synthetic cells, or a real folder with dims and classes read from it."""
    raw: dict = {
        "model": {"name": "unet", "base_width": 16, "depth": 3},
        "loss": {"name": "dice_ce"},
        "augment": {"flip": {"p": 0.5}, "rot90": {"p": 0.5}},
        "train": {
            "epochs": 200, "lr": 3e-3, "time_budget_s": budget, "out": out, "device": device, "scheduler": "none"
        },
        "data": {"batch_size": 8, "samples_per_epoch": 64, "val_fraction": 0.2},
    }
    if data is None:
        raw["data"].update({"synthetic": {"n": 48, "size": 128, "seed": 0}, "patch_size": [128, 128]})
        return config.from_dict(raw, "demo")
    from densemed.data.dataset import discover_pairs
    from densemed.data.io import read_label

    root = config.resolve_data_root(data)
    pairs = discover_pairs(root)
    label, _ = read_label(pairs[0][2])
    values = set(np.unique(label).tolist())
    dims = label.ndim
    raw["data"].update(
        {
            "root": str(root),
            "dims": dims,
            "num_classes": 2 if values <= {0, 1} or values <= {0, 255} else int(max(values)) + 1,
            "patch_size": [min(128, s) for s in label.shape] if dims == 2 else [min(32, s) for s in label.shape],
        }
    )
    if dims == 3:
        raw["data"]["batch_size"] = 2
        raw["augment"] = {"affine": {"p": 0.3, "rotate": 10, "scale": [0.9, 1.1]}}  # flips can swap positional classes
    return config.from_dict(raw, str(root))


#: marks a folder as the demo's own, so a rerun may clear it (and never another run's folder)
MARKER = ".densemed-demo"


def _clear(out_path: Path) -> None:
    """Start afresh in the demo's own folder; refuse a folder holding a run the demo did not create."""
    if not out_path.exists() or not any(out_path.iterdir()):
        return
    if not (out_path / MARKER).exists():
        raise DensemedError(
            f"{out_path}: the folder holds files the demo did not create; choose another --out"
        )
    import shutil

    shutil.rmtree(out_path)


def run_demo(out: str = "runs/demo", data: str | None = None, budget: float = 90.0, device: str = "auto") -> int:
    """Train, evaluate on the held-out split, print the Dice, write ``overlay.png``; returns 0."""
    from densemed.infer.overlay import save_overlay
    from densemed.nets.heads import to_labels
    from densemed.train import Trainer

    out_path = Path(out)
    _clear(out_path)
    out_path.mkdir(parents=True, exist_ok=True)
    (out_path / MARKER).write_text("written by densemed demo\n")
    cfg = demo_config(out, data, budget, device)
    tic = time.perf_counter()
    trainer = Trainer(cfg)
    src = "generated touching cells" if cfg.data.synthetic else cfg.data.root
    print(
        f"demo: {len(trainer.train_cases)} training / {len(trainer.val_cases)} held-out images ({src}); "
        f"U-Net base width {cfg.model['base_width']}, {budget:g} s budget on {trainer.device}"
    )
    result = trainer.fit()
    if not trainer.val_cases:
        raise DensemedError("demo: no held-out images (the data folder needs at least 2 pairs)")
    # the last epoch (or the final validation after the budget stop) scored the final weights
    scores = result.history[-1] if "val_dice_per_class" in result.history[-1] else trainer.validate()
    mean = np.asarray(scores["val_dice_per_class"])
    case = trainer.val_cases[0]
    pred = to_labels(trainer.task.infer(trainer.model, torch.from_numpy(case.image)[None], trainer.device))[0]
    overlay = out_path / "overlay.png"
    save_overlay(case.image[0], case.label, pred.numpy(), overlay)
    per_class = ", ".join(f"class {i + 1}: {v:.3f}" for i, v in enumerate(mean))
    print(
        f"held-out Dice {mean.mean():.3f} ({per_class}) on {len(trainer.val_cases)} images "
        f"after {result.epochs} epochs ({trainer.module.step} steps): training {result.train_seconds:.0f} s of the "
        f"{budget:g} s budget, validation {result.val_seconds + result.final_val_seconds:.0f} s, "
        f"{time.perf_counter() - tic:.0f} s in all; overlay: {overlay}"
    )
    return 0
