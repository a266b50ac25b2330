"""Cross entropy losses: binary (sigmoid), multi-class (softmax), and weighted per pixel and class.

The weighted form is the energy of U-Net (Ronneberger, Fischer, Brox, MICCAI 2015, eq. 1):
``E = Σ_p c_p · log ŷ_{y_p}(p)`` with a weight map ``c_p``; here divided by the pixel count so
that its scale does not depend on the patch size. Two sources of weights multiply:

* ``class_weights`` (recipe numbers, e.g. from
  :func:`densemed.losses.functional.class_weights_from_labels`, inversely proportional to class
  frequency on the training set): ``c_p ∝ class_weights[y_p]``;
* the per-pixel ``weights`` map of the batch (e.g. the U-Net border map
  ``w_c(p) + w0 · exp(-(d1 + d2)² / 2σ²)``, computed once per training image by the data
  pipeline as the target ``border_weights``, see :mod:`densemed.targets.weights`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from densemed.errors import DensemedError
from densemed.losses import functional as LF
from densemed.losses.registry import Loss, register


def _check_class_weights(values: Sequence[float] | None) -> list[float] | None:
    if values is None:
        return None
    if isinstance(values, str) or not all(isinstance(v, (int, float)) and v >= 0 for v in values):
        raise DensemedError(
            f"loss.class_weights: expected a list of non-negative numbers, got {values!r} "
            "(compute them once with densemed.losses.class_weights_from_labels)"
        )
    return [float(v) for v in values]


@register("bce")
class BCELoss(Loss):
    """Binary cross entropy on one-channel logits, in the numerically stable form.

    ``ℓ = max(x, 0) - x·y + log(1 + exp(-|x|))`` per pixel, averaged.

    Shape:
        logits ``(B, 1, *S)``, target ``(B, 1, *S)`` with values in [0, 1] -> scalar.

    Example:
        >>> print(BCELoss()(torch.zeros(1, 1, 2, 2), torch.ones(1, 1, 2, 2)))
        tensor(0.6931)
    """

    def forward(
        self, output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Sigmoid binary cross entropy of one-channel logits against ``target``."""
        self.check(output, target, weights)
        if output.shape[1] != 1:
            raise ValueError(f"bce needs one-channel logits, got {output.shape[1]} channels (use 'ce')")
        return LF.cross_entropy(output, target, reduction=self.reduction)


@register("ce")
class CrossEntropyLoss(Loss):
    """Cross entropy: sigmoid BCE for one channel, softmax CE for ``C >= 2``; unweighted.

    Shape:
        logits ``(B, C, *S)``, target ``(B, 1, *S)`` indices or ``(B, C, *S)`` one-hot -> scalar.
    """

    def forward(
        self, output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Unweighted cross entropy of the logits ``output`` against ``target``."""
        self.check(output, target, weights)
        return LF.cross_entropy(output, target, reduction=self.reduction)


@register("weighted_ce")
class WeightedCrossEntropyLoss(Loss):
    """Cross entropy with per-pixel weights (the batch's ``weights``) and per-class weights.

    ``ℓ_p = c_p · CE_p`` with ``c_p = weights_p · class_weights[y_p]``; the mean is over pixels.
    To use the paper's additive ``w_c(p) + w0·exp(...)`` give the class weights to the
    ``border_weights`` target instead of here.

    Args:
        class_weights: one non-negative number per class (binary: ``[w_bg, w_fg]``), or None.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shape:
        logits ``(B, C, *S)``, target ``(B, 1, *S)`` or ``(B, C, *S)``, weights ``(B, 1, *S)``.

    Example:
        >>> loss = WeightedCrossEntropyLoss(class_weights=[1.0, 3.0])
        >>> print(loss(torch.zeros(1, 2, 1, 2), torch.tensor([[[[0, 1]]]])))
        tensor(1.3863)
    """

    accepts_weights = True

    def __init__(self, class_weights: Sequence[float] | None = None, reduction: str = "mean") -> None:
        super().__init__(reduction)
        self.class_weights = _check_class_weights(class_weights)

    def forward(
        self, output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Cross entropy weighted per pixel by ``weights`` and per class by ``class_weights``."""
        self.check(output, target, weights)
        return LF.cross_entropy(output, target, weights, self.class_weights, self.reduction)
