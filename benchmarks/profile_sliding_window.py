"""Where the time of a 3D sliding-window prediction goes, densemed vs MONAI, on the benchmark device.

The case of ``bench_unet`` (3D U-Net width 8, 1x1x192^3, window 64, overlap 0.25, 2 windows per
call). Prints, for each implementation: median wall time over ``--repeats`` calls, the time spent
inside the network (synchronised around each call), and the top operators of one profiled call
(``torch.profiler``, sorted by device time on a GPU, by CPU time otherwise).

Usage: ``python -m benchmarks.profile_sliding_window [--repeats 10] [--rows 12] [--peak]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from benchmarks.bench_unet import _sliding_window_3d_case, sliding_window_3d_peak
from benchmarks.harness import in_fresh_process, sync
from densemed.infer.sliding_window import sliding_window


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--rows", type=int, default=12, help="profiler table rows (0: no profile)")
    ap.add_argument("--peak", action="store_true", help="also the peak memory of each, in fresh processes")
    args = ap.parse_args()
    from monai.inferers import sliding_window_inference

    net, vol = _sliding_window_3d_case()
    inside = [0.0]

    def timed_net(x: torch.Tensor) -> torch.Tensor:
        sync()
        t = time.perf_counter()
        y = net(x)
        sync()
        inside[0] += time.perf_counter() - t
        return y

    impls = {
        "densemed": lambda f: sliding_window(f, vol, (64, 64, 64), overlap=0.25, batch_size=2),
        "monai": lambda f: sliding_window_inference(vol, (64, 64, 64), 2, f, overlap=0.25, mode="gaussian"),
    }
    with torch.inference_mode():
        for fn in impls.values():
            fn(net)
        for name, fn in impls.items():
            walls, nets_s = [], []
            for _ in range(args.repeats):
                inside[0] = 0.0
                sync()
                t = time.perf_counter()
                fn(timed_net)
                sync()
                walls.append(time.perf_counter() - t)
                nets_s.append(inside[0])
            print(f"{name}: wall median {1e3 * statistics.median(walls):.1f} ms (min {1e3 * min(walls):.1f}), "
                  f"in the network {1e3 * statistics.median(nets_s):.1f} ms", flush=True)
    if args.peak:
        peaks = [in_fresh_process(sliding_window_3d_peak, which) for which in ("densemed", "monai")]
        print(f"peak MiB densemed / MONAI (fresh process): {peaks[0]:.0f} / {peaks[1]:.0f}", flush=True)
    if args.rows <= 0:
        return
    with torch.inference_mode():
        acts = [torch.profiler.ProfilerActivity.CPU]
        key = "self_cpu_time_total"
        if vol.is_cuda:
            acts.append(torch.profiler.ProfilerActivity.CUDA)
            key = "self_cuda_time_total"
        for name, fn in impls.items():
            with torch.profiler.profile(activities=acts) as prof:
                fn(net)
                sync()
            print(f"--- {name}: top operators by {key}")
            print(prof.key_averages().table(sort_by=key, row_limit=args.rows, max_name_column_width=40))


if __name__ == "__main__":
    main()
