"""Padding and cropping so networks with strides accept any spatial size."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def pad_to_multiple(x: torch.Tensor, multiple: int, mode: str = "constant") -> tuple[torch.Tensor, list[int]]:
    """Pad the spatial dims of ``x`` (B, C, *S) at the end up to a multiple of ``multiple``.

    Returns the padded tensor and the original spatial size, for :func:`crop_to`.
    """
    size = list(x.shape[2:])
    pads: list[int] = []
    for s in reversed(size):  # F.pad wants the last dim first
        pads += [0, (-s) % multiple]
    if any(pads):
        if mode == "constant":
            x = F.pad(x, pads)
        else:
            x = F.pad(x, pads, mode=mode)
    return x, size


def crop_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop the spatial dims of ``x`` (B, C, *S) to ``size`` from the start (undoes padding at the end)."""
    index = (slice(None), slice(None)) + tuple(slice(0, s) for s in size)
    return x[index]


def center_crop_to(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Crop the spatial dims of ``x`` (B, C, *S) to ``size`` around the centre (FCN/U-Net skip alignment)."""
    index = [slice(None), slice(None)]
    for have, want in zip(x.shape[2:], size):
        start = (have - want) // 2
        index.append(slice(start, start + want))
    return x[tuple(index)]


def resize_like(x: torch.Tensor, ref: torch.Tensor, mode: str = "nearest") -> torch.Tensor:
    """Resize ``x`` (B, C, *S) to the spatial size of ``ref``; labels use ``nearest``."""
    if x.shape[2:] == ref.shape[2:]:
        return x
    if mode in ("linear", "bilinear", "trilinear"):
        mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[x.dim() - 2]
        return F.interpolate(x, size=ref.shape[2:], mode=mode, align_corners=False)
    return F.interpolate(x, size=ref.shape[2:], mode=mode)
