"""Mixed precision on the CPU: bf16 autocast against float32, densemed and MONAI under the same autocast.

* Matrix product 2048 x 2048: float32 against bfloat16 (GFLOP/s).
* Training step (forward under ``torch.autocast("cpu", dtype=torch.bfloat16)`` when bf16, loss in
  float32, backward, Adam step) of the 2D U-Net (base width 32, batch norm, ReLU) on 4x1x256x256
  and of the 3D U-Net (base width 16, depth 4) on 2x1x64x64x64, each against MONAI ``BasicUNet``
  at the same widths with batch norm and ReLU, in float32 and in bf16. The bf16 speed-up of each
  network (float32 median / bf16 median) is in the notes column.
* ``train.channels_last``: the same densemed networks with their conv weights channels-last
  (:func:`densemed.train.module.to_channels_last`) against the default layout, float32 and bf16.
* Validation at equal budget (:func:`equal_budget`, run by ``python -m benchmarks.bench_amp
  --budget S``): ``configs/unet_isbi2012.yaml`` trained twice **at the same time** (so both see
  the same machine load), ``train.amp`` false and true, 1 thread each, the same time budget;
  the final validation Dice of each.

``--quick`` shrinks the cases (matrix 1024, 2D batch 1 at 128x128, 3D batch 1 at 32^3) so that a CPU
without bf16 instructions (AVX2 only, where bf16 runs emulated) finishes in minutes; the widths
stay. ``train.amp`` is the default only where this measures bf16 faster with no accuracy loss.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import torch

from benchmarks.harness import Row, bench_device, timeit

NOTES = ""


def _step(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, bf16: bool):
    opt = torch.optim.Adam(model.parameters())

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(x.device.type, dtype=torch.bfloat16) if bf16 else nullcontext():
            out = model(x)
        torch.nn.functional.cross_entropy(out.float(), y).backward()
        opt.step()

    return step


def _matmul_gflops(dtype: torch.dtype, n: int) -> list[float]:
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return timeit(lambda: a @ b, repeats=5, warmup=1)


def _alternate(case: str, fns: dict[Any, Callable[[], None]], reps: int) -> dict[Any, list[float]]:
    """One warm-up call of each variant, then ``reps`` rounds timing every variant once (same load for all)."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[Any, list[float]] = {k: [] for k in fns}
    for _ in range(reps):
        for key, fn in fns.items():
            times[key] += timeit(fn, repeats=1, warmup=0)
            print(f"  {case} {key}: {times[key][-1]:.2f} s", file=sys.stderr, flush=True)  # progress on slow CPUs
    return times


def _pair(case: str, ours: torch.nn.Module, ref: torch.nn.Module, x: torch.Tensor, y: torch.Tensor,
          reps: int) -> list[Row]:
    """fp32 and bf16 rows of one network pair, every variant timed in the same alternating rounds."""
    fns = {(who, bf): _step(net, x, y, bf) for who, net in (("ours", ours), ("ref", ref)) for bf in (False, True)}
    times = _alternate(case, fns, reps)

    def med(key: tuple[str, bool]) -> float:
        return sorted(times[key])[len(times[key]) // 2]

    speed = {who: med((who, False)) / med((who, True)) for who in ("ours", "ref")}
    note = {"bf16 speed-up densemed / MONAI": f"{speed['ours']:.2f}x / {speed['ref']:.2f}x"}
    return [Row(f"{case} float32", times[("ours", False)], times[("ref", False)], "MONAI BasicUNet"),
            Row(f"{case} bf16 autocast", times[("ours", True)], times[("ref", True)], "MONAI BasicUNet", extra=note)]


def _layouts(case: str, net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, reps: int) -> list[Row]:
    """``train.channels_last`` against the default layout: one network, float32 and bf16, same rounds."""
    import copy

    from densemed.train.module import to_channels_last

    nets = {False: net, True: to_channels_last(copy.deepcopy(net))}
    fns = {(cl, bf): _step(nets[cl], x, y, bf) for cl in (False, True) for bf in (False, True)}
    times = _alternate(f"{case} channels-last", fns, reps)
    return [Row(f"{case} channels-last (ours) vs default layout (ref), {'bf16' if bf else 'float32'}",
                times[(True, bf)], times[(False, bf)], "default layout") for bf in (False, True)]


def run(quick: bool = False) -> list[Row]:
    global NOTES
    from monai.networks.nets import BasicUNet

    from densemed import nets

    dev = bench_device()
    reps = 2 if quick else 4
    n, b2, s2, b3, s3 = (1024, 1, 128, 1, 32) if quick else (2048, 4, 256, 2, 64)
    load = os.getloadavg()[0]
    f32, b16 = _matmul_gflops(torch.float32, n), _matmul_gflops(torch.bfloat16, n)
    flop = 2 * n**3
    rows = [Row(f"matmul {n}x{n} bf16 (ours) vs float32 (ref)", b16, f32, "float32",
                extra={"GFLOP/s bf16 / float32": f"{flop / min(b16) / 1e9:.1f} / {flop / min(f32) / 1e9:.1f}"})]
    torch.manual_seed(0)
    ours = nets.build("unet", dims=2, in_channels=1, out_channels=2, base_width=32).to(dev)
    ref = BasicUNet(2, 1, 2, features=(32, 64, 128, 256, 512, 32), act="relu", norm="batch",
                    dropout=0.0, upsample="deconv").to(dev)
    x, y = torch.randn(b2, 1, s2, s2, device=dev), torch.randint(0, 2, (b2, s2, s2), device=dev)
    rows += _pair(f"U-Net 2D (width 32) train step {b2}x1x{s2}x{s2}", ours, ref, x, y, reps)
    rows += _layouts(f"U-Net 2D (width 32) train step {b2}x1x{s2}x{s2}", ours, x, y, reps)
    ours3 = nets.build("unet", dims=3, in_channels=1, out_channels=2, base_width=16, depth=4).to(dev)
    ref3 = BasicUNet(3, 1, 2, features=(16, 32, 64, 128, 256, 16), act="relu", norm="batch",
                     dropout=0.0, upsample="deconv").to(dev)
    x3, y3 = torch.randn(b3, 1, s3, s3, s3, device=dev), torch.randint(0, 2, (b3, s3, s3, s3), device=dev)
    rows += _pair(f"3D U-Net (width 16) train step {b3}x1x{s3}^3", ours3, ref3, x3, y3, reps)
    rows += _layouts(f"3D U-Net (width 16) train step {b3}x1x{s3}^3", ours3, x3, y3, reps)
    cpu = torch.backends.cpu.get_cpu_capability() if dev.type == "cpu" else torch.cuda.get_device_name()
    NOTES = (f"CPU capability {cpu}; load average {load:.1f} at the start, {os.getloadavg()[0]:.1f} at the end "
             "(`uptime`; the CPU is shared with other agents).")
    return rows


def equal_budget(budget_s: float, recipe: str = "configs/unet_isbi2012.yaml",
                 extra: list[str] | None = None) -> dict[str, dict]:
    """Train ``recipe`` with ``train.amp`` false and true at the same time, same budget; their final validation.

    ``extra``: further ``--set`` overrides for both runs (e.g. smaller patches for a short budget).
    """
    root = Path(__file__).resolve().parents[1]
    out: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        procs = {}
        for amp in (False, True):
            run_dir = Path(tmp) / f"amp_{amp}"
            sets = [f"train.amp={str(amp).lower()}", f"train.time_budget_s={budget_s}", "train.epochs=1000",
                    "train.progress=false", "train.threads=1", f"train.out={run_dir}", *(extra or [])]
            procs[amp] = (run_dir, subprocess.Popen([sys.executable, "-m", "densemed", "train", recipe, "--set", *sets],
                                                    cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                                    text=True))
        for amp, (run_dir, proc) in procs.items():
            log = proc.communicate()[0]
            if proc.returncode != 0:
                raise RuntimeError(log[-2000:])
            recs = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
            last = recs[-1]
            out["bf16" if amp else "float32"] = {"steps": last["steps"], "val_dice": last.get("val_dice"),
                                                 "train_seconds": sum(r["train_seconds"] for r in recs)}
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--budget", type=float, default=120.0, help="seconds of training for each of the two runs")
    ap.add_argument("--set", nargs="*", default=[], help="further overrides for both runs")
    args = ap.parse_args()
    tic = time.perf_counter()
    print(json.dumps(equal_budget(args.budget, extra=args.set), indent=1))
    print(f"wall {time.perf_counter() - tic:.0f} s, load {os.getloadavg()}")
