"""Registry of instance post-processing methods (network outputs -> instance label map).

A method is a function ``fn(outputs, **params) -> int32 (*S)`` registered with
``@register("name", needs=("foreground", ...))``; ``needs`` names the entries of ``outputs`` it
reads. A method may also register a tuner (``@tuner("name")``): ``tune(model, cases, cfg, device,
params) -> (chosen params, scores)`` picks parameters left as ``auto`` on validation images at the
end of training, so a checkpoint carries its own post-processing.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from densemed.errors import DensemedError
from densemed.registry import Registry, closest


@dataclass(frozen=True)
class Method:
    """A registered post-processing method."""

    name: str
    fn: Callable[..., np.ndarray]
    needs: tuple[str, ...]


_REGISTRY: Registry[Method] = Registry("instance method", "task.postprocess.method")
_TUNERS: dict[str, Callable[..., Any]] = {}


def register(name: str, needs: tuple[str, ...] = ("foreground",)) -> Callable[[Callable[..., np.ndarray]], Any]:
    """Register ``fn(outputs, **params)`` as instance method ``name``."""

    def deco(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        _REGISTRY.add(name, Method(name, fn, tuple(needs)))
        return fn

    return deco


def tuner(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the parameter tuner of method ``name`` (used for options set to ``auto``)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _TUNERS[name] = fn
        return fn

    return deco


def get_tuner(name: str) -> Callable[..., Any] | None:
    """The tuner of method ``name``, or None."""
    return _TUNERS.get(name)


def names() -> list[str]:
    """Sorted names of every registered method."""
    return _REGISTRY.names()


def get(name: str) -> Method:
    """The method ``name``; an unknown name lists the available ones and the closest."""
    return _REGISTRY.get(name)


def check_params(method: str, params: Mapping[str, object], where: str = "task.postprocess") -> None:
    """Raise ``DensemedError`` for an unknown method or an option it does not take."""
    fn = get(method).fn
    allowed = [k for k in inspect.signature(fn).parameters if k != "outputs"]
    for key in params:
        if key not in allowed:
            raise DensemedError(
                f"{where}: method {method!r} has no option {key!r}{closest(str(key), allowed)} "
                f"Options: {', '.join(allowed)}"
            )


def to_instances(outputs: dict[str, np.ndarray], method: str, **params: object) -> np.ndarray:
    """Turn network outputs into an instance label map.

    Args:
        outputs: ``{"foreground" | "contour" | "inner_distance" | "outer_distance": array (*S)}``
            (probabilities for classification heads, raw values for regression heads).
        method: a registered method (``densemed.infer.postprocess.names()``).
        **params: the method's options (thresholds, ``min_size``, ``h``, ``dilate`` ...).

    Returns:
        int32 ``(*S)``: 0 background, 1..N objects in scan order.

    Example:
        >>> fg = np.zeros((6, 9), np.float32); fg[1:5, 1:4] = 0.9; fg[1:5, 5:8] = 0.8
        >>> print(to_instances({"foreground": fg}, "components").max())
        2
    """
    check_params(method, params)
    shapes = {k: np.shape(v) for k, v in outputs.items()}
    if len(set(shapes.values())) > 1:
        raise DensemedError(f"task.postprocess: outputs have different shapes {shapes}")
    return get(method).fn(outputs, **params)
