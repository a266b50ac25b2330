"""DeepDistance's two distance maps from instance label maps, and their decoding to instances.

Koyuncu, Gunesli, Cetin-Atalay, Gunduz-Demir, "DeepDistance: A multi-task deep regression model
for cell detection in inverted microscopy images", Medical Image Analysis 63, 2020
(arXiv 1908.11211). Two complementary maps, defined as in the authors' code, are computed for
every pixel ``q`` of cell ``i`` (0 on background):

* **inner distance**, peaking at 1 at the cell's centroid ``C_i``::

      d_in(q) = 1 / (1 + alpha * ||q - C_i||)        (Euclidean, not squared; alpha = 0.1)

* **normalised outer distance**, 1 at the deepest point of the cell, small near its border::

      d_out(q) = min_{b in B_i} ||q - b|| / max_{p in cell i} min_{b in B_i} ||p - b||

  where ``B_i`` is the set of pixels outside cell ``i`` (background or another cell) that are
  4-neighbours of it. Pixels beyond the image edge are not in ``B_i``.

The nearest pixel outside cell ``i`` is always a 4-neighbour of the cell (a step from it towards
``q`` along its largest coordinate difference is strictly closer, so lies inside the cell), hence
``min_{b in B_i} ||q - b||`` is the Euclidean distance transform of the mask ``label == i``,
computed here inside each cell's bounding box grown by one pixel. ``spacing`` scales both maps'
distances (``alpha`` then acts per physical unit); ``None`` means pixel units as in the paper.

Decoding (the paper's detection): regional maxima of the h-maxima transform of the inner
distance, each 4-connected maximum region one cell, then a marker-controlled watershed of the
negated map within the foreground gives the instance masks.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from densemed.targets.registry import register

ALPHA = 0.1


def _spacing(spacing: Sequence[float] | None, ndim: int) -> np.ndarray:
    if spacing is None:
        return np.ones(ndim)
    sp = np.asarray(spacing, float)
    if sp.shape != (ndim,):
        raise ValueError(f"spacing {tuple(sp)} does not match a {ndim}D label map")
    return sp


@register("inner_distance")
def encode_inner(
    instances: np.ndarray, spacing: Sequence[float] | None = None, alpha: float = ALPHA
) -> np.ndarray:
    """Inner distance map ``d_in`` (float32 ``(*S)``, in (0, 1] on cells, 0 on background).

    Example:
        >>> lab = np.zeros((1, 5), int); lab[0, 1:4] = 7
        >>> print(np.round(encode_inner(lab), 3))
        [[0.    0.909 1.    0.909 0.   ]]
    """
    lab = np.asarray(instances)
    out = np.zeros(lab.shape, np.float32)
    fg = lab > 0
    if not fg.any():
        return out
    ids, idx = np.unique(lab[fg], return_inverse=True)
    coords = np.stack(np.nonzero(fg), axis=1).astype(float) * _spacing(spacing, lab.ndim)  # (P, ndim)
    counts = np.bincount(idx)
    centroid = np.stack([np.bincount(idx, weights=coords[:, d]) / counts for d in range(lab.ndim)], axis=1)
    dist = np.linalg.norm(coords - centroid[idx], axis=1)
    out[fg] = 1.0 / (1.0 + alpha * dist)
    return out


@register("outer_distance")
def encode_outer(instances: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Normalised outer distance map ``d_out`` (float32 ``(*S)``, in (0, 1] on cells, 0 on background).

    Example:
        >>> lab = np.zeros((1, 7), int); lab[0, 1:6] = 1
        >>> print(np.round(encode_outer(lab), 3))
        [[0.    0.333 0.667 1.    0.667 0.333 0.   ]]
    """
    lab = np.asarray(instances)
    out = np.zeros(lab.shape, np.float32)
    sp = _spacing(spacing, lab.ndim)
    for i, box in enumerate(ndimage.find_objects(lab.astype(np.int64)), start=1):
        if box is None:
            continue
        grown = tuple(slice(max(s.start - 1, 0), min(s.stop + 1, n)) for s, n in zip(box, lab.shape))
        cell = lab[grown] == i
        if cell.all():  # the cell fills its box up to the image edge: no outside neighbour at all
            dist = np.ones(cell.shape)
        else:
            dist = ndimage.distance_transform_edt(cell, sampling=sp)
        peak = dist[cell].max()
        view = out[grown]
        view[cell] = dist[cell] / peak
    return out


def encode(
    instances: np.ndarray, spacing: Sequence[float] | None = None, alpha: float = ALPHA
) -> tuple[np.ndarray, np.ndarray]:
    """Both maps ``(d_in, d_out)``; see :func:`encode_inner` and :func:`encode_outer`."""
    return encode_inner(instances, spacing, alpha), encode_outer(instances, spacing)


def h_maxima_mask(image: np.ndarray, h: float, resolution: float) -> np.ndarray:
    """The h-maxima of ``image`` ``(*S)`` as a boolean mask, computed on a fixed-point grid.

    ``skimage.morphology.h_maxima`` compares floats with a tolerance; rounding ``image`` and ``h``
    to multiples of ``resolution`` first makes the comparisons exact.
    """
    from skimage.morphology import h_maxima

    scale = 1.0 / resolution
    return h_maxima(np.round(np.asarray(image) * scale).astype(np.int64), int(round(h * scale))) > 0


def markers(inner: np.ndarray, h: float = 0.05, mask: np.ndarray | None = None) -> np.ndarray:
    """Cell markers: 4-connected regional maxima of the h-maxima transform of ``inner``.

    Args:
        inner: predicted inner distance ``(*S)``.
        h: dynamic a maximum must have to count as its own cell (in inner-distance units).
        mask: keep only markers inside this boolean mask.

    Returns:
        int32 ``(*S)``, one id per marker region, 0 elsewhere.
    """
    img = np.asarray(inner, dtype=np.float64)
    if h > 0:
        peaks = h_maxima_mask(img, h, resolution=1e-4)
    else:
        peaks = img == ndimage.maximum_filter(img, footprint=ndimage.generate_binary_structure(img.ndim, 1))
        peaks &= img > 0
    if mask is not None:
        peaks &= mask
    labels, _ = ndimage.label(peaks, structure=ndimage.generate_binary_structure(img.ndim, 1))
    return labels.astype(np.int32)


def decode(
    inner: np.ndarray,
    outer: np.ndarray | None = None,
    foreground: np.ndarray | None = None,
    h: float = 0.05,
    threshold: float = 0.5,
    landscape: str = "inner",
) -> np.ndarray:
    """Instances from (predicted) distance maps: h-maxima markers + marker-controlled watershed.

    Args:
        inner: inner distance ``(*S)``.
        outer: outer distance ``(*S)``; used for the foreground when ``foreground`` is None
            and for the flooding landscape with ``landscape="outer"|"sum"``.
        foreground: boolean or probability map of the cells; thresholded at ``threshold``.
            Without it the foreground is ``outer > 0`` (or ``inner > 0``): exact for encoded
            targets; pass a segmentation for predictions.
        h: h-maxima height for the markers (choose on validation data).
        threshold: foreground probability threshold.
        landscape: map flooded by the watershed, negated: ``"inner"``, ``"outer"`` or ``"sum"``.

    Returns:
        int32 instance map ``(*S)``.
    """
    from skimage.segmentation import watershed

    inner = np.asarray(inner, dtype=np.float64)
    if foreground is not None:
        fg = np.asarray(foreground) > threshold
    elif outer is not None:
        fg = np.asarray(outer) > 0
    else:
        fg = inner > 0
    if landscape == "inner":
        surface = -inner
    elif landscape in ("outer", "sum"):
        if outer is None:
            raise ValueError(f"landscape={landscape!r} needs the outer distance map")
        surface = -np.asarray(outer, float) - (inner if landscape == "sum" else 0.0)
    else:
        raise ValueError(f"landscape must be 'inner', 'outer' or 'sum', got {landscape!r}")
    seeds = markers(inner, h, mask=fg)
    conn = ndimage.generate_binary_structure(inner.ndim, 1)
    return watershed(surface, seeds, mask=fg, connectivity=conn).astype(np.int32)
