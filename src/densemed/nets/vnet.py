"""V-Net (Milletari, Navab, Ahmadi, 3DV 2016; arXiv 1606.04797).

"V-Net: Fully Convolutional Neural Networks for Volumetric Medical Image Segmentation".

A volumetric encoder-decoder of residual stages. Each stage applies ``n`` convolutions with
5x5x5 kernels and PReLU and adds its input to the result (residual function learning),

    y = PReLU( x + F(x) ),   F = conv5 ∘ PReLU ∘ conv5 ∘ ... (n convolutions),

Stages on the left (compression) path have 1, 2, 3, 3 convolutions at 16, 32, 64, 128 channels,
the bottom stage 3 convolutions at 256, and the right (decompression) path 3, 3, 2, 1
convolutions at 256, 128, 64, 32 channels. Down-sampling is a 2x2x2 convolution with stride 2
that doubles the channels (no pooling, "which reduces the memory footprint during training");
up-sampling is a 2x2x2 transposed convolution with stride 2. Fine-grained features are
forwarded from each left stage to the right stage of the same resolution and concatenated with
the up-sampled features (so a right stage sees ``2 x`` its up-convolution's channels). A final
1x1x1 convolution gives the logits. The paper trains it with the soft Dice loss
``1 - 2 sum(p g) / (sum(p^2) + sum(g^2))`` (``loss: {name: dice}`` in ``configs/vnet_*.yaml``).

Documented choices where the paper is silent or differs:

* The first stage's residual: the input is repeated along channels to 16 channels (as in the
  paper's figure) when ``in_channels`` divides ``base_width``, else projected by a 1x1x1 conv.
* ``norm="batch"`` by default (the 2016 Caffe network had none; a norm after every convolution
  makes training from scratch on small data reliable); ``norm=None`` is the paper. With small
  3D batches and the Dice loss alone, batch norm's running statistics can fail to carry over to
  whole volumes at prediction time (measured on the hippocampus, see
  ``configs/vnet_hippocampus.yaml``), so that recipe uses ``norm="instance"``.
* ``stage_convs``: the nine stages' convolution counts (left 4, bottom, right 4) are a parameter;
  the default is the paper's ``(1, 2, 3, 3, 3, 3, 3, 2, 1)`` (21 convolutions of 5x5x5). MONAI's
  ``VNet`` uses ``(1, 1, 2, 3, 2, 2, 2, 1, 1)`` (15); that setting makes the two comparable
  layer for layer (``benchmarks/bench_nets3d.py``).
* Padding: every convolution is "same"-padded; the input is zero-padded at its end to a
  multiple of ``2**4 = 16`` (four stride-2 down-samplings) and the logits cropped back, so any
  size works.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from densemed.blocks import act_layer, conv, conv_transpose, crop_to, norm_layer, pad_to_multiple
from densemed.nets.heads import Head, declare
from densemed.nets.registry import register
from densemed.typing import LayerSpec

#: Convolutions per stage in the paper: left path (4 stages), bottom, right path (4 stages).
PAPER_STAGE_CONVS = (1, 2, 3, 3, 3, 3, 3, 2, 1)
#: The counts of MONAI's ``VNet`` (for like-for-like comparisons).
MONAI_STAGE_CONVS = (1, 1, 2, 3, 2, 2, 2, 1, 1)
LEVELS = 4  # stride-2 down-samplings


def _conv_norm(c_in: int, c_out: int, kernel: int, stride: int, norm: LayerSpec) -> nn.Sequential:
    """3D conv (no bias when a norm follows) + norm, without activation."""
    has_norm = norm not in (None, "none")
    pad = (kernel - 1) // 2 if stride == 1 else 0
    return nn.Sequential(
        conv(3)(c_in, c_out, kernel, stride, pad, bias=not has_norm), norm_layer(norm, 3, c_out)
    )


class ResidualStage(nn.Module):
    """``n`` 5x5x5 conv(+norm) layers with PReLU between them, input added before the last PReLU.

    Shape:
        ``(B, C, D, H, W) -> (B, C, D, H, W)``.
    """

    def __init__(self, channels: int, n_convs: int, kernel_size: int = 5, norm: LayerSpec = "batch") -> None:
        super().__init__()
        self.convs = nn.ModuleList(_conv_norm(channels, channels, kernel_size, 1, norm) for _ in range(n_convs))
        self.acts = nn.ModuleList(act_layer("prelu", channels) for _ in range(n_convs))

    def forward(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        """``PReLU(residual + F(x))``; ``residual`` defaults to ``x``."""
        h = x
        last = len(self.convs) - 1
        for i, (c, a) in enumerate(zip(self.convs, self.acts)):
            h = c(h)
            h = a(h + (x if residual is None else residual)) if i == last else a(h)
        return h


class VNet(nn.Module):
    """V-Net: residual 5x5x5 stages, strided-conv down-sampling, transposed-conv up-sampling.

    Args:
        in_channels: image channels.
        out_channels: classes (logits channels; the paper used 2 with a voxel-wise softmax).
        base_width: channels of the first stage (16 in the paper), doubled at each level.
        kernel_size: convolution size inside stages (5 in the paper).
        norm: ``"batch"``, ``"instance"``, ``"group"`` or ``None`` (the paper).
        stage_convs: convolutions of the 9 stages (left 4, bottom, right 4), each >= 1.

    Shape:
        ``(B, in_channels, D, H, W) -> (B, out_channels, D, H, W)`` for any ``D, H, W``.

    Example:
        >>> net = VNet(1, 2, base_width=4).eval()
        >>> print(net(torch.zeros(1, 1, 19, 23, 17)).shape)
        torch.Size([1, 2, 19, 23, 17])
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        base_width: int = 16,
        kernel_size: int = 5,
        norm: LayerSpec = "batch",
        stage_convs: Sequence[int] = PAPER_STAGE_CONVS,
    ) -> None:
        super().__init__()
        counts = [int(n) for n in stage_convs]
        if len(counts) != 2 * LEVELS + 1 or min(counts) < 1:
            raise ValueError(
                f"vnet: stage_convs needs {2 * LEVELS + 1} counts >= 1 (left 4, bottom, right 4), "
                f"got {list(stage_convs)}"
            )
        left, right = counts[: LEVELS + 1], counts[LEVELS + 1 :]  # left includes the bottom
        w = [base_width * 2**i for i in range(LEVELS + 1)]  # 16, 32, 64, 128, 256
        self.in_channels, self.base_width = in_channels, base_width
        self.multiple = 2**LEVELS
        # first stage: lift the input to w[0] channels; its residual is the (repeated) input
        self.stem = _conv_norm(in_channels, w[0], kernel_size, 1, norm)
        self.stem_act = act_layer("prelu", w[0])
        self.first_rest = ResidualStage(w[0], left[0] - 1, kernel_size, norm) if left[0] > 1 else None
        self.in_proj = None if w[0] % in_channels == 0 else conv(3)(in_channels, w[0], 1)
        self.left = nn.ModuleList()
        self.down = nn.ModuleList()
        for level in range(1, len(w)):
            self.down.append(
                nn.Sequential(_conv_norm(w[level - 1], w[level], 2, 2, norm), act_layer("prelu", w[level]))
            )
            self.left.append(ResidualStage(w[level], left[level], kernel_size, norm))
        self.up = nn.ModuleList()
        self.right = nn.ModuleList()
        for i, level in enumerate(range(len(w) - 2, -1, -1)):  # 3, 2, 1, 0
            c_in = w[level + 1] if i == 0 else w[level + 2]  # channels of the stage below
            self.up.append(
                nn.Sequential(
                    conv_transpose(3)(c_in, w[level], 2, 2, bias=norm in (None, "none")),
                    norm_layer(norm, 3, w[level]),
                    act_layer("prelu", w[level]),
                )
            )
            self.right.append(ResidualStage(2 * w[level], right[i], kernel_size, norm))
        self.head = conv(3)(2 * w[0], out_channels, 1)
        declare(self, {"segmentation": Head(out_channels)})

    def _first_stage(self, x: torch.Tensor) -> torch.Tensor:
        if self.in_proj is not None:
            res = self.in_proj(x)
        else:
            res = x.repeat(1, self.base_width // self.in_channels, 1, 1, 1)  # (B, 16, D, H, W)
        if self.first_rest is None:
            return self.stem_act(self.stem(x) + res)
        return self.first_rest(self.stem_act(self.stem(x)), residual=res)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, out_channels, D, H, W)``."""
        x, size = pad_to_multiple(x, self.multiple)
        h = self._first_stage(x)
        skips = [h]
        for down, stage in zip(self.down, self.left):
            h = stage(down(h))
            skips.append(h)
        skips.pop()  # the bottom stage is not forwarded
        for up, stage in zip(self.up, self.right):
            u = up(h)
            h = stage(torch.cat([skips.pop(), u], dim=1))
        return crop_to(self.head(h), size)


@register("vnet", dims=(3,), small={"base_width": 4, "kernel_size": 3})
def vnet(
    in_channels: int = 1,
    out_channels: int = 2,
    base_width: int = 16,
    kernel_size: int = 5,
    norm: LayerSpec = "batch",
    stage_convs: Sequence[int] = PAPER_STAGE_CONVS,
    dims: int = 3,
) -> VNet:
    """V-Net (Milletari 2016): residual 5x5x5 stages with PReLU, trained with the Dice loss."""
    if dims != 3:
        raise ValueError(f"vnet is 3D only, got dims={dims}")
    return VNet(in_channels, out_channels, base_width, kernel_size, norm, stage_convs)
