"""Registry of instance post-processing methods (network outputs -> instance label map).

A method is a function ``fn(outputs, **params) -> int32 (*S)`` registered with
``@register("name", needs=("foreground", ...))``; ``needs`` names the entries of ``outputs`` it
reads. A method may also register a tuner (``@tuner("name", keys=("threshold", ...))``):
``tune(outputs, truths, params) -> (chosen params, scores) | None`` picks the options of ``keys``
left as ``auto`` from the network outputs of the validation images at the end of training, so a
checkpoint carries its own post-processing (most tuners are a grid search,
:func:`densemed.infer.postprocess.tuning.grid_search`). Only the options of ``keys`` may be
``auto``; :func:`check_params` refuses ``auto`` elsewhere, and values whose type differs from the
option's default (a word for a threshold, a fraction for a pixel count), with one line.
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
_TUNABLE: dict[str, tuple[str, ...]] = {}


def register(name: str, needs: tuple[str, ...] = ("foreground",)) -> Callable[[Callable[..., np.ndarray]], Any]:
    """Register ``fn(outputs, **params)`` as instance method ``name``."""

    def deco(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        _REGISTRY.add(name, Method(name, fn, tuple(needs)))
        return fn

    return deco


def tuner(name: str, keys: tuple[str, ...]) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the parameter tuner of method ``name``; ``keys`` are the options it can choose (``auto``)."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _TUNERS[name] = fn
        _TUNABLE[name] = tuple(keys)
        return fn

    return deco


def tunable(name: str) -> tuple[str, ...]:
    """The options of method ``name`` that may be ``auto`` (chosen on validation images)."""
    return _TUNABLE.get(name, ())


def get_tuner(name: str) -> Callable[..., Any] | None:
    """The tuner of method ``name``, or None."""
    return _TUNERS.get(name)


def names() -> list[str]:
    """Sorted names of every registered method."""
    return _REGISTRY.names()


def get(name: str) -> Method:
    """The method ``name``; an unknown name lists the available ones and the closest."""
    return _REGISTRY.get(name)


def _kind_of(default: object) -> str | None:
    """What a value must be, judged by the option's default (None: anything)."""
    if isinstance(default, bool):
        return "true or false"
    if isinstance(default, int):
        return "a whole number"
    if isinstance(default, float):
        return "a number"
    if isinstance(default, str):
        return "a word"
    return None


def _fits(value: object, kind: str | None) -> bool:
    """Whether ``value`` is of ``kind`` (:func:`_kind_of`); an int counts as a number, a bool never does."""
    if kind is None:
        return True
    if kind == "true or false":
        return isinstance(value, bool)
    if kind == "a whole number":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "a number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and np.isfinite(float(value))
    return isinstance(value, str)


def check_params(
    method: str, params: Mapping[str, object], where: str = "task.postprocess", allow_auto: bool = True
) -> None:
    """Raise ``DensemedError`` (one line) for an unknown method, an option it does not take, or a bad value.

    A value must have the type of the option's default (a number for a threshold, a whole number
    for ``min_size``); ``auto`` is accepted for the options the method's tuner can choose
    (:func:`tunable`) when ``allow_auto``.
    """
    sig = inspect.signature(get(method).fn).parameters
    allowed = [k for k in sig if k != "outputs"]
    for key, value in params.items():
        if key not in allowed:
            raise DensemedError(
                f"{where}: method {method!r} has no option {key!r}{closest(str(key), allowed)} "
                f"Options: {', '.join(allowed)}"
            )
        auto_ok = allow_auto and key in tunable(method)
        if value == "auto" and isinstance(value, str):
            if auto_ok:
                continue
            if key in tunable(method):
                raise DensemedError(
                    f"{where}: method {method!r} option {key!r} is still auto; resolve it first (its tuner at the "
                    "end of training, or the method's default)"
                )
            can = ", ".join(tunable(method)) or "none"
            raise DensemedError(
                f"{where}: method {method!r} cannot choose {key!r} itself (auto); options it can choose: {can}"
            )
        kind = _kind_of(sig[key].default)
        if not _fits(value, kind):
            raise DensemedError(
                f"{where}: method {method!r} option {key!r} must be {kind}{' or auto' if auto_ok else ''}, "
                f"got {value!r}"
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
    check_params(method, params, allow_auto=False)
    shapes = {k: np.shape(v) for k, v in outputs.items()}
    if len(set(shapes.values())) > 1:
        raise DensemedError(f"task.postprocess: outputs have different shapes {shapes}")
    return get(method).fn(outputs, **params)
