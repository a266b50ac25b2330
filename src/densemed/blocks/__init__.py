"""Building blocks shared by two or more networks."""

from densemed.blocks.conv import ConvNormAct, DoubleConv
from densemed.blocks.factories import (
    act_layer,
    avg_pool,
    conv,
    conv_transpose,
    dropout,
    max_pool,
    max_unpool,
    norm_layer,
)
from densemed.blocks.resize import center_crop_to, crop_to, pad_to_multiple, resize_like

__all__ = [
    "ConvNormAct",
    "DoubleConv",
    "act_layer",
    "avg_pool",
    "center_crop_to",
    "conv",
    "conv_transpose",
    "crop_to",
    "dropout",
    "max_pool",
    "max_unpool",
    "norm_layer",
    "pad_to_multiple",
    "resize_like",
]
