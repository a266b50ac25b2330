"""``image``: image-to-image restoration; here super-resolution of thick-slice volumes (DeepResolve).

Recipe section (defaults shown)::

    task: {name: image, factor: 2, axis: 2, mask: otsu, mask_threshold: 0.1, min_tissue: 0.5,
           background_weight: 1.0, intensity: percentile, percentiles: [0.5, 99.5], halo: null,
           val_full_images: false}

Data: high-resolution (thin-slice) volumes in ``images/`` (no labels); several folders at once
through ``data.extra_roots`` (e.g. the whole-brain templates and the hippocampus crops, each
folder drawn by its share). For each volume ``y`` (read, resampled and ``data.normalize``-d):

* the network input is the simulated thick-slice volume on the thin grid,
  ``x = degrade(y, factor, axis)`` (:mod:`densemed.data.sr`), and the target (batch key
  ``target``) is ``y``;
* **intensities** (``intensity: percentile``): both are divided per volume as
  ``(v - p_lo) / (p_hi - p_lo)`` with ``p_lo, p_hi`` the ``percentiles`` of the *input* ``x``,
  never clipped. The same function of the input runs in :meth:`ImageRestoration.infer`, which
  multiplies back, so ``densemed predict`` returns the input's intensities exactly (an identity
  network writes its input back, to float rounding; tested). Clipping normalisations
  (``data.normalize: percentile`` or ``window``) are refused: they would cut the intensities the
  network must restore;
* **tissue** (``mask``): ``otsu`` (default) or ``threshold`` (``mask_threshold`` x the robust
  intensity range above its 0.5th percentile) of the high-resolution volume, holes filled
  (:func:`densemed.data.sr.tissue_mask`); ``none``: every voxel. It is the case's ``label``
  (1 = tissue), so training patches are centred on tissue with ``data.foreground_fraction: 1``,
  and ``background_weight`` (< 1) down-weights the loss outside the tissue (per-voxel weights).

Patches: ``data.patch_size[axis]`` must be a multiple of ``factor`` (a patch then holds whole
thick slices; checked with a clear error).

Validation: fixed patches drawn *inside the object* (each at least ``min_tissue`` tissue,
:func:`densemed.data.sr.tissue_patch_starts`; the loop's generic validation patches are not
used), or whole volumes (``val_full_images``). Recorded: ``val_loss``, ``val_psnr`` = PSNR inside
the tissue mask (``val_score``, picks ``best.pt``), ``val_psnr_volume`` over every voxel of the
patches, and ``val_psnr_tricubic`` (the input's tissue PSNR, the baseline to beat); PSNRs per
volume (squared errors pooled over its patches; data range = the whole target volume's max -
min), averaged over volumes.

Inference (:meth:`ImageRestoration.infer`) is seamless: the volume is cut into tiles of
``infer.window`` whose outer ``halo`` voxels (default: the network's receptive radius, the sum
of ``dilation (k - 1) / 2`` over its convolutions, for a network without strides, pooling or
resizing) are computed and discarded, so every kept voxel saw its whole receptive field and the
tiled result equals one forward pass over the whole volume (to float rounding; tested). A
network with strides or pooling (unknown radius, ``halo: null``) falls back to Gaussian-blended
sliding windows. ``infer.amp`` runs the tiles under autocast (bf16 on the CPU).

Evaluation: ``densemed evaluate --task image`` (alias ``sr``) gives PSNR and SSIM inside the
truth's tissue mask (``*_tissue``) and over the whole volume (``psnr``, ``ssim``), beside a
baseline folder (``--baseline``, e.g. the tricubic volumes of ``densemed degrade``); ``--figure
out.png`` draws, for the first volume, the thick-slice input, tricubic, the prediction and the
truth with their absolute-error maps (:func:`write_figure`).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from densemed.data.dataset import Case, case_sample, read_image_case
from densemed.data.io import ImageMeta, split_name, write_float
from densemed.errors import DensemedError
from densemed.infer.runner import predict_main, window_of
from densemed.tasks.base import Task
from densemed.tasks.registry import register
from densemed.tasks.segmentation import float_suffix, patch_loss

MASKS = ("otsu", "threshold", "none")
INTENSITIES = ("percentile", "none")


@dataclass
class ImageOptions:
    """The ``task`` section of a super-resolution recipe (see the module docstring)."""

    factor: int = 2
    axis: int = 2
    #: tissue mask of the high-resolution volume: otsu | threshold | none
    mask: str = "otsu"
    #: with ``mask: threshold``: fraction of the volume's [0.5th, 99.5th] percentile range
    mask_threshold: float = 0.1
    #: least tissue share of every validation patch
    min_tissue: float = 0.5
    #: loss weight of voxels outside the tissue (1: plain loss; 0: tissue only)
    background_weight: float = 1.0
    #: per-volume intensity scaling from the input's percentiles (never clipped): percentile | none
    intensity: str = "percentile"
    percentiles: list[float] = field(default_factory=lambda: [0.5, 99.5])
    #: voxels computed and discarded at inner tile edges (None: the network's receptive radius)
    halo: int | None = None
    #: validate on whole volumes instead of the fixed tissue patches
    val_full_images: bool = False


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def receptive_radius(model: Any) -> int | None:
    """Receptive radius of a size-preserving conv network: ``sum dilation * (k - 1) // 2`` over its convs.

    Exact for a chain of stride-1 convolutions (DeepResolve: its depth), an upper bound when
    branches run in parallel. None for anything with strides, pooling, resizing or transposed
    convolutions (and for exported models), where a fixed halo cannot be derived this way.

    Example:
        >>> from densemed.nets.deepresolve import DeepResolve
        >>> print(receptive_radius(DeepResolve(depth=5, width=4)))
        5
    """
    if not isinstance(model, nn.Module):
        return None
    radius = 0
    for m in model.modules():
        if isinstance(m, (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd, nn.Upsample,
                          nn.modules.conv._ConvTransposeNd, nn.modules.pooling._AdaptiveAvgPoolNd,
                          nn.modules.pooling._AdaptiveMaxPoolNd)):
            return None
        if isinstance(m, nn.modules.conv._ConvNd):
            if any(s != 1 for s in m.stride):
                return None
            radius += max(d * (k - 1) // 2 for d, k in zip(m.dilation, m.kernel_size))
    return radius


def tiled_forward(
    fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, window: Sequence[int], halo: int
) -> torch.Tensor:
    """Run ``fn`` over tiles of ``x`` and keep each tile's core: equal to ``fn(x)`` for a network of radius ``halo``.

    Along each axis the volume is cut into cores of ``window - 2 halo`` voxels; a tile is its core
    grown by ``halo`` on each side (clipped at the volume's border, where the network pads as it
    would on the whole volume). An axis no longer than ``window`` is one tile.

    Shape:
        ``(B, C, *S) -> (B, K, *S)``.

    Example:
        >>> conv = nn.Conv3d(1, 1, 3, padding=1)
        >>> x = torch.randn(1, 1, 20, 9, 9)
        >>> print(torch.allclose(tiled_forward(conv, x, (8, 9, 9), 1), conv(x), atol=1e-6))
        True
    """
    size = tuple(x.shape[2:])
    axes = []
    for s, w in zip(size, window):
        if s <= w:
            axes.append([(0, s)])
            continue
        core = w - 2 * halo
        if core < 1:
            raise DensemedError(f"infer.window: {w} voxels leave no core around a halo of {halo} on each side; "
                                f"use a window > {2 * halo} (or set task.halo)")
        axes.append([(a, min(a + core, s)) for a in range(0, s, core)])
    out: torch.Tensor | None = None
    for cores in itertools.product(*axes):
        lo = [max(a - halo, 0) for a, _ in cores]
        hi = [min(b + halo, s) for (_, b), s in zip(cores, size)]
        tile = x[(slice(None), slice(None)) + tuple(slice(a, b) for a, b in zip(lo, hi))]
        pred = fn(tile)
        if out is None:
            out = torch.empty((x.shape[0], pred.shape[1], *size), dtype=torch.float32, device=x.device)
        keep = tuple(slice(a - lo_, b - lo_) for (a, b), lo_ in zip(cores, lo))
        out[(slice(None), slice(None)) + tuple(slice(a, b) for a, b in cores)] = \
            pred[(slice(None), slice(None)) + keep].to(out.device, torch.float32)
    assert out is not None
    return out


@register
class ImageRestoration(Task):
    """Super-resolution: thick-slice input, thin-slice target (see the module docstring)."""

    name = "image"
    Options = ImageOptions
    writes = "restored images"

    def __init__(self, cfg: Any, source: str = "recipe") -> None:
        super().__init__(cfg, source)
        self._val: tuple[tuple[str, ...], list[dict[str, Any]]] | None = None

    def check(self, source: str) -> None:
        """Factor, axis, mask, intensity options; a non-clipping ``data.normalize``; patch side vs factor."""
        o, d = self.opts, self.cfg.data
        if not _is_int(o.factor) or o.factor < 1:
            raise DensemedError(f"{source}: task.factor must be a positive integer, got {o.factor!r}")
        if not _is_int(o.axis) or not 0 <= o.axis < d.dims:
            raise DensemedError(f"{source}: task.axis must be in 0..{d.dims - 1}, got {o.axis!r}")
        if o.mask not in MASKS:
            raise DensemedError(f"{source}: task.mask must be one of {', '.join(MASKS)}, got {o.mask!r}")
        if isinstance(o.mask_threshold, bool) or not isinstance(o.mask_threshold, (int, float)) \
                or not 0 <= o.mask_threshold < 1:
            raise DensemedError(f"{source}: task.mask_threshold must be a fraction in [0, 1), got {o.mask_threshold!r}")
        if isinstance(o.min_tissue, bool) or not isinstance(o.min_tissue, (int, float)) or not 0 <= o.min_tissue <= 1:
            raise DensemedError(f"{source}: task.min_tissue must be in [0, 1], got {o.min_tissue!r}")
        if isinstance(o.background_weight, bool) or not isinstance(o.background_weight, (int, float)) \
                or o.background_weight < 0:
            raise DensemedError(f"{source}: task.background_weight must be >= 0, got {o.background_weight!r}")
        if o.intensity not in INTENSITIES:
            raise DensemedError(f"{source}: task.intensity must be one of {', '.join(INTENSITIES)}, "
                                f"got {o.intensity!r}")
        p = o.percentiles
        if not isinstance(p, list) or len(p) != 2 or not 0 <= p[0] < p[1] <= 100:
            raise DensemedError(f"{source}: task.percentiles must be [lo, hi] with 0 <= lo < hi <= 100, got {p!r}")
        if o.halo is not None and (not _is_int(o.halo) or o.halo < 0):
            raise DensemedError(f"{source}: task.halo must be a number of voxels >= 0 or null, got {o.halo!r}")
        if d.normalize in ("percentile", "window"):
            raise DensemedError(
                f"{source}: data.normalize: {d.normalize!r} clips intensities, which a restoring network must "
                "give back; use none or zscore (task.intensity scales each volume without clipping)"
            )
        side = d.patch_size[o.axis] if len(d.patch_size) > o.axis else None
        if side is not None and side % o.factor:
            raise DensemedError(
                f"{source}: data.patch_size[{o.axis}] = {side} is not a multiple of task.factor {o.factor} "
                f"along the slice axis {o.axis}; use e.g. {max(o.factor, side - side % o.factor)}"
            )

    def out_channels(self) -> int | None:
        """The restoring network's default (one image channel)."""
        return None

    def needs_labels(self) -> bool:
        """Only images: the target is the image itself."""
        return False

    # -- data -------------------------------------------------------------------------------------
    def scale_of(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-channel ``(shift, scale)`` of the task's intensity scaling of an input volume ``(C, *S)``."""
        from densemed.data.sr import intensity_scale

        c = image.shape[0]
        if self.opts.intensity == "none":
            return np.zeros(c), np.ones(c)
        pairs = [intensity_scale(ch, tuple(self.opts.percentiles)) for ch in image]
        return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])

    def load_case(self, name: str, image_path: Path, label_path: Path | None) -> Case:
        """Input = degraded volume, ``target`` = the high-resolution one, ``label`` = its tissue mask."""
        from densemed.data.sr import degrade, tissue_mask

        o = self.opts
        hr, meta = read_image_case(self.cfg, image_path)
        if hr.ndim - 1 <= o.axis:
            raise DensemedError(f"{image_path}: no axis {o.axis} in an image of shape {hr.shape[1:]}")
        lr = np.stack([degrade(c, o.factor, o.axis) for c in hr]).astype(np.float32)
        shift, scale = self.scale_of(lr)
        view = (-1,) + (1,) * (hr.ndim - 1)
        lr = ((lr - shift.reshape(view)) / scale.reshape(view)).astype(np.float32)
        hr = ((hr - shift.reshape(view)) / scale.reshape(view)).astype(np.float32)
        mask = np.any([tissue_mask(c, o.mask, o.mask_threshold) for c in hr], axis=0)
        if not mask.any():
            raise DensemedError(f"{image_path}: the tissue mask (task.mask: {o.mask}) is empty")
        return Case(name, lr, mask.astype(np.int64), {"target": hr}, meta)

    # -- training ---------------------------------------------------------------------------------
    def training_module(self, model: nn.Module, loss_fn: nn.Module, device: torch.device) -> Any:
        """The one-network module, with a 3D network's weights in ``channels_last_3d``.

        Why: with channels-last weights PyTorch's CPU convolutions run DeepResolve (8 x 32, batches
        of 24^3 and 32^3 patches) 20-30 % faster per training step (measured on this 2-core CPU,
        one thread); values and state dicts are unchanged.
        """
        from densemed.train.module import SupervisedModule

        if self.cfg.data.dims == 3:
            model = model.to(memory_format=torch.channels_last_3d)
        return SupervisedModule(self, model, loss_fn, self.cfg.train, device)

    def compute_loss(self, loss_fn: nn.Module, out: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        """``loss(output, target)``; with ``background_weight != 1`` per-voxel weights from the tissue mask."""
        if getattr(loss_fn, "takes_batch", False):
            return loss_fn(out, batch)
        w = self.opts.background_weight
        if w == 1.0 or "label" not in batch:
            return loss_fn(out, batch["target"])
        if not getattr(loss_fn, "accepts_weights", False):
            raise DensemedError(f"task.background_weight: loss {type(loss_fn).__name__} takes no per-voxel weights; "
                                "use mse, l1 or ssim_l1, or background_weight: 1")
        tissue = (batch["label"] > 0).to(out.dtype)
        return loss_fn(out, batch["target"], weights=tissue + w * (1 - tissue))

    def validation_patches(self, cases: list[Case]) -> list[dict[str, Any]]:
        """Fixed validation patches inside the object: ``data.val_patches_per_image`` per case, each ``min_tissue``.

        Each entry is ``{"sample": case_sample(...), "case": index, "valid": slices of the patch inside
        the volume}``; the draw is seeded by the case's position, so it is the same every epoch.
        """
        from densemed.data.sr import tissue_patch_starts

        d = self.cfg.data
        key = tuple(c.name for c in cases)
        if self._val is not None and self._val[0] == key:
            return self._val[1]
        size = list(d.patch_size)
        out = []
        for k, case in enumerate(cases):
            rng = np.random.default_rng([1234, k])
            for st in tissue_patch_starts(case.label > 0, size, d.val_patches_per_image, self.opts.min_tissue, rng):
                valid = tuple(slice(max(-a, 0), min(p, s - a)) for a, p, s in zip(st, size, case.label.shape))
                out.append({"sample": case_sample(case, st, size), "case": k, "valid": valid})
        self._val = (key, out)
        return out

    def validate(
        self, model: nn.Module, loss_fn: nn.Module, val_cases: list[Case], val_patches: list[dict], device: torch.device
    ) -> dict[str, Any]:
        """Loss and PSNR (dB) inside the tissue of tissue patches (or whole volumes); ``val_score`` = tissue PSNR."""
        if not val_cases:
            return {}
        ranges = [float(c.maps["target"].max() - c.maps["target"].min()) for c in val_cases]
        # per case: squared errors summed over tissue / all voxels, and their counts
        sums = np.zeros((len(val_cases), 3))  # tissue error, all-voxel error, tricubic tissue error
        counts = np.zeros((len(val_cases), 2))
        patches = self.validation_patches(val_cases)
        loss, _, outs = patch_loss(self, model, loss_fn, [p["sample"] for p in patches], self.cfg.data.batch_size,
                                   device)
        if self.opts.val_full_images:
            items = [(k, self.restore(model, torch.from_numpy(np.asarray(c.image))[None], device)[0].numpy(),
                      np.asarray(c.image), c.maps["target"], c.label > 0) for k, c in enumerate(val_cases)]
        else:
            preds = torch.cat([o.float().cpu() for o in outs]).numpy()
            items = []
            for p, pred in zip(patches, preds):
                v = (slice(None),) + p["valid"]
                s = p["sample"]
                items.append((p["case"], pred[v], s["image"].numpy()[v], s["target"].numpy()[v],
                              s["label"].numpy()[0][p["valid"]] > 0))
        for k, pred, inp, target, tissue in items:
            err, base = (pred - target) ** 2, (inp - target) ** 2
            sums[k] += [err[:, tissue].sum(), err.sum(), base[:, tissue].sum()]
            counts[k] += [tissue.sum() * err.shape[0], err.size]

        def db(total: np.ndarray, n: np.ndarray) -> float:
            mse = total / np.maximum(n, 1)
            return float(np.mean([10 * np.log10(r * r / m) if m > 0 else float("inf") for r, m in zip(ranges, mse)]))

        tissue_psnr = db(sums[:, 0], counts[:, 0])
        return {"val_loss": loss, "val_psnr": tissue_psnr, "val_psnr_volume": db(sums[:, 1], counts[:, 1]),
                "val_psnr_tricubic": db(sums[:, 2], counts[:, 0]), "val_score": tissue_psnr}

    # -- inference --------------------------------------------------------------------------------
    def restore(self, model: nn.Module, image: torch.Tensor, device: torch.device, tta: bool | None = None
                ) -> torch.Tensor:
        """The network's output ``(1, K, *S)`` (CPU, float32) for an input already in the task's scaling.

        Tiles with a discarded halo (:func:`tiled_forward`) when the network's receptive radius is
        known (``task.halo`` or :func:`receptive_radius`), else Gaussian-blended sliding windows.
        """
        from densemed.infer.sliding_window import flip_tta
        from densemed.precision import amp_dtype

        cfg = self.cfg
        halo = self.opts.halo if self.opts.halo is not None else receptive_radius(model)
        if halo is None:
            return predict_main(model, image, cfg, device, tta)
        tta = cfg.infer.tta if tta is None else tta
        window = window_of(cfg)
        if len(window) != image.dim() - 2:
            raise DensemedError(f"infer.window: {window} does not match a {image.dim() - 2}D image")
        autocast = amp_dtype(cfg.infer.amp, device)
        model.eval()

        def fwd(tile: torch.Tensor) -> torch.Tensor:
            tile = tile.to(device)
            if autocast is None:
                return model(tile).float().cpu()
            with torch.autocast(torch.device(device).type, dtype=autocast):
                return model(tile).float().cpu()

        def run(x: torch.Tensor) -> torch.Tensor:
            return tiled_forward(fwd, x, window, halo)

        with torch.inference_mode():
            return flip_tta(run, image, cfg.infer.tta_axes) if tta else run(image)

    def infer(self, model: nn.Module, image: torch.Tensor, device: torch.device,
              tta: bool | None = None) -> torch.Tensor:
        """The restored image ``(1, K, *S)`` in the intensities of ``image`` (the task's scaling undone)."""
        shift, scale = self.scale_of(image[0].numpy())
        view = (1, -1) + (1,) * (image.dim() - 2)
        sh = torch.as_tensor(shift, dtype=torch.float32).view(view)
        sc = torch.as_tensor(scale, dtype=torch.float32).view(view)
        out = self.restore(model, (image - sh) / sc, device, tta)
        if out.shape[1] != image.shape[1]:  # one scaling for all output channels: the first input channel's
            sh, sc = sh[:, :1], sc[:, :1]
        return out * sc + sh

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

    # -- evaluation -------------------------------------------------------------------------------
    @classmethod
    def evaluate_folders(cls, pred: Path, truth: Path, options: dict[str, Any]) -> dict[str, Any]:
        """PSNR and SSIM per volume, inside the tissue and over the volume; optionally the figure.

        Options: ``baseline`` (folder), ``mask`` (``otsu``), ``mask_threshold``, ``figure`` (PNG path:
        :func:`write_figure` of the first volume, which needs ``baseline``).
        """
        from densemed.metrics.image_quality import evaluate_sr_folders

        baseline = options.get("baseline")
        mask, threshold = options.get("mask") or "otsu", options.get("mask_threshold") or 0.1
        result = evaluate_sr_folders(pred, truth, baseline=baseline, mask=mask, threshold=threshold)
        figure = options.get("figure")
        if figure:
            if baseline is None:
                raise DensemedError("--figure: needs --baseline (the tricubic volumes, to show the thick-slice input)")
            name = result["images"][0]["name"]
            result["figure"] = str(write_figure(Path(figure), Path(truth), Path(baseline), Path(pred), name,
                                                mask, threshold))
        return result

    @classmethod
    def format_result(cls, result: dict[str, Any]) -> str:
        """The PSNR/SSIM table (and where the figure went)."""
        from densemed.metrics.image_quality import format_sr_table

        text = format_sr_table(result)
        if result.get("figure"):
            text += f"\nwrote {result['figure']} ({result['images'][0]['name']})"
        return text


# ---------------------------------------------------------------------------------------------- figure
def thick_slice_geometry(truth: np.ndarray, baseline: np.ndarray) -> tuple[int, int]:
    """The ``(factor, axis)`` for which ``degrade(truth)`` is ``baseline`` (checked on a central bundle of lines).

    ``densemed degrade`` writes no record of its factor and axis; degradation acts along one axis
    only, so an 8 x 8 bundle of lines through the centre, whole along the tested axis, decides
    each candidate (factors 2 to 8) in microseconds.
    """
    from densemed.data.sr import degrade

    if truth.shape != baseline.shape:
        raise DensemedError(f"--figure: baseline shape {baseline.shape} differs from the truth's {truth.shape}")
    scale = float(np.abs(truth).max()) or 1.0
    for axis in range(truth.ndim):
        bundle = tuple(slice(None) if i == axis else slice(max(s // 2 - 4, 0), s // 2 + 4)
                       for i, s in enumerate(truth.shape))
        t, b = truth[bundle].astype(np.float64), baseline[bundle].astype(np.float64)
        for factor in range(2, 9):
            if np.abs(degrade(t, factor, axis) - b).max() <= 1e-4 * scale:
                return factor, axis
    raise DensemedError("--figure: the baseline is not `densemed degrade` of the truth for any axis and factor 2-8")


def write_figure(out: Path, truth_dir: Path, baseline_dir: Path, pred_dir: Path, name: str, mask: str = "otsu",
                 threshold: float = 0.1) -> Path:
    """Thick-slice input, tricubic, prediction and truth of volume ``name``, with absolute-error maps.

    Two planes through the tissue's centre: one that contains the thick-slice axis (the
    staircase of thick slices shows), one orthogonal to it. Rows per plane: the images (shared
    grey scale, the truth's 0.5-99.5 percentiles), then ``|image - truth|`` (shared scale, the
    99th percentile of the tricubic error in the tissue). Titles give the PSNR inside the tissue.
    The thick-slice input is the block average repeated over its ``factor`` thin slices.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from densemed.data.io import read_image
    from densemed.data.sr import downsample, tissue_mask
    from densemed.metrics.image_quality import psnr, volume_files

    paths = [volume_files(d, role)[name] for d, role in ((truth_dir, "truth"), (baseline_dir, "baseline"),
                                                       (pred_dir, "prediction"))]
    truth, base, pred = (read_image(p)[0][0].astype(np.float32) for p in paths)
    factor, axis = thick_slice_geometry(truth, base)
    thick = np.repeat(downsample(truth, factor, axis), factor, axis=axis)
    thick = np.take(thick, np.arange(truth.shape[axis]), axis=axis)
    tissue = tissue_mask(truth, mask, threshold)
    r = float(truth.max() - truth.min())
    centre = [int(round(c)) for c in np.argwhere(tissue).mean(axis=0)]
    other = [a for a in range(truth.ndim) if a != axis]
    # plane 1 contains the slice axis (cut across the last other axis); plane 2 is orthogonal to it
    planes = [(other[-1], f"through the thick slices (contains axis {axis})"),
              (axis, f"orthogonal to the thick-slice axis {axis}")]
    vols = [("thick-slice input", thick), ("tricubic", base), ("prediction", pred), ("truth", truth)]
    lo, hi = np.percentile(truth[tissue], [0.5, 99.5])
    emax = float(np.percentile(np.abs(base - truth)[tissue], 99)) or 1.0
    fig, axes = plt.subplots(2 * len(planes), len(vols), figsize=(3.2 * len(vols), 3.0 * 2 * len(planes)))
    for row, (cut, label) in enumerate(planes):
        for col, (title, v) in enumerate(vols):
            img = np.take(v, centre[cut], axis=cut)
            err = np.abs(np.take(v - truth, centre[cut], axis=cut))
            ax, ex = axes[2 * row, col], axes[2 * row + 1, col]
            ax.imshow(img.T, cmap="gray", vmin=lo, vmax=hi, origin="lower")
            score = "" if title == "truth" else f"\n{psnr(v, truth, data_range=r, mask=tissue):.2f} dB in tissue"
            ax.set_title(f"{title}{score}", fontsize=9)
            ex.imshow(err.T, cmap="inferno", vmin=0, vmax=emax, origin="lower")
            ex.set_title(f"|{title} - truth|" if title != "truth" else f"(error scale 0 - {emax:.3g})", fontsize=9)
            for a in (ax, ex):
                a.set_xticks([])
                a.set_yticks([])
        axes[2 * row, 0].set_ylabel(label, fontsize=9)
    fig.suptitle(f"{name}: factor {factor} along axis {axis}", fontsize=11)
    fig.subplots_adjust(left=0.04, right=0.99, bottom=0.01, top=0.93, wspace=0.05, hspace=0.25)  # one draw
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
