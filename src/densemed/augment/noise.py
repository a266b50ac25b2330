"""Additive Gaussian noise on the image: ``x' = x + sigma * n``, ``n ~ N(0, 1)`` per pixel and channel.

``sigma`` is drawn per sample, uniform in the configured range (nnU-Net-style ``[0, 0.1]`` on
z-scored images). The noise itself is drawn on the image's device from a seed taken from the CPU
generator, so a seed reproduces it without moving a noise volume between devices.
"""

from __future__ import annotations

from typing import Any

import torch

from densemed.augment._common import (
    Generator,
    check_p,
    coin,
    device_generator,
    draw_seed,
    on_samples,
    pair,
    per_sample,
    uniform,
)
from densemed.errors import DensemedError


class Noise:
    """Add Gaussian noise of standard deviation ``std[b]`` to sample ``b``.

    Args:
        std: (B,) standard deviations (0: untouched).
        seed: seed of the noise generator.

    Shape:
        ``(B, C, *S) -> (B, C, *S)``, same dtype.

    Example:
        >>> y = Noise(torch.tensor([0.0, 1.0]), seed=0)(torch.zeros(2, 1, 64, 64))
        >>> print(y[0].abs().max().item(), round(y[1].std().item(), 1))
        0.0 1.0
    """

    def __init__(self, std: torch.Tensor, seed: int = 0) -> None:
        self.std = std.double().cpu()
        self.seed = seed

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Noisy copy of ``image``."""
        return on_samples(image, self.std > 0, self._add)

    def _add(self, sub: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Selected samples ``sub`` plus their noise."""
        g = device_generator(self.seed, sub.device)
        noise = torch.randn(sub.shape, generator=g, device=sub.device, dtype=sub.dtype)
        return sub + noise * per_sample(self.std[idx], sub)


class RandomNoise:
    """With probability ``p`` per sample, add Gaussian noise with ``std`` drawn from a range.

    Args:
        p: probability per sample.
        std: ``s`` for ``[0, s]`` or ``[low, high]``.
    """

    def __init__(self, p: float = 0.15, std: Any = 0.1) -> None:
        self.p = check_p(p, "augment.noise")
        if isinstance(std, (int, float)) and not isinstance(std, bool):
            if std < 0:
                raise DensemedError(f"augment.noise.std: must be >= 0, got {std!r}")
            std = [0.0, std]
        self.std = pair(std, "augment.noise.std")
        if self.std[0] < 0:
            raise DensemedError(f"augment.noise.std: must be >= 0, got {std!r}")

    def sample(self, batch_size: int, generator: Generator = None) -> Noise:
        """Draw per-sample standard deviations and a noise seed."""
        apply = coin(batch_size, self.p, generator)
        std = uniform(batch_size, *self.std, generator) * apply
        return Noise(std, draw_seed(generator))
