"""VoxResNet (Chen, Dou, Yu, Qin, Heng, NeuroImage 170:446-455, 2018; arXiv 1608.05895).

"VoxResNet: Deep voxelwise residual networks for brain segmentation from 3D MR images".

The VoxRes module is a pre-activation residual unit,

    x_{l+1} = x_l + F(x_l),   F = conv3 ∘ ReLU ∘ BN ∘ conv3 ∘ ReLU ∘ BN,

with 3x3x3 convolutions at a constant width (64). The network (paper Fig. 2):

=====================  ==========================================  ============
block                  layers                                      resolution
=====================  ==========================================  ============
conv1a, conv1b         conv3 (32), BN, ReLU, conv3 (32)            1
(C1 taps here)         BN, ReLU
conv1c                 conv3 (64), stride 2                        1/2
VoxRes2, VoxRes3       two VoxRes modules (64)                     1/2
(C2 taps here)         BN, ReLU
conv4                  conv3 (64), stride 2                        1/4
VoxRes5, VoxRes6       two VoxRes modules (64)                     1/4
(C3 taps here)         BN, ReLU
conv7                  conv3 (64), stride 2                        1/8
VoxRes8, VoxRes9       two VoxRes modules (64)                     1/8
(C4 taps here)         BN, ReLU
=====================  ==========================================  ============

Each of the four auxiliary classifiers ``C_k`` up-samples its features to the input resolution
with a transposed convolution and gives class scores there; the multi-level contextual
information is fused by summing them, and training supervises the fused output and every
``C_k`` (deep supervision): ``L = L(y, sum_k C_k) + sum_k w_k L(y, C_k)``.

Documented choices where the paper is silent:

* ``C_k`` at down-sampling ``s = 2**(k-1)`` is a single transposed convolution from the tap's
  channels straight to the classes with kernel ``2s``, stride ``s``, padding ``s/2`` (output
  exactly ``s`` times larger; overlapping kernels avoid checkerboard blocks); ``C_1`` at full
  resolution is a 1x1x1 convolution. Going straight to the classes keeps ``C_4`` at
  64 * classes * 16**3 weights instead of 64 * 64 * 16**3.
* Default ``in_channels=3`` (the paper's T1, T1-IR and FLAIR) and ``out_channels=4``
  (background, CSF, grey and white matter); recipes override both from the data.
* The input is zero-padded at its end to a multiple of 8 and the logits cropped back.

Output contract: in eval mode the fused logits ``(B, out_channels, D, H, W)``; when
:func:`densemed.nets.wants_aux` is true the list ``[fused, C_1, C_2, C_3, C_4]``, all at the
input's size, with ``fused == C_1 + C_2 + C_3 + C_4``.
"""

from __future__ import annotations

import torch
from torch import nn

from densemed.blocks import conv, conv_transpose, crop_to, norm_layer, pad_to_multiple
from densemed.nets._aux import wants_aux
from densemed.nets.heads import Head, declare
from densemed.nets.registry import register
from densemed.typing import LayerSpec, NetOutput


class VoxRes(nn.Module):
    """VoxRes module: ``x + conv3(ReLU(BN(conv3(ReLU(BN(x))))))``.

    Shape:
        ``(B, C, D, H, W) -> (B, C, D, H, W)``.
    """

    def __init__(self, channels: int, norm: LayerSpec = "batch") -> None:
        super().__init__()
        self.body = nn.Sequential(
            norm_layer(norm, 3, channels),
            nn.ReLU(),
            conv(3)(channels, channels, 3, 1, 1),
            norm_layer(norm, 3, channels),
            nn.ReLU(),
            conv(3)(channels, channels, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Identity plus the residual branch."""
        return x + self.body(x)


def _bn_relu(channels: int, norm: LayerSpec) -> nn.Sequential:
    return nn.Sequential(norm_layer(norm, 3, channels), nn.ReLU())


class VoxResNet(nn.Module):
    """VoxResNet with four deeply supervised auxiliary classifiers fused by summation.

    Args:
        in_channels: image channels (modalities).
        out_channels: classes (logits channels).
        width: channels of the VoxRes modules (64 in the paper); the first two convolutions
            have ``width // 2``.
        norm: ``"batch"`` (paper), ``"instance"``, ``"group"`` or ``None``.

    Shape:
        ``(B, in_channels, D, H, W) -> (B, out_channels, D, H, W)`` for any ``D, H, W``; with
        auxiliary outputs a list of 5 tensors of that shape.

    Example:
        >>> net = VoxResNet(1, 3, width=8).eval()
        >>> print(net(torch.zeros(1, 1, 19, 23, 17)).shape)
        torch.Size([1, 3, 19, 23, 17])
    """

    def __init__(self, in_channels: int = 3, out_channels: int = 4, width: int = 64, norm: LayerSpec = "batch") -> None:
        super().__init__()
        half = width // 2
        self.conv1 = nn.Sequential(
            conv(3)(in_channels, half, 3, 1, 1), *_bn_relu(half, norm), conv(3)(half, half, 3, 1, 1)
        )
        self.tap1 = _bn_relu(half, norm)
        self.stages = nn.ModuleList()
        self.taps = nn.ModuleList()
        c = half
        for _ in range(3):
            # strided conv (conv1c, conv4, conv7) then two VoxRes modules; the features after the
            # second BN-ReLU are the next block's input *and* the classifier tap (pre-activation)
            self.stages.append(nn.Sequential(conv(3)(c, width, 3, 2, 1), VoxRes(width, norm), VoxRes(width, norm)))
            self.taps.append(_bn_relu(width, norm))
            c = width
        heads: list[nn.Module] = [conv(3)(half, out_channels, 1)]
        declare(self, {"segmentation": Head(out_channels)})
        for k in range(1, 4):
            s = 2**k
            heads.append(conv_transpose(3)(width, out_channels, 2 * s, s, s // 2))
        self.classifiers = nn.ModuleList(heads)

    def forward(self, x: torch.Tensor) -> NetOutput:
        """Fused logits; when auxiliary outputs are wanted ``[fused, C_1, ..., C_4]``, all full size."""
        x, size = pad_to_multiple(x, 8)
        h = self.tap1(self.conv1(x))
        aux = [self.classifiers[0](h)]
        for stage, tap, head in zip(self.stages, self.taps, self.classifiers[1:]):
            h = tap(stage(h))
            aux.append(head(h))
        aux = [crop_to(a, size) for a in aux]
        fused = aux[0] + aux[1] + aux[2] + aux[3]
        return [fused, *aux] if wants_aux(self) else fused


@register("voxresnet", dims=(3,), small={"width": 8})
def voxresnet(
    in_channels: int = 3,
    out_channels: int = 4,
    width: int = 64,
    norm: LayerSpec = "batch",
    dims: int = 3,
) -> VoxResNet:
    """VoxResNet (Chen 2018): VoxRes modules, 4 auxiliary classifiers summed into the output."""
    if dims != 3:
        raise ValueError(f"voxresnet is 3D only, got dims={dims}")
    return VoxResNet(in_channels, out_channels, width, norm)
