"""Checks that a label file really holds instance ids, before targets are derived from it.

Instance encodings (contours, distance maps) silently produce nonsense from a binary mask: all
touching objects become one. :func:`check_instances` rejects, with the file name:

* a multi-channel array (an RGB/RGBA rendering of instances, or a stack of overlapping masks):
  a label map has one id per pixel, so overlapping objects cannot be represented;
* non-integer values (floats with a fractional part) and negative ids;
* a binary mask: exactly the values ``{0, 255}``, or ``{0, 1}`` where the ones form more than
  one connected component (several objects sharing one id). A single object labelled 1 is a
  valid instance map.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from densemed.errors import DensemedError
from densemed.typing import PathType


def check_instances(array: np.ndarray, path: PathType, dims: int | None = None) -> np.ndarray:
    """Validate an instance label map and return it as int64.

    Args:
        array: label map ``(*S)`` read from ``path``.
        path: file name used in the error message.
        dims: expected spatial dimensionality (2 or 3); ``None`` accepts 2D and 3D.

    Raises:
        DensemedError: ``"<path>: <what is wrong>"``.
    """
    a = np.asarray(array)
    if dims is not None and a.ndim != dims:
        extra = " (a multi-channel image or a stack of overlapping masks?)" if a.ndim == dims + 1 else ""
        raise DensemedError(
            f"{path}: expected a {dims}D instance label map with one id per pixel, got shape {a.shape}{extra}"
        )
    if dims is None and a.ndim == 3 and a.shape[-1] in (3, 4) and min(a.shape[:2]) > 4:
        raise DensemedError(
            f"{path}: instance labels must be one integer id per pixel, got a {a.shape[-1]}-channel image"
        )
    if a.dtype.kind == "b":
        raise DensemedError(f"{path}: instance labels required, got a boolean mask")
    if a.dtype.kind not in "iuf":
        raise DensemedError(f"{path}: instance labels must be integers, got dtype {a.dtype}")
    if a.dtype.kind == "f":
        if not np.all(np.isfinite(a)) or np.any(a != np.round(a)):
            raise DensemedError(f"{path}: instance labels must be integer ids, found non-integer values")
    if a.size and a.min() < 0:
        raise DensemedError(f"{path}: instance ids must be >= 0 (0 = background), found {a.min()}")
    values = np.unique(a)
    if len(values) == 2 and values[0] == 0 and values[1] == 255:
        raise DensemedError(
            f"{path}: looks like a binary mask (values 0 and 255), but instance ids 1..N are required "
            "(label connected components first, or set data.instances: false)"
        )
    if len(values) == 2 and values[0] == 0 and values[1] == 1:
        _, n = ndimage.label(a == 1, structure=ndimage.generate_binary_structure(a.ndim, a.ndim))
        if n > 1:
            raise DensemedError(
                f"{path}: looks like a binary mask (values 0 and 1 forming {n} separate objects), "
                "but instance ids 1..N are required"
            )
    return a.astype(np.int64)
