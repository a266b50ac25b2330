"""Contrast: scale each channel about its mean, ``x' = (x - m) f + m``.

``m`` is the per-sample, per-channel mean over space, ``f`` uniform in the configured range (nnU-Net uses
[0.75, 1.25]).
"""

from __future__ import annotations

from typing import Any

import torch

from densemed.augment._common import Generator, check_p, coin_or_one, on_samples, pair, per_sample


class Contrast:
    """Scale sample ``b`` about its channel means by ``factor[b]``.

    Args:
        factor: (B,) contrast factors (1: untouched).

    Shape:
        ``(B, C, *S) -> (B, C, *S)``, same dtype.

    Example:
        >>> x = torch.tensor([[[[0.0, 2.0]]]])
        >>> print(Contrast(torch.tensor([2.0]))(x).flatten().tolist())
        [-1.0, 3.0]
    """

    def __init__(self, factor: torch.Tensor) -> None:
        self.factor = factor.double().cpu()

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Copy of ``image`` with scaled contrast."""
        return on_samples(image, self.factor != 1, self._scale)

    def _scale(self, sub: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Selected samples ``sub`` scaled about their channel means."""
        mean = sub.mean(dim=tuple(range(2, sub.ndim)), keepdim=True)
        return (sub - mean) * per_sample(self.factor[idx], sub) + mean


class RandomContrast:
    """With probability ``p`` per sample, scale contrast by a factor drawn from ``range``."""

    def __init__(self, p: float = 0.15, range: Any = (0.75, 1.25)) -> None:  # noqa: A002 - recipe key
        self.p = check_p(p, "augment.contrast")
        self.range = pair(list(range), "augment.contrast.range", positive=True)

    def sample(self, batch_size: int, generator: Generator = None) -> Contrast:
        """Draw per-sample factors."""
        return Contrast(coin_or_one(batch_size, self.p, self.range, generator))
