"""A decorator registry of losses, with one lookup, in the style of :mod:`densemed.nets.registry`.

``@register("dice")`` on a :class:`Loss` subclass records it; ``build(name, **params)`` validates
the option names against the constructor and returns the module; ``names()`` lists them. A
duplicate name is an error; an unknown name or option lists the available ones and the closest.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from densemed.errors import DensemedError
from densemed.losses import functional as LF
from densemed.registry import Registry, check_options

_REGISTRY: Registry[type[nn.Module]] = Registry("loss", "loss.name")


class Loss(nn.Module):
    """Base of every registered loss: validation of ``reduction`` and of the inputs.

    Subclasses set ``accepts_weights = True`` when they use per-pixel weights; the others raise
    if the training loop passes some (a weight map silently ignored is a wrong experiment).
    """

    accepts_weights: bool = False

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in LF.REDUCTIONS:
            raise DensemedError(f"loss.reduction: {reduction!r} is not one of {', '.join(LF.REDUCTIONS)}")
        self.reduction = reduction

    def check(self, output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> None:
        """Raise ``ValueError`` on a shape mismatch or on weights this loss cannot use."""
        if not isinstance(output, torch.Tensor):
            raise ValueError(f"{type(self).__name__} takes one logits tensor, got {type(output).__name__}")
        LF.check_pair(output, target)
        if weights is not None:
            if not self.accepts_weights:
                raise ValueError(
                    f"{type(self).__name__} cannot use per-pixel weights; use weighted_ce, focal, "
                    "attentionboost, or a compound loss with one of them"
                )
            if weights.shape[:2] != (output.shape[0], 1) or weights.shape[2:] != output.shape[2:]:
                raise ValueError(
                    f"weights {tuple(weights.shape)} must be (B, 1, *S) for logits {tuple(output.shape)}"
                )

    def extra_repr(self) -> str:
        """The constructor options set on this loss, for its ``repr``."""
        keys = [k for k in inspect.signature(type(self).__init__).parameters if k != "self"]
        return ", ".join(f"{k}={getattr(self, k)!r}" for k in keys if hasattr(self, k))


def register(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Register a loss class under ``name`` (lower case, as written in recipes)."""

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        _REGISTRY.add(name, cls)
        return cls

    return deco


def names() -> list[str]:
    """Sorted names of every registered loss."""
    return _REGISTRY.names()


def build(name: str, **params: Any) -> nn.Module:
    """Build the loss registered as ``name`` with the given options.

    Example:
        >>> import torch, densemed.losses as losses
        >>> loss = losses.build("dice_ce", include_background=False)
        >>> print(loss(torch.zeros(2, 3, 8, 8), torch.zeros(2, 1, 8, 8, dtype=torch.long)).shape)
        torch.Size([])
    """
    cls = _REGISTRY.get(name)
    check_options(cls.__init__, params, f"loss {name!r}")
    return cls(**params)


def build_spec(spec: Any, where: str) -> nn.Module:
    """Build a loss from a recipe entry ``{name: ..., **params}`` (or pass a module through)."""
    if isinstance(spec, nn.Module):
        return spec
    if isinstance(spec, str):
        return build(spec)
    if not isinstance(spec, dict) or "name" not in spec:
        raise DensemedError(f"{where}: expected a mapping with a 'name' key, got {spec!r}")
    params = {k: v for k, v in spec.items() if k != "name"}
    return build(spec["name"], **params)
