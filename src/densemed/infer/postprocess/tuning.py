"""Choosing post-processing options on validation images: one grid search shared by every method.

At the end of training the instances task computes the network outputs of every validation image
once (:func:`densemed.infer.runner.network_outputs`) and hands them, with the true instance maps,
to the method's tuner. A tuner declares a small grid per option (:func:`thresholds`,
:func:`sizes`, :func:`radii`) and calls :func:`grid_search`, which tries every combination of
the options set to ``auto`` (the others keep the recipe's value) on those outputs and keeps the
best by **mean AJI over the validation images** (:func:`densemed.metrics.instance.aggregated_jaccard`).

Why AJI and not object F1: AJI scores splits, merges, missed and spurious objects *and* how well
each object's pixels are recovered, so a threshold that shaves a rim or a ``min_size`` that drops
true objects changes it; object F1 only counts objects with >= 50 % coverage, so many grid points
tie (a threshold moving every boundary by a pixel leaves it unchanged). AJI is also the headline
metric for nuclei (Kumar et al. 2017, DSB 2018 in issue 17).

Ties go to the earliest grid point; each grid lists the method's default first, so an option
moves away from its default only when that scores strictly better. Grids derived from the data
use the true objects of the validation images: ``min_size`` candidates are fractions of the
median object area, watershed ``h`` candidates fractions of the median object's equivalent radius.
Cost: (product of the grid sizes) x (validation images) post-processing calls, no forward pass.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from densemed.infer.postprocess.registry import get, to_instances
from densemed.metrics.instance import aggregated_jaccard

#: probability thresholds tried for ``threshold``, ``t_o``, ``t_c`` (after the default)
THRESHOLDS = (0.3, 0.5, 0.7)
#: ``min_size`` candidates as fractions of the median true object area (after 0 and the default)
SIZE_FRACTIONS = (0.03, 0.1, 0.3)
#: watershed ``h`` candidates as fractions of the median object's equivalent radius (after 1 px and the default)
RADIUS_FRACTIONS = (0.15, 0.3, 0.5)

Score = Callable[[np.ndarray, np.ndarray], float]


def _unique(values: Sequence[Any]) -> tuple[Any, ...]:
    """``values`` without repeats, first occurrence kept (so the default stays first)."""
    out: list[Any] = []
    for v in values:
        if v not in out:
            out.append(v)
    return tuple(out)


def object_areas(truths: Sequence[np.ndarray]) -> np.ndarray:
    """Pixel counts of every object of every true instance map (background left out)."""
    areas = [np.bincount(np.asarray(t, np.int64).ravel())[1:] for t in truths]
    flat = np.concatenate(areas) if areas else np.zeros(0, np.int64)
    return flat[flat > 0]


def defaults(method: str) -> dict[str, Any]:
    """The default value of every option of ``method`` (from its signature)."""
    sig = inspect.signature(get(method).fn).parameters
    return {k: p.default for k, p in sig.items() if k != "outputs"}


def thresholds(default: float) -> tuple[float, ...]:
    """Candidates of a probability threshold: the default, then :data:`THRESHOLDS`."""
    return _unique([float(default), *THRESHOLDS])


def sizes(default: int, truths: Sequence[np.ndarray]) -> tuple[int, ...]:
    """Candidates of ``min_size``: the default, 0, then :data:`SIZE_FRACTIONS` of the median true area."""
    areas = object_areas(truths)
    median = float(np.median(areas)) if areas.size else 0.0
    return _unique([int(default), 0, *(int(round(f * median)) for f in SIZE_FRACTIONS)])


def radii(default: float, truths: Sequence[np.ndarray]) -> tuple[float, ...]:
    """Candidates of a height in pixels (watershed ``h``): the default, 1, then fractions of the median radius.

    The equivalent radius of the median object is ``sqrt(area / pi)`` in 2D (``(3 area / 4 pi)^(1/3)`` in 3D).
    """
    areas = object_areas(truths)
    ndim = np.ndim(truths[0]) if len(truths) else 2
    median = float(np.median(areas)) if areas.size else 0.0
    r = (median / np.pi) ** 0.5 if ndim == 2 else (3 * median / (4 * np.pi)) ** (1 / 3)
    return _unique([float(default), 1.0, *(round(f * r, 1) for f in RADIUS_FRACTIONS if round(f * r, 1) > 0)])


def mean_score(labels: Sequence[np.ndarray], truths: Sequence[np.ndarray], score: Score = aggregated_jaccard) -> float:
    """Mean of ``score(pred, truth)`` over the images."""
    return float(np.mean([score(p, t) for p, t in zip(labels, truths)])) if truths else 0.0


def grid_search(
    outputs: Sequence[Mapping[str, np.ndarray]],
    truths: Sequence[np.ndarray],
    method: str,
    params: Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    score: Score = aggregated_jaccard,
) -> tuple[dict[str, Any], dict[str, float]] | None:
    """Choose the options of ``grid`` that ``params`` sets to ``auto`` by the mean ``score`` on validation images.

    Args:
        outputs: per validation image, the network outputs (``{"foreground": ..., ...}``), computed once.
        truths: the images' true instance maps.
        method: the post-processing method (:func:`densemed.infer.postprocess.to_instances`).
        params: the recipe's options of the method; those equal to ``"auto"`` and listed in ``grid``
            are searched, the others are passed as they are.
        grid: candidates per option, the method's default first (ties go to the earliest point).
        score: object-level score of one image, higher is better (default AJI).

    Returns:
        ``(chosen options, {"key=value key=value": mean score})`` over every grid point, or None
        when no option of ``grid`` is ``auto`` or there is no validation image.
    """
    keys = [k for k in grid if params.get(k) == "auto"]
    if not keys or not truths:
        return None
    fixed = {k: v for k, v in params.items() if k not in keys}
    scores: dict[str, float] = {}
    best: tuple[float, dict[str, Any]] | None = None
    for values in itertools.product(*(grid[k] for k in keys)):
        trial = dict(zip(keys, values))
        labels = [to_instances(dict(o), method, **fixed, **trial) for o in outputs]
        value = mean_score(labels, truths, score)
        scores[" ".join(f"{k}={v}" for k, v in trial.items())] = value
        if best is None or value > best[0]:
            best = (value, trial)
    assert best is not None
    return best[1], scores
