"""DeepResolve (Chaudhari et al., Magnetic Resonance in Medicine 80:2139-2154, 2018).

"Super-resolution musculoskeletal MRI using deep learning".

A thick-slice (low-resolution) volume is first interpolated to the thin-slice grid (tricubic,
:func:`densemed.data.sr.degrade` simulates this from a high-resolution volume); a 3D CNN then
predicts the residual between the interpolated and the high-resolution volume:

    y_hat = x + R(x),   R = conv3 ∘ (ReLU ∘ conv3)^(L-1),

with ``L = 20`` convolutional layers of 3x3x3 kernels and 64 filters, ReLU after every layer but
the last, no pooling and no normalisation ("same" zero padding keeps the size, so any input size
works). Training minimises the mean squared error ``||y_hat - y||^2`` against the
high-resolution volume (recipe ``loss: {name: mse}``, task ``sr``).

**The output is an image, not logits**: ``y_hat`` has the intensities of the input (after the
recipe's normalisation); never apply softmax/sigmoid to it. It has no auxiliary outputs.

Documented choices where the paper is silent:

* ``zero_init_last=True``: the last layer's weights and bias start at zero, so the untrained
  network is the identity (returns the tricubic interpolation it was given) and training can
  only move away from that baseline by following the loss. Set ``False`` for PyTorch's default
  initialisation.
* Channels: the residual needs ``out_channels == in_channels`` (1 for MR magnitude). For other
  combinations, used only by generic tests, the skip is the input broadcast (``in_channels == 1``)
  or a learned 1x1x1 projection.
"""

from __future__ import annotations

import torch
from torch import nn

from densemed.blocks import conv
from densemed.nets.heads import Head, declare
from densemed.nets.registry import register


class DeepResolve(nn.Module):
    """Residual 3D CNN for super-resolution: ``x + R(x)``.

    Args:
        in_channels: image channels (1).
        out_channels: output image channels (1).
        depth: number of 3x3x3 convolutional layers (20 in the paper), >= 2.
        width: filters per hidden layer (64 in the paper).
        zero_init_last: start the last layer at zero so the initial output equals the input.

    Shape:
        ``(B, in_channels, D, H, W) -> (B, out_channels, D, H, W)``; an image, not logits.

    Example:
        >>> net = DeepResolve(depth=3, width=8)
        >>> print(net(torch.zeros(1, 1, 19, 23, 17)).shape)
        torch.Size([1, 1, 19, 23, 17])
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 1,
        depth: int = 20,
        width: int = 64,
        zero_init_last: bool = True,
    ) -> None:
        super().__init__()
        if depth < 2:
            raise ValueError(f"deepresolve needs depth >= 2, got {depth}")
        layers: list[nn.Module] = [conv(3)(in_channels, width, 3, 1, 1), nn.ReLU(inplace=True)]
        for _ in range(depth - 2):
            layers += [conv(3)(width, width, 3, 1, 1), nn.ReLU(inplace=True)]
        last = conv(3)(width, out_channels, 3, 1, 1)
        declare(self, {"image": Head(out_channels, "image")})
        if zero_init_last:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)
        layers.append(last)
        self.residual = nn.Sequential(*layers)
        self.in_channels, self.out_channels = in_channels, out_channels
        same = in_channels == out_channels or in_channels == 1
        self.skip = None if same else conv(3)(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The super-resolved image ``x + R(x)`` (not logits)."""
        r = self.residual(x)
        skip = x if self.skip is None else self.skip(x)
        return skip + r  # broadcasts a 1-channel input over out_channels


@register("deepresolve", dims=(3,), small={"depth": 3, "width": 8, "zero_init_last": False})
def deepresolve(
    in_channels: int = 1,
    out_channels: int = 1,
    depth: int = 20,
    width: int = 64,
    zero_init_last: bool = True,
    dims: int = 3,
) -> DeepResolve:
    """DeepResolve (Chaudhari 2018): 20-layer residual 3D CNN super-resolution; outputs an image."""
    if dims != 3:
        raise ValueError(f"deepresolve is 3D only, got dims={dims}")
    return DeepResolve(in_channels, out_channels, depth, width, zero_init_last)
