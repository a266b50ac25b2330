"""Losses built from other losses: weighted sums and deep supervision.

* ``compound``: ``Σ_k λ_k L_k`` for any registered losses (e.g. Dice + CE, the default of
  nnU-Net and of this toolkit as ``dice_ce``).
* ``deep_supervision``: ``Σ_i w_i L(out_i, resize(target))`` over a list ``[main, aux_1, ...]``
  of outputs at several resolutions (Lee et al., "Deeply-Supervised Nets", AISTATS 2015; used by
  3D U-Net variants and nnU-Net). The target (and the per-pixel weight map) is resized to each
  output's size with nearest-neighbour interpolation, which keeps class indices valid.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from densemed.errors import DensemedError
from densemed.losses.registry import Loss, build_spec, register


def _accepts(loss: nn.Module) -> bool:
    return bool(getattr(loss, "accepts_weights", False))


@register("compound")
class CompoundLoss(Loss):
    """Weighted sum of losses: ``terms=[{name: dice, weight: 1}, {name: ce, weight: 1}]``.

    Each term is ``{name, weight (default 1), **options of that loss}``. A per-pixel ``weights``
    map goes to the terms that use weights; if none of them does, passing one is an error.

    Shape:
        as the terms' (usually logits ``(B, C, *S)``) -> scalar.

    Example:
        >>> loss = CompoundLoss([{"name": "dice", "weight": 1.0}, {"name": "ce", "weight": 0.5}])
        >>> print(loss(torch.zeros(1, 2, 4, 4), torch.zeros(1, 1, 4, 4, dtype=torch.long)).shape)
        torch.Size([])
    """

    def __init__(self, terms: Sequence[dict[str, Any]]) -> None:
        super().__init__("mean")
        if not terms:
            raise DensemedError("loss.terms: give at least one {name: ..., weight: ...}")
        modules, factors = [], []
        for i, term in enumerate(terms):
            if not isinstance(term, dict) or "name" not in term:
                raise DensemedError(f"loss.terms[{i}]: expected {{name: ..., weight: ...}}, got {term!r}")
            spec = {k: v for k, v in term.items() if k != "weight"}
            modules.append(build_spec(spec, f"loss.terms[{i}]"))
            factors.append(float(term.get("weight", 1.0)))
        self.terms = nn.ModuleList(modules)
        self.factors = factors
        self.accepts_weights = any(_accepts(m) for m in self.terms)

    def forward(self, output: Any, target: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
        """Sum of the terms' losses times their factors; ``weights`` go only to terms that use them."""
        if weights is not None and not self.accepts_weights:
            raise ValueError("compound: per-pixel weights given but no term uses them")
        total = 0.0
        for factor, term in zip(self.factors, self.terms):
            total = total + factor * term(output, target, weights=weights if _accepts(term) else None)
        return total  # type: ignore[return-value]


@register("dice_ce")
class DiceCELoss(CompoundLoss):
    """Soft Dice + cross entropy, the spine's default loss.

    ``L = λ_dice · Dice + λ_ce · CE``; a per-pixel ``weights`` map (and ``class_weights``) go to
    the cross-entropy term only.

    Args:
        include_background: Dice over class 0 too (``C >= 2`` only).
        smooth: Dice smoothing.
        batch: Dice over the whole batch instead of per image.
        lambda_dice: factor of the Dice term.
        lambda_ce: factor of the cross-entropy term.
        class_weights: per-class weights of the cross-entropy term.

    Shape:
        logits ``(B, C, *S)``, target ``(B, 1, *S)`` or ``(B, C, *S)`` -> scalar.
    """

    def __init__(
        self,
        include_background: bool = True,
        smooth: float = 1e-5,
        batch: bool = False,
        lambda_dice: float = 1.0,
        lambda_ce: float = 1.0,
        class_weights: Sequence[float] | None = None,
    ) -> None:
        super().__init__(
            [
                {"name": "dice", "weight": lambda_dice, "include_background": include_background,
                 "smooth": smooth, "batch": batch},
                {"name": "weighted_ce", "weight": lambda_ce, "class_weights": class_weights},
            ]
        )


def _resize_nearest(x: torch.Tensor, size: torch.Size) -> torch.Tensor:
    if x.shape[2:] == size:
        return x
    return F.interpolate(x.float(), size=tuple(size), mode="nearest").to(x.dtype)


@register("deep_supervision")
class DeepSupervisionLoss(Loss):
    """Apply ``loss`` to each of ``[main, aux_1, ..., aux_k]`` with level weights, summed.

    Args:
        loss: the wrapped loss, ``{name: ..., **options}`` (default ``dice_ce``).
        weights: one factor per output level, main first (default ``1, 1/2, 1/4, ...``). Not
            normalised, so a single tensor (validation) gives exactly ``loss(main)``. Outputs
            beyond ``len(weights)`` are an error; missing ones (e.g. one tensor) use the prefix.

    Shape:
        output: a list of logits ``(B, C, *S_i)``, main first at full size, or one tensor;
        target ``(B, 1, *S)`` or ``(B, C, *S)``; per-pixel ``weights`` ``(B, 1, *S)``.

    Example:
        >>> loss = DeepSupervisionLoss({"name": "ce"}, weights=[1.0, 0.5])
        >>> out = [torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 4, 4)]
        >>> print(loss(out, torch.zeros(1, 1, 8, 8, dtype=torch.long)))
        tensor(1.0397)
    """

    def __init__(
        self, loss: dict[str, Any] | str | None = None, weights: Sequence[float] | None = None
    ) -> None:
        super().__init__("mean")
        self.loss = build_spec(loss if loss is not None else {"name": "dice_ce"}, "loss.loss")
        numbers = weights is None or (
            not isinstance(weights, str) and all(isinstance(w, (int, float)) for w in weights)
        )
        if not numbers:
            raise DensemedError(f"loss.weights: expected a list of numbers, got {weights!r}")
        self.level_weights = None if weights is None else [float(w) for w in weights]
        self.accepts_weights = _accepts(self.loss)

    def forward(
        self,
        output: torch.Tensor | Sequence[torch.Tensor],
        target: torch.Tensor,
        weights: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Wrapped loss of each output against the target (and weights) resized to it, summed with level weights."""
        outs = [output] if isinstance(output, torch.Tensor) else list(output)
        factors = self.level_weights or [0.5**i for i in range(len(outs))]
        if len(outs) > len(factors):
            raise ValueError(f"deep_supervision: {len(outs)} outputs but {len(factors)} level weights")
        if weights is not None and not self.accepts_weights:
            name = type(self.loss).__name__
            raise ValueError(f"deep_supervision: the wrapped {name} cannot use per-pixel weights")
        total = 0.0
        for factor, out in zip(factors, outs):
            if factor == 0:
                continue
            size = out.shape[2:]
            w = None if weights is None else _resize_nearest(weights, size)
            total = total + factor * self.loss(out, _resize_nearest(target, size), weights=w)
        return total  # type: ignore[return-value]
