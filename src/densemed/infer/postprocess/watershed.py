"""``watershed``: distance-transform watershed for touching objects without extra heads.

The Euclidean distance transform of the foreground mask, markers at its h-maxima (``h`` pixels,
default 2), watershed of the negated distance within the mask.

``threshold``, ``h`` and ``min_size`` may be ``auto``: chosen on the validation images at the end
of training (:func:`tune`, grid search by mean AJI, :mod:`densemed.infer.postprocess.tuning`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from densemed.infer.postprocess._common import need, relabel, remove_small, structure
from densemed.infer.postprocess.registry import register, tuner


@register("watershed", needs=("foreground",))
def distance_watershed(
    outputs: Mapping[str, np.ndarray], threshold: float = 0.5, h: float = 2.0, min_size: int = 0,
    fill: bool = True, spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Watershed of the foreground's distance transform from its h-maxima (touching objects)."""
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    fg = need(outputs, "foreground", "watershed") > threshold
    if fill:
        fg = ndimage.binary_fill_holes(fg)
    dist = ndimage.distance_transform_edt(fg, sampling=spacing)
    # h-maxima on a fixed-point copy: exact comparisons instead of float tolerance
    seeds = h_maxima(np.round(dist * 100).astype(np.int64), int(round(h * 100))) > 0
    markers, _ = ndimage.label(seeds & fg, structure=structure(fg.ndim, 1))
    labels = watershed(-dist, markers, mask=fg)
    return relabel(remove_small(labels, min_size))


@tuner("watershed", keys=("threshold", "h", "min_size"))
def tune(
    outputs: Sequence[Mapping[str, np.ndarray]], truths: Sequence[np.ndarray], params: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, float]] | None:
    """Choose ``threshold``, ``h`` and ``min_size`` set to ``auto`` by mean AJI on the validation images.

    Grids, the default first: thresholds 0.3 / 0.5 / 0.7; ``h`` 1 px and fractions of the median
    object radius; ``min_size`` 0 and fractions of the median true area
    (:mod:`densemed.infer.postprocess.tuning`). Returns None when nothing is ``auto``.
    """
    from densemed.infer.postprocess import tuning

    d = tuning.defaults("watershed")
    grid = {"threshold": tuning.thresholds(d["threshold"]), "h": tuning.radii(d["h"], truths),
            "min_size": tuning.sizes(d["min_size"], truths)}
    return tuning.grid_search(outputs, truths, "watershed", params, grid)
