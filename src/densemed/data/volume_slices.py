"""Random 2D slices of unlabelled images: the data of reconstruction-only pre-training.

SegNetMRI's reconstruction network is pre-trained on fully sampled MR images without labels
(Sun et al. 2019); here those are the slices of whole volumes such as
``$DENSEMED_DATA/brain_mri_templates`` (MNI152, Colin27, INIA19). A :class:`SliceSource` holds
the images of one or more folders (every supported file of ``<root>/<image_dir>``; a ``labels/``
folder beside it is never read) and draws in-plane patches of a fixed size ``(H, W)``:

* **Reading**: each file is read as it is stored (``(1, X, Y, Z)`` volumes, ``(1, H, W)`` 2D
  images: one slice) and normalised as a whole with the recipe's ``data.normalize`` (use
  ``percentile`` with ``[0, 100]`` so the target is the image itself). No resampling: a volume is
  sliced at its own voxel size. Images must have one channel (magnitude MR); any other count is
  refused with the file named, as is NaN or an infinite intensity.
* **Slicing**: volumes are cut along ``axis`` (0, 1 or 2; the in-plane axes keep their order).
* **Drawing** (:meth:`SliceSource.sample`): a volume uniformly at random, then a centre voxel
  uniformly among its voxels **brighter than the volume's mean** (after normalisation: inside
  the head, so a patch is rarely empty background; every voxel when none is), the slice through
  it along ``axis`` and the ``(H, W)`` window around it, shifted to lie inside the slice; a slice
  smaller than the window is centred and zero-padded as the training patch sampler does
  (:func:`densemed.data.dataset.sample_patch`).

Example:
    >>> src = SliceSource([("v", np.arange(60, dtype=np.float32).reshape(1, 3, 4, 5))], (4, 5), axis=0)
    >>> print(src.sample(np.random.default_rng(0)).shape)
    (1, 4, 5)
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from densemed.data.io import read_image
from densemed.data.normalize import normalize
from densemed.data.slices import check_axis
from densemed.errors import DensemedError


class SliceSource:
    """Random ``(1, H, W)`` patches of slices of single-channel images (see the module docstring).

    Args:
        images: ``[(name, array)]`` with arrays ``(1, X, Y, Z)`` (volumes) or ``(1, H, W)`` (slices), float32.
        size: in-plane patch size ``(H, W)``.
        axis: slice axis of the volumes (0, 1 or 2).
    """

    def __init__(self, images: Sequence[tuple[str, np.ndarray]], size: Sequence[int], axis: int = 0) -> None:
        if not images:
            raise DensemedError("no images to draw slices from")
        self.axis = check_axis(axis)
        self.size = (int(size[0]), int(size[1]))
        self.names = [n for n, _ in images]
        # volumes with the slice axis first: (D, H, W); a 2D image is one slice
        self.stacks = [np.moveaxis(a[0], self.axis, 0) if a.ndim == 4 else a for _, a in images]
        self.centres = []
        for s in self.stacks:
            bright = np.flatnonzero(s > s.mean())
            idx = bright if bright.size else np.arange(s.size)
            self.centres.append(idx.astype(np.int32 if s.size < 2**31 else np.int64))

    @classmethod
    def from_folders(cls, roots: Sequence[Path], image_dir: str, size: Sequence[int], axis: int,
                     norm: str = "percentile", percentiles: Sequence[float] = (0.0, 100.0),
                     window: Sequence[float] | None = None) -> SliceSource:
        """Every image of ``<root>/<image_dir>`` for each root, normalised (``norm``, ``percentiles``, ``window``)."""
        from densemed.data.dataset import check_finite, discover_images

        images = []
        for root in roots:
            if not Path(root).is_dir():
                raise DensemedError(f"{root}: folder not found")
            for stem, path in discover_images(Path(root), image_dir):
                arr, _ = read_image(path)
                if arr.shape[0] != 1:
                    raise DensemedError(f"{path}: k-space simulation needs single-channel (magnitude) images, "
                                        f"got {arr.shape[0]} channels")
                if arr.ndim not in (3, 4):
                    raise DensemedError(f"{path}: expected a 2D image or a 3D volume, got shape {arr.shape[1:]}")
                check_finite(arr, [path])
                images.append((f"{Path(root).name}/{stem}", normalize(arr, norm, percentiles, window)))
        return cls(images, size, axis)

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """One patch ``(1, H, W)`` float32 (see the module docstring for the draw)."""
        k = int(rng.integers(len(self.stacks)))
        stack, centres = self.stacks[k], self.centres[k]
        d, i, j = np.unravel_index(int(centres[rng.integers(centres.size)]), stack.shape)
        plane = stack[d]
        out = np.zeros((1, *self.size), np.float32)
        src, dst = [], []
        for c, s, p in zip((i, j), plane.shape, self.size):
            start = (s - p) // 2 if s < p else min(max(int(c) - p // 2, 0), s - p)
            lo, hi = max(start, 0), min(start + p, s)
            src.append(slice(lo, hi))
            dst.append(slice(lo - start, hi - start))
        out[0][tuple(dst)] = plane[tuple(src)]
        return out

    def batch(self, rngs: Sequence[np.random.Generator]) -> torch.Tensor:
        """One patch per generator, stacked: ``(len(rngs), 1, H, W)``."""
        return torch.from_numpy(np.stack([self.sample(r) for r in rngs]))
