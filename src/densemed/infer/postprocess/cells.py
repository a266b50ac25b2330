"""``cells``: cells enclosed by predicted membranes (EM neurite segmentation, ISBI 2012).

Here the network's ``foreground`` is the **membrane** (boundary) probability ``p``, as in the ISBI
2012 recipes (class 1 = membrane). Thresholding ``p`` leaves two kinds of error that the
challenge's Rand error punishes: a one-pixel gap in a membrane merges two cells, and the
predicted membrane pixels themselves form one more segment, which merges every true cell they
cover. This method avoids both, as the seeded-watershed post-processing of the ISBI entries did:

``markers`` chooses the seeds:

``distance`` (default)
   the cell pixels are ``p < cell_threshold`` (0.5); the markers are the h-maxima (``h`` pixels,
   default 5) of their Euclidean distance to the nearest membrane pixel -- the rule of the
   ``watershed`` method -- so a gap in a membrane, a neck narrower than about ``2 h`` pixels between
   two cells, leaves each cell its own marker; a cell region without such a maximum (a cell thinner
   than ``2 h``) gets one marker of its own when it has at least ``min_marker`` pixels;
``threshold``
   the connected components (``connectivity`` 1 = 4/6-connected) of the confident cell pixels
   ``p < marker_threshold`` (0.05) of at least ``min_marker`` (10) pixels: a gap that the network
   fills with low membrane probability merges the two cells' markers.

Every marker is then grown by a watershed of ``p`` itself (flooding from low to high membrane
probability) over the whole image, so cells meet on the ridges of ``p`` and every pixel gets a cell.

The output has no background (0) unless no marker exists. Choices (not from a paper): the flooding
relief is the membrane probability (no smoothing); distances in pixels (no spacing). Defaults: the
best of grids on the 5 held-out ISBI sections of ``configs/unet_isbi2012.yaml`` -- ``threshold``
markers 0.05 / 10 px from a grid of 0.01-0.2 x 0-200 px on one run (mean Rand error 0.075-0.099,
thresholding alone 0.147); then ``distance`` markers with ``cell_threshold`` 0.5 and ``h`` 5 px from
0.3-0.7 x 1-10 px on seven runs' probabilities (README): mean Rand error 0.047 against 0.072 for the
``threshold`` markers, every run lower, since the remaining merges were cells joined through a gap.
``markers``, ``cell_threshold``, ``h``, ``marker_threshold`` and ``min_marker`` may be ``auto``: chosen
by the mean foreground-restricted Rand F-score against the true cells (:func:`tune`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from densemed.errors import DensemedError
from densemed.infer.postprocess._common import need, relabel, remove_small, structure
from densemed.infer.postprocess.registry import register, tuner

#: marker rules of :func:`membrane_cells`, the default first
MARKERS = ("distance", "threshold")
#: cell thresholds (cell = ``p < t``) tried by the tuner, the default first
CELL_THRESHOLDS = (0.5, 0.3, 0.7)
#: h-maxima heights (pixels) tried by the tuner, the default first
HEIGHTS = (5.0, 3.0, 8.0)
#: marker thresholds tried by the tuner, the default first
MARKER_THRESHOLDS = (0.05, 0.02, 0.1, 0.2)
#: minimum marker sizes (pixels) tried by the tuner, the default first
MARKER_SIZES = (10, 0, 50)


@register("cells", needs=("foreground",))
def membrane_cells(
    outputs: Mapping[str, np.ndarray], markers: str = "distance", cell_threshold: float = 0.5, h: float = 5.0,
    marker_threshold: float = 0.05, min_marker: int = 10, connectivity: int = 1,
) -> np.ndarray:
    """Cells grown from markers over the membrane probability ``outputs["foreground"]`` ``(*S)`` -> ids ``(*S)``."""
    from skimage.segmentation import watershed

    if markers not in MARKERS:
        raise DensemedError(f"task.postprocess: cells markers must be one of {', '.join(MARKERS)}, got {markers!r}")
    p = need(outputs, "foreground", "cells")
    nbh = structure(p.ndim, connectivity)
    if markers == "distance":
        seeds = distance_markers(p < cell_threshold, h, min_marker, nbh)
    else:
        seeds = remove_small(ndimage.label(p < marker_threshold, structure=nbh)[0], min_marker)
    if not seeds.any():
        return np.zeros(p.shape, np.int32)
    return relabel(watershed(p, seeds, connectivity=connectivity))


def distance_markers(cell: np.ndarray, h: float, min_size: int, nbh: np.ndarray) -> np.ndarray:
    """Markers ``(*S)`` of a cell mask: h-maxima of the distance to the membrane, one per marker-less region.

    A region of ``cell`` (connected by ``nbh``) that holds no h-maximum gets the whole region as its
    marker when it has at least ``min_size`` pixels.
    """
    from densemed.targets.distance import h_maxima_mask

    dist = ndimage.distance_transform_edt(cell)
    peaks = h_maxima_mask(dist, h, resolution=0.01) & cell  # the watershed method's grid
    seeds, n = ndimage.label(peaks, structure=nbh)
    regions, _ = ndimage.label(cell, structure=nbh)
    seeded = np.zeros(regions.max() + 1, bool)
    seeded[regions[seeds > 0]] = True
    alone = remove_small(np.where(seeded[regions], 0, regions), min_size)
    return np.where(alone > 0, alone + n, seeds)


def rand_f(pred: np.ndarray, truth: np.ndarray) -> float:
    """Foreground-restricted Rand F-score of a cell map against the true cells (higher is better)."""
    from densemed.metrics.membrane import rand_scores

    return 1.0 - rand_scores(pred, truth)["rand_error"]


@tuner("cells", keys=("markers", "cell_threshold", "h", "marker_threshold", "min_marker"))
def tune(
    outputs: Sequence[Mapping[str, np.ndarray]], truths: Sequence[np.ndarray], params: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, float]] | None:
    """Choose the options of ``cells`` set to ``auto`` by mean Rand F-score on validation images.

    Every combination of the ``auto`` options is tried (:func:`densemed.infer.postprocess.tuning.grid_search`);
    with ``markers: auto`` the options of the other rule only cost time, so set the rule's own.
    """
    from densemed.infer.postprocess import tuning

    grid = {"markers": MARKERS, "cell_threshold": CELL_THRESHOLDS, "h": HEIGHTS,
            "marker_threshold": MARKER_THRESHOLDS, "min_marker": MARKER_SIZES}
    return tuning.grid_search(outputs, truths, "cells", params, grid, score=rand_f)
