"""Several processes on the CPU (gloo): training throughput of 1 vs 2 processes, DDP's unused-parameter search.

* **Scaling**: the real training loop (:class:`densemed.train.Trainer`, U-Net 2D base width 16,
  depth 4, batch norm, patches 4x1x128x128 per process, generated cells, no augmentation) in 1
  process and in 2 processes of 1 thread each, forked from this one and joined over gloo on
  localhost (what ``densemed train --nproc 2`` starts, without torchrun's start-up). Seconds per
  training image from ``metrics.jsonl`` (training time of the epochs after the first, validation
  excluded); speed-up = 1-process seconds / 2-process seconds, efficiency = speed-up / 2. The two
  runs alternate ``repeats`` times.
* **find_unused_parameters**: one DDP training step (forward, backward with the gradient
  all-reduce, SGD step) of the same U-Net on 2 gloo ranks with ``find_unused_parameters=True``
  (densemed's setting: a head without loss in some steps must not hang DDP) against ``False``,
  alternating; rank 0's times. Notes say whether ``False`` fails on a deep-supervision head whose
  level weight is 0, and the time of one all-reduce of the parameters (the per-step volume).
"""

from __future__ import annotations

import json
import multiprocessing
import os
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.harness import Row

NOTES = ""

BASE = [
    "data.synthetic={n: 12, size: 256, seed: 0}", "data.patch_size=[128,128]", "data.val_fraction=0.1",
    "model={name: unet, base_width: 16, depth: 4}", "loss={name: ce}", "train.progress=false", "augment=null",
    "train.threads=1", "train.optimizer=sgd", "train.momentum=0.9", "data.batch_size=4",
]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)


def _train_rank(rank: int, world: int, port: int, out: str, steps: int, epochs: int) -> None:
    from densemed import config
    from densemed.train.loop import train

    if world > 1:
        _env(rank, world, port)
    torch.set_num_threads(1)
    samples = steps * 4 * world
    cfg = config.load(None, BASE + [f"train.out={out}", f"data.samples_per_epoch={samples}", f"train.epochs={epochs}"])
    train(cfg, log=lambda s: None)


def _fork(target, world: int, *args) -> None:
    ctx = multiprocessing.get_context("fork")
    port = _port()
    procs = [ctx.Process(target=target, args=(r, world, port, *args)) for r in range(world)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(1800)
    if any(p.exitcode != 0 for p in procs):
        raise RuntimeError(f"a rank failed: exit codes {[p.exitcode for p in procs]}")


def _seconds_per_image(out: Path, world: int, steps: int) -> float:
    recs = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()][1:]  # first epoch: warm-up
    return sum(r["train_seconds"] for r in recs) / (steps * 4 * world * len(recs))


def _step_rank(rank: int, world: int, port: int, out: str, reps: int) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel as DDP

    from densemed import nets

    _env(rank, world, port)
    dist.init_process_group("gloo")
    torch.manual_seed(0)
    x = torch.randn(4, 1, 128, 128)
    y = torch.randint(0, 2, (4, 128, 128))
    models = {flag: DDP(nets.build("unet", in_channels=1, out_channels=2, base_width=16, depth=4),
                        find_unused_parameters=flag) for flag in (True, False)}
    opts = {flag: torch.optim.SGD(m.parameters(), lr=0.01) for flag, m in models.items()}
    times: dict[str, list[float]] = {"True": [], "False": []}
    for i in range(reps + 1):
        for flag, model in models.items():
            dist.barrier()
            tic = time.perf_counter()
            opts[flag].zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opts[flag].step()
            if i:  # the first round warms up
                times[str(flag)].append(time.perf_counter() - tic)
    # the volume of one step: every parameter's gradient, float32
    n = sum(p.numel() for p in models[True].parameters())
    flat = torch.zeros(n)
    ar = []
    for _ in range(5):
        dist.barrier()
        tic = time.perf_counter()
        dist.all_reduce(flat)
        ar.append(time.perf_counter() - tic)
    # a deep-supervision head whose level weight is 0: unused parameters in every step
    ds = DDP(nets.build("unet", in_channels=1, out_channels=2, base_width=4, depth=2, deep_supervision=True,
                        ds_levels=1), find_unused_parameters=False)
    error = "none"
    try:
        for _ in range(2):
            torch.nn.functional.cross_entropy(ds(x)[0], y).backward()
    except RuntimeError as exc:
        error = str(exc).splitlines()[0][:120]
    if rank == 0:
        Path(out).write_text(json.dumps({"times": times, "allreduce": ar, "params": n, "ds_error": error}))
    dist.destroy_process_group()


def run(quick: bool = False) -> list[Row]:
    global NOTES
    load = os.getloadavg()
    steps, epochs, repeats = (3, 2, 1) if quick else (6, 3, 2)
    one: list[float] = []
    two: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(repeats):
            for world, acc in ((1, one), (2, two)):
                out = Path(tmp) / f"w{world}_{rep}"
                _fork(_train_rank, world, str(out), steps, epochs)
                acc.append(_seconds_per_image(out, world, steps))
        res = Path(tmp) / "step.json"
        _fork(_step_rank, 2, str(res), 3 if quick else 8)
        step = json.loads(res.read_text())
    speedup = statistics.median(one) / statistics.median(two)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rows = [
        Row("U-Net 2D training, 2 processes x 1 thread (gloo) vs 1 process x 1 thread", two, one,
            "1 process", unit="s/image",
            extra={"images/s 1 vs 2": f"{1 / statistics.median(one):.2f} vs {1 / statistics.median(two):.2f}",
                   "scaling efficiency": f"{speedup / 2:.0%}", "load before": f"{load[0]:.1f}"}),
        Row("DDP step U-Net 2D 2 ranks, find_unused_parameters True vs False", step["times"]["True"],
            step["times"]["False"], "find_unused_parameters=False",
            extra={"all-reduce of the gradients": f"{step['params'] * 4 / 2**20:.1f} MiB in "
                                                  f"{statistics.median(step['allreduce']) * 1e3:.1f} ms",
                   "False with an unused head": step["ds_error"]}),
    ]
    NOTES = f"Machine load when this section finished (`uptime`): {uptime}. The CPU is shared with other agents."
    return rows
