"""The U-Net border weight map (Ronneberger, Fischer, Brox, MICCAI 2015, eq. 2).

    w(p) = w_c(p) + w0 · exp(-(d1(p) + d2(p))² / (2σ²))

makes the network learn the thin background gaps between touching objects. Here, precisely:

* ``d_i(p)`` = Euclidean distance (in physical units, ``spacing``) from the centre of pixel ``p``
  to the centre of the nearest pixel of object ``i``: ``scipy.ndimage.distance_transform_edt``
  of ``instances != i`` with ``sampling=spacing``. ``d1 <= d2`` are the two smallest ``d_i(p)``
  over the objects (ids ``> 0``; ids need not be consecutive).
* The exponential term is applied on background pixels only; inside objects ``w = w_c(1)``, as in
  the paper's Fig. 3d, where high weights lie in the gaps. With fewer than two objects ``d2`` is
  undefined and the term is 0 everywhere.
* ``w_c``: ``class_weights = (w_background, w_foreground)``, default ``(1, 1)``. The paper balances
  class frequencies; compute numbers once on the training labels with
  :func:`densemed.losses.class_weights_from_labels` and give them in the recipe.
* Defaults ``w0 = 10``, ``σ = 5`` (pixels, or physical units with ``spacing``), the paper's.

Fast algorithm (exact up to ``1e-9`` absolute in the exponential term): one distance transform of
the background with ``return_indices`` gives ``d1`` and the nearest object ``k(p)``. For
``d1 + d2 > R = σ·sqrt(2 ln(w0 / 1e-9))`` the term is below ``1e-9``, so only pixels with
``d1 <= R/2`` and partners within ``R`` matter: for each object ``k`` one small transform on its
bounding box grown by ``1.5 R`` (objects other than ``k``) gives ``d2`` on the pixels whose nearest
object is ``k``. On 512x512 with 50 nuclei this is ~20x faster than one full transform per object.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from densemed.errors import DensemedError
from densemed.targets.registry import register

#: Absolute error allowed in the exponential term by the truncation radius ``R``.
_TRUNCATION = 1e-9


def _check(instances: np.ndarray, spacing: Sequence[float] | None) -> tuple[np.ndarray, tuple[float, ...]]:
    lab = np.asarray(instances)
    if lab.dtype.kind not in "iub":
        raise DensemedError(f"border_weights: instances must be an integer array, got dtype {lab.dtype}")
    if lab.ndim not in (2, 3):
        raise DensemedError(f"border_weights: instances must be 2D or 3D, got shape {lab.shape}")
    sp = (1.0,) * lab.ndim if spacing is None else tuple(float(s) for s in spacing)
    if len(sp) != lab.ndim or min(sp) <= 0:
        raise DensemedError(f"border_weights: spacing {spacing} does not fit a {lab.ndim}D map")
    return lab, sp


def _grow(box: tuple[slice, ...], by: Sequence[int], shape: tuple[int, ...]) -> tuple[slice, ...]:
    """A bounding box grown by ``by`` pixels per axis, clipped to the array."""
    return tuple(slice(max(b.start - g, 0), min(b.stop + g, n)) for b, g, n in zip(box, by, shape))


def border_weight_map(
    instances: np.ndarray,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: Sequence[float] | None = None,
    spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """U-Net weight map ``w_c(p) + w0 · exp(-(d1 + d2)² / 2σ²)`` of an instance label map.

    Args:
        instances: integer instance map, 0 = background, 2D or 3D.
        w0: amplitude of the border term.
        sigma: width of the border term, in the units of ``spacing`` (pixels by default).
        class_weights: ``(w_background, w_foreground)``; default ``(1, 1)``.
        spacing: voxel size per axis; default 1.

    Returns:
        float32 array, same shape as ``instances``.

    Shape:
        ``(H, W)`` or ``(D, H, W)`` -> same.

    Example:
        >>> lab = np.zeros((1, 7), np.int32); lab[0, 0] = 1; lab[0, 6] = 2
        >>> print(border_weight_map(lab, w0=10, sigma=5)[0, 3].round(4))  # d1 = d2 = 3
        5.8675
    """
    lab, sp = _check(instances, spacing)
    if sigma <= 0:
        raise DensemedError(f"border_weights.sigma: must be > 0, got {sigma}")
    cw = (1.0, 1.0) if class_weights is None else tuple(float(c) for c in class_weights)
    if len(cw) != 2:
        raise DensemedError(
            f"border_weights.class_weights: expected (w_background, w_foreground), got {class_weights}"
        )
    fg = lab > 0
    out = np.where(fg, cw[1], cw[0]).astype(np.float64)
    ids = np.unique(lab[fg])
    if len(ids) < 2 or w0 <= 0:
        return out.astype(np.float32)
    # Consecutive ids 1..K so that find_objects gives one box per object.
    rel = np.zeros(lab.shape, np.int32)
    rel[fg] = np.searchsorted(ids, lab[fg]) + 1
    d1, idx = ndimage.distance_transform_edt(~fg, sampling=sp, return_indices=True)
    nearest = rel[tuple(idx)]  # (*S): id of the object whose pixel is nearest to p
    del idx
    radius = sigma * math.sqrt(2 * math.log(max(w0, _TRUNCATION) / _TRUNCATION))
    grow_inner = [math.ceil(radius / 2 / s) for s in sp]  # where d1 <= R/2 can hold
    grow_outer = [math.ceil(1.5 * radius / s) + 1 for s in sp]  # + disc of radius R around those
    d2 = np.full(lab.shape, np.inf)
    for k, box in enumerate(ndimage.find_objects(rel), start=1):
        if box is None:
            continue
        outer = _grow(box, grow_outer, lab.shape)
        crop = rel[outer]
        others = (crop > 0) & (crop != k)
        if not others.any():
            continue
        inner = _grow(box, grow_inner, lab.shape)
        # inner expressed in the crop's coordinates
        local = tuple(slice(i.start - o.start, i.stop - o.start) for i, o in zip(inner, outer))
        sel = (nearest[inner] == k) & ~fg[inner]
        if not sel.any():
            continue
        dist = ndimage.distance_transform_edt(~others, sampling=sp)[local]
        region = d2[inner]  # a view: writing into it fills d2
        region[sel] = dist[sel]
    term = np.zeros(lab.shape)
    bg = ~fg & np.isfinite(d2)
    term[bg] = w0 * np.exp(-((d1[bg] + d2[bg]) ** 2) / (2 * sigma**2))
    return (out + term).astype(np.float32)


@register("border_weights")
def encode(
    instances: np.ndarray,
    spacing: Sequence[float] | None = None,
    w0: float = 10.0,
    sigma: float = 5.0,
    class_weights: Sequence[float] | None = None,
) -> np.ndarray:
    """Target ``border_weights``: :func:`border_weight_map` with the recipe's options.

    There is no ``decode``: a weight map is not a prediction target to invert.

    Shape:
        ``(*S)`` int -> ``(*S)`` float32.
    """
    return border_weight_map(instances, w0=w0, sigma=sigma, class_weights=class_weights, spacing=spacing)
