"""``recon_seg``: segmentation from simulated undersampled MRI, with the reconstruction as a second task.

The problem of SegNetMRI (Sun, Fan, Ding, Huang, Paisley, IPMI 2019, arXiv 1805.02165): the
scanner measured only a fraction of k-space; the network sees the zero-filled image of those
measurements and must both segment and reconstruct it. Recipe section::

    task: {name: recon_seg, rate: 0.25, center_fraction: 0.08, mask: random, seed: 0,
           input_mode: magnitude, pretrain_epochs: 0, pretrain: null}

**Data**: image + label files as in ``segmentation``. Each image is normalised as a whole (use
``data.normalize: percentile`` with ``percentiles: [0, 100]`` so that the network's target is
the image itself, not a clipped copy). Images must have one channel (magnitude MR; an RGB
image is refused). 2D files (``data.dims: 2``) are slices; volumes (``data.dims: 3``) are
sliced by the network: ``model: {name: slicewise, axis: a, net: {name: segnetmri, ...}}``
(:mod:`densemed.nets.slicewise`) and a patch ``[1, H, W]`` (``axis: 0``) draws one slice per sample.

**Simulation** (:func:`densemed.data.kspace.simulate`, per 2D slice, after augmentation, in the
training module): k-space ``K = F x`` of the fully sampled slice ``x``; a Cartesian mask of
``rate`` of the rows (the first in-plane axis is the phase-encoding axis) with a fully sampled
centre of ``center_fraction``; measurements ``k0 = M K``. The batch then carries

    image   zero-filled ``F^-1 k0`` (``input_mode``: ``magnitude`` |x_zf|, 1 channel; ``complex``
            real and imaginary parts, 2 channels)
    kspace  ``k0`` as (real, imaginary) channels;  mask  ``M``;  target  ``x`` (the input's layout)
    label   the class labels (unchanged)

Masks: ``mask: random`` draws a new mask for every training slice from
``(train.seed, step, sample, slice)`` (:func:`densemed.data.slices.step_seed`); ``mask: fixed``
uses ``seed`` for every slice (one mask per slice height). Validation and prediction use the
fixed per-slice seeds ``(seed, slice index)`` (:func:`densemed.data.slices.slice_seed`) in both
modes, so every network compared sees the same measurements.

**Loss**: the recipe's; SegNetMRI's ``L = L_MRN + lambda L_seg`` is the multi-task loss with the
heads' names::

    loss: {name: multitask, tasks: {reconstruction: {loss: {name: mse}, weight: 1, target: target},
                                    segmentation:   {loss: {name: ce},  weight: lambda, target: label}}}

A network without a reconstruction head (a U-Net on the zero-filled image) takes a
segmentation-only loss. ``pretrain_epochs: K`` trains the reconstruction alone for the first K
epochs (the segmentation weight is 0, then the recipe's; the paper's MRN pre-training), then
both (:class:`ReconSegModule`).

**Two-phase schedule on unlabelled images** (``task.pretrain``; the paper pre-trains the MRN,
then fine-tunes jointly)::

    task:
      name: recon_seg
      pretrain: {roots: [brain_mri_templates], image_dir: images, axis: 0, steps: 200}   # or fraction: 0.25

Phase 1 lasts ``steps`` optimiser steps, or ``fraction`` of the run's schedule (its length in
steps: ``train.epochs`` worth, or what the time budget allows, re-estimated as the run goes;
the phase ends at the first step past it and never comes back). In phase 1 each step trains
on slices of the unlabelled images of ``roots`` (every image of ``<root>/<image_dir>``, a folder
resolved like ``data.root``; labels never read; volumes sliced along ``axis``, patches of the
in-plane ``data.patch_size`` drawn by :class:`densemed.data.volume_slices.SliceSource` from
``(train.seed, step, rank, sample)``, normalised with ``data.normalize``, not augmented: the
new mask per slice is the augmentation), undersampled like the training batches, with **only
the loss' reconstruction term** (``loss.tasks.reconstruction``, its weight included): the
segmentation output is not in the loss, so its decoders get no gradient and the optimiser
leaves them as they are. ``roots: []`` (default) pre-trains on the recipe's own training
patches, their labels unused. Phase 2 is the recipe's joint loss on the labelled batches,
same optimiser and learning-rate schedule. Validations in phase 1 report ``val_pretraining:
true`` and no ``val_score`` (so ``best.pt`` is never a phase-1 network). The step where phase 2
began is stored in the checkpoint, so ``--resume`` continues in the right phase. Needs ``loss:
{name: multitask}`` with a ``reconstruction`` task and a network with a ``reconstruction`` head;
``pretrain_epochs`` and ``pretrain`` exclude each other.

**Validation**: the loss on the fixed validation patches, then every whole validation image
(each slice whole: the data-consistency layer needs the whole k-space): the Dice of every
foreground class over the image (a volume: all its slices), ``val_dice`` their mean; the PSNR of
the reconstruction's magnitude against the fully sampled image (``val_psnr``, dB, data range the
image's max - min) when the network has a ``reconstruction`` head, and of the zero-filled input
(``val_psnr_zero_filled``). ``val_score = val_dice`` (picks ``best.pt``).

**Prediction** (``densemed predict``; whole images, no sliding window): ``<stem><suffix>`` the
label map, ``reconstruction/<stem>`` and ``zero_filled/<stem>`` (NIfTI for volumes, TIFF for 2D)
the magnitudes in the input's intensities (the normalisation undone). Slices are zero-padded to
the training patch's in-plane size (centred as the patch sampler centres small slices) and
cropped back, so the field of view is the one trained on. ``input_mode: complex`` networks take
2 channels and the predictor checks files against that count, so only ``magnitude`` networks
can predict files.

**Evaluation** (``densemed evaluate --task recon_seg --pred OUT --truth DATA``; ``DATA`` holds
``images/`` and ``labels/``): Dice/IoU/HD95 of the label maps (:mod:`densemed.metrics.evaluate`)
and PSNR/SSIM of ``reconstruction/`` against the fully sampled ``images/``, with ``zero_filled/``
as the baseline (:func:`densemed.metrics.image_quality.evaluate_sr_folders`); segmentation only
when there is no ``reconstruction/`` (a network without that head).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from densemed.data.dataset import Case, map_labels, read_image_case, read_label_case
from densemed.data.io import ImageMeta, split_name, write_float
from densemed.data.kspace import INPUT_MODES, simulate
from densemed.data.slices import (
    center_crop,
    center_pad,
    check_axis,
    from_slices,
    padded_size,
    slice_axis_of,
    slice_seed,
    step_seed,
    to_slices,
)
from densemed.data.volume_slices import SliceSource
from densemed.errors import DensemedError
from densemed.nets import all_outputs
from densemed.nets.heads import activate, head_outputs, heads_of, main_head, to_labels
from densemed.tasks.base import Task
from densemed.tasks.registry import register
from densemed.tasks.segmentation import float_suffix, foreground_dice, patch_loss_record, write_label_map
from densemed.train.module import SupervisedModule

MASK_MODES = ("random", "fixed")


@dataclass
class ReconSegOptions:
    """The ``task`` section of a ``recon_seg`` recipe."""

    #: fraction of phase-encoding rows measured, in (0, 1] (1: fully sampled)
    rate: float = 0.25
    #: fraction of rows in the fully sampled k-space centre, in [0, 1]
    center_fraction: float = 0.08
    #: ``random``: a new mask per training slice; ``fixed``: the mask of ``seed`` for every slice
    mask: str = "random"
    #: seed of the validation / prediction masks (and of every mask with ``mask: fixed``)
    seed: int = 0
    #: network input: ``magnitude`` (1 channel) or ``complex`` (real, imaginary)
    input_mode: str = "magnitude"
    #: epochs of reconstruction-only training before the joint loss (segmentation weight 0)
    pretrain_epochs: int = 0
    #: reconstruction-only phase on unlabelled images, then the joint loss (:class:`PretrainOptions`)
    pretrain: dict | None = None


@dataclass
class PretrainOptions:
    """``task.pretrain``: phase 1 trains the reconstruction alone, then the joint loss (module docstring)."""

    #: folders holding ``image_dir`` of unlabelled images (resolved like ``data.root``); []: the training patches
    roots: list[str] = field(default_factory=list)
    #: the image folder inside each root
    image_dir: str = "images"
    #: length of phase 1 in optimiser steps (give this or ``fraction``)
    steps: int | None = None
    #: length of phase 1 as a fraction of the run's schedule, in (0, 1)
    fraction: float | None = None
    #: slice axis of the volumes in ``roots``
    axis: int = 0


def magnitude(x: torch.Tensor | np.ndarray) -> np.ndarray:
    """The image a reader sees, ``(B, C, *S) -> (B, *S)``: ``|real + i imag|`` (C = 2) or the channel (C = 1)."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return np.sqrt((arr.astype(np.float64) ** 2).sum(1)) if arr.shape[1] == 2 else arr[:, 0].astype(np.float64)


def check_pretrain(section: Any, source: str) -> PretrainOptions:
    """``task.pretrain`` typed and checked: roots, image folder, exactly one of steps / fraction, axis."""
    from densemed.config import typed_section

    p = typed_section(PretrainOptions, section, source, "task.pretrain")
    where = f"{source}: task.pretrain"
    if not isinstance(p.roots, list) or not all(isinstance(r, str) and r for r in p.roots):
        raise DensemedError(f"{where}.roots must be a list of folder names, got {p.roots!r}")
    if not isinstance(p.image_dir, str) or not p.image_dir:
        raise DensemedError(f"{where}.image_dir must be a folder name, got {p.image_dir!r}")
    if (p.steps is None) == (p.fraction is None):
        raise DensemedError(f"{where}: give the length of phase 1 as steps or as fraction (one of them)")
    if p.steps is not None and (isinstance(p.steps, bool) or not isinstance(p.steps, int) or p.steps < 1):
        raise DensemedError(f"{where}.steps must be an integer >= 1, got {p.steps!r}")
    if p.fraction is not None:
        ok = isinstance(p.fraction, (int, float)) and not isinstance(p.fraction, bool) and 0.0 < p.fraction < 1.0
        if not ok:
            raise DensemedError(f"{where}.fraction must be a number in (0, 1), got {p.fraction!r}")
    check_axis(p.axis, f"{where}.axis")
    return p


class ReconstructionTerm:
    """Phase-1 loss: the multi-task loss on the ``reconstruction`` output alone (its weight included).

    Called like the loss it wraps (``(output dict, batch)``); the other outputs are not passed on,
    so they take no part in the gradient. ``last_terms`` is the wrapped loss' (one term).
    """

    takes_batch = True

    def __init__(self, loss_fn: nn.Module) -> None:
        self.loss_fn = loss_fn

    def __call__(self, out: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``w_rec * L_rec(out["reconstruction"], batch[target])``: a scalar."""
        return self.loss_fn({"reconstruction": out["reconstruction"]}, batch)

    @property
    def last_terms(self) -> dict[str, float]:
        """``{"reconstruction": value}`` of the last call."""
        return getattr(self.loss_fn, "last_terms", {})


@register
class ReconSeg(Task):
    """Segmentation and reconstruction from simulated undersampled k-space (see the module docstring)."""

    name = "recon_seg"
    Options = ReconSegOptions
    writes = "label maps, reconstructions and zero-filled images"

    def check(self, source: str) -> None:
        """Sampling options in range; the pre-training schedule needs the two named loss terms."""
        o = self.opts
        for key, value, lo_open in (("rate", o.rate, True), ("center_fraction", o.center_fraction, False)):
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and (0.0 < value <= 1.0 if lo_open else 0.0 <= value <= 1.0)
            if not ok:
                span = "(0, 1]" if lo_open else "[0, 1]"
                raise DensemedError(f"{source}: task.{key} must be in {span}, got {value!r}")
        if o.mask not in MASK_MODES:
            raise DensemedError(f"{source}: task.mask must be one of {', '.join(MASK_MODES)}, got {o.mask!r}")
        if o.input_mode not in INPUT_MODES:
            raise DensemedError(f"{source}: task.input_mode must be one of {', '.join(INPUT_MODES)}, "
                                f"got {o.input_mode!r}")
        if isinstance(o.seed, bool) or not isinstance(o.seed, int):
            raise DensemedError(f"{source}: task.seed must be an integer, got {o.seed!r}")
        if isinstance(o.pretrain_epochs, bool) or not isinstance(o.pretrain_epochs, int) or o.pretrain_epochs < 0:
            raise DensemedError(f"{source}: task.pretrain_epochs must be an integer >= 0, got {o.pretrain_epochs!r}")
        terms = self.cfg.loss.get("tasks") if self.cfg.loss.get("name") == "multitask" else None
        terms = set(terms) if isinstance(terms, dict) else set()
        if o.pretrain_epochs and not {"reconstruction", "segmentation"} <= terms:
            raise DensemedError(f"{source}: task.pretrain_epochs needs loss: {{name: multitask}} with tasks "
                                "'reconstruction' and 'segmentation'")
        self.pretrain = None if o.pretrain is None else check_pretrain(o.pretrain, source)
        if self.pretrain is not None and o.pretrain_epochs:
            raise DensemedError(f"{source}: task.pretrain and task.pretrain_epochs exclude each other; keep one")
        if self.pretrain is not None and "reconstruction" not in terms:
            raise DensemedError(f"{source}: task.pretrain needs loss: {{name: multitask}} with a 'reconstruction' "
                                "task (phase 1 trains that term alone)")
        #: set by the training module: whether its last step was a phase-1 step (validation reports no score then)
        self.in_pretraining = False

    # -- data -------------------------------------------------------------------------------------
    def load_case(self, name: str, image_path: Path, label_path: Path | None) -> Case:
        """Normalised single-channel image in the input's layout (``(x, 0)`` for complex); class labels."""
        image, meta = read_image_case(self.cfg, image_path)
        if image.shape[0] != 1:
            raise DensemedError(f"{image_path}: k-space simulation needs single-channel (magnitude) images, "
                                f"got {image.shape[0]} channels (task recon_seg)")
        raw, _ = read_label_case(self.cfg, label_path, image.shape[1:])
        if self.opts.input_mode == "complex":  # the target layout (x, 0): a real slice has no imaginary part
            image = np.concatenate([image, np.zeros_like(image)])
        return Case(name, image.astype(np.float32), map_labels(raw, self.cfg.data, label_path), {}, meta)

    # -- the simulation ---------------------------------------------------------------------------
    def simulate(
        self, full: torch.Tensor, axis: int | None, seeds: Callable[[int, int], int]
    ) -> dict[str, torch.Tensor]:
        """Undersample every slice of a batch of fully sampled images.

        Args:
            full: ``(B, C, *S)`` in the input layout (channel 0 is the real image).
            axis: slice axis of volumes (None for 2D images).
            seeds: ``seeds(sample, slice) -> int``, the mask seed of each slice.

        Returns:
            ``image``, ``kspace``, ``mask``, ``target`` of :func:`densemed.data.kspace.simulate`,
            stacked back to ``(B, *, *S)`` on ``full``'s device.
        """
        b = full.shape[0]
        slices = to_slices(full[:, :1].detach().float().cpu(), axis)  # (B * D, 1, H, W)
        depth = slices.shape[0] // b
        o = self.opts
        parts = [simulate(s[0].numpy(), o.rate, o.center_fraction, seeds(n // depth, n % depth), o.input_mode,
                          "task") for n, s in enumerate(slices)]
        return {key: from_slices(torch.from_numpy(np.stack([p[key] for p in parts])), b, axis).to(full.device)
                for key in ("image", "kspace", "mask", "target")}

    def undersampled_batch(self, batch: dict[str, torch.Tensor], axis: int | None,
                           seeds: Callable[[int, int], int]) -> dict[str, torch.Tensor]:
        """The batch with ``image`` replaced by the zero-filled input and ``kspace``, ``mask``, ``target`` added."""
        return {**batch, **self.simulate(batch["image"], axis, seeds)}

    def eval_seeds(self) -> Callable[[int, int], int]:
        """Validation / prediction masks: ``(seed, slice index)``; ``seed`` itself with ``mask: fixed``."""
        if self.opts.mask == "fixed":
            return lambda sample, index: self.opts.seed
        return lambda sample, index: slice_seed(self.opts.seed, index)

    # -- training ---------------------------------------------------------------------------------
    def training_module(self, model: nn.Module, loss_fn: nn.Module, device: torch.device) -> ReconSegModule:
        """:class:`ReconSegModule`: simulates each batch, optional reconstruction-only epochs."""
        return ReconSegModule(self, model, loss_fn, self.cfg.train, device)

    # -- whole images -----------------------------------------------------------------------------
    def run(self, model: nn.Module, full: torch.Tensor, device: torch.device) -> dict[str, torch.Tensor]:
        """Every head on one whole image ``(1, C, *S)`` (fully sampled, normalised) from its simulated measurements.

        Returns ``{"probs", "reconstruction" (if the network has one), "zero_filled", "target"}``,
        each ``(1, *, *S)`` on the CPU (probabilities of the main head's classes).
        """
        axis = slice_axis_of(model, self.cfg.data.dims, self.name)
        spatial = full.shape[2:]
        padded, back = center_pad(full.to(device), padded_size(spatial, self.cfg.data.patch_size, axis))
        batch = self.undersampled_batch({"image": padded}, axis, self.eval_seeds())
        model.eval()
        with torch.inference_mode(), all_outputs(model):
            outs = head_outputs(model, model(*self.model_args(model, batch)))
        heads = heads_of(model)
        res = {"probs": activate(outs[main_head(model)].float(), heads[main_head(model)].kind)}
        if "reconstruction" in outs:
            res["reconstruction"] = outs["reconstruction"].float()
        res["zero_filled"], res["target"] = batch["image"], batch["target"]
        return {k: center_crop(v.cpu(), back) for k, v in res.items()}

    def validate(
        self, model: nn.Module, loss_fn: nn.Module, val_cases: list[Case], val_patches: list[dict], device: torch.device
    ) -> dict[str, Any]:
        """Loss on the fixed patches; Dice and PSNR on whole validation images (``val_score`` = mean Dice)."""
        if not val_cases:
            return {}
        from densemed.metrics.image_quality import psnr

        rec: dict[str, Any] = self.patch_loss(model, loss_fn, val_patches, device) if val_patches else {}
        per_class, psnrs, psnrs_zf = [], [], []
        for case in val_cases:
            out = self.run(model, torch.from_numpy(case.image)[None], device)
            pred = to_labels(out["probs"])[0]
            per_class.append(foreground_dice(pred, case.label, self.cfg.data.num_classes))
            truth = magnitude(out["target"])[0]
            r = float(truth.max() - truth.min()) or 1.0
            psnrs_zf.append(psnr(magnitude(out["zero_filled"])[0], truth, data_range=r))
            if "reconstruction" in out:
                psnrs.append(psnr(magnitude(out["reconstruction"])[0], truth, data_range=r))
        mean = np.mean(per_class, axis=0)
        rec["val_dice_per_class"] = [float(v) for v in mean]
        rec["val_dice"] = float(mean.mean())
        if psnrs:
            rec["val_psnr"] = float(np.mean(psnrs))
        rec["val_psnr_zero_filled"] = float(np.mean(psnrs_zf))
        if self.in_pretraining:  # phase 1 of task.pretrain: the segmentation is not trained yet
            rec["val_pretraining"] = True
        else:
            rec["val_score"] = rec["val_dice"]
        return rec

    def patch_loss(self, model: nn.Module, loss_fn: nn.Module, patches: list[dict],
                   device: torch.device) -> dict[str, Any]:
        """Mean loss (and per-head terms) on the fixed validation patches, with their fixed masks."""
        axis = slice_axis_of(model, self.cfg.data.dims, self.name)
        seeds = self.eval_seeds()

        def measured(batch: dict[str, torch.Tensor], start: int) -> dict[str, torch.Tensor]:
            # patch n is measured like slice n of a whole image (its slices: 1000 n + k)
            return self.undersampled_batch(batch, axis, lambda s, i: seeds(0, (start + s) * 1000 + i))

        return patch_loss_record(self, model, loss_fn, patches, self.cfg.data.batch_size, device, measured)

    # -- inference --------------------------------------------------------------------------------
    def infer(
        self, model: nn.Module, image: torch.Tensor, device: torch.device, tta: bool | None = None
    ) -> torch.Tensor:
        """Class probabilities ``(1, K, *S)`` of the whole image (no sliding window, no TTA)."""
        run = self.run(model, self._layout(image), device)
        self._last = (image, run)  # write() of the same image reuses the run
        return run["probs"]

    def _layout(self, image: torch.Tensor) -> torch.Tensor:
        """A normalised single-channel image from the predictor in the network's input layout."""
        if image.shape[1] != 1:
            raise DensemedError(f"k-space simulation needs single-channel (magnitude) images, got {image.shape[1]}")
        if self.opts.input_mode == "complex":
            return torch.cat([image, torch.zeros_like(image)], dim=1)
        return image

    def write(
        self, model: nn.Module, image: torch.Tensor, outputs: torch.Tensor, source: Path, meta: ImageMeta,
        out_dir: Path, norm: tuple[np.ndarray, np.ndarray], options: dict[str, Any],
    ) -> list[Path]:
        """Label map; reconstruction and zero-filled magnitudes in the input's intensities."""
        stem, suffix = split_name(source)
        fsuffix = float_suffix(meta)
        written = [write_label_map(outputs, meta, out_dir / f"{stem}{suffix}")]
        last = getattr(self, "_last", None)
        run = last[1] if last is not None and last[0] is image else self.run(
            model, self._layout(image), options.get("device", torch.device("cpu")))
        self._last = None
        shift, scale = float(norm[0][0]), float(norm[1][0])
        for key in ("reconstruction", "zero_filled"):
            if key in run:
                path = out_dir / key / f"{stem}{fsuffix}"
                written.append(write_float(path, magnitude(run[key])[0] * scale + shift, meta))
        return written

    # -- evaluation -------------------------------------------------------------------------------
    @classmethod
    def evaluate_folders(cls, pred: Path, truth: Path, options: dict[str, Any]) -> dict[str, Any]:
        """Segmentation scores of the label maps; PSNR/SSIM of ``reconstruction/`` (``zero_filled/`` as baseline)."""
        from densemed.metrics.evaluate import evaluate_folders
        from densemed.metrics.image_quality import evaluate_sr_folders

        if not (truth / "labels").is_dir() or not (truth / "images").is_dir():
            raise DensemedError(f"{truth}: --truth must be a data folder with labels/ and images/ "
                                "(the label maps and the fully sampled images)")
        seg = evaluate_folders(pred, truth / "labels", num_classes=options.get("num_classes"),
                               label_map=options.get("label_map"), class_names=options.get("class_names"))
        base = pred / "zero_filled"
        if not (pred / "reconstruction").is_dir():  # a network without a reconstruction head (a U-Net)
            return {"segmentation": seg}
        rec = evaluate_sr_folders(pred / "reconstruction", truth / "images", base if base.is_dir() else None)
        return {"segmentation": seg, "reconstruction": rec}

    @classmethod
    def format_result(cls, result: dict[str, Any]) -> str:
        """The per-class table, then the PSNR/SSIM table (baseline = zero-filled)."""
        from densemed.metrics.evaluate import format_table
        from densemed.metrics.image_quality import format_sr_table

        if "reconstruction" not in result:
            return format_table(result["segmentation"]) + "\n\nno reconstruction/ folder: segmentation only"
        return "\n".join([format_table(result["segmentation"]), "",
                          "reconstruction (baseline = zero-filled input):",
                          format_sr_table(result["reconstruction"])])


class ReconSegModule(SupervisedModule):
    """One network and the task's loss, on batches undersampled in the step; optional pre-training.

    Each ``train_step`` replaces the batch's fully sampled ``image`` by its simulated measurements
    (:meth:`ReconSeg.undersampled_batch`, masks by :func:`~densemed.data.slices.step_seed` or the
    fixed seed). With ``task.pretrain_epochs = K`` the multi-task loss' ``segmentation`` weight is 0
    in epochs ``0 .. K-1`` and the recipe's afterwards (set by :meth:`set_epoch`, so a resumed run
    is in the right phase). With ``task.pretrain`` the steps of phase 1 train on slices of the
    unlabelled ``roots`` (or the batch's own images) with the reconstruction term alone
    (:meth:`pretrain_step`); ``pretrain_end``, the step where phase 2 began, is saved in the
    checkpoint.
    """

    def __init__(self, task: ReconSeg, model: nn.Module, loss_fn: nn.Module, t: Any, device: torch.device) -> None:
        super().__init__(task, model, loss_fn, t, device)
        self.recon = task  # typed: the task's simulation and options
        self.axis = slice_axis_of(model, task.cfg.data.dims, task.name)
        self.seg_weight = None
        if task.opts.pretrain_epochs:
            self.seg_weight = float(loss_fn.tasks["segmentation"].weight)
        #: the step where phase 2 of ``task.pretrain`` began (None: not yet, or no pre-training)
        self.pretrain_end: int | None = None
        self.source: SliceSource | None = None  # the unlabelled slices, read at the first phase-1 step
        if task.pretrain is not None and "reconstruction" not in heads_of(model):
            raise DensemedError(f"task.pretrain: network {task.cfg.model.get('name')!r} has no 'reconstruction' "
                                f"head (it has {', '.join(heads_of(model))}); nothing to pre-train")

    def set_epoch(self, epoch: int) -> None:
        """Epoch hooks of the loss; the segmentation weight of the current phase."""
        super().set_epoch(epoch)
        if self.seg_weight is not None:
            pre = epoch < self.recon.opts.pretrain_epochs
            self.loss_fn.tasks["segmentation"].weight = 0.0 if pre else self.seg_weight

    def seeds(self) -> Callable[[int, int], int]:
        """Mask seeds of this step's slices."""
        o = self.recon.opts
        if o.mask == "fixed":
            return lambda sample, index: o.seed
        step, seed = self.step, int(self.t.seed)
        return lambda sample, index: step_seed(seed, step, sample, index)

    def pretraining(self) -> bool:
        """Whether this step belongs to phase 1 of ``task.pretrain`` (fixes ``pretrain_end`` at the switch)."""
        p = self.recon.pretrain
        if p is None or self.pretrain_end is not None:
            return False
        limit = p.steps if p.steps is not None else p.fraction * self.total_steps
        if self.step < limit:
            return True
        self.pretrain_end = self.step
        return False

    def pretrain_images(self, n: int) -> torch.Tensor:
        """``n`` unlabelled slices of ``task.pretrain.roots`` for this step: ``(n, 1, H, W)``, volumes ``(n, 1, *P)``.

        ``(H, W)`` is the in-plane training patch; for volume recipes the slice gets a unit axis at
        the model's slice axis (the patch shape a ``slicewise`` network takes).
        """
        import densemed.train.distributed as distributed
        from densemed.config import resolve_data_root

        p, d = self.recon.pretrain, self.recon.cfg.data
        patch = list(d.patch_size)
        plane = patch if self.axis is None else [s for k, s in enumerate(patch) if k != self.axis]
        if self.source is None:
            roots = []
            for k, r in enumerate(p.roots):
                root = resolve_data_root(r)
                if not root.is_dir():
                    raise DensemedError(f"task.pretrain.roots[{k}]: {root}: folder not found "
                                        "(relative paths also try $DENSEMED_DATA)")
                roots.append(root)
            self.source = SliceSource.from_folders(roots, p.image_dir, plane, p.axis, d.normalize, d.percentiles,
                                                   d.window)
        seed, rank = int(self.t.seed), distributed.rank()
        x = self.source.batch([np.random.default_rng([seed, 3, self.step, rank, i]) for i in range(n)])
        return (x if self.axis is None else x.unsqueeze(2 + self.axis)).to(self.device)

    def pretrain_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """A phase-1 step: the reconstruction term alone, on unlabelled slices (or this batch's images)."""
        n = int(batch["image"].shape[0])
        images = self.pretrain_images(n) if self.recon.pretrain.roots else batch["image"]
        full = self.recon.undersampled_batch({"image": images}, self.axis, self.seeds())
        joint, self.loss_fn = self.loss_fn, ReconstructionTerm(self.loss_fn)
        try:
            return super().train_step(full)
        finally:
            self.loss_fn = joint

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """Simulate the measurements of this batch, then the supervised step (phase 1: :meth:`pretrain_step`)."""
        self.recon.in_pretraining = self.pretraining()
        if self.recon.in_pretraining:
            return self.pretrain_step(batch)
        return super().train_step(self.recon.undersampled_batch(batch, self.axis, self.seeds()))

    def state_dict(self) -> dict[str, Any]:
        """The supervised state and ``pretrain_end``."""
        return {**super().state_dict(), "pretrain_end": self.pretrain_end}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`state_dict` (a checkpoint without ``pretrain_end``: phase 2 not begun)."""
        super().load_state_dict(state)
        end = state.get("pretrain_end")
        self.pretrain_end = None if end is None else int(end)
