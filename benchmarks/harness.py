"""Timing helpers shared by every benchmark module.

A benchmark module is ``benchmarks/bench_<topic>.py`` with a function ``run(quick: bool) -> list[Row]``.
Each row measures densemed and the reference in the same process, alternating repeats so that
noise on the shared machine hits both, and reports min and median seconds and the ratio
``reference / densemed`` (> 1 means densemed is faster).
"""

from __future__ import annotations

import gc
import os
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class Row:
    """One benchmark case: times in seconds per call; ``ratio`` = reference / densemed (by median)."""

    case: str
    ours: list[float]
    ref: list[float] | None = None
    ref_name: str = ""
    unit: str = "s/call"
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if not self.ref:
            return None
        return statistics.median(self.ref) / statistics.median(self.ours)


def bench_device() -> torch.device:
    """Where the benchmarks run: ``$DENSEMED_BENCH_DEVICE``, else CUDA when present, else the CPU."""
    return torch.device(os.environ.get("DENSEMED_BENCH_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))


def sync() -> None:
    """Wait for queued GPU work, so that a host clock measures it (no-op on the CPU)."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _timed(fn: Callable[[], object]) -> float:
    gc.collect()
    sync()
    t = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t


def timeit(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> list[float]:
    """Seconds per call of ``fn``, ``repeats`` times after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    return [_timed(fn) for _ in range(repeats)]


def compare(
    case: str,
    ours: Callable[[], object],
    ref: Callable[[], object] | None,
    ref_name: str = "",
    repeats: int = 5,
    warmup: int = 1,
) -> Row:
    """Time ``ours`` and ``ref`` alternately (one call each per round) after warm-up."""
    for _ in range(warmup):
        ours()
        if ref is not None:
            ref()
    t_ours: list[float] = []
    t_ref: list[float] = []
    for _ in range(repeats):
        for fn, acc in ((ours, t_ours), (ref, t_ref)):
            if fn is not None:
                acc.append(_timed(fn))
    return Row(case, t_ours, t_ref or None, ref_name)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far, MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure_peak_memory(fn: Callable[[], object]) -> float:
    """Peak extra memory (MiB) of one call: CUDA allocator peak on GPU, else traced via RSS sampling.

    On the CPU PyTorch has no allocator statistics; we run ``fn`` in a child process-free way by
    sampling ``/proc/self/statm`` from a thread every millisecond and subtracting the baseline.
    """
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        fn()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    import threading

    page = resource.getpagesize()

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * page

    gc.collect()
    base = rss()
    peak = [base]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss())
            time.sleep(0.001)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    try:
        fn()
    finally:
        done.set()
        th.join()
    return max(peak[0] - base, 0) / 2**20


def in_fresh_process(fn: Callable[..., float], *args: object) -> float:
    """Run the module-level ``fn(*args)`` in a new (spawned) process and return its result.

    Peak memory must be measured there: in a warm process, memory freed by an earlier case is
    reused and hides the next one's peak (it read 0 MiB).
    """
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(1) as pool:
        return pool.apply(fn, args)


def fmt_row(r: Row) -> str:
    """A Markdown table row: case, densemed min/median, reference min/median, ratio, extras."""
    def mm(ts: list[float] | None) -> str:
        if not ts:
            return "–"
        return f"{min(ts) * 1e3:.1f} / {statistics.median(ts) * 1e3:.1f}"

    ratio = f"{r.ratio:.2f}" if r.ratio is not None else "–"
    extra = "; ".join(f"{k}: {v}" for k, v in r.extra.items())
    return f"| {r.case} | {mm(r.ours)} | {r.ref_name or '–'} | {mm(r.ref)} | {ratio} | {extra} |"


HEADER = (
    "| case | densemed ms (min / median) | reference | reference ms (min / median) "
    "| ratio ref/densemed | notes |\n|---|---|---|---|---|---|"
)
