"""Convolution blocks shared by several networks."""

from __future__ import annotations

from torch import nn

from densemed.blocks.factories import act_layer, conv, norm_layer
from densemed.typing import LayerSpec


class ConvNormAct(nn.Sequential):
    """Convolution, optional normalisation, activation: ``(B, C_in, *S) -> (B, C_out, *S')``.

    With ``padding="same"`` (default) and stride 1 the spatial size is kept; ``padding="valid"``
    shrinks it by ``kernel_size - 1``. The convolution has no bias when a norm follows it.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dims: int = 2,
        kernel_size: int = 3,
        stride: int = 1,
        padding: str | int = "same",
        norm: LayerSpec = "batch",
        act: LayerSpec = "relu",
        dilation: int = 1,
    ) -> None:
        pad = (dilation * (kernel_size - 1)) // 2 if padding == "same" else (0 if padding == "valid" else padding)
        has_norm = norm not in (None, "none")
        super().__init__(
            conv(dims)(in_channels, out_channels, kernel_size, stride, pad, dilation=dilation, bias=not has_norm),
            norm_layer(norm, dims, out_channels),
            act_layer(act, out_channels),
        )


class DoubleConv(nn.Sequential):
    """Two ``ConvNormAct`` in a row, the U-Net level: ``(B, C_in, *S) -> (B, C_out, *S)``."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        dims: int = 2,
        norm: LayerSpec = "batch",
        act: LayerSpec = "relu",
        padding: str = "same",
        kernel_size: int = 3,
    ) -> None:
        super().__init__(
            ConvNormAct(in_channels, out_channels, dims, kernel_size, 1, padding, norm, act),
            ConvNormAct(out_channels, out_channels, dims, kernel_size, 1, padding, norm, act),
        )
