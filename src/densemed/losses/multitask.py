"""The joint loss of multi-task networks, and the mean squared error for regression heads.

``multitask`` is a weighted linear combination of per-task losses (Caruana 1997; DCAN, Chen et
al. 2017; DeepDistance, Koyuncu et al. 2020)::

    L = sum_t w_t [ L_t(y_t_main, target_t) + w_aux(epoch) sum_k L_t(y_t_aux_k, target_t) ]

Each task names its loss (any name of :func:`densemed.losses.build`), its weight ``w_t`` and the
batch key of its target (``label`` or a key of ``data.targets``). A task output that is a list
``[main, aux_1, ...]`` (DCAN's deeply supervised classifiers) adds the auxiliary terms with
weight ``w_aux``, which decays during training as in DCAN (start 1, "decreased until marginal
values (< 1e-3)"): ``w_aux(e) = max(initial * decay ** (e // every), final)``. The training loop
calls :meth:`MultiTaskLoss.set_epoch` every epoch. Auxiliary outputs smaller than the target get
the target resized by nearest neighbour.

Targets: regression losses (``mse``) get the target as float; every other loss gets class
indices, so float target maps (a contour map from the data pipeline) are rounded to int64.

Recipe (DCAN)::

    loss:
      name: multitask
      tasks:
        object:  {loss: {name: ce}, weight: 1, target: label}
        contour: {loss: {name: ce}, weight: 1, target: contour}
      aux_weight: {initial: 1.0, decay: 0.1, every: 10, final: 0.001}

``mse`` is ``mean_p w_p (y_p - t_p)^2`` over the channels and pixels, with optional per-pixel
weights ``w_p`` (DeepDistance's distance heads).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from densemed.errors import DensemedError
from densemed.losses.registry import Loss, build_spec, register


@register("mse")
class MSELoss(Loss):
    """Mean squared error for regression heads (distance maps), optionally weighted per pixel.

    Shape:
        output ``(B, C, *S)``, target of the same shape, weights ``(B, 1, *S)`` (the same for
        every channel) or ``(B, C, *S)`` -> scalar (``reduction="none"``: ``(B, C, *S)``).
        Nothing else is broadcast: a target or weights of any other shape raises a
        :class:`ValueError` naming both shapes (a silently broadcast target trains on the wrong
        pairs).

    Example:
        >>> loss = MSELoss()
        >>> print(loss(torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])))
        tensor(0.5000)
    """

    accepts_weights = True
    regression = True

    def forward(
        self, output: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Squared error of ``output`` against ``target``, optionally weighted per pixel, then reduced."""
        if not isinstance(output, torch.Tensor):
            raise ValueError(f"mse takes one tensor, got {type(output).__name__}")
        if not isinstance(target, torch.Tensor):
            raise ValueError(f"mse: the target must be a tensor, got {type(target).__name__}")
        if target.shape != output.shape:
            raise ValueError(f"mse: prediction shape {tuple(output.shape)} and target shape {tuple(target.shape)} "
                             "differ; they must be equal (no broadcasting)")
        err = (output - target.to(output.dtype)) ** 2
        if weights is not None:
            one_channel = (*output.shape[:1], 1, *output.shape[2:]) if output.dim() >= 2 else tuple(output.shape)
            if tuple(weights.shape) not in (tuple(output.shape), one_channel):
                raise ValueError(f"mse: weights shape {tuple(weights.shape)} does not fit prediction shape "
                                 f"{tuple(output.shape)}; expected {one_channel} or {tuple(output.shape)}")
            err = err * weights.to(err.dtype)
        if self.reduction == "none":
            return err
        return err.sum() if self.reduction == "sum" else err.mean()


def _resize_nearest(x: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    if tuple(x.shape[2:]) == tuple(size):
        return x
    return F.interpolate(x.float(), size=tuple(size), mode="nearest").to(x.dtype)


class _Task(nn.Module):
    def __init__(self, name: str, spec: Mapping[str, Any]) -> None:
        super().__init__()
        where = f"loss.tasks.{name}"
        if not isinstance(spec, Mapping):
            raise DensemedError(f"{where}: expected a mapping with loss, weight, target; got {spec!r}")
        unknown = set(spec) - {"loss", "weight", "target", "weights"}
        if unknown:
            raise DensemedError(f"{where}: unknown keys {sorted(unknown)}; use loss, weight, target, weights")
        self.name = name
        self.loss = build_spec(spec.get("loss", {"name": "dice_ce"}), f"{where}.loss")
        self.weight = float(spec.get("weight", 1.0))
        self.target = str(spec.get("target", "label"))
        self.weights_key = spec.get("weights")
        self.regression = bool(getattr(self.loss, "regression", False))


@register("multitask")
class MultiTaskLoss(Loss):
    """Weighted sum of per-task losses over a dict of task outputs (see module docstring).

    Args:
        tasks: ``{task: {loss: {name, ...}, weight: w, target: batch key, weights: batch key}}``;
            ``weights`` (optional) names a per-pixel weight map in the batch.
        aux_weight: weight of auxiliary outputs: a number, or ``{initial, decay, every, final}``
            for the decaying schedule (default 1, 0.1, every 10 epochs, floor 1e-3).
        main: the task a single tensor output belongs to (eval-mode validation); default the first.

    Shape:
        output ``{task: (B, C_t, *S) or [(B, C_t, *S), aux...]}``, batch ``{key: (B, 1, *S)}`` -> scalar.

    Example:
        >>> loss = MultiTaskLoss({"mask": {"loss": {"name": "ce"}, "target": "label"},
        ...                       "dist": {"loss": {"name": "mse"}, "weight": 0.5, "target": "d"}})
        >>> out = {"mask": torch.zeros(1, 2, 4, 4), "dist": torch.zeros(1, 1, 4, 4)}
        >>> batch = {"label": torch.zeros(1, 1, 4, 4, dtype=torch.long), "d": torch.ones(1, 1, 4, 4)}
        >>> print(loss(out, batch))
        tensor(1.1931)
    """

    takes_batch = True

    def __init__(
        self,
        tasks: Mapping[str, Mapping[str, Any]] | None = None,
        aux_weight: float | Mapping[str, float] = 1.0,
        main: str | None = None,
    ) -> None:
        super().__init__("mean")
        if not tasks or not isinstance(tasks, Mapping):
            raise DensemedError(
                "loss.tasks: a multitask loss needs a mapping of tasks {name: {loss, weight, target}}"
            )
        self.tasks = nn.ModuleDict({name: _Task(name, spec) for name, spec in tasks.items()})
        self.main = main if main is not None else next(iter(tasks))
        if self.main not in self.tasks:
            raise DensemedError(f"loss.main: {self.main!r} is not one of the tasks {list(tasks)}")
        if isinstance(aux_weight, Mapping):
            unknown = set(aux_weight) - {"initial", "decay", "every", "final"}
            if unknown:
                raise DensemedError(
                    f"loss.aux_weight: unknown keys {sorted(unknown)}; use initial, decay, every, final"
                )
            self.schedule = {"initial": 1.0, "decay": 0.1, "every": 10, "final": 1e-3, **aux_weight}
        else:
            self.schedule = {"initial": float(aux_weight), "decay": 1.0, "every": 1, "final": 0.0}
        self.epoch = 0
        #: the last call's per-task values (floats), for logging
        self.last_terms: dict[str, float] = {}

    def set_epoch(self, epoch: int) -> None:
        """Tell the loss the current (0-based) epoch, for the auxiliary weight schedule."""
        self.epoch = int(epoch)

    @property
    def aux_weight(self) -> float:
        """``w_aux`` at the current epoch."""
        s = self.schedule
        w = s["initial"] * s["decay"] ** (self.epoch // max(int(s["every"]), 1))
        return float(max(w, s["final"]))

    def _target(self, task: _Task, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        if task.target not in batch:
            raise DensemedError(
                f"loss.tasks.{task.name}.target: batch has no {task.target!r} "
                f"(available: {', '.join(sorted(batch))}); add it under data.targets"
            )
        t = batch[task.target]
        if task.regression:
            return t.float()
        return t.round().long() if t.is_floating_point() and t.shape[1] == 1 else t

    def forward(
        self, output: Any, batch: Mapping[str, torch.Tensor], weights: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Weighted sum of each head's task loss, targets taken from ``batch``; terms kept in ``last_terms``."""
        if isinstance(output, (torch.Tensor, list, tuple)):
            output = {self.main: output}  # eval mode: the main head only
        if not isinstance(output, Mapping):
            raise ValueError(f"multitask loss needs a dict of task outputs, got {type(output).__name__}")
        missing = [name for name in output if name not in self.tasks]
        if missing:
            raise ValueError(f"network outputs {missing} have no task in loss.tasks ({list(self.tasks)})")
        total: torch.Tensor | float = 0.0
        terms: dict[str, float] = {}
        for name, out in output.items():
            task = self.tasks[name]
            target = self._target(task, batch)
            w = batch.get(task.weights_key) if task.weights_key else None
            outs = [out] if isinstance(out, torch.Tensor) else list(out)
            value = task.loss(outs[0], target, weights=w)
            if len(outs) > 1 and self.aux_weight > 0:
                aux = 0.0
                for a in outs[1:]:
                    size = a.shape[2:]
                    w_a = None if w is None else _resize_nearest(w, size)
                    aux = aux + task.loss(a, _resize_nearest(target, size), weights=w_a)
                value = value + self.aux_weight * aux
            terms[name] = float(value.detach())
            total = total + task.weight * value
        self.last_terms = terms
        return total  # type: ignore[return-value]
