"""Training modules: what owns the networks, the optimisers, their schedules and one training step.

The loop (:mod:`densemed.train.loop`) only feeds batches to :meth:`TrainingModule.train_step`,
asks for the network to validate (:attr:`TrainingModule.model`) and saves
:meth:`TrainingModule.state_dict`. A task picks its module (:meth:`densemed.tasks.Task.training_module`):
:class:`SupervisedModule` (one network, one optimiser, the task's loss) is the default; a GAN
module owns a generator and a discriminator with an optimiser each and alternates their steps.

Every optimiser gets a ``LambdaLR`` whose factor is :func:`densemed.train.schedule.factor` of
``step / total_steps``; :meth:`TrainingModule.set_total_steps` changes the length (the time
budget), and schedulers step once per optimiser step.

Several processes (:mod:`densemed.train.distributed`): :meth:`TrainingModule.distribute` gives
every rank rank 0's weights; a module that calls its networks through :meth:`TrainingModule.net`
(``uses_ddp = True``, e.g. :class:`SupervisedModule`) then has them wrapped in
``DistributedDataParallel``, which averages gradients over ranks during the backward pass; any
other module keeps bare networks and :meth:`TrainingModule.optimizer_step` averages the gradients
of the stepped parameters in one all-reduce before clipping and stepping. ``networks`` always
holds the bare networks, so state dicts, validation and export never see a wrapper.

Unused parameters: a loss may leave an output without gradient in some steps (a deep-supervision
level or an auxiliary head whose weight is 0), and DDP then waits forever for those gradients
unless built with ``find_unused_parameters=True``, which walks the autograd graph after every
forward. The wrapper is therefore built after the network's first training step
(:meth:`TrainingModule.settle_ddp`; that step averages its gradients with the plain all-reduce):
with the search when the network returned several outputs (a list or a dict), without
it when it returned one tensor (every parameter then has a gradient in every step, which the
registry's contract tests check for every network). The search cost 0-4% of a U-Net step on two
gloo ranks (``benchmarks/bench_distributed.py``).

Gradient accumulation (``train.accumulate = A``, :class:`SupervisedModule`): the loop hands
``train_step`` a batch of ``A x data.batch_size`` samples; the step splits it into ``A``
micro-batches of ``data.batch_size``, back-propagates ``loss_i * n_i / n`` for each (under DDP the
first ``A - 1`` without gradient synchronisation, ``no_sync``) and steps the optimiser once. For a
loss that is a mean over samples the gradient equals that of the whole batch (tested); batch
norm sees the micro-batches, and a loss computed over the whole batch (batch Dice) is the mean of
the micro-batch losses.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

import densemed.train.distributed as distributed
from densemed.errors import DensemedError
from densemed.precision import amp_dtype
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


def to_channels_last(net: nn.Module) -> nn.Module:
    """Store ``net``'s conv weights channels-last (NHWC / NDHWC), in place; convolutions then run in that layout.

    The format follows the highest-rank weight (5-D: ``channels_last_3d``, 4-D: ``channels_last``);
    a network without such weights is left as it is. Inputs need no conversion: a convolution whose
    weight is channels-last computes and returns channels-last.
    """
    rank = max((p.dim() for p in net.parameters()), default=0)
    if rank in (4, 5):
        net.to(memory_format=torch.channels_last if rank == 4 else torch.channels_last_3d)
    return net


class TrainingModule:
    """Owns named networks and optimisers; :meth:`train_step` performs one optimisation step.

    Args:
        networks: ``{name: network}``; ``"model"`` is the one validated, predicted and exported.
        t: the recipe's ``train`` section (optimiser, schedule, amp, clipping).
        device: where the networks live.
    """

    #: every training forward goes through :meth:`net`, so DDP can average gradients in the backward pass;
    #: otherwise :meth:`optimizer_step` all-reduces the gradients before stepping
    uses_ddp: ClassVar[bool] = False
    #: :meth:`train_step` splits its batch into ``train.accumulate`` micro-batches
    accumulates: ClassVar[bool] = False

    def __init__(self, networks: dict[str, nn.Module], t: TrainConfig, device: torch.device) -> None:
        if "model" not in networks:
            raise ValueError("a training module needs a network named 'model'")
        self.networks = dict(networks)
        if t.channels_last:  # measured faster on the CPU (README, benchmarks/bench_amp.py); same arithmetic
            for net in self.networks.values():
                to_channels_last(net)
        self.wrapped: dict[str, nn.Module] = {}  # DDP wrappers of ``networks`` (several processes only)
        self._pending_ddp: set[str] = set()  # networks wrapped after their first training forward
        self.t, self.device = t, device
        self.optimizers: dict[str, torch.optim.Optimizer] = {}
        self.schedulers: dict[str, torch.optim.lr_scheduler.LambdaLR] = {}
        self.step = 0
        self.total_steps = 1
        #: autocast dtype of ``train.amp`` on this device (densemed.precision); None: float32
        self.amp_dtype = amp_dtype(t.amp, device)
        # fp16 gradients underflow without loss scaling; bf16 has float32's exponent range
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.amp_dtype == torch.float16)

    @property
    def model(self) -> nn.Module:
        """The main network."""
        return self.networks["model"]

    def net(self, name: str = "model") -> nn.Module:
        """The network to call in a training forward: its DDP wrapper under torchrun, else the network."""
        return self.wrapped.get(name, self.networks[name])

    def distribute(self, find_unused_parameters: bool | None = None) -> None:
        """Prepare for several processes (no-op for one): rank 0's weights everywhere, DDP for ``uses_ddp``.

        Args:
            find_unused_parameters: DDP's option; None decides it from the network's first
                training output (:meth:`settle_ddp`).
        """
        if not distributed.is_distributed():
            return
        for name, net in self.networks.items():
            distributed.broadcast_parameters(net)
            if not (self.uses_ddp and any(p.requires_grad for p in net.parameters())):
                continue
            if find_unused_parameters is None:
                self._pending_ddp.add(name)
            else:
                self.wrapped[name] = distributed.wrap_ddp(net, self.device, find_unused_parameters)

    def settle_ddp(self, name: str, several_outputs: bool) -> None:
        """After network ``name``'s first training step, wrap it in DDP.

        DDP searches unused parameters only when the training forward returned several tensors (a
        list or dict, which a loss may partly ignore).

        Called after the optimiser step (DDP's constructor writes the parameters in place, which
        would invalidate a pending backward pass); that step's gradients were averaged by
        :meth:`optimizer_step`, as the network was not wrapped yet.
        """
        if name in self._pending_ddp:
            self._pending_ddp.discard(name)
            self.wrapped[name] = distributed.wrap_ddp(self.networks[name], self.device, several_outputs)

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
        return torch.autocast(self.device.type, dtype=self.amp_dtype or torch.bfloat16,
                              enabled=self.amp_dtype is not None)

    def backward_step(self, name: str, loss: torch.Tensor, params: Any) -> None:
        """Backward pass, optional clipping, optimiser step (through the scaler for fp16), scheduler step."""
        opt = self.optimizers[name]
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.optimizer_step(name, params)

    def optimizer_step(self, name: str, params: Any) -> None:
        """Gradients averaged over ranks (modules without DDP), optional clipping, optimiser and scheduler step."""
        opt = self.optimizers[name]
        params = list(params)
        if name not in self.wrapped:  # DDP did not average them during the backward pass
            distributed.average_gradients(params)
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

    uses_ddp = True
    accumulates = True

    def __init__(self, task: Task, model: nn.Module, loss_fn: nn.Module, t: TrainConfig, device: torch.device) -> None:
        super().__init__({"model": model}, t, device)
        self.task, self.loss_fn = task, loss_fn
        self.add_optimizer("model", make_optimizer([p for p in model.parameters() if p.requires_grad], t))

    def set_epoch(self, epoch: int) -> None:
        """Forward the epoch to losses with a schedule of their own."""
        if hasattr(self.loss_fn, "set_epoch"):
            self.loss_fn.set_epoch(epoch)

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Forward (under autocast when ``train.amp``), loss in float32, backward, step.

        With ``train.accumulate = A`` the batch is split into ``A`` micro-batches whose gradients
        add up (each loss weighted by its share of the samples) before one optimiser step.
        """
        net = self.net("model")
        chunks = split_batch(batch, max(int(getattr(self.t, "accumulate", 1) or 1), 1))
        n = sum(_batch_len(c) for c in chunks)
        self.optimizers["model"].zero_grad(set_to_none=True)
        total, terms = 0.0, {}
        for i, chunk in enumerate(chunks):
            share = _batch_len(chunk) / n
            last = i == len(chunks) - 1
            # DDP all-reduces in the backward of the last micro-batch only
            with nullcontext() if last or not hasattr(net, "no_sync") else net.no_sync():
                with self.autocast():
                    out = net(*self.task.model_args(self.model, chunk))
                several = not isinstance(out, torch.Tensor)
                out = _to_float(out)  # the loss is computed in float32
                loss = self.task.compute_loss(self.loss_fn, out, chunk)
                if not torch.isfinite(loss):
                    raise FloatingPointError(float(loss.detach()))
                self.scaler.scale(loss if len(chunks) == 1 else loss * share).backward()
            total += float(loss.detach()) * share
            for k, v in getattr(self.loss_fn, "last_terms", {}).items():
                terms[k] = terms.get(k, 0.0) + float(v) * share
        self.optimizer_step("model", self.model.parameters())
        self.settle_ddp("model", several)
        self.step += 1
        rec = {"loss": total}
        rec.update({f"term_{k}": v for k, v in terms.items()})
        return rec


def _batch_len(batch: dict[str, torch.Tensor]) -> int:
    return int(next(iter(batch.values())).shape[0])


def split_batch(batch: dict[str, torch.Tensor], parts: int) -> list[dict[str, torch.Tensor]]:
    """``batch`` cut into ``parts`` micro-batches along the sample axis (fewer when it holds fewer samples).

    Example:
        >>> chunks = split_batch({"image": torch.zeros(8, 1, 4, 4)}, 2)
        >>> print([c["image"].shape[0] for c in chunks])
        [4, 4]
    """
    if parts <= 1:
        return [batch]
    n = _batch_len(batch)
    pieces = {k: torch.tensor_split(v, min(parts, n)) for k, v in batch.items()}
    return [{k: v[i] for k, v in pieces.items()} for i in range(min(parts, n))]

def _to_float(out: Any) -> Any:
    """Cast a network output (tensor, list or dict of them) to float32."""
    if isinstance(out, torch.Tensor):
        return out.float()
    if isinstance(out, dict):
        return {k: _to_float(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return type(out)(_to_float(v) for v in out)
    return out
