"""Procedural images of touching cells, the embedded default data of ``densemed demo``.

Each image holds 6-14 cells: ellipses of random size and orientation, many touching, with
textured interiors, a dark rim where two cells meet, uneven illumination, blur and noise.
Labels are instance ids (0 background); ``label > 0`` is the binary foreground.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def touching_cells(size: int = 128, rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """One image ``(1, size, size)`` float32 in about [0, 1] and its instance map ``(size, size)`` int64."""
    rng = rng or np.random.default_rng()
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    inst = np.zeros((size, size), np.int64)
    depth = np.full((size, size), np.inf, np.float32)
    n = int(rng.integers(6, 15))
    for i in range(1, n + 1):
        cy, cx = rng.uniform(0.1, 0.9, 2) * size
        a, b = rng.uniform(0.06, 0.14, 2) * size
        t = rng.uniform(0, np.pi)
        dy, dx = yy - cy, xx - cx
        u = (dx * np.cos(t) + dy * np.sin(t)) / a
        v = (-dx * np.sin(t) + dy * np.cos(t)) / b
        r = u * u + v * v
        # where ellipses overlap, the pixel goes to the cell whose centre is relatively closer:
        # this makes touching cells with a straight-ish shared border
        take = (r < 1.0) & (r < depth)
        inst[take] = i
        depth[take] = r[take]
    fg = inst > 0
    # a dark rim on every cell border (1 px), including borders between touching cells
    border = fg & (ndi.maximum_filter(inst, 3) != ndi.minimum_filter(inst, 3))
    img = np.where(fg, 0.65, 0.2).astype(np.float32)
    img += np.where(fg, 0.15 * ndi.gaussian_filter(rng.standard_normal((size, size)), 2.0), 0).astype(np.float32)
    img[border] = 0.3
    gy, gx = rng.uniform(-0.15, 0.15, 2)
    img += gy * (yy / size - 0.5) + gx * (xx / size - 0.5)  # uneven illumination
    img = ndi.gaussian_filter(img, 1.0) + rng.normal(0, 0.05, img.shape).astype(np.float32)
    return img[None].astype(np.float32), inst


def make_dataset(n: int = 48, size: int = 128, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n`` (image, instances) pairs, reproducible from ``seed``."""
    rng = np.random.default_rng(seed)
    return [touching_cells(size, rng) for _ in range(n)]
