"""Differentiable augmentation for the discriminator of a conditional GAN (DiffAugment).

Zhao, Liu, Lin, Zhu, Han, "Differentiable Augmentation for Data-Efficient GAN Training",
NeurIPS 2020 (arXiv 2006.10738). With little data the discriminator memorises the real images;
augmenting only the reals would teach the generator to produce augmented images. DiffAugment
applies the same family of transforms ``T`` to real *and* generated images, for both the
discriminator and the generator step, and keeps every ``T`` differentiable so that the
generator's gradient passes through ``D(T(G(s)))``. Its three policies, on a batch ``x``
(per sample ``b``; ``m`` means over the axes said):

* ``color``: brightness ``x + u_b``, ``u_b ~ U(-0.5, 0.5)``; saturation
  ``m_c + (x - m_c) v_b``, ``v_b ~ U(0, 2)``, ``m_c`` the mean over channels (identity for one
  channel); contrast ``m + (x - m) w_b``, ``w_b ~ U(0.5, 1.5)``, ``m`` the mean over channels and
  space.
* ``translation``: an integer shift ``t_b`` per axis, uniform in ``[-r S, r S]`` with
  ``r = 1/8``, zero outside the image: ``out[p] = x[p - t_b]``.
* ``cutout``: a box of ``round(S / 2)`` pixels per axis centred uniformly in the image is set to 0.

The paper's ranges are kept. They were set for images in [-1, 1]; densemed's z-scored images
have a standard deviation of 1, so a brightness shift of at most 0.5 is half a standard deviation.

Conditional pairs (documented choices where the paper, which augments unconditional images, is
silent):

* the geometric parts (translation, cutout) are applied identically to the condition and the
  image of a pair — a shifted image with an unshifted label map would be a *wrong* pair, which
  the discriminator would learn to reject; the colour parts touch only the image (a one-hot
  condition scaled by 1.3 is no longer a label map);
* one draw is shared by every image passed in one call: ``aug(cond, real, fake, generator=g)``
  transforms the real and the generated batch of a discriminator step the same way. The
  distribution of ``T`` is the paper's, so its argument (``D`` sees ``T(x)`` and ``T(G(s))`` for
  the same ``T`` distribution) holds, and the pairing removes augmentation noise from the
  real/fake comparison.

As in :mod:`densemed.augment`, :class:`RandomDiffAugment` draws the parameters (on a CPU
``torch.Generator``, always the same number of values whatever the policy) and
:class:`DiffAugment` is its deterministic twin that applies them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from densemed.augment._common import Generator, uniform
from densemed.errors import DensemedError

POLICIES = ("color", "translation", "cutout")


@dataclass
class DiffAugment:
    """Apply one drawn DiffAugment transform per sample, identically to a condition and its images.

    Attributes:
        brightness: (B,) additive offsets, or ``None``.
        saturation: (B,) factors about the channel mean, or ``None``.
        contrast: (B,) factors about the image mean, or ``None``.
        shift: (B, d) int64 shifts in pixels (content moves by ``+shift``), or ``None``.
        cutout_start: (B, d) int64 first corner of the zeroed box (may be negative), or ``None``.
        cutout_size: box size per axis (pixels).

    Shape:
        condition ``(B, C_c, *S)``, images ``(B, C, *S)`` -> the same shapes.

    Example:
        >>> aug = DiffAugment(shift=torch.tensor([[0, 1]]))
        >>> c, x = aug(torch.ones(1, 1, 1, 3), torch.tensor([[[[1.0, 2.0, 3.0]]]]))
        >>> print(x.flatten().tolist(), c.flatten().tolist())
        [0.0, 1.0, 2.0] [0.0, 1.0, 1.0]
    """

    brightness: torch.Tensor | None = None
    saturation: torch.Tensor | None = None
    contrast: torch.Tensor | None = None
    shift: torch.Tensor | None = None
    cutout_start: torch.Tensor | None = None
    cutout_size: tuple[int, ...] = ()

    def __call__(self, condition: torch.Tensor, *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(condition, *images)`` transformed: colour on the images, geometry on all of them."""
        if not images:
            raise DensemedError("diffaugment: give a condition and at least one image batch")
        for x in images:
            if x.shape[0] != condition.shape[0] or x.shape[2:] != condition.shape[2:]:
                raise DensemedError(
                    f"diffaugment: image {tuple(x.shape)} does not match condition {tuple(condition.shape)}"
                )
        out = [condition] + [self.color(x) for x in images]
        return tuple(self.geometry(x) for x in out)

    def color(self, x: torch.Tensor) -> torch.Tensor:
        """Brightness, saturation, contrast (in that order, as in the paper's code)."""
        if self.brightness is not None:
            x = x + _per_sample(self.brightness, x)
        if self.saturation is not None and x.shape[1] > 1:
            mean = x.mean(dim=1, keepdim=True)
            x = mean + (x - mean) * _per_sample(self.saturation, x)
        if self.contrast is not None:
            mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
            x = mean + (x - mean) * _per_sample(self.contrast, x)
        return x

    def geometry(self, x: torch.Tensor) -> torch.Tensor:
        """Translation with zero fill, then cutout."""
        if self.shift is not None:
            x = translate(x, self.shift)
        if self.cutout_start is not None:
            x = x * cutout_mask(x.shape, self.cutout_start, self.cutout_size, x.device).to(x.dtype)
        return x


def _per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return v.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.ndim - 1)))


def translate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``out[b, :, p] = x[b, :, p - shift[b]]``, zero where ``p - shift[b]`` leaves the image.

    One ``gather`` per axis (differentiable in ``x``; its gradient is a scatter-add).

    Shape:
        ``(B, C, *S)``, shift ``(B, d)`` -> ``(B, C, *S)``.
    """
    b, dims = x.shape[0], x.ndim - 2
    if tuple(shift.shape) != (b, dims):
        raise DensemedError(f"diffaugment: shift {tuple(shift.shape)} for a batch {tuple(x.shape)}")
    shift = shift.to(device=x.device, dtype=torch.long)
    for a in range(dims):
        if not shift[:, a].any():
            continue
        n = x.shape[2 + a]
        src = torch.arange(n, device=x.device).view(1, n) - shift[:, a : a + 1]  # (B, n)
        view = [b, 1] + [1] * dims
        view[2 + a] = n
        inside = ((src >= 0) & (src < n)).view(view).to(x.dtype)
        index = src.clamp(0, n - 1).view(view).expand(x.shape)
        x = torch.gather(x, 2 + a, index) * inside
    return x


def cutout_mask(
    shape: Sequence[int], start: torch.Tensor, size: Sequence[int], device: torch.device | None = None
) -> torch.Tensor:
    """Mask ``(B, 1, *S)``: 0 inside the box ``start[b] <= p < start[b] + size``, 1 elsewhere."""
    b, dims = shape[0], len(shape) - 2
    inside = torch.ones((b, 1, *[1] * dims), dtype=torch.bool, device=device)
    start = start.to(device=device, dtype=torch.long)
    for a in range(dims):
        n = shape[2 + a]
        p = torch.arange(n, device=device).view(1, n)
        view = [b, 1] + [1] * dims
        view[2 + a] = n
        inside = inside & ((p >= start[:, a : a + 1]) & (p < start[:, a : a + 1] + size[a])).view(view)
    return ~inside


class RandomDiffAugment:
    """Draw DiffAugment parameters per sample; calling it draws and applies them.

    Args:
        policy: any of ``"color"``, ``"translation"``, ``"cutout"`` (default: all three).
        translation: maximum shift as a fraction of each axis (1/8).
        cutout: box side as a fraction of each axis (1/2).

    Shape:
        condition ``(B, C_c, *S)``, images ``(B, C, *S)`` -> the same shapes.

    Example:
        >>> aug = RandomDiffAugment()
        >>> g = torch.Generator().manual_seed(0)
        >>> cond, real, fake = aug(torch.zeros(2, 3, 16, 16), torch.randn(2, 1, 16, 16),
        ...                        torch.randn(2, 1, 16, 16), generator=g)
        >>> print(fake.shape)
        torch.Size([2, 1, 16, 16])
    """

    def __init__(
        self, policy: Sequence[str] = POLICIES, translation: float = 0.125, cutout: float = 0.5
    ) -> None:
        if isinstance(policy, str):
            policy = [p for p in policy.split(",") if p]
        unknown = [p for p in policy if p not in POLICIES]
        if unknown:
            raise DensemedError(f"diffaugment.policy: unknown {unknown}; use any of {', '.join(POLICIES)}")
        self.policy = tuple(policy)
        for key, v in (("translation", translation), ("cutout", cutout)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v <= 1.0:
                raise DensemedError(f"diffaugment.{key}: must be a fraction in [0, 1], got {v!r}")
        self.translation, self.cutout = float(translation), float(cutout)

    def sample(self, batch_size: int, size: Sequence[int], generator: Generator = None) -> DiffAugment:
        """Draw one transform per sample for images of spatial ``size``."""
        n, dims = batch_size, len(size)
        # the paper's ranges; always drawn so the stream does not depend on the policy
        brightness = uniform(n, -0.5, 0.5, generator)
        saturation = uniform(n, 0.0, 2.0, generator)
        contrast = uniform(n, 0.5, 1.5, generator)
        reach = [int(s * self.translation + 0.5) for s in size]
        u = uniform((n, dims), 0.0, 1.0, generator)
        shift = torch.stack([(u[:, a] * (2 * reach[a] + 1)).floor().long() - reach[a] for a in range(dims)], 1)
        box = tuple(int(s * self.cutout + 0.5) for s in size)
        u = uniform((n, dims), 0.0, 1.0, generator)
        centre = torch.stack([(u[:, a] * size[a]).floor().long() for a in range(dims)], 1)
        color = "color" in self.policy
        return DiffAugment(
            brightness=brightness if color else None,
            saturation=saturation if color else None,
            contrast=contrast if color else None,
            shift=shift if "translation" in self.policy else None,
            cutout_start=centre - torch.tensor([s // 2 for s in box]) if "cutout" in self.policy else None,
            cutout_size=box,
        )

    def __call__(
        self, condition: torch.Tensor, *images: torch.Tensor, generator: Generator = None
    ) -> tuple[torch.Tensor, ...]:
        """Draw one transform per sample and apply it to the condition and every image batch."""
        if condition.ndim < 3:
            raise DensemedError(f"diffaugment: condition must be (B, C, *S), got {tuple(condition.shape)}")
        return self.sample(condition.shape[0], condition.shape[2:], generator)(condition, *images)
