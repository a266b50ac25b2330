"""Focal loss (Lin, Goyal, Girshick, He, Dollár, "Focal Loss for Dense Object Detection", TPAMI 2018).

Eq. 5: ``FL(p_t) = -α_t (1 - p_t)^γ log(p_t)``, where ``p_t`` is the predicted probability of the
true class. The modulating factor ``(1 - p_t)^γ`` down-weights well-classified pixels so that the
many easy background pixels do not dominate; ``γ = 0`` (and no ``α``) is exactly cross entropy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from densemed.errors import DensemedError
from densemed.losses import functional as LF
from densemed.losses.registry import Loss, register


@register("focal")
class FocalLoss(Loss):
    """Focal loss on logits, binary (sigmoid) or multi-class (softmax), optional per-pixel weights.

    Args:
        gamma: focusing parameter ``γ >= 0`` (2 in the paper).
        alpha: balance factor: a float in [0, 1] gives ``α`` to foreground and ``1 - α`` to
            background (0.25 in the paper); a list gives one factor per class; None: no balance.
        reduction: ``"mean"`` (over pixels of the sum over classes), ``"sum"`` or ``"none"``.

    Shape:
        logits ``(B, C, *S)``, target ``(B, 1, *S)`` or ``(B, C, *S)`` -> scalar.

    Example:
        >>> print(FocalLoss(gamma=2)(torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)))
        tensor(0.1733)
    """

    accepts_weights = True

    def __init__(
        self, gamma: float = 2.0, alpha: float | Sequence[float] | None = None, reduction: str = "mean"
    ) -> None:
        super().__init__(reduction)
        if gamma < 0:
            raise DensemedError(f"loss.gamma: must be >= 0, got {gamma}")
        if isinstance(alpha, (int, float)) and not 0 <= alpha <= 1:
            raise DensemedError(f"loss.alpha: a single alpha must be in [0, 1], got {alpha}")
        self.gamma = float(gamma)
        self.alpha = alpha if alpha is None or isinstance(alpha, (int, float)) else [float(a) for a in alpha]

    def forward(
        self, output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Focal loss of the logits ``output`` against ``target``, optionally weighted per pixel."""
        self.check(output, target, weights)
        return LF.focal_loss(output, target, self.gamma, self.alpha, weights, self.reduction)
