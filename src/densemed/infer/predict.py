"""Whole-image prediction of files or folders from a checkpoint, through the checkpoint's task.

For every input file: read it, check its channels against the network, resample to
``data.target_spacing``, normalise as in training, let the task infer the whole image
(:meth:`densemed.tasks.Task.infer`: sliding window, optional flip TTA), bring the outputs back to
the input's grid and let the task write them (:meth:`densemed.tasks.Task.write`: label maps,
probabilities, instances, restored images — in the input's format and geometry).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from densemed.config import Config
from densemed.data.io import is_supported, read_image
from densemed.data.normalize import intensity_params, normalize
from densemed.errors import DensemedError
from densemed.typing import PathType


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


def model_in_channels(model: nn.Module) -> int | None:
    """``in_channels`` of the first convolution, or None."""
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            return m.in_channels
    return None


def predict_paths(
    model: nn.Module,
    cfg: Config,
    inputs: list[Path],
    out_dir: PathType,
    device: torch.device,
    tta: bool | None = None,
    options: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> list[Path]:
    """Predict every input file and write the task's results into ``out_dir``; returns the main files.

    Args:
        model: the network in eval mode.
        cfg: its recipe.
        inputs: image files.
        out_dir: output folder (created).
        device: where the network runs.
        tta: flip test-time augmentation (default ``infer.tta``).
        options: the task's writing options (``probabilities``, ``instances``, ``instance_method``).
        log: progress lines.
    """
    from densemed import tasks

    task = tasks.build(cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    options = {**(options or {}), "device": device}
    expected = model_in_channels(model)
    written = []
    for path in inputs:
        image, meta = read_image(path, cfg.data.dims)
        if expected is not None and image.shape[0] != expected:
            raise DensemedError(f"{path}: image has {image.shape[0]} channels, the model expects {expected}")
        orig = image.shape[1:]
        if cfg.data.target_spacing and meta.spacing:
            from densemed.data.dataset import resample

            image = resample(image, meta.spacing, cfg.data.target_spacing, order=1)
        x = torch.from_numpy(normalize(image, cfg.data.normalize, cfg.data.percentiles, cfg.data.window))[None]
        shift, scale, _ = intensity_params(image, cfg.data.normalize, cfg.data.percentiles, cfg.data.window)
        outputs = task.infer(model, x, device, tta)
        if tuple(outputs.shape[2:]) != tuple(orig):  # back to the input grid after resampling
            outputs = F.interpolate(outputs, size=orig, mode="trilinear" if cfg.data.dims == 3 else "bilinear")
        files = task.write(model, x, outputs, path, meta, out_dir, (shift, scale), options)
        written.append(files[0])
        log(f"{path.name} -> {', '.join(str(f) for f in files)}")
    return written
