"""AttentionBoost adaptive per-pixel weighting for multi-stage networks.

Gunesli, Sokmensuer, Gunduz-Demir, "AttentionBoost: Learning What to Attend for Gland
Segmentation in Histopathological Images" (arXiv 1908.02484, 2020), Section 3. Stage ``n + 1`` of
a network with ``N`` stacked decoders is trained with per-pixel weights that boost the pixels
stage ``n`` got wrong (more so the more confident it was) and damp those it got right:

    c_1(p) = 1,    c_{n+1}(p) = β_n(p) · c_n(p),
    β_n(p) = 1 - |ŷ_n(p) - 0.5|  if stage n classifies p correctly,  1 + |ŷ_n(p) - 0.5| otherwise,

and the total loss is ``Σ_n Σ_p c_n(p) · CE_n(p)`` (here divided by the pixel count). The weights
are constants: no gradient flows through ``β``.

Documented choices where the paper is silent or binary-only:

* multi-class: ``ŷ_n(p)`` is the stage's softmax probability of the *true* class and "correct"
  means the arg-max class is the true one (binary: ``|ŷ - 0.5|`` is the same for either class,
  so this reduces to the paper);
* if the batch carries a per-pixel ``weights`` map (e.g. border weights) it is used as ``c_1``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from densemed.losses import functional as LF
from densemed.losses.registry import Loss, register


@register("attentionboost")
class AttentionBoostLoss(Loss):
    """Sum over stages of adaptively weighted cross entropy.

    Args:
        reduction: ``"mean"`` (sum over stages of each stage's mean) or ``"none"`` (``(N,)``).

    Shape:
        output: a list of ``N`` stage logits ``(B, C, *S)`` (last is the final stage) or one tensor
        (treated as one stage, as in evaluation); target ``(B, 1, *S)`` or ``(B, C, *S)``.

    Example:
        >>> stages = [torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4)]
        >>> print(AttentionBoostLoss()(stages, torch.zeros(1, 1, 4, 4, dtype=torch.long)))
        tensor(1.3863)
    """

    accepts_weights = True

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__(reduction)
        if reduction == "sum":
            self.reduction = "mean"  # per-stage means summed: "sum" over stages is already the total

    def forward(
        self,
        output: torch.Tensor | Sequence[torch.Tensor],
        target: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """AttentionBoost loss of the stage outputs (one tensor counts as a single stage) against ``target``."""
        stages = [output] if isinstance(output, torch.Tensor) else list(output)
        if not stages:
            raise ValueError("attentionboost: empty list of stage outputs")
        for s in stages:
            self.check(s, target, weights)
        return LF.attentionboost_loss(stages, target, weights, self.reduction)
