"""Shared helpers for the augmentation transforms: parameter ranges, per-sample draws, batch checks.

All random draws happen on a CPU ``torch.Generator`` (or torch's global generator when none is
given), always drawing the same number of values whatever the outcome of the coin flips, so that
one seed gives one output on every device. Only the drawn parameters move to the batch's device.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from densemed.errors import DensemedError
from densemed.registry import closest

Generator = torch.Generator | None


def uniform(n: int | Sequence[int], low: float, high: float, generator: Generator) -> torch.Tensor:
    """``n`` values uniform in ``[low, high)`` as float64 on the CPU."""
    shape = (n,) if isinstance(n, int) else tuple(n)
    return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)


def coin(n: int, p: float, generator: Generator) -> torch.Tensor:
    """``n`` independent Bernoulli(``p``) draws as a bool tensor on the CPU."""
    return torch.rand(n, generator=generator, dtype=torch.float64) < p


def coin_or_one(n: int, p: float, value_range: tuple[float, float], generator: Generator) -> torch.Tensor:
    """``n`` float64 factors: uniform in ``value_range`` with probability ``p`` each, else 1 (untouched).

    Draws the coins first, then ``n`` uniform values whatever the coins say (one seed, one output).
    """
    apply = coin(n, p, generator)
    f = uniform(n, *value_range, generator)
    return torch.where(apply, f, torch.ones_like(f))


def device_generator(seed: int, device: torch.device) -> torch.Generator:
    """A generator on ``device`` seeded from a CPU draw, so noise is made where the batch lives."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    return g


def draw_seed(generator: Generator) -> int:
    """One 62-bit seed from ``generator``."""
    return int(torch.randint(0, 2**62, (1,), generator=generator).item())


def check_p(p: Any, key: str) -> float:
    """Validate a probability."""
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise DensemedError(f"{key}.p: must be a number in [0, 1], got {p!r}")
    return float(p)


def symmetric_range(value: Any, key: str) -> tuple[float, float]:
    """``r`` -> ``(-r, r)``; ``[lo, hi]`` -> ``(lo, hi)``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if value < 0:
            raise DensemedError(f"{key}: must be >= 0, got {value!r}")
        return -float(value), float(value)
    return pair(value, key)


def pair(value: Any, key: str, positive: bool = False) -> tuple[float, float]:
    """A ``[low, high]`` range with ``low <= high``."""
    ok = isinstance(value, (list, tuple)) and len(value) == 2
    ok = ok and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    if not ok or value[0] > value[1]:
        raise DensemedError(f"{key}: must be a range [low, high] with low <= high, got {value!r}")
    if positive and value[0] <= 0:
        raise DensemedError(f"{key}: must be > 0, got {value!r}")
    return float(value[0]), float(value[1])


def check_keys(cfg: dict[str, Any], allowed: Sequence[str], where: str) -> None:
    """Reject unknown keys, suggesting the closest valid one."""
    for k in cfg:
        if k not in allowed:
            hint = closest(k, allowed, cutoff=0.6)
            raise DensemedError(f"{where}: unknown key {k!r}{hint or ' (valid: ' + ', '.join(allowed) + ')'}")


def spatial_roles(batch: dict[str, Any]) -> tuple[torch.Tensor, list[str]]:
    """Check a batch and return its image and the keys of every spatial tensor (image first).

    A spatial tensor is any tensor with the image's number of dimensions; it must have the image's
    batch size and spatial shape. Other values (lists of names, per-sample scalars) pass through.
    """
    image = batch.get("image")
    if not isinstance(image, torch.Tensor):
        raise DensemedError("augment: the batch needs an 'image' tensor (B, C, *spatial)")
    if image.ndim not in (4, 5) or not image.is_floating_point():
        raise DensemedError(
            f"augment: 'image' must be a float tensor (B, C, H, W) or (B, C, D, H, W), got "
            f"{tuple(image.shape)} {image.dtype}"
        )
    keys = ["image"]
    for k, v in batch.items():
        if k == "image" or not isinstance(v, torch.Tensor) or v.ndim != image.ndim:
            continue
        if v.shape[0] != image.shape[0] or v.shape[2:] != image.shape[2:]:
            raise DensemedError(
                f"augment: {k!r} has shape {tuple(v.shape)}, expected (B, C, *spatial) matching "
                f"'image' {tuple(image.shape)}"
            )
        keys.append(k)
    return image, keys


def as_compute(x: torch.Tensor) -> torch.Tensor:
    """Float32 copy for arithmetic (float16/bfloat16 grids and sums lose whole pixels); float64 kept."""
    return x if x.dtype in (torch.float32, torch.float64) else x.float()


def per_sample(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Shape a (B,) parameter as (B, 1, 1, ...) on ``like``'s device and dtype for broadcasting."""
    return v.to(device=like.device, dtype=like.dtype).view(-1, *([1] * (like.ndim - 1)))


def on_samples(
    image: torch.Tensor, selected: torch.Tensor, fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Copy of ``image`` with ``fn`` applied to the samples where ``selected`` (B,) is True.

    ``fn(sub, idx)`` gets those samples ``sub`` (compute dtype, see :func:`as_compute`) and their
    CPU indices ``idx`` (to pick per-sample parameters) and returns their new values. With no
    sample selected ``image`` itself is returned; otherwise a copy in ``image``'s dtype.
    """
    idx = selected.nonzero().flatten()
    if len(idx) == 0:
        return image
    x = as_compute(image)
    x = x.clone() if x is image else x
    d = idx.to(x.device)
    x[d] = fn(x[d], idx)
    return x.to(image.dtype)
