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

Tissue and intensities (used by the ``image`` task, :mod:`densemed.tasks.image`, and by the
evaluation, :mod:`densemed.metrics.image_quality`):

* :func:`tissue_mask`: the object of a high-resolution volume, ``volume > t`` with Otsu's ``t``
  (between-class variance maximised over a 256-bin histogram, equal to
  ``skimage.filters.threshold_otsu``; tested) or a fraction of the robust intensity range, holes
  enclosed in 3D filled (ventricles). On the templates Otsu keeps the brain (MNI152: 21 % of the
  volume); on the hippocampus crops, which are all brain, it keeps the brighter grey and white
  matter (about half of each crop) and leaves out CSF.
* :func:`intensity_scale`: ``(shift, scale)`` from the 0.5th and 99.5th percentiles, applied as
  ``(x - shift) / scale`` *without clipping*, so ``y * scale + shift`` undoes it exactly.
* :func:`tissue_patch_starts`: patch positions drawn uniformly among those holding at least a
  given share of tissue, counted exactly with a summed-volume table.
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


# ------------------------------------------------------------------------------ tissue and intensities
def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold (IEEE SMC 9:62-66, 1979) of ``values``.

    The bin centre maximising

        sigma_B^2(t) = w0(t) w1(t) (mu0(t) - mu1(t))^2

    over a ``bins``-bin histogram of ``[min, max]``, with ``w0, mu0`` the weight and mean of the bins up
    to ``t`` and ``w1, mu1`` those above (the convention of ``skimage.filters.threshold_otsu``: the
    object is ``values > t``).

    Example:
        >>> v = np.r_[np.zeros(60), np.full(40, 100.0)]
        >>> print(0 <= otsu_threshold(v) < 100)
        True
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if lo == hi:
        return lo
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    hist = hist.astype(np.float64)
    w0 = np.cumsum(hist)[:-1]  # threshold after bin k: classes [0..k] and [k+1..]
    w1 = hist.sum() - w0
    s0 = np.cumsum(hist * centres)[:-1]
    s1 = (hist * centres).sum() - s0
    with np.errstate(divide="ignore", invalid="ignore"):
        between = w0 * w1 * (s0 / w0 - s1 / w1) ** 2
    return float(centres[int(np.nanargmax(between))])


def tissue_mask(volume: np.ndarray, method: str = "otsu", threshold: float = 0.1,
                fill_holes: bool = True) -> np.ndarray:
    """The object (tissue) of a high-resolution volume, as a boolean mask of its shape.

    * ``otsu``: ``volume > otsu_threshold(volume)``;
    * ``threshold``: ``volume > lo + threshold * (hi - lo)`` with ``lo, hi`` the 0.5th and 99.5th
      percentiles (a fraction of the volume's robust range, so one value fits volumes stored as
      uint8 and as floats up to 1e6);
    * ``none``: every voxel.

    Holes enclosed in 3D (ventricles, which Otsu puts with the background) are filled
    (``fill_holes``), so on a skull-stripped brain the mask is the brain.

    Shape:
        ``(*S) -> (*S)`` bool.

    Example:
        >>> v = np.zeros((12, 12, 12)); v[3:9, 3:9, 3:9] = 100.0; v[5:7, 5:7, 5:7] = 0.0
        >>> print(tissue_mask(v).sum())  # the 6^3 cube, its 2^3 hole filled
        216
    """
    from scipy import ndimage

    v = np.asarray(volume)
    if method == "none":
        return np.ones(v.shape, dtype=bool)
    if method == "otsu":
        mask = v > otsu_threshold(v)
    elif method == "threshold":
        if not 0 <= threshold < 1:
            raise ValueError(f"threshold must be a fraction of the intensity range in [0, 1), got {threshold!r}")
        lo, hi = np.percentile(v, [0.5, 99.5])
        mask = v > lo + threshold * (hi - lo)
    else:
        raise ValueError(f"unknown mask method {method!r}; use otsu, threshold or none")
    return ndimage.binary_fill_holes(mask) if fill_holes else mask


def intensity_scale(volume: np.ndarray, percentiles: tuple[float, float] = (0.5, 99.5)) -> tuple[float, float]:
    """``(shift, scale)`` of the per-volume normalisation ``(x - shift) / scale``, never clipped.

    ``shift`` and ``shift + scale`` are the volume's ``percentiles`` (robust to a few hot voxels);
    nothing is clipped, so ``x = y * scale + shift`` undoes it exactly (to float rounding).

    Example:
        >>> print(intensity_scale(np.arange(101.0), (0, 100)))
        (0.0, 100.0)
    """
    lo, hi = (float(p) for p in np.percentile(np.asarray(volume, dtype=np.float64), percentiles))
    return lo, max(hi - lo, 1e-8 * max(abs(lo), abs(hi), 1.0))


def tissue_patch_starts(mask: np.ndarray, size: tuple[int, ...] | list[int], count: int, min_tissue: float,
                        rng: np.random.Generator) -> list[tuple[int, ...]]:
    """``count`` patch corners drawn uniformly among those whose patch is at least ``min_tissue`` tissue.

    The tissue count of every patch position is read from a summed-volume table (exact, one pass),
    so the rule holds for every returned patch. When no position reaches ``min_tissue`` (an object
    smaller than the patch) the most tissue-filled positions are the candidates. Positions are
    distinct while there are enough. A side larger than the volume gets the one centred start
    ``(s - p) // 2 < 0`` (the crop zero-pads).

    Example:
        >>> m = np.zeros((40, 40, 40), bool); m[15:25, 15:25, 15:25] = True
        >>> s = tissue_patch_starts(m, (8, 8, 8), 3, 0.9, np.random.default_rng(0))
        >>> print(all(m[a:a+8, b:b+8, c:c+8].mean() >= 0.9 for a, b, c in s))
        True
    """
    import itertools

    shape = mask.shape
    q = [min(int(p), s) for p, s in zip(size, shape)]  # the part of the patch inside the volume
    table = mask.astype(np.int64)
    for ax in range(table.ndim):
        table = np.cumsum(table, axis=ax)
    table = np.pad(table, [(1, 0)] * table.ndim)  # table[i] = tissue in [0, i)
    # box sums for every start 0..s-q by inclusion-exclusion over the 2^d corners
    counts = np.zeros([s - k + 1 for s, k in zip(shape, q)], dtype=np.int64)
    for bits in itertools.product((0, 1), repeat=table.ndim):
        corner = tuple(slice(k, s + 1) if b else slice(0, s - k + 1) for b, s, k in zip(bits, shape, q))
        counts += table[corner] if (table.ndim - sum(bits)) % 2 == 0 else -table[corner]
    share = counts / float(np.prod([int(p) for p in size]))
    ok = np.flatnonzero(share.ravel() >= min_tissue)
    if ok.size == 0:
        ok = np.flatnonzero(share.ravel() == share.max())
    picks = rng.choice(ok, size=count, replace=count > ok.size)
    starts = []
    for flat in picks:
        idx = np.unravel_index(int(flat), counts.shape)
        starts.append(tuple(int(i) if s >= p else (s - p) // 2 for i, s, p in zip(idx, shape, size)))
    return starts
