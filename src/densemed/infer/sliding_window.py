"""Sliding-window inference with Gaussian blending, for images larger than the training patch.

Windows of size ``window`` are placed with ``overlap`` (fraction of the window) so that the last
window ends at the image border; each prediction is weighted by a Gaussian importance map
(sigma = window / 8 per axis, as nnU-Net does) because predictions near a window's edge see less
context. The weighted sum is divided by the summed weights.

The importance map is a product of one profile per axis (each floored at 1e-3 of its peak), and
the windows are a grid of per-axis starts, so the summed weights are the product of per-axis
sums: they are never held as a whole volume (less memory than a weight-count volume, and no
per-window additions into it). Windows run in batches of
``batch_size`` on ``device``; the accumulators live on ``out_device`` (default: the input's), so a
volume larger than the device's memory is processed window by window.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F


@lru_cache(maxsize=16)
def _profile(w: int, sigma_scale: float = 0.125) -> torch.Tensor:
    """One axis of the Gaussian importance map, peak 1; floored so that no voxel gets ~0 weight."""
    x = torch.arange(w, dtype=torch.float64) - (w - 1) / 2
    return torch.exp(-0.5 * (x / (sigma_scale * w)) ** 2).clamp_min(1e-3).float()


def window_starts(size: int, window: int, step: int) -> list[int]:
    """Start offsets along one axis: every ``step``, plus one ending exactly at ``size``."""
    if size <= window:
        return [0]
    starts = list(range(0, size - window + 1, step))
    if starts[-1] != size - window:
        starts.append(size - window)
    return starts


def sliding_window(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    window: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 4,
    blend: str = "gaussian",
    device: torch.device | str | None = None,
    out_device: torch.device | str | None = None,
    margin: int = 0,
) -> torch.Tensor:
    """Predict a whole image window by window.

    Args:
        predict: maps ``(b, C, *window)`` to ``(b, K, *window)`` (e.g. a model in eval mode).
        image: ``(B, C, *S)``; any ``S`` (smaller than the window is zero-padded).
        window: window size per spatial axis.
        overlap: fraction of the window shared by neighbouring windows, in [0, 1).
        batch_size: windows per forward call.
        blend: ``"gaussian"`` or ``"constant"`` weighting.
        device: where ``predict`` runs (default: the image's device).
        out_device: where the output accumulates (default: the image's device).
        margin: voxels at each window edge that lie inside the image to give zero weight
            (overlap-tile): with ``margin`` >= the network's receptive-field radius and enough
            overlap, the result equals predicting the whole image at once.

    Shape:
        ``(B, C, *S) -> (B, K, *S)``.
    """
    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    dims = image.dim() - 2
    window = tuple(int(w) for w in window)
    if len(window) != dims:
        raise ValueError(f"window {window} does not match a {dims}D image")
    device = torch.device(device) if device is not None else image.device
    out_device = torch.device(out_device) if out_device is not None else image.device
    size = list(image.shape[2:])
    pad = []
    for s, w in zip(reversed(size), reversed(window)):
        pad += [0, max(w - s, 0)]
    if any(pad):
        image = F.pad(image, pad)
    padded = list(image.shape[2:])
    steps = [max(1, int(round(w * (1 - overlap)))) for w in window]
    axis_grid = [window_starts(s, w, st) for s, w, st in zip(padded, window, steps)]
    starts = list(itertools.product(*axis_grid))
    if blend not in ("gaussian", "constant"):
        raise ValueError(f"blend must be 'gaussian' or 'constant', got {blend!r}")
    if margin and any(2 * margin > w - st for w, st in zip(window, steps)):
        raise ValueError(f"margin {margin} leaves gaps: need 2 * margin <= window * overlap")
    # per axis: each start's kind (which of the window's ends lie inside the image: that alone
    # decides its weight profile), each kind's profile, and the profiles summed over the axis
    kinds, profiles, norms = [], [], []
    for axis_starts, w, s in zip(axis_grid, window, padded):
        base = _profile(w) if blend == "gaussian" else torch.ones(w)
        kind = {a: (a > 0, a + w < s) for a in axis_starts}
        prof = {k: _edge_profile(base, k[0], k[1], margin) for k in set(kind.values())}
        total = torch.zeros(s)
        for a, k in kind.items():
            total[a : a + w] += prof[k]
        kinds.append(kind)
        profiles.append({k: p.to(out_device) for k, p in prof.items()})
        norms.append(total.to(out_device))
    # one weight volume per combination of kinds: a single one without margin
    weights: dict[tuple[tuple[bool, bool], ...], torch.Tensor] = {}

    def weight_of(st: tuple[int, ...]) -> torch.Tensor:
        key = tuple(kinds[i][a] for i, a in enumerate(st))
        if key not in weights:
            weights[key] = _outer([profiles[i][k] for i, k in enumerate(key)])
        return weights[key]

    out: torch.Tensor | None = None
    n_img = image.shape[0]
    jobs = [(b, st) for b in range(n_img) for st in starts]
    for k in range(0, len(jobs), batch_size):
        chunk = jobs[k : k + batch_size]
        tiles = torch.stack(
            [image[b][(slice(None),) + tuple(slice(a, a + w) for a, w in zip(st, window))] for b, st in chunk]
        ).to(device, non_blocking=True)
        with torch.no_grad():
            pred = predict(tiles)
        if not isinstance(pred, torch.Tensor):
            raise TypeError("sliding_window: predict must return one tensor (use the model in eval mode)")
        pred = pred.to(out_device, torch.float32)
        if out is None:
            out = torch.zeros((n_img, pred.shape[1], *padded), device=out_device)
        for (b, st), p in zip(chunk, pred):
            out[(b, slice(None)) + tuple(slice(a, a + w) for a, w in zip(st, window))].addcmul_(p, weight_of(st))
    assert out is not None
    # divide by the summed weights without a whole-volume temporary: last axes, then the first
    if len(norms) > 1:
        out /= _outer(norms[1:])
    out /= norms[0].view(-1, *[1] * (len(norms) - 1))
    return out[(slice(None), slice(None)) + tuple(slice(0, s) for s in size)]


def _outer(vectors: Sequence[torch.Tensor]) -> torch.Tensor:
    """Outer product of 1D tensors: ``(n1,), (n2,), ... -> (n1, n2, ...)``."""
    out = vectors[0]
    for v in vectors[1:]:
        out = out[..., None] * v
    return out


def _edge_profile(profile: torch.Tensor, cut_start: bool, cut_end: bool, margin: int) -> torch.Tensor:
    """``profile`` with ``margin`` voxels zeroed at the window ends that lie inside the image."""
    if margin <= 0 or not (cut_start or cut_end):
        return profile
    p = profile.clone()
    if cut_start:
        p[:margin] = 0
    if cut_end:
        p[len(p) - margin :] = 0
    return p


def flip_tta(
    predict: Callable[[torch.Tensor], torch.Tensor], image: torch.Tensor, axes: Sequence[int] | None = None
) -> torch.Tensor:
    """Average of ``predict`` over all flips of the spatial ``axes`` (default: every spatial axis).

    ``predict`` should return probabilities, so the average is a probability: ``(B, C, *S) -> (B, K, *S)``.
    """
    spatial = list(range(2, image.dim())) if axes is None else [a + 2 for a in axes]
    total = None
    n = 0
    for r in range(len(spatial) + 1):
        for combo in itertools.combinations(spatial, r):
            x = image.flip(combo) if combo else image
            y = predict(x)
            y = y.flip(combo) if combo else y
            total = y if total is None else total + y
            n += 1
    assert total is not None
    return total / n
