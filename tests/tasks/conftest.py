"""Shared data and recipe arguments of the sliced-volume tasks (recon_seg, classify_seg)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


def write_volumes(root: Path, n: int = 3, shape: tuple[int, int, int] = (8, 20, 14)) -> Path:
    """Tiny volumes ``v0 .. v{n-1}``: noise plus a bright two-class block (classes 1 and 2 side by side along axis 1).

    Foreground in slices 2..5 along axis 0; the data folder ``root`` (``images/``, ``labels/``) is returned.
    """
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        img = rng.normal(100, 5, shape).astype(np.float32)
        lab = np.zeros(shape, np.uint8)
        lab[2:6, 4:10, 3:9], lab[2:6, 10:15, 3:9] = 1, 2
        img[lab > 0] += 60
        nib.save(nib.Nifti1Image(img, np.eye(4)), str(root / "images" / f"v{i}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(root / "labels" / f"v{i}.nii.gz"))
    return root


def sliced_recipe(task: str, net: str, loss: str, data: Path, *extra: str) -> list[str]:
    """``--set`` arguments of a 3-class volume recipe sliced along axis 0 (patches ``[1, 24, 16]``, 4 per epoch)."""
    return [task, f"data.root={data}", "data.dims=3", "data.num_classes=3",
            "data.patch_size=[1,24,16]", "data.normalize=percentile", "data.percentiles=[0,100]",
            "data.batch_size=2", "data.samples_per_epoch=4", "data.val_fraction=0.34", net, loss,
            "train.progress=false", *extra]


@pytest.fixture
def volumes() -> Callable[..., Path]:
    """:func:`write_volumes`."""
    return write_volumes


@pytest.fixture
def sliced_args() -> Callable[..., list[str]]:
    """:func:`sliced_recipe`: ``sliced_args(task, net, loss, data, *extra)``."""
    return sliced_recipe
