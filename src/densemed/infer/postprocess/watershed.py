"""``watershed``: watershed of the foreground's distance transform, for touching objects without extra heads.

The Euclidean distance transform ``d`` of the foreground mask (``foreground > threshold``, holes
filled) is flooded from markers by a watershed of ``-d`` within the mask. ``markers`` chooses where
the markers come from:

``distance`` (default)
    the h-maxima of ``d`` (``h`` pixels, default 2): one marker per bump of the distance map, so the
    mask alone decides the split (a waist in the mask splits an object);
``cores``
    the connected components (4/6-connected) of the confident foreground ``foreground > core``
    (default 0.8) of at least ``min_marker`` pixels (default 4): the network's own gaps decide the
    split. A network trained with border weights (U-Net, Ronneberger et al. 2015) lowers its
    probability on the pixels between touching objects, so its confident cores are already
    separate, while the distance's h-maxima also cut irregular single objects in two. Measured on
    the DSB 2018 validation split with five border-weighted U-Nets (README): object F1 +0.06 to
    +0.09, AJI -0.01 to +0.04 over the tuned ``distance`` markers. ``h`` is ignored with ``cores``.

``seams`` (pixels, default 0) gives back the contacts that a network trained with ``task.seams``
(:mod:`densemed.targets.seams`) leaves as background: a background pixel within ``seams`` pixels of
an object and with two different objects within ``2 * seams`` pixels takes the nearest one
(:func:`refill_seams`); an object's border with the background elsewhere does not move.

``threshold``, ``h``, ``min_size``, ``markers``, ``core`` and ``seams`` may be ``auto``: chosen on the
validation images at the end of training (:func:`tune`, grid search by mean AJI,
:mod:`densemed.infer.postprocess.tuning`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from densemed.errors import DensemedError
from densemed.infer.postprocess._common import need, refill_seams, relabel, remove_small, structure
from densemed.infer.postprocess.registry import register, to_instances, tuner

#: marker rules of :func:`distance_watershed`, the default first
MARKERS = ("distance", "cores")
#: ``core`` thresholds tried by the tuner after the default
CORES = (0.6, 0.7, 0.8, 0.9)
#: ``seams`` widths tried by the tuner after the default
SEAMS = (0, 1, 2)


@register("watershed", needs=("foreground",))
def distance_watershed(
    outputs: Mapping[str, np.ndarray], threshold: float = 0.5, h: float = 2.0, min_size: int = 0,
    fill: bool = True, spacing: Sequence[float] | None = None, markers: str = "distance", core: float = 0.8,
    min_marker: int = 4, seams: int = 0,
) -> np.ndarray:
    """Watershed of the foreground's distance transform from h-maxima or confident-core markers."""
    from skimage.segmentation import watershed

    from densemed.targets.distance import h_maxima_mask

    if markers not in MARKERS:
        raise DensemedError(f"task.postprocess: watershed markers must be one of {', '.join(MARKERS)}, "
                            f"got {markers!r}")
    p = need(outputs, "foreground", "watershed")
    fg = p > threshold
    if fill:
        fg = ndimage.binary_fill_holes(fg)
    dist = ndimage.distance_transform_edt(fg, sampling=spacing)
    if markers == "cores":
        seeds, _ = ndimage.label((p > core) & fg, structure=structure(fg.ndim, 1))
        seeds = remove_small(seeds, min_marker)
    else:
        peaks = h_maxima_mask(dist, h, resolution=0.01)
        seeds, _ = ndimage.label(peaks & fg, structure=structure(fg.ndim, 1))
    labels = watershed(-dist, seeds, mask=fg)
    labels = refill_seams(labels, seams)
    return relabel(remove_small(labels, min_size))


@tuner("watershed", keys=("threshold", "h", "min_size", "markers", "core", "seams"))
def tune(
    outputs: Sequence[Mapping[str, np.ndarray]], truths: Sequence[np.ndarray], params: Mapping[str, Any]
) -> tuple[dict[str, Any], dict[str, float]] | None:
    """Choose the options of ``watershed`` set to ``auto`` by mean AJI on the validation images.

    Grids, the default first: thresholds 0.3 / 0.5 / 0.7; ``h`` 1 px and fractions of the median
    object radius; ``min_size`` 0 and fractions of the median true area
    (:mod:`densemed.infer.postprocess.tuning`); ``core`` 0.6 / 0.7 / 0.8 / 0.9. ``markers: auto``
    searches each marker rule with only its own options (``h`` for ``distance``, ``core`` for
    ``cores``; the other keeps its default) and keeps the better; a tie keeps ``distance``.
    ``seams`` (0 / 1 / 2) is chosen last, with the others fixed at their choice (the search above
    runs with ``seams`` at its default 0): the grid of every option at once took 10 minutes for
    the 19 DSB validation images. Returns None when nothing is ``auto``.
    """
    from densemed.infer.postprocess import tuning

    if not truths or "auto" not in params.values():
        return None
    d = tuning.defaults("watershed")
    grid = {"threshold": tuning.thresholds(d["threshold"]), "h": tuning.radii(d["h"], truths),
            "min_size": tuning.sizes(d["min_size"], truths), "core": tuple(dict.fromkeys([d["core"], *CORES]))}
    seams_auto = params.get("seams") == "auto"
    first = {**params, "seams": d["seams"]} if seams_auto else dict(params)

    rules = MARKERS if first.get("markers") == "auto" else (str(first.get("markers", d["markers"])),)
    best: tuple[float, dict[str, Any]] = (float("-inf"), {})
    scores: dict[str, float] = {}
    for rule in rules if "auto" in first.values() else ():
        unused = "core" if rule == "distance" else "h"
        trial = {**first, **({unused: d[unused]} if first.get(unused) == "auto" else {})}
        # markers: auto is searched over this one rule, so its scores read "markers=<rule> ..."
        found = tuning.grid_search(outputs, truths, "watershed", trial, {"markers": (rule,), **grid})
        if found is None:  # markers given, only the option it ignores was auto: score the rule as it stands
            labels = [to_instances(dict(o), "watershed", **trial) for o in outputs]
            found = ({}, {"": tuning.mean_score(labels, truths)})
        chosen, rule_scores = found
        scores.update(rule_scores)
        value = max(rule_scores.values())
        if value > best[0]:  # a tie keeps the earlier rule (distance)
            best = (value, {**{k: trial[k] for k, v in first.items() if v == "auto"}, **chosen})
    if seams_auto:
        fixed = {**first, **best[1], "seams": "auto"}
        found = tuning.grid_search(outputs, truths, "watershed", fixed,
                                   {"seams": tuple(dict.fromkeys([d["seams"], *SEAMS]))})
        assert found is not None
        scores.update({f"then {k}": v for k, v in found[1].items()} if best[1] else found[1])
        best = (max(found[1].values()), {**best[1], **found[0]})
    return best[1], scores
