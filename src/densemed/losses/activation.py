"""The activation loss of ClassNSeg (Nguyen, Fang, Yamagishi, Echizen, BTAS 2019, arXiv 1906.06876).

The network's latent is split into two halves whose mean absolute activations ``a_0``, ``a_1``
score the two image-level classes (:mod:`densemed.nets.classnseg`). The loss pulls the half of
the true class towards 1 and the other towards 0:

    L_act = (1 / B) sum_b |a_1(b) - y(b)| + |a_0(b) - (1 - y(b))|

(the authors' ``ActivationLoss``: the sum over the batch divided by the batch size). The class
decision is ``1 iff a_1 >= a_0``.

Recipe (a task of the multi-task loss)::

    activation: {loss: {name: activation}, weight: 1, target: class_label}
"""

from __future__ import annotations

import torch

from densemed.losses.registry import Loss, register


@register("activation")
class ActivationLoss(Loss):
    """``|a_1 - y| + |a_0 - (1 - y)|`` per sample, averaged over the batch.

    Args:
        reduction: ``"mean"`` (over the batch), ``"sum"`` or ``"none"`` (per sample ``(B,)``).

    Shape:
        output ``(B, 2)`` or ``(B, 2, 1, ..., 1)`` = ``(a_0, a_1)``; target ``(B,)`` or
        ``(B, 1, ..., 1)`` labels 0/1 (int or float) -> scalar (``"none"``: ``(B,)``).

    Example:
        >>> loss = ActivationLoss()
        >>> print(loss(torch.tensor([[0.2, 0.9], [0.5, 0.1]]), torch.tensor([1, 0])))
        tensor(0.4500)
    """

    #: the multi-task loss hands the target over as float (labels 0/1), without rounding it to a map
    regression = True

    def forward(
        self, output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Activation loss of the class scores ``output`` against the image-level labels ``target``."""
        if weights is not None:
            raise ValueError("activation loss cannot use per-pixel weights (its scores are image-level)")
        if not isinstance(output, torch.Tensor) or output.dim() < 2 or output.shape[1] != 2:
            shape = tuple(output.shape) if isinstance(output, torch.Tensor) else type(output).__name__
            raise ValueError(f"activation loss needs scores (B, 2) = (a_0, a_1), got {shape}")
        b = output.shape[0]
        if output[0, 0].numel() != 1:
            raise ValueError(f"activation loss needs one score per class and sample, got {tuple(output.shape)}")
        if target.numel() != b:
            raise ValueError(f"activation loss needs one label per sample ({b}), got {tuple(target.shape)}")
        a = output.reshape(b, 2)
        y = target.reshape(b).to(a.dtype)
        per_sample = (a[:, 1] - y).abs() + (a[:, 0] - (1.0 - y)).abs()
        if self.reduction == "none":
            return per_sample
        return per_sample.sum() if self.reduction == "sum" else per_sample.mean()
