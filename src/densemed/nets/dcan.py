"""DCAN, the deep contour-aware network.

Chen, Qi, Yu, Dou, Qin, Heng, Medical Image Analysis 36, 2017; arXiv 1604.02677; CVPR 2016 for glands.

A shared down-sampling path (VGG-like convolution stages separated by max pooling) and two
up-sampling branches, one for the object probability ``p_o`` and one for the contour probability
``p_c``. Each branch upsamples (learned deconvolution) the features of the last ``fuse_levels``
stages of the shared path to full resolution, giving one classifier output ``u^k`` per level;
the branch output is their fusion ``u = sum_k u^k``. The ``u^k`` are the auxiliary, deeply
supervised classifiers. The training objective (Eq. 3 of the MedIA paper, up to weight decay) is

    L = L_o(u_o) + L_c(u_c) + sum_k w_a (L_o(u_o^k) + L_c(u_c^k))

with cross-entropy ``L_o``, ``L_c`` and auxiliary weights ``w_a`` that start at 1 and decay during
training to a marginal value (:class:`densemed.losses.multitask.MultiTaskLoss`, option
``aux_weight``). At inference the fused maps are combined (``p_o > t_o`` and ``p_c < t_c``) and
split into instances by :func:`densemed.infer.instances.to_instances` with ``method="dcan"``.

Documented choices where the paper gives no number here: stages are ``DoubleConv`` blocks with
batch norm; widths ``base_width * (1, 2, 4, 8, 8, 16)`` (VGG-16's 64..512 then a 1024-wide sixth
stage at 1/32 resolution); each auxiliary classifier is a 3x3 ``ConvNormAct`` to ``2 *
base_width`` channels followed by a deconvolution of kernel ``2s`` and stride ``s`` straight to
the class logits (``s`` the stage's downsampling).

Outputs: training / :func:`densemed.nets.all_outputs`: ``{"object": [u_o, u_o^1, ...],
"contour": [u_c, u_c^1, ...]}``, every tensor full size ``(B, C, *S)``, fused first;
eval mode: the fused object logits ``(B, out_channels, *S)``.
"""

from __future__ import annotations

import torch
from torch import nn

from densemed.blocks import ConvNormAct, DoubleConv, conv_transpose, crop_to, max_pool, pad_to_multiple
from densemed.nets._aux import wants_aux
from densemed.nets.heads import Head, declare
from densemed.nets.registry import register
from densemed.typing import LayerSpec, NetOutput

_WIDTH_FACTORS = (1, 2, 4, 8, 8, 16)


class _UpClassifier(nn.Module):
    """One auxiliary classifier: features at 1/s -> full-size logits ``u^k``."""

    def __init__(
        self, in_channels: int, hidden: int, out_channels: int, scale: int, dims: int, norm: LayerSpec
    ) -> None:
        super().__init__()
        self.reduce = ConvNormAct(in_channels, hidden, dims, norm=norm)
        # kernel 2s, stride s, padding s/2: output size exactly s * input size
        self.up = conv_transpose(dims)(
            hidden, out_channels, kernel_size=2 * scale, stride=scale, padding=scale // 2
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C_in, *S/s) -> (B, C_out, *S)``."""
        return self.up(self.reduce(x))


class DCAN(nn.Module):
    """Deep contour-aware network: shared down path, object and contour up-sampling branches.

    Args:
        in_channels: image channels.
        out_channels: object classes (2: object vs background).
        contour_channels: contour classes (2: contour vs not).
        dims: 2 or 3.
        depth: number of max poolings (5: six stages, the last at 1/32).
        base_width: channels of the first stage.
        fuse_levels: how many of the deepest stages feed the branches (3 in the paper).
        norm: normalisation name.
        act: activation name.

    Shape:
        ``(B, in_channels, *S)`` -> ``{"object": [(B, out_channels, *S)] * (fuse_levels + 1),
        "contour": [(B, contour_channels, *S)] * (fuse_levels + 1)}`` in training mode,
        ``(B, out_channels, *S)`` in eval mode.

    Example:
        >>> net = DCAN(3, 2, depth=3, base_width=4, fuse_levels=2).eval()
        >>> print(net(torch.zeros(1, 3, 45, 37)).shape)
        torch.Size([1, 2, 45, 37])
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 2,
        contour_channels: int = 2,
        dims: int = 2,
        depth: int = 5,
        base_width: int = 64,
        fuse_levels: int = 3,
        norm: LayerSpec = "batch",
        act: LayerSpec = "relu",
    ) -> None:
        super().__init__()
        if not 1 <= fuse_levels <= depth:
            raise ValueError(f"fuse_levels must be in 1..depth={depth}, got {fuse_levels}")
        extra = max(0, depth + 1 - len(_WIDTH_FACTORS))  # deeper than 6 stages: keep the last width
        factors = list(_WIDTH_FACTORS[: depth + 1]) + [_WIDTH_FACTORS[-1]] * extra
        widths = [base_width * f for f in factors]
        self.depth = depth
        declare(self, {"object": Head(out_channels), "contour": Head(contour_channels)}, main="object")
        self.default_instances = "dcan"  # the paper's object/contour fusion
        self.stages = nn.ModuleList()
        c = in_channels
        for w in widths:
            self.stages.append(DoubleConv(c, w, dims, norm, act))
            c = w
        self.pool = max_pool(dims)(2)
        self.fused = list(range(depth + 1 - fuse_levels, depth + 1))  # stage indices feeding the branches
        hidden = 2 * base_width
        self.object_branch = nn.ModuleList(
            _UpClassifier(widths[i], hidden, out_channels, 2**i, dims, norm) for i in self.fused
        )
        self.contour_branch = nn.ModuleList(
            _UpClassifier(widths[i], hidden, contour_channels, 2**i, dims, norm) for i in self.fused
        )

    def forward(self, x: torch.Tensor) -> NetOutput:
        """Fused object logits in eval mode; the dict of both branches' outputs otherwise."""
        x, size = pad_to_multiple(x, 2**self.depth)
        feats = []
        for i, stage in enumerate(self.stages):
            if i:
                x = self.pool(x)
            x = stage(x)
            feats.append(x)
        u_obj = [crop_to(head(feats[i]), size) for head, i in zip(self.object_branch, self.fused)]
        fused_obj = torch.stack(u_obj).sum(0)
        if not wants_aux(self):
            return fused_obj
        u_con = [crop_to(head(feats[i]), size) for head, i in zip(self.contour_branch, self.fused)]
        return {"object": [fused_obj, *u_obj], "contour": [torch.stack(u_con).sum(0), *u_con]}


@register("dcan", dims=(2, 3), small={"base_width": 4, "depth": 3, "fuse_levels": 2})
def dcan(
    in_channels: int = 3,
    out_channels: int = 2,
    contour_channels: int = 2,
    dims: int = 2,
    depth: int = 5,
    base_width: int = 64,
    fuse_levels: int = 3,
    norm: LayerSpec = "batch",
    act: LayerSpec = "relu",
) -> DCAN:
    """DCAN (Chen 2017): object + contour branches fusing multi-level deconvolutions."""
    return DCAN(in_channels, out_channels, contour_channels, dims, depth, base_width, fuse_levels, norm, act)
