"""``deepdistance``: cells from the inner distance map (Koyuncu et al., MedIA 2020).

Markers are the regional maxima of the h-maxima transform of the inner distance (``h``,
default 0.05), each 4-connected maximum region one cell; marker-controlled watershed of the
negated inner distance within the foreground (``foreground > threshold`` when a segmentation
head exists, else ``outer_distance > outer_threshold``).

``h: auto``: at the end of training the tuner :func:`tune_h` picks ``h`` on the validation images
(best mean detection F1 of the candidates, :func:`choose_h`) and it is written into the
checkpoints, so the model carries its own ``h``; a run stopped before that uses :data:`DEFAULT_H`.
``threshold``, ``outer_threshold`` and ``min_size`` may be ``auto`` too: after ``h``, they are
chosen by the grid search shared by every method (mean AJI, :mod:`densemed.infer.postprocess.tuning`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from densemed.errors import DensemedError
from densemed.infer.postprocess._common import need, relabel, remove_small
from densemed.infer.postprocess.registry import register, tuner

#: DeepDistance's h when none was chosen (``h: auto`` in a run that has not finished)
DEFAULT_H = 0.05
H_CANDIDATES = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2)


@register("deepdistance", needs=("inner_distance",))
def deepdistance(
    outputs: Mapping[str, np.ndarray], h: float = DEFAULT_H, threshold: float = 0.5, outer_threshold: float = 0.1,
    min_size: int = 0, landscape: str = "inner",
) -> np.ndarray:
    """DeepDistance: h-maxima markers of the inner distance, watershed within the foreground."""
    from densemed.targets.distance import decode

    inner = need(outputs, "inner_distance", "deepdistance")
    outer = outputs.get("outer_distance")
    if "foreground" in outputs:
        fg = np.asarray(outputs["foreground"]) > threshold
    elif outer is not None:
        fg = np.asarray(outer) > outer_threshold
    else:
        raise DensemedError("task.postprocess: method 'deepdistance' needs 'foreground' or 'outer_distance'")
    labels = decode(inner, outer, foreground=fg.astype(np.float32), h=h, threshold=0.5, landscape=landscape)
    return relabel(remove_small(labels, min_size))


def detect(inner: np.ndarray, h: float = DEFAULT_H, mask: np.ndarray | None = None) -> np.ndarray:
    """Cell positions ``(N, ndim)``: centroids of the 4-connected h-maxima regions of ``inner``."""
    from densemed.targets.distance import markers

    m = markers(inner, h, mask)
    n = int(m.max())
    if n == 0:
        return np.zeros((0, inner.ndim))
    points = ndimage.center_of_mass(np.ones(m.shape), m, np.arange(1, n + 1))
    return np.asarray(points, float).reshape(n, inner.ndim)


def choose_h(
    inner_maps: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    candidates: Sequence[float] = H_CANDIDATES,
    radius: float = 6.0,
    masks: Sequence[np.ndarray | None] | None = None,
) -> tuple[float, dict[float, float]]:
    """Pick ``h`` maximising the mean detection F1 on validation images.

    Args:
        inner_maps: predicted inner distance maps.
        truths: ground-truth instance maps (their centroids are the true points).
        candidates: h values to try.
        radius: detection matching radius in pixels.
        masks: optional foreground masks restricting the markers.

    Returns:
        ``(best_h, {h: mean F1})``; ties go to the smaller h.
    """
    from densemed.metrics.instance import centroids, detection_scores

    scores: dict[float, float] = {}
    for h in candidates:
        f1s = []
        for k, (inner, truth) in enumerate(zip(inner_maps, truths)):
            pts = detect(inner, h, None if masks is None else masks[k])
            f1s.append(detection_scores(pts, centroids(truth), radius)["f1"])
        scores[float(h)] = float(np.mean(f1s)) if f1s else 0.0
    best = max(scores, key=lambda k: (scores[k], -k))
    return best, scores


@tuner("deepdistance", keys=("h", "threshold", "outer_threshold", "min_size"))
def tune_h(
    outputs: Sequence[Mapping[str, np.ndarray]], truths: Sequence[np.ndarray], params: Mapping[str, Any],
    radius: float = 6.0,
) -> tuple[dict[str, Any], dict[float, float]] | None:
    """Resolve ``auto`` options from the network outputs of the validation images.

    ``h: auto`` by detection F1 (:func:`choose_h`, the foreground masked at ``threshold``, its
    default while that is ``auto`` too); then ``threshold``, ``outer_threshold``, ``min_size`` set
    to ``auto`` by :func:`densemed.infer.postprocess.tuning.grid_search` (mean AJI) with that ``h``.

    Args:
        outputs: per validation image, the :func:`densemed.infer.runner.network_outputs` dict.
        truths: the images' instance maps.
        params: the recipe's method options.
        radius: detection matching radius in pixels.

    Returns:
        ``(chosen options, scores)``: ``{h: mean detection F1}`` and the grid's ``{"key=value ...":
        mean AJI}``; None when nothing is set to ``auto`` or there are no validation images.
    """
    from densemed.infer.postprocess import tuning

    if "auto" not in params.values() or not truths:
        return None
    d = tuning.defaults("deepdistance")
    chosen: dict[str, Any] = {}
    scores: dict[Any, float] = {}
    if params.get("h") == "auto":
        t = params.get("threshold", d["threshold"])
        threshold = float(d["threshold"] if t == "auto" else t)
        inner = [o["inner_distance"] for o in outputs]
        masks = [o["foreground"] > threshold if "foreground" in o else None for o in outputs]
        chosen["h"], scores = choose_h(inner, truths, radius=radius, masks=masks)
    grid = {"threshold": tuning.thresholds(d["threshold"]),
            "outer_threshold": _unique_floats(d["outer_threshold"], 0.05, 0.2, 0.3),
            "min_size": tuning.sizes(d["min_size"], truths)}
    found = tuning.grid_search(outputs, truths, "deepdistance", {**params, **chosen}, grid)
    if found is not None:
        chosen.update(found[0])
        scores.update(found[1])
    return chosen, scores


def _unique_floats(*values: float) -> tuple[float, ...]:
    """``values`` as floats without repeats, in order."""
    return tuple(dict.fromkeys(float(v) for v in values))
