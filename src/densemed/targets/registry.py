"""A decorator registry of target encodings (label map -> training target), one lookup.

An encoding is a function ``fn(instances, spacing=None, **params) -> np.ndarray float32`` that
takes an integer instance map ``(*S)`` (0 = background) and the voxel spacing. Register it with
``@register("name")``; ``build(name, **params)`` checks the option names and returns the callable
``f(instances, spacing)`` the dataset caches per training image; ``names()`` lists them. A
duplicate name is an error; an unknown name or option lists the available ones and the closest.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from densemed.registry import Registry, check_options

Encoding = Callable[..., np.ndarray]
_REGISTRY: Registry[Encoding] = Registry("target", "data.targets")


def register(name: str) -> Callable[[Encoding], Encoding]:
    """Register an encoding function ``fn(instances, spacing=None, **params)`` under ``name``."""

    def deco(fn: Encoding) -> Encoding:
        _REGISTRY.add(name, fn)
        return fn

    return deco


def names() -> list[str]:
    """Sorted names of every registered target encoding."""
    return _REGISTRY.names()


def build(name: str, **params: Any) -> Callable[[np.ndarray, tuple[float, ...] | None], np.ndarray]:
    """The encoding ``name`` with its options bound: ``f(instances, spacing) -> float32 (*S)``.

    Example:
        >>> import numpy as np, densemed.targets as targets
        >>> f = targets.build("border_weights", w0=10, sigma=5)
        >>> print(f(np.zeros((4, 6), np.int32), None).shape)
        (4, 6)
    """
    fn = _REGISTRY.get(name)
    check_options(fn, params, f"data.targets: target {name!r}", skip=("instances", "spacing"))
    return functools.partial(fn, **params)
