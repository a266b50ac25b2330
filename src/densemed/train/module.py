"""Training modules: what owns the networks, the optimisers, their schedules and one training step.

The loop (:mod:`densemed.train.loop`) only feeds batches to :meth:`TrainingModule.train_step`,
asks for the network to validate (:attr:`TrainingModule.model`) and saves
:meth:`TrainingModule.state_dict`. A task picks its module (:meth:`densemed.tasks.Task.training_module`):
:class:`SupervisedModule` (one network, one optimiser, the task's loss) is the default; a GAN
module owns a generator and a discriminator with an optimiser each and alternates their steps.

Every optimiser gets a ``LambdaLR`` whose factor is :func:`densemed.train.schedule.factor` of
``step / total_steps``; :meth:`TrainingModule.set_total_steps` changes the length (the time
budget), and schedulers step once per optimiser step.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from densemed.errors import DensemedError
from densemed.train.schedule import factor

if TYPE_CHECKING:
    from densemed.config import TrainConfig
    from densemed.tasks.base import Task


def make_optimizer(params: Any, t: TrainConfig, lr: float | None = None) -> torch.optim.Optimizer:
    """``train.optimizer`` over ``params``: adam, adamw, or SGD with Nesterov momentum."""
    lr = t.lr if lr is None else lr
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=t.weight_decay)
    if t.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=t.momentum, weight_decay=t.weight_decay, nesterov=True)
    raise DensemedError(f"train.optimizer: unknown optimizer {t.optimizer!r} (use adam, adamw or sgd)")


def autocast_dtype(device: torch.device) -> torch.dtype:
    """bf16 on the CPU and on GPUs that support it, else fp16 (which needs a gradient scaler)."""
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return torch.float16
    if device.type == "mps":
        return torch.float16
    return torch.bfloat16


class TrainingModule:
    """Owns named networks and optimisers; :meth:`train_step` performs one optimisation step.

    Args:
        networks: ``{name: network}``; ``"model"`` is the one validated, predicted and exported.
        t: the recipe's ``train`` section (optimiser, schedule, amp, clipping).
        device: where the networks live.
    """

    def __init__(self, networks: dict[str, nn.Module], t: TrainConfig, device: torch.device) -> None:
        if "model" not in networks:
            raise ValueError("a training module needs a network named 'model'")
        self.networks = dict(networks)
        self.t, self.device = t, device
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LambdaLR] = {}
        self.step = 0
        self.total_steps = 1
        self.amp_dtype = autocast_dtype(device)
        # fp16 gradients underflow without loss scaling; bf16 has float32's exponent range
        self.scaler = torch.amp.GradScaler(device.type, enabled=bool(t.amp) and self.amp_dtype == torch.float16)

    @property
    def model(self) -> nn.Module:
        """The main network."""
        return self.networks["model"]

    def add_optimizer(self, name: str, optimizer: torch.optim.Optimizer) -> None:
        """Register an optimiser and give it the step schedule."""
        self.optimizers[name] = optimizer
        self.schedulers[name] = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)

    def _lr_factor(self, step: int) -> float:
        return factor(self.t.scheduler, step / max(self.total_steps, 1))

    def set_total_steps(self, total: int) -> None:
        """Fix the schedule's length; the learning rate follows at once."""
        self.total_steps = max(int(total), 1)
        for sched in self.schedulers.values():
            sched.last_epoch = self.step
            for group, base in zip(sched.optimizer.param_groups, sched.base_lrs):
                group["lr"] = base * self._lr_factor(self.step)

    def autocast(self) -> Any:
        """The autocast context of ``train.amp`` (a no-op when off)."""
        return torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=bool(self.t.amp))

    def backward_step(self, name: str, loss: torch.Tensor, params: Any) -> None:
        """Backward pass, optional clipping, optimiser step (through the scaler for fp16), scheduler step."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if self.t.grad_clip:
            self.scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(params, self.t.grad_clip)
        self.scaler.step(opt)
        self.scaler.update()
        self.schedulers[name].step()

    def train(self) -> None:
        """Training mode for every network."""
        for net in self.networks.values():
            net.train()

    def set_epoch(self, epoch: int) -> None:
        """Per-epoch hook (loss schedules such as DCAN's decaying auxiliary weight)."""

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One optimisation step on a (device, augmented) batch; returns ``{"loss": ..., **terms}``."""
        raise NotImplementedError

    def lr(self) -> float:
        """Current learning rate of the first optimiser."""
        return float(next(iter(self.optimizers.values())).param_groups[0]["lr"])

    def state_dict(self) -> dict[str, Any]:
        """Networks, optimisers, schedulers, scaler, step and schedule length."""
        return {
            "networks": {k: v.state_dict() for k, v in self.networks.items()},
            "optimizers": {k: v.state_dict() for k, v in self.optimizers.items()},
            "schedulers": {k: v.state_dict() for k, v in self.schedulers.items()},
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "total_steps": self.total_steps,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (networks must already match the recipe)."""
        for k, net in self.networks.items():
            net.load_state_dict(state["networks"][k])
        for k, opt in self.optimizers.items():
            opt.load_state_dict(state["optimizers"][k])
        self.step = int(state["step"])
        self.total_steps = int(state["total_steps"])
        for k, sched in self.schedulers.items():
            sched.load_state_dict(state["schedulers"][k])
        if state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])


class SupervisedModule(TrainingModule):
    """One network, one optimiser, the task's loss: today's single-network step.

    Args:
        task: supplies the network's inputs from a batch and calls the loss.
        model: the network (on ``device``).
        loss_fn: the recipe's loss.
        t: the ``train`` section.
        device: where the network lives.
    """

    def __init__(self, task: Task, model: nn.Module, loss_fn: nn.Module, t: TrainConfig, device: torch.device) -> None:
        super().__init__({"model": model}, t, device)
        self.task, self.loss_fn = task, loss_fn
        self.add_optimizer("model", make_optimizer([p for p in model.parameters() if p.requires_grad], t))

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to losses with a schedule of their own."""
        if hasattr(self.loss_fn, "set_epoch"):
            self.loss_fn.set_epoch(epoch)

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Forward (under autocast when ``train.amp``), loss in float32, backward, step."""
        with self.autocast():
            out = self.model(*self.task.model_args(self.model, batch))
        out = _to_float(out)  # the loss is computed in float32
        loss = self.task.compute_loss(self.loss_fn, out, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(float(loss.detach()))
        self.backward_step("model", loss, self.model.parameters())
        self.step += 1
        rec = {"loss": float(loss.detach())}
        rec.update({f"term_{k}": v for k, v in getattr(self.loss_fn, "last_terms", {}).items()})
        return rec


def _to_float(out: Any) -> Any:
    """Cast a network output (tensor, list or dict of them) to float32."""
    if isinstance(out, torch.Tensor):
        return out.float()
    if isinstance(out, dict):
        return {k: _to_float(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return type(out)(_to_float(v) for v in out)
    return out
