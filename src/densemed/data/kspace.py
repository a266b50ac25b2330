"""Simulated Cartesian undersampled MRI from a real 2D slice (the CS-MRI input of SegNetMRI).

A magnitude slice ``x`` (H, W) stands in for the fully sampled image. Its k-space is the centred,
orthonormal 2D discrete Fourier transform

    K = F x = fftshift(fft2(ifftshift(x), norm="ortho")),    x = F^-1 K = fftshift(ifft2(ifftshift(K), norm="ortho"))

over the last two axes (:func:`fft2c`, :func:`ifft2c`, numpy or torch). With centred indices
``u = k - H // 2`` and ``m' = m - H // 2`` (same along W) this is exactly
``K[u, v] = (HW)^-1/2 sum_{m', n'} x[m', n'] exp(-2 pi i (u m' / H + v n' / W))``: the zero
frequency sits at ``(H // 2, W // 2)`` and the transform is unitary (Parseval holds), so
``F^-1 F x = x`` to float precision and image and k-space errors have the same scale.

A scanner measures k-space along lines: the frequency-encoding (readout) direction is sampled
in full for every acquired phase-encoding line. Here **the phase-encoding axis is H (rows, axis
-2)**: a Cartesian mask ``M`` (:func:`cartesian_mask`) keeps whole rows ``K[i, :]``. The measured
k-space is ``k0 = M K`` (zeros off the mask) and the network's input is the zero-filled image
``x_zf = F^-1 (M K)`` (:func:`zero_filled`).

Documented choices:

* **Line count and rounding**: ``n = floor(rate * H + 0.5)`` lines (round half up, at least
  one), so the achieved rate ``n / H`` is within half a line of the request. The centre block has
  ``n_c = min(floor(center_fraction * H + 0.5), n)`` lines (never more than ``n``, so the rate
  is always the requested one), the rows ``H // 2 - n_c // 2 .. H // 2 - n_c // 2 + n_c - 1``
  around the zero frequency. The other ``n - n_c`` lines are drawn uniformly without replacement
  from the remaining rows (uniform random, as in fastMRI's random masks; no variable density).
* **Seed**: ``seed`` is an int (same int, same mask), a ``numpy.random.Generator`` (drawn from it),
  or None (fresh entropy). A recipe redraws the mask per sample by passing a per-sample seed.
* **Network input** (``input_mode``): ``"complex"`` (default) gives 2 channels, the real and
  imaginary parts of ``x_zf``; the zero-filled image of a real slice is complex (the mask is not
  Hermitian symmetric), and keeping both parts lets a data-consistency layer work exactly.
  ``"magnitude"`` gives 1 channel, ``|x_zf|``, the image a radiologist would look at.
* **Target**: the fully sampled image in the input's channel layout: ``(x, 0)`` for
  ``"complex"`` (a real slice has zero imaginary part), ``x`` for ``"magnitude"``, so a
  reconstruction head with the input's channels is compared channel by channel.
* The slice is used as given (float32); normalise intensities before simulating.
"""

from __future__ import annotations

import math
from typing import TypeVar

import numpy as np
import torch

from densemed.errors import DensemedError

Array = TypeVar("Array", np.ndarray, torch.Tensor)
INPUT_MODES = ("complex", "magnitude")
_AXES = (-2, -1)


def fft2c(x: Array) -> Array:
    """Centred orthonormal 2D FFT over the last two axes: ``fftshift(fft2(ifftshift(x), norm="ortho"))``.

    Shape:
        ``(..., H, W)`` real or complex -> ``(..., H, W)`` complex (numpy array or torch tensor).

    Example:
        >>> print(fft2c(np.ones((4, 4)))[2, 2])
        (4+0j)
    """
    if isinstance(x, torch.Tensor):
        return torch.fft.fftshift(torch.fft.fft2(torch.fft.ifftshift(x, dim=_AXES), norm="ortho"), dim=_AXES)
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x, axes=_AXES), norm="ortho"), axes=_AXES)


def ifft2c(k: Array) -> Array:
    """Inverse of :func:`fft2c`: ``fftshift(ifft2(ifftshift(k), norm="ortho"))``.

    Shape:
        ``(..., H, W)`` complex -> ``(..., H, W)`` complex.

    Example:
        >>> print(np.allclose(ifft2c(fft2c(np.eye(3))), np.eye(3)))
        True
    """
    if isinstance(k, torch.Tensor):
        return torch.fft.fftshift(torch.fft.ifft2(torch.fft.ifftshift(k, dim=_AXES), norm="ortho"), dim=_AXES)
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=_AXES), norm="ortho"), axes=_AXES)


def kspace(image: Array) -> Array:
    """k-space of an image: the centred orthonormal 2D FFT (:func:`fft2c`) of its last two axes."""
    return fft2c(image)


def zero_filled(kspace: Array, mask: Array) -> Array:
    """Zero-filled reconstruction ``F^-1 (M K)``: inverse FFT of the masked k-space.

    Shape:
        ``kspace (..., H, W)`` complex, ``mask`` broadcastable to it (``(H, W)`` or ``(..., 1, H, W)``)
        -> ``(..., H, W)`` complex.

    Example:
        >>> x = np.arange(12.0).reshape(3, 4)
        >>> print(np.allclose(zero_filled(kspace(x), np.ones((3, 4))), x))
        True
    """
    return ifft2c(kspace * mask)


def _check_rate(rate: float, center_fraction: float, where: str) -> None:
    if not isinstance(rate, (int, float)) or not 0.0 < float(rate) <= 1.0:
        raise DensemedError(f"{where}.rate: the sampling rate must be in (0, 1], got {rate!r}")
    if not isinstance(center_fraction, (int, float)) or not 0.0 <= float(center_fraction) <= 1.0:
        raise DensemedError(f"{where}.center_fraction: must be in [0, 1], got {center_fraction!r}")


def cartesian_mask(
    shape: tuple[int, int],
    rate: float = 0.25,
    center_fraction: float = 0.08,
    seed: int | np.random.Generator | None = None,
    where: str = "data.kspace",
) -> np.ndarray:
    """A Cartesian undersampling mask: random phase-encoding rows plus a fully sampled centre.

    Args:
        shape: ``(H, W)``; rows (axis 0, H) are the phase-encoding lines.
        rate: fraction of rows kept, in (0, 1]; ``floor(rate * H + 0.5)`` rows (at least one).
        center_fraction: fraction of rows in the fully sampled centre block (capped at the row count).
        seed: int, ``numpy.random.Generator`` or None (see the module docstring).
        where: recipe key named in error messages.

    Returns:
        float32 mask of 0 and 1, constant along each row.

    Shape:
        ``(H, W)``.

    Example:
        >>> m = cartesian_mask((64, 48), rate=0.25, center_fraction=0.08, seed=0)
        >>> print(m.shape, int(m[:, 0].sum()))
        (64, 48) 16
    """
    _check_rate(rate, center_fraction, where)
    if len(shape) != 2 or min(shape) < 1:
        raise DensemedError(f"{where}: a mask needs a 2D shape (H, W), got {tuple(shape)}")
    h, w = int(shape[0]), int(shape[1])
    n_lines = min(h, max(1, math.floor(rate * h + 0.5)))
    n_center = min(n_lines, math.floor(center_fraction * h + 0.5))
    start = h // 2 - n_center // 2
    rows = np.zeros(h, dtype=bool)
    rows[start : start + n_center] = True
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    rest = np.flatnonzero(~rows)
    rows[rng.choice(rest, size=n_lines - n_center, replace=False)] = True
    return np.repeat(rows[:, None], w, axis=1).astype(np.float32)


def complex_to_channels(z: Array, mode: str = "complex") -> Array:
    """Complex image ``(..., H, W)`` -> channels ``(..., C, H, W)``: (real, imag) or magnitude.

    The channel axis is inserted just before H (``(H, W) -> (C, H, W)``, ``(B, H, W) -> (B, C, H, W)``).
    """
    if mode not in INPUT_MODES:
        raise DensemedError(f"data.kspace.input_mode: {mode!r} is not one of {', '.join(INPUT_MODES)}")
    if isinstance(z, torch.Tensor):
        parts = [z.real, z.imag] if mode == "complex" else [z.abs()]
        return torch.stack(parts, dim=-3)
    parts = [z.real, z.imag] if mode == "complex" else [np.abs(z)]
    return np.stack(parts, axis=-3)


def channels_to_complex(x: Array) -> Array:
    """Channels ``(..., C, H, W)`` -> complex ``(..., H, W)``: C == 2 is (real, imag), C == 1 is real."""
    c = x.shape[-3]
    if c not in (1, 2):
        raise ValueError(f"a complex image has 1 (real) or 2 (real, imag) channels, got {c}")
    real = x[..., 0, :, :]
    if isinstance(x, torch.Tensor):
        return torch.complex(real, x[..., 1, :, :] if c == 2 else torch.zeros_like(real))
    return real + 1j * x[..., 1, :, :] if c == 2 else real.astype(np.complex128)


def _as_slice(image: np.ndarray | torch.Tensor, where: str) -> np.ndarray:
    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim == 3:
        if arr.shape[0] != 1:
            raise DensemedError(
                f"{where}: k-space simulation needs single-channel (magnitude) images, got {arr.shape[0]} channels"
            )
        arr = arr[0]
    if arr.ndim != 2:
        raise DensemedError(f"{where}: k-space simulation needs a 2D slice (H, W) or (1, H, W), got shape {arr.shape}")
    if np.iscomplexobj(arr):
        raise DensemedError(f"{where}: k-space simulation needs a real-valued slice, got complex values")
    return arr.astype(np.float64)


def simulate(
    image: np.ndarray | torch.Tensor,
    rate: float = 0.25,
    center_fraction: float = 0.08,
    seed: int | np.random.Generator | None = None,
    input_mode: str = "complex",
    where: str = "data.kspace",
) -> dict[str, np.ndarray]:
    """One training sample of undersampled MRI from a fully sampled real slice.

    Args:
        image: the slice, ``(H, W)`` or ``(1, H, W)`` real; several channels (RGB) are an error.
        rate: sampling rate (fraction of phase-encoding rows), in (0, 1].
        center_fraction: fraction of rows in the fully sampled centre.
        seed: mask seed (see :func:`cartesian_mask`).
        input_mode: ``"complex"`` (2 channels, real and imaginary) or ``"magnitude"`` (1 channel).
        where: recipe key named in error messages.

    Returns:
        float32 arrays: ``image`` the zero-filled network input ``(C, H, W)``; ``kspace`` the
        measured k-space ``(2, H, W)`` (real, imag; zero off the mask); ``mask`` ``(1, H, W)``;
        ``target`` the fully sampled image in the input's layout ``(C, H, W)``.

    Shape:
        ``(H, W) -> {image: (C, H, W), kspace: (2, H, W), mask: (1, H, W), target: (C, H, W)}``
        with ``C = 2`` (complex) or 1 (magnitude).

    Example:
        >>> s = simulate(np.ones((16, 12)), rate=0.5, seed=0)
        >>> print({k: v.shape for k, v in s.items()})
        {'image': (2, 16, 12), 'kspace': (2, 16, 12), 'mask': (1, 16, 12), 'target': (2, 16, 12)}
    """
    if input_mode not in INPUT_MODES:
        raise DensemedError(f"{where}.input_mode: {input_mode!r} is not one of {', '.join(INPUT_MODES)}")
    x = _as_slice(image, where)
    mask = cartesian_mask(x.shape, rate, center_fraction, seed, where)
    k0 = kspace(x) * mask
    zf = ifft2c(k0)
    target = complex_to_channels(x.astype(np.complex128), input_mode)
    return {
        "image": complex_to_channels(zf, input_mode).astype(np.float32),
        "kspace": complex_to_channels(k0, "complex").astype(np.float32),
        "mask": mask[None],
        "target": target.astype(np.float32),
    }
