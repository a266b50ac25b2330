"""2D slices of 3D volumes: fold a slice axis into the batch and back, pad slices to a training size.

A 2D network runs on a volume ``(B, C, X, Y, Z)`` slice by slice when the slice axis (a spatial
axis ``a`` in 0, 1, 2) is folded into the batch::

    to_slices(x, a)             (B, C, *S)  ->  (B * D, C, H, W)      D = S[a], (H, W) = S without a
    from_slices(y, B, a)        (B * D, K, H, W)  ->  (B, K, *S)      inverse (the slice axis back at a)
    from_slices(y, B, None)     (B * D, K, *R)    ->  (B, K, *R, D)   per-slice outputs that are not maps

Slices are ordered batch-major: row ``b * D + k`` of the folded tensor is slice ``k`` of sample
``b``, so ``to_slices(x, 2)[b * D + k]`` equals ``x[b, :, :, :, k]``. A 2D tensor (``(B, C, H, W)``,
one slice per sample) passes through unchanged with ``axis=None``.

Zero padding to a fixed in-plane size follows the training patch sampler
(:func:`densemed.data.dataset.sample_patch`): a slice smaller than the patch is centred, with
``-((s - p) // 2)`` zeros before it along each axis (one more after than before when the
difference is odd), so a whole slice seen at inference has the same field of view as in training
(:func:`center_pad`, undone by :func:`center_crop`).

Per-slice seeds: :func:`slice_seed` gives one integer per ``(seed, slice index)``, so validation
and prediction draw the same k-space mask for slice ``k`` in every run and for every network
compared; :func:`step_seed` one per ``(seed, training step, sample, slice)`` (masks redrawn per
training sample, reproducible on resume).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from densemed.errors import DensemedError


def check_axis(axis: int, where: str = "axis") -> int:
    """A volume's slice axis among its three spatial axes (0, 1, 2)."""
    if isinstance(axis, bool) or not isinstance(axis, int) or not 0 <= axis <= 2:
        raise DensemedError(f"{where}: the slice axis must be 0, 1 or 2 (a spatial axis of the volume), got {axis!r}")
    return axis


def to_slices(x: torch.Tensor, axis: int | None) -> torch.Tensor:
    """Fold the slice axis of a volume batch into the batch: ``(B, C, *S) -> (B * D, C, H, W)``.

    Args:
        x: ``(B, C, X, Y, Z)``; with ``axis=None`` a 2D batch ``(B, C, H, W)`` returned as it is.
        axis: the spatial slice axis (0, 1 or 2), or None.

    Shape:
        ``(B, C, X, Y, Z)`` with ``axis=2`` -> ``(B * Z, C, X, Y)``.

    Example:
        >>> print(to_slices(torch.zeros(2, 1, 5, 6, 7), axis=1).shape)
        torch.Size([12, 1, 5, 7])
    """
    if axis is None:
        return x
    if x.dim() != 5:
        raise ValueError(f"to_slices needs a volume batch (B, C, X, Y, Z), got {tuple(x.shape)}")
    moved = x.movedim(2 + axis, 1)  # (B, D, C, H, W)
    return moved.reshape(-1, *moved.shape[2:])


def from_slices(y: torch.Tensor, batch: int, axis: int | None) -> torch.Tensor:
    """Inverse of :func:`to_slices`: ``(B * D, K, H, W) -> (B, K, *S)`` with the slice axis at ``axis``.

    Args:
        y: per-slice outputs ``(B * D, K, *R)``.
        batch: ``B``.
        axis: the slice axis the maps return to (0, 1, 2); None puts it last, ``(B, K, *R, D)``,
            for per-slice outputs that are not maps (an image-level score ``(B * D, K)`` becomes
            ``(B, K, D)``).

    Example:
        >>> print(from_slices(torch.zeros(12, 3, 5, 7), batch=2, axis=1).shape)
        torch.Size([2, 3, 5, 6, 7])
    """
    if y.shape[0] % batch:
        raise ValueError(f"{y.shape[0]} slices do not split into a batch of {batch}")
    per = y.reshape(batch, y.shape[0] // batch, *y.shape[1:])  # (B, D, K, *R)
    return per.movedim(1, -1 if axis is None else 2 + axis)


def slice_axis_of(model: nn.Module, dims: int, task: str) -> int | None:
    """The slice axis of a network on volumes (its ``slice_axis``, see ``slicewise``); None for 2D data.

    A task that works slice by slice refuses a volume network without one (``task`` names it).
    """
    if dims == 2:
        return None
    from densemed.nets.heads import unwrap  # local: densemed.nets imports this module

    axis = getattr(unwrap(model), "slice_axis", None)
    if axis is None:
        raise DensemedError(
            f"model: task {task} on volumes (data.dims: 3) needs a 2D network applied slice by slice, "
            "e.g. model: {name: slicewise, axis: 0, net: {name: ...}}"
        )
    return int(axis)


def padded_size(spatial: Sequence[int], patch: Sequence[int], axis: int | None) -> list[int]:
    """Every in-plane size at least the patch's (the slice axis keeps its length)."""
    return [s if d == axis else max(int(s), int(p)) for d, (s, p) in enumerate(zip(spatial, patch))]


def center_pad(x: torch.Tensor, size: Sequence[int]) -> tuple[torch.Tensor, list[slice]]:
    """Zero-pad the last ``len(size)`` dims of ``x`` up to ``size``, centred as the patch sampler does.

    Dims already at least ``size`` are left alone. Returns the padded tensor and the index
    (one slice per padded dim) that crops it back (:func:`center_crop`).

    Example:
        >>> y, back = center_pad(torch.ones(1, 1, 3, 5), [6, 4])
        >>> print(y.shape, back)
        torch.Size([1, 1, 6, 5]) [slice(2, 5, None), slice(0, 5, None)]
    """
    spatial = x.shape[-len(size):]
    pads: list[int] = []
    back = []
    for s, p in zip(spatial, size):
        before = -((s - p) // 2) if s < p else 0  # the sampler's start (s - p) // 2, negated
        after = max(p - s - before, 0)
        back.append(slice(before, before + s))
        pads.append((before, after))  # type: ignore[arg-type]
    flat = [v for pair in reversed(pads) for v in pair]  # F.pad wants the last dim first
    return (F.pad(x, flat) if any(flat) else x), back


def center_crop(x: torch.Tensor, back: Sequence[slice]) -> torch.Tensor:
    """Undo :func:`center_pad` on a tensor whose last ``len(back)`` dims were padded."""
    return x[(Ellipsis, *back)]


def slice_seed(seed: int, index: int) -> int:
    """A reproducible seed for slice ``index`` of any image under ``seed`` (validation and prediction masks).

    Example:
        >>> print(slice_seed(0, 3) == slice_seed(0, 3), slice_seed(0, 3) == slice_seed(1, 3))
        True False
    """
    return int(np.random.SeedSequence([int(seed), 1, int(index)]).generate_state(1)[0])


def step_seed(seed: int, step: int, sample: int, index: int) -> int:
    """A reproducible seed for slice ``index`` of batch sample ``sample`` at training step ``step``."""
    return int(np.random.SeedSequence([int(seed), 2, int(step), int(sample), int(index)]).generate_state(1)[0])
