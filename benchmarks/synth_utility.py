"""Does synthetic data from a pix2pix GAN help a U-Net trained on 4 ISBI 2012 sections? And how real is it?

Run from the repository root (CPU, one thread per run; stages whose outputs exist are skipped)::

    python -m benchmarks.synth_utility --out runs/synth_utility [--gan-budget 900] [--unet-epochs 20]

Stages, all through the ``densemed`` command line:

1. **GAN** (``gan``): ``densemed synth train configs/pix2pix_isbi2012.yaml`` on 4 training sections
   only (evenly spaced among the recipe's training split), 128x128 patches (generator depth 7), for
   ``--gan-budget`` seconds (a run with a smaller budget is resumed with ``--resume``); validated
   on the recipe's 5 validation sections. Then ``densemed synth generate --n N`` (label maps
   deformed from the 4 training labels).
2. **Utility** (``utility``): ``densemed train configs/unet_isbi2012.yaml`` (base width 8) on the
   same 4 sections for the same number of steps (``--unet-epochs`` x 8 steps of batch 4, 128x128;
   a step budget, not seconds: on a machine shared with other jobs the seconds per step vary by
   2x between runs), validated (Dice of the membrane class) on the 5 validation sections, for
   each seed and data setting: real only, no augmentation; real + classic augmentation
   (``augment: default``); real + synthetic pairs (``data.extra_roots``, share 0.5); real +
   classic augmentation + synthetic pairs.
3. **Segmenter** (``segmenter``): the same U-Net on the whole 19-section training split.
4. **Realism** (``realism``): Fréchet distance in the segmenter's bottleneck features
   (``encoders.4``; every position of the 32x32 map of a 512x512 image is a sample) and spectral
   distance between real validation images and generated ones; label fidelity = the segmenter's
   membrane Dice on generated images against the label maps they were generated from.
5. **Step time** (``step``) of the GAN at 256x256, batch 4, and its parts.

Writes ``results_<pid>.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable


def sh(args: list[str], log: Path) -> None:
    """Run a densemed command, its output appended to ``log``; raise on failure."""
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(args)}\n")
        f.flush()
        subprocess.run([PY, "-m", "densemed.cli", *args], check=True, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT)


def uptime() -> str:
    return Path("/proc/loadavg").read_text().split(" ")[0] if Path("/proc/loadavg").exists() else "?"


def final_record(run: Path) -> dict:
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
    return [r for r in recs if "val_score" in r][-1]


def splits() -> tuple[list[str], list[str], list[str]]:
    from densemed import config
    from densemed.data.dataset import split

    cfg = config.load(ROOT / "configs/unet_isbi2012.yaml")
    stems = sorted(p.stem for p in (config.resolve_data_root(cfg.data.root) / "images").glob("*.png"))
    train, val = split(stems, cfg.data)
    small = [train[i] for i in np.linspace(0, len(train) - 1, 4).round().astype(int)]
    return train, val, small


def common(out: Path, train: list[str], val: list[str], seed: int) -> list[str]:
    return [f"train.out={out}", "train.progress=false", "train.threads=1", f"train.seed={seed}",
            "data.patch_size=[128,128]", f"data.train_files={json.dumps(train)}", f"data.val_files={json.dumps(val)}"]


def stage_gan(out: Path, budget: float, small: list[str], val: list[str], log: Path) -> Path:
    """Train the GAN for ``budget`` seconds; a run with a smaller budget is resumed with the larger one."""
    run = out / "gan"
    done = float((run / "budget.txt").read_text()) if (run / "budget.txt").exists() else 0.0
    if done >= budget:
        return run
    over = [f"train.time_budget_s={budget}"]
    if (run / "last.pt").exists():
        sh(["synth", "train", "--resume", str(run), "--set", *over], log)
    else:
        args = common(run, small, val, 0) + over + ["train.epochs=100000", "train.val_every=10",
                                                    "data.samples_per_epoch=64", "model.depth=7"]
        sh(["synth", "train", "configs/pix2pix_isbi2012.yaml", "--set", *args], log)
    (run / "budget.txt").write_text(str(budget))
    return run


def stage_generate(out: Path, gan: Path, n: int, log: Path) -> Path:
    budget = int(float((gan / "budget.txt").read_text()))
    synth = out / f"synthetic_gan{budget}s"
    if not (synth / "synth.json").exists():
        sh(["synth", "generate", "--checkpoint", str(gan / "best.pt"), "--n", str(n), "--out", str(synth)], log)
    return synth


#: data settings of the utility comparison: augmentation override, with synthetic pairs
SETTINGS = {
    "real": (["augment="], False),
    "real+classic": (["augment=default"], False),
    "real+synthetic": (["augment="], True),
    "real+classic+synthetic": (["augment=default"], True),
}


def stage_utility(out: Path, names: list[str], epochs: int, small: list[str], val: list[str], synth: Path | None,
                  seeds: list[int], log: Path) -> dict:
    """U-Nets (base width 8) for a fixed number of steps: epochs x 8 steps of batch 4 at 128x128."""
    results: dict[str, list[dict]] = {}
    for seed in seeds:
        for name in names:
            extra, synthetic = SETTINGS[name]
            run = out / "unet" / f"{name}_s{seed}"
            if not (run / "metrics.jsonl").exists() or "val_dice" not in (run / "metrics.jsonl").read_text():
                if run.exists():
                    import shutil

                    shutil.rmtree(run)
                args = common(run, small, val, seed) + extra + [
                    f"train.epochs={epochs}", f"train.val_every={epochs}", "model.base_width=8",
                    "data.samples_per_epoch=32", "data.batch_size=4"]
                if synthetic:
                    args.append(f"data.extra_roots=[{{root: {synth}, share: 0.5}}]")
                load = uptime()
                sh(["train", "configs/unet_isbi2012.yaml", "--set", *args], log)
                (run / "load.txt").write_text(f"{load} {uptime()}")
            rec = final_record(run)
            recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines() if x.strip()]
            results.setdefault(name, []).append({
                "seed": seed, "dice": rec["val_dice"], "steps": rec["steps"],
                "train_seconds": sum(r.get("train_seconds", 0.0) for r in recs),
                "load_start_end": (run / "load.txt").read_text()})
    return results


def stage_segmenter(out: Path, epochs: int, train: list[str], val: list[str], log: Path) -> Path:
    run = out / "segmenter"
    if not (run / "best.pt").exists():
        args = common(run, train, val, 0) + [f"train.epochs={epochs}", f"train.val_every={epochs}",
                                              "model.base_width=8", "data.samples_per_epoch=32", "augment=default"]
        sh(["train", "configs/unet_isbi2012.yaml", "--set", *args], log)
    return run


def stage_realism(out: Path, gan: Path, synth: Path, seg_run: Path, train: list[str], val: list[str]) -> dict:
    import torch
    from scipy import ndimage as ndi

    from densemed import tasks
    from densemed.build import load_model
    from densemed.data.dataset import load_cases, map_labels
    from densemed.data.io import read_image, read_label
    from densemed.data.normalize import normalize
    from densemed.infer.runner import predict_main
    from densemed.metrics.confusion import confusion, dice
    from densemed.metrics.realism import encoder_features, frechet_distance, spectral_distance
    from densemed.nets.heads import to_labels

    torch.set_num_threads(1)
    dev = torch.device("cpu")
    seg, seg_cfg, _ = load_model(seg_run / "best.pt", dev)
    gen, gan_cfg, _ = load_model(gan / "best.pt", dev)
    task = tasks.build(gan_cfg)
    seg_cfg.data.train_files, seg_cfg.data.val_files = train, val
    real_train, real_val = load_cases(seg_cfg)
    # the GAN's view of the validation sections: condition + normalised real image
    gan_cfg.data.train_files, gan_cfg.data.val_files = train, val
    gan_cfg.data.extra_roots = None
    _, gval = load_cases(gan_cfg, task)

    def seg_dice(img: np.ndarray, label: np.ndarray) -> float:
        x = torch.from_numpy(normalize(img, "zscore"))[None]
        pred = to_labels(predict_main(seg, x, seg_cfg, dev, tta=False))[0]
        return float(np.asarray(dice(confusion(pred, torch.from_numpy(label), 2)))[1])

    def feats(images: list[np.ndarray]) -> np.ndarray:
        return encoder_features(seg, [torch.from_numpy(normalize(x, "zscore")) for x in images])

    real_val_imgs = [c.image for c in real_val]
    real_train_imgs = [c.image for c in real_train]
    det = [task.infer(gen, torch.from_numpy(c.image)[None], dev)[0].numpy() for c in gval]
    drop = [task.generate(gen, torch.from_numpy(c.image)[None], 0, dev)[0].numpy() for c in gval]
    blurred = [ndi.gaussian_filter(x, (0, 2, 2)) for x in real_val_imgs]
    noise = [np.random.default_rng(k).normal(size=x.shape).astype(np.float32) for k, x in enumerate(real_val_imgs)]
    syn_imgs, syn_labels = [], []
    for p in sorted((synth / "images").glob("*.png")):
        syn_imgs.append(read_image(p)[0])
        raw, _ = read_label(synth / "labels" / p.name)
        syn_labels.append(map_labels(raw, seg_cfg.data, p))
    fv = feats(real_val_imgs)
    sets = {
        "real train sections (19)": (real_train_imgs, [c.label for c in real_train]),
        "generated from the val labels, no dropout": (det, [c.label for c in gval]),
        "generated from the val labels, dropout (seed 0)": (drop, [c.label for c in gval]),
        f"synthetic pairs, new layouts ({len(syn_imgs)})": (syn_imgs, syn_labels),
        "real val images blurred (Gaussian sigma 2 px)": (blurred, [c.label for c in real_val]),
        "Gaussian noise images": (noise, None),
    }
    rows = {"real val sections (5)": {"dice": float(np.mean([seg_dice(c.image, c.label) for c in real_val]))}}
    for name, (imgs, labels) in sets.items():
        row = {"fd": frechet_distance(fv, feats(imgs)),
               "spectral": spectral_distance([normalize(x, "zscore") for x in imgs],
                                             [normalize(x, "zscore") for x in real_val_imgs])}
        if labels is not None:
            row["dice"] = float(np.mean([seg_dice(x, y) for x, y in zip(imgs, labels)]))
        rows[name] = row
    return rows


def _best(fn, k: int = 3) -> float:
    """Minimum seconds of ``k`` calls."""
    times = []
    for _ in range(k):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def stage_step_time() -> dict:
    import torch

    from densemed.config import TrainConfig
    from densemed.losses.adversarial import LeastSquaresGANLoss
    from densemed.nets import count_parameters
    from densemed.nets.patchgan import PatchGAN
    from densemed.nets.pix2pix import Pix2PixGenerator
    from densemed.train.gan import GANModule

    torch.set_num_threads(1)
    out = {}
    for name, (bw, mw, dbw) in {"recipe (16/128, D 16)": (16, 128, 16), "paper (64/512, D 64)": (64, 512, 64)}.items():
        g, d = Pix2PixGenerator(2, 1, depth=8, base_width=bw, max_width=mw), PatchGAN(3, base_width=dbw)
        m = GANModule(g, d, LeastSquaresGANLoss(), TrainConfig(lr=2e-4), torch.device("cpu"),
                      diffaugment=["color", "translation", "cutout"])
        b = {"image": torch.rand(4, 2, 256, 256), "target": torch.randn(4, 1, 256, 256)}
        m.train_step(b)
        pair = torch.cat([b["image"], b["target"]], 1)
        with torch.no_grad():
            t_fwd = _best(lambda g=g, b=b: g(b["image"]))
        t_g = _best(lambda g=g, b=b: g(b["image"]).mean().backward())
        t_d = _best(lambda d=d, pair=pair: d(pair).mean().backward())
        t_step = _best(lambda m=m, b=b: m.train_step(b))
        out[name] = {"load": uptime(), "G params": count_parameters(g), "D params": count_parameters(d),
                     "step": t_step, "G forward": t_fwd, "G forward+backward": t_g,
                     "D forward+backward (one pair batch)": t_d}
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/synth_utility")
    p.add_argument("--gan-budget", type=float, default=900, help="GAN training seconds (a shorter run is resumed)")
    p.add_argument("--unet-epochs", type=int, default=20, help="U-Net epochs of 8 steps (batch 4, 128x128)")
    p.add_argument("--seg-epochs", type=int, default=50, help="segmenter epochs of 8 steps")
    p.add_argument("--n", type=int, default=60, help="synthetic pairs")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--stages", nargs="+", default=["gan", "utility", "segmenter", "realism", "step"])
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "log.txt"
    res_path = out / f"results_{os.getpid()}.json"
    results: dict = {"argv": sys.argv[1:]}
    train, val, small = splits()
    results["split"] = {"small_train": small, "val": val, "full_train": train}
    synth = gan = None
    if "gan" in args.stages:
        gan = stage_gan(out, args.gan_budget, small, val, log)
        synth = stage_generate(out, gan, args.n, log)
        results["gan_final"] = final_record(gan)
        results["synthetic"] = str(synth)
    if "utility" in args.stages:
        results["utility"] = stage_utility(out, args.settings, args.unet_epochs, small, val, synth, args.seeds, log)
        res_path.write_text(json.dumps(results, indent=1))
    if "segmenter" in args.stages or "realism" in args.stages:
        seg = stage_segmenter(out, args.seg_epochs, train, val, log)
        results["segmenter_final"] = final_record(seg)
        res_path.write_text(json.dumps(results, indent=1))
    if "realism" in args.stages:
        results["realism"] = stage_realism(out, gan, synth, seg, train, val)
        results["realism_load"] = uptime()
        res_path.write_text(json.dumps(results, indent=1))
    if "step" in args.stages:
        results["step_time"] = stage_step_time()
    res_path.write_text(json.dumps(results, indent=1))
    for name, runs in results.get("utility", {}).items():
        d = [r["dice"] for r in runs]
        print(f"{name:<26} Dice {np.mean(d):.4f} +- {np.std(d):.4f}  ({', '.join(f'{v:.4f}' for v in d)})")
    print(json.dumps({k: v for k, v in results.items() if k in ("realism", "step_time")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
