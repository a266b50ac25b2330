"""Pieces shared by the instance post-processing methods: masks, holes, small objects, ids."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from scipy import ndimage

from densemed.errors import DensemedError


def need(outputs: Mapping[str, np.ndarray], key: str, method: str) -> np.ndarray:
    """``outputs[key]`` as float32, or a one-line error naming what the network gave."""
    if key not in outputs:
        raise DensemedError(
            f"task.postprocess: method {method!r} needs the {key!r} output; the network gave {sorted(outputs)}"
        )
    return np.asarray(outputs[key], dtype=np.float32)


def structure(ndim: int, connectivity: int) -> np.ndarray:
    """Neighbourhood of ``connectivity`` (1 = 4/6-connected, ``ndim`` = 8/26-connected)."""
    return ndimage.generate_binary_structure(ndim, connectivity)


def ball(ndim: int, radius: int) -> np.ndarray:
    """Boolean disk / ball of ``radius`` pixels."""
    grid = np.indices((2 * radius + 1,) * ndim) - radius
    return (grid**2).sum(0) <= radius**2


def fill_holes(labels: np.ndarray) -> np.ndarray:
    """Fill the holes of every object (a hole takes the id of the object around it)."""
    out = labels.copy()
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        obj = labels[box] == i
        filled = ndimage.binary_fill_holes(obj)
        view = out[box]
        view[filled & (view == 0)] = i  # never overwrite another object lying inside the hole
    return out


def remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Delete objects with fewer than ``min_size`` pixels."""
    if min_size <= 1:
        return labels
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    out = labels.copy()
    out[small[labels]] = 0
    return out


def refill_seams(labels: np.ndarray, width: int) -> np.ndarray:
    """Give the seams between objects back: the inverse of :func:`densemed.targets.seams.separate`.

    A background pixel within ``width`` pixels (Euclidean) of an object and with two different
    objects within ``2 * width`` pixels (chessboard) takes the nearest object
    (``skimage.segmentation.expand_labels``); other background pixels, so an object's border with
    the background, stay. ``width`` 0 returns ``labels``.

    Shape:
        ``(*S)`` int -> same.
    """
    if width <= 0:
        return labels
    from skimage.segmentation import expand_labels

    from densemed.targets.seams import id_range

    top, low = id_range(labels, 2 * int(width))
    between = (labels == 0) & (top > 0) & (top != low)  # two different objects in reach
    grown = expand_labels(labels, distance=width)
    return np.where(between, grown, labels)


def relabel(labels: np.ndarray) -> np.ndarray:
    """Ids 1..N in scan order, int32."""
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(labels.astype(np.int32))[0]


def resize_labels(labels: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour resize of an id map to ``shape`` (ids are never blended).

    Output pixel ``i`` of an axis takes input pixel ``floor((i + 0.5) * n_in / n_out)`` (pixel
    centres matched, PyTorch's ``nearest-exact``); a map already of that shape is returned as is.
    Instance maps made on the network's grid (``data.target_spacing``) come back to the input's
    grid this way, so the post-processing runs where its options were tuned.

    Shape:
        ``(*S)`` -> ``shape``.
    """
    shape = tuple(int(n) for n in shape)
    if labels.shape == shape:
        return labels
    if labels.ndim != len(shape):
        raise ValueError(f"labels have {labels.ndim} axes, shape {shape} has {len(shape)}")
    index = [np.minimum(((np.arange(n) + 0.5) * m / n).astype(np.int64), m - 1) for m, n in zip(labels.shape, shape)]
    return labels[np.ix_(*index)]
