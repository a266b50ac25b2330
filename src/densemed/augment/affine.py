"""Random affine maps: rotation, isotropic or anisotropic scaling, shearing and translation.

Forward (content) map in centred pixel coordinates: ``x' = R Sh Z x + t`` with

* ``R`` the rotation — 2D: one angle in the plane of the two axes; 3D: ``R = R_0 R_1 R_2`` with
  ``R_k`` a rotation about spatial axis ``k`` (in the plane of the other two),
* ``Sh = I + E`` a shear with off-diagonal entries ``E_ij`` (``E_ii = 0``),
* ``Z = diag(z)`` the zoom (``z > 1`` enlarges the content),
* ``t`` the translation in pixels (a whole-pixel ``t`` is an exact shift).

The sampling map is its inverse, ``q = A (p - t)`` with ``A = (R Sh Z)^-1``, composed with the
other geometric transforms into one grid (:mod:`densemed.augment.warp`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from densemed.augment._common import Generator, check_p, coin, pair, symmetric_range, uniform
from densemed.augment.warp import Geometric, Warp
from densemed.errors import DensemedError


def affine_matrix(
    rotate: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    shear: torch.Tensor | None = None,
    dims: int = 2,
) -> torch.Tensor:
    """Forward linear maps ``R Sh Z`` (B, d, d) float64.

    Args:
        rotate: degrees, (B,) in 2D or (B, 3) in 3D (about spatial axes 0, 1, 2).
        scale: zoom factors (B, d).
        shear: (B, d, d); only off-diagonal entries are used.
        dims: 2 or 3.
    """
    given = [v for v in (rotate, scale, shear) if v is not None]
    n = given[0].shape[0] if given else 1
    m = torch.eye(dims, dtype=torch.float64).repeat(n, 1, 1)
    if rotate is not None:
        angles = torch.deg2rad(rotate.double().view(n, -1))
        planes = [(0, 1)] if dims == 2 else [(1, 2), (0, 2), (0, 1)]  # about axis 0, 1, 2
        if angles.shape[1] != len(planes):
            raise DensemedError(f"augment.affine.rotate: need {len(planes)} angle(s) per sample in {dims}D")
        for k, (a, b) in enumerate(planes):
            c, s = torch.cos(angles[:, k]), torch.sin(angles[:, k])
            r = torch.eye(dims, dtype=torch.float64).repeat(n, 1, 1)
            r[:, a, a], r[:, a, b], r[:, b, a], r[:, b, b] = c, -s, s, c
            m = m @ r
    if shear is not None:
        off = shear.double() * (1 - torch.eye(dims, dtype=torch.float64))
        m = m @ (torch.eye(dims, dtype=torch.float64) + off)
    if scale is not None:
        m = m @ torch.diag_embed(scale.double())
    return m


class Affine(Geometric):
    """Apply a forward affine map per sample.

    Args:
        matrix: forward linear part (B, d, d) (see :func:`affine_matrix`).
        translate: (B, d) pixels along the spatial axes, or ``None``.

    Shape:
        ``image`` (B, C, *S) -> (B, C, *S); every map likewise.

    Example:
        >>> x = torch.zeros(1, 1, 5, 5); x[0, 0, 1, 1] = 1
        >>> y = Affine(torch.eye(2)[None], torch.tensor([[2.0, 1.0]]))({"image": x})["image"]
        >>> print(y[0, 0].nonzero().tolist())
        [[3, 2]]
    """

    def __init__(self, matrix: torch.Tensor, translate: torch.Tensor | None = None) -> None:
        self.matrix = matrix.double().cpu()
        n, dims = self.matrix.shape[:2]
        zero = torch.zeros(n, dims, dtype=torch.float64)
        self.translate = zero if translate is None else translate.double().cpu()

    def to_warp(self, size: torch.Size, device: torch.device) -> Warp:
        """Sampling map ``q = A (p - t)``, ``A`` the inverse of the forward matrix."""
        if self.matrix.shape[1] != len(size):
            raise DensemedError(f"augment.affine: {self.matrix.shape[1]}-D matrix for {len(size)}-D images")
        # numpy for the tiny (B, d, d) inverses: torch.linalg.inv costs ~10 ms of LAPACK set-up per call.
        a = torch.from_numpy(np.linalg.inv(self.matrix.numpy()))
        eye = torch.eye(len(size), dtype=torch.float64)
        moving = ~((self.matrix == eye).flatten(1).all(1) & (self.translate == 0).all(1))
        return Warp(a, -(a @ self.translate.unsqueeze(-1)).squeeze(-1), None, moving)


class RandomAffine:
    """With probability ``p`` per sample, rotate, scale, shear and translate by random amounts.

    Args:
        p: probability per sample.
        rotate: degrees, ``r`` for ``[-r, r]`` or ``[low, high]``; in 3D drawn about each axis.
        scale: zoom range ``[low, high]``.
        isotropic: one zoom for all axes (``False``: one per axis).
        translate: fraction of each axis' size, ``f`` for ``[-f, f]`` or ``[low, high]``.
        shear: off-diagonal shear entries, ``s`` for ``[-s, s]`` or ``[low, high]``.
    """

    def __init__(
        self,
        p: float = 0.5,
        rotate: Any = 15.0,
        scale: Any = (0.85, 1.25),
        isotropic: bool = True,
        translate: Any = 0.0,
        shear: Any = 0.0,
    ) -> None:
        self.p = check_p(p, "augment.affine")
        self.rotate = symmetric_range(rotate, "augment.affine.rotate")
        scale = list(scale) if isinstance(scale, tuple) else scale
        self.scale = pair(scale, "augment.affine.scale", positive=True)
        if not isinstance(isotropic, bool):
            raise DensemedError(f"augment.affine.isotropic: must be true or false, got {isotropic!r}")
        self.isotropic = isotropic
        self.translate = symmetric_range(translate, "augment.affine.translate")
        self.shear = symmetric_range(shear, "augment.affine.shear")

    def sample(self, batch_size: int, size: torch.Size, generator: Generator = None) -> Affine:
        """Draw one affine map per sample (identity where the coin says no)."""
        n, dims = batch_size, len(size)
        apply = coin(n, self.p, generator)
        # Always draw 3-D amounts so the number of draws (and thus the stream) does not depend on dims.
        rot = uniform((n, 3), *self.rotate, generator)
        zoom = uniform((n, 3), *self.scale, generator)
        shear = uniform((n, 3, 3), *self.shear, generator)
        shift = uniform((n, 3), *self.translate, generator)
        if self.isotropic:
            zoom = zoom[:, :1].expand(n, 3)
        rot = rot[:, :1] if dims == 2 else rot
        m = affine_matrix(rot, zoom[:, :dims], shear[:, :dims, :dims], dims)
        t = shift[:, :dims] * torch.tensor([float(s) for s in size], dtype=torch.float64)
        eye = torch.eye(dims, dtype=torch.float64)
        m = torch.where(apply.view(n, 1, 1), m, eye)
        t = torch.where(apply.view(n, 1), t, torch.zeros_like(t))
        return Affine(m, t)
