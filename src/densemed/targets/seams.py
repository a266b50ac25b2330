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
    size = 2 * int(width) + 1
    # the largest and smallest object id around each pixel (background left out of the minimum)
    top = ndimage.maximum_filter(lab, size=size, mode="nearest")
    above = np.int64(lab.max()) + 1  # stands for background in the minimum (scipy's filters overflow near int64 max)
    low = ndimage.minimum_filter(np.where(lab > 0, lab.astype(np.int64), above), size=size, mode="nearest")
    out[(lab > 0) & ((top != lab) | (low != lab))] = 0
    return out
