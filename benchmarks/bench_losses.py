"""Losses: forward + backward on 8x1x512x512 logits against MONAI, and the border weight map
(512x512, ~50 touching nuclei) against one Euclidean distance transform per object."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from benchmarks.harness import Row, bench_device, compare

NOTES = (
    "Loss rows: one forward + backward of the loss on random logits (float32) with a random "
    "binary target, equivalent settings (MONAI with sigmoid=True / use_softmax=False). Weight map "
    "row: `densemed.losses.border_weight_map` vs the one-EDT-per-object reference used in "
    "`tests/targets/test_weights.py`; maximum absolute difference reported."
)


def _touching_objects(shape: tuple[int, ...], n: int, seed: int = 0) -> np.ndarray:
    from skimage.segmentation import watershed

    rng = np.random.default_rng(seed)
    seeds = np.zeros(shape, np.int32)
    seeds[tuple(rng.integers(0, s, n) for s in shape)] = np.arange(1, n + 1)
    dist = ndimage.distance_transform_edt(seeds == 0)
    return watershed(dist, seeds, mask=dist < 14).astype(np.int32)


def _slow_weight_map(lab: np.ndarray, w0: float = 10.0, sigma: float = 5.0) -> np.ndarray:
    fg = lab > 0
    out = np.ones(lab.shape)
    ids = np.unique(lab[fg])
    d = np.sort(np.stack([ndimage.distance_transform_edt(lab != i) for i in ids]), axis=0)
    out[~fg] += (w0 * np.exp(-((d[0] + d[1]) ** 2) / (2 * sigma**2)))[~fg]
    return out.astype(np.float32)


def run(quick: bool) -> list[Row]:
    import monai.losses as ml

    import densemed.losses as losses

    repeats = 3 if quick else 7
    size = 256 if quick else 512
    g = torch.Generator().manual_seed(0)
    dev = bench_device()
    logits = torch.randn(8, 1, size, size, generator=g).to(dev)
    target = (torch.rand(8, 1, size, size, generator=g) > 0.7).float().to(dev)
    cases = [
        ("dice", losses.build("dice"), ml.DiceLoss(sigmoid=True)),
        ("generalized_dice", losses.build("generalized_dice"), ml.GeneralizedDiceLoss(sigmoid=True)),
        ("focal", losses.build("focal", gamma=2.0), ml.FocalLoss(gamma=2.0)),
        ("tversky", losses.build("tversky", alpha=0.3, beta=0.7),
         ml.TverskyLoss(sigmoid=True, alpha=0.3, beta=0.7)),
    ]
    rows = []
    for name, ours, ref in cases:

        def step(loss: torch.nn.Module) -> None:
            x = logits.clone().requires_grad_()
            loss(x, target).backward()

        with torch.no_grad():
            diff = abs(ours(logits, target).item() - ref(logits, target).item())
        case = f"{name} fwd+bwd 8x1x{size}x{size}"
        row = compare(case, lambda ours=ours: step(ours), lambda ref=ref: step(ref), "MONAI 1.x", repeats)
        row.extra["|ours - MONAI|"] = f"{diff:.1e}"
        rows.append(row)

    lab = _touching_objects((size, size), 50 if size == 512 else 15)
    out = losses.border_weight_map(lab)
    err = float(np.abs(out - _slow_weight_map(lab)).max())
    row = compare(
        f"border_weight_map {size}x{size}, {len(np.unique(lab)) - 1} touching objects",
        lambda: losses.border_weight_map(lab),
        lambda: _slow_weight_map(lab),
        "one EDT per object",
        repeats,
    )
    row.extra["max abs diff"] = f"{err:.1e}"
    rows.append(row)
    return rows
