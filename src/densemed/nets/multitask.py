"""A general multi-task encoder-decoder: one shared encoder, one U-Net decoder per task.

Multi-task learning (Caruana, Machine Learning 28, 1997) trains related tasks concurrently from a
shared representation; in segmentation the tasks are maps of the same image (object mask,
object contour, distance maps) learned by separate decoders from one encoder, as in DCAN
(Chen et al. 2017) and DeepDistance (Koyuncu et al. 2020). The joint objective is a weighted
linear combination of per-task losses, ``L = sum_t w_t L_t``
(:class:`densemed.losses.multitask.MultiTaskLoss`).

Architecture: the U-Net encoder (``depth`` poolings, ``DoubleConv`` levels whose width doubles)
is shared; every task ``t`` gets its own expanding path (up-convolution, concatenation with the
shared encoder feature map of the same level, ``DoubleConv``) and a 1x1 head with
``tasks[t]`` output channels. Heads are never activated: classification heads give logits,
regression heads (distance maps) give the regressed value.

Outputs: ``{task: tensor (B, tasks[task], *S)}`` when :func:`densemed.nets.wants_aux` is true
(training, or inside :func:`densemed.nets.all_outputs`), else the main task's tensor
(``main_head``, by default the first task), whose channel count is ``out_channels``.

Recipe::

    model: {name: multitask, base_width: 16, tasks: {mask: null, contour: 2}}

(``null`` = ``out_channels``, filled from the data's ``num_classes``.)

**Reconstruction as an auxiliary task** (as in SegNetMRI and ClassNSeg; ``docs/reconstruction.md``):
a head of kind ``image`` without ``channels`` regresses the input image (``in_channels``
channels) from the shared encoder through its own decoder; the multi-task loss gives it ``mse``
against the batch's ``image`` (the network's input, after augmentation), so the unsupervised
task regularises the shared encoder::

    model: {name: multitask, tasks: {mask: null, reconstruction: {kind: image}}}
    loss:  {name: multitask, tasks: {mask: {loss: {name: dice_ce}, target: label},
                                     reconstruction: {loss: {name: mse}, weight: 0.1, target: image}}}

The main head (here ``mask``) is what validation, ``predict`` and export use; the
reconstruction's term is logged per epoch (``train_terms``, ``val_terms`` in ``metrics.jsonl``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from densemed.blocks import DoubleConv, conv, conv_transpose, crop_to, max_pool, pad_to_multiple
from densemed.nets._aux import wants_aux
from densemed.nets.heads import Head, declare
from densemed.nets.registry import register
from densemed.typing import LayerSpec, NetOutput


class SharedEncoder(nn.Module):
    """U-Net contracting path returning every level's features, finest first.

    Shape:
        ``(B, C_in, *S) -> [(B, w, *S), (B, 2w, *S/2), ..., (B, 2^depth w, *S/2^depth)]``
        (``S`` divisible by ``2**depth``).
    """

    def __init__(
        self, in_channels: int, widths: list[int], dims: int, norm: LayerSpec, act: LayerSpec
    ) -> None:
        super().__init__()
        self.levels = nn.ModuleList()
        c = in_channels
        for w in widths:
            self.levels.append(DoubleConv(c, w, dims, norm, act))
            c = w
        self.pool = max_pool(dims)(2)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Features of every level, finest first."""
        feats = []
        for i, level in enumerate(self.levels):
            if i:
                x = self.pool(x)
            x = level(x)
            feats.append(x)
        return feats


class TaskDecoder(nn.Module):
    """U-Net expanding path for one task, fed by the shared encoder's features, with a 1x1 head.

    Shape:
        encoder features (finest first) -> ``(B, out_channels, *S_padded)``.
    """

    def __init__(
        self, widths: list[int], out_channels: int, dims: int, norm: LayerSpec, act: LayerSpec
    ) -> None:
        super().__init__()
        self.ups = nn.ModuleList()
        self.blocks = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.ups.append(conv_transpose(dims)(w * 2, w, kernel_size=2, stride=2))
            self.blocks.append(DoubleConv(w * 2, w, dims, norm, act))
        self.head = conv(dims)(widths[0], out_channels, kernel_size=1)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        """Logits (or regressed maps) at the finest level's size."""
        x = feats[-1]
        for up, block, skip in zip(self.ups, self.blocks, reversed(feats[:-1])):
            x = block(torch.cat([skip, up(x)], dim=1))
        return self.head(x)


class MultiTaskUNet(nn.Module):
    """Shared U-Net encoder with one decoder and head per task.

    Args:
        in_channels: image channels.
        tasks: ``{task name: output channels}``, in order; the main task's value may be None
            (then ``out_channels``); a value ``{channels: c, kind: regression}`` declares a
            regression (or ``image``) head instead of class logits; ``{kind: image}`` without
            ``channels`` has ``in_channels`` (a reconstruction of the input).
        out_channels: channels of the main task's head (the tensor returned in eval mode).
        main: name of the main task (default: the first).
        dims: 2 or 3.
        depth: number of poolings.
        base_width: channels of the first level, doubled at each level.
        norm: normalisation name.
        act: activation name.

    Shape:
        ``(B, in_channels, *S)`` -> ``{task: (B, tasks[task], *S)}`` in training mode,
        ``(B, out_channels, *S)`` (the main task) in eval mode.

    Example:
        >>> net = MultiTaskUNet(1, {"mask": 2, "contour": 2}, depth=2, base_width=4).train()
        >>> print({k: tuple(v.shape) for k, v in net(torch.zeros(2, 1, 30, 17)).items()})
        {'mask': (2, 2, 30, 17), 'contour': (2, 2, 30, 17)}
    """

    def __init__(
        self,
        in_channels: int,
        tasks: Mapping[str, Any],
        out_channels: int | None = None,
        main: str | None = None,
        dims: int = 2,
        depth: int = 4,
        base_width: int = 64,
        norm: LayerSpec = "batch",
        act: LayerSpec = "relu",
    ) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("a multi-task network needs at least one task")
        first = next(iter(tasks))
        declared: dict[str, Head] = {}
        for name, spec in tasks.items():
            kind = "logits"
            if isinstance(spec, Mapping):  # {channels: c, kind: regression}
                kind = str(spec.get("kind", "logits"))
                spec = spec.get("channels")
                if spec is None and kind == "image":  # a reconstruction of the input
                    spec = in_channels
            if spec is None:
                if out_channels is None:
                    raise ValueError(f"task {name!r} has no channel count and out_channels is not given")
                spec = out_channels
            declared[name] = Head(int(spec), kind)
        main = main if main is not None else first
        declare(self, declared, main=main)
        if out_channels is not None and declared[main].channels != out_channels:
            raise ValueError(
                f"main task {main!r} has {declared[main].channels} channels "
                f"but out_channels={out_channels}; give it null in tasks to use out_channels"
            )
        channels = {name: h.channels for name, h in declared.items()}
        self.tasks = channels
        self.depth = depth
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.encoder = SharedEncoder(in_channels, widths, dims, norm, act)
        self.decoders = nn.ModuleDict(
            {name: TaskDecoder(widths, c, dims, norm, act) for name, c in channels.items()}
        )

    def run_heads(self, x: torch.Tensor, names: Sequence[str]) -> dict[str, torch.Tensor]:
        """The named tasks' outputs ``{task: (B, tasks[task], *S)}``, sharing one encoder pass."""
        x, size = pad_to_multiple(x, 2**self.depth)
        feats = self.encoder(x)
        return {name: crop_to(self.decoders[name](feats), size) for name in names}

    def forward(self, x: torch.Tensor) -> NetOutput:
        """Dict of task outputs (training / :func:`all_outputs`), else the main task's tensor."""
        if not wants_aux(self):
            return self.run_heads(x, [self.main_head])[self.main_head]
        return self.run_heads(x, list(self.decoders))


@register(
    "multitask",
    dims=(2, 3),
    small={"base_width": 4, "depth": 2, "tasks": {"mask": None, "contour": 2}},
)
def multitask(
    in_channels: int = 1,
    out_channels: int = 2,
    tasks: Mapping[str, Any] | None = None,
    main: str | None = None,
    dims: int = 2,
    depth: int = 4,
    base_width: int = 64,
    norm: LayerSpec = "batch",
    act: LayerSpec = "relu",
) -> MultiTaskUNet:
    """Shared encoder, one U-Net decoder per task (tasks and channels from the recipe)."""
    tasks = dict(tasks) if tasks is not None else {"mask": None, "contour": 2}
    return MultiTaskUNet(in_channels, tasks, out_channels, main, dims, depth, base_width, norm, act)
