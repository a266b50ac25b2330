"""Random flips along chosen spatial axes (mirroring), each axis flipped independently.

Sampling map in centred pixel coordinates: ``q_i = -p_i`` on flipped axes, ``q_i = p_i`` elsewhere;
alone (or with :mod:`rot90`) it runs as an exact ``torch.flip``. Flipping twice is the identity,
which is also what test-time augmentation uses to undo it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from densemed.augment._common import Generator, check_p, coin
from densemed.augment.warp import Geometric, Warp
from densemed.errors import DensemedError


class Flip(Geometric):
    """Flip each sample along its chosen spatial axes.

    Args:
        flips: (B, d) bool, ``flips[b, i]`` flips spatial axis ``i`` (0 = first spatial axis) of sample ``b``.

    Shape:
        ``image`` (B, C, *S) -> (B, C, *S); every map likewise.

    Example:
        >>> x = torch.arange(4.0).view(1, 1, 2, 2)
        >>> print(Flip(torch.tensor([[False, True]]))({"image": x})["image"].flatten().tolist())
        [1.0, 0.0, 3.0, 2.0]
    """

    def __init__(self, flips: torch.Tensor) -> None:
        self.flips = flips.to(torch.bool).cpu()

    def to_warp(self, size: torch.Size, device: torch.device) -> Warp:
        """Diagonal ``+-1`` sampling matrices."""
        if self.flips.shape[1] != len(size):
            raise DensemedError(f"augment.flip: {self.flips.shape[1]} axes given for {len(size)}-D images")
        w = Warp.identity(self.flips.shape[0], len(size))
        w.matrix = torch.diag_embed(1.0 - 2.0 * self.flips.double())
        return w


class RandomFlip:
    """Flip each chosen axis of each sample with probability ``p``.

    Args:
        p: probability per axis and sample.
        axes: spatial axes that may flip (0 = first spatial axis); ``None``: all.
    """

    def __init__(self, p: float = 0.5, axes: Sequence[int] | None = None) -> None:
        self.p = check_p(p, "augment.flip")
        if axes is not None and (
            not isinstance(axes, (list, tuple)) or not all(isinstance(a, int) and 0 <= a < 3 for a in axes)
        ):
            raise DensemedError(f"augment.flip.axes: must be a list of spatial axes (0, 1, 2), got {axes!r}")
        self.axes = None if axes is None else sorted(set(axes))

    def sample(self, batch_size: int, size: torch.Size, generator: Generator = None) -> Flip:
        """Draw the flips of one batch."""
        dims = len(size)
        axes = range(dims) if self.axes is None else self.axes
        if any(a >= dims for a in axes):
            raise DensemedError(f"augment.flip.axes: {self.axes} invalid for {dims}-D images")
        allowed = torch.zeros(dims, dtype=torch.bool)
        allowed[list(axes)] = True
        return Flip(coin(batch_size * dims, self.p, generator).view(batch_size, dims) & allowed)
