r"""Per-class confusion counts for integer label maps, and the overlap scores made from them.

For class ``c`` with prediction ``P`` and truth ``T`` (sets of pixels/voxels):

* ``TP = |P ∩ T|``, ``FP = |P \ T|``, ``FN = |T \ P|``, ``TN = N - TP - FP - FN``
* Dice (Sørensen 1948; Dice 1945): ``D = 2 TP / (2 TP + FP + FN) = 2|P ∩ T| / (|P| + |T|)``
* IoU / Jaccard (Jaccard 1912): ``J = TP / (TP + FP + FN) = |P ∩ T| / |P ∪ T|``, and ``J = D / (2 - D)``
* precision ``TP / (TP + FP)``, recall (sensitivity) ``TP / (TP + FN)``

Empty-class convention (documented choice; every score is NaN-free): a ratio whose denominator
is 0 is ``empty_score`` (default 1.0) when the class is absent from both prediction and truth
(nothing to find and nothing wrongly found: a perfect answer), and 0.0 otherwise (precision with
nothing predicted but something to find; recall with nothing to find but something predicted).
Dice and IoU only have a zero denominator in the first case. MONAI's ``compute_dice`` differs: with
``ignore_empty=True`` it gives NaN whenever the truth is empty; pass ``empty_score=float("nan")``
to exclude both-empty classes from a ``nanmean`` instead.

Counts are computed in one pass with ``bincount`` over ``num_classes * truth + pred`` (the
flattened confusion matrix), in numpy or in torch on the tensors' own device, so the training
loop's validation never leaves the GPU until it reads the final numbers.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

Array = np.ndarray | torch.Tensor


class ConfusionStats(NamedTuple):
    """True/false positives/negatives per class, each ``(C,)`` or ``(B, C)`` int64.

    Numpy arrays for numpy inputs, tensors (on the inputs' device) for torch inputs.
    """

    tp: Array
    fp: Array
    fn: Array
    tn: Array


def to_labels(logits: torch.Tensor) -> torch.Tensor:
    """Class indices from network logits.

    One channel means a sigmoid output (foreground where the logit is > 0, i.e. p > 0.5);
    several channels a softmax output (argmax).

    Shape:
        ``(B, C, *S)`` float -> ``(B, 1, *S)`` int64.
    """
    if logits.shape[1] == 1:
        return (logits > 0).long()
    return logits.argmax(dim=1, keepdim=True)


def confusion(pred: Array, truth: Array, num_classes: int, per_image: bool = False) -> ConfusionStats:
    """Per-class TP/FP/FN/TN counts of an integer label map against the truth.

    Args:
        pred: predicted class indices in ``[0, num_classes)``.
        truth: true class indices in ``[0, num_classes)``, same shape as ``pred``.
        num_classes: number of classes ``C`` (2 for a binary task: background and foreground).
        per_image: count each item of the first axis separately (the batch axis).

    Returns:
        :class:`ConfusionStats` with fields of shape ``(C,)``, or ``(B, C)`` with ``per_image``.

    Shape:
        ``pred``, ``truth``: ``(B, 1, *S)`` or ``(*S)``, numpy arrays or torch tensors (any device).

    Raises:
        ValueError: shapes differ, or a value lies outside ``[0, num_classes)``.

    Example:
        >>> truth = np.array([[0, 1], [1, 1]])
        >>> pred = np.array([[1, 1], [0, 1]])
        >>> s = confusion(pred, truth, num_classes=2)
        >>> print(s.tp, s.fp, s.fn, s.tn)
        [0 2] [1 1] [1 1] [2 0]
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if tuple(pred.shape) != tuple(truth.shape):
        raise ValueError(f"pred and truth shapes differ: {tuple(pred.shape)} vs {tuple(truth.shape)}")
    c2 = num_classes * num_classes
    if isinstance(pred, torch.Tensor) or isinstance(truth, torch.Tensor):
        pred_t = torch.as_tensor(pred)
        truth_t = torch.as_tensor(truth, device=pred_t.device)
        _check_range_torch(pred_t, truth_t, num_classes)
        # int64 keeps num_classes * truth + pred exact for any class count.
        idx = num_classes * truth_t.long() + pred_t.long()
        batch = idx.shape[0] if per_image else 1
        if per_image:
            idx = idx + c2 * torch.arange(batch, device=idx.device).view(-1, *([1] * (idx.ndim - 1)))
        mat = torch.bincount(idx.reshape(-1), minlength=batch * c2).view(batch, num_classes, num_classes)
    else:
        pred_n = np.asarray(pred)
        truth_n = np.asarray(truth)
        _check_range_numpy(pred_n, truth_n, num_classes)
        idx = num_classes * truth_n.astype(np.int64) + pred_n.astype(np.int64)
        batch = idx.shape[0] if per_image else 1
        if per_image:
            idx = idx + c2 * np.arange(batch).reshape(-1, *([1] * (idx.ndim - 1)))
        mat = np.bincount(idx.reshape(-1), minlength=batch * c2).reshape(batch, num_classes, num_classes)
    # mat[b, t, p]: pixels of true class t predicted as p.
    tp = mat.diagonal(dim1=1, dim2=2) if isinstance(mat, torch.Tensor) else mat.diagonal(axis1=1, axis2=2)
    fp = mat.sum(1) - tp  # column sums: everything predicted as p
    fn = mat.sum(2) - tp  # row sums: everything truly t
    total = mat.sum((1, 2))[:, None]
    tn = total - tp - fp - fn
    if not per_image:
        tp, fp, fn, tn = tp[0], fp[0], fn[0], tn[0]
    if isinstance(mat, np.ndarray):
        tp, fp, fn, tn = (np.ascontiguousarray(a, dtype=np.int64) for a in (tp, fp, fn, tn))
    else:
        tp, fp, fn, tn = (a.contiguous() for a in (tp, fp, fn, tn))
    return ConfusionStats(tp, fp, fn, tn)


def _check_range_numpy(pred: np.ndarray, truth: np.ndarray, num_classes: int) -> None:
    for name, a in (("pred", pred), ("truth", truth)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} values must lie in [0, {num_classes}), got [{a.min()}, {a.max()}]")


def _check_range_torch(pred: torch.Tensor, truth: torch.Tensor, num_classes: int) -> None:
    if pred.numel() == 0:
        return
    # One device sync for all four bounds.
    lo_hi = torch.stack([pred.min(), pred.max(), truth.min(), truth.max()]).tolist()
    if lo_hi[0] < 0 or lo_hi[1] >= num_classes or lo_hi[2] < 0 or lo_hi[3] >= num_classes:
        raise ValueError(
            f"pred/truth values must lie in [0, {num_classes}), got pred [{lo_hi[0]}, {lo_hi[1]}], "
            f"truth [{lo_hi[2]}, {lo_hi[3]}]"
        )


def _ratio(num: Array, den: Array, both_empty: Array, empty_score: float) -> Array:
    """``num / den`` where ``den > 0``; else ``empty_score`` if ``both_empty`` else 0."""
    if isinstance(num, torch.Tensor):
        num_f, den_f = num.double(), den.double()
        safe = torch.where(den_f > 0, den_f, torch.ones_like(den_f))
        fallback = torch.where(
            both_empty, torch.full_like(num_f, empty_score), torch.zeros_like(num_f)
        )
        return torch.where(den_f > 0, num_f / safe, fallback)
    num_f, den_f = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    out = np.where(both_empty, empty_score, 0.0)
    np.divide(num_f, den_f, out=out, where=den_f > 0)
    return out


def _absent(stats: ConfusionStats) -> Array:
    """True where the class is in neither prediction nor truth."""
    return (stats.tp + stats.fp + stats.fn) == 0


def dice(stats: ConfusionStats, empty_score: float = 1.0) -> Array:
    """Dice ``2TP / (2TP + FP + FN)`` per class; ``empty_score`` where the class is absent from both.

    Returns float64 of the counts' shape (``(C,)`` or ``(B, C)``), numpy or torch like ``stats``.
    """
    return _ratio(2 * stats.tp, 2 * stats.tp + stats.fp + stats.fn, _absent(stats), empty_score)


def iou(stats: ConfusionStats, empty_score: float = 1.0) -> Array:
    """IoU (Jaccard) ``TP / (TP + FP + FN)`` per class; ``empty_score`` where absent from both."""
    return _ratio(stats.tp, stats.tp + stats.fp + stats.fn, _absent(stats), empty_score)


def precision(stats: ConfusionStats, empty_score: float = 1.0) -> Array:
    """Precision ``TP / (TP + FP)``; nothing predicted: ``empty_score`` if truth is empty too, else 0."""
    return _ratio(stats.tp, stats.tp + stats.fp, _absent(stats), empty_score)


def recall(stats: ConfusionStats, empty_score: float = 1.0) -> Array:
    """Recall ``TP / (TP + FN)``; nothing to find: ``empty_score`` if nothing predicted either, else 0."""
    return _ratio(stats.tp, stats.tp + stats.fn, _absent(stats), empty_score)


class ConfusionAccumulator:
    """Sums confusion counts over batches; scores the pooled counts.

    Pooled (global) scores weight every pixel equally, as in one big image; per-image means are
    what :func:`densemed.metrics.evaluate.evaluate_folders` reports.

    Args:
        num_classes: number of classes ``C``.

    Example:
        >>> acc = ConfusionAccumulator(2)
        >>> acc.update(torch.tensor([[0, 1], [1, 1]]), torch.tensor([[0, 1], [0, 1]]))
        >>> print(acc.compute()["dice"].round(3).tolist())
        [0.667, 0.8]
    """

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.reset()

    def reset(self) -> None:
        """Forget all counts."""
        self._counts: Array | None = None  # (4, C): tp, fp, fn, tn

    def update(self, pred: Array, truth: Array) -> None:
        """Add the counts of one batch (class indices, see :func:`confusion`; use :func:`to_labels`)."""
        s = confusion(pred, truth, self.num_classes)
        counts = torch.stack(tuple(s)) if isinstance(s.tp, torch.Tensor) else np.stack(tuple(s))
        self._counts = counts if self._counts is None else self._counts + counts

    @property
    def stats(self) -> ConfusionStats:
        """The summed counts as numpy ``(C,)`` arrays (zeros before any update)."""
        if self._counts is None:
            return ConfusionStats(*np.zeros((4, self.num_classes), dtype=np.int64))
        counts = self._counts.cpu().numpy() if isinstance(self._counts, torch.Tensor) else self._counts
        return ConfusionStats(*counts)

    def compute(self, empty_score: float = 1.0) -> dict[str, np.ndarray]:
        """Per-class ``dice``, ``iou``, ``precision``, ``recall`` of the pooled counts, float64 ``(C,)``."""
        s = self.stats
        return {
            "dice": dice(s, empty_score),
            "iou": iou(s, empty_score),
            "precision": precision(s, empty_score),
            "recall": recall(s, empty_score),
        }
