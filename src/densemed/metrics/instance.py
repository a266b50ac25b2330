"""Object-level (instance) metrics for label maps with one integer id per object.

All functions take a predicted and a ground-truth instance map of the same shape, 2D or 3D
(0 = background, ids need not be contiguous), and count *objects*, not pixels.

* **Object-level F1** (GlaS challenge; Sirinukunwattana et al., Medical Image Analysis 35, 2017):
  a segmented object S is a true positive when it covers at least 50% of the area of the
  ground-truth object G it overlaps most, ``|S ∩ G| >= 0.5 |G|``; matching is one-to-one.
  ``F1 = 2 TP / (2 TP + FP + FN)``.
* **Object-level Dice** (GlaS):
  ``D_obj = 1/2 [ Σ_i γ_i D(G_i, S*(G_i)) + Σ_j σ_j D(G*(S_j), S_j) ]`` with
  ``γ_i = |G_i| / Σ_p |G_p|``, ``σ_j = |S_j| / Σ_q |S_q|``; ``S*(G_i)`` is the segmented object
  overlapping ``G_i`` most (Dice 0 when none overlaps) and ``G*(S_j)`` likewise.
* **Object-level Hausdorff** (GlaS): the same weighting of the Hausdorff distance
  ``H(A, B) = max(sup_a inf_b |a - b|, sup_b inf_a |a - b|)`` between pixel sets; when an object
  overlaps nothing, its partner is the object of the other map at the smallest Hausdorff distance.
  Per image these weigh objects within their image; the challenge scores a test set with the
  weights taken among all objects of the set (``γ_i = |G_i| / Σ`` over every image's objects) and
  TP/FP/FN counted over all images: :func:`set_level`, ``pooled`` in :func:`evaluate_instance_folders`.
  The challenge's evaluation page defines its scores this way, over the set.
* **Aggregated Jaccard Index** (Kumar et al., IEEE TMI 36(7), 2017): for every ground-truth object
  G_i take the predicted object S_j of largest IoU, add ``|G_i ∩ S_j|`` to C and ``|G_i ∪ S_j|`` to U;
  finally add the area of every predicted object never chosen to U. ``AJI = C / U``.
* **Panoptic quality** (Kirillov et al., CVPR 2019): pairs with IoU > 0.5 (unique by construction),
  ``PQ = Σ_TP IoU / (TP + FP/2 + FN/2) = SQ · DQ``.
* **DSB 2018 score** (Kaggle Data Science Bowl 2018; StarDist's "accuracy" averaged over thresholds):
  at every IoU threshold ``t`` in 0.50, 0.55, ..., 0.95 a predicted and a true object match when
  their IoU exceeds ``t`` (one-to-one for ``t >= 0.5``), ``acc(t) = TP / (TP + FP + FN)``; the score
  of an image is the mean of ``acc(t)`` over the ten thresholds. ``dq`` (PQ's detection quality) is
  the object F1 at IoU 0.5, ``2 TP / (2 TP + FP + FN)`` with the same matching.
* **Descriptor error** (shape; FourierNet, Cansiz et al. 2023): over the object-F1 matches, the mean
  absolute difference of the normalised Fourier amplitudes ``A_n / a_0`` (:mod:`densemed.metrics.shape`), 2D.
* **Point detection**: predicted points match true points one-to-one (Hungarian assignment,
  :func:`scipy.optimize.linear_sum_assignment`) when closer than ``radius``; precision, recall, F1.

Empty maps (documented choices): when both maps have no object every score is perfect (1, or 0 for
Hausdorff); when exactly one is empty, F1 / Dice / AJI / PQ are 0 and the Hausdorff is ``inf``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment


def _relabel(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ids 1..N in the order of the sorted original ids; also the pixel count of each (index 0 = bg)."""
    ids, inverse = np.unique(x, return_inverse=True)
    inverse = inverse.reshape(x.shape)
    if ids[0] != 0:  # no background pixel: shift so that 0 stays reserved for background
        inverse = inverse + 1
        ids = np.concatenate([[0], ids])
    areas = np.bincount(inverse.ravel(), minlength=len(ids))
    return inverse, areas


def overlap_matrix(pred: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel counts of every (truth object, predicted object) pair.

    Returns:
        ``(inter, truth_areas, pred_areas)``: ``inter[i, j] = |G_i ∩ S_j|`` of shape
        ``(N_truth, N_pred)`` (background excluded), and the object areas.
    """
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} differs from truth shape {truth.shape}")
    p, pa = _relabel(np.asarray(pred))
    t, ta = _relabel(np.asarray(truth))
    n_p, n_t = len(pa), len(ta)
    joint = np.bincount((t.ravel().astype(np.int64) * n_p + p.ravel()), minlength=n_t * n_p).reshape(n_t, n_p)
    return joint[1:, 1:], ta[1:], pa[1:]


def _iou(inter: np.ndarray, ta: np.ndarray, pa: np.ndarray) -> np.ndarray:
    union = ta[:, None] + pa[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def object_f1(pred: np.ndarray, truth: np.ndarray, min_coverage: float = 0.5) -> dict[str, float]:
    """GlaS object-level detection F1 (see module docstring).

    Returns:
        ``{"tp", "fp", "fn", "precision", "recall", "f1"}``.
    """
    return _object_f1(*overlap_matrix(pred, truth), min_coverage)


def _matches(inter: np.ndarray, ta: np.ndarray, pa: np.ndarray, min_coverage: float = 0.5) -> list[tuple[int, int]]:
    """GlaS one-to-one matching: ``(truth index, prediction index)`` pairs, the true positives of F1."""
    n_t, n_p = len(ta), len(pa)
    pairs: list[tuple[int, int]] = []
    if n_t and n_p:
        best = inter.argmax(axis=0)  # for every S_j: the G it overlaps most
        taken = np.zeros(n_t, bool)
        # most-covering detections first, so one-to-one matching keeps the better one
        cover = inter[best, np.arange(n_p)] / ta[best]
        for j in np.argsort(-cover, kind="stable"):
            i = best[j]
            if inter[i, j] > 0 and cover[j] >= min_coverage and not taken[i]:
                taken[i] = True
                pairs.append((int(i), int(j)))
    return pairs


def _object_f1(
    inter: np.ndarray, ta: np.ndarray, pa: np.ndarray, min_coverage: float = 0.5
) -> dict[str, float]:
    tp = len(_matches(inter, ta, pa, min_coverage))
    return _prf(tp, len(pa) - tp, len(ta) - tp)


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    if tp + fp + fn == 0:
        return {"tp": 0, "fp": 0, "fn": 0, "precision": 1.0, "recall": 1.0, "f1": 1.0}
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * tp / (2 * tp + fp + fn)
    return {"tp": tp, "fp": fp, "fn": fn, "precision": precision, "recall": recall, "f1": f1}


def object_dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """GlaS object-level Dice (see module docstring)."""
    return _object_dice(*overlap_matrix(pred, truth))


def _object_dice(inter: np.ndarray, ta: np.ndarray, pa: np.ndarray) -> float:
    if len(ta) == 0 and len(pa) == 0:
        return 1.0
    if len(ta) == 0 or len(pa) == 0:
        return 0.0
    return _weighted_mean(_dice_terms(inter, ta, pa))


def _dice_terms(inter: np.ndarray, ta: np.ndarray, pa: np.ndarray) -> np.ndarray:
    """``[Σ_i |G_i| D(G_i, S*), Σ_i |G_i|, Σ_j |S_j| D(G*, S_j), Σ_j |S_j|]``: the object Dice before weighting.

    Summed over images these give the set-level object Dice of the GlaS challenge (:func:`set_level`).
    """
    terms = np.array([0.0, float(ta.sum()), 0.0, float(pa.sum())])
    if len(ta) and len(pa):
        dice = 2 * inter / (ta[:, None] + pa[None, :])
        terms[0] = np.sum(ta * dice[np.arange(len(ta)), inter.argmax(axis=1)])  # S*(G_i); Dice 0 without overlap
        terms[2] = np.sum(pa * dice[inter.argmax(axis=0), np.arange(len(pa))])
    return terms


def _weighted_mean(terms: np.ndarray) -> float:
    """``1/2 (Σ_g / |G| + Σ_s / |S|)`` of summed terms (:func:`_dice_terms`); a side without area adds 0."""
    g = terms[0] / terms[1] if terms[1] else 0.0
    s = terms[2] / terms[3] if terms[3] else 0.0
    return float(0.5 * (g + s))


def _pair_hausdorff(a: np.ndarray, b: np.ndarray, spacing: Sequence[float] | None) -> float:
    """Hausdorff distance between two boolean masks, computed inside their joint bounding box.

    Exact: the point of B nearest to any point lies in B, hence inside the joint box.
    """
    box = ndimage.find_objects((a | b).astype(np.int8))[0]
    a, b = a[box], b[box]
    d_to_b = ndimage.distance_transform_edt(~b, sampling=spacing)
    d_to_a = ndimage.distance_transform_edt(~a, sampling=spacing)
    return float(max(d_to_b[a].max(), d_to_a[b].max()))


def object_hausdorff(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None = None) -> float:
    """GlaS object-level Hausdorff distance in pixels (or ``spacing`` units); lower is better."""
    return _hausdorff_with_terms(pred, truth, spacing, overlap_matrix(pred, truth))[0]


def _hausdorff_with_terms(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None,
                          overlap: tuple[np.ndarray, np.ndarray, np.ndarray]) -> tuple[float, np.ndarray | None]:
    """The object Hausdorff of one image and its :func:`_hausdorff_terms`.

    The terms are None when a map is empty: the distance is then 0 when both are, ``inf`` when one is.
    """
    _, ta, pa = overlap
    if len(ta) == 0 or len(pa) == 0:
        return (0.0 if len(ta) == len(pa) else float("inf")), None
    terms = _hausdorff_terms(pred, truth, spacing, overlap)
    return _weighted_mean(terms), terms


def _hausdorff_terms(pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float] | None,
                     overlap: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """The object Hausdorff before weighting, like :func:`_dice_terms`; both maps must hold objects."""
    inter, ta, pa = overlap
    p, _ = _relabel(np.asarray(pred))
    t, _ = _relabel(np.asarray(truth))
    cache: dict[tuple[int, int], float] = {}

    def haus(i: int, j: int) -> float:  # 0-based truth / prediction object indices
        if (i, j) not in cache:
            cache[i, j] = _pair_hausdorff(t == i + 1, p == j + 1, spacing)
        return cache[i, j]

    def partner(i: int, row: np.ndarray, n_other: int, pair) -> float:
        # the most-overlapping object; without overlap the nearest one in Hausdorff distance
        if row.max() > 0:
            return pair(i, int(row.argmax()))
        return min(pair(i, k) for k in range(n_other))

    def haus_t(j: int, i: int) -> float:
        return haus(i, j)

    sum_g = sum(ta[i] * partner(i, inter[i], len(pa), haus) for i in range(len(ta)))
    sum_s = sum(pa[j] * partner(j, inter[:, j], len(ta), haus_t) for j in range(len(pa)))
    return np.array([sum_g, float(ta.sum()), sum_s, float(pa.sum())])


def set_level(terms: Sequence[np.ndarray]) -> float:
    """The GlaS challenge's object Dice or Hausdorff of a whole set from per-image terms.

    The challenge weighs every object by its area among *all* objects of the test set (its
    ``𝒢 = ∪_a 𝒢_a``), so a large gland counts more than a small one wherever it lies; the per-image
    scores weigh objects within their image and the images equally. ``terms``: one
    :func:`_dice_terms` / :func:`_hausdorff_terms` array per image.
    """
    return _weighted_mean(np.sum(terms, axis=0)) if len(terms) else float("nan")


def aggregated_jaccard(pred: np.ndarray, truth: np.ndarray) -> float:
    """Aggregated Jaccard Index (Kumar et al. 2017)."""
    return _aji(*overlap_matrix(pred, truth))


def _aji(inter: np.ndarray, ta: np.ndarray, pa: np.ndarray) -> float:
    if len(ta) == 0 and len(pa) == 0:
        return 1.0
    if len(ta) == 0 or len(pa) == 0:
        return 0.0
    iou = _iou(inter, ta, pa)
    c = u = 0.0
    used = np.zeros(len(pa), bool)
    for i in range(len(ta)):
        j = int(iou[i].argmax())
        if inter[i, j] == 0:  # no overlapping prediction: the whole G_i counts in the union only
            u += ta[i]
            continue
        c += inter[i, j]
        u += ta[i] + pa[j] - inter[i, j]
        used[j] = True
    u += pa[~used].sum()
    return float(c / u) if u else 1.0


def panoptic_quality(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Panoptic quality ``{"pq", "sq", "dq", "tp", "fp", "fn"}`` with IoU > 0.5 matching."""
    return _pq(*overlap_matrix(pred, truth))


def _pq(inter: np.ndarray, ta: np.ndarray, pa: np.ndarray) -> dict[str, float]:
    if len(ta) == 0 and len(pa) == 0:
        return {"pq": 1.0, "sq": 1.0, "dq": 1.0, "tp": 0, "fp": 0, "fn": 0}
    iou = _iou(inter, ta, pa)  # (0, M) or (N, 0) when one side has no object
    matched = iou > 0.5  # at most one per row and column: two sets with IoU > 0.5 with one object overlap
    tp = int(matched.sum())
    fp, fn = len(pa) - tp, len(ta) - tp
    sq = float(iou[matched].mean()) if tp else 0.0
    dq = tp / (tp + 0.5 * fp + 0.5 * fn)
    return {"pq": sq * dq, "sq": sq, "dq": dq, "tp": tp, "fp": fp, "fn": fn}


#: IoU thresholds of the DSB 2018 score
DSB_THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.5, 0.951, 0.05), 2))


def dsb_score(pred: np.ndarray, truth: np.ndarray) -> float:
    """DSB 2018 score of one image: ``TP / (TP + FP + FN)`` averaged over IoU thresholds 0.50:0.05:0.95.

    Example:
        >>> t = np.array([[1, 1, 1, 1, 0, 2]]); p = np.array([[1, 1, 1, 0, 0, 0]])  # IoU 0.75 and a miss
        >>> print(round(dsb_score(p, t), 4))  # acc 1/2 at t = 0.50 .. 0.70, 0 from 0.75 on (IoU must exceed t)
        0.25
    """
    return _dsb(*overlap_matrix(pred, truth))


def _dsb(inter: np.ndarray, ta: np.ndarray, pa: np.ndarray) -> float:
    if len(ta) == 0 and len(pa) == 0:
        return 1.0
    iou = _iou(inter, ta, pa)
    accs = []
    for t in DSB_THRESHOLDS:
        tp = int(np.count_nonzero(iou > t))  # t >= 0.5: at most one match per row and column
        accs.append(tp / (len(ta) + len(pa) - tp))
    return float(np.mean(accs))


def centroids(instances: np.ndarray) -> np.ndarray:
    """Centroid ``(N, ndim)`` of every object, in the order of the sorted ids."""
    ids = np.unique(instances)
    ids = ids[ids != 0]
    if len(ids) == 0:
        return np.zeros((0, instances.ndim))
    return np.asarray(ndimage.center_of_mass(np.ones(instances.shape), instances, ids), dtype=float).reshape(
        len(ids), instances.ndim
    )


def _points(p: np.ndarray) -> np.ndarray:
    return np.asarray(p, float).reshape(len(p), -1) if len(p) else np.zeros((0, 1))


def detection_scores(pred_points: np.ndarray, true_points: np.ndarray, radius: float) -> dict[str, float]:
    """Precision, recall and F1 of point detections with one-to-one matching within ``radius``.

    Args:
        pred_points: ``(N, ndim)`` detected positions.
        true_points: ``(M, ndim)`` annotated positions.
        radius: largest distance (inclusive) at which a detection counts as a hit.

    Returns:
        ``{"tp", "fp", "fn", "precision", "recall", "f1"}``.
    """
    pred_points, true_points = _points(pred_points), _points(true_points)
    tp = 0
    if len(pred_points) and len(true_points):
        dist = np.linalg.norm(pred_points[:, None, :] - true_points[None, :, :], axis=-1)
        # pairs beyond the radius get a prohibitive cost so the assignment maximises the hits
        cost = np.where(dist <= radius, dist, 1e9)
        rows, cols = linear_sum_assignment(cost)
        tp = int(np.sum(dist[rows, cols] <= radius))
    return _prf(tp, len(pred_points) - tp, len(true_points) - tp)


def instance_scores(
    pred: np.ndarray,
    truth: np.ndarray,
    spacing: Sequence[float] | None = None,
    hausdorff: bool = True,
    shape: bool = True,
    terms: dict[str, np.ndarray] | None = None,
) -> dict[str, float]:
    """Every object-level score of one prediction, flat, for ``densemed evaluate --instances``.

    ``terms``, when given, receives what a set's pooled scores add up: the TP/FP/FN counts of
    ``object_f1`` and the unweighted sums of ``object_dice`` and (where both maps hold objects)
    ``object_hausdorff`` for :func:`set_level`.

    Keys: ``object_f1, object_precision, object_recall, object_dice, object_hausdorff, aji, pq,
    sq, dq (F1 at IoU 0.5), dsb_score, n_pred, n_true`` and, for 2D maps with ``shape``, ``descriptor_error``
    (:func:`densemed.metrics.shape.descriptor_error` over the F1 matches; NaN without a match).
    """
    overlap = overlap_matrix(pred, truth)  # once: the costly part on large maps
    f1 = _object_f1(*overlap)
    if terms is not None:  # the sums a folder's pooled (set-level) scores add up
        terms["object_f1"] = np.array([f1["tp"], f1["fp"], f1["fn"]])
        terms["object_dice"] = _dice_terms(*overlap)
    pq = _pq(*overlap)
    out = {
        "object_f1": f1["f1"],
        "object_precision": f1["precision"],
        "object_recall": f1["recall"],
        "object_dice": _object_dice(*overlap),
        "aji": _aji(*overlap),
        "pq": pq["pq"],
        "sq": pq["sq"],
        "dq": pq["dq"],
        "dsb_score": _dsb(*overlap),
        "n_pred": float(len(overlap[2])),
        "n_true": float(len(overlap[1])),
    }
    if hausdorff:
        out["object_hausdorff"], hterms = _hausdorff_with_terms(pred, truth, spacing, overlap)
        if terms is not None and hterms is not None:
            terms["object_hausdorff"] = hterms
    if shape and np.ndim(truth) == 2:
        from densemed.metrics.shape import descriptor_error, match_objects

        out["descriptor_error"] = descriptor_error(pred, truth, match_objects(pred, truth, overlap), spacing=spacing)
    return out


# ------------------------------------------------------------------------------------ folders
INSTANCE_METRICS = ("object_f1", "object_dice", "object_hausdorff", "descriptor_error", "aji", "pq", "dq",
                    "dsb_score")


def evaluate_instance_folders(
    pred_dir: str | Path, truth_dir: str | Path, hausdorff: bool = True
) -> dict[str, Any]:
    """Object-level scores of a folder of predicted instance maps against true instance maps.

    Every truth file needs a prediction with the same stem. The truth must hold instance ids
    (:func:`densemed.targets.check_instances`: a binary mask is an error naming the file).

    Returns:
        A JSON-serialisable dict::

            {"metrics": [...], "images": [{"name", "pred", "truth", **instance_scores}],
             "mean": {metric: mean over images}, "pooled": {"object_f1", "precision", "recall"},
             "unmatched_predictions": [...]}

        ``pooled`` holds the GlaS challenge's scores of the whole set: F1 from TP/FP/FN counted
        over all images, object Dice and Hausdorff with every object weighted by its area among all
        objects of the set (:func:`set_level`; the Hausdorff over images where both maps hold
        objects); ``mean`` averages per-image values (an infinite Hausdorff, from an image with no prediction,
        is left out of the mean and counted in ``inf_count``).
    """
    from densemed.data.io import read_label
    from densemed.errors import DensemedError
    from densemed.metrics.evaluate import _list_files
    from densemed.targets.validate import check_instances

    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    preds, truths = _list_files(pred_dir, "prediction"), _list_files(truth_dir, "truth")
    if not truths:
        raise DensemedError(f"{truth_dir}: no label maps found")
    missing = [s for s in truths if s not in preds]
    if missing:
        raise DensemedError(f"{pred_dir}: no prediction for {', '.join(missing[:5])}")
    images = []
    set_terms: dict[str, list[np.ndarray]] = {"object_f1": [], "object_dice": [], "object_hausdorff": []}
    for stem, tpath in truths.items():
        truth, tmeta = read_label(tpath)
        truth = check_instances(truth, tpath)
        pred, _ = read_label(preds[stem])
        pred = check_instances(pred, preds[stem])
        if pred.shape != truth.shape:
            raise DensemedError(f"{preds[stem]}: size {pred.shape} differs from the truth {truth.shape}")
        terms: dict[str, np.ndarray] = {}
        scores = instance_scores(pred, truth, tmeta.spacing, hausdorff=hausdorff, terms=terms)
        for key, value in terms.items():
            set_terms[key].append(value)
        images.append({"name": stem, "pred": str(preds[stem]), "truth": str(tpath), **scores})
    metrics = [m for m in INSTANCE_METRICS if (hausdorff or m != "object_hausdorff")
               and all(m in im for im in images)]  # descriptor_error: 2D only
    mean, inf_count = {}, {}
    for m in metrics + ["object_precision", "object_recall", "sq"]:
        vals = np.array([im[m] for im in images], float)
        finite = vals[np.isfinite(vals)]
        mean[m] = float(finite.mean()) if finite.size else None
        inf_count[m] = int((~np.isfinite(vals)).sum())
    tp, fp, fn = (int(v) for v in np.sum(set_terms["object_f1"], axis=0))  # truths is never empty here
    pooled = _prf(tp, fp, fn)
    return {
        "metrics": metrics,
        "images": images,
        "mean": mean,
        "inf_count": inf_count,
        "pooled": {"object_f1": pooled["f1"], "precision": pooled["precision"], "recall": pooled["recall"],
                   "tp": tp, "fp": fp, "fn": fn, "object_dice": set_level(set_terms["object_dice"]),
                   **({"object_hausdorff": set_level(set_terms["object_hausdorff"])} if hausdorff else {})},
        "unmatched_predictions": sorted(s for s in preds if s not in truths),
    }


def format_instance_table(result: Mapping[str, Any]) -> str:
    """Plain-text table of :func:`evaluate_instance_folders`: one row per image, then the means."""
    metrics = list(result["metrics"])
    cols = metrics + ["n_pred", "n_true"]
    width = max([len("image")] + [len(im["name"]) for im in result["images"]] + [len("mean")])
    head = "image".ljust(width) + "".join(f"{c:>18}" for c in cols)
    lines = [head, "-" * len(head)]

    def fmt(v: Any) -> str:
        return f"{'nan':>18}" if v is None else f"{v:>18.4f}"

    for im in result["images"]:
        lines.append(im["name"].ljust(width) + "".join(fmt(im[c]) for c in cols))
    lines.append("-" * len(head))
    means = result["mean"]
    blank = f"{'':>18}"
    lines.append("mean".ljust(width) + "".join(fmt(means.get(c)) if c in means else blank for c in cols))
    p = result["pooled"]
    lines.append(
        f"pooled object F1 {p['object_f1']:.4f} (precision {p['precision']:.4f}, recall {p['recall']:.4f}; "
        f"TP {p['tp']}, FP {p['fp']}, FN {p['fn']})"
        + (f", set-level object Dice {p['object_dice']:.4f}" if "object_dice" in p else "")
        + (f", object Hausdorff {p['object_hausdorff']:.4f}" if "object_hausdorff" in p else "")
        + " (GlaS challenge: all images pooled)"
    )
    if result["inf_count"].get("object_hausdorff"):
        n_inf = result["inf_count"]["object_hausdorff"]
        lines.append(f"object_hausdorff: {n_inf} image(s) with an empty side left out of the mean")
    return "\n".join(lines)
