"""The task protocol: everything that varies by kind of problem besides the network and the loss.

A task is registered by name (:func:`densemed.tasks.register`) and built from a recipe
(:func:`densemed.tasks.build`). It declares

* its recipe section: a dataclass ``Options`` typed and checked like ``data`` or ``train``
  (the recipe's ``task: {name: ..., **options}``);
* its data: how cases are discovered and loaded (:meth:`Task.load_case`), which batch keys
  geometric augmentation must copy by nearest neighbour (:meth:`Task.nearest_keys`);
* its training: what the model receives from a batch (:meth:`Task.model_args`), how the loss is
  called (:meth:`Task.compute_loss`), the training module that owns networks and optimisers
  (:meth:`Task.training_module`), how it validates and which score picks ``best.pt``
  (:meth:`Task.validate`), and an after-fit hook (:meth:`Task.after_fit`);
* its inference: how a whole image is inferred (:meth:`Task.infer`, sliding window or whole
  image) and written (:meth:`Task.write`);
* its evaluation of folders (:meth:`Task.evaluate_folders`, :meth:`Task.format_result`).

The training loop (:mod:`densemed.train.loop`), the predictor (:mod:`densemed.infer.predict`) and
the CLI call these methods and never test a task's name. Adding a task is a new module in this
package (imported in ``tasks/__init__.py``), plus its network(s), recipe and, where it brings
one, a data transform, block or loss.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import nn

from densemed.errors import DensemedError
from densemed.nets.heads import model_inputs

if TYPE_CHECKING:
    from densemed.config import Config
    from densemed.data.dataset import Case
    from densemed.data.io import ImageMeta
    from densemed.train.module import TrainingModule


@dataclass
class NoOptions:
    """A task without options."""


@dataclass
class FitContext:
    """What :meth:`Task.after_fit` may use: the run folder, the model, the validation cases."""

    out: Path
    model: nn.Module
    val_cases: list[Case]
    device: torch.device
    log: Callable[[str], None]


class Task:
    """Base class of every task; the defaults are those of supervised dense prediction.

    Args:
        cfg: the whole recipe; ``cfg.task`` holds ``name`` and the options of :attr:`Options`.
    """

    name: ClassVar[str] = ""
    Options: ClassVar[type] = NoOptions
    #: what ``densemed predict`` writes, for the CLI help
    writes: ClassVar[str] = "label maps"

    def __init__(self, cfg: Config, source: str = "recipe") -> None:
        from densemed.config import typed_section

        self.cfg = cfg
        opts = {k: v for k, v in cfg.task.items() if k != "name"}
        try:
            self.opts = typed_section(self.Options, opts, source, "task")
        except TypeError as exc:
            raise DensemedError(f"{source}: task: {exc}") from None
        self.check(source)

    def check(self, source: str) -> None:
        """Validate the options against the rest of the recipe (override; raise DensemedError)."""

    # -- data -------------------------------------------------------------------------------------
    def out_channels(self) -> int | None:
        """``out_channels`` given to the network builder (None: the builder's default)."""
        return int(self.cfg.data.num_classes)

    def needs_labels(self) -> bool:
        """Whether training cases need a label file beside each image."""
        return True

    def load_case(self, name: str, image_path: Path, label_path: Path | None) -> Case:
        """Read, check and normalise one case and compute its targets."""
        raise NotImplementedError

    def synthetic_case(self, name: str, image: np.ndarray, instances: np.ndarray) -> Case:
        """A case from generated demo data (an image and its instance map)."""
        raise DensemedError(f"task {self.name!r} cannot train on data.synthetic")

    def nearest_keys(self) -> frozenset[str]:
        """Float batch keys that geometric augmentation resamples by nearest neighbour."""
        return frozenset()

    # -- training ---------------------------------------------------------------------------------
    def model_args(self, model: nn.Module, batch: dict[str, torch.Tensor]) -> list[torch.Tensor | None]:
        """The network's positional inputs from a batch (its declared ``inputs``; absent keys -> None)."""
        return [batch.get(key) for key in model_inputs(model)]

    def compute_loss(self, loss_fn: nn.Module, out: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """Call the loss the way it asks: the whole batch, or ``(output, label, weights=...)``."""
        if getattr(loss_fn, "takes_batch", False):
            return loss_fn(out, batch)
        weights = batch.get("weights")
        target = batch["label"]
        return loss_fn(out, target, weights=weights) if weights is not None else loss_fn(out, target)

    def training_module(self, model: nn.Module, loss_fn: nn.Module, device: torch.device) -> TrainingModule:
        """The module that owns the networks, optimisers and ``train_step`` (default: one network)."""
        from densemed.train.module import SupervisedModule

        return SupervisedModule(self, model, loss_fn, self.cfg.train, device)

    def validate(
        self, model: nn.Module, loss_fn: nn.Module, val_cases: list[Case], val_patches: list[dict], device: torch.device
    ) -> dict[str, Any]:
        """Validation record with ``val_score`` (higher is better; picks ``best.pt``)."""
        raise NotImplementedError

    def after_fit(self, ctx: FitContext) -> dict[str, Any]:
        """Work at the end of training (e.g. tuning post-processing); returns recipe updates for ``task``."""
        return {}

    # -- inference --------------------------------------------------------------------------------
    def infer(self, model: nn.Module, image: torch.Tensor, device: torch.device,
              tta: bool | None = None) -> torch.Tensor:
        """Outputs ``(1, K, *S)`` on the CPU for one normalised image ``(1, C, *S)``."""
        raise NotImplementedError

    def write(
        self, model: nn.Module, image: torch.Tensor, outputs: torch.Tensor, source: Path, meta: ImageMeta,
        out_dir: Path, norm: tuple[np.ndarray, np.ndarray], options: dict[str, Any],
    ) -> list[Path]:
        """Write the results of one input file; returns the written files (the first is the main one).

        ``outputs`` are on the input's grid; when the recipe resampled the input
        (``data.target_spacing``), ``options["network_outputs"]`` holds them on the network's grid
        (``image``'s), where instance post-processing runs.
        """
        raise NotImplementedError

    # -- evaluation -------------------------------------------------------------------------------
    @classmethod
    def evaluate_folders(cls, pred: Path, truth: Path, options: dict[str, Any]) -> dict[str, Any]:
        """Score a folder of predictions against a folder of truths."""
        raise NotImplementedError

    @classmethod
    def format_result(cls, result: dict[str, Any]) -> str:
        """A printable table of :meth:`evaluate_folders`' result."""
        raise NotImplementedError


def options_dict(task: Task) -> dict[str, Any]:
    """The task's options as a plain dict (for messages and checkpoints)."""
    return dataclasses.asdict(task.opts)
