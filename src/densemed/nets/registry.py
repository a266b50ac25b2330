"""A decorator registry of network builders, with one lookup.

Every network module registers thin named presets::

    @register("fcn8s", dims=(2,), small={"base_width": 8, "fc_width": 32})
    def fcn8s(in_channels: int = 3, out_channels: int = 21, **kw) -> nn.Module: ...

``build(name, **kw)`` calls the builder; ``names()`` lists them; ``info(name)`` gives the entry
(supported ``dims`` and the ``small`` keyword preset that makes a CPU-sized variant, used by the
registry-driven tests and by ``densemed compare``). A duplicate name is an error; an unknown name
lists the available ones and the closest match.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from densemed.registry import Registry, check_options


@dataclass(frozen=True)
class NetEntry:
    """A registered network preset."""

    name: str
    builder: Callable[..., nn.Module]
    dims: tuple[int, ...] = (2,)
    small: dict[str, Any] = field(default_factory=dict)
    #: Short description for ``densemed models`` (first docstring line of the builder).
    summary: str = ""


_REGISTRY: Registry[NetEntry] = Registry("network", "model.name")


def register(
    name: str, *, dims: tuple[int, ...] = (2,), small: dict[str, Any] | None = None
) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Register a network builder under ``name``.

    Args:
        name: registry key, lower case (``"unet"``, ``"fcn8s"``).
        dims: spatial dimensionalities the network supports.
        small: keyword arguments that make a small variant (few channels) for CPU tests.
    """

    def deco(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        summary = (inspect.getdoc(fn) or "").split("\n")[0]
        _REGISTRY.add(name, NetEntry(name, fn, tuple(dims), dict(small or {}), summary))
        return fn

    return deco


def names() -> list[str]:
    """Sorted names of every registered network."""
    return _REGISTRY.names()


def info(name: str) -> NetEntry:
    """The registry entry for ``name``; unknown names raise with the closest match."""
    return _REGISTRY.get(name)


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build the network registered as ``name`` with keyword overrides of its defaults.

    Example:
        >>> import torch, densemed.nets as nets
        >>> net = nets.build("unet", dims=2, in_channels=1, out_channels=2, base_width=8)
        >>> print(net(torch.zeros(1, 1, 97, 131)).shape)
        torch.Size([1, 2, 97, 131])
    """
    entry = info(name)
    check_options(entry.builder, kwargs, f"network {name!r}")
    return entry.builder(**kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
