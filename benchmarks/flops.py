"""Counting convolution FLOPs of a network and measuring this machine's float32 peak."""

from __future__ import annotations

import math
import time

import torch
from torch import nn

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONVTS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def conv_flops(model: nn.Module, x: torch.Tensor) -> int:
    """Forward FLOPs (2 per multiply-add) of every (transposed) convolution for input ``x``."""
    total = 0

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        k = math.prod(mod.kernel_size)
        if isinstance(mod, _CONVTS):  # every input element is scattered through the kernel
            total += 2 * inp[0].numel() * k * mod.out_channels // mod.groups
        else:  # every output element gathers the kernel over in_channels / groups
            total += 2 * out.numel() * k * mod.in_channels // mod.groups

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, _CONVS + _CONVTS)]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total


def matmul_peak_flops(n: int = 2048, repeats: int = 5, device: torch.device | str = "cpu") -> float:
    """Best float32 FLOP/s of an ``n x n`` matrix product, the practical peak of ``device``."""
    from benchmarks.harness import sync

    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    a @ b
    best = math.inf
    for _ in range(repeats):
        sync()
        t = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best
