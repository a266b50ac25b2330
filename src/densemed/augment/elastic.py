"""Elastic deformation as in U-Net (Ronneberger et al., MICCAI 2015, Sec. 3.1).

"We generate smooth deformations using random displacement vectors on a coarse 3 by 3 grid. The
displacements are sampled from a Gaussian distribution with 10 pixels standard deviation.
Per-pixel displacements are then computed using bicubic interpolation."

Here: control points on a coarse grid of ``g_i`` points per axis spanning the image (corners
included; ``grid=3`` is the paper's 3x3), displacements ``u_k ~ N(0, magnitude^2)`` pixels per
axis, and a dense field by separable cubic convolution (Keys 1981, ``a = -1/2``, Catmull-Rom:
it interpolates the control values and is C1) along every axis — the same in 2D and 3D, where
``F.interpolate`` has no tricubic mode. With ``x`` the control-grid coordinate of a pixel,
``i = floor(x)``, ``t = x - i``:

    u(x) = sum_{m=-1..2} w_m(t) u_{i+m},
    w_-1 = (-t^3 + 2t^2 - t)/2, w_0 = (3t^3 - 5t^2 + 2)/2, w_1 = (-3t^3 + 4t^2 + t)/2, w_2 = (t^3 - t^2)/2,

with indices clamped at the ends. The sampling map is ``q = p + u(p)``; in a pipeline the field is
added to the affine sampling map (see :mod:`densemed.augment.warp`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from densemed.augment._common import Generator, check_p, coin
from densemed.augment.warp import Geometric, Warp
from densemed.errors import DensemedError


def cubic_weights(
    n_out: int, n_in: int, dtype: torch.dtype = torch.float32, device: Any = None
) -> torch.Tensor:
    """Matrix (n_out, n_in) that upsamples ``n_in`` control values to ``n_out`` samples (corners aligned)."""
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    if n_in == 1:
        return w.fill_(1.0).to(dtype=dtype, device=device)
    x = torch.linspace(0, n_in - 1, n_out, dtype=torch.float64)
    i = x.floor().clamp(max=n_in - 2)
    t = x - i
    taps = [
        (-(t**3) + 2 * t**2 - t) / 2,
        (3 * t**3 - 5 * t**2 + 2) / 2,
        (-3 * t**3 + 4 * t**2 + t) / 2,
        (t**3 - t**2) / 2,
    ]
    rows = torch.arange(n_out)
    for m, tap in zip(range(-1, 3), taps):
        w.index_put_((rows, (i.long() + m).clamp(0, n_in - 1)), tap, accumulate=True)
    return w.to(dtype=dtype, device=device)


def upsample_field(coarse: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Cubic upsampling of a control-point field (B, d, *g) to (B, d, *size), separably per axis.

    Axes go last to first, each as one matrix product on a (rows, g_a, rest) view, so every
    intermediate — and the result — is contiguous without transposes.
    """
    dims = len(size)
    lead, g = coarse.shape[:2], list(coarse.shape[2:])
    u = coarse.contiguous()
    for axis in reversed(range(dims)):
        w = cubic_weights(size[axis], g[axis], u.dtype, u.device)  # (S_a, g_a)
        rest = int(torch.Size(size[axis + 1 :]).numel())
        u = torch.matmul(w, u.reshape(-1, g[axis], rest))  # (lead * before, S_a, rest)
        g[axis] = size[axis]
    return u.reshape(*lead, *size)


class Elastic(Geometric):
    """Displace every pixel of sample ``b`` by the dense field interpolated from ``control[b]``.

    Args:
        control: control-point displacements (B, d, g_0, ..., g_{d-1}) in pixels along each
            spatial axis (axis order as the tensor's spatial axes); all-zero samples are untouched.

    Shape:
        ``image`` (B, C, *S) -> (B, C, *S); every map likewise.

    Example:
        >>> shift = torch.zeros(1, 2, 3, 3); shift[:, 1] = -1.0  # read one pixel to the left
        >>> x = torch.zeros(1, 1, 4, 4); x[..., 1] = 1
        >>> y = Elastic(shift)({"image": x})["image"]
        >>> print((y[0, 0, 0].round(decimals=4) + 0.0).tolist())
        [0.0, 0.0, 1.0, 0.0]
    """

    def __init__(self, control: torch.Tensor) -> None:
        self.control = control

    def to_warp(self, size: torch.Size, device: torch.device) -> Warp:
        """Identity affine part plus the dense displacement field."""
        n, dims = self.control.shape[:2]
        if dims != len(size) or self.control.ndim != 2 + dims:
            raise DensemedError(
                f"augment.elastic: control grid {tuple(self.control.shape)} for {len(size)}-D images"
            )
        w = Warp.identity(n, dims)
        w.continuous = (self.control != 0).flatten(1).any(1).cpu()
        if w.continuous.any():
            dtype = torch.float64 if self.control.dtype == torch.float64 else torch.float32
            w.displacement = upsample_field(self.control.to(device=device, dtype=dtype), size)
        return w


class RandomElastic:
    """With probability ``p`` per sample, an elastic deformation with Gaussian control displacements.

    Args:
        p: probability per sample.
        grid: control points per axis (int or one per axis, >= 2), spanning the image; the paper's 3.
        spacing: alternatively, pixels between control points (overrides ``grid``):
            ``g = round((s - 1) / spacing) + 1`` points on an axis of size ``s``.
        magnitude: standard deviation of the control displacements in pixels (the paper's 10).
    """

    def __init__(
        self,
        p: float = 0.5,
        grid: int | Sequence[int] = 3,
        spacing: float | None = None,
        magnitude: float = 10.0,
    ) -> None:
        self.p = check_p(p, "augment.elastic")
        grids = [grid] if isinstance(grid, int) else list(grid) if isinstance(grid, (list, tuple)) else [None]
        if not all(isinstance(g, int) and not isinstance(g, bool) and g >= 2 for g in grids):
            raise DensemedError(f"augment.elastic.grid: must be an int >= 2 or a list of them, got {grid!r}")
        self.grid = grid
        if spacing is not None and (not isinstance(spacing, (int, float)) or spacing <= 0):
            raise DensemedError(f"augment.elastic.spacing: must be > 0 pixels, got {spacing!r}")
        self.spacing = spacing
        if not isinstance(magnitude, (int, float)) or magnitude < 0:
            raise DensemedError(f"augment.elastic.magnitude: must be >= 0 pixels, got {magnitude!r}")
        self.magnitude = float(magnitude)

    def control_shape(self, size: Sequence[int]) -> list[int]:
        """Control points per axis for spatial size ``size``."""
        if self.spacing is not None:
            return [max(2, round((s - 1) / self.spacing) + 1) for s in size]
        if isinstance(self.grid, int):
            return [self.grid] * len(size)
        if len(self.grid) != len(size):
            raise DensemedError(f"augment.elastic.grid: {len(self.grid)} values for {len(size)}-D images")
        return list(self.grid)

    def sample(self, batch_size: int, size: torch.Size, generator: Generator = None) -> Elastic:
        """Draw the control displacements (zero where the coin says no)."""
        apply = coin(batch_size, self.p, generator)
        g = self.control_shape(size)
        control = torch.randn(batch_size, len(size), *g, generator=generator) * self.magnitude
        control = control * apply.view(-1, *([1] * (len(size) + 1)))
        return Elastic(control)
