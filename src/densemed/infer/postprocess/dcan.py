"""``dcan`` and ``contour_watershed``: instances from object and contour probabilities (DCAN).

``dcan``
    The paper's fusion (Chen et al., MedIA 2017, Sect. 3.3): interior
    ``p_o > t_o and p_c < t_c`` with ``t_o = t_c = 0.5`` ("set as 0.5 empirically"),
    connected components, hole filling, removal of small objects (``min_size``), and each
    object dilated back by ``dilate`` pixels (disk radius) to recover the pixels lost to the
    contour band, without letting two objects overlap. Defaults ``dilate=3`` (the paper's disk
    of radius 3) and ``min_size=64`` (the paper removes "small areas" without a number here:
    a documented choice). The paper also smooths the fused mask with a disk filter before
    labelling: ``smooth`` (radius, default 0 = off).
``contour_watershed``
    Markers = components of the DCAN interior (``foreground > t_o`` and ``contour < t_c``),
    flooded over the contour probability within ``foreground > t_o``: keeps every object pixel.

For both, ``t_o``, ``t_c`` and ``min_size`` may be ``auto``: chosen on the validation images at the
end of training (:func:`tune_dcan`, :func:`tune_contour_watershed`; grid search by mean AJI,
:mod:`densemed.infer.postprocess.tuning`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from densemed.infer.postprocess._common import ball, fill_holes, need, relabel, remove_small, structure
from densemed.infer.postprocess.registry import register, tuner


def _interior(
    outputs: Mapping[str, np.ndarray], t_o: float, t_c: float, smooth: int, method: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p_o = need(outputs, "foreground", method)
    p_c = need(outputs, "contour", method)
    obj = p_o > t_o
    interior = obj & (p_c < t_c)
    if smooth > 0:  # the paper's disk-filter smoothing of the fused mask
        disk = ball(interior.ndim, smooth).astype(np.float32)
        interior = ndimage.convolve(interior.astype(np.float32), disk / disk.sum(), mode="nearest") > 0.5
    return obj, interior, p_c


@register("dcan", needs=("foreground", "contour"))
def dcan(
    outputs: Mapping[str, np.ndarray],
    t_o: float = 0.5,
    t_c: float = 0.5,
    min_size: int = 64,
    dilate: int = 3,
    smooth: int = 0,
    connectivity: int = 1,
) -> np.ndarray:
    """DCAN fusion: interior components, hole filling, small-object removal, dilation back."""
    from skimage.segmentation import expand_labels

    _, interior, _ = _interior(outputs, t_o, t_c, smooth, "dcan")
    labels, _ = ndimage.label(interior, structure=structure(interior.ndim, connectivity))
    labels = remove_small(fill_holes(labels), min_size)
    if dilate > 0:
        labels = expand_labels(labels, distance=dilate)  # grows each object, never into another
    return relabel(labels)


@register("contour_watershed", needs=("foreground", "contour"))
def contour_watershed(
    outputs: Mapping[str, np.ndarray], t_o: float = 0.5, t_c: float = 0.5, min_size: int = 0, smooth: int = 0,
    min_marker: int = 4,
) -> np.ndarray:
    """Markers from the DCAN interior, flooded over the contour probability within the objects."""
    from skimage.segmentation import watershed

    obj, interior, p_c = _interior(outputs, t_o, t_c, smooth, "contour_watershed")
    obj = ndimage.binary_fill_holes(obj)
    markers, _ = ndimage.label(interior, structure=structure(obj.ndim, 1))
    markers = remove_small(markers, min_marker)
    labels = watershed(p_c, markers, mask=obj)
    return relabel(remove_small(labels, min_size))


def _tune(
    method: str, outputs: Sequence[Mapping[str, np.ndarray]], truths: Sequence[np.ndarray],
    params: Mapping[str, Any],
) -> tuple[dict[str, Any], dict[str, float]] | None:
    """Grid search of ``t_o``, ``t_c`` (default, 0.3, 0.5, 0.7) and ``min_size`` (default, 0, area fractions)."""
    from densemed.infer.postprocess import tuning

    d = tuning.defaults(method)
    grid = {"t_o": tuning.thresholds(d["t_o"]), "t_c": tuning.thresholds(d["t_c"]),
            "min_size": tuning.sizes(d["min_size"], truths)}
    return tuning.grid_search(outputs, truths, method, params, grid)


@tuner("dcan", keys=("t_o", "t_c", "min_size"))
def tune_dcan(
    outputs: Sequence[Mapping[str, np.ndarray]], truths: Sequence[np.ndarray], params: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, float]] | None:
    """``t_o``, ``t_c`` (0.5, 0.3, 0.7) and ``min_size`` (64, 0, fractions of the median true area) set to ``auto``."""
    return _tune("dcan", outputs, truths, params)


@tuner("contour_watershed", keys=("t_o", "t_c", "min_size"))
def tune_contour_watershed(
    outputs: Sequence[Mapping[str, np.ndarray]], truths: Sequence[np.ndarray], params: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, float]] | None:
    """``t_o``, ``t_c`` (0.5, 0.3, 0.7) and ``min_size`` (0, fractions of the median true area) set to ``auto``."""
    return _tune("contour_watershed", outputs, truths, params)
