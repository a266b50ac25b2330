"""The PatchGAN discriminator of pix2pix: a real/fake score per overlapping image patch.

Isola, Zhu, Zhou, Efros, "Image-to-Image Translation with Conditional Adversarial Networks",
CVPR 2017 (arXiv 1611.07004), Sec. 3.2.2 and appendix 6.1.2: the 70x70 discriminator is
``C64-C128-C256-C512`` followed by a convolution to a one-channel output, 4x4 kernels, LeakyReLU
(0.2), no norm on the first layer. As in the authors' code the first ``n_layers=3`` convolutions
have stride 2 and the last two stride 1, all with padding 1, so along each axis

    out(S) = floor((S + 2p - k) / s) + 1   per layer  (256 -> 128 -> 64 -> 32 -> 31 -> 30),
    r = 1 + sum_l (k_l - 1) prod_{m<l} s_m                   (receptive field: 70 pixels).

The input is the condition and the image concatenated along channels (``in_channels`` = their
sum), so the network judges (label, image) *pairs*; its output is a map of logits, one per
70x70 patch (never activated; :mod:`densemed.losses.adversarial` turns them into losses).

Documented choices:

* ``norm="instance"`` by default (pix2pix's batch norm at batch size 1 is instance norm; it also
  keeps real and fake batches from sharing statistics, which batch norm does when they are
  passed separately). ``norm=None`` is the usual companion of spectral norm.
* ``spectral_norm=True`` wraps every convolution in
  ``torch.nn.utils.parametrizations.spectral_norm`` (Miyato, Kataoka, Koyama, Yoshida, ICLR 2018):
  ``W / sigma(W)`` with ``sigma`` from one power iteration per training step, which bounds the
  discriminator's Lipschitz constant and stabilises training on small data. The trainable
  parameter becomes ``parametrizations.weight.original`` (the power-iteration vectors are buffers).
* Inputs smaller than the network's minimum (24 pixels for the 70x70 layout) are zero-padded at
  their end so that the score map has at least one patch; the score map is ``dense=False``.
* :meth:`PatchGAN.forward_features` returns the logits and every hidden block's activation in one
  pass, for the feature-matching loss (Wang et al., pix2pixHD, CVPR 2018, Eq. 4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from densemed.blocks import conv, norm_layer
from densemed.nets.heads import Head, declare
from densemed.nets.registry import register
from densemed.typing import LayerSpec

KERNEL, PAD = 4, 1


def _out_size(size: int, stride: int) -> int:
    return (size + 2 * PAD - KERNEL) // stride + 1


class PatchGAN(nn.Module):
    """PatchGAN discriminator on (condition, image) pairs.

    Args:
        in_channels: condition channels + image channels.
        out_channels: score channels (1).
        dims: 2 or 3.
        n_layers: stride-2 convolutions after which one stride-1 block and the output follow
            (3 gives the 70x70 patch, 1 the 16x16; at least 1).
        base_width: channels of the first block (64), doubled per block up to ``8 * base_width``.
        norm: ``"instance"`` (default), ``"batch"``, ``"group"`` or ``None``.
        spectral_norm: spectral normalisation of every convolution.

    Shape:
        ``(B, in_channels, *S) -> (B, out_channels, *out(S))`` (see :meth:`output_size`).

    Example:
        >>> net = PatchGAN(4, base_width=8).eval()
        >>> print(net(torch.zeros(1, 4, 256, 256)).shape)
        torch.Size([1, 1, 30, 30])
    """

    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int = 1,
        dims: int = 2,
        n_layers: int = 3,
        base_width: int = 64,
        norm: LayerSpec = "instance",
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        self.dims, self.n_layers = dims, n_layers
        has_norm = norm is not None and norm != "none"
        Conv = conv(dims)

        def wrap(layer: nn.Module) -> nn.Module:
            return _spectral_norm(layer) if spectral_norm else layer

        # (channels, stride, normed) per hidden block: C64 (s2, no norm), n_layers - 1 more s2, one s1
        plan = [(base_width, 2, False)]
        plan += [(base_width * min(2**i, 8), 2, has_norm) for i in range(1, n_layers)]
        plan += [(base_width * min(2**n_layers, 8), 1, has_norm)]
        self.strides = [s for _, s, _ in plan] + [1]
        self.blocks = nn.ModuleList()
        c = in_channels
        for w, s, normed in plan:
            self.blocks.append(nn.Sequential(
                wrap(Conv(c, w, KERNEL, s, PAD, bias=not normed)),
                norm_layer(norm, dims, w) if normed else nn.Identity(),
                nn.LeakyReLU(0.2),
            ))
            c = w
        self.head = wrap(Conv(c, out_channels, KERNEL, 1, PAD))
        declare(self, {"score": Head(out_channels, "logits", dense=False)})
        self.min_size = next(s for s in range(1, 10_000) if self._out(s) >= 1)

    # -- geometry -----------------------------------------------------------------------------
    def _out(self, size: int) -> int:
        for s in self.strides:
            size = _out_size(size, s)
            if size < 1:
                return 0
        return size

    def output_size(self, size: tuple[int, ...]) -> tuple[int, ...]:
        """Score-map size for an input of spatial ``size`` (after padding to :attr:`min_size`)."""
        return tuple(self._out(max(s, self.min_size)) for s in size)

    @property
    def receptive_field(self) -> int:
        """Pixels along an axis that one score sees: ``1 + sum_l (k - 1) prod_{m<l} s_m``."""
        r, jump = 1, 1
        for s in self.strides:
            r += (KERNEL - 1) * jump
            jump *= s
        return r

    # -- forward ------------------------------------------------------------------------------
    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Score logits and the activation of every hidden block, in one pass.

        Shape:
            ``(B, in_channels, *S) -> ((B, out_channels, *out(S)), [(B, C_l, *S_l), ...])``.

        Example:
            >>> logits, feats = PatchGAN(4, base_width=8).forward_features(torch.zeros(1, 4, 64, 64))
            >>> print(logits.shape, [tuple(f.shape[1:]) for f in feats][-1])
            torch.Size([1, 1, 6, 6]) (64, 7, 7)
        """
        pads: list[int] = []
        for s in reversed(x.shape[2:]):
            pads += [0, max(0, self.min_size - s)]
        if any(pads):
            x = F.pad(x, pads)
        feats = []
        for block in self.blocks:
            x = block(x)
            feats.append(x)
        return self.head(x), feats

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Activations of the hidden blocks (for feature matching), shallow to deep."""
        return self.forward_features(x)[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch logits ``(B, out_channels, *out(S))`` of the pair ``x`` = [condition, image]."""
        return self.forward_features(x)[0]


@register("patchgan", dims=(2, 3), small={"base_width": 4})
def patchgan(
    in_channels: int = 4,
    out_channels: int = 1,
    dims: int = 2,
    n_layers: int = 3,
    base_width: int = 64,
    norm: LayerSpec = "instance",
    spectral_norm: bool = False,
) -> PatchGAN:
    """PatchGAN discriminator (Isola 2017), 70x70 patches on (condition, image) pairs."""
    return PatchGAN(in_channels, out_channels, dims, n_layers, base_width, norm, spectral_norm)
