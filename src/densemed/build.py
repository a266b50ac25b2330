"""Factories used by training, prediction and every user feature: device, network, loss, augmentation.

This module sits below both ``densemed.train`` and ``densemed.infer`` (it imports neither), so
prediction never imports the training loop. Each factory turns a recipe section into an object
and turns a constructor's complaint into one :class:`~densemed.errors.DensemedError` line naming
the recipe key.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from densemed import nets
from densemed.errors import DensemedError
from densemed.export import OnnxPredictor, sidecar_path
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

    A path ending in ``.onnx`` loads an exported model instead (:func:`load_exported`).

    Returns:
        ``(model, recipe, checkpoint dict)`` (for ONNX: the exported model, the recipe rebuilt
        from its sidecar, the sidecar dict).
    """
    if str(path).lower().endswith(".onnx"):
        return load_exported(path)  # type: ignore[return-value]  # runs like a network, see OnnxNetwork
    from densemed.checkpoint import load, load_state, network_state
    from densemed.config import from_dict

    ckpt = load(path, device)
    cfg = from_dict(ckpt["config"], str(path))
    model = build_model(cfg, ckpt.get("in_channels"))
    load_state(model, network_state(ckpt), Path(path), cfg.model["name"], ckpt.get("net"))
    return model.to(device).eval(), cfg, ckpt


# -- exported models -------------------------------------------------------------------------------


def sidecar_meta(cfg: Config, in_channels: int) -> dict[str, Any]:
    """What another runtime needs to reproduce ``densemed predict`` with an exported network.

    The sliding window (``window``: the exported input size, ``overlap``, ``blend``), the
    normalisation (``normalize: {method, percentiles, window}``, ``window`` being the intensity
    window of ``normalize=window``), ``target_spacing``, the classes (``num_classes``,
    ``class_names``, ``label_map``) and the whole ``recipe`` (for ``densemed predict``).
    """
    from densemed import __version__

    d = cfg.data
    return {
        "densemed": __version__,
        "task": cfg.task_name,
        "dims": d.dims,
        "in_channels": int(in_channels),
        "window": list(cfg.infer.window or d.patch_size),  # the sliding window (densemed.infer.runner.window_of)
        "overlap": cfg.infer.overlap,
        "blend": cfg.infer.blend,
        "normalize": {"method": d.normalize, "percentiles": list(d.percentiles), "window": d.window},
        "target_spacing": d.target_spacing,
        "num_classes": d.num_classes,
        "class_names": d.class_names,
        "label_map": d.label_map,
        "recipe": cfg.to_dict(),
    }


def recipe_from_sidecar(meta: dict[str, Any], source: str) -> Config:
    """The recipe of an exported model: its sidecar's ``recipe``, with the keys it states on its own applied.

    A sidecar without ``recipe`` (written by hand for another exporter) gives the default recipe
    with those keys (a segmentation task).
    """
    from densemed.config import from_dict

    raw = meta.get("recipe") or {"task": {"name": meta.get("task") or "segmentation"}}
    cfg = from_dict(raw, source)
    d = cfg.data
    norm = meta.get("normalize") or {}
    d.dims = int(meta.get("dims", d.dims))
    d.normalize = str(norm.get("method", d.normalize))
    d.percentiles = list(norm.get("percentiles", d.percentiles))
    d.window = norm.get("window", d.window)
    d.target_spacing = meta.get("target_spacing", d.target_spacing)
    d.num_classes = int(meta.get("num_classes", d.num_classes))
    names = meta.get("class_names", d.class_names)
    d.class_names = {int(k): str(v) for k, v in names.items()} if names else None
    lut = meta.get("label_map", d.label_map)
    d.label_map = {int(k): int(v) for k, v in lut.items()} if lut else None
    if meta.get("window"):
        cfg.infer.window = [int(w) for w in meta["window"]]
    cfg.infer.overlap = float(meta.get("overlap", cfg.infer.overlap))
    cfg.infer.blend = str(meta.get("blend", cfg.infer.blend))
    return cfg


class OnnxNetwork(OnnxPredictor):
    """An exported ONNX model that the predictor and the tasks run like a network in eval mode.

    It has no submodules (so :func:`densemed.nets.all_outputs` leaves it alone: only the main head
    was exported), no parameters and stays on the CPU (onnxruntime's CPU provider).
    """

    training = False

    def modules(self) -> Iterator[nn.Module]:
        """No submodules."""
        return iter(())

    def parameters(self) -> Iterator[nn.Parameter]:
        """No trainable parameters."""
        return iter(())

    def to(self, *args: Any, **kwargs: Any) -> OnnxNetwork:
        """Stays where onnxruntime runs it."""
        return self


def load_exported(path: PathType) -> tuple[OnnxNetwork, Config, dict[str, Any]]:
    """An exported ``.onnx`` model with the recipe rebuilt from its JSON sidecar (``<path>.json``).

    Returns:
        ``(model, recipe, sidecar dict)``.

    Raises:
        DensemedError: the model or its sidecar is missing or unreadable.
    """
    import json

    path = Path(path)
    side = sidecar_path(path)
    if not path.is_file():
        raise DensemedError(f"{path}: ONNX model not found")
    if not side.is_file():
        raise DensemedError(f"{side}: sidecar not found; `densemed export` writes it beside the model "
                            "(normalisation, window, classes)")
    try:
        meta = json.loads(side.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DensemedError(f"{side}: cannot read the sidecar ({exc})") from None
    if not isinstance(meta, dict):
        raise DensemedError(f"{side}: expected a JSON object")
    model = OnnxNetwork(path)
    return model, recipe_from_sidecar(meta, str(side)), meta
