"""Post-processing: network outputs -> an instance label map (one integer id per object).

One entry point, :func:`to_instances` ``(outputs, method, **params)``. ``outputs`` maps names to
float arrays of the image's spatial shape ``(*S)`` (no batch or channel axis):

* ``"foreground"``: object probability (softmax channel 1, or sigmoid of a one-channel head);
* ``"contour"``: contour probability (DCAN's contour branch);
* ``"inner_distance"``, ``"outer_distance"``: DeepDistance's regressed maps (not activated).

:func:`network_outputs` runs a model (any registered network; multi-task heads through
:func:`densemed.nets.all_outputs`) window by window and returns that dict.

Methods (2D and 3D):

``components``
    ``foreground > threshold``, holes filled, connected components (``connectivity`` 1 = 4/6,
    ``ndim`` = 8/26-connected), objects smaller than ``min_size`` pixels removed.
``watershed``
    Distance-transform watershed for touching objects without extra heads: the Euclidean
    distance transform of the foreground mask, markers at its h-maxima (``h`` pixels,
    default 2), watershed of the negated distance within the mask.
``contour_watershed``
    Markers = components of the DCAN interior (``foreground > t_o`` and ``contour < t_c``),
    flooded over the contour probability within ``foreground > t_o``: keeps every object pixel.
``dcan``
    The paper's fusion (Chen et al., MedIA 2017, Sect. 3.3): interior
    ``p_o > t_o and p_c < t_c`` with ``t_o = t_c = 0.5`` ("set as 0.5 empirically"),
    connected components, hole filling, removal of small objects (``min_size``), and each
    object dilated back by ``dilate`` pixels (disk radius) to recover the pixels lost to the
    contour band, without letting two objects overlap. Defaults ``dilate=3`` (the paper's disk
    of radius 3) and ``min_size=64`` (the paper removes "small areas" without a number here:
    a documented choice). The paper also smooths the fused mask with a disk filter before
    labelling: ``smooth`` (radius, default 0 = off).
``deepdistance``
    The paper's detection (Koyuncu et al., MedIA 2020): markers are the regional maxima of the
    h-maxima transform of the inner distance (``h``, default 0.05), each 4-connected maximum
    region one cell; marker-controlled
    watershed of the negated inner distance within the foreground (``foreground > threshold``
    when a segmentation head exists, else ``outer_distance > outer_threshold``).
    ``h: auto`` in a recipe: at the end of training :func:`tune_h` picks ``h`` on the validation
    images (best mean detection F1, :func:`choose_h`) and writes it into ``best.pt`` and
    ``last.pt``, so the model carries its own ``h``.

Every method returns int32 ids 1..N in scan order (0 = background).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy import ndimage

from densemed.errors import DensemedError

METHODS = ("components", "watershed", "contour_watershed", "dcan", "deepdistance")
#: network head names -> the names :func:`to_instances` reads
HEAD_ALIASES = {"mask": "foreground", "object": "foreground", "segmentation": "foreground"}
REGRESSION_HEADS = ("inner_distance", "outer_distance")
#: DeepDistance's h when none was chosen (``h: auto`` in a run that has not finished)
DEFAULT_H = 0.05


def _need(outputs: Mapping[str, np.ndarray], key: str, method: str) -> np.ndarray:
    if key not in outputs:
        raise DensemedError(
            f"infer.instances: method {method!r} needs the {key!r} output; the network gave {sorted(outputs)}"
        )
    return np.asarray(outputs[key], dtype=np.float32)


def _structure(ndim: int, connectivity: int) -> np.ndarray:
    return ndimage.generate_binary_structure(ndim, connectivity)


def _ball(ndim: int, radius: int) -> np.ndarray:
    grid = np.indices((2 * radius + 1,) * ndim) - radius
    return (grid**2).sum(0) <= radius**2


def fill_holes(labels: np.ndarray) -> np.ndarray:
    """Fill the holes of every object (a hole takes the id of the object around it)."""
    out = labels.copy()
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        obj = labels[box] == i
        filled = ndimage.binary_fill_holes(obj)
        view = out[box]
        view[filled & (view == 0)] = i  # never overwrite another object lying inside the hole
    return out


def remove_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Delete objects with fewer than ``min_size`` pixels."""
    if min_size <= 1:
        return labels
    sizes = np.bincount(labels.ravel())
    small = sizes < min_size
    small[0] = False
    out = labels.copy()
    out[small[labels]] = 0
    return out


def relabel(labels: np.ndarray) -> np.ndarray:
    """Ids 1..N in scan order, int32."""
    from skimage.segmentation import relabel_sequential

    return relabel_sequential(labels.astype(np.int32))[0]


def components(
    outputs: Mapping[str, np.ndarray], threshold: float = 0.5, min_size: int = 0, connectivity: int = 1,
    fill: bool = True,
) -> np.ndarray:
    """Connected components of the thresholded foreground."""
    fg = _need(outputs, "foreground", "components") > threshold
    if fill:
        fg = ndimage.binary_fill_holes(fg)
    labels, _ = ndimage.label(fg, structure=_structure(fg.ndim, connectivity))
    return relabel(remove_small(labels, min_size))


def distance_watershed(
    outputs: Mapping[str, np.ndarray], threshold: float = 0.5, h: float = 2.0, min_size: int = 0,
    fill: bool = True, spacing: Sequence[float] | None = None,
) -> np.ndarray:
    """Watershed of the foreground's distance transform from its h-maxima (touching objects)."""
    from skimage.morphology import h_maxima
    from skimage.segmentation import watershed

    fg = _need(outputs, "foreground", "watershed") > threshold
    if fill:
        fg = ndimage.binary_fill_holes(fg)
    dist = ndimage.distance_transform_edt(fg, sampling=spacing)
    # h-maxima on a fixed-point copy: exact comparisons instead of float tolerance
    seeds = h_maxima(np.round(dist * 100).astype(np.int64), int(round(h * 100))) > 0
    markers, _ = ndimage.label(seeds & fg, structure=_structure(fg.ndim, 1))
    labels = watershed(-dist, markers, mask=fg)
    return relabel(remove_small(labels, min_size))


def _dcan_interior(
    outputs: Mapping[str, np.ndarray], t_o: float, t_c: float, smooth: int, method: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p_o = _need(outputs, "foreground", method)
    p_c = _need(outputs, "contour", method)
    obj = p_o > t_o
    interior = obj & (p_c < t_c)
    if smooth > 0:  # the paper's disk-filter smoothing of the fused mask
        ball = _ball(interior.ndim, smooth).astype(np.float32)
        interior = ndimage.convolve(interior.astype(np.float32), ball / ball.sum(), mode="nearest") > 0.5
    return obj, interior, p_c


def dcan(
    outputs: Mapping[str, np.ndarray],
    t_o: float = 0.5,
    t_c: float = 0.5,
    min_size: int = 64,
    dilate: int = 3,
    smooth: int = 0,
    connectivity: int = 1,
) -> np.ndarray:
    """DCAN fusion: interior components, hole filling, small-object removal, dilation back."""
    from skimage.segmentation import expand_labels

    _, interior, _ = _dcan_interior(outputs, t_o, t_c, smooth, "dcan")
    labels, _ = ndimage.label(interior, structure=_structure(interior.ndim, connectivity))
    labels = remove_small(fill_holes(labels), min_size)
    if dilate > 0:
        labels = expand_labels(labels, distance=dilate)  # grows each object, never into another
    return relabel(labels)


def contour_watershed(
    outputs: Mapping[str, np.ndarray], t_o: float = 0.5, t_c: float = 0.5, min_size: int = 0, smooth: int = 0,
    min_marker: int = 4,
) -> np.ndarray:
    """Markers from the DCAN interior, flooded over the contour probability within the objects."""
    from skimage.segmentation import watershed

    obj, interior, p_c = _dcan_interior(outputs, t_o, t_c, smooth, "contour_watershed")
    obj = ndimage.binary_fill_holes(obj)
    markers, _ = ndimage.label(interior, structure=_structure(obj.ndim, 1))
    markers = remove_small(markers, min_marker)
    labels = watershed(p_c, markers, mask=obj)
    return relabel(remove_small(labels, min_size))


def deepdistance(
    outputs: Mapping[str, np.ndarray], h: float = 0.05, threshold: float = 0.5, outer_threshold: float = 0.1,
    min_size: int = 0, landscape: str = "inner",
) -> np.ndarray:
    """DeepDistance: h-maxima markers of the inner distance, watershed within the foreground."""
    from densemed.targets.distance import decode

    inner = _need(outputs, "inner_distance", "deepdistance")
    outer = outputs.get("outer_distance")
    if "foreground" in outputs:
        fg = np.asarray(outputs["foreground"]) > threshold
    elif outer is not None:
        fg = np.asarray(outer) > outer_threshold
    else:
        raise DensemedError("infer.instances: method 'deepdistance' needs 'foreground' or 'outer_distance'")
    labels = decode(inner, outer, foreground=fg.astype(np.float32), h=h, threshold=0.5, landscape=landscape)
    return relabel(remove_small(labels, min_size))


def detect(inner: np.ndarray, h: float = 0.05, mask: np.ndarray | None = None) -> np.ndarray:
    """Cell positions ``(N, ndim)``: centroids of the 4-connected h-maxima regions of ``inner``."""
    from densemed.targets.distance import markers

    m = markers(inner, h, mask)
    n = int(m.max())
    if n == 0:
        return np.zeros((0, inner.ndim))
    points = ndimage.center_of_mass(np.ones(m.shape), m, np.arange(1, n + 1))
    return np.asarray(points, float).reshape(n, inner.ndim)


_FUNCS = {
    "components": components,
    "watershed": distance_watershed,
    "contour_watershed": contour_watershed,
    "dcan": dcan,
    "deepdistance": deepdistance,
}


def _check_params(method: str, params: Mapping[str, object]) -> None:
    """Raise ``DensemedError`` for an unknown method or an option it does not take."""
    import inspect

    if method not in _FUNCS:
        raise DensemedError(f"infer.instances: unknown method {method!r}; use one of {', '.join(METHODS)}")
    allowed = [k for k in inspect.signature(_FUNCS[method]).parameters if k != "outputs"]
    for key in params:
        if key not in allowed:
            raise DensemedError(
                f"infer.instances: method {method!r} has no option {key!r}; options: {', '.join(allowed)}"
            )


def to_instances(outputs: dict[str, np.ndarray], method: str, **params: object) -> np.ndarray:
    """Turn network outputs into an instance label map.

    Args:
        outputs: ``{"foreground" | "contour" | "inner_distance" | "outer_distance": array (*S)}``
            (probabilities for classification heads, raw values for distance heads).
        method: one of ``components``, ``watershed``, ``contour_watershed``, ``dcan``,
            ``deepdistance`` (see the module docstring).
        **params: the method's options (thresholds, ``min_size``, ``h``, ``dilate`` ...).

    Returns:
        int32 ``(*S)``: 0 background, 1..N objects.

    Example:
        >>> fg = np.zeros((6, 9), np.float32); fg[1:5, 1:4] = 0.9; fg[1:5, 5:8] = 0.8
        >>> print(to_instances({"foreground": fg}, "components").max())
        2
    """
    _check_params(method, params)
    shapes = {k: np.shape(v) for k, v in outputs.items()}
    if len(set(shapes.values())) > 1:
        raise DensemedError(f"infer.instances: outputs have different shapes {shapes}")
    return _FUNCS[method](outputs, **params)  # type: ignore[arg-type]


def head_maps(
    heads: Mapping[str, object], regression: Iterable[str] = REGRESSION_HEADS
) -> dict[str, np.ndarray]:
    """Network head outputs for one image -> the ``outputs`` dict of :func:`to_instances`.

    Args:
        heads: ``{head: logits (C, *S)}`` (tensor or array; a list takes its first, fused,
            element). Classification heads become the foreground-class probability (softmax
            channel 1, or sigmoid for one channel); ``regression`` heads (one channel) pass
            through. ``mask``/``object`` heads are renamed ``foreground``.
        regression: names of the regression heads.
    """
    import torch

    regression = set(regression)
    out: dict[str, np.ndarray] = {}
    for name, value in heads.items():
        if isinstance(value, (list, tuple)):
            value = value[0]
        t = torch.as_tensor(value).detach().float().cpu()  # (C, *S)
        if name in regression:
            arr = t[0].numpy()
        else:
            arr = (torch.sigmoid(t[0]) if t.shape[0] == 1 else torch.softmax(t, 0)[1]).numpy()
        out[HEAD_ALIASES.get(name, name)] = arr
    return out


def network_outputs(
    model: object,
    image: object,
    window: Sequence[int] | None = None,
    overlap: float = 0.5,
    device: object = None,
) -> dict[str, np.ndarray]:
    """Run ``model`` on one normalised image ``(1, C, *S)`` and return the :func:`to_instances` dict.

    Multi-task networks (DCAN, DeepDistance, ``multitask``) contribute every head (computed inside
    :func:`densemed.nets.all_outputs`); a plain network gives ``{"foreground": ...}``. With
    ``window`` the image is processed by :func:`densemed.infer.sliding_window`.
    """
    import torch

    from densemed.infer.sliding_window import sliding_window
    from densemed.nets import all_outputs

    model.eval()  # type: ignore[attr-defined]
    names: list[tuple[str, int]] = []

    def fwd(x: torch.Tensor) -> torch.Tensor:
        with all_outputs(model):  # type: ignore[arg-type]
            out = model(x)  # type: ignore[operator]
        if isinstance(out, (list, tuple)):
            out = out[0]
        if isinstance(out, torch.Tensor):
            out = {"foreground": out}
        names.clear()
        chans = []
        for name, v in out.items():
            v = v[0] if isinstance(v, (list, tuple)) else v
            names.append((name, v.shape[1]))
            chans.append(v)
        return torch.cat(chans, dim=1)

    x = torch.as_tensor(image)
    with torch.inference_mode():
        if window is None:
            stacked = fwd(x.to(device) if device is not None else x).cpu()
        else:
            stacked = sliding_window(fwd, x, window, overlap, device=device, out_device="cpu")
    heads, start = {}, 0
    for name, c in names:
        heads[name] = stacked[0, start : start + c]
        start += c
    return head_maps(heads)


def choose_h(
    inner_maps: Sequence[np.ndarray],
    truths: Sequence[np.ndarray],
    candidates: Sequence[float] = (0.01, 0.02, 0.05, 0.1, 0.15, 0.2),
    radius: float = 6.0,
    masks: Sequence[np.ndarray | None] | None = None,
) -> tuple[float, dict[float, float]]:
    """Pick DeepDistance's ``h`` maximising the mean detection F1 on validation images.

    Args:
        inner_maps: predicted inner distance maps.
        truths: ground-truth instance maps (their centroids are the true points).
        candidates: h values to try.
        radius: detection matching radius in pixels.
        masks: optional foreground masks restricting the markers.

    Returns:
        ``(best_h, {h: mean F1})``.
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


def _window_overlap(cfg: object) -> tuple[Sequence[int] | None, float]:
    """Sliding-window size (``infer.window``, else ``data.patch_size``) and overlap of a recipe."""
    infer, data = getattr(cfg, "infer", None), getattr(cfg, "data", None)
    return getattr(infer, "window", None) or getattr(data, "patch_size", None), float(getattr(infer, "overlap", 0.5))


def tune_h(
    model: object, cases: Sequence[object], cfg: object, device: object = None, radius: float = 6.0
) -> tuple[float, dict[float, float]] | None:
    """Choose DeepDistance's ``h`` on validation cases; ``None`` when none has instance ids.

    Args:
        model: a network with an ``inner_distance`` head.
        cases: :class:`densemed.data.dataset.Case` objects; their ``instances`` give the true
            centroids, their normalised images are predicted window by window (``infer.window`` or
            ``data.patch_size``, ``infer.overlap``).
        cfg: the recipe (window, overlap, ``infer.instances.threshold`` for the foreground mask).
        device: where the model runs.
        radius: detection matching radius in pixels.

    Returns:
        ``(best_h, {h: mean detection F1})`` as :func:`choose_h`.
    """
    import torch

    cases = [c for c in cases if getattr(c, "instances", None) is not None]
    if not cases:
        return None
    window, overlap = _window_overlap(cfg)
    threshold = float(instance_params(cfg).get("threshold", 0.5))  # type: ignore[arg-type]
    inner, masks = [], []
    for case in cases:
        out = network_outputs(model, torch.from_numpy(case.image)[None], window, overlap, device)  # type: ignore[attr-defined]
        inner.append(out["inner_distance"])
        masks.append(out["foreground"] > threshold if "foreground" in out else None)
    return choose_h(inner, [c.instances for c in cases], radius=radius, masks=masks)  # type: ignore[attr-defined]


#: the post-processing each network gets by default
DEFAULT_METHOD = {"dcan": "dcan", "deepdistance": "deepdistance"}


def default_method(cfg: object) -> str:
    """Default instance-separation method for the network in ``cfg``.

    ``dcan`` / ``deepdistance`` for those networks, ``contour_watershed`` for a multitask net
    with a contour head, else the distance-transform ``watershed``.
    """
    model = dict(getattr(cfg, "model", {}) or {})
    name = str(model.get("name", ""))
    if name in DEFAULT_METHOD:
        return DEFAULT_METHOD[name]
    if name == "multitask" and "contour" in (model.get("tasks") or {}):
        return "contour_watershed"
    return "watershed"


def instance_params(cfg: object) -> dict[str, object]:
    """``infer.instances`` of the recipe (``{method: ..., **params}``), empty when absent."""
    infer = getattr(cfg, "infer", None)
    params = getattr(infer, "instances", None) if infer is not None else None
    return dict(params or {})


def instance_callback(cfg: object, method: str | None = None):  # noqa: ANN201 - a closure
    """The hook of :func:`densemed.infer.predict.predict_paths`: ``f(model, x, probs) -> int32 (*S)``.

    ``method`` (the ``--instance-method`` flag) overrides ``infer.instances.method``, which
    overrides :func:`default_method`. The remaining ``infer.instances`` keys are the method's
    parameters (e.g. ``{method: dcan, t_o: 0.5, t_c: 0.5, min_size: 64, dilate: 3}`` or
    ``{method: deepdistance, h: 0.05}``; with ``h: auto`` training writes the ``h`` chosen on
    validation data here, into the checkpoint's recipe, see :func:`tune_h`).
    """
    params = instance_params(cfg)
    recipe_method = str(params.pop("method", "") or default_method(cfg))
    chosen = method or recipe_method
    if chosen != recipe_method:
        params = {}  # the recipe's parameters belong to its own method
    if chosen not in METHODS:
        raise DensemedError(f"--instance-method: unknown method {chosen!r}; use one of {', '.join(METHODS)}")
    if params.get("h") == "auto":  # a run stopped before training ended, so before h was tuned
        params["h"] = DEFAULT_H
    _check_params(chosen, params)  # a recipe typo fails before any image is predicted
    window, overlap = _window_overlap(cfg)

    def callback(model: object, x: object, probs: np.ndarray) -> np.ndarray:
        import torch

        try:
            device = next(model.parameters()).device  # type: ignore[attr-defined]
        except (StopIteration, AttributeError):
            device = torch.device("cpu")
        if chosen in ("components", "watershed"):
            # the probabilities already computed by predict: foreground = 1 - background
            fg = probs[0] if probs.shape[0] == 1 else 1.0 - probs[0]
            outputs = {"foreground": np.asarray(fg, np.float32)}
        else:
            outputs = network_outputs(model, x, window, overlap, device)
        return to_instances(outputs, chosen, **params)

    return callback
