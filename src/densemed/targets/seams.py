"""Separation seams: background drawn between objects that touch (U-Net, Ronneberger et al. 2015).

In many instance annotations (DSB 2018 nuclei: 39 % of the validation split's nuclei) touching
objects share a boundary with no background pixel between them, so the class target ``id > 0``
shows them as one blob and no loss can teach the network where to cut. The U-Net paper's cell
experiments train on labels where touching cells are separated by background borders, and put the
border weights (:mod:`densemed.targets.weights`) on those borders. :func:`separate` draws them:

    seam(p) = 1  if  id(p) > 0  and  some q with ||p - q||_inf <= width has id(q) > 0, id(q) != id(p)

so each side of a contact loses ``width`` pixels (a seam ``2 * width`` wide); pixels next to the
background or to the image edge are untouched. The recipe option is ``task.seams`` of the
``instances`` task (:mod:`densemed.tasks.instances`); the post-processing grows the objects back
(``seams`` of ``watershed``, :func:`densemed.infer.postprocess._common.refill_seams`).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def separate(instances: np.ndarray, width: int = 1) -> np.ndarray:
    """The instance map with the pixels on contacts between two objects set to background.

    Args:
        instances: integer instance map ``(*S)``, 0 = background.
        width: pixels removed on each side of a contact (chessboard distance); 0 returns a copy.

    Returns:
        array of the same dtype and shape.

    Shape:
        ``(H, W)`` or ``(D, H, W)`` -> same.

    Example:
        >>> lab = np.zeros((3, 6), int); lab[:, 0:3] = 1; lab[:, 3:6] = 2
        >>> print(separate(lab))
        [[1 1 0 0 2 2]
         [1 1 0 0 2 2]
         [1 1 0 0 2 2]]
    """
    lab = np.asarray(instances)
    if width < 0:
        raise ValueError(f"width must be >= 0, got {width}")
    out = lab.copy()
    if width == 0:
        return out
    top, low = id_range(lab, width)
    out[(lab > 0) & ((top != lab) | (low != lab))] = 0
    return out


def id_range(instances: np.ndarray, reach: int) -> tuple[np.ndarray, np.ndarray]:
    """The largest and smallest object id within ``reach`` pixels (chessboard) of each pixel.

    Background is left out of both: where no object is in reach, the largest is 0 and the smallest
    is ``max id + 1``. A pixel sees two different objects exactly where the two differ and the
    largest is > 0. Used by :func:`separate` and by the watershed's refill of seams
    (:func:`densemed.infer.postprocess._common.refill_seams`).

    Shape:
        ``(*S)`` int -> two ``(*S)`` int64 arrays.
    """
    lab = np.asarray(instances, dtype=np.int64)
    size = 2 * int(reach) + 1
    above = lab.max(initial=0) + 1  # stands for background in the minimum (scipy's filters overflow near int64 max)
    top = ndimage.maximum_filter(lab, size=size, mode="nearest")
    low = ndimage.minimum_filter(np.where(lab > 0, lab, above), size=size, mode="nearest")
    return top, low
