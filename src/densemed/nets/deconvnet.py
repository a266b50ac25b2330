"""DeconvNet (Noh, Hong, Han, "Learning Deconvolution Network for Semantic Segmentation", ICCV 2015).

A convolution network -- VGG16's 13 convolutions with batch normalization and ReLU, five 2x2 max
poolings that record their argmax "switches" -- then fc6 (7x7 convolution to 4096 channels) and
fc7 (1x1), and a mirrored deconvolution network: a 7x7 transposed convolution undoing fc6, then
for each level from 5 down to 1 an **unpooling** followed by the level's transposed convolutions
(3x3, stride 1) with batch normalization and ReLU, and a 1x1 classifier.

Unpooling with switches (Sec. 3.2.1 of the paper): for a pooled map ``p`` with switches ``m``
(``m[b, c, i, j]`` = flat index of the maximum inside the 2x2 window), the unpooled map ``u`` of the
pre-pooling size is

    ``u[b, c, m[b, c, i, j]] = p[b, c, i, j]`` and 0 elsewhere,

a sparse map that keeps each activation at the location it came from; the following transposed
convolutions densify it. Implemented with ``MaxPool2d(return_indices=True)`` and
:class:`SwitchUnpool2d`: the formula above as one ``scatter`` on the flattened map. It equals
``MaxUnpool2d(2, 2)(p, m, output_size=...)`` (the 2x2 windows do not overlap, so no two switches
collide; see ``tests/nets/test_deconvnet.py``) but, unlike it, traces into an ONNX graph
(``ScatterElements``) for ``densemed export``: ``max_unpool2d`` checks ``output_size`` against the
input size with Python comparisons that fail on traced sizes.

Decoder widths mirror the encoder: level 5 ``8w, 8w, 8w``; level 4 ``8w, 8w, 4w``; level 3
``4w, 4w, 2w``; level 2 ``2w, w``; level 1 ``w, w``; ``w = 64``.

Geometry (documented choice). ``fc_padding="valid"`` (default) is the paper's: fc6 is an unpadded
7x7 convolution (on a 224x224 input it reduces pool5's 7x7 map to 1x1) and its transposed twin
restores the size. For that, the input is zero-padded at its end to a multiple of 32 and to at
least 224 per side; ``fc_padding="same"`` pads fc6 by 3 instead and only needs a multiple of 32
(cheaper on small patches; same parameter count). The logits are cropped back to the input size.
The paper's network has no dropout; neither does this one.

Parameters at the paper's widths (3 input channels, 21 classes): 251,805,653 (the paper quotes
252 M); see ``tests/nets/test_deconvnet.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from densemed.blocks import crop_to, norm_layer, pad_to_multiple
from densemed.blocks.vgg import VGG16Features, load_vgg16_weights
from densemed.nets.heads import Head, declare
from densemed.nets.registry import register
from densemed.typing import LayerSpec, PathType

#: Decoder transposed-convolution widths per level (5 -> 1) as multiples of ``base_width``.
_DECODER = ((8, 8, 8), (8, 8, 4), (4, 4, 2), (2, 1), (1, 1))


class _DeconvNormAct(nn.Sequential):
    """Transposed convolution, norm, ReLU: ``(B, C_in, H, W) -> (B, C_out, H', W')``."""

    def __init__(self, cin: int, cout: int, kernel: int, padding: int, norm: LayerSpec) -> None:
        super().__init__(
            nn.ConvTranspose2d(cin, cout, kernel, padding=padding),
            norm_layer(norm, 2, cout),
            nn.ReLU(inplace=True),
        )


class _ConvNormAct(nn.Sequential):
    """Convolution (with bias, as VGG's fc layers), norm, ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, padding: int, norm: LayerSpec) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, kernel, padding=padding), norm_layer(norm, 2, cout), nn.ReLU(inplace=True)
        )


class SwitchUnpool2d(nn.Module):
    """Unpooling with switches: each value goes back to the flat position its max pooling recorded.

    ``u.flatten(2)[b, c, m[b, c, i, j]] = p[b, c, i, j]``, zero elsewhere; the same as
    ``nn.MaxUnpool2d`` for non-overlapping windows, and exportable to ONNX.

    Shape:
        ``p, m: (B, C, h, w)``, ``output_size`` ``(..., H, W)`` -> ``(B, C, H, W)``.

    Example:
        >>> pool = nn.MaxPool2d(2, 2, return_indices=True)
        >>> p, m = pool(torch.tensor([[[[1.0, 2.0], [4.0, 3.0]]]]))
        >>> print(SwitchUnpool2d()(p, m, (2, 2)).tolist())
        [[[[0.0, 0.0], [4.0, 0.0]]]]
    """

    def forward(self, x: torch.Tensor, indices: torch.Tensor, output_size: Sequence[int]) -> torch.Tensor:
        """Scatter ``x`` to ``indices`` of an ``output_size`` map of zeros."""
        b, c = x.shape[0], x.shape[1]
        h, w = output_size[-2], output_size[-1]
        flat = x.new_zeros((b, c, h * w)).scatter(2, indices.flatten(2), x.flatten(2))
        return flat.view(b, c, h, w)


class DeconvNet(nn.Module):
    """Convolution network (VGG16-BN) + mirrored deconvolution network with switch unpooling.

    Args:
        in_channels: image channels (3 in the paper).
        out_channels: classes (21 in the paper).
        base_width: VGG16 block-1 width (64).
        fc_width: channels of fc6 and fc7 (4096).
        fc_padding: ``"valid"`` (paper) or ``"same"``; see the module docstring.
        norm: normalisation after every (transposed) convolution (``"batch"`` in the paper).
        encoder_weights: path of a torchvision-layout VGG16-BN state dict (``norm="batch"``) or
            VGG16 one (``norm=None``) for the convolution network and fc6/fc7; None: from scratch.

    Shape:
        ``(B, in_channels, H, W) -> (B, out_channels, H, W)`` for any ``H, W``.

    Example:
        >>> net = DeconvNet(1, 2, base_width=4, fc_width=16).eval()
        >>> print(net(torch.zeros(1, 1, 97, 131)).shape)
        torch.Size([1, 2, 97, 131])
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 21,
        base_width: int = 64,
        fc_width: int = 4096,
        fc_padding: str = "valid",
        norm: LayerSpec = "batch",
        encoder_weights: PathType | None = None,
    ) -> None:
        super().__init__()
        if fc_padding not in ("valid", "same"):
            raise ValueError(f"fc_padding must be 'valid' or 'same', got {fc_padding!r}")
        self.fc_padding = fc_padding
        self.features = VGG16Features(in_channels, base_width, norm=norm, return_indices=True)
        w5 = self.features.widths[4]
        pad = 0 if fc_padding == "valid" else 3
        self.fc6 = _ConvNormAct(w5, fc_width, 7, pad, norm)
        self.fc7 = _ConvNormAct(fc_width, fc_width, 1, 0, norm)
        self.deconv_fc6 = _DeconvNormAct(fc_width, w5, 7, pad, norm)
        self.unpool = SwitchUnpool2d()
        self.decoder = nn.ModuleList()
        c = w5
        for mults in _DECODER:
            level = []
            for m in mults:
                level.append(_DeconvNormAct(c, base_width * m, 3, 1, norm))
                c = base_width * m
            self.decoder.append(nn.Sequential(*level))
        self.score = nn.Conv2d(c, out_channels, 1)
        declare(self, {"segmentation": Head(out_channels)})
        if encoder_weights is not None:
            load_vgg16_weights(self.features, encoder_weights, self.fc6[0], self.fc7[0])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, out_channels, H, W)``."""
        size = x.shape[2:]
        x, _ = pad_to_multiple(x, 32)
        if self.fc_padding == "valid":  # pool5 must be at least 7x7 for the unpadded fc6
            need = [max(0, 224 - s) for s in x.shape[2:]]
            if any(need):
                x = F.pad(x, [0, need[1], 0, need[0]])
        pools, switches, sizes = self.features.forward_with_switches(x)
        h = self.deconv_fc6(self.fc7(self.fc6(pools[-1])))  # (B, 8w, H/32, W/32)
        for level, block in enumerate(self.decoder):
            k = 4 - level  # pooling index 4 (pool5) ... 0 (pool1)
            h = self.unpool(h, switches[k], output_size=sizes[k])
            h = block(h)
        return crop_to(self.score(h), size)


@register("deconvnet", dims=(2,), small={"base_width": 4, "fc_width": 16, "fc_padding": "same"})
def deconvnet(
    in_channels: int = 3,
    out_channels: int = 21,
    base_width: int = 64,
    fc_width: int = 4096,
    fc_padding: str = "valid",
    norm: LayerSpec = "batch",
    encoder_weights: PathType | None = None,
) -> DeconvNet:
    """DeconvNet (Noh 2015): VGG16-BN, fc6/fc7 convolutions, switch unpooling + transposed convolutions."""
    return DeconvNet(in_channels, out_channels, base_width, fc_width, fc_padding, norm, encoder_weights)
