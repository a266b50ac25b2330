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

import difflib
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

from densemed.errors import DensemedError


@dataclass(frozen=True)
class NetEntry:
    """A registered network preset."""

    name: str
    builder: Callable[..., nn.Module]
    dims: tuple[int, ...] = (2,)
    small: dict[str, Any] = field(default_factory=dict)
    #: Short description for ``densemed models`` (first docstring line of the builder).
    summary: str = ""


_REGISTRY: dict[str, NetEntry] = {}


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
        if name in _REGISTRY:
            raise ValueError(f"network {name!r} is registered twice")
        summary = (inspect.getdoc(fn) or "").split("\n")[0]
        _REGISTRY[name] = NetEntry(name, fn, tuple(dims), dict(small or {}), summary)
        return fn

    return deco


def names() -> list[str]:
    """Sorted names of every registered network."""
    return sorted(_REGISTRY)


def _closest(name: str, options: list[str]) -> str:
    match = difflib.get_close_matches(name, options, n=1, cutoff=0.4)
    return f"; did you mean {match[0]!r}?" if match else ""


def info(name: str) -> NetEntry:
    """The registry entry for ``name``; unknown names raise with the closest match."""
    if name not in _REGISTRY:
        raise DensemedError(
            f"unknown network {name!r}{_closest(name, names())} Available: {', '.join(names())}"
        )
    return _REGISTRY[name]


def build(name: str, **kwargs: Any) -> nn.Module:
    """Build the network registered as ``name`` with keyword overrides of its defaults.

    Example:
        >>> import torch, densemed.nets as nets
        >>> net = nets.build("unet", dims=2, in_channels=1, out_channels=2, base_width=8)
        >>> print(net(torch.zeros(1, 1, 97, 131)).shape)
        torch.Size([1, 2, 97, 131])
    """
    entry = info(name)
    params = inspect.signature(entry.builder).parameters
    takes_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    if not takes_var_kw:
        for key in kwargs:
            if key not in params:
                raise DensemedError(
                    f"network {name!r} has no option {key!r}{_closest(key, list(params))} "
                    f"Options: {', '.join(params)}"
                )
    return entry.builder(**kwargs)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
