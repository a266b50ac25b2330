"""``components``: connected components of the thresholded foreground.

``foreground > threshold``, holes filled, connected components (``connectivity`` 1 = 4/6,
``ndim`` = 8/26-connected), objects smaller than ``min_size`` pixels removed.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage

from densemed.infer.postprocess._common import need, relabel, remove_small, structure
from densemed.infer.postprocess.registry import register


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
