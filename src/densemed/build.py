"""Factories used by training, prediction and every user feature: device, network, loss, augmentation.

This module sits below both ``densemed.train`` and ``densemed.infer`` (it imports neither), so
prediction never imports the training loop. Each factory turns a recipe section into an object
and turns a constructor's complaint into one :class:`~densemed.errors.DensemedError` line naming
the recipe key.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from densemed import nets
from densemed.errors import DensemedError
from densemed.typing import Batch, PathType

if TYPE_CHECKING:
    from densemed.config import Config


def resolve_device(spec: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; anything else is passed to torch."""
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError):
        raise DensemedError(f"train.device: unknown device {spec!r} (use auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DensemedError(f"train.device: {spec!r} requested but no CUDA device is available")
    return dev


def build_network(spec: dict[str, Any], dims: int, in_channels: int, out_channels: int | None,
                  key: str = "model") -> nn.Module:
    """A network from a recipe section ``{name, **options}``.

    ``in_channels``, ``out_channels`` (when not None and the builder takes it) and ``dims`` (when the
    builder takes it) are filled unless the section sets them.
    """
    params = dict(spec)
    name = params.pop("name", None)
    if not isinstance(name, str):
        raise DensemedError(f"{key}.name: a network name is required (see `densemed models`), got {name!r}")
    entry = nets.info(name)
    if dims not in entry.dims:
        raise DensemedError(f"{key}.name: {name!r} supports {entry.dims}D data, the recipe has data.dims={dims}")
    sig = inspect.signature(entry.builder).parameters
    params.setdefault("in_channels", in_channels)
    if out_channels is not None and "out_channels" in sig:
        params.setdefault("out_channels", out_channels)
    if "dims" in sig:
        params.setdefault("dims", dims)
    try:
        return nets.build(name, **params)
    except (TypeError, ValueError, KeyError) as exc:
        raise DensemedError(f"{key}: cannot build {name!r}: {exc}") from None


def build_model(cfg: Config, in_channels: int | None = None) -> nn.Module:
    """The recipe's network, with ``in_channels``/``out_channels``/``dims`` filled from the data and task."""
    from densemed import tasks

    task = tasks.build(cfg)
    return build_network(cfg.model, cfg.data.dims, in_channels or cfg.data.in_channels or 1, task.out_channels())


def build_loss(cfg: Config) -> nn.Module:
    """The recipe's loss module."""
    from densemed import losses

    params = dict(cfg.loss)
    name = params.pop("name", None)
    if not isinstance(name, str):
        raise DensemedError(f"loss.name: a loss name is required, got {name!r}")
    try:
        return losses.build(name, **params)
    except (TypeError, ValueError, KeyError) as exc:
        raise DensemedError(f"loss: cannot build {name!r}: {exc}") from None


def build_augment(cfg: Config) -> Callable[..., Batch] | None:
    """The recipe's batch augmentation, or None when the recipe has no ``augment`` section."""
    if cfg.augment is None:
        return None
    from densemed import augment

    try:
        return augment.build(cfg.augment)
    except (TypeError, ValueError, KeyError) as exc:
        raise DensemedError(f"augment: {exc}") from None


def load_model(path: PathType, device: torch.device | str = "cpu") -> tuple[nn.Module, Config, dict[str, Any]]:
    """Rebuild the main network of a checkpoint (a file or a run folder), load its weights, eval mode.

    Returns:
        ``(model, recipe, checkpoint dict)``.
    """
    from densemed.checkpoint import load, load_state, network_state
    from densemed.config import from_dict

    ckpt = load(path, device)
    cfg = from_dict(ckpt["config"], str(path))
    model = build_model(cfg, ckpt.get("in_channels"))
    load_state(model, network_state(ckpt), Path(path), cfg.model["name"], ckpt.get("net"))
    return model.to(device).eval(), cfg, ckpt
