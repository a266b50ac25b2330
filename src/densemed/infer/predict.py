"""Whole-image prediction from a checkpoint: sliding window, flip TTA, writing results.

``predict_probabilities`` turns a normalised image into class probabilities ``(K, *S)``;
``predict_paths`` does it for files or folders and writes the label map in the input's format
(PNG/TIFF for 2D, NIfTI with the input's affine and header for 3D) and, on request, the foreground
probability (float32 TIFF for 2D, NIfTI for 3D). Super-resolution recipes write the restored image.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from densemed.config import Config, from_dict
from densemed.data.io import is_supported, read_image, split_name, write_float, write_label
from densemed.data.normalize import intensity_params, normalize
from densemed.errors import DensemedError
from densemed.infer.sliding_window import flip_tta, sliding_window
from densemed.typing import PathType


def output_kind(model: nn.Module, cfg: Config) -> str:
    """``segmentation`` (logits), ``regression`` (e.g. DeepDistance's maps) or ``image`` (SR)."""
    return "image" if cfg.task == "sr" else getattr(model, "output_kind", "segmentation")


def activation(logits: torch.Tensor, kind: str = "segmentation") -> torch.Tensor:
    """Logits ``(B, K, *S)`` -> probabilities (softmax; sigmoid for one channel); other kinds unchanged."""
    if kind != "segmentation":
        return logits
    return torch.sigmoid(logits) if logits.shape[1] == 1 else torch.softmax(logits, dim=1)


def to_labels(probs: torch.Tensor) -> torch.Tensor:
    """Probabilities ``(B, K, *S)`` -> class indices ``(B, *S)`` (threshold 0.5 for one channel)."""
    if probs.shape[1] == 1:
        return (probs[:, 0] > 0.5).long()
    return probs.argmax(1)


def predict_probabilities(
    model: nn.Module,
    image: torch.Tensor,
    cfg: Config,
    device: torch.device,
    tta: bool | None = None,
    out_device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Probabilities ``(B, K, *S)`` for a normalised image ``(B, C, *S)`` (eval mode, no grad)."""
    model.eval()
    window = cfg.infer.window or cfg.data.patch_size
    tta = cfg.infer.tta if tta is None else tta
    kind = output_kind(model, cfg)

    def run(x: torch.Tensor) -> torch.Tensor:
        def fwd(t: torch.Tensor) -> torch.Tensor:
            return activation(model(t), kind)

        return sliding_window(
            fwd, x, window, cfg.infer.overlap, cfg.infer.sw_batch_size, cfg.infer.blend, device, out_device
        )

    with torch.inference_mode():
        return flip_tta(run, image) if tta else run(image)


def model_from_checkpoint(ckpt: dict, path: PathType, device: torch.device) -> tuple[nn.Module, Config]:
    """Rebuild the network of a checkpoint and load its weights."""
    from densemed.train.checkpoint import load_state
    from densemed.train.loop import build_model

    cfg = from_dict(ckpt["config"], str(path))
    model = build_model(cfg, ckpt.get("in_channels"))
    load_state(model, ckpt["model"], path, cfg.model["name"], ckpt.get("net"))
    return model.to(device).eval(), cfg


def list_inputs(path: PathType) -> list[Path]:
    """The image files at ``path`` (a file or a folder)."""
    p = Path(path)
    if p.is_file():
        return [p]
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.is_file() and is_supported(f))
        if not files:
            raise DensemedError(f"{p}: no images found (PNG, TIFF or NIfTI expected)")
        return files
    raise DensemedError(f"{p}: input not found")


def predict_paths(
    model: nn.Module,
    cfg: Config,
    inputs: list[Path],
    out_dir: PathType,
    device: torch.device,
    tta: bool | None = None,
    probabilities: bool = False,
    instances: Callable[[nn.Module, torch.Tensor, np.ndarray], np.ndarray] | None = None,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Predict every input file and write results into ``out_dir``; returns the written label files."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for path in inputs:
        image, meta = read_image(path, cfg.data.dims)
        expected = model_in_channels(model)
        if expected is not None and image.shape[0] != expected:
            raise DensemedError(f"{path}: image has {image.shape[0]} channels, the model expects {expected}")
        orig = image.shape[1:]
        if cfg.data.target_spacing and meta.spacing:
            from densemed.data.dataset import resample

            image = resample(image, meta.spacing, cfg.data.target_spacing, order=1)
        x = torch.from_numpy(normalize(image, cfg.data.normalize, cfg.data.percentiles, cfg.data.window))[None]
        shift, scale, _ = intensity_params(image, cfg.data.normalize, cfg.data.percentiles, cfg.data.window)
        probs = predict_probabilities(model, x, cfg, device, tta)
        if tuple(probs.shape[2:]) != tuple(orig):  # back to the input grid after resampling
            probs = F.interpolate(probs, size=orig, mode="trilinear" if cfg.data.dims == 3 else "bilinear")
        stem, suffix = split_name(path)
        fsuffix = ".nii.gz" if meta.format == "nifti" else ".tif"
        kind = output_kind(model, cfg)
        if kind == "image":
            target = out_dir / f"{stem}{fsuffix}"
            # back to the input's intensities: the network works on normalised ones
            write_float(target, probs[0, 0].numpy() * scale[0] + shift[0], meta)
            written.append(target)
            log(f"{path.name} -> {target}")
            continue
        if kind == "regression" and instances is None:  # e.g. DeepDistance: one float map per channel
            for k in range(probs.shape[1]):
                write_float(out_dir / f"{stem}_map{k}{fsuffix}", probs[0, k].numpy(), meta)
            log(f"{path.name} -> {out_dir / stem}_map*{fsuffix} (use --instances for instance labels)")
            continue
        labels = to_labels(probs)[0].numpy()
        if instances is not None:
            labels = instances(model, x, probs[0].numpy())
        elif probs.shape[1] == 2 and meta.format != "nifti":
            labels = labels * 255  # binary 2D maps as 0/255, the convention of the data folders
        target = out_dir / f"{stem}{suffix}"
        write_label(target, labels, meta)
        written.append(target)
        if probabilities and kind == "segmentation":
            fg = probs[0, -1] if probs.shape[1] <= 2 else 1 - probs[0, 0]
            write_float(out_dir / f"{stem}_prob{fsuffix}", fg.numpy(), meta)
        log(f"{path.name} -> {target}")
    return written


def model_in_channels(model: nn.Module) -> int | None:
    """``in_channels`` of the first convolution, or None."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return m.in_channels
    return None
