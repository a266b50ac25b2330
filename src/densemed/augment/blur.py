"""Gaussian blur with a per-sample ``sigma`` (pixels), separable along every spatial axis.

Each sample is blurred as

    x' = x * g_sigma,  g_sigma(k) = exp(-k^2 / (2 sigma^2)) / sum_j exp(-j^2 / (2 sigma^2)),
    |k| <= ceil(3 sigma),

one grouped 1-D convolution per axis for all blurred samples and channels at once (each sample
its own kernel), with reflect padding at the borders (replicate where an axis is too short).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from densemed.augment._common import Generator, check_p, coin, on_samples, pair, uniform
from densemed.errors import DensemedError


def gaussian_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """Normalised 1-D kernels (n, 2 radius + 1) for ``sigma`` (n,); ``sigma = 0`` is a delta."""
    k = torch.arange(-radius, radius + 1, dtype=torch.float64)
    s = sigma.double().clamp_min(1e-6).view(-1, 1)
    g = torch.exp(-(k**2) / (2 * s**2))
    return g / g.sum(dim=1, keepdim=True)


class Blur:
    """Blur sample ``b`` with a Gaussian of standard deviation ``sigma[b]`` pixels.

    Args:
        sigma: (B,) standard deviations (0: untouched).

    Shape:
        ``(B, C, *S) -> (B, C, *S)``, same dtype.

    Example:
        >>> x = torch.zeros(1, 1, 9, 9); x[0, 0, 4, 4] = 1
        >>> print(round(Blur(torch.tensor([1.0]))(x).sum().item(), 4))
        1.0
    """

    def __init__(self, sigma: torch.Tensor) -> None:
        self.sigma = sigma.double().cpu()

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Blurred copy of ``image``."""
        return on_samples(image, self.sigma > 0, self._blur)

    def _blur(self, sub: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Selected samples ``sub`` blurred with their sigmas."""
        n, c, *size = sub.shape
        radius = max(1, math.ceil(3 * float(self.sigma[idx].max())))
        kern = gaussian_kernels(self.sigma[idx], radius).to(device=sub.device, dtype=sub.dtype)
        kern = kern.repeat_interleave(c, dim=0)  # (n*c, k): one kernel per sample and channel
        y = sub.reshape(1, n * c, *size)
        conv = F.conv2d if len(size) == 2 else F.conv3d
        for axis in range(len(size)):
            shape = [n * c, 1] + [1] * len(size)
            shape[2 + axis] = 2 * radius + 1
            pad = [0, 0] * len(size)
            pad[2 * (len(size) - 1 - axis)] = pad[2 * (len(size) - 1 - axis) + 1] = radius
            mode = "reflect" if size[axis] > radius else "replicate"
            y = conv(F.pad(y, pad, mode=mode), kern.view(shape), groups=n * c)
        return y.view(n, c, *size)


class RandomBlur:
    """With probability ``p`` per sample, blur with ``sigma`` drawn from ``[low, high]`` (or fixed ``s``)."""

    def __init__(self, p: float = 0.1, sigma: Any = (0.5, 1.0)) -> None:
        self.p = check_p(p, "augment.blur")
        if isinstance(sigma, (int, float)) and not isinstance(sigma, bool):
            sigma = [sigma, sigma]
        self.sigma = pair(list(sigma), "augment.blur.sigma")
        if self.sigma[0] < 0:
            raise DensemedError(f"augment.blur.sigma: must be >= 0, got {sigma!r}")

    def sample(self, batch_size: int, generator: Generator = None) -> Blur:
        """Draw per-sample sigmas."""
        apply = coin(batch_size, self.p, generator)
        return Blur(uniform(batch_size, *self.sigma, generator) * apply)
