"""``segmentation``: one class per pixel (voxel) from class label maps.

Data: ``images/`` + ``labels/`` of the same stems; label values mapped to classes by
``data.label_map`` (``{0, 255}`` means background/foreground). Validation: the loss on fixed
validation patches and the Dice of every foreground class on whole validation images, predicted by
the same sliding window as ``densemed predict`` (no TTA); ``best.pt`` by the mean foreground Dice. A
network whose main head is not class logits (e.g. DeepDistance without its mask decoder) is scored
by the validation loss (``val_score = -val_loss``).

Prediction writes the label map in the input's format (PNG/TIFF for 2D, binary 2D maps as 0/255;
NIfTI with the input's header for 3D), optionally the foreground probability, and with
``--instances`` an instance map from a post-processing method (:mod:`densemed.infer.postprocess`):
``task.postprocess`` where the task has it, else the network's ``default_instances`` declaration,
else ``contour_watershed`` for a network with a ``contour`` head, else the distance-transform
``watershed``. A main head of regression maps is written as one float map per regression head.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from densemed.data.dataset import Case, map_labels, read_image_case, read_label_case
from densemed.data.io import ImageMeta, split_name, write_float, write_label
from densemed.data.normalize import normalize
from densemed.errors import DensemedError
from densemed.infer.runner import network_outputs, predict_main, window_of
from densemed.nets import all_outputs
from densemed.nets.heads import foreground, heads_of, main_kind, to_labels
from densemed.tasks.base import Task
from densemed.tasks.registry import register


def write_label_map(outputs: torch.Tensor, meta: ImageMeta, target: Path) -> Path:
    """Write the label map of ``(1, C, *S)`` probabilities to ``target``; returns ``target``.

    Binary maps outside NIfTI are written as 0/255, the convention of the 2D data folders.
    """
    labels = to_labels(outputs)[0].numpy()
    if outputs.shape[1] == 2 and meta.format != "nifti":
        labels = labels * 255
    write_label(target, labels, meta)
    return target

def float_suffix(meta: ImageMeta) -> str:
    """File suffix of float maps written beside a label map: NIfTI for volumes, TIFF for 2D."""
    return ".nii.gz" if meta.format == "nifti" else ".tif"


def patch_loss(task: Task, model: nn.Module, loss_fn: nn.Module, patches: list[dict], batch_size: int,
               device: torch.device, prepare: Callable[[dict[str, torch.Tensor], int], dict[str, torch.Tensor]]
               | None = None) -> tuple[float, dict[str, float], list[Any]]:
    """Mean loss (and per-head terms) on fixed validation patches; also returns the outputs.

    Every head is computed (:func:`densemed.nets.all_outputs`), so multi-task losses see all terms.
    ``prepare(batch, start)`` (optional) completes each stacked batch of patches ``start ..
    start + batch_size - 1`` before the forward pass (a task's simulated inputs, derived classes).
    """
    model.eval()
    losses, terms, outs = [], {}, []
    with torch.no_grad():
        for k in range(0, len(patches), batch_size):
            chunk = patches[k : k + batch_size]
            batch = {key: torch.stack([p[key] for p in chunk]).to(device) for key in chunk[0]}
            if prepare is not None:
                batch = prepare(batch, k)
            with all_outputs(model):
                out = model(*task.model_args(model, batch))
            losses.append(float(task.compute_loss(loss_fn, out, batch)))
            for name, v in getattr(loss_fn, "last_terms", {}).items():
                terms.setdefault(name, []).append(v)
            outs.append(out)
    return float(np.mean(losses)), {k: float(np.mean(v)) for k, v in terms.items()}, outs


def patch_loss_record(task: Task, model: nn.Module, loss_fn: nn.Module, patches: list[dict], batch_size: int,
                      device: torch.device, prepare: Callable[[dict[str, torch.Tensor], int],
                                                              dict[str, torch.Tensor]] | None = None) -> dict[str, Any]:
    """:func:`patch_loss` as validation-record entries: ``val_loss`` and, for multi-task losses, ``val_terms``."""
    loss, terms, _ = patch_loss(task, model, loss_fn, patches, batch_size, device, prepare)
    rec: dict[str, Any] = {"val_loss": loss}
    if terms:
        rec["val_terms"] = terms
    return rec


def foreground_dice(pred: torch.Tensor, label: np.ndarray, num_classes: int) -> np.ndarray:
    """Dice of every foreground class of one image: ``pred`` ``(*S)`` int64, ``label`` ``(*S)`` -> ``(K - 1,)``."""
    from densemed.metrics.confusion import confusion, dice

    return np.asarray(dice(confusion(pred, torch.from_numpy(label), max(num_classes, 2))))[1:]


def default_instance_method(model: nn.Module) -> str:
    """The network's declared ``default_instances``, else by its heads (contour -> contour_watershed)."""
    declared = getattr(model, "default_instances", None)
    if declared:
        return str(declared)
    return "contour_watershed" if "contour" in heads_of(model) else "watershed"


def resolve_auto(method: str, params: dict[str, Any]) -> dict[str, Any]:
    """Options still ``auto`` (a run stopped before tuning) get the method's own default."""
    from densemed.infer import postprocess

    sig = inspect.signature(postprocess.get(method).fn).parameters
    return {k: (sig[k].default if v == "auto" and k in sig else v) for k, v in params.items()}


@register
class Segmentation(Task):
    """Semantic segmentation from class label maps (see the module docstring)."""

    name = "segmentation"

    # -- data -------------------------------------------------------------------------------------
    def load_case(self, name: str, image_path: Path, label_path: Path | None) -> Case:
        """Image normalised; label values mapped to class indices."""
        image, meta = read_image_case(self.cfg, image_path)
        raw, _ = read_label_case(self.cfg, label_path, image.shape[1:])
        return Case(name, image, map_labels(raw, self.cfg.data, label_path), {}, meta)

    def synthetic_case(self, name: str, image: np.ndarray, instances: np.ndarray) -> Case:
        """Generated cells: foreground = any object."""
        img = normalize(image, self.cfg.data.normalize)
        return Case(name, img, (instances > 0).astype(np.int64), {}, None, instances.astype(np.int32))

    # -- validation -------------------------------------------------------------------------------
    def validate(
        self, model: nn.Module, loss_fn: nn.Module, val_cases: list[Case], val_patches: list[dict], device: torch.device
    ) -> dict[str, Any]:
        """Loss on the fixed patches; Dice per foreground class on whole images (mean = ``val_score``)."""
        if not val_cases:
            return {}
        loss, terms, _ = patch_loss(self, model, loss_fn, val_patches, self.cfg.data.batch_size, device)
        rec: dict[str, Any] = {"val_loss": loss}
        if terms:
            rec["val_terms"] = terms
        if main_kind(model) != "logits":  # no classes to score: lower loss is better
            rec["val_score"] = -loss
            return rec
        from densemed.metrics.confusion import confusion, dice

        k = max(self.cfg.data.num_classes, 2)
        per_class = []
        for case in val_cases:
            x = torch.from_numpy(case.image)[None]
            pred = to_labels(self.infer(model, x, device, tta=False))[0]
            per_class.append(np.asarray(dice(confusion(pred, torch.from_numpy(case.label), k)))[1:])
        mean = np.mean(per_class, axis=0)
        rec["val_dice_per_class"] = [float(v) for v in mean]
        rec["val_dice"] = float(mean.mean())
        rec["val_score"] = rec["val_dice"]
        return rec

    # -- inference --------------------------------------------------------------------------------
    def infer(self, model: nn.Module, image: torch.Tensor, device: torch.device,
              tta: bool | None = None) -> torch.Tensor:
        """Sliding-window probabilities of the main head ``(1, K, *S)`` (values for regression heads)."""
        return predict_main(model, image, self.cfg, device, tta)

    def postprocess_spec(self, model: nn.Module, method: str | None) -> tuple[str, dict[str, Any]]:
        """``(method, params)`` for ``--instances``: the flag's method, else the network's default."""
        from densemed.infer import postprocess

        chosen = method or default_instance_method(model)
        postprocess.get(chosen)
        return chosen, {}

    def instance_labels(self, model: nn.Module, x: torch.Tensor, probs: torch.Tensor, method: str,
                        params: dict[str, Any], device: torch.device,
                        shape: tuple[int, ...] | None = None) -> np.ndarray:
        """Instance map of one image: from the predicted foreground when that is all the method needs.

        ``probs`` are on ``x``'s grid (the network's), where the post-processing runs and its ``auto``
        options were tuned; with ``shape`` the map is resized to it (nearest neighbour,
        :func:`densemed.infer.postprocess.resize_labels`), e.g. the input's grid after resampling.
        """
        from densemed.infer import postprocess

        if set(postprocess.get(method).needs) <= {"foreground"} and main_kind(model) == "logits":
            outputs = {"foreground": foreground(probs[0], channel_dim=0).numpy()}
        else:
            outputs = network_outputs(model, x, window_of(self.cfg), self.cfg.infer.overlap, device)
        labels = postprocess.to_instances(outputs, method, **resolve_auto(method, params))
        return labels if shape is None else postprocess.resize_labels(labels, shape)

    def write(
        self, model: nn.Module, image: torch.Tensor, outputs: torch.Tensor, source: Path, meta: ImageMeta,
        out_dir: Path, norm: tuple[np.ndarray, np.ndarray], options: dict[str, Any],
    ) -> list[Path]:
        """Label map (or instances, or regression maps) and optionally the foreground probability."""
        stem, suffix = split_name(source)
        fsuffix = float_suffix(meta)
        device = options.get("device", torch.device("cpu"))
        if options.get("instances"):
            method, params = self.postprocess_spec(model, options.get("instance_method"))
            net = options.get("network_outputs", outputs)  # the network's grid, where options were tuned
            labels = self.instance_labels(model, image, net, method, params, device, tuple(outputs.shape[2:]))
            target = out_dir / f"{stem}{suffix}"
            write_label(target, labels, meta)
            return [target]
        if main_kind(model) != "logits":  # e.g. DeepDistance: one float map per regression head
            maps = network_outputs(model, image, window_of(self.cfg), self.cfg.infer.overlap, device)
            written = []
            for name, head in heads_of(model).items():
                if head.kind != "logits" and name in maps:
                    written.append(out_dir / f"{stem}_{name}{fsuffix}")
                    write_float(written[-1], maps[name], meta)
            return written
        written = [write_label_map(outputs, meta, out_dir / f"{stem}{suffix}")]
        if options.get("probabilities"):
            written.append(out_dir / f"{stem}_prob{fsuffix}")
            write_float(written[-1], foreground(outputs)[0].numpy(), meta)
        return written

    # -- evaluation -------------------------------------------------------------------------------
    @classmethod
    def evaluate_folders(cls, pred: Path, truth: Path, options: dict[str, Any]) -> dict[str, Any]:
        """Dice, IoU, precision, recall, HD95 per image and class (:mod:`densemed.metrics.evaluate`).

        With ``options["membranes"]`` also ISBI 2012's pixel and Rand errors under ``"membranes"``
        (:mod:`densemed.metrics.membrane`); those alone when every prediction is a map of cell ids
        (``predict --instances --instance-method cells``), whose ids are not classes.
        """
        from densemed.metrics.evaluate import evaluate_folders

        membranes = None
        if options.get("membranes"):
            from densemed.metrics.membrane import evaluate_membrane_folders

            membranes = evaluate_membrane_folders(pred, truth, options.get("label_map"))
            if all(im["kind"] == "cells" for im in membranes["images"]):
                return {"membranes": membranes}
        result = evaluate_folders(pred, truth, num_classes=options.get("num_classes"),
                                  label_map=options.get("label_map"), class_names=options.get("class_names"))
        if membranes is not None:
            result["membranes"] = membranes
        return result

    @classmethod
    def format_result(cls, result: dict[str, Any]) -> str:
        """The per-class table (and the membrane table when scored)."""
        from densemed.metrics.evaluate import format_table

        if "membranes" not in result:
            return format_table(result)
        from densemed.metrics.membrane import format_membrane_table

        tables = [format_table(result)] if "images" in result else []
        return "\n\n".join(tables + [format_membrane_table(result["membranes"])])


def check_no_geometric(cfg: Any, what: str) -> None:
    """Refuse geometric augmentation for targets that cannot follow it."""
    aug = cfg.augment
    if aug == "default" or (isinstance(aug, dict) and any(aug.get(k) for k in ("flip", "rot90", "affine", "elastic"))):
        raise DensemedError(f"augment: {what} cannot follow geometric augmentation; remove flip/rot90/affine/elastic")
