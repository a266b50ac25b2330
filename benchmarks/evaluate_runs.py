"""Predict and evaluate the validation split of finished runs; one Markdown table.

Usage::

    python -m benchmarks.evaluate_runs runs/compare3d/vnet_hippocampus runs/compare3d/voxresnet_hippocampus \\
        --out runs/compare3d/eval.md

For each run folder: rebuild its recipe's train/validation split, link the validation images and
labels into ``RUN/val/``, run ``densemed predict`` with ``best.pt`` and ``densemed evaluate``
(Dice, HD95 in mm from the NIfTI headers), and add a row with the epochs and training seconds read
from ``metrics.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from densemed import config, nets
from densemed.cli import main as cli
from densemed.data.dataset import discover_pairs, split
from densemed.train.loop import build_model


def evaluate_run(run: Path) -> dict:
    """Predict + evaluate one run's validation split; returns the table row."""
    cfg = config.load(run / "config.yaml")
    root = config.resolve_data_root(cfg.data.root)
    pairs = {s: (i, lab) for s, i, lab in discover_pairs(root, cfg.data.image_dir, cfg.data.label_dir)}
    _, val = split(sorted(pairs), cfg.data)
    for sub in ("images", "labels"):
        (run / "val" / sub).mkdir(parents=True, exist_ok=True)
    for stem in val:
        for sub, src in zip(("images", "labels"), pairs[stem]):
            dst = run / "val" / sub / src.name
            if not dst.exists():
                os.symlink(src.resolve(), dst)
    tic = time.perf_counter()
    assert cli(["predict", "--checkpoint", str(run / "best.pt"), "--input", str(run / "val" / "images"),
                "--output", str(run / "val" / "pred")]) == 0
    predict_s = time.perf_counter() - tic
    label_map = ",".join(f"{k}:{v}" for k, v in cfg.data.label_map.items()) if cfg.data.label_map else None
    argv = ["evaluate", "--pred", str(run / "val" / "pred"), "--truth", str(run / "val" / "labels"),
            "--json", str(run / "val" / "scores.json")]
    assert cli(argv + (["--label-map", label_map] if label_map else [])) == 0
    scores = json.loads((run / "val" / "scores.json").read_text())
    hist = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    params = nets.count_parameters(build_model(cfg, 1))
    return {"run": run.name, "net": cfg.model["name"], "params": params, "epochs": len(hist),
            "train_s": sum(h["seconds"] for h in hist), "predict_s": predict_s, "n_val": len(val),
            "per_class": scores["per_class"], "mean": scores["mean"]}


def table(rows: list[dict]) -> str:
    """Markdown: per-class Dice and HD95, their means, epochs, seconds."""
    classes = sorted(rows[0]["per_class"], key=int)
    head = ["run", "network", "params", "epochs", "train s"]
    head += [f"Dice {c}" for c in classes] + ["mean Dice"] + [f"HD95 {c}" for c in classes] + ["mean HD95", "predict s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        pc = r["per_class"]

        def f(v: float | None, d: int = 3) -> str:
            return "–" if v is None else f"{v:.{d}f}"

        cells = [r["run"], r["net"], f"{r['params']:,}", str(r["epochs"]), f"{r['train_s']:.0f}"]
        cells += [f(pc[c]["dice"]) for c in classes] + [f(r["mean"]["dice"])]
        cells += [f(pc[c]["hd95"], 2) for c in classes] + [f(r["mean"]["hd95"], 2), f"{r['predict_s']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.evaluate_runs", description=__doc__)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, help="write the table here (Markdown)")
    args = ap.parse_args(argv)
    rows = [evaluate_run(r) for r in args.runs]
    text = table(rows)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
