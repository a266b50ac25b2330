"""Gamma: a power law on the image rescaled to [0, 1] per sample and channel.

That is,

    x' = lo + (hi - lo) ((x - lo) / (hi - lo))^gamma,

``lo``/``hi`` the channel's minimum/maximum, so the intensity range is kept (as in nnU-Net's
gamma transform, which z-scored images need because they are not in [0, 1]). ``gamma`` is drawn
uniform in the configured range.
"""

from __future__ import annotations

from typing import Any

import torch

from densemed.augment._common import Generator, check_p, coin_or_one, on_samples, pair, per_sample


class Gamma:
    """Apply ``gamma[b]`` to sample ``b``.

    Args:
        gamma: (B,) exponents (1: untouched).

    Shape:
        ``(B, C, *S) -> (B, C, *S)``, same dtype.

    Example:
        >>> x = torch.tensor([[[[0.0, 1.0, 2.0]]]])
        >>> print(Gamma(torch.tensor([2.0]))(x).flatten().tolist())
        [0.0, 0.5, 2.0]
    """

    def __init__(self, gamma: torch.Tensor) -> None:
        self.gamma = gamma.double().cpu()

    def __call__(self, image: torch.Tensor) -> torch.Tensor:
        """Gamma-corrected copy of ``image``."""
        return on_samples(image, self.gamma != 1, self._power)

    def _power(self, sub: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Selected samples ``sub`` under their gammas."""
        axes = tuple(range(2, sub.ndim))
        lo, hi = sub.amin(dim=axes, keepdim=True), sub.amax(dim=axes, keepdim=True)
        span = (hi - lo).clamp_min(1e-8)  # constant channels stay constant
        return lo + span * ((sub - lo) / span).clamp(0, 1) ** per_sample(self.gamma[idx], sub)


class RandomGamma:
    """With probability ``p`` per sample, apply a gamma drawn from ``range``."""

    def __init__(self, p: float = 0.15, range: Any = (0.7, 1.5)) -> None:  # noqa: A002 - recipe key
        self.p = check_p(p, "augment.gamma")
        self.range = pair(list(range), "augment.gamma.range", positive=True)

    def sample(self, batch_size: int, generator: Generator = None) -> Gamma:
        """Draw per-sample exponents."""
        return Gamma(coin_or_one(batch_size, self.p, self.range, generator))
