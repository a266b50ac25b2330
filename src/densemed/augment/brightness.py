"""Brightness: an additive offset per sample, ``x' = x + delta``.

``delta`` is uniform in ``[-d, d]`` (on z-scored images, in units of the image's standard deviation).
"""

from __future__ import annotations

from typing import Any

import torch

from densemed.augment._common import (
    Generator,
    as_compute,
    check_p,
    coin,
    per_sample,
    symmetric_range,
    uniform,
)


class Brightness:
    """Add ``delta[b]`` to every pixel of sample ``b``.

    Args:
        delta: (B,) offsets.

    Shape:
        ``(B, C, *S) -> (B, C, *S)``, same dtype.

    Example:
        >>> print(Brightness(torch.tensor([0.5]))(torch.zeros(1, 1, 2, 2)).flatten().tolist())
        [0.5, 0.5, 0.5, 0.5]
    """

    def __init__(self, delta: torch.Tensor) -> None:
        self.delta = delta.double().cpu()

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Shifted copy of ``image``."""
        if not self.delta.any():
            return image
        x = as_compute(image)
        return (x + per_sample(self.delta, x)).to(image.dtype)


class RandomBrightness:
    """With probability ``p`` per sample, add an offset from ``[-delta, delta]`` (or ``[low, high]``)."""

    def __init__(self, p: float = 0.15, delta: Any = 0.1) -> None:
        self.p = check_p(p, "augment.brightness")
        self.delta = symmetric_range(delta, "augment.brightness.delta")

    def sample(self, batch_size: int, generator: Generator = None) -> Brightness:
        """Draw per-sample offsets."""
        apply = coin(batch_size, self.p, generator)
        return Brightness(uniform(batch_size, *self.delta, generator) * apply)
