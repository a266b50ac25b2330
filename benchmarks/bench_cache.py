"""Datasets larger than memory: peak resident memory with the preprocessed-case cache, and DataLoader workers.

A dataset is generated on disk (``N`` PNG pairs of 768x768, label values 0/255, about 30%
foreground); preprocessed, each case holds its image (float32, 2.25 MiB), its labels (int64,
4.5 MiB) and its foreground indices (int64, ~1.4 MiB). Each measurement runs in a fresh
process (``python -c``) that trains a small U-Net (base width 8, depth 3, 4x1x128x128 patches,
1 thread, no validation images) and reports its own peak RSS (``ru_maxrss``; DataLoader
workers are reported apart as the children's peak):

* ``densemed preprocess`` of the recipe (cases decoded and written one at a time);
* training from the cache with ``data.cache_mb`` far below the cache's size;
* the same training with ``data.cache_dir: memory`` (every case read into memory, as before the cache).

Then the throughput of patch loading alone (draws from the cache, collation into batches of 4)
with ``data.num_workers`` 0, 1 and 2. Seconds per image are the training time of the epochs after
the first, from ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from benchmarks.harness import Row

NOTES = ""
SIZE = 768

TRAIN = r"""
import json, resource, sys
from densemed import config
from densemed.train.loop import train
cfg = config.load(None, sys.argv[1:])
result = train(cfg, log=lambda s: None)
hist = result.history[1:]
per_image = sum(h["train_seconds"] for h in hist) / (len(hist) * cfg.data.samples_per_epoch)
print(json.dumps({"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "children": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, "per_image": per_image}))
"""

PREPROCESS = r"""
import json, resource, sys
from densemed.cli import main
main(["preprocess", *sys.argv[1:]])
print(json.dumps({"rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""

LOADER = r"""
import json, sys, time
from torch.utils.data import DataLoader
from densemed import config
from densemed.data.dataset import PatchDataset, load_cases
cfg = config.load(None, sys.argv[2:])
cases, _ = load_cases(cfg)
ds = PatchDataset(cases, cfg.data.patch_size, 0.5, 256, seed=0)
out = {}
for workers in (0, 1, 2):
    times = []
    for epoch in range(3):
        ds.set_epoch(epoch)
        tic = time.perf_counter()
        for _ in DataLoader(ds, batch_size=4, num_workers=workers):
            pass
        times.append((time.perf_counter() - tic) / len(ds))
    out[workers] = times[1:]
print(json.dumps(out))
"""


def _dataset(root: Path, n: int) -> None:
    from PIL import Image

    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for i in range(n):
        cy, cx = rng.integers(100, SIZE - 100, 2)
        lab = ((yy - cy) ** 2 + (xx - cx) ** 2 < (0.31 * SIZE) ** 2).astype(np.uint8) * 255
        img = np.clip(lab * 0.6 + rng.normal(60, 25, lab.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"case{i:03d}.png")
        Image.fromarray(lab).save(root / "labels" / f"case{i:03d}.png")


def _python(code: str, args: list[str]) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def run(quick: bool = False) -> list[Row]:
    global NOTES
    n, cache_mb, epochs = (12, 16, 2) if quick else (32, 32, 3)
    load0 = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        root, cache = Path(tmp) / "data", Path(tmp) / "cache"
        _dataset(root, n)
        recipe = Path(tmp) / "r.yaml"
        recipe.write_text(f"data: {{root: {root}, label_map: {{0: 0, 255: 1}}, patch_size: [128, 128], "
                          f"val_fraction: 0, cache_dir: {cache}, cache_mb: {cache_mb}, batch_size: 4, "
                          "samples_per_epoch: 32}\n"
                          "model: {name: unet, base_width: 8, depth: 3}\n"
                          f"train: {{epochs: {epochs}, threads: 1, progress: false, out: {Path(tmp) / 'run'}}}\n")
        pre = _python(PREPROCESS, [str(recipe)])
        cache_size = sum(f.stat().st_size for f in cache.rglob("*") if f.is_file()) / 2**20
        common = [f"data.root={root}", "data.label_map={0: 0, 255: 1}", "data.patch_size=[128,128]",
                  "data.val_fraction=0", "data.batch_size=4", "data.samples_per_epoch=32",
                  "model={name: unet, base_width: 8, depth: 3}", f"train.epochs={epochs}", "train.threads=1",
                  "train.progress=false"]
        cached = _python(TRAIN, [*common, f"data.cache_dir={cache}", f"data.cache_mb={cache_mb}",
                                 f"train.out={Path(tmp) / 'a'}"])
        memory = _python(TRAIN, [*common, "data.cache_dir=memory", f"train.out={Path(tmp) / 'b'}"])
        loader = _python(LOADER, ["-", *common, f"data.cache_dir={cache}", f"data.cache_mb={cache_mb}"])
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    rows = [
        Row(f"train U-Net from the cache (cache_mb {cache_mb}) vs whole dataset in memory", [cached["per_image"]],
            [memory["per_image"]], "data.cache_dir: memory", unit="s/image",
            extra={"peak RSS MiB cache / memory": f"{cached['rss']:.0f} / {memory['rss']:.0f}",
                   "dataset": f"{n} cases, cache {cache_size:.0f} MiB on disk = {cache_size / cache_mb:.1f}x cache_mb",
                   "preprocess peak RSS MiB": f"{pre['rss']:.0f}"}),
    ]
    for workers in (1, 2):
        rows.append(Row(f"patch loading 4x1x128x128 from the cache, {workers} worker(s) vs 0",
                        loader[str(workers)], loader["0"], "0 workers", unit="s/image",
                        extra={"images/s": f"{1 / min(loader[str(workers)]):.0f} vs {1 / min(loader['0']):.0f}"}))
    NOTES = (f"Load average {load0:.1f} at the start; at the end: {uptime} (the 2-core CPU is shared with other "
             "agents, so worker processes compete with them for the same two cores).")
    return rows
