"""Shape score of an instance segmentation: the Fourier descriptor error of matched objects.

FourierNet (Cansiz et al., IEEE JBHI 27(2), 2023; doi 10.1109/JBHI.2022.3225425) describes each
object's shape by the harmonic amplitudes of its centroid-distance function
(:mod:`densemed.targets.fourier`). The shape error of a prediction is, over the matched pairs
``(S_k, G_k)``, ``k = 1..K``, of predicted and true objects,

    descriptor_error = 1/K sum_k 1/N sum_{n=1..N} | A_n(S_k) / a_0(S_k) - A_n(G_k) / a_0(G_k) |

with the scale-invariant normalised amplitudes ``A_n / a_0`` (``N = 8`` by default): 0 for
identical shapes, independent of size, position and orientation; lower is better. Objects of
fewer than 4 pixels count as discs (all amplitudes 0).

Matching (:func:`match_objects`) reuses the GlaS object-F1 matching of
:mod:`densemed.metrics.instance`: a predicted object is paired with the true object it overlaps
most when it covers at least half of it, one-to-one, so the score is taken over the true
positives of the object F1. Unmatched objects are the F1's business, not the shape score's. With no
pair the error is undefined: NaN (left out of folder means). 2D only.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from densemed.metrics.instance import _matches, overlap_matrix
from densemed.targets import fourier


def _object_ids(x: np.ndarray) -> np.ndarray:
    """Sorted non-zero ids: index i of :func:`overlap_matrix` is ``_object_ids(x)[i]``."""
    ids = np.unique(x)
    return ids[ids != 0]


def match_objects(
    pred: np.ndarray,
    truth: np.ndarray,
    overlap: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
    min_coverage: float = 0.5,
) -> list[tuple[int, int]]:
    """``(pred_id, true_id)`` pairs of the GlaS one-to-one matching (object-F1 true positives).

    Args:
        pred: predicted instance map.
        truth: true instance map, same shape.
        overlap: :func:`densemed.metrics.instance.overlap_matrix` of the two maps, if already computed.
        min_coverage: a prediction must cover this fraction of the true object.

    Example:
        >>> t = np.zeros((4, 8), int); t[:, :4] = 1; t[:, 4:] = 2
        >>> print(match_objects(np.where(t == 1, 5, 0), t))
        [(5, 1)]
    """
    inter, ta, pa = overlap if overlap is not None else overlap_matrix(pred, truth)
    pred_ids, true_ids = _object_ids(np.asarray(pred)), _object_ids(np.asarray(truth))
    pairs = _matches(inter, ta, pa, min_coverage)
    return sorted((int(pred_ids[j]), int(true_ids[i])) for i, j in pairs)


def descriptor_error(
    pred_instances: np.ndarray,
    true_instances: np.ndarray,
    matches: Sequence[tuple[int, int]],
    n_harmonics: int = 8,
    spacing: Sequence[float] | None = None,
) -> float:
    """Mean absolute difference of the normalised amplitudes ``A_n / a_0`` over matched pairs.

    Args:
        pred_instances: predicted 2D instance map.
        true_instances: true 2D instance map.
        matches: ``(pred_id, true_id)`` pairs, e.g. from :func:`match_objects`.
        n_harmonics: ``N``.
        spacing: pixel size ``(row, col)``; default 1.

    Returns:
        The error averaged over harmonics and pairs; NaN without pairs.

    Example:
        >>> lab = np.zeros((20, 20), int); lab[3:15, 4:12] = 1
        >>> print(descriptor_error(lab, lab, [(1, 1)]))
        0.0
    """
    if not len(matches):
        return float("nan")
    wanted_pred = {p for p, _ in matches}
    wanted_true = {t for _, t in matches}
    pred = fourier.encode(np.where(np.isin(pred_instances, list(wanted_pred)), pred_instances, 0), n_harmonics,
                          spacing)
    true = fourier.encode(np.where(np.isin(true_instances, list(wanted_true)), true_instances, 0), n_harmonics,
                          spacing)
    errors = []
    for p, t in matches:
        if p not in pred or t not in true:
            raise ValueError(f"descriptor_error: pair ({p}, {t}) names an id missing from its map")
        dp, dt = pred[p], true[t]
        errors.append(np.mean(np.abs(dp.amplitudes / dp.a0 - dt.amplitudes / dt.a0)))
    return float(np.mean(errors))
