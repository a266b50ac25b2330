"""``watershed``: distance-transform watershed for touching objects without extra heads.

The Euclidean distance transform of the foreground mask, markers at its h-maxima (``h`` pixels,
default 2), watershed of the negated distance within the mask.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import ndimage

from densemed.infer.postprocess._common import need, relabel, remove_small, structure
from densemed.infer.postprocess.registry import register


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
