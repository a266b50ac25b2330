"""``components``: connected components of the thresholded foreground.

``foreground > threshold``, holes filled, connected components (``connectivity`` 1 = 4/6,
``ndim`` = 8/26-connected), objects smaller than ``min_size`` pixels removed.

``threshold: auto`` and ``min_size: auto`` are chosen on the validation images at the end of
training (:func:`tune`, grid search by mean AJI, :mod:`densemed.infer.postprocess.tuning`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from densemed.infer.postprocess._common import need, relabel, remove_small, structure
from densemed.infer.postprocess.registry import register, tuner


@register("components", needs=("foreground",))
def components(
    outputs: Mapping[str, np.ndarray], threshold: float = 0.5, min_size: int = 0, connectivity: int = 1,
    fill: bool = True,
) -> np.ndarray:
    """Connected components of the thresholded foreground."""
    fg = need(outputs, "foreground", "components") > threshold
    if fill:
        fg = ndimage.binary_fill_holes(fg)
    labels, _ = ndimage.label(fg, structure=structure(fg.ndim, connectivity))
    return relabel(remove_small(labels, min_size))


@tuner("components", keys=("threshold", "min_size"))
def tune(
    outputs: Sequence[Mapping[str, np.ndarray]], truths: Sequence[np.ndarray], params: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, float]] | None:
    """Choose ``threshold`` and ``min_size`` set to ``auto`` by mean AJI on the validation images.

    Grids, the default first: thresholds 0.3 / 0.5 / 0.7; ``min_size`` 0 and fractions of the
    median true area (:mod:`densemed.infer.postprocess.tuning`). Returns None when nothing is ``auto``.
    """
    from densemed.infer.postprocess import tuning

    d = tuning.defaults("components")
    grid = {"threshold": tuning.thresholds(d["threshold"]), "min_size": tuning.sizes(d["min_size"], truths)}
    return tuning.grid_search(outputs, truths, "components", params, grid)
