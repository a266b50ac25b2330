"""AttentionBoost multi-stage network.

Gunesli, Sokmensuer, Gunduz-Demir, "AttentionBoost: Learning what to attend by boosting fully
convolutional networks", IEEE TMI 39(12), 2020.

``N`` stages (4 by default), each an encoder-decoder that outputs a prediction; every stage after
the first sees the image concatenated with the previous stage's class probabilities,

    ``z_1 = f_1(x)``,   ``z_t = f_t([x, sigma(z_{t-1})])``  for ``t = 2 .. N``,

with ``sigma`` the softmax over classes (sigmoid for one output channel). The network returns
``[z_1, ..., z_N]`` when auxiliary outputs are wanted (training, validation loss) and ``z_N``
otherwise. It is trained with the AttentionBoost loss (``loss: {name: attentionboost}`` in
:mod:`densemed.losses`), which weighs stage ``t``'s per-pixel loss by the previous stage's weight
times a factor ``beta_t`` that lowers the weight of pixels stage ``t - 1`` got right and raises it
for those it got wrong, so each stage attends to its predecessor's mistakes.

Documented choices (the toolkit's, where the paper was not available to check offline):

* Each stage is a same-padded :class:`densemed.nets.unet.UNet` of ``depth`` levels and
  ``base_width`` channels (``depth=4, base_width=32`` by default, ~7.8 M parameters per stage
  at 3 input channels).
* Stages are chained through probabilities, not features: a stage's input is then an image plus
  a soft "attention" map of the previous stage's decision, which keeps stages interchangeable
  and cheap (``out_channels`` extra input channels).
* The probabilities are not detached: the whole network trains end to end with one optimiser.
"""

from __future__ import annotations

import torch
from torch import nn

from densemed.nets._aux import wants_aux
from densemed.nets.heads import Head, activate, declare
from densemed.nets.registry import register
from densemed.nets.unet import UNet
from densemed.typing import LayerSpec, NetOutput


class AttentionBoostNet(nn.Module):
    """Multi-stage encoder-decoder; stage ``t`` sees the image and stage ``t-1``'s probabilities.

    Args:
        in_channels: image channels.
        out_channels: classes (logits channels of every stage).
        dims: 2 or 3.
        stages: number of stages ``N`` (4).
        depth: poolings per stage encoder-decoder.
        base_width: first-level channels of each stage.
        norm: normalisation inside each stage.

    Shape:
        ``(B, in_channels, *S) -> (B, out_channels, *S)``; with auxiliary outputs a list of
        ``stages`` such tensors, the last being the final prediction.

    Example:
        >>> net = AttentionBoostNet(1, 2, stages=3, depth=2, base_width=4).eval()
        >>> print(net(torch.zeros(1, 1, 97, 131)).shape)
        torch.Size([1, 2, 97, 131])
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 2,
        dims: int = 2,
        stages: int = 4,
        depth: int = 4,
        base_width: int = 32,
        norm: LayerSpec = "batch",
    ) -> None:
        super().__init__()
        if stages < 1:
            raise ValueError(f"stages must be >= 1, got {stages}")
        self.out_channels = out_channels
        declare(self, {"segmentation": Head(out_channels)})
        self.final_last = True  # the stage list ends with the final output
        self.stages = nn.ModuleList(
            UNet(in_channels + (out_channels if t else 0), out_channels, dims, depth, base_width, norm)
            for t in range(stages)
        )

    def forward(self, x: torch.Tensor) -> NetOutput:
        """Last stage's logits, or the list of every stage's logits when auxiliary outputs are wanted."""
        outs: list[torch.Tensor] = []
        z = self.stages[0](x)
        outs.append(z)
        for stage in self.stages[1:]:
            z = stage(torch.cat([x, activate(z)], dim=1))
            outs.append(z)
        return outs if wants_aux(self) else outs[-1]


@register("attentionboost", dims=(2, 3), small={"base_width": 4, "depth": 2, "stages": 3})
def attentionboost(
    in_channels: int = 3,
    out_channels: int = 2,
    dims: int = 2,
    stages: int = 4,
    depth: int = 4,
    base_width: int = 32,
    norm: LayerSpec = "batch",
) -> AttentionBoostNet:
    """AttentionBoost (Gunesli 2020): N chained encoder-decoders, one prediction per stage."""
    return AttentionBoostNet(in_channels, out_channels, dims, stages, depth, base_width, norm)
