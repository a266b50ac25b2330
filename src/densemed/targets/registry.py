"""A decorator registry of target encodings (label map -> training target), one lookup.

An encoding is a function ``fn(instances, spacing=None, **params) -> np.ndarray float32`` that
takes an integer instance map ``(*S)`` (0 = background) and the voxel spacing. Register it with
``@register("name")``; ``build(name, **params)`` checks the option names and returns the callable
``f(instances, spacing)`` the dataset caches per training image; ``names()`` lists them. A
duplicate name is an error; an unknown name or option lists the available ones and the closest.
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable
from typing import Any

import numpy as np

from densemed.errors import DensemedError

Encoding = Callable[..., np.ndarray]
_REGISTRY: dict[str, Encoding] = {}


def register(name: str) -> Callable[[Encoding], Encoding]:
    """Register an encoding function ``fn(instances, spacing=None, **params)`` under ``name``."""

    def deco(fn: Encoding) -> Encoding:
        if name in _REGISTRY:
            raise ValueError(f"target {name!r} is registered twice")
        _REGISTRY[name] = fn
        return fn

    return deco


def names() -> list[str]:
    """Sorted names of every registered target encoding."""
    return sorted(_REGISTRY)


def _closest(name: str, options: list[str]) -> str:
    match = difflib.get_close_matches(name, options, n=1, cutoff=0.4)
    return f"; did you mean {match[0]!r}?" if match else ""


def build(name: str, **params: Any) -> Callable[[np.ndarray, tuple[float, ...] | None], np.ndarray]:
    """The encoding ``name`` with its options bound: ``f(instances, spacing) -> float32 (*S)``.

    Example:
        >>> import numpy as np, densemed.targets as targets
        >>> f = targets.build("border_weights", w0=10, sigma=5)
        >>> print(f(np.zeros((4, 6), np.int32), None).shape)
        (4, 6)
    """
    if name not in _REGISTRY:
        raise DensemedError(
            f"data.targets: unknown target {name!r}{_closest(name, names())} Available: {', '.join(names())}"
        )
    fn = _REGISTRY[name]
    options = [k for k in inspect.signature(fn).parameters if k not in ("instances", "spacing")]
    for key in params:
        if key not in options:
            raise DensemedError(
                f"data.targets: target {name!r} has no option {key!r}{_closest(key, options)} "
                f"Options: {', '.join(options)}"
            )
    return functools.partial(fn, **params)
