"""augment-preview writes a PNG grid; GPU batches give the same labels as CPU when a GPU is present."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from densemed.augment import build
from densemed.augment.preview import preview


@pytest.mark.parametrize("dims", [2, 3])
def test_preview_writes_png(tmp_path: Path, dims: int) -> None:
    size = (24, 24) if dims == 2 else (6, 24, 24)
    label = torch.zeros(3, 1, *size, dtype=torch.int64)
    label[(..., *[slice(s // 4, s // 2) for s in size])] = 1
    batch = {"image": torch.rand(3, 1, *size) + label, "label": label}
    out = preview(batch, build("default"), tmp_path / "sub" / "grid.png", n=2)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_gpu_batch_matches_cpu_draws() -> None:
    g = torch.Generator().manual_seed(0)
    batch = {
        "image": torch.rand(4, 1, 32, 32, generator=g),
        "label": torch.randint(0, 3, (4, 1, 32, 32), generator=g),
    }
    aug = build({"flip": {}, "rot90": {}, "affine": {"p": 1.0}, "elastic": {"p": 1.0, "magnitude": 2}})
    cpu = aug(batch, torch.Generator().manual_seed(1))
    gpu = aug({k: v.cuda() for k, v in batch.items()}, torch.Generator().manual_seed(1))
    assert torch.allclose(gpu["image"].cpu(), cpu["image"], atol=1e-4)
    assert (gpu["label"].cpu() != cpu["label"]).float().mean() < 0.01  # ties at half pixels may differ


def test_real_em_slice_labels_keep_values_and_follow_the_image(real_data: Path) -> None:
    import numpy as np
    from PIL import Image

    img = np.asarray(Image.open(real_data / "isbi2012_em/images/slice_00.png"), dtype=np.float32)[:128, :128]
    lab = np.asarray(Image.open(real_data / "isbi2012_em/labels/slice_00.png"))[:128, :128]
    image = torch.from_numpy((img - img.mean()) / img.std())[None, None].repeat(4, 1, 1, 1)
    label = torch.from_numpy((lab == 0).astype(np.int64))[None, None].repeat(4, 1, 1, 1)  # membrane = 1
    # Pack the label into a second image channel: it must be resampled exactly like the label.
    batch = {"image": torch.cat([image, label.float()], dim=1), "label": label}
    aug = build({"flip": {}, "rot90": {}, "affine": {"p": 1.0, "rotate": 20}, "elastic": {"p": 1.0}})
    out = aug(batch, torch.Generator().manual_seed(0))
    assert set(out["label"].unique().tolist()) <= {0, 1}
    agree = ((out["image"][:, 1:] > 0.5).long() == out["label"]).float().mean()
    assert agree > 0.98  # linear vs nearest differ only on boundary pixels
