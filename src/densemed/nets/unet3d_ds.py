"""3D U-Net with multi-level deep supervision (Zeng, Yang, Zheng, MLMI 2017).

Zeng et al., "3D U-net with multi-level deep supervision: fully automatic segmentation of
proximal femur in 3D MR images", Machine Learning in Medical Imaging (MLMI) 2017, LNCS 10541.

The network is the 3D U-Net of Cicek et al. (MICCAI 2016): ``depth`` levels of two 3x3x3
convolutions + BN + ReLU, 2x2x2 max pooling, 2x2x2 up-convolutions and skip concatenation (see
:class:`densemed.nets.unet.UNet`, reused here by subclassing). Multi-level deep supervision adds,
on each of the ``ds_levels`` decoder levels below the last, a 1x1x1 classifier whose logits are
upsampled to the input size, so every level is trained against the full-resolution label.
The paper's objective is a weighted sum over the main and auxiliary outputs,

    L = L_main(y, p_0) + sum_k  w_k * L_aux(y, up(p_k)),

with ``up`` the upsampling of level ``k`` (downsampled ``2**k`` times) to the input grid. The
weights ``w_k`` belong to the loss (``loss: {name: deep_supervision, weights: [...]}``), not to
the network.

Documented choices where the paper is silent or differs:

* Upsampling of the auxiliary logits is trilinear interpolation by the factor ``2**k``
  (``align_corners=False``, so voxel centres of the coarse level map to the right places on the
  fine grid); the paper uses deconvolutions. Interpolation adds no parameters and keeps the
  auxiliary heads identical to U-Net's deep-supervision heads.
* Defaults follow Cicek's 3D U-Net: ``depth=3``, ``base_width=32`` (32, 64, 128, 256 channels),
  batch norm, and ``ds_levels=2`` (auxiliary outputs from the 1/2 and 1/4 resolution decoder
  levels).

Output contract: in eval mode one tensor ``(B, out_channels, D, H, W)``; when
:func:`densemed.nets.wants_aux` is true a list ``[main, aux_1, ..., aux_k]`` where **every**
element has the input's spatial size (``aux_k`` comes from the level downsampled ``2**k``
times).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from densemed.blocks import crop_to
from densemed.nets._aux import wants_aux
from densemed.nets.registry import register
from densemed.nets.unet import UNet
from densemed.typing import LayerSpec, NetOutput


class UNet3dDS(UNet):
    """3D U-Net whose deep-supervision outputs are upsampled to the input size.

    Args:
        in_channels: image channels.
        out_channels: classes (logits channels).
        depth: number of poolings (3 in Cicek's 3D U-Net).
        base_width: channels of the first level, doubled at each level.
        norm: ``"batch"``, ``"instance"``, ``"group"`` or ``None``.
        act: activation name or ``(name, kwargs)``.
        ds_levels: decoder levels below the last that get an auxiliary classifier
            (at most ``depth - 1``).

    Shape:
        ``(B, in_channels, D, H, W) -> (B, out_channels, D, H, W)`` for any ``D, H, W``; with
        auxiliary outputs a list of ``1 + ds_levels`` tensors of that same shape.

    Example:
        >>> net = UNet3dDS(1, 3, depth=2, base_width=4).train()
        >>> print([tuple(o.shape) for o in net(torch.zeros(1, 1, 19, 23, 17))])
        [(1, 3, 19, 23, 17), (1, 3, 19, 23, 17)]
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        depth: int = 3,
        base_width: int = 32,
        norm: LayerSpec = "batch",
        act: LayerSpec = "relu",
        ds_levels: int = 2,
    ) -> None:
        if depth < 2 or ds_levels < 1:
            raise ValueError("unet3d_ds needs depth >= 2 and ds_levels >= 1 (else use 'unet')")
        super().__init__(
            in_channels, out_channels, dims=3, depth=depth, base_width=base_width, norm=norm, act=act,
            padding="same", deep_supervision=True, ds_levels=ds_levels,
        )

    def forward(self, x: torch.Tensor) -> NetOutput:
        """Main logits; when auxiliary outputs are wanted ``[main, aux_1, ..., aux_k]``, all full size."""
        out = super().forward(x)
        if not wants_aux(self):
            return out
        size = x.shape[2:]
        main, *aux = out
        full = [main]
        for k, a in enumerate(aux, start=1):
            # aux_k covers ceil(S / 2**k) voxels of the padded grid: scaling by 2**k gives
            # >= S voxels aligned with the input's start; crop the padding away.
            up = F.interpolate(a, scale_factor=2**k, mode="trilinear", align_corners=False)
            full.append(crop_to(up, size))
        return full


@register("unet3d_ds", dims=(3,), small={"base_width": 4, "depth": 3})
def unet3d_ds(
    in_channels: int = 1,
    out_channels: int = 2,
    depth: int = 3,
    base_width: int = 32,
    norm: LayerSpec = "batch",
    act: LayerSpec = "relu",
    ds_levels: int = 2,
    dims: int = 3,
) -> UNet3dDS:
    """3D U-Net with multi-level deep supervision (Zeng 2017); aux outputs at full size."""
    if dims != 3:
        raise ValueError(f"unet3d_ds is 3D only, got dims={dims}")
    return UNet3dDS(in_channels, out_channels, depth, base_width, norm, act, ds_levels)
