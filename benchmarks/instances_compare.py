"""Compare touching-object separation on a validation split: U-Net + border weights, DCAN, DeepDistance.

Each network is trained by the ordinary ``densemed train`` loop for the same wall-clock budget
(small widths, CPU-sized patches), then every validation image is predicted window by window,
post-processed to instances and scored with object F1, object Dice, AJI and PQ
(:mod:`densemed.metrics.instance`); DeepDistance also gets cell-detection F1 (h-maxima points vs
true centroids, one-to-one within ``--radius`` px). DeepDistance's ``h`` is chosen on training
images (not the scored ones) by :func:`densemed.infer.instances.choose_h`.

Usage::

    python benchmarks/instances_compare.py --budget 240 --width 8 --out runs/instances_compare
    python benchmarks/instances_compare.py --data glas_gland --label-dir instances ...

Writes ``results.json`` and ``results.md`` (a Markdown table) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from densemed.config import load
from densemed.data.dataset import load_cases
from densemed.infer.instances import choose_h, detect, network_outputs, to_instances
from densemed.infer.predict import model_from_checkpoint
from densemed.metrics.instance import centroids, detection_scores, instance_scores
from densemed.train.checkpoint import load as load_ckpt
from densemed.train.loop import train

ROOT = Path(__file__).resolve().parents[1]

#: recipe, extra overrides, post-processing methods with their parameters
MODELS = {
    "unet_border_weights": (
        "configs/unet_border_weights_dsb2018.yaml",
        [],
        {"components": {}, "watershed": {"h": 2.0}},
    ),
    "dcan": (
        "configs/dcan_glas.yaml",
        [],
        {"dcan": {"min_size": 10, "dilate": 2}, "contour_watershed": {}},
    ),
    # h is chosen below on training images, not by the trainer on the scored validation images
    "deepdistance": ("configs/deepdistance_dsb2018.yaml", ["infer.instances.h=0.05"], {"deepdistance": {}}),
}


def run_one(key: str, args: argparse.Namespace) -> dict:
    recipe, extra, methods = MODELS[key]
    out = Path(args.out) / key
    if args.eval_only:  # score the network trained by an earlier call again (other post-processing)
        hist = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
        return score(key, out, methods, len(hist), sum(h["seconds"] for h in hist), args)
    overrides = [
        f"data.root={args.data}",
        f"data.label_dir={args.label_dir}",
        f"model.base_width={args.width}",
        f"data.patch_size=[{args.patch},{args.patch}]",
        f"data.samples_per_epoch={args.samples}",
        "train.epochs=100000",
        "train.val_every=100000",  # whole-image validation is scored below, once
        f"train.time_budget_s={args.budget}",
        f"train.out={out}",
        "train.progress=false",
        *extra,
    ]
    cfg = load(ROOT / recipe, overrides)
    tic = time.perf_counter()
    result = train(cfg, log=lambda s: None)
    return score(key, out, methods, result.epochs, time.perf_counter() - tic, args)


def score(key: str, out: Path, methods: dict, epochs: int, train_s: float, args: argparse.Namespace) -> dict:
    """Predict the validation images with ``out/last.pt``, post-process with every method, score."""
    model, cfg = model_from_checkpoint(load_ckpt(out / "last.pt"), out / "last.pt", torch.device("cpu"))
    train_cases, val_cases = load_cases(cfg)
    window = cfg.data.patch_size

    params = {
        m: {**p, **({"min_size": args.min_size} if args.min_size is not None else {})} for m, p in methods.items()
    }
    rec: dict = {"model": key, "epochs": epochs, "train_s": round(train_s, 1), "n_val": len(val_cases),
                 "min_size": args.min_size}
    if "deepdistance" in params:  # h from training images, never from the scored ones
        tune = train_cases[: args.tune_images]
        inner = [network_outputs(model, torch.from_numpy(c.image)[None], window)["inner_distance"]
                 for c in tune]
        h, table = choose_h(inner, [c.instances for c in tune], radius=args.radius)
        params["deepdistance"]["h"] = h
        rec["h"] = h
        rec["h_scores"] = table
    per_method: dict[str, list[dict]] = {m: [] for m in params}
    det = []
    tic = time.perf_counter()
    for case in val_cases:
        truth = case.instances
        outputs = network_outputs(model, torch.from_numpy(case.image)[None], window)
        for m, p in params.items():
            pred = to_instances(outputs, m, **p)
            per_method[m].append(instance_scores(pred, truth, hausdorff=False))
        if "inner_distance" in outputs:
            fg = outputs.get("foreground")
            mask = None if fg is None else fg > 0.5
            pts = detect(outputs["inner_distance"], params["deepdistance"]["h"], mask)
            det.append(detection_scores(pts, centroids(truth), args.radius))
    rec["eval_s"] = round(time.perf_counter() - tic, 1)
    rec["methods"] = {
        m: {k: float(np.mean([s[k] for s in rows])) for k in ("object_f1", "object_dice", "aji", "pq")}
        for m, rows in per_method.items()
    }
    if det:
        tp, fp, fn = (sum(d[k] for d in det) for k in ("tp", "fp", "fn"))
        rec["detection"] = {
            "precision": tp / max(tp + fp, 1),
            "recall": tp / max(tp + fn, 1),
            "f1": 2 * tp / max(2 * tp + fp + fn, 1),
        }
    return rec


def markdown(records: list[dict], args: argparse.Namespace) -> str:
    lines = [
        f"Data: `{args.data}` validation split (val_fraction 0.2, split_seed 0); base width {args.width}, "
        f"patches {args.patch}x{args.patch}, training for a wall-clock budget on a shared 2-core CPU"
        + (f"; objects < {args.min_size} px removed by every method." if args.min_size is not None else "."),
        "",
        "| network | post-processing | epochs | train s | object F1 | object Dice | AJI | PQ "
        "| detection F1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        for m, s in r["methods"].items():
            d = f"{r['detection']['f1']:.3f}" if "detection" in r and m == "deepdistance" else ""
            lines.append(
                f"| {r['model']} | {m} | {r['epochs']} | {r['train_s']:.0f} | {s['object_f1']:.3f} | "
                f"{s['object_dice']:.3f} | {s['aji']:.3f} | {s['pq']:.3f} | {d} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS))
    p.add_argument("--data", default="dsb2018_nuclei")
    p.add_argument("--label-dir", default="labels")
    p.add_argument("--budget", type=float, default=240.0, help="training seconds per network")
    p.add_argument("--width", type=int, default=8)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--samples", type=int, default=32, help="patches per epoch")
    p.add_argument("--radius", type=float, default=6.0, help="detection matching radius (px)")
    p.add_argument("--tune-images", type=int, default=8, help="training images used to choose h")
    p.add_argument("--min-size", type=int, default=None,
                   help="remove objects smaller than this (pixels) in every method (default: each method's own)")
    p.add_argument("--eval-only", action="store_true", help="re-score the runs already in --out, no training")
    p.add_argument("--out", default="runs/instances_compare")
    args = p.parse_args()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / "results.json"
    # earlier results of other networks in the same folder are kept (one network per call is fine)
    records = [r for r in json.loads(path.read_text())] if path.exists() else []
    for key in args.models:
        rec = run_one(key, args)
        records = [r for r in records if r["model"] != key] + [rec]
        print(json.dumps(rec), flush=True)
        path.write_text(json.dumps(records, indent=2))
    table = markdown(records, args)
    (Path(args.out) / "results.md").write_text(table)
    print(table)


if __name__ == "__main__":
    main()
