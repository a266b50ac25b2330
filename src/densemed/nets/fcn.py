"""Fully convolutional networks FCN-32s, FCN-16s, FCN-8s (Long, Shelhamer, Darrell, CVPR 2015).

VGG16's conv1_1 ... pool5 (:class:`densemed.blocks.vgg.VGG16Features`), its fully connected layers
cast as convolutions -- fc6 a 7x7 convolution to ``fc_width`` (4096) channels, fc7 a 1x1 convolution,
each followed by ReLU and dropout (p = 0.5) -- and a 1x1 "score" convolution predicting class
scores ``s_32`` at stride 32. Upsampling is a learned transposed convolution ("deconvolution")
initialised to bilinear interpolation: factor ``f`` uses a ``2f x 2f`` kernel of stride ``f`` with
weights ``(1 - |i - c| / f)(1 - |j - c| / f)``, ``c = f - 1/2``, on the class diagonal.

* FCN-32s: ``y = up_32(s_32)``.
* FCN-16s: ``s_16 = up_2(s_32) + score(pool4)``, ``y = up_16(s_16)``.
* FCN-8s:  ``s_8 = up_2(s_16) + score(pool3)``, ``y = up_8(s_8)``.

The skip scorers on pool4 and pool3 start at zero, as in the paper, so training starts from the
coarser net's prediction.

Geometry (documented choice). The paper pads conv1_1 by 100 pixels so that a valid 7x7 fc6 works
on small images, and then crops every fused map by a fixed offset (5, 9, 31 pixels). Here the input
is zero-padded at its end to a multiple of 32, fc6 is zero-padded ("same", padding 3), and each
``f``-fold transposed convolution has padding ``f / 2`` so that ``n -> f n`` exactly; all score maps
are then aligned on the same grid (a pixel of ``s_32`` covers the same 32x32 input block as the
2x2 block of ``s_16`` under it), no crop offsets are needed, and the logits are cropped back to the
input size. At these paddings the transposed convolution is exactly bilinear interpolation with
``align_corners=False`` away from the border. A VGG16 checkpoint still loads unchanged.

Parameters at the paper's widths (3 input channels, 21 classes): 134,489,759 for FCN-8s, of which
fc6 alone is 102.8 M; see ``tests/nets/test_fcn.py``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from densemed.blocks import crop_to, pad_to_multiple
from densemed.blocks.vgg import VGG16Features, load_vgg16_weights
from densemed.nets.heads import Head, declare
from densemed.nets.registry import register
from densemed.typing import PathType

_VARIANTS = {"32s": 32, "16s": 16, "8s": 8}


def bilinear_kernel(factor: int, channels: int) -> torch.Tensor:
    """Weights ``(channels, channels, 2f, 2f)`` of a per-channel bilinear upsampling by ``factor``."""
    size = 2 * factor
    centre = factor - 0.5
    r = torch.arange(size, dtype=torch.float64)
    w1 = 1 - (r - centre).abs() / factor  # (2f,) triangle
    k = (w1[:, None] * w1[None, :]).float()  # (2f, 2f)
    weight = torch.zeros(channels, channels, size, size)
    weight[range(channels), range(channels)] = k
    return weight


def bilinear_upsampler(channels: int, factor: int) -> nn.ConvTranspose2d:
    """A learnable ``factor``-fold transposed convolution initialised to bilinear interpolation.

    Shape:
        ``(B, channels, H, W) -> (B, channels, factor * H, factor * W)``.
    """
    if factor < 2 or factor % 2:
        raise ValueError(f"factor must be even and >= 2, got {factor}")
    up = nn.ConvTranspose2d(channels, channels, 2 * factor, stride=factor, padding=factor // 2, bias=False)
    if up.weight.device.type != "meta":
        with torch.no_grad():
            up.weight.copy_(bilinear_kernel(factor, channels))
    return up


class FCN(nn.Module):
    """FCN-32s/16s/8s on a VGG16 encoder.

    Args:
        in_channels: image channels (3 in the paper).
        out_channels: classes (21 for PASCAL VOC in the paper).
        variant: ``"32s"``, ``"16s"`` or ``"8s"``.
        base_width: VGG16 block-1 width (64); blocks have 1, 2, 4, 8, 8 times it.
        fc_width: channels of fc6 and fc7 (4096).
        fc_kernel: fc6 kernel size (7).
        dropout: dropout probability after fc6 and fc7 (0.5).
        encoder_weights: path of a torchvision-layout VGG16 state dict to load into conv1-5 and
            fc6/fc7 (``classifier.0``, ``classifier.3``); None trains from scratch.

    Shape:
        ``(B, in_channels, H, W) -> (B, out_channels, H, W)`` for any ``H, W``.

    Example:
        >>> net = FCN(1, 2, "8s", base_width=4, fc_width=16).eval()
        >>> print(net(torch.zeros(1, 1, 97, 131)).shape)
        torch.Size([1, 2, 97, 131])
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 21,
        variant: str = "8s",
        base_width: int = 64,
        fc_width: int = 4096,
        fc_kernel: int = 7,
        dropout: float = 0.5,
        encoder_weights: PathType | None = None,
    ) -> None:
        super().__init__()
        if variant not in _VARIANTS:
            raise ValueError(f"variant must be one of {sorted(_VARIANTS)}, got {variant!r}")
        if fc_kernel % 2 == 0:
            raise ValueError(f"fc_kernel must be odd to keep the stride-32 grid, got {fc_kernel}")
        self.variant = variant
        self.features = VGG16Features(in_channels, base_width)
        w = self.features.widths
        self.fc6 = nn.Conv2d(w[4], fc_width, fc_kernel, padding=fc_kernel // 2)
        self.fc7 = nn.Conv2d(fc_width, fc_width, 1)
        self.relu = nn.ReLU(inplace=True)
        self.drop = nn.Dropout(dropout)
        self.score_fr = nn.Conv2d(fc_width, out_channels, 1)
        declare(self, {"segmentation": Head(out_channels)})
        stride = _VARIANTS[variant]
        if stride <= 16:
            self.score_pool4 = _zero_conv(w[3], out_channels)
            self.up_pool5 = bilinear_upsampler(out_channels, 2)
        if stride == 8:
            self.score_pool3 = _zero_conv(w[2], out_channels)
            self.up_pool4 = bilinear_upsampler(out_channels, 2)
        self.up_final = bilinear_upsampler(out_channels, stride)
        if encoder_weights is not None:
            load_vgg16_weights(self.features, encoder_weights, self.fc6, self.fc7)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, out_channels, H, W)``."""
        size = x.shape[2:]
        x, _ = pad_to_multiple(x, 32)
        pool1, pool2, pool3, pool4, pool5 = self.features(x)
        h = self.drop(self.relu(self.fc6(pool5)))
        h = self.drop(self.relu(self.fc7(h)))
        s = self.score_fr(h)  # (B, K, H/32, W/32)
        if self.variant != "32s":
            s = self.up_pool5(s) + self.score_pool4(pool4)  # (B, K, H/16, W/16)
        if self.variant == "8s":
            s = self.up_pool4(s) + self.score_pool3(pool3)  # (B, K, H/8, W/8)
        return crop_to(self.up_final(s), size)


def _zero_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    score = nn.Conv2d(in_channels, out_channels, 1)
    nn.init.zeros_(score.weight)
    nn.init.zeros_(score.bias)
    return score


_SMALL = {"base_width": 4, "fc_width": 16}


def _preset(variant: str, summary: str) -> Callable[..., FCN]:
    """Register ``fcn<variant>``: :class:`FCN` of that variant with the paper's 7x7 fc6."""

    def builder(
        in_channels: int = 3,
        out_channels: int = 21,
        base_width: int = 64,
        fc_width: int = 4096,
        dropout: float = 0.5,
        encoder_weights: PathType | None = None,
    ) -> FCN:
        return FCN(in_channels, out_channels, variant, base_width, fc_width, 7, dropout, encoder_weights)

    builder.__name__ = builder.__qualname__ = f"fcn{variant}"
    builder.__doc__ = summary
    return register(f"fcn{variant}", dims=(2,), small=_SMALL)(builder)


fcn32s = _preset("32s", "FCN-32s (Long 2015): VGG16, fc6/fc7 as convolutions, one 32x learned upsampling.")
fcn16s = _preset("16s", "FCN-16s (Long 2015): FCN-32s fused with pool4 scores, 16x upsampling.")
fcn8s = _preset("8s", "FCN-8s (Long 2015): FCN-16s fused with pool3 scores, 8x upsampling.")
