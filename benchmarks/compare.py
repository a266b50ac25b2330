"""Train several recipes under the same overrides and write one comparison table.

Usage::

    python -m benchmarks.compare configs/fcn8s_isbi2012.yaml configs/unet_isbi2012.yaml \\
        --set train.time_budget_s=120 --out runs/compare

Each recipe runs ``densemed train RECIPE --set <overrides> train.out=<out>/<recipe stem>`` in its own
process (so one run's memory never weighs on the next); afterwards its ``metrics.jsonl`` and
``best.pt`` are read and ``<out>/compare.md`` gets a Markdown table: recipe, network, model options,
parameters, best validation Dice (and its epoch), median seconds per epoch (training + validation),
epochs run and wall time of the whole run (process start to exit). A recipe whose run folder
already holds ``metrics.jsonl`` is not retrained unless ``--force`` is given.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import torch

_RUN = "import sys; from densemed.cli import main; sys.exit(main(sys.argv[1:]))"


def train_one(recipe: Path, overrides: list[str], out: Path, force: bool) -> float | None:
    """Run one recipe in a subprocess; returns its wall time (None when reused or failed)."""
    if (out / "metrics.jsonl").exists() and not force:
        print(f"[compare] {recipe.stem}: reusing {out}", flush=True)
        return None
    if out.exists():
        shutil.rmtree(out)
    cmd = [sys.executable, "-c", _RUN, "train", str(recipe), "--set", *overrides,
           f"train.out={out}", "train.progress=false"]
    print(f"[compare] {' '.join(cmd[3:])}", flush=True)
    tic = time.perf_counter()
    rc = subprocess.call(cmd)
    wall = time.perf_counter() - tic
    if rc != 0:
        print(f"[compare] {recipe.stem}: densemed train exited with {rc}", flush=True)
    return wall


def summarise(recipe: Path, out: Path, wall: float | None) -> dict[str, Any]:
    """One table row from a finished run folder."""
    from densemed import config, nets
    from densemed.train.loop import build_model

    row: dict[str, Any] = {"recipe": recipe.name, "wall": wall}
    metrics = out / "metrics.jsonl"
    if not metrics.exists():
        return {**row, "error": "no metrics.jsonl"}
    hist = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    scored = [h for h in hist if "val_dice" in h]
    best = max(scored, key=lambda h: h["val_dice"]) if scored else None
    ckpt = torch.load(out / "last.pt", map_location="cpu", weights_only=False)
    cfg = config.from_dict(ckpt["config"])
    with torch.device("meta"):
        params = nets.count_parameters(build_model(cfg, ckpt["in_channels"]))
    opts = {k: v for k, v in cfg.model.items() if k != "name"}
    row.update(
        network=cfg.model["name"],
        options=", ".join(f"{k}={v}" for k, v in opts.items()),
        loss=cfg.loss["name"],
        params=params,
        best_dice=best["val_dice"] if best else None,
        best_epoch=best["epoch"] + 1 if best else None,
        s_per_epoch=statistics.median(h["seconds"] for h in hist),
        epochs=len(hist),
    )
    if wall is None:
        row["wall"] = sum(h["seconds"] for h in hist)  # reused run: sum of epoch times
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the rows."""
    lines = [
        "| recipe | network | options | loss | params | best val Dice (epoch) | s/epoch | epochs | wall s |",
        "|---|---|---|---|---:|---|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['recipe']} | – | – | – | – | {r['error']} | – | – | – |")
            continue
        dice = f"{r['best_dice']:.4f} ({r['best_epoch']})" if r["best_dice"] is not None else "–"
        lines.append(
            f"| {r['recipe']} | {r['network']} | {r['options']} | {r['loss']} | {r['params']:,} | {dice} "
            f"| {r['s_per_epoch']:.1f} | {r['epochs']} | {r['wall']:.0f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("recipes", nargs="+", type=Path, help="recipe YAML files")
    ap.add_argument("--set", nargs="*", default=[], dest="overrides", metavar="KEY=VALUE",
                    help="overrides applied to every recipe, e.g. train.time_budget_s=120")
    ap.add_argument("--out", type=Path, default=Path("runs/compare"), help="runs and compare.md go here")
    ap.add_argument("--force", action="store_true", help="retrain recipes whose run folder already exists")
    args = ap.parse_args(argv)
    for recipe in args.recipes:
        if not recipe.is_file():
            print(f"compare: error: {recipe}: recipe not found", file=sys.stderr)
            return 2
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for recipe in args.recipes:
        run_dir = args.out / recipe.stem
        wall = train_one(recipe, args.overrides, run_dir, args.force)
        rows.append(summarise(recipe, run_dir, wall))
    text = (
        f"Overrides for every recipe: `{' '.join(args.overrides) or '(none)'}`\n\n{table(rows)}\n\n"
        "s/epoch: median over epochs of training + validation time; Dice on whole held-out images "
        "(sliding window), mean over foreground classes.\n"
    )
    (args.out / "compare.md").write_text(text)
    print(text)
    print(f"wrote {args.out / 'compare.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
