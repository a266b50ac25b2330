"""``image``: image-to-image restoration; here super-resolution of thick-slice volumes (DeepResolve).

Recipe section::

    task: {name: image, factor: 2, axis: 2, val_full_images: false}

Data: high-resolution (thin-slice) volumes in ``images/`` (no labels). Each is normalised, and the
network input is the simulated thick-slice volume brought back to the grid,
``degrade(hr, factor, axis)`` (:mod:`densemed.data.sr`); the target (batch key ``target``) is
``hr``. The loss is called as ``loss(output, target)``. Validation: the loss and the PSNR of the
fixed validation patches, each against its volume's intensity range (``val_full_images: true``:
whole volumes, slow on a CPU); ``best.pt`` by PSNR. Prediction writes the restored volume in the
input's intensities (the normalisation undone) and format; ``densemed evaluate --task image``
(alias ``sr``) gives PSNR and SSIM, optionally beside a baseline folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from densemed.data.dataset import Case, read_image_case
from densemed.data.io import ImageMeta, split_name, write_float
from densemed.errors import DensemedError
from densemed.infer.runner import predict_main
from densemed.tasks.base import Task
from densemed.tasks.registry import register
from densemed.tasks.segmentation import float_suffix, patch_loss


@dataclass
class ImageOptions:
    """The ``task`` section of a super-resolution recipe."""

    factor: int = 2
    axis: int = 2
    #: PSNR on whole validation volumes instead of on the fixed validation patches
    val_full_images: bool = False


@register
class ImageRestoration(Task):
    """Super-resolution: thick-slice input, thin-slice target (see the module docstring)."""

    name = "image"
    Options = ImageOptions
    writes = "restored images"

    def check(self, source: str) -> None:
        """Factor a positive integer, axis one of the volume's axes."""
        o = self.opts
        if not isinstance(o.factor, int) or isinstance(o.factor, bool) or o.factor < 1:
            raise DensemedError(f"{source}: task.factor must be a positive integer, got {o.factor!r}")
        if not isinstance(o.axis, int) or isinstance(o.axis, bool) or not 0 <= o.axis < self.cfg.data.dims:
            raise DensemedError(f"{source}: task.axis must be in 0..{self.cfg.data.dims - 1}, got {o.axis!r}")

    def out_channels(self) -> int | None:
        """The restoring network's default (one image channel)."""
        return None

    def needs_labels(self) -> bool:
        """Only images: the target is the image itself."""
        return False

    def load_case(self, name: str, image_path: Path, label_path: Path | None) -> Case:
        """Input = degraded volume, ``target`` = the normalised high-resolution volume."""
        from densemed.data.sr import degrade

        hr, meta = read_image_case(self.cfg, image_path)
        if hr.ndim - 1 <= self.opts.axis:
            raise DensemedError(f"{image_path}: no axis {self.opts.axis} in an image of shape {hr.shape[1:]}")
        lr = np.stack([degrade(c, self.opts.factor, self.opts.axis) for c in hr]).astype(np.float32)
        return Case(name, lr, None, {"target": hr.astype(np.float32)}, meta)

    def compute_loss(self, loss_fn: nn.Module, out: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``loss(output, target)``."""
        if getattr(loss_fn, "takes_batch", False):
            return loss_fn(out, batch)
        return loss_fn(out, batch["target"])

    def validate(
        self, model: nn.Module, loss_fn: nn.Module, val_cases: list[Case], val_patches: list[dict], device: torch.device
    ) -> dict[str, Any]:
        """Loss and PSNR (dB) of the validation patches (or whole volumes); ``val_score`` = PSNR."""
        if not val_cases:
            return {}
        from densemed.metrics.image_quality import psnr

        loss, _, outs = patch_loss(self, model, loss_fn, val_patches, self.cfg.data.batch_size, device)
        ranges = [float(c.maps["target"].max() - c.maps["target"].min()) for c in val_cases]
        if self.opts.val_full_images:
            scores = [
                psnr(self.infer(model, torch.from_numpy(c.image)[None], device)[0].numpy(), c.maps["target"],
                     data_range=r)
                for c, r in zip(val_cases, ranges)
            ]
        else:
            per_case = self.cfg.data.val_patches_per_image  # fixed_patches: per_case patches per case, in order
            preds = torch.cat([o.float().cpu() for o in outs]).numpy()
            scores = [
                psnr(pred, patch["target"].numpy(), data_range=ranges[k // per_case])
                for k, (pred, patch) in enumerate(zip(preds, val_patches))
            ]
        value = float(np.mean(scores))
        return {"val_loss": loss, "val_psnr": value, "val_score": value}

    def infer(self, model: nn.Module, image: torch.Tensor, device: torch.device, tta: bool | None = None) -> torch.Tensor:
        """The restored image ``(1, C, *S)`` by sliding window (no activation)."""
        return predict_main(model, image, self.cfg, device, tta)

    def write(
        self, model: nn.Module, image: torch.Tensor, outputs: torch.Tensor, source: Path, meta: ImageMeta,
        out_dir: Path, norm: tuple[np.ndarray, np.ndarray], options: dict[str, Any],
    ) -> list[Path]:
        """The restored image in the input's intensities (the per-volume normalisation undone)."""
        stem, _ = split_name(source)
        shift, scale = norm
        target = out_dir / f"{stem}{float_suffix(meta)}"
        write_float(target, outputs[0, 0].numpy() * scale[0] + shift[0], meta)
        return [target]

    @classmethod
    def evaluate_folders(cls, pred: Path, truth: Path, options: dict[str, Any]) -> dict[str, Any]:
        """PSNR and SSIM per volume (:func:`densemed.metrics.image_quality.evaluate_sr_folders`)."""
        from densemed.metrics.image_quality import evaluate_sr_folders

        return evaluate_sr_folders(pred, truth, baseline=options.get("baseline"))

    @classmethod
    def format_result(cls, result: dict[str, Any]) -> str:
        """The PSNR/SSIM table."""
        from densemed.metrics.image_quality import format_sr_table

        return format_sr_table(result)
