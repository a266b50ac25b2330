"""The pix2pix U-Net generator, label map -> image.

Isola, Zhu, Zhou, Efros, "Image-to-Image Translation with Conditional Adversarial Networks",
CVPR 2017; arXiv 1611.07004.

Architecture (the paper's appendix 6.1.1, "Ck" = 4x4 convolution with stride 2, norm, activation;
"CDk" the same with 50 % dropout): an encoder ``C64-C128-C256-C512-C512-C512-C512-C512`` with
LeakyReLU(0.2) and a decoder ``CD512-CD1024-CD1024-C1024-C1024-C512-C256-C128`` with ReLU, where
the decoder numbers count the channels after concatenation with the mirrored encoder feature
(the U-Net skips). Every down convolution halves the size (``k=4, s=2, p=1``), every up
convolution doubles it (transposed, ``k=4, s=2, p=1``); the last up convolution maps to the
image channels. With ``depth`` levels, widths are ``min(base_width * 2**i, max_width)``; the
paper's network is ``depth=8, base_width=64, max_width=512`` (a 256x256 input reaches 1x1;
54,414,531 parameters for 3 -> 3 channels, of which 576 are the biases of the first and the
innermost down convolutions that the authors' code leaves out).

Equations per level ``i`` (encoder features ``e_i``, decoder features ``d_i``)::

    e_0 = conv_0(x),  e_i = N(conv_i(lrelu(e_{i-1})))              (no N at i = 0 and at the bottom)
    d_{D-1} = e_{D-1},  d_{i-1} = [e_{i-1}, Drop(N(convT_i(relu(d_i))))]   (skip first, then the up path)
    y = out(convT_0(relu(d_0)))

Documented choices:

* **Noise by dropout.** pix2pix found Gaussian noise ``z`` ignored by the generator and gives its
  noise only as dropout, "applied at both training and test time". Dropout (element-wise, like
  ``nn.Dropout``) sits after the first ``dropout_levels=3`` up convolutions (the paper's
  ``CD512-CD1024-CD1024``; the authors' code starts one level lower, we follow the paper).
  Eval mode is deterministic (no dropout) so that the network contract holds;
  :meth:`Pix2PixGenerator.generate` (or ``net.stochastic = True``) keeps dropout active at
  generation, with masks drawn from a ``torch.Generator`` so generation is reproducible.
* **Norm.** ``norm="instance"`` by default: pix2pix trained with batch norm at batch size 1 and
  used the test batch's statistics at test time, which *is* instance normalisation; instance norm
  keeps that behaviour for any batch size (Ulyanov et al. 2016; also CycleGAN's and pix2pixHD's
  choice). The first and the innermost down convolutions have no norm (the authors' code; at a
  1x1 bottleneck instance norm is undefined). A convolution has a bias only when no norm follows.
* **Output activation.** densemed images are z-score normalised (mean 0, std 1 per image, tails
  beyond +-3 std in microscopy), not in [-1, 1] as pix2pix's tanh assumes. The default is no
  activation (``output_scale=None``): a bound would either clip real intensities or need a
  per-dataset constant, and the L1 term to the real image already anchors the scale.
  ``output_scale=s`` gives the scaled tanh ``s * tanh(y / s)`` (identity near 0, bounded by
  ``+-s``) for users who want bounded outputs.
* **Any size.** The input is zero-padded at its end to a multiple of ``2**depth`` (zero = "no
  class" for a one-hot condition) and the output cropped back.

The ``image`` input slot of ``forward`` carries the *condition* channels
(:func:`densemed.data.label_synth.condition_channels`); the declared head is ``image``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from densemed.blocks import conv, conv_transpose, crop_to, norm_layer, pad_to_multiple
from densemed.nets.heads import Head, declare
from densemed.nets.registry import register
from densemed.typing import LayerSpec


def _has_norm(norm: LayerSpec) -> bool:
    return norm is not None and norm != "none"


class Pix2PixGenerator(nn.Module):
    """U-Net generator of pix2pix: condition channels -> image.

    Args:
        in_channels: condition channels (one-hot classes, plus a boundary channel for instances).
        out_channels: image channels.
        dims: 2 or 3.
        depth: number of stride-2 down convolutions (8 in the paper).
        base_width: channels of the first level (64), doubled per level up to ``max_width``.
        max_width: widest level (512).
        norm: ``"instance"`` (default), ``"batch"``, ``"group"`` or ``None``.
        dropout: dropout probability of the noisy decoder levels (0.5).
        dropout_levels: how many up convolutions, from the bottom, are followed by dropout (3).
        output_scale: ``None`` for a linear output, ``s`` for ``s * tanh(y / s)``.

    Shape:
        ``(B, in_channels, *S) -> (B, out_channels, *S)`` for any ``S``.

    Example:
        >>> net = Pix2PixGenerator(3, 1, depth=4, base_width=8).eval()
        >>> print(net(torch.zeros(1, 3, 97, 131)).shape)
        torch.Size([1, 1, 97, 131])
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 1,
        dims: int = 2,
        depth: int = 8,
        base_width: int = 64,
        max_width: int = 512,
        norm: LayerSpec = "instance",
        dropout: float = 0.5,
        dropout_levels: int = 3,
        output_scale: float | None = None,
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if output_scale is not None and output_scale <= 0:
            raise ValueError(f"output_scale must be > 0 or None, got {output_scale}")
        self.dims, self.depth = dims, depth
        self.dropout, self.dropout_levels = float(dropout), int(dropout_levels)
        self.output_scale = output_scale
        #: keep dropout active in eval mode (generation); see :meth:`generate`.
        self.stochastic = False
        self._noise: torch.Generator | None = None
        widths = [min(base_width * 2**i, max_width) for i in range(depth)]
        Conv, ConvT = conv(dims), conv_transpose(dims)
        has_norm = _has_norm(norm)
        self.down = nn.ModuleList()
        self.down_norm = nn.ModuleList()
        c = in_channels
        for i, w in enumerate(widths):
            normed = has_norm and 0 < i < depth - 1
            self.down.append(Conv(c, w, 4, 2, 1, bias=not normed))
            self.down_norm.append(norm_layer(norm, dims, w) if normed else nn.Identity())
            c = w
        # up[k] maps level depth-1-k to depth-2-k; its input is the bottom feature (k = 0) or a concatenation
        self.up = nn.ModuleList()
        self.up_norm = nn.ModuleList()
        for k, i in enumerate(range(depth - 1, 0, -1)):
            c_in = widths[i] if k == 0 else 2 * widths[i]
            self.up.append(ConvT(c_in, widths[i - 1], 4, 2, 1, bias=not has_norm))
            self.up_norm.append(norm_layer(norm, dims, widths[i - 1]))
        self.out = ConvT(2 * widths[0], out_channels, 4, 2, 1)
        declare(self, {"image": Head(out_channels, "image")})

    # -- noise -----------------------------------------------------------------------------
    def _drop(self, x: torch.Tensor) -> torch.Tensor:
        if self.dropout == 0.0 or not (self.training or self.stochastic):
            return x
        if self._noise is None:
            return F.dropout(x, self.dropout, training=True)
        # masks drawn on the generator's device, then moved: one seed, one output on every device
        keep = torch.rand(x.shape, generator=self._noise, device=self._noise.device) >= self.dropout
        return x * keep.to(device=x.device, dtype=x.dtype) / (1.0 - self.dropout)

    @contextmanager
    def sampling(self, generator: torch.Generator | None = None) -> Iterator[Pix2PixGenerator]:
        """Within the block, dropout stays active (also in eval mode), masks drawn from ``generator``."""
        old = self.stochastic, self._noise
        self.stochastic, self._noise = True, generator
        try:
            yield self
        finally:
            self.stochastic, self._noise = old

    def generate(self, condition: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """One sample per condition with dropout as the noise (pix2pix's test-time dropout).

        Norm layers keep the module's mode (call ``.eval()`` first for batch norm running statistics;
        instance norm does not depend on it). The same ``generator`` state gives the same images.

        Shape:
            ``(B, in_channels, *S) -> (B, out_channels, *S)``.

        Example:
            >>> net = Pix2PixGenerator(2, 1, depth=3, base_width=4).eval()
            >>> g = torch.Generator().manual_seed(0)
            >>> print(net.generate(torch.zeros(2, 2, 20, 24), g).shape)
            torch.Size([2, 1, 20, 24])
        """
        with self.sampling(generator):
            return self(condition)

    # -- forward ---------------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image ``(B, out_channels, *S)`` for the condition ``x`` ``(B, in_channels, *S)``."""
        x, size = pad_to_multiple(x, 2**self.depth)
        skips = []
        h = x
        for i, (down, norm) in enumerate(zip(self.down, self.down_norm)):
            h = norm(down(h if i == 0 else F.leaky_relu(h, 0.2)))
            skips.append(h)
        skips.pop()  # the bottom feature is h itself
        for k, (up, norm) in enumerate(zip(self.up, self.up_norm)):
            u = norm(up(F.relu(h)))
            if k < self.dropout_levels:
                u = self._drop(u)
            h = torch.cat([skips.pop(), u], dim=1)
        y = self.out(F.relu(h))
        if self.output_scale is not None:
            y = self.output_scale * torch.tanh(y / self.output_scale)
        return crop_to(y, size)


@register("pix2pix_generator", dims=(2, 3), small={"depth": 4, "base_width": 4, "max_width": 16})
def pix2pix_generator(
    in_channels: int = 3,
    out_channels: int = 1,
    dims: int = 2,
    depth: int = 8,
    base_width: int = 64,
    max_width: int = 512,
    norm: LayerSpec = "instance",
    dropout: float = 0.5,
    dropout_levels: int = 3,
    output_scale: float | None = None,
) -> Pix2PixGenerator:
    """pix2pix U-Net generator (Isola 2017): label map (one-hot + boundary) -> image."""
    return Pix2PixGenerator(in_channels, out_channels, dims, depth, base_width, max_width, norm, dropout,
                            dropout_levels, output_scale)
