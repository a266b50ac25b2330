"""``densemed augment-preview``: a grid of samples before and after a recipe's augmentation.

Each column is one training patch: the top row as sampled, the bottom row after ``aug`` (one
call on the whole batch), both with the label's class boundaries drawn as contours, so a person
can see that labels follow the image and judge whether the strength is sensible. 3D patches show
their middle slice along the first spatial axis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from densemed.errors import DensemedError
from densemed.typing import Batch, PathType

_COLOURS = ["#ff3b30", "#34c759", "#0a84ff", "#ffcc00", "#bf5af2", "#ff9f0a"]


def _slice2d(x: torch.Tensor) -> np.ndarray:
    """(C, *S) -> first channel, middle slice if 3D, as a 2-D numpy array."""
    x = x[0]
    if x.ndim == 3:
        x = x[x.shape[0] // 2]
    return x.detach().float().cpu().numpy()


def preview(
    batch: Batch, aug: Any, out_path: PathType, n: int = 8, generator: torch.Generator | None = None
) -> Path:
    """Write a PNG: ``n`` samples of ``batch`` (top row) and ``aug(batch)`` (bottom row) with label contours.

    Args:
        batch: ``image`` (B, C, *S) and optionally ``label`` (B, 1, *S) integer.
        aug: a callable from :func:`densemed.augment.build`.
        out_path: PNG file to write (folders are created).
        n: number of columns (at most B).
        generator: CPU generator for the augmentation draws (seed 0 when None).

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = min(n, batch["image"].shape[0])
    if n < 1:
        raise DensemedError("augment-preview: --n must be at least 1")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    after = aug(batch, gen)
    fig, axes = plt.subplots(2, n, figsize=(2.2 * n, 4.6), squeeze=False)
    for row, (title, b) in enumerate((("sampled", batch), ("augmented", after))):
        for col in range(n):
            ax = axes[row][col]
            img = _slice2d(b["image"][col])
            ax.imshow(img, cmap="gray", interpolation="nearest")
            if "label" in b:
                lab = _slice2d(b["label"][col])
                values = [v for v in np.unique(lab) if v != 0]
                for k, v in enumerate(values[: len(_COLOURS)]):
                    mask = (lab == v).astype(float)
                    if 0 < mask.sum() < mask.size:
                        ax.contour(mask, levels=[0.5], colors=_COLOURS[k % len(_COLOURS)], linewidths=0.8)
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(title)
    fig.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def preview_from_source(
    source: PathType, n: int = 8, out: PathType = "grid.png", overrides: list[str] | None = None
) -> Path:
    """``densemed augment-preview SOURCE``: a recipe YAML, or a data folder (``images/`` + ``labels/``).

    Shows what training will apply: a recipe's ``augment:`` section as is (a recipe without one
    gets no augmentation, and the grid shows its patches unchanged); a bare data folder shows
    ``augment: default`` (:data:`densemed.augment.DEFAULT_AUGMENT`). ``n`` training patches are
    drawn with the recipe's sampler (seed ``train.seed``); targets the task declares
    nearest-neighbour are resampled that way, as in training.
    """
    import functools

    from densemed import config, tasks
    from densemed.augment import build
    from densemed.data.dataset import PatchDataset, load_cases

    src = Path(source)
    if src.is_file():
        cfg = config.load(src, overrides or [])
    else:
        cfg = config.load(None, [f"data.root={source}", "augment=default", *(overrides or [])])
    task = tasks.build(cfg)
    aug = functools.partial(build(cfg.augment), nearest=task.nearest_keys())
    train, _ = load_cases(cfg, task)
    ds = PatchDataset(train, cfg.data.patch_size, cfg.data.foreground_fraction, n, cfg.train.seed)
    samples = [ds[i] for i in range(n)]
    batch = {k: torch.stack([s[k] for s in samples]) for k in samples[0]}
    return preview(batch, aug, out, n=n, generator=torch.Generator().manual_seed(cfg.train.seed))
