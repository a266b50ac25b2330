"""Object masks and object contours from instance label maps (DCAN's two targets).

DCAN (Chen et al., Medical Image Analysis 36, 2017; arXiv 1604.02677) learns, besides the object
probability, the probability that a pixel lies on an object contour; the contour target is derived
from the instance annotation. A pixel ``q`` of object ``i`` is a contour pixel when some pixel
within ``thickness`` steps of it (a cross-shaped, i.e. 4-connected in 2D / 6-connected in 3D,
neighbourhood iterated ``thickness`` times) has a different label, background or another object:

    contour(q) = 1  if  label(q) > 0  and  min_{r in N_t(q)} label(r) != max_{r in N_t(q)} label(r)

so the boundary between two touching objects is marked on both sides (``2 * thickness`` pixels
wide), and an isolated object gets an inner boundary ``thickness`` pixels wide. ``mode="outer"``
marks background pixels next to an object instead, ``mode="both"`` both. Pixels outside the image
do not count as background: an object cut by the image border has no contour along the border.

``foreground`` is the object mask ``label > 0`` as float, for recipes whose segmentation head
learns from a target map rather than ``batch["label"]``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from densemed.targets.registry import register

_MODES = ("inner", "outer", "both")


def _footprint(ndim: int, thickness: int) -> np.ndarray:
    cross = ndimage.generate_binary_structure(ndim, 1)
    return ndimage.iterate_structure(cross, thickness) if thickness > 1 else cross


@register("contour")
def encode(
    instances: np.ndarray, spacing: Sequence[float] | None = None, thickness: int = 1, mode: str = "inner"
) -> np.ndarray:
    """Contour map of an instance label map.

    Args:
        instances: integer label map ``(*S)``, 0 = background, one id per object.
        spacing: voxel size; unused (thickness counts pixels), accepted for the target contract.
        thickness: contour width in pixels on each side of a boundary (>= 1).
        mode: ``"inner"`` (object pixels at the boundary, the default), ``"outer"`` or ``"both"``.

    Returns:
        float32 ``(*S)`` with 1 on contour pixels and 0 elsewhere.

    Shape:
        ``(H, W)`` or ``(D, H, W)`` -> same.

    Example:
        >>> lab = np.zeros((5, 8), int); lab[1:4, 1:4] = 1; lab[1:4, 4:7] = 2
        >>> print(encode(lab).astype(int))
        [[0 0 0 0 0 0 0 0]
         [0 1 1 1 1 1 1 0]
         [0 1 0 1 1 0 1 0]
         [0 1 1 1 1 1 1 0]
         [0 0 0 0 0 0 0 0]]
    """
    if thickness < 1:
        raise ValueError(f"thickness must be >= 1, got {thickness}")
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}")
    lab = np.asarray(instances)
    fp = _footprint(lab.ndim, int(thickness))
    # 'nearest' border handling: the image edge is not a boundary
    changes = ndimage.maximum_filter(lab, footprint=fp, mode="nearest") != ndimage.minimum_filter(
        lab, footprint=fp, mode="nearest"
    )
    if mode == "inner":
        out = changes & (lab > 0)
    elif mode == "outer":
        out = changes & (lab == 0)
    else:
        out = changes
    return out.astype(np.float32)


@register("foreground")
def foreground(instances: np.ndarray, spacing: Sequence[float] | None = None) -> np.ndarray:
    """Object mask ``instances > 0`` as float32 ``(*S)``."""
    return (np.asarray(instances) > 0).astype(np.float32)


def decode(
    objects: np.ndarray, contours: np.ndarray, t_o: float = 0.5, t_c: float = 0.5, dilate: int = 1
) -> np.ndarray:
    """Instances from an object map and a contour map (DCAN fusion, without the size filtering).

    Interior pixels ``objects > t_o and contours < t_c`` are split into connected components and
    each is grown back by ``dilate`` pixels (without merging) to recover the contour band.
    :func:`densemed.infer.instances.to_instances` with ``method="dcan"`` adds hole filling and
    small-object removal.
    """
    from skimage.segmentation import expand_labels

    interior = (np.asarray(objects) > t_o) & (np.asarray(contours) < t_c)
    labels, _ = ndimage.label(interior, structure=ndimage.generate_binary_structure(interior.ndim, 1))
    labels = expand_labels(labels, distance=dilate) if dilate > 0 else labels
    # do not grow into what the object map calls background
    labels[np.asarray(objects) <= t_o] = 0
    return labels.astype(np.int32)
