"""Running a network over a whole image: sliding window, flip TTA, activation by declared head kind.

:func:`predict_main` gives the activated main head ``(B, K, *S)`` (probabilities for logits heads,
values for regression and image heads); :func:`network_outputs` gives every declared head of one
image as the maps the instance post-processing reads (:mod:`densemed.infer.postprocess`).
Both run window by window (:func:`densemed.infer.sliding_window.sliding_window`) with the recipe's
window (``infer.window``, else ``data.patch_size``), overlap and blending.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from densemed.infer.sliding_window import flip_tta, sliding_window
from densemed.nets import all_outputs
from densemed.nets.heads import activate, foreground, head_outputs, heads_of, main_head, main_kind

if TYPE_CHECKING:
    from densemed.config import Config


def window_of(cfg: Config) -> list[int]:
    """Sliding-window size of a recipe: ``infer.window``, else ``data.patch_size``."""
    return list(cfg.infer.window or cfg.data.patch_size)


def predict_main(
    model: nn.Module,
    image: torch.Tensor,
    cfg: Config,
    device: torch.device,
    tta: bool | None = None,
    out_device: torch.device | str = "cpu",
) -> torch.Tensor:
    """The activated main head ``(B, K, *S)`` for a normalised image ``(B, C, *S)`` (eval mode, no grad).

    ``tta`` (default ``infer.tta``) averages over flips of ``infer.tta_axes`` (default every axis).
    """
    model.eval()
    tta = cfg.infer.tta if tta is None else tta
    kind = main_kind(model)

    def run(x: torch.Tensor) -> torch.Tensor:
        def fwd(t: torch.Tensor) -> torch.Tensor:
            return activate(model(t), kind)

        return sliding_window(
            fwd, x, window_of(cfg), cfg.infer.overlap, cfg.infer.sw_batch_size, cfg.infer.blend, device, out_device,
            amp=cfg.infer.amp,
        )

    with torch.inference_mode():
        return flip_tta(run, image, cfg.infer.tta_axes) if tta else run(image)


def network_outputs(
    model: nn.Module,
    image: torch.Tensor,
    window: Sequence[int] | None = None,
    overlap: float = 0.5,
    device: torch.device | str | None = None,
) -> dict[str, np.ndarray]:
    """Every declared head of ``model`` on one normalised image ``(1, C, *S)``, as ``(*S)`` maps.

    Logits heads become their foreground probability (:func:`densemed.nets.heads.foreground`);
    the main head is also given as ``"foreground"`` when it is a logits head. Regression heads
    with one channel pass through under their name (several channels: ``name_k``). With
    ``window`` the image is processed window by window.
    """
    heads = heads_of(model)
    main = main_head(model)
    order = [name for name in heads if heads[name].dense]
    model.eval()

    def fwd(x: torch.Tensor) -> torch.Tensor:
        with all_outputs(model):
            outs = head_outputs(model, model(x))
        chans = []
        for name in order:
            t = outs[name].float()
            chans.append(activate(t, heads[name].kind))
        return torch.cat(chans, dim=1)

    x = torch.as_tensor(image)
    with torch.inference_mode():
        if window is None:
            stacked = fwd(x.to(device) if device is not None else x).cpu()
        else:
            stacked = sliding_window(fwd, x, window, overlap, device=device, out_device="cpu")
    maps: dict[str, np.ndarray] = {}
    start = 0
    for name in order:
        c = heads[name].channels
        block = stacked[0, start : start + c]
        start += c
        if heads[name].kind == "logits":
            maps[name] = foreground(block, channel_dim=0).numpy()
            if name == main:
                maps["foreground"] = maps[name]
        elif c == 1:
            maps[name] = block[0].numpy()
        else:
            for k in range(c):
                maps[f"{name}_{k}"] = block[k].numpy()
    return maps
