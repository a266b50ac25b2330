"""FourierNet (Cansiz et al., IEEE JBHI 27(2), 2023; doi 10.1109/JBHI.2022.3225425), 2D.

A shape-preserving cascade of two encoder-decoders. The first regresses the Fourier descriptors of
the object contours (:mod:`densemed.targets.fourier`: per object the size ``log1p(a_0 / s)`` and
the scale-invariant harmonic amplitudes ``A_n / a_0``, ``n = 1..N``); the second takes the image
together with these descriptor maps and produces the segmentation logits. Training minimises

    L = CE(segmentation, label) + lambda * MSE(descriptors, fourier target)

through :mod:`densemed.losses.multitask` (tasks ``segmentation`` and ``descriptors``; ``lambda``
is the ``descriptors`` task weight in the recipe), so the network is penalised for wrong shapes,
not only for wrong pixels: stage 2 sees stage 1's estimate of each object's shape, and the
gradient of both terms reaches stage 1.

Several objects per image: the descriptors are predicted as dense maps ``(B, N + 1, H, W)``, one
vector per pixel, supervised with each object's vector on its pixels and 0 on the background
(the ``fourier`` target). This is defined for any number of objects, including none, keeps the
output contract (input-sized maps, any size) and needs no object slots or matching.

Layout (documented choices; the paper's exact widths were not available to us):

* each stage is a U-Net (:class:`densemed.nets.unet.UNet`, same padding, batch norm): ``depth``
  poolings, ``base_width`` channels doubled per level (64 ... 1024 at the defaults), skip
  connections, 2x2 up-convolutions;
* stage 1's decoder ends in a linear 1x1 regression head with ``n_harmonics + 1`` channels (no
  activation: the size channel is unbounded above and amplitudes are >= 0 only on objects);
* stage 2's input is ``concat(image, descriptors)``, ``in_channels + n_harmonics + 1``
  channels; its 1x1 head gives ``out_channels`` logits. The descriptor maps are not detached, so
  the cascade trains end to end.

At the defaults (1 input channel, 2 classes, N = 8) the network has 62,078,731 parameters (two
U-Nets of ~31 M).

Outputs: training mode / :func:`densemed.nets.all_outputs`: ``{"segmentation": (B, out_channels,
*S), "descriptors": (B, n_harmonics + 1, *S)}``; eval mode: the segmentation logits. Declared heads:
``segmentation`` (logits, main) and ``descriptors`` (regression).
"""

from __future__ import annotations

import torch
from torch import nn

from densemed.nets._aux import wants_aux
from densemed.nets.heads import Head, declare
from densemed.nets.registry import register
from densemed.nets.unet import UNet
from densemed.typing import LayerSpec, NetOutput


class FourierNet(nn.Module):
    """Cascade: U-Net regressing Fourier descriptor maps, then U-Net segmenting image + descriptors.

    Args:
        in_channels: image channels.
        out_channels: segmentation classes (logits channels).
        n_harmonics: harmonics ``N`` of the descriptors; stage 1 outputs ``N + 1`` maps.
        depth: poolings per stage.
        base_width: channels of each stage's first level, doubled per level.
        norm: ``"batch"``, ``"instance"``, ``"group"`` or ``None``.
        act: activation name or ``(name, kwargs)``.

    Shape:
        ``(B, in_channels, H, W)`` -> ``(B, out_channels, H, W)`` (eval) or a dict (training).

    Example:
        >>> net = FourierNet(1, 2, n_harmonics=4, depth=2, base_width=4).eval()
        >>> print(net(torch.zeros(1, 1, 21, 40)).shape)
        torch.Size([1, 2, 21, 40])
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        n_harmonics: int = 8,
        depth: int = 4,
        base_width: int = 64,
        norm: LayerSpec = "batch",
        act: LayerSpec = "relu",
    ) -> None:
        super().__init__()
        if n_harmonics < 1:
            raise ValueError(f"n_harmonics must be >= 1, got {n_harmonics}")
        n_desc = n_harmonics + 1
        self.n_harmonics = n_harmonics
        self.descriptor_net = UNet(in_channels, n_desc, 2, depth, base_width, norm, act)
        self.segmentation_net = UNet(in_channels + n_desc, out_channels, 2, depth, base_width, norm, act)
        declare(
            self,
            {"segmentation": Head(out_channels), "descriptors": Head(n_desc, "regression")},
            main="segmentation",
        )

    def forward(self, x: torch.Tensor) -> NetOutput:
        """Segmentation logits (eval) or ``{"segmentation", "descriptors"}`` (training)."""
        descriptors = self.descriptor_net(x)  # (B, N + 1, H, W)
        segmentation = self.segmentation_net(torch.cat([x, descriptors], dim=1))
        if wants_aux(self):
            return {"segmentation": segmentation, "descriptors": descriptors}
        return segmentation


@register("fouriernet", dims=(2,), small={"base_width": 4, "depth": 2})
def fouriernet(
    in_channels: int = 1,
    out_channels: int = 2,
    n_harmonics: int = 8,
    depth: int = 4,
    base_width: int = 64,
    norm: LayerSpec = "batch",
    act: LayerSpec = "relu",
) -> FourierNet:
    """FourierNet (Cansiz 2023): descriptor-regressing U-Net cascaded into a segmenting U-Net."""
    return FourierNet(in_channels, out_channels, n_harmonics, depth, base_width, norm, act)
