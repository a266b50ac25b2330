"""Several processes over ``torch.distributed``, launched by ``torchrun`` (or ``densemed train --nproc N``).

``torchrun --nproc_per_node N -m densemed train RECIPE`` starts N processes with ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` in their environment;
:func:`init` reads them and joins the process group. The backend follows the device: **NCCL** on
CUDA (each process takes GPU ``LOCAL_RANK``), **gloo** on the CPU. A process started without
those variables (or with ``WORLD_SIZE=1``) is a world of one: every helper here is then a no-op
returning its input, so the training loop has one code path.

Timeout: a collective waits at most :func:`timeout` (default :data:`DEFAULT_TIMEOUT_S` = 30
minutes, PyTorch's gloo default; ``$DENSEMED_DIST_TIMEOUT_S`` overrides it). Ranks wait in a
collective while rank 0 validates, writes checkpoints or tunes post-processing, so the timeout
must exceed the longest validation; a rank that dies makes the others fail after the timeout, or
at once under ``torchrun``, whose agent stops the remaining workers when one fails.

Gradients: :class:`~torch.nn.parallel.DistributedDataParallel` averages them over ranks while the
backward pass runs (:func:`wrap_ddp`); :func:`average_gradients` is the plain all-reduce for
training modules that call their networks in ways DDP cannot follow (a GAN's frozen
discriminator). Batch norm: :func:`convert_sync_batchnorm` gives every rank the statistics of the
global batch — PyTorch's ``SyncBatchNorm`` on CUDA, :class:`SyncBatchNormAllReduce` (the same
equations over the differentiable all-reduce) on the CPU, where PyTorch's has no kernel.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from datetime import timedelta
from typing import Any, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from densemed.errors import DensemedError

#: seconds a collective waits before failing (PyTorch's gloo default); ``$DENSEMED_DIST_TIMEOUT_S`` overrides
DEFAULT_TIMEOUT_S = 1800.0

T = TypeVar("T")

#: the device collectives run on (CUDA for NCCL, else the CPU); set by :func:`init`
_COMM_DEVICE = torch.device("cpu")


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except ValueError:
        raise DensemedError(f"${name}: expected an integer, got {value!r}") from None


def timeout() -> timedelta:
    """How long a collective waits: ``$DENSEMED_DIST_TIMEOUT_S`` seconds, else :data:`DEFAULT_TIMEOUT_S`."""
    text = os.environ.get("DENSEMED_DIST_TIMEOUT_S")
    try:
        seconds = float(text) if text else DEFAULT_TIMEOUT_S
    except ValueError:
        raise DensemedError(f"$DENSEMED_DIST_TIMEOUT_S: expected seconds, got {text!r}") from None
    return timedelta(seconds=seconds)


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process' rank (0 when alone); before :func:`init`, ``$RANK``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank()
    return _env_int("RANK", 0)


def world() -> int:
    """Number of processes (1 when alone); before :func:`init`, ``$WORLD_SIZE``."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return _env_int("WORLD_SIZE", 1)


def local_rank() -> int:
    """Rank among the processes of this machine (``$LOCAL_RANK``; 0 when alone)."""
    return _env_int("LOCAL_RANK", 0)


def is_main() -> bool:
    """True on rank 0, the only rank that writes the run folder and prints."""
    return rank() == 0


def rank_device(device: torch.device) -> torch.device:
    """This rank's device: ``cuda:LOCAL_RANK`` for CUDA when launched by torchrun, else ``device``."""
    if device.type == "cuda" and world() > 1:
        return torch.device("cuda", local_rank())
    return device


def init(device: torch.device) -> torch.device:
    """Join the process group when launched by torchrun; returns this rank's device.

    The backend is NCCL when the device is CUDA, gloo otherwise. Without torchrun's variables
    (``WORLD_SIZE`` unset or 1) nothing is initialised and ``device`` is returned.
    """
    global _COMM_DEVICE
    if world() <= 1:
        return device
    device = rank_device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        for key in ("MASTER_ADDR", "MASTER_PORT"):
            if not os.environ.get(key):
                raise DensemedError(f"${key}: not set; start distributed runs with torchrun or densemed train --nproc")
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timeout())
    _COMM_DEVICE = device if dist.get_backend() == "nccl" else torch.device("cpu")
    return device


def launch(nproc: int, train_argv: Sequence[str]) -> int:
    """Run ``densemed train <train_argv>`` in ``nproc`` processes on this machine under torchrun; its exit code.

    The same as ``torchrun --standalone --nproc_per_node N -m densemed train ...`` (a local
    rendezvous on a free port), for users who do not know torchrun. torchrun sets
    ``OMP_NUM_THREADS=1`` per process unless it is set; ``train.threads`` overrides it.
    """
    import subprocess
    import sys

    if nproc < 1:
        raise DensemedError(f"--nproc: must be a positive number of processes, got {nproc}")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
           "-m", "densemed", "train", *train_argv]
    return subprocess.call(cmd)


def cleanup(finished: bool = True) -> None:
    """Leave the process group (no-op when none).

    ``finished`` (every rank got here normally): wait for the others first, then collect the
    garbage so that DDP reducers and gloo work objects die while the interpreter is alive. A
    gloo worker thread that frees a tensor during interpreter shutdown takes the GIL there and
    aborts the process ("terminate called without an active exception", SIGABRT) — a rank that
    exits while its peer still writes the run folder. After a failure no barrier: the peers may
    be gone, and torchrun stops them anyway.
    """
    if dist.is_available() and dist.is_initialized():
        if finished:
            barrier()
        import gc

        gc.collect()
        dist.destroy_process_group()


def barrier() -> None:
    """Wait for every rank (no-op when alone)."""
    if is_distributed():
        dist.barrier()


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` of rank ``src`` on every rank (pickled; no-op when alone)."""
    if not is_distributed():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_COMM_DEVICE)
    return box[0]


def broadcast_values(values: Sequence[float], src: int = 0) -> list[float]:
    """Numbers of rank ``src`` on every rank, as one float64 tensor (no pickling: cheap per step)."""
    if not is_distributed():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_COMM_DEVICE)
    dist.broadcast(t, src=src)
    return t.cpu().tolist()


def all_reduce_sum(values: Sequence[float]) -> list[float]:
    """Element-wise sums over ranks (float64; no-op when alone)."""
    if not is_distributed():
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_COMM_DEVICE)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def sum_dict(sums: dict[str, float]) -> dict[str, float]:
    """``{key: sum over ranks}``; every rank must hold the same keys (no-op when alone)."""
    if not is_distributed():
        return dict(sums)
    keys = sorted(sums)
    return dict(zip(keys, all_reduce_sum([sums[k] for k in keys])))


def run_on_main(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0 only and give every rank its result, or raise its DensemedError on every rank.

    For work that reads or checks the run folder, which only rank 0 may rely on: the other ranks
    receive the same answer instead of racing on the file system.
    """
    if not is_distributed():
        return fn()
    result: tuple[str, Any] = ("ok", None)
    if is_main():
        try:
            result = ("ok", fn())
        except DensemedError as exc:
            result = ("error", str(exc))
    result = broadcast_object(result)
    if result[0] == "error":
        raise DensemedError(result[1])
    return result[1]


def main_first(fn: Callable[[], T]) -> T:
    """Run ``fn`` on rank 0, then on the other ranks (each gets its own result).

    For work that fills a cache the others then reuse (the preprocessed cases); a DensemedError
    of rank 0 is raised on every rank instead of leaving them waiting.
    """
    if not is_distributed():
        return fn()
    result: Any = None
    error = None
    if is_main():
        try:
            result = fn()
        except DensemedError as exc:
            error = str(exc)
    error = broadcast_object(error)
    if error is not None:
        raise DensemedError(error)
    return result if is_main() else fn()


def main_only(fn: Callable[..., T]) -> Callable[..., T | None]:
    """Decorator: the call happens on rank 0 only; the other ranks get None."""

    def guarded(*args: Any, **kwargs: Any) -> T | None:
        return fn(*args, **kwargs) if is_main() else None

    guarded.__name__ = getattr(fn, "__name__", "guarded")
    guarded.__doc__ = fn.__doc__
    return guarded


def shard(items: Sequence[T]) -> list[T]:
    """This rank's share of ``items``: every ``world()``-th item from ``rank()`` (all of them when alone)."""
    return list(items[rank() :: max(world(), 1)])


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Average the gradients of ``params`` over ranks in one flattened all-reduce.

    A parameter without a gradient contributes zeros and keeps no gradient (every rank of a
    deterministic step has the same parameters without gradients).
    """
    if not is_distributed():
        return
    params = [p for p in params if p.requires_grad]
    if not params:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1).float() for g in grads]).to(_COMM_DEVICE)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    flat /= world()
    offset = 0
    for p in params:
        n = p.numel()
        if p.grad is not None:
            p.grad.copy_(flat[offset : offset + n].view_as(p).to(p.grad.device, p.grad.dtype))
        offset += n


def broadcast_parameters(module: nn.Module, src: int = 0) -> None:
    """Copy the parameters and buffers of rank ``src`` to every rank (as DDP does when it wraps a module)."""
    if not is_distributed():
        return
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            buf = t.detach().to(_COMM_DEVICE)
            dist.broadcast(buf, src=src)
            if buf is not t:
                t.copy_(buf.to(t.device))


def wrap_ddp(module: nn.Module, device: torch.device, find_unused_parameters: bool = True) -> nn.Module:
    """``DistributedDataParallel(module)`` on this rank's device (the module itself when alone).

    ``find_unused_parameters=True`` lets a step leave parameters without gradient (a head whose
    loss weight reached zero, DCAN's auxiliary classifiers): DDP then walks the autograd graph
    after each forward to mark them ready instead of waiting for their gradients forever.
    """
    if not is_distributed():
        return module
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index if device.index is not None else 0] if device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, find_unused_parameters=find_unused_parameters)


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks whose backward is the sum of the ranks' gradients (every rank's output is the same sum)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        out = x.detach().clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def all_reduce_sum_autograd(x: torch.Tensor) -> torch.Tensor:
    """Differentiable sum of ``x`` over ranks (``x`` itself when alone)."""
    return _AllReduceSum.apply(x) if is_distributed() else x


class SyncBatchNormAllReduce(nn.modules.batchnorm._BatchNorm):
    """Batch norm with the statistics of the global batch, over any backend (gloo on the CPU).

    Training mode, with ``B_r`` samples and ``M`` positions per channel on rank ``r`` and
    ``N = M sum_r B_r``::

        mu = (1 / N) sum_r sum_{b, m} x             (all-reduce of per-rank sums)
        var = (1 / N) sum_r sum_{b, m} (x - mu)^2    (second all-reduce: the two-pass variance)
        y = gamma (x - mu) / sqrt(var + eps) + beta

    and the running statistics move by ``momentum`` towards ``mu`` and the unbiased
    ``var N / (N - 1)``, as ``nn.BatchNorm``. The all-reduces are differentiable
    (:func:`all_reduce_sum_autograd`: the backward of a sum over ranks is the sum of the ranks'
    gradients), so autograd yields the gradient of the global batch norm. On one process, or in eval mode, it is
    ``nn.BatchNorm``. Equal to ``nn.BatchNorm`` over the concatenated batch (tested).

    Shape:
        input ``(B, C, *S)`` -> output of the same shape.

    Example:
        >>> bn = SyncBatchNormAllReduce(4)
        >>> print(bn(torch.randn(2, 4, 8, 8)).shape)
        torch.Size([2, 4, 8, 8])
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Normalise with the global batch's statistics in training, the running ones in eval."""
        self._check_input_dim(input)
        if not (self.training and is_distributed()):
            return super().forward(input)
        all_reduce = all_reduce_sum_autograd
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = (1, c) + (1,) * (input.dim() - 2)
        x = input.float()
        local_n = torch.tensor([float(x.numel() // c)], device=x.device)
        head = all_reduce(torch.cat([x.sum(dims), local_n]))  # (C + 1,): sums and the count
        n = head[-1].detach()
        mean = head[:-1] / n
        centred = x - mean.view(shape)
        var = all_reduce(centred.pow(2).sum(dims)) / n
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked += 1
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(m * mean.detach().to(self.running_mean.dtype))
                unbiased = var.detach() * n / torch.clamp(n - 1, min=1)
                self.running_var.mul_(1 - m).add_(m * unbiased.to(self.running_var.dtype))
        y = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(input.dtype)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Batch-norm layers -> synchronised ones (PyTorch's on CUDA, :class:`SyncBatchNormAllReduce` elsewhere).

    Parameters and buffers are kept (the same tensors), so optimisers and checkpoints are unaffected;
    the state-dict keys are those of ``nn.BatchNorm``, so a checkpoint predicts with the plain network.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, SyncBatchNormAllReduce):
        new = SyncBatchNormAllReduce(module.num_features, module.eps, module.momentum, module.affine,
                                     module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        new.running_mean, new.running_var = module.running_mean, module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, device))
    return module

