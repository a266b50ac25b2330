"""A decorator registry of target encodings (label map -> training target), one lookup.

An encoding is a function ``fn(instances, spacing=None, **params) -> np.ndarray float32`` that
takes an integer instance map ``(*S)`` (0 = background) and the voxel spacing and returns a map
``(*S)`` or, for several channels, ``(C, *S)``. Register it with ``@register("name", augment=...)``;
``build(name, **params)`` checks the option names and returns the callable ``f(instances, spacing)``
the dataset caches per training image; ``names()`` lists them. A duplicate name is an error; an
unknown name or option lists the available ones and the closest.

Each encoding declares how geometric augmentation must treat it (:func:`augment_mode`):

``linear``
    a scalar map, resampled like the image (distance maps, weight maps);
``nearest``
    values copied by nearest neighbour (per-object constants such as shape descriptors, which
    are invariant to the rotations and flips the augmentation draws);
``refuse``
    the target cannot follow a geometric transform: a recipe that asks for one is refused.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np

from densemed.registry import Registry, check_options

Encoding = Callable[..., np.ndarray]
_REGISTRY: Registry[Encoding] = Registry("target", "task.targets")
_AUGMENT: dict[str, str] = {}
AUGMENT_MODES = ("linear", "nearest", "refuse")


def register(name: str, augment: str = "linear") -> Callable[[Encoding], Encoding]:
    """Register an encoding function ``fn(instances, spacing=None, **params)`` under ``name``.

    Args:
        name: registry key.
        augment: ``linear``, ``nearest`` or ``refuse`` (module docstring).
    """
    if augment not in AUGMENT_MODES:
        raise ValueError(f"augment must be one of {AUGMENT_MODES}, got {augment!r}")

    def deco(fn: Encoding) -> Encoding:
        _REGISTRY.add(name, fn)
        _AUGMENT[name] = augment
        return fn

    return deco


def augment_mode(name: str) -> str:
    """How geometric augmentation treats target ``name``: ``linear``, ``nearest`` or ``refuse``."""
    _REGISTRY.get(name)
    return _AUGMENT[name]


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
    check_options(fn, params, f"task.targets: target {name!r}", skip=("instances", "spacing"))
    return functools.partial(fn, **params)
