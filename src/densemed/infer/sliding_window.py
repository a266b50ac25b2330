"""Sliding-window inference with Gaussian blending, for images larger than the training patch.

Windows of size ``window`` are placed with ``overlap`` (fraction of the window) so that the last
window ends at the image border; each prediction is weighted by a Gaussian importance map
(sigma = window / 8 per axis, as nnU-Net does: Isensee et al., "nnU-Net", Nature Methods 2021)
because predictions near a window's edge see less context. With windows ``s`` starting at
``a_s`` and predictions ``p_s``, the blended output at voxel ``x`` is

    y(x) = sum_s w_s(x) p_s(x) / sum_s w_s(x),    w_s(x) = prod_i g_i(x_i - a_{s,i}),

where ``g_i`` is the per-axis Gaussian profile (floored at 1e-3 of its peak so that no voxel gets
~0 weight; with ``margin`` its first/last ``margin`` voxels are zeroed at window ends inside the
image, the overlap-tile strategy of Ronneberger et al., "U-Net", MICCAI 2015). The windows form a
grid of per-axis starts and each axis' profile depends only on that axis' start, so the summed
weights factor: ``sum_s w_s(x) = prod_i sum_{a in A_i} g_i(x_i - a)``. They are never held as a
whole volume (less memory than a weight-count volume, and no per-window additions into it).
Windows run in batches of ``batch_size`` on ``device``; the accumulators live on ``out_device``
(default: the input's), so a volume larger than the device's memory is processed window by window.

Bounded memory (:func:`sliding_window_labels`): the full float32 accumulator has ``K x volume``
entries (14 classes on a 512^3 CT: 7.5 GB). Windows are visited in order of their start on the
first spatial axis; once the next window starts at row ``a``, no remaining window touches rows
``< a``, so those rows are final: they are normalised, reduced to class indices and dropped. Only
the label map and a band of ``window[0]`` rows of accumulators live at a time. Each voxel
receives the same float32 operations in the same order as in the full accumulator (the weighted
prediction ``w_s * p_s`` is formed first, then added; division by the per-axis sums last), so the
labels are identical, not merely close.

Mixed precision (``amp``): the network runs under :func:`torch.autocast` (bfloat16 on the CPU;
bfloat16 or float16 on CUDA), and its outputs are cast to float32 before blending, so the
accumulators and the normalisation stay in float32.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F

from densemed.errors import DensemedError
from densemed.precision import AmpSpec, amp_dtype  # noqa: F401  (amp_dtype: re-exported for callers of this module)

# default bound on the full (images x classes x volume) float32 accumulator of sliding_window_labels
DEFAULT_MAX_BYTES = 2**30


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


@dataclass
class _Grid:
    """Where the windows go and how they are weighted, for one padded image batch."""

    image: torch.Tensor  # (B, C, *padded), zero-padded up to the window where smaller
    size: tuple[int, ...]  # spatial size before padding
    padded: tuple[int, ...]
    window: tuple[int, ...]
    starts: list[tuple[int, ...]]  # ordered by the first axis' start (itertools.product)
    norms: list[torch.Tensor]  # per axis: the window profiles summed over the axis, on out_device
    weight_of: Callable[[tuple[int, ...]], torch.Tensor]  # a window's (*window) weight volume

    def slices(self, start: tuple[int, ...]) -> tuple[slice, ...]:
        return tuple(slice(a, a + w) for a, w in zip(start, self.window))


def _grid(
    image: torch.Tensor,
    window: Sequence[int],
    overlap: float,
    blend: str,
    margin: int,
    out_device: torch.device,
) -> _Grid:
    """Validate the arguments, pad the image and lay out the windows and their weights."""
    if not 0 <= overlap < 1:
        raise DensemedError(f"sliding_window: overlap must be in [0, 1), got {overlap}")
    dims = image.dim() - 2
    window = tuple(int(w) for w in window)
    if len(window) != dims or min(window, default=0) < 1:
        raise DensemedError(f"sliding_window: window {window} does not match a {dims}D image")
    if blend not in ("gaussian", "constant"):
        raise DensemedError(f"sliding_window: blend must be 'gaussian' or 'constant', got {blend!r}")
    size = tuple(image.shape[2:])
    pad = []
    for s, w in zip(reversed(size), reversed(window)):
        pad += [0, max(w - s, 0)]
    if any(pad):
        image = F.pad(image, pad)
    padded = tuple(image.shape[2:])
    steps = [max(1, int(round(w * (1 - overlap)))) for w in window]
    if margin and any(2 * margin > w - st for w, st in zip(window, steps)):
        raise DensemedError(f"sliding_window: margin {margin} leaves gaps: need 2 * margin <= window * overlap")
    axis_grid = [window_starts(s, w, st) for s, w, st in zip(padded, window, steps)]
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

    return _Grid(image, size, padded, window, list(itertools.product(*axis_grid)), norms, weight_of)


def _weighted_windows(
    predict: Callable[[torch.Tensor], torch.Tensor],
    grid: _Grid,
    batch_size: int,
    device: torch.device,
    out_device: torch.device,
    autocast: torch.dtype | None,
) -> Iterator[tuple[int, tuple[int, ...], torch.Tensor]]:
    """Yield ``(image index, window start, w_s * p_s)`` in order of (image, first-axis start).

    The yielded ``(K, *window)`` float32 tensor is one reused buffer: consume it before the next.
    """
    if batch_size < 1:
        raise DensemedError(f"sliding_window: batch_size must be >= 1, got {batch_size}")
    image = grid.image
    jobs = [(b, st) for b in range(image.shape[0]) for st in grid.starts]
    buf: torch.Tensor | None = None
    for k in range(0, len(jobs), batch_size):
        chunk = jobs[k : k + batch_size]
        tiles = torch.stack([image[b][(slice(None),) + grid.slices(st)] for b, st in chunk])
        tiles = tiles.to(device, non_blocking=True)
        amp_ctx = torch.autocast(device.type, dtype=autocast) if autocast is not None else contextlib.nullcontext()
        with torch.no_grad(), amp_ctx:
            pred = predict(tiles)
        if not isinstance(pred, torch.Tensor):
            raise TypeError("sliding_window: predict must return one tensor (use the model in eval mode)")
        # float32 before blending: under autocast the network's output is bf16/fp16
        pred = pred.to(out_device, torch.float32)
        if buf is None or buf.shape != pred.shape[1:]:
            buf = torch.empty(pred.shape[1:], device=out_device)
        for (b, st), p in zip(chunk, pred):
            # product first, then a plain add: every voxel is rounded the same way whatever the
            # accumulator's shape (an addcmul could fuse differently in vector and tail loops)
            torch.mul(p, grid.weight_of(st), out=buf)
            yield b, st, buf


def _rest_norm(grid: _Grid) -> torch.Tensor | None:
    """The summed weights over every axis but the first, ``(*padded[1:])`` (None for 1D)."""
    return _outer(grid.norms[1:]) if len(grid.norms) > 1 else None


def _blend_full(
    stream: Iterator[tuple[int, tuple[int, ...], torch.Tensor]], grid: _Grid, n_img: int, out_device: torch.device
) -> torch.Tensor:
    """The normalised full accumulator ``(B, K, *size)`` float32."""
    out: torch.Tensor | None = None
    for b, st, wp in stream:
        if out is None:
            out = torch.zeros((n_img, wp.shape[0], *grid.padded), device=out_device)
        out[(b, slice(None)) + grid.slices(st)] += wp
    assert out is not None
    # divide by the summed weights without a whole-volume temporary: last axes, then the first
    rest = _rest_norm(grid)
    if rest is not None:
        out /= rest
    out /= grid.norms[0].view(-1, *[1] * (len(grid.norms) - 1))
    return out[(slice(None), slice(None)) + tuple(slice(0, s) for s in grid.size)]


def _windows_of(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    window: Sequence[int],
    overlap: float,
    batch_size: int,
    blend: str,
    device: torch.device | str | None,
    out_device: torch.device | str | None,
    margin: int,
    amp: AmpSpec,
) -> tuple[_Grid, Iterator[tuple[int, tuple[int, ...], torch.Tensor]], torch.device]:
    """The window grid of ``image``, the stream of its weighted predictions, and the output device.

    ``device`` and ``out_device`` default to the image's device; the arguments are those of
    :func:`sliding_window`.
    """
    device = torch.device(device) if device is not None else image.device
    out_device = torch.device(out_device) if out_device is not None else image.device
    autocast = amp_dtype(amp, device)
    grid = _grid(image, window, overlap, blend, margin, out_device)
    return grid, _weighted_windows(predict, grid, batch_size, device, out_device, autocast), out_device


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
    amp: AmpSpec = False,
) -> torch.Tensor:
    """Predict a whole image window by window; the blended output is float32.

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
        amp: run ``predict`` under :func:`torch.autocast` (see :func:`amp_dtype`); the
            accumulator stays float32.

    Shape:
        ``(B, C, *S) -> (B, K, *S)``.

    Example:
        >>> y = sliding_window(lambda t: t.repeat(1, 3, 1, 1), torch.randn(1, 1, 50, 37), (32, 32))
        >>> print(y.shape)
        torch.Size([1, 3, 50, 37])
    """
    grid, stream, out = _windows_of(predict, image, window, overlap, batch_size, blend, device, out_device, margin, amp)
    return _blend_full(stream, grid, image.shape[0], out)


def label_dtype(n_classes: int) -> torch.dtype:
    """The smallest integer dtype holding class indices ``0 .. n_classes - 1`` (uint8, int16, int32)."""
    if n_classes <= 256:
        return torch.uint8
    if n_classes <= 2**15:
        return torch.int16
    return torch.int32


def _labels_of(probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """``(K, ...) -> (...)`` in :func:`label_dtype`: argmax over classes, or ``> threshold`` for one channel.

    The argmax is a running maximum over the classes (the first of equal maxima wins, as in
    :func:`torch.argmax`): on the CPU ``argmax(0)`` over the leading, strided axis took ~50% of a
    slab-mode prediction, and it would return int64 (8 bytes per voxel) besides.
    """
    n_cls = probs.shape[0]
    if n_cls == 1:
        return (probs[0] > threshold).to(torch.uint8)
    best = probs[0].clone()
    labels = torch.zeros(probs.shape[1:], dtype=label_dtype(n_cls), device=probs.device)
    for k in range(1, n_cls):
        better = probs[k] > best
        labels.masked_fill_(better, k)
        torch.maximum(best, probs[k], out=best)
    return labels


def _labels_by_slab(
    stream: Iterator[tuple[int, tuple[int, ...], torch.Tensor]],
    first: tuple[int, tuple[int, ...], torch.Tensor],
    grid: _Grid,
    n_img: int,
    out_device: torch.device,
    threshold: float,
) -> torch.Tensor:
    """Class indices ``(B, *size)`` from a band of ``window[0]`` accumulator rows per image."""
    n_cls = first[2].shape[0]
    w0, rows = grid.window[0], grid.padded[0]
    band = torch.zeros((n_cls, w0, *grid.padded[1:]), device=out_device)  # rows top .. top + w0
    labels = torch.empty((n_img, *grid.size), dtype=label_dtype(n_cls), device=out_device)
    crop = tuple(slice(0, s) for s in grid.size[1:])
    rest = _rest_norm(grid)
    if rest is not None:
        rest = rest[crop]
    ones = [1] * (len(grid.size) - 1)

    def finish(b: int, top: int, end: int) -> None:
        """Normalise band rows ``top .. end`` (image rows), reduce them to labels; rows past the image are dropped."""
        end = min(end, grid.size[0])
        if end <= top:
            return
        slab = band[(slice(None), slice(0, end - top)) + crop]  # (K, r, *size[1:])
        # the same two divisions, in the same order, as the full accumulator
        if rest is not None:
            slab /= rest
        slab /= grid.norms[0][top:end].view(-1, *ones)
        labels[b, top:end] = _labels_of(slab, threshold)

    cur_b, top = -1, 0
    for b, st, wp in itertools.chain([first], stream):
        if b != cur_b:
            if cur_b >= 0:
                finish(cur_b, top, rows)
            band.zero_()
            cur_b, top = b, st[0]
        elif st[0] != top:
            # no remaining window of this image touches rows < st[0] (windows come ordered by it)
            d = st[0] - top  # <= w0 because the step along an axis is at most the window
            finish(b, top, st[0])
            keep = w0 - d
            # shift the live rows d .. w0 up to 0 in chunks of d rows: source and target never overlap
            for i in range(0, keep, d):
                n = min(d, keep - i)
                band[:, i : i + n].copy_(band[:, i + d : i + d + n])
            band[:, keep:].zero_()
            top = st[0]
        band[(slice(None), slice(st[0] - top, st[0] - top + w0)) + grid.slices(st)[1:]] += wp
    finish(cur_b, top, rows)
    return labels


def sliding_window_labels(
    predict: Callable[[torch.Tensor], torch.Tensor],
    image: torch.Tensor,
    window: Sequence[int],
    overlap: float = 0.5,
    batch_size: int = 4,
    blend: str = "gaussian",
    device: torch.device | str | None = None,
    out_device: torch.device | str | None = None,
    margin: int = 0,
    *,
    max_bytes: int | None = DEFAULT_MAX_BYTES,
    threshold: float = 0.5,
    amp: AmpSpec = False,
) -> torch.Tensor:
    """Class indices of a whole image predicted window by window, within a memory bound.

    The blended output is reduced to labels (argmax over the ``K`` channels; ``> threshold`` when
    ``K == 1``, e.g. sigmoid probabilities). When the full float32 accumulator
    (``B * K * prod(S) * 4`` bytes, ``S`` padded to the window) would exceed ``max_bytes``, the
    labels are built slab by slab along the first spatial axis and only a band of
    ``window[0]`` rows of accumulators is held (``K * window[0] * prod(S[1:]) * 4`` bytes) —
    even when that band exceeds ``max_bytes`` itself. Both ways give identical labels.

    Args:
        predict: maps ``(b, C, *window)`` to ``(b, K, *window)``. Its outputs are blended, then
            reduced: the labels are those of ``sliding_window(predict, ...)``'s output, so give it
            probabilities where that is what the labels should come from (blended logits and
            blended softmax probabilities can have different argmaxes where windows overlap).
        image: ``(B, C, *S)``; any ``S`` (smaller than the window is zero-padded).
        window: window size per spatial axis.
        overlap: fraction of the window shared by neighbouring windows, in [0, 1).
        batch_size: windows per forward call.
        blend: ``"gaussian"`` or ``"constant"`` weighting.
        device: where ``predict`` runs (default: the image's device).
        out_device: where the accumulators and the labels live (default: the image's device).
        margin: overlap-tile margin, as in :func:`sliding_window`.
        max_bytes: bound on the full accumulator; ``None``: always the full accumulator;
            ``0``: always slab by slab.
        threshold: the foreground threshold for a one-channel output.
        amp: run ``predict`` under :func:`torch.autocast` (see :func:`amp_dtype`); the
            accumulators stay float32.

    Returns:
        ``(B, *S)`` class indices, uint8 for up to 256 classes (int16, int32 beyond).

    Shape:
        ``(B, C, *S) -> (B, *S)``.

    Example:
        >>> net = torch.nn.Conv3d(1, 8, 1)
        >>> y = sliding_window_labels(net, torch.randn(1, 1, 40, 33, 35), (16, 16, 16), max_bytes=0)
        >>> print(y.shape, y.dtype)
        torch.Size([1, 40, 33, 35]) torch.uint8
    """
    if max_bytes is not None and max_bytes < 0:
        raise DensemedError(f"sliding_window_labels: max_bytes must be >= 0 or None, got {max_bytes}")
    grid, stream, out_device = _windows_of(
        predict, image, window, overlap, batch_size, blend, device, out_device, margin, amp
    )
    first = next(stream)  # the class count is known only once the network has run
    n_img, n_cls = image.shape[0], first[2].shape[0]
    full_bytes = 4 * n_img * n_cls * math.prod(grid.padded)
    if max_bytes is None or full_bytes <= max_bytes:
        probs = _blend_full(itertools.chain([first], stream), grid, n_img, out_device)
        return _full_labels(probs, threshold)
    return _labels_by_slab(stream, first, grid, n_img, out_device, threshold)


def _full_labels(probs: torch.Tensor, threshold: float) -> torch.Tensor:
    """``(B, K, *S)`` blended output -> ``(B, *S)`` labels in :func:`label_dtype`.

    In chunks of rows of ~2^22 voxels, so that the running maximum and the masks of
    :func:`_labels_of` stay small (whole-volume ones were 5 bytes per voxel: 270 MiB at 384^3).
    """
    labels = torch.empty((probs.shape[0], *probs.shape[2:]), dtype=label_dtype(probs.shape[1]), device=probs.device)
    step = max(1, 2**22 // max(1, math.prod(probs.shape[3:])))
    for b in range(probs.shape[0]):
        for r in range(0, probs.shape[2], step):
            labels[b, r : r + step] = _labels_of(probs[b, :, r : r + step], threshold)
    return labels


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
