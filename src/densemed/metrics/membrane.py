"""Membrane (boundary) segmentation scores of the ISBI 2012 EM challenge: pixel error and Rand error.

The ISBI 2012 challenge (Arganda-Carreras et al., Frontiers in Neuroanatomy 9, 2015) scored a
membrane map by comparing the *cells* it encloses with the true cells. Its original scores, the
ones the U-Net paper reports (pixel error 0.0611, Rand error 0.0382), are:

* **Rand error** ``= 1 - max_t F_rand(t)``: the foreground-restricted Rand F-score. With the
  contingency table ``p_ij`` = number of pixels in true cell ``i`` and predicted segment ``j``,
  counted only over pixels that are *cell* in the truth (true membrane pixels, label 0 of the
  truth, are left out), ``a_i = sum_j p_ij``, ``b_j = sum_i p_ij``::

      precision = (sum p_ij^2 - n) / (sum b_j^2 - n)   (pairs together in the prediction that are together in the truth)
      recall    = (sum p_ij^2 - n) / (sum a_i^2 - n)   (pairs together in the truth that stay together)
      F_rand    = 2 precision recall / (precision + recall)

  with ``n`` the number of counted pixels (each sum of squares counts ordered pairs of distinct
  pixels). This is ``skimage.metrics.adapted_rand_error(truth, pred, ignore_labels=(0,))`` (tested
  against it; scikit-image calls our recall its precision and vice versa). The predicted segments
  are the 4-connected components of the pixels predicted as cell; predicted membrane pixels form
  one more segment (label 0 of the prediction, as in scikit-image), so a thick predicted membrane
  inside a true cell counts as merging cells.
* **Pixel error** ``= 1 - max_t F_pixel(t)``: one minus the F-score of the cell pixels
  (positive class = cell, the non-zero label of the challenge's files).

``max_t`` runs over thresholds ``t`` of a membrane probability map ``p`` (cell = ``p < t``;
:data:`THRESHOLDS` = 0.05, 0.10, ..., 0.95), as the challenge's scripts did; a label map is scored as
it is (one threshold). Over a folder of sections (:func:`evaluate_membrane_folders`) the threshold is
**one for all sections** -- the one whose error averaged over the sections is lowest, chosen
separately for the pixel and the Rand error -- as the challenge cut its whole test stack at one
threshold; the best threshold of each section alone (:func:`membrane_scores`) would flatter the
prediction. Documented choices: 4-connectivity for cells (a one-pixel diagonal membrane
still separates two cells), the threshold grid above, and scikit-image's treatment of predicted
membrane pixels.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from densemed.metrics.confusion import confusion, dice

#: thresholds of a membrane probability map (cell = p < t) over which the best F-score is taken
THRESHOLDS = tuple(float(t) for t in np.round(np.arange(0.05, 0.951, 0.05), 2))

_FOUR = ndimage.generate_binary_structure(2, 1)


def cell_segments(cell: np.ndarray) -> np.ndarray:
    """4-connected components (ids 1..N) of a 2D cell mask ``(H, W)``; membrane pixels are 0."""
    return ndimage.label(np.asarray(cell, bool), structure=_FOUR if cell.ndim == 2 else None)[0]


def rand_scores(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Foreground-restricted Rand F-score of two label maps of the same shape.

    Args:
        pred: predicted segment ids (any integers; 0 is a segment like any other).
        truth: true segment ids; pixels with 0 are left out.

    Returns:
        ``{"rand_error", "rand_precision", "rand_recall"}`` (``rand_error = 1 - F``).

    Example:
        >>> t = np.array([[1, 1, 2, 2]]); p = np.array([[1, 1, 1, 1]])  # two true cells merged
        >>> s = rand_scores(p, t)  # 12 ordered pairs together in p, 4 of them together in t
        >>> print(round(s["rand_precision"], 4), s["rand_recall"], s["rand_error"])
        0.3333 1.0 0.5
    """
    pred, truth = np.asarray(pred), np.asarray(truth)
    if pred.shape != truth.shape:
        raise ValueError(f"shapes differ: prediction {pred.shape}, truth {truth.shape}")
    keep = truth != 0
    t = np.unique(truth[keep], return_inverse=True)[1].ravel()
    p = np.unique(pred[keep], return_inverse=True)[1].ravel()
    if t.size == 0:
        return {"rand_error": 0.0, "rand_precision": 1.0, "rand_recall": 1.0}
    n_p = int(p.max()) + 1
    counts = np.bincount(t.astype(np.int64) * n_p + p, minlength=(int(t.max()) + 1) * n_p).astype(np.float64)
    table = counts.reshape(-1, n_p)
    n = float(t.size)  # pairs of distinct pixels: every sum of squares less its n self-pairs
    sum_p2 = float((table**2).sum()) - n
    sum_a2 = float((table.sum(axis=1) ** 2).sum()) - n
    sum_b2 = float((table.sum(axis=0) ** 2).sum()) - n
    if sum_a2 == 0 or sum_b2 == 0:  # only single-pixel segments on one side
        return {"rand_error": 0.0 if sum_a2 == sum_b2 else 1.0, "rand_precision": float(sum_b2 == 0),
                "rand_recall": float(sum_a2 == 0)}
    precision, recall = sum_p2 / sum_b2, sum_p2 / sum_a2
    f = 2 * precision * recall / (precision + recall)
    return {"rand_error": 1.0 - f, "rand_precision": precision, "rand_recall": recall}


def membrane_curve(membrane: np.ndarray, truth_membrane: np.ndarray,
                   thresholds: tuple[float, ...] | None = None) -> list[dict[str, float]]:
    """ISBI 2012 pixel and Rand error of one 2D section at every threshold.

    Args:
        membrane: ``(H, W)`` prediction, one of: a membrane probability map (float), cut at every
            threshold of ``thresholds`` (default :data:`THRESHOLDS`); a membrane mask (boolean or
            {0, 1}), whose cells are its 4-connected components; or a map of cell ids (integers
            beyond {0, 1}, e.g. ``predict --instances --instance-method cells``), whose ids are the
            segments as they are (0 = membrane).
        truth_membrane: ``(H, W)`` boolean true membrane mask.
        thresholds: membrane-probability cuts for a probability map (cell = ``p < t``).

    Returns:
        one ``{"threshold", "pixel_error", "rand_error", "rand_precision", "rand_recall"}`` per
        threshold; a single entry with threshold NaN for a mask or a cell map.
    """
    membrane, truth_membrane = np.asarray(membrane), np.asarray(truth_membrane, bool)
    if membrane.shape != truth_membrane.shape or membrane.ndim != 2:
        raise ValueError(f"need two 2D maps of one shape, got {membrane.shape} and {truth_membrane.shape}")
    truth_cells = cell_segments(~truth_membrane)
    truth_cell = (~truth_membrane).astype(np.int64)
    if is_probability(membrane):
        cuts = [(t, cell_segments(membrane < t)) for t in (THRESHOLDS if thresholds is None else thresholds)]
    elif membrane.dtype == bool or np.isin(membrane, (0, 1)).all():
        cuts = [(float("nan"), cell_segments(~membrane.astype(bool)))]
    else:
        cuts = [(float("nan"), membrane.astype(np.int64))]
    curve = []
    for t, segments in cuts:
        # F-score of the cell pixels = Dice of class 1 of the cell mask (1 when both masks are empty)
        f = float(dice(confusion((segments > 0).astype(np.int64), truth_cell, 2))[1])
        curve.append({"threshold": t, "pixel_error": 1.0 - f, **rand_scores(segments, truth_cells)})
    return curve


def is_probability(membrane: np.ndarray) -> bool:
    """Whether a membrane map holds probabilities (float values other than 0 and 1), not a mask."""
    return bool(np.issubdtype(membrane.dtype, np.floating) and not np.isin(membrane, (0.0, 1.0)).all())


def _best(curves: list[list[dict[str, float]]], metric: str) -> int:
    """Index of the threshold whose error, averaged over the sections, is lowest (first one on ties)."""
    return int(np.argmin(np.mean([[c[metric] for c in curve] for curve in curves], axis=0)))


def membrane_scores(membrane: np.ndarray, truth_membrane: np.ndarray,
                    thresholds: tuple[float, ...] | None = None) -> dict[str, float]:
    """ISBI 2012 pixel and Rand error of one 2D section, each at its best threshold.

    Args: as :func:`membrane_curve`.

    Returns:
        ``{"pixel_error", "rand_error", "rand_precision", "rand_recall", "threshold_pixel",
        "threshold_rand"}``, each error the best over the thresholds (NaN thresholds for a mask).
    """
    curve = membrane_curve(membrane, truth_membrane, thresholds)
    px, rd = curve[_best([curve], "pixel_error")], curve[_best([curve], "rand_error")]
    return {"pixel_error": px["pixel_error"], "rand_error": rd["rand_error"],
            "rand_precision": rd["rand_precision"], "rand_recall": rd["rand_recall"],
            "threshold_pixel": px["threshold"], "threshold_rand": rd["threshold"]}


MEMBRANE_METRICS = ("pixel_error", "rand_error")


def evaluate_membrane_folders(pred_dir: str | Path, truth_dir: str | Path,
                              label_map: Mapping[int, int] | None = None) -> dict[str, Any]:
    """Pixel and Rand error of every predicted section against its truth (``densemed evaluate --membranes``).

    The truth's class 1 (after ``label_map``; ISBI 2012: ``{0: 1, 255: 0}``) is the membrane. A
    prediction is ``STEM_prob.*`` when present (the membrane probability of ``densemed predict
    --probabilities``, scored over :data:`THRESHOLDS`), else the label map ``STEM.*``: a membrane
    mask when its values are 0/1 or 0/255 (1 or 255 = membrane), else a map of cell ids (``densemed
    predict --instances --instance-method cells``; its pixel error counts every id > 0 as cell).

    Returns:
        ``{"metrics", "images": [{"name", "pred", "kind", **scores}], "mean": {metric: mean over images},
        "threshold_pixel", "threshold_rand"}``; ``kind`` is ``probability``, ``mask`` or ``cells``.
    """
    from densemed.data.io import read_image, read_label
    from densemed.errors import DensemedError
    from densemed.metrics.evaluate import _list_files, _to_classes

    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    preds, truths = _list_files(pred_dir, "prediction"), _list_files(truth_dir, "truth")
    if not truths:
        raise DensemedError(f"{truth_dir}: no label maps found")
    images: list[dict[str, Any]] = []
    curves: list[list[dict[str, float]]] = []
    for stem, tpath in truths.items():
        truth = _to_classes(read_label(tpath)[0], tpath, label_map)
        if truth.ndim != 2:
            raise DensemedError(f"{tpath}: membrane scores need 2D sections, got shape {truth.shape}")
        if f"{stem}_prob" in preds:
            path, kind = preds[f"{stem}_prob"], "probability"
            pred = np.squeeze(np.asarray(read_image(path)[0], np.float32))
        elif stem in preds:
            path = preds[stem]
            raw = np.asarray(read_label(path)[0])
            values = set(np.unique(raw).tolist())
            # a membrane mask (0/1 or 0/255) gives cells by connectivity; any other map holds cell ids
            kind = "mask" if values <= {0, 1} or values <= {0, 255} else "cells"
            pred = _to_classes(raw, path, None) == 1 if kind == "mask" else raw.astype(np.int64)
        else:
            raise DensemedError(f"{pred_dir}: no prediction for {stem}")
        if pred.shape != truth.shape:
            raise DensemedError(f"{path}: size {pred.shape} differs from the truth {truth.shape}")
        images.append({"name": stem, "pred": str(path), "kind": kind})
        curves.append(membrane_curve(pred, truth == 1))
    if len({len(c) for c in curves}) > 1:  # some masks among probability maps: a mask scores the same at every cut
        n = max(len(c) for c in curves)
        curves = [c * n if len(c) == 1 else c for c in curves]
    # one threshold for the whole set of sections, as the challenge cut its stack (not one per section)
    px, rd = _best(curves, "pixel_error"), _best(curves, "rand_error")
    for im, curve in zip(images, curves):
        im.update(pixel_error=curve[px]["pixel_error"], rand_error=curve[rd]["rand_error"],
                  rand_precision=curve[rd]["rand_precision"], rand_recall=curve[rd]["rand_recall"])
    mean = {m: float(np.mean([im[m] for im in images])) for m in MEMBRANE_METRICS}
    # the thresholds of a probability map (a mask's entry, repeated above, has threshold NaN)
    cuts = next((c for im, c in zip(images, curves) if im["kind"] == "probability"), curves[0])
    return {"metrics": list(MEMBRANE_METRICS), "images": images, "mean": mean,
            "threshold_pixel": cuts[px]["threshold"], "threshold_rand": cuts[rd]["threshold"]}


def format_membrane_table(result: Mapping[str, Any]) -> str:
    """Plain-text table of :func:`evaluate_membrane_folders`."""
    width = max([len("image"), len("mean")] + [len(im["name"]) for im in result["images"]])
    cols = ["pixel_error", "rand_error", "rand_precision", "rand_recall"]
    lines = ["image".ljust(width) + "".join(f"{c:>16}" for c in cols)]
    lines.append("-" * len(lines[0]))
    for im in result["images"]:
        lines.append(im["name"].ljust(width) + "".join(f"{im[c]:>16.4f}" for c in cols))
    lines.append("-" * len(lines[0]))
    lines.append("mean".ljust(width) + "".join(f"{result['mean'][c]:>16.4f}" for c in cols[:2]))
    lines.append("pixel_error = 1 - F-score of the cell pixels; rand_error = 1 - foreground-restricted Rand "
                 "F-score (ISBI 2012)")
    tp, tr = result.get("threshold_pixel", float("nan")), result.get("threshold_rand", float("nan"))
    if not (np.isnan(tp) and np.isnan(tr)):
        lines.append(f"STEM_prob maps cut at the one membrane-probability threshold best for all sections: "
                     f"pixel {tp:.2f}, Rand {tr:.2f}")
    return "\n".join(lines)
