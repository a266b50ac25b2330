"""Thick-slice simulation for super-resolution training (DeepResolve, Chaudhari et al. 2018).

A high-resolution (thin-slice) volume ``y`` becomes a low-resolution one by averaging blocks of
``factor`` consecutive slices along the slice ``axis`` (a thick slice integrates the signal of
the thin slices it covers), and is brought back to the high-resolution grid by cubic
interpolation along that axis, which is the network's input:

    lr[j]   = mean(y[j*f : (j+1)*f])                       (block average, :func:`downsample`)
    x[i]    = cubic_spline(lr)( (i - (f - 1) / 2) / f )     (:func:`upsample_cubic`)
    x       = degrade(y, f, axis)

The coordinate map puts each thick slice's sample at the centre of the ``f`` thin slices it
averaged (``scipy.ndimage.zoom(..., grid_mode=True)`` semantics).

Documented choices:

* Interpolation is a cubic B-spline (the spline ``scipy.ndimage`` uses at ``order=3``) with
  half-sample symmetric boundaries (``mode="reflect"``), evaluated along ``axis`` only. Along
  the other axes the grid is unchanged and a tricubic spline sampled at its knots reproduces
  the data exactly, so this *is* tricubic interpolation of the low-resolution volume, and equals
  ``scipy.ndimage.zoom(lr, zoom, order=3, mode="reflect", grid_mode=True)`` (tested, to 1e-6) at a
  fraction of its cost. :func:`tricubic_baseline` is this interpolation, the baseline
  DeepResolve has to beat (``degrade(y) == tricubic_baseline(downsample(y), ...)``).
* When the size along ``axis`` is not a multiple of ``factor`` the volume is padded by
  repeating its last slice up to the next multiple before averaging, and the interpolated
  volume is cropped back to the original size.
* Output dtype: float32 for float32 input, otherwise float64.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def _check(volume: np.ndarray, factor: int, axis: int) -> int:
    if not isinstance(factor, (int, np.integer)) or factor < 1:
        raise ValueError(f"factor must be a positive integer, got {factor!r}")
    if not -volume.ndim <= axis < volume.ndim:
        raise ValueError(f"axis {axis} out of range for a {volume.ndim}-D volume")
    return axis % volume.ndim


def _float(volume: np.ndarray) -> np.ndarray:
    return volume.astype(np.result_type(volume.dtype, np.float32), copy=False)


def downsample(volume: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """Average blocks of ``factor`` slices along ``axis`` (the thick slices).

    Shape:
        ``(..., n, ...) -> (..., ceil(n / factor), ...)`` along ``axis``.

    Example:
        >>> print(downsample(np.array([1.0, 3.0, 5.0, 7.0, 9.0]), 2, 0))
        [2. 6. 9.]
    """
    axis = _check(volume, factor, axis)
    v = np.moveaxis(_float(volume), axis, 0)
    n = v.shape[0]
    pad = (-n) % factor
    if pad:
        v = np.concatenate([v, np.repeat(v[-1:], pad, axis=0)], axis=0)
    blocks = v.reshape(v.shape[0] // factor, factor, *v.shape[1:]).mean(axis=1)
    return np.moveaxis(blocks, 0, axis)


def _cubic_bspline(t: np.ndarray) -> list[np.ndarray]:
    """Weights of the 4 taps ``floor(c) - 1 .. floor(c) + 2`` for fractional position ``t``."""
    return [
        (1 - t) ** 3 / 6,
        (3 * t**3 - 6 * t**2 + 4) / 6,
        (-3 * t**3 + 3 * t**2 + 3 * t + 1) / 6,
        t**3 / 6,
    ]


def upsample_cubic(lr: np.ndarray, factor: int, axis: int, size: int | None = None) -> np.ndarray:
    """Cubic B-spline interpolation of ``lr`` back to the fine grid along ``axis``.

    Args:
        lr: low-resolution volume (thick slices along ``axis``).
        factor: slice-thickness factor.
        axis: slice axis.
        size: fine-grid size along ``axis`` (default ``factor * lr.shape[axis]``).

    Shape:
        ``(..., m, ...) -> (..., size, ...)`` along ``axis``.
    """
    axis = _check(lr, factor, axis)
    m = lr.shape[axis]
    size = factor * m if size is None else size
    if size > factor * m:
        raise ValueError(f"size {size} exceeds factor * slices = {factor * m}")
    coef = np.moveaxis(_float(lr), axis, 0)
    if m > 1:
        # interpolating spline: coefficients such that the spline passes through the samples
        coef = ndimage.spline_filter1d(coef, order=3, axis=0, mode="reflect", output=coef.dtype)
    c = (np.arange(size) - (factor - 1) / 2) / factor  # fine index -> coarse coordinate
    base = np.floor(c).astype(np.int64)
    weights = _cubic_bspline(c - base)
    out = np.zeros((size, *coef.shape[1:]), dtype=coef.dtype)
    bshape = (size,) + (1,) * (coef.ndim - 1)
    for k, w in enumerate(weights):
        j = base + k - 1
        # half-sample symmetric reflection: -1 -> 0, -2 -> 1, m -> m - 1 (period 2m)
        j = np.mod(j, 2 * m)
        j = np.where(j >= m, 2 * m - 1 - j, j)
        out += w.reshape(bshape).astype(coef.dtype) * coef[j]
    return np.moveaxis(out, 0, axis)


def tricubic_baseline(lr: np.ndarray, factor: int, axis: int, size: int | None = None) -> np.ndarray:
    """The interpolation baseline: tricubic (cubic B-spline) interpolation of thick slices.

    Identical to :func:`upsample_cubic`; named for evaluation reports ("tricubic" PSNR/SSIM).
    """
    return upsample_cubic(lr, factor, axis, size)


def degrade(volume: np.ndarray, factor: int, axis: int) -> np.ndarray:
    """Simulate thick slices: block-average ``factor`` slices, interpolate back to the grid.

    Args:
        volume: high-resolution volume, any number of dims (usually ``(D, H, W)``).
        factor: slice-thickness factor (2 or 4 in the issue); 1 returns a float copy.
        axis: slice axis.

    Shape:
        same shape as ``volume``.

    Example:
        >>> y = np.random.default_rng(0).random((8, 8, 8))
        >>> print(degrade(y, 2, axis=2).shape)
        (8, 8, 8)
    """
    axis = _check(volume, factor, axis)
    if factor == 1:
        return _float(volume).copy()
    return upsample_cubic(downsample(volume, factor, axis), factor, axis, volume.shape[axis])
