"""Overlap losses: soft Dice, Generalized Dice and Tversky.

* Soft Dice (Milletari, Navab, Ahmadi, "V-Net", 3DV 2016, eq. 1): ``1 - 2Σŷy / (Σŷ + Σy)``; the
  paper squares the denominator terms, we use the linear form of MONAI and nnU-Net.
* Generalized Dice (Sudre, Li, Vercauteren, Ourselin, Cardoso, DLMIA 2017, eq. 2): one ratio over
  all classes with ``w_c = 1 / (Σ_p y_cp)²``, so that small structures count as much as large ones.
* Tversky (Salehi, Erdogmus, Gholipour, MLMI 2017, eq. 3): ``1 - TP / (TP + α FP + β FN)``.

All add ``smooth`` to numerator and denominator, are computed per image (``batch=False``) or over
the whole batch (``batch=True``), and can leave out class 0 (``include_background=False``, only
for ``C >= 2``: one-channel logits have no background channel).
"""

from __future__ import annotations

import torch

from densemed.errors import DensemedError
from densemed.losses import functional as LF
from densemed.losses.registry import Loss, register


class _RegionLoss(Loss):
    """Base of the region losses: the options shared by Dice, Generalized Dice and Tversky."""

    def __init__(
        self,
        include_background: bool = True,
        smooth: float = 1e-5,
        batch: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__(reduction)
        if smooth < 0:
            raise DensemedError(f"loss.smooth: must be >= 0, got {smooth}")
        self.include_background = bool(include_background)
        self.smooth = float(smooth)
        self.batch = bool(batch)


@register("dice")
class DiceLoss(_RegionLoss):
    """Soft Dice loss ``1 - (2Σŷy + s) / (Σŷ + Σy + s)``, averaged over images and classes.

    Args:
        include_background: keep class 0 (``C >= 2`` only).
        smooth: ``s``, added to numerator and denominator.
        batch: one sum over the whole batch instead of per image.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(B, C')``).

    Shape:
        logits ``(B, C, *S)``, target ``(B, 1, *S)`` or ``(B, C, *S)`` -> scalar.

    Example:
        >>> y = torch.tensor([[[[1.0, 0.0]]]])
        >>> print(DiceLoss(smooth=0)(torch.tensor([[[[0.0, 0.0]]]]), y))
        tensor(0.5000)
    """

    def forward(
        self, output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Soft Dice loss of the logits ``output`` against ``target``."""
        self.check(output, target, weights)
        return LF.dice_loss(output, target, self.include_background, self.smooth, self.batch, self.reduction)


@register("generalized_dice")
class GeneralizedDiceLoss(_RegionLoss):
    """Generalized Dice loss with ``w_c = 1 / (Σ_p y_cp)²``; an absent class gets the largest weight.

    Args:
        include_background: keep class 0 (``C >= 2`` only).
        smooth: added to numerator and denominator (see the note in
            :func:`densemed.losses.functional.generalized_dice_loss`).
        batch: one sum over the whole batch instead of per image.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(B,)``).

    Shape:
        logits ``(B, C, *S)``, target ``(B, 1, *S)`` or ``(B, C, *S)`` -> scalar.
    """

    def forward(
        self, output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Generalized Dice loss of the logits ``output`` against ``target``."""
        self.check(output, target, weights)
        return LF.generalized_dice_loss(
            output, target, self.include_background, self.smooth, self.batch, self.reduction
        )


@register("tversky")
class TverskyLoss(_RegionLoss):
    """Tversky loss ``1 - (TP + s) / (TP + α FP + β FN + s)``.

    Args:
        alpha: weight of false positives (0.3 in the paper).
        beta: weight of false negatives (0.7 in the paper).
        include_background: keep class 0 (``C >= 2`` only).
        smooth: ``s``; with ``α = β = 0.5`` this is Dice with smoothing ``2s``.
        batch: one sum over the whole batch instead of per image.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``(B, C')``).

    Shape:
        logits ``(B, C, *S)``, target ``(B, 1, *S)`` or ``(B, C, *S)`` -> scalar.
    """

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        include_background: bool = True,
        smooth: float = 1e-5,
        batch: bool = False,
        reduction: str = "mean",
    ) -> None:
        super().__init__(include_background, smooth, batch, reduction)
        if alpha < 0 or beta < 0:
            raise DensemedError(f"loss.alpha/beta: must be >= 0, got alpha={alpha}, beta={beta}")
        self.alpha = float(alpha)
        self.beta = float(beta)

    def forward(
        self, output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Tversky loss of the logits ``output`` against ``target``."""
        self.check(output, target, weights)
        return LF.tversky_loss(
            output, target, self.alpha, self.beta, self.include_background, self.smooth, self.batch,
            self.reduction,
        )
