"""Whole-volume label prediction within bounded memory (issue 15): densemed slab by slab vs densemed
full accumulator vs MONAI ``sliding_window_inference``.

A generated 1x1x384^3 float32 volume, 8 classes, window 96^3, overlap 0.5 (7^3 = 343 windows),
Gaussian blending, 4 windows per forward call; the network is one 1x1x1 convolution to 8 channels
(the same module for all three, so the blending and the aggregation dominate). Each side produces
the uint8 label map: ``sliding_window_labels`` with its default bound (``max_bytes`` = 1 GiB; the
full accumulator is 8 x 384^3 x 4 B = 1728 MiB, so it goes slab by slab), the same with
``max_bytes=None`` (full accumulator), and MONAI followed by ``argmax(1)`` and a cast to uint8.
Peak memory: extra resident memory of one call in a fresh spawned process, above the network
and the input volume (``harness.measure_peak_memory``; the CUDA allocator's peak on a GPU).
Times: the three alternate within one process, no warm-up call (each call takes tens of
seconds), one torch thread on the CPU (the 2-core machine is shared: idle OpenMP threads spin
while another process holds the second core).
"""

from __future__ import annotations

import statistics
from functools import partial

import torch

from benchmarks.harness import Row, bench_device, in_fresh_process, measure_peak_memory, timeit
from densemed.infer.sliding_window import DEFAULT_MAX_BYTES, sliding_window_labels

N_CLASSES = 8
OVERLAP = 0.5
SW_BATCH = 4
IMPLS = ("densemed slab", "densemed full", "monai")

NOTES = (
    "Theory for the full case: full accumulator 8 x 384^3 x 4 B = 1728 MiB (MONAI: the same plus a "
    "one-channel weight map, 216 MiB, and its int64 argmax, 432 MiB); densemed slab mode holds one band of "
    "window[0] = 96 rows, 8 x 96 x 384^2 x 4 B = 432 MiB, plus the uint8 labels (54 MiB). The network "
    "itself, one batch of 4 windows (its 108 MiB output and the convolution's buffers), adds ~354 MiB in a "
    "fresh process, on every side. The input volume (216 MiB) is allocated before the measurement and not "
    "counted. 'labels equal' compares each side's label map with densemed slab's."
)


def _case(quick: bool) -> tuple[torch.nn.Module, torch.Tensor, tuple[int, int, int]]:
    torch.manual_seed(0)
    dev = bench_device()
    side, win = (192, 64) if quick else (384, 96)
    net = torch.nn.Conv3d(1, N_CLASSES, 1).eval().to(dev)
    return net, torch.randn(1, 1, side, side, side, device=dev), (win, win, win)


def _slab_bound(quick: bool) -> int:
    """The default bound (the 384^3 case's 1728 MiB accumulator exceeds it); 0 forces slabs for the quick case."""
    return 0 if quick else DEFAULT_MAX_BYTES


def _predict(which: str, net: torch.nn.Module, vol: torch.Tensor, window: tuple[int, ...], quick: bool) -> torch.Tensor:
    """The uint8 label map ``(1, *S)`` by one of :data:`IMPLS`."""
    with torch.inference_mode():
        if which == "densemed slab":
            return sliding_window_labels(net, vol, window, OVERLAP, SW_BATCH, max_bytes=_slab_bound(quick))
        if which == "densemed full":
            return sliding_window_labels(net, vol, window, OVERLAP, SW_BATCH, max_bytes=None)
        from monai.inferers import sliding_window_inference

        probs = sliding_window_inference(vol, window, SW_BATCH, net, overlap=OVERLAP, mode="gaussian")
        return probs.argmax(1).to(torch.uint8)


def _keep_first(store: dict[str, torch.Tensor], which: str, *args: object) -> None:
    store.setdefault(which, _predict(which, *args))  # type: ignore[arg-type]


def peak_case(which: str, quick: bool) -> float:
    """In a fresh process: peak extra MiB of one label prediction by ``which``."""
    if bench_device().type == "cpu":
        torch.set_num_threads(1)
    net, vol, window = _case(quick)
    return measure_peak_memory(lambda: _predict(which, net, vol, window, quick))


def run(quick: bool = False) -> list[Row]:
    net, vol, window = _case(quick)
    side = vol.shape[-1]
    threads = torch.get_num_threads()
    if vol.device.type == "cpu":
        torch.set_num_threads(1)
    try:
        times: dict[str, list[float]] = {w: [] for w in IMPLS}
        labels: dict[str, torch.Tensor] = {}  # each side's first label map, for the agreement check
        for _ in range(1 if quick else 2):
            for which in IMPLS:
                times[which] += timeit(partial(_keep_first, labels, which, net, vol, window, quick), 1, warmup=0)
        agree = {w: f"{100 * (labels[w] == labels['densemed slab']).float().mean().item():.4f}%" for w in IMPLS}
        labels.clear()
    finally:
        torch.set_num_threads(threads)
    peaks = {which: in_fresh_process(peak_case, which, quick) for which in IMPLS}
    case = f"1x1x{side}^3, {N_CLASSES} classes, window {window[0]}, overlap {OVERLAP}"
    monai = "MONAI sliding_window_inference + argmax"
    bound = "max_bytes=0" if quick else "auto, bound 1 GiB"
    rows = [
        Row(f"{case}: densemed slab ({bound})", times["densemed slab"], times["monai"], monai),
        Row(f"{case}: densemed full accumulator", times["densemed full"], times["monai"], monai),
        Row(f"{case}: densemed slab vs full", times["densemed slab"], times["densemed full"], "densemed full"),
    ]
    for r, (ours, ref) in zip(
        rows, (("densemed slab", "monai"), ("densemed full", "monai"), ("densemed slab", "densemed full"))
    ):
        r.extra = {
            "peak MiB ours / ref (fresh process)": f"{peaks[ours]:.0f} / {peaks[ref]:.0f}",
            "peak ratio ref/ours": f"{peaks[ref] / max(peaks[ours], 1e-9):.2f}",
            "labels equal": agree[ref],
        }
        print(
            f"{r.case}: time ref/ours {r.ratio:.2f} (median {statistics.median(r.ours):.1f} s vs "
            f"{statistics.median(r.ref or [0]):.1f} s), peak ref/ours {r.extra['peak ratio ref/ours']}",
            flush=True,
        )
    return rows
