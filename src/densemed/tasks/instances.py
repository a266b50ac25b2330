"""``instances``: objects that touch, from instance label maps (one integer id per object).

Recipe section::

    task:
      name: instances
      targets:                      # derived per-image targets -> batch keys
        contour: {name: contour, thickness: 2}
      postprocess: {method: dcan, t_o: auto, t_c: auto, min_size: auto, dilate: 3}
      select: dice                  # best.pt by: dice | aji | object_f1
      seams: 0                      # pixels of background drawn on each side of a contact

Data: label files hold instance ids (0 background, 1..N objects; checked); the class label is
``id > 0`` and each target of ``targets`` is computed once per training image from the ids
(:mod:`densemed.targets`). Targets declare how geometric augmentation treats them
(:func:`densemed.targets.augment_mode`): ``nearest`` ones are copied, ``refuse`` forbids
geometric augmentation.

Touching objects: with ``seams: w`` (pixels, default 0) the class target and every target map are
derived from the ids with ``w`` pixels removed on each side of every contact between two objects
(:func:`densemed.targets.seams.separate`, the U-Net paper's separation borders), so the network
learns to leave background between touching objects and ``border_weights`` weigh those seams.
Validation scores and the tuning of ``auto`` options compare with the true, unseparated ids;
``watershed``'s option ``seams`` gives the contacts back.

Validation and ``best.pt``: with ``select: dice`` (default) as in ``segmentation`` (mean foreground
Dice, or ``-val_loss`` for a regression main head). With ``select: aji`` or ``object_f1`` every
validation (every ``train.val_every`` epochs and the final one) also turns each whole validation
image into instances with ``postprocess`` (options still ``auto`` at their defaults) and records
``val_aji`` (mean over images) and ``val_object_f1`` (pooled over images, the GlaS F1 of a set);
the chosen one is ``val_score``. Dice stays the default: it needs no post-processing per image
nor, for methods that read more than the foreground, a second forward pass of all heads, and it
still ranks epochs while the network finds no object yet (every object score then 0).

After training, options of ``postprocess`` set to ``auto`` are chosen on the validation images by
the method's tuner (:mod:`densemed.infer.postprocess.tuning`; DeepDistance's ``h`` by detection
F1) with the weights of ``best.pt`` and of ``last.pt`` and written into each checkpoint's recipe.
``densemed predict --instances`` uses ``postprocess``; ``densemed evaluate --task instances``
gives object F1, object Dice and Hausdorff, AJI, PQ.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from densemed.data.dataset import Case, read_image_case, read_label_case, target_maps
from densemed.data.normalize import normalize
from densemed.errors import DensemedError
from densemed.infer.runner import network_outputs, window_of
from densemed.nets.heads import main_kind, to_labels
from densemed.tasks.base import FitContext
from densemed.tasks.registry import register
from densemed.tasks.segmentation import Segmentation, check_no_geometric


@dataclass
class InstanceOptions:
    """The ``task`` section of an instance recipe."""

    #: derived per-image targets: {batch key: {name: <densemed.targets name>, **params}}
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: post-processing for ``predict --instances``: {method: ..., **params}; default by the network
    postprocess: dict[str, Any] | None = None
    #: the validation score that picks ``best.pt``: ``dice`` (pixels), ``aji`` or ``object_f1`` (objects)
    select: str = "dice"
    #: pixels set to background on each side of a contact between two objects in the training targets
    seams: int = 0


#: values of ``task.select``
SELECT = ("dice", "aji", "object_f1")


@register
class Instances(Segmentation):
    """Instance segmentation from instance label maps (see the module docstring)."""

    name = "instances"
    Options = InstanceOptions
    writes = "label maps (instance maps with --instances)"

    def check(self, source: str) -> None:
        """Targets exist, options of the post-processing method are known, augmentation allowed."""
        from densemed import targets
        from densemed.infer import postprocess

        if not isinstance(self.opts.targets, dict):
            raise DensemedError(f"{source}: task.targets must be a mapping of batch key -> target spec")
        for key, spec in self.opts.targets.items():
            if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
                raise DensemedError(f"{source}: task.targets.{key} must be a mapping with a target 'name'")
            params = {k: v for k, v in spec.items() if k != "name"}
            targets.build(spec["name"], **params)
            if targets.augment_mode(spec["name"]) == "refuse":
                check_no_geometric(self.cfg, f"target {key!r} ({spec['name']})")
        post = self.opts.postprocess
        if post is not None:
            if not isinstance(post, dict):
                raise DensemedError(f"{source}: task.postprocess must be a mapping {{method: ..., **options}}")
            params = {k: v for k, v in post.items() if k != "method"}
            if "method" in post:
                postprocess.check_params(str(post["method"]), params)
        if self.opts.select not in SELECT:
            raise DensemedError(f"{source}: task.select must be one of {', '.join(SELECT)}, got {self.opts.select!r}")
        if self.opts.seams < 0:  # the type (a whole number) is checked with the options
            raise DensemedError(f"{source}: task.seams must be a whole number of pixels >= 0, got {self.opts.seams}")

    def nearest_keys(self) -> frozenset[str]:
        """Targets that declare nearest-neighbour resampling."""
        from densemed import targets

        return frozenset(k for k, s in self.opts.targets.items() if targets.augment_mode(s["name"]) == "nearest")

    def _case(self, name: str, image: np.ndarray, ids: np.ndarray, spacing: Any, meta: Any) -> Case:
        """Class = id > 0 and targets from the ids, both after ``seams``; the true ids kept for scoring."""
        from densemed.targets.seams import separate

        shown = separate(ids, self.opts.seams) if self.opts.seams else ids
        maps = target_maps(shown, spacing, self.opts.targets)
        return Case(name, image, (shown > 0).astype(np.int64), maps, meta, ids.astype(np.int32))

    def load_case(self, name: str, image_path: Path, label_path: Path | None) -> Case:
        """Image normalised; ids checked; class and targets from the ids (see ``seams``)."""
        from densemed.targets import check_instances

        image, meta = read_image_case(self.cfg, image_path)
        raw, lmeta = read_label_case(self.cfg, label_path, image.shape[1:])
        # the ids are on the target grid when data.target_spacing is set: derived maps use its spacing
        spacing = self.cfg.data.target_spacing or lmeta.spacing
        return self._case(name, image, check_instances(raw, label_path), spacing, meta)

    def synthetic_case(self, name: str, image: np.ndarray, instances: np.ndarray) -> Case:
        """Generated cells with their ids and targets."""
        return self._case(name, normalize(image, self.cfg.data.normalize), instances, None, None)

    def postprocess_spec(self, model: nn.Module, method: str | None) -> tuple[str, dict[str, Any]]:
        """``task.postprocess`` (its own options only apply to its own method); the flag overrides."""
        from densemed.infer import postprocess
        from densemed.tasks.segmentation import default_instance_method

        params = dict(self.opts.postprocess or {})
        recipe_method = str(params.pop("method", "") or default_instance_method(model))
        chosen = method or recipe_method
        if chosen != recipe_method:
            params = {}
        postprocess.check_params(chosen, params, "--instance-method" if method else "task.postprocess")
        return chosen, params

    def after_fit(self, ctx: FitContext) -> dict[str, Any]:
        """Resolve ``auto`` options of the post-processing on the validation images (method's tuner)."""
        from densemed.infer import postprocess

        method, params = self.postprocess_spec(ctx.model, None)
        tune = postprocess.get_tuner(method)
        if tune is None or "auto" not in params.values():
            return {}
        cases = [c for c in ctx.val_cases if c.instances is not None]
        outs = [network_outputs(ctx.model, torch.from_numpy(c.image)[None], window_of(self.cfg),
                                self.cfg.infer.overlap, ctx.device) for c in cases]
        found = tune(outs, [c.instances for c in cases], params)
        if found is None:
            return {}
        chosen, scores = found
        ctx.log(f"{method}: {chosen} chosen on {len(cases)} validation images ({len(scores)} candidates, "
                f"best score {max(scores.values()):.4f})")
        post = {**(self.opts.postprocess or {}), **chosen}
        return {"postprocess": post, "_scores": {str(k): v for k, v in scores.items()}}

    def validate(
        self, model: nn.Module, loss_fn: nn.Module, val_cases: list[Case], val_patches: list[dict],
        device: torch.device,
    ) -> dict[str, Any]:
        """Segmentation's record; with ``select: aji | object_f1`` also object scores, one of them ``val_score``."""
        if self.opts.select == "dice" or not val_cases:
            return super().validate(model, loss_fn, val_cases, val_patches, device)
        from scipy import ndimage

        from densemed.metrics.instance import aggregated_jaccard, object_f1
        from densemed.tasks.segmentation import foreground_dice, patch_loss_record, resolve_auto

        rec = patch_loss_record(self, model, loss_fn, val_patches, self.cfg.data.batch_size, device)
        method, params = self.postprocess_spec(model, None)
        params = resolve_auto(method, params)
        logits = main_kind(model) == "logits"
        dice, aji = [], []
        tp = fp = fn = 0
        for case in val_cases:
            x = torch.from_numpy(case.image)[None]
            probs = self.infer(model, x, device, tta=False) if logits else None
            if probs is not None:
                dice.append(foreground_dice(to_labels(probs)[0], case.label, self.cfg.data.num_classes))
            # the main head's probabilities are reused when the method reads only the foreground
            labels = self.instance_labels(model, x, probs, method, params, device)  # type: ignore[arg-type]
            truth = case.instances if case.instances is not None else ndimage.label(case.label > 0)[0]
            aji.append(aggregated_jaccard(labels, truth))
            f1 = object_f1(labels, truth)
            tp, fp, fn = tp + f1["tp"], fp + f1["fp"], fn + f1["fn"]
        if dice:
            mean = np.mean(dice, axis=0)
            rec["val_dice_per_class"] = [float(v) for v in mean]
            rec["val_dice"] = float(mean.mean())
        rec["val_aji"] = float(np.mean(aji))
        rec["val_object_f1"] = float(2 * tp / (2 * tp + fp + fn)) if tp + fp + fn else 1.0
        rec["val_score"] = rec[f"val_{self.opts.select}"]
        return rec

    @classmethod
    def evaluate_folders(cls, pred: Path, truth: Path, options: dict[str, Any]) -> dict[str, Any]:
        """Object-level scores (:func:`densemed.metrics.instance.evaluate_instance_folders`)."""
        from densemed.metrics.instance import evaluate_instance_folders

        return evaluate_instance_folders(pred, truth)

    @classmethod
    def format_result(cls, result: dict[str, Any]) -> str:
        """The object-level table."""
        from densemed.metrics.instance import format_instance_table

        return format_instance_table(result)
