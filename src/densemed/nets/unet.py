"""U-Net (Ronneberger, Fischer, Brox, MICCAI 2015; arXiv 1505.04597) in 2D and 3D.

A contracting path of ``depth`` levels, each two 3x3 convolutions + ReLU and a 2x2 max pooling
that doubles the channels (64, 128, 256, 512, 1024 at the paper's width), and an expanding path
of 2x2 up-convolutions that halve the channels, concatenation with the cropped feature map of the
same level ("copy and crop"), and two 3x3 convolutions; a final 1x1 convolution maps to classes.
With ``dims=3`` the same class is the 3D U-Net (Cicek et al., MICCAI 2016).

Padding (documented choices):

* ``padding="same"`` (default): zero-padded convolutions; the input is padded at its end to a
  multiple of ``2**depth`` and the logits cropped back, so any size works.
* ``padding="valid"``: the paper's unpadded convolutions (572 -> 388 at depth 4). The overlap-tile
  strategy is done inside ``forward``: the input is mirror-padded by the context the network
  consumes (92 pixels per side at depth 4) plus what makes every pooling see an even size, and
  the logits are cropped to the input's size, so the output contract still holds.

``norm="batch"`` by default (the paper had none; batch norm trains faster on small data);
``norm=None, padding="valid"`` is the paper's network, 31.0 M parameters for 2 classes.

Deep supervision (``deep_supervision=True``): 1x1 heads on the ``ds_levels`` decoder levels below
the last; in training mode ``forward`` returns ``[main, aux_1, ..., aux_k]`` with ``aux_i`` at
``1/2**i`` of the input size (rounded up), for :class:`densemed.losses.DeepSupervision`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from densemed.blocks import DoubleConv, center_crop_to, conv, conv_transpose, crop_to, max_pool, pad_to_multiple
from densemed.nets._aux import wants_aux
from densemed.nets.heads import Head, declare
from densemed.nets.registry import register
from densemed.typing import LayerSpec, NetOutput


class UNet(nn.Module):
    """U-Net encoder-decoder with skip connections.

    Args:
        in_channels: image channels.
        out_channels: classes (logits channels).
        dims: 2 or 3.
        depth: number of poolings (4 in the paper).
        base_width: channels of the first level (64 in the paper), doubled at each level.
        norm: ``"batch"``, ``"instance"``, ``"group"`` or ``None``.
        act: activation name or ``(name, kwargs)``.
        padding: ``"same"`` or ``"valid"`` (see module docstring).
        deep_supervision: return auxiliary low-resolution logits in training mode.
        ds_levels: how many decoder levels below the last get a head.

    Shape:
        ``(B, in_channels, *S) -> (B, out_channels, *S)`` for any ``S``.

    Example:
        >>> net = UNet(1, 2, dims=3, depth=3, base_width=8).eval()
        >>> print(net(torch.zeros(1, 1, 35, 51, 35)).shape)
        torch.Size([1, 2, 35, 51, 35])
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        dims: int = 2,
        depth: int = 4,
        base_width: int = 64,
        norm: LayerSpec = "batch",
        act: LayerSpec = "relu",
        padding: str = "same",
        deep_supervision: bool = False,
        ds_levels: int = 2,
    ) -> None:
        super().__init__()
        if padding not in ("same", "valid"):
            raise ValueError(f"padding must be 'same' or 'valid', got {padding!r}")
        if deep_supervision and padding == "valid":
            # valid-mode decoder levels cover a centred region, not the input grid; not supported
            raise ValueError("deep_supervision needs padding='same'")
        self.dims, self.depth, self.padding = dims, depth, padding
        self.deep_supervision = deep_supervision
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.encoders = nn.ModuleList()
        c = in_channels
        for w in widths:
            self.encoders.append(DoubleConv(c, w, dims, norm, act, padding))
            c = w
        self.pool = max_pool(dims)(2)
        self.ups = nn.ModuleList()
        self.decoders = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.ups.append(conv_transpose(dims)(w * 2, w, kernel_size=2, stride=2))
            self.decoders.append(DoubleConv(w * 2, w, dims, norm, act, padding))
        self.head = conv(dims)(widths[0], out_channels, kernel_size=1)
        declare(self, {"segmentation": Head(out_channels)})
        self.ds_levels = min(ds_levels, depth - 1) if deep_supervision else 0
        # heads for decoder levels 1..ds_levels below the last one (widths[1], widths[2], ...)
        self.ds_heads = nn.ModuleList(
            conv(dims)(widths[i], out_channels, kernel_size=1) for i in range(1, self.ds_levels + 1)
        )

    # -- valid-mode geometry -------------------------------------------------------------
    def _valid_input_size(self, out: int) -> int | None:
        """Input size whose valid-mode output is ``out``, or None when ``out`` is not reachable."""
        x = out
        for _ in range(self.depth):
            x += 4
            if x % 2:
                return None
            x //= 2
        x += 4  # bottleneck convolutions
        for _ in range(self.depth):
            x = 2 * x + 4
        return x

    def valid_sizes(self, size: int) -> tuple[int, int]:
        """Smallest valid-mode ``(output, input)`` sizes with output >= ``size``."""
        out = size
        while (inp := self._valid_input_size(out)) is None:
            out += 1
        return out, inp

    def _overlap_tile(self, x: torch.Tensor) -> torch.Tensor:
        # mirror-pad each spatial dim so the valid network's output covers the input
        pads: list[int] = []
        for s in reversed(x.shape[2:]):
            out, inp = self.valid_sizes(s)
            before = (inp - out) // 2
            pads += [before, inp - s - before]
        return _mirror_pad(x, pads)

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> NetOutput:
        """Logits ``(B, out_channels, *S)``; in training mode with deep supervision a list."""
        size = list(x.shape[2:])
        if self.padding == "valid":
            x = self._overlap_tile(x)
        else:
            x, _ = pad_to_multiple(x, 2**self.depth)
        skips = []
        for i, enc in enumerate(self.encoders):
            x = enc(x)
            if i < self.depth:
                skips.append(x)
                x = self.pool(x)
        aux: list[torch.Tensor] = []
        for level, (up, dec) in enumerate(zip(self.ups, self.decoders)):
            x = up(x)
            skip = skips.pop()
            if self.padding == "valid":
                skip = center_crop_to(skip, x.shape[2:])
            x = dec(torch.cat([skip, x], dim=1))
            scale = self.depth - 1 - level  # 2**scale = downsampling of this decoder level
            if wants_aux(self) and 1 <= scale <= self.ds_levels:
                aux.append((scale, self.ds_heads[scale - 1](x)))
        logits = crop_to(self.head(x), size)
        if not (wants_aux(self) and self.deep_supervision):
            return logits
        outs = [logits]
        for scale, a in sorted(aux):
            outs.append(crop_to(a, [math.ceil(s / 2**scale) for s in size]))
        return outs


def _mirror_pad(x: torch.Tensor, pads: list[int]) -> torch.Tensor:
    """Reflect-pad even when a pad exceeds the size (reflection applied repeatedly)."""
    while any(pads):
        step = []
        for i, p in enumerate(pads):
            dim_size = x.shape[-1 - i // 2]
            step.append(min(p, dim_size - 1))
        x = F.pad(x, step, mode="reflect")
        pads = [p - s for p, s in zip(pads, step)]
    return x


@register("unet", dims=(2, 3), small={"base_width": 4, "depth": 3})
def unet(
    in_channels: int = 1,
    out_channels: int = 2,
    dims: int = 2,
    depth: int = 4,
    base_width: int = 64,
    norm: LayerSpec = "batch",
    act: LayerSpec = "relu",
    padding: str = "same",
    deep_supervision: bool = False,
    ds_levels: int = 2,
) -> UNet:
    """U-Net (Ronneberger 2015); dims=3 is the 3D U-Net (Cicek 2016)."""
    return UNet(in_channels, out_channels, dims, depth, base_width, norm, act, padding, deep_supervision, ds_levels)
