"""Declared network heads: what each output of a network is, read by every consumer.

Every registered network declares its outputs once, in its constructor::

    self.heads = {"object": Head(2), "contour": Head(2)}     # name -> channels, kind
    self.main_head = "object"                                # the tensor returned in eval mode

and, when it needs more than the image, which batch keys it takes (positional, in order)::

    self.inputs = ("image", "kspace", "mask")               # default ("image",)

Kinds:

``logits``
    class scores, never activated inside the network: one channel -> sigmoid, several ->
    softmax over channels (:func:`activate`).
``regression``
    real-valued maps (distance maps, descriptors): passed through unchanged.
``image``
    a restored or generated image (super-resolution, reconstruction): passed through unchanged.

``dense=False`` marks a head whose spatial size is not the input's (a PatchGAN score map, an
image-level class score); the registry contract tests then check only its channels.

The rules that used to be copied into the training loop, the predictor and the instance code
live here once: :func:`activate` (logits -> probabilities), :func:`foreground` (probability of
"any object" for 1, 2 or K classes: ``p`` for one sigmoid channel, ``1 - p_background``
otherwise) and :func:`to_labels`.

In training mode (or inside :func:`densemed.nets.all_outputs`) a network with one head returns
that head's tensor, or a list ``[main, aux...]`` (deep supervision, stages); a network with
several heads returns ``{head: tensor or list}``. :func:`head_outputs` turns either form into
``{head: tensor}`` (the first, fused, element of a list).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

KINDS = ("logits", "regression", "image")


@dataclass(frozen=True)
class Head:
    """One declared output of a network.

    Args:
        channels: number of channels of the head's tensor ``(B, channels, *S)``.
        kind: ``logits``, ``regression`` or ``image``.
        dense: the head has the input's spatial size (False for patch or image-level scores).
    """

    channels: int
    kind: str = "logits"
    dense: bool = True

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"head kind must be one of {KINDS}, got {self.kind!r}")
        if int(self.channels) < 1:
            raise ValueError(f"a head needs at least one channel, got {self.channels}")


def declare(module: nn.Module, heads: Mapping[str, Head], main: str | None = None,
            inputs: tuple[str, ...] = ("image",)) -> None:
    """Set ``module.heads``, ``module.main_head`` (default: the first head) and ``module.inputs``."""
    if not heads:
        raise ValueError("a network declares at least one head")
    main = main if main is not None else next(iter(heads))
    if main not in heads:
        raise ValueError(f"main head {main!r} is not one of the declared heads {list(heads)}")
    module.heads = dict(heads)
    module.main_head = main
    module.inputs = tuple(inputs)


def heads_of(model: nn.Module) -> dict[str, Head]:
    """The declared heads of ``model`` (unwrapping DistributedDataParallel and the like)."""
    model = unwrap(model)
    heads = getattr(model, "heads", None)
    if not isinstance(heads, Mapping):
        raise TypeError(f"{type(model).__name__} declares no heads (see densemed.nets.heads)")
    return dict(heads)


def main_head(model: nn.Module) -> str:
    """Name of the head the network returns in eval mode."""
    return str(unwrap(model).main_head)


def main_kind(model: nn.Module) -> str:
    """Kind of the main head (``logits``, ``regression`` or ``image``)."""
    return heads_of(model)[main_head(model)].kind


def model_inputs(model: nn.Module) -> tuple[str, ...]:
    """Batch keys the network's ``forward`` takes, in order (default ``("image",)``)."""
    return tuple(getattr(unwrap(model), "inputs", ("image",)))


def unwrap(model: nn.Module) -> nn.Module:
    """The network inside a ``DistributedDataParallel`` / ``torch.compile`` wrapper."""
    while hasattr(model, "module") and isinstance(model.module, nn.Module):
        model = model.module
    return getattr(model, "_orig_mod", model)


def activate(x: torch.Tensor, kind: str = "logits") -> torch.Tensor:
    """Head output ``(B, C, *S)`` -> probabilities for logits (sigmoid if C == 1, else softmax); others unchanged."""
    if kind != "logits":
        return x
    return torch.sigmoid(x) if x.shape[1] == 1 else torch.softmax(x, dim=1)


def foreground(probs: torch.Tensor, channel_dim: int = 1) -> torch.Tensor:
    """Probability of "any object" from class probabilities along ``channel_dim``.

    One channel (sigmoid): that channel. Two or more (softmax): ``1 - p(background)``, which for
    two classes equals ``p(class 1)`` and for K classes counts every foreground class.

    Shape:
        ``(B, K, *S) -> (B, *S)`` (``channel_dim=1``) or ``(K, *S) -> (*S)`` (``channel_dim=0``).
    """
    first = probs.select(channel_dim, 0)
    return first if probs.shape[channel_dim] == 1 else 1.0 - first


def to_labels(probs: torch.Tensor) -> torch.Tensor:
    """Probabilities ``(B, K, *S)`` -> class indices ``(B, *S)`` (threshold 0.5 for one channel)."""
    if probs.shape[1] == 1:
        return (probs[:, 0] > 0.5).long()
    return probs.argmax(1)


def head_outputs(model: nn.Module, out: Any) -> dict[str, torch.Tensor]:
    """A network's training-mode output (tensor, list or dict) -> ``{head: main tensor}``."""
    if isinstance(out, Mapping):
        return {k: (v[0] if isinstance(v, (list, tuple)) else v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        out = out[0] if main_head_is_first(model) else out[-1]
    return {main_head(model): out}


def main_head_is_first(model: nn.Module) -> bool:
    """Lists put the main output first, except multi-stage nets that declare ``final_last = True``."""
    return not getattr(unwrap(model), "final_last", False)
