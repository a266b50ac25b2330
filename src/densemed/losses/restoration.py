"""Image-restoration losses: L1, SSIM and their mix (Zhao, Gallo, Frosio, Kautz, IEEE TCI 3:47-57, 2017).

For an output image ``x`` and its target ``y`` (``(B, C, *S)``, 2D or 3D, float), with per-voxel
weights ``w`` (``(B, 1, *S)``, optional):

    L1       = sum_p w_p |x_p - y_p| / sum_p w_p          (plain mean without weights)
    SSIM     = weighted mean over the valid voxels of the SSIM map (Wang et al., IEEE TIP 2004),
               SSIM_p = (2 mu_x mu_y + C1)(2 s_xy + C2) / ((mu_x^2 + mu_y^2 + C1)(s_x^2 + s_y^2 + C2)),
               local statistics under a Gaussian window (sigma 1.5, truncated at 3.5 sigma: 11 taps),
               C1 = (0.01 R)^2, C2 = (0.03 R)^2, R = ``data_range``
    ssim     = 1 - SSIM
    ssim_l1  = alpha (1 - SSIM) + (1 - alpha) L1           (Zhao et al.'s mix, alpha = 0.84)

Documented choices:

* The SSIM map is computed where the window fits inside the patch ("valid" filtering: a
  patch side ``n`` gives ``n - 10`` positions), so no padding invents structure at patch borders;
  its mean equals :func:`densemed.metrics.image_quality.ssim` with ``gaussian=True`` on the same
  array (that function filters with reflection and then drops the 5 border voxels: the same
  voxels, the same windows; tested). Weights are cropped to the same voxels.
* Zhao et al. mix multi-scale SSIM with a Gaussian-weighted L1; training patches of 24-48 voxels
  are too small for five scales, so this is single-scale SSIM with a plain L1 (``alpha`` 0.84
  as in the paper).
* ``data_range`` defaults to 1: the image task scales each volume to about [0, 1]
  (:mod:`densemed.tasks.image`). Computation in float32 at least (float64 stays float64), also
  under autocast.

Names: ``l1``, ``ssim``, ``ssim_l1`` (``mse``, the L2 loss, is in :mod:`densemed.losses.multitask`).
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
import torch.nn.functional as F

from densemed.errors import DensemedError
from densemed.losses.registry import Loss, register

SIGMA, TRUNCATE = 1.5, 3.5
RADIUS = int(TRUNCATE * SIGMA + 0.5)  # 5: an 11-tap window, as scipy's gaussian_filter(truncate=3.5)


@lru_cache(maxsize=8)
def _taps(dtype: torch.dtype) -> torch.Tensor:
    x = torch.arange(-RADIUS, RADIUS + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / SIGMA) ** 2)
    return (g / g.sum()).to(dtype)


def _filter_valid(x: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian filtering of ``(N, 1, *S)`` along every spatial axis, valid positions only."""
    dims = x.dim() - 2
    conv = (F.conv2d, F.conv3d)[dims - 2]
    taps = _taps(x.dtype).to(x.device)
    for axis in range(dims):
        shape = [1, 1] + [1] * dims
        shape[2 + axis] = taps.numel()
        x = conv(x, taps.view(shape))
    return x


def _check(output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None, name: str) -> None:
    if not isinstance(output, torch.Tensor):
        raise ValueError(f"{name} takes one image tensor, got {type(output).__name__}")
    if output.dim() < 3 or target.shape != output.shape:
        raise ValueError(f"{name}: target {tuple(target.shape)} must match output {tuple(output.shape)} (B, C, *S)")
    if weights is not None and (weights.shape[:2] != (output.shape[0], 1) or weights.shape[2:] != output.shape[2:]):
        raise ValueError(f"{name}: weights {tuple(weights.shape)} must be (B, 1, *S) for {tuple(output.shape)}")


def ssim_map(output: torch.Tensor, target: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    """The SSIM map of ``(B, C, *S)`` images at the valid window positions: ``(B, C, *(S - 10))``.

    Example:
        >>> x = torch.rand(1, 1, 16, 16)
        >>> print(ssim_map(x, x).shape, float(ssim_map(x, x).mean()))
        torch.Size([1, 1, 6, 6]) 1.0
    """
    dims = output.dim() - 2
    if dims not in (2, 3):
        raise ValueError(f"ssim takes 2D or 3D images (B, C, *S), got {tuple(output.shape)}")
    if min(output.shape[2:]) < 2 * RADIUS + 1:
        raise ValueError(f"ssim: image side {min(output.shape[2:])} is smaller than the {2 * RADIUS + 1}-voxel window")
    dtype = torch.promote_types(output.dtype, torch.float32)
    b, c = output.shape[:2]
    x = output.to(dtype).reshape(b * c, 1, *output.shape[2:])
    y = target.to(dtype).reshape(b * c, 1, *target.shape[2:])
    # one filtering pass over the five statistics stacked along the batch; autocast off, or the
    # convolutions would run in bf16 and the variances (differences of close numbers) lose their digits
    with torch.autocast(x.device.type, enabled=False):
        stats = _filter_valid(torch.cat([x, y, x * x, y * y, x * y]))
    mx, my, xx, yy, xy = stats.split(b * c)
    vx, vy, vxy = xx - mx * mx, yy - my * my, xy - mx * my
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.reshape(b, c, *s.shape[2:])


def _weighted_mean(values: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
    if weights is None:
        return values.mean()
    w = weights.to(values.dtype).expand_as(values)
    return (values * w).sum() / w.sum().clamp_min(torch.finfo(values.dtype).tiny)


def _crop_valid(weights: torch.Tensor | None) -> torch.Tensor | None:
    if weights is None:
        return None
    return weights[(slice(None), slice(None)) + tuple(slice(RADIUS, n - RADIUS) for n in weights.shape[2:])]


class _RestorationLoss(Loss):
    accepts_weights = True
    regression = True  # multi-task losses hand it the float target

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__(reduction)
        if reduction != "mean":
            raise DensemedError(f"loss.reduction: {type(self).__name__} supports only 'mean', got {reduction!r}")


@register("l1")
class L1Loss(_RestorationLoss):
    """Mean absolute error, optionally weighted per voxel (``sum w |x - y| / sum w``).

    Shape:
        output, target ``(B, C, *S)``; weights ``(B, 1, *S)`` -> scalar.

    Example:
        >>> print(L1Loss()(torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, 0.0], [0.0, 3.0]]]])))
        tensor(1.)
    """

    def forward(self, output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Weighted mean of ``|output - target|``."""
        _check(output, target, weights, "l1")
        return _weighted_mean((output - target.to(output.dtype)).abs(), weights)


@register("ssim")
class SSIMLoss(_RestorationLoss):
    """``1 - SSIM`` with a Gaussian window (see the module docstring).

    Args:
        data_range: ``R`` of the SSIM constants (1 for images scaled to [0, 1]).

    Shape:
        output, target ``(B, C, *S)`` with every side >= 11; weights ``(B, 1, *S)`` -> scalar.

    Example:
        >>> x = torch.rand(2, 1, 12, 12, 12)
        >>> print(float(SSIMLoss()(x, x)))
        0.0
    """

    def __init__(self, data_range: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(reduction)
        if isinstance(data_range, bool) or not isinstance(data_range, (int, float)) or not data_range > 0:
            raise DensemedError(f"loss.data_range: must be a positive number, got {data_range!r}")
        self.data_range = float(data_range)

    def forward(self, output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """``1 -`` the (weighted) mean SSIM of the valid window positions."""
        _check(output, target, weights, "ssim")
        return 1 - _weighted_mean(ssim_map(output, target, self.data_range), _crop_valid(weights))


@register("ssim_l1")
class SSIML1Loss(SSIMLoss):
    """``alpha (1 - SSIM) + (1 - alpha) L1`` (Zhao et al. 2017; alpha 0 is ``l1``, alpha 1 is ``ssim``).

    Args:
        alpha: weight of the SSIM term, in [0, 1] (0.84 in the paper).
        data_range: ``R`` of the SSIM constants.

    Shape:
        output, target ``(B, C, *S)`` with every side >= 11; weights ``(B, 1, *S)`` -> scalar.

    Example:
        >>> x = torch.zeros(1, 1, 12, 12)
        >>> print(round(float(SSIML1Loss(alpha=0.5)(x, x + 2)), 4))  # 0.5 (1 - C1 / (4 + C1)) + 0.5 * 2
        1.5
    """

    def __init__(self, alpha: float = 0.84, data_range: float = 1.0, reduction: str = "mean") -> None:
        super().__init__(data_range, reduction)
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1 or math.isnan(alpha):
            raise DensemedError(f"loss.alpha: must be in [0, 1], got {alpha!r}")
        self.alpha = float(alpha)

    def forward(self, output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """The mix of the two terms (each weighted per voxel when ``weights`` are given)."""
        _check(output, target, weights, "ssim_l1")
        l1 = _weighted_mean((output - target.to(output.dtype)).abs(), weights)
        if self.alpha == 0:
            return l1
        dssim = 1 - _weighted_mean(ssim_map(output, target, self.data_range), _crop_valid(weights))
        return self.alpha * dssim + (1 - self.alpha) * l1
