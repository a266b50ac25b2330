"""The ``densemed`` console script: one entry point, subcommands, heavy imports inside commands.

Bad input (a missing or unreadable file, an unknown config key, a mismatched checkpoint) ends
with one line ``densemed: error: ...`` on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path

from densemed.errors import DensemedError

#: user features that add their own subcommand: each module has ``register(subparsers)`` and keeps
#: its heavy imports inside the command function, so ``densemed --help`` stays instant
FEATURES: tuple[str, ...] = ("densemed.synth", "densemed.check_cmd", "densemed.export_cmd", "densemed.compare",
                             "densemed.data.cache", "densemed.plan")


def _cmd_train(args: argparse.Namespace) -> int:
    import os

    from densemed import config
    from densemed.train import train

    if args.nproc is not None and args.nproc > 1 and "LOCAL_RANK" not in os.environ:
        from densemed.train.distributed import launch

        return launch(args.nproc, _train_argv(args))  # the same command under torchrun
    if args.resume:
        cfg = config.load_run(args.resume, args.config, args.set)
    elif args.plan:  # plan a recipe from the data and the budget, then train it as if read from a file
        from densemed.plan import recipe_for

        cfg = config.from_dict(config.apply_overrides(recipe_for(args.plan, args.budget), args.set), "--plan")
    else:
        cfg = config.load(args.config, args.set)
    if args.device:
        cfg.train.device = args.device
    if args.check:  # build everything, one step on a tiny batch, nothing written
        from densemed.train.dry_run import dry_run

        print(dry_run(cfg, resume=bool(args.resume)))
        return 0
    result = train(cfg, resume=bool(args.resume))
    if os.environ.get("RANK", "0") != "0":  # under torchrun rank 0 alone reports
        return 0
    print(result.summary())
    return 0


def _train_argv(args: argparse.Namespace) -> list[str]:
    """The command line's ``densemed train`` arguments without ``--nproc N``, for each torchrun worker."""
    argv = list(args.argv[args.argv.index("train") + 1 :])
    out, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--nproc":
            skip = True
        elif not item.startswith("--nproc="):
            out.append(item)
    return out


def _cmd_predict(args: argparse.Namespace) -> int:
    from densemed.api import load
    from densemed.infer.predict import list_inputs, rank_device

    # a checkpoint, a run folder or an exported .onnx; under torchrun one GPU per process, one share of the inputs each
    predictor = load(args.checkpoint, rank_device(args.device or "auto"))
    cfg = predictor.cfg
    if args.overlap is not None:
        cfg.infer.overlap = args.overlap
    if args.window:
        cfg.infer.window = args.window
    if args.tta and cfg.infer.tta_axes == []:
        # positional classes (left/right, anterior/posterior): a flip would swap their meaning
        print("note: --tta has nothing to average: the recipe allows no flip axis (infer.tta_axes: [])",
              file=sys.stderr)
    inputs = list_inputs(args.input)
    options = {"probabilities": args.probabilities, "instances": args.instances,
               "instance_method": args.instance_method}
    written = predictor.predict_paths(inputs, args.output, args.tta, options, strict=args.strict,
                                      skip_existing=args.skip_existing)
    print(f"wrote {len(written)} prediction(s) to {args.output}")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from densemed import tasks

    name = "instances" if args.instances else args.task
    task = tasks.get(name)
    options = {
        "num_classes": args.num_classes,
        "label_map": _parse_label_map(args.label_map) if args.label_map else None,
        "baseline": args.baseline,
        "figure": args.figure,
        "class_names": _evaluate_class_names(args),
        "membranes": args.membranes,
    }
    result = task.evaluate_folders(Path(args.pred), Path(args.truth), options)
    print(task.format_result(result))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2))
        print(f"wrote {args.json}")
    return 0


def _evaluate_class_names(args: argparse.Namespace) -> dict[int, str] | None:
    """Class names for ``evaluate``'s tables: ``--class-names``, else the ``data.class_names`` of ``--config``."""
    if args.class_names:
        names = [n.strip() for n in args.class_names.split(",")]
        if not all(names):
            raise DensemedError(f"--class-names: expected names in class order like 'background,liver', "
                                f"got {args.class_names!r}")
        return dict(enumerate(names))
    return class_names_of(args.config) if args.config else None


def class_names_of(source: str | Path) -> dict[int, str] | None:
    """``data.class_names`` of a recipe YAML, a run folder (its ``config.yaml``), a checkpoint or an ``.onnx``.

    None when the recipe names no classes. A missing or unreadable source raises one
    :class:`DensemedError` line naming it.
    """
    from densemed import config

    path = Path(source)
    if path.is_dir():
        if not (path / "config.yaml").is_file():
            raise DensemedError(f"{path}: not a run folder (no config.yaml)")
        path = path / "config.yaml"
    if not path.is_file():
        raise DensemedError(f"{path}: not found (--config takes a recipe, a run folder, a checkpoint or an .onnx)")
    if path.suffix.lower() in (".pt", ".pth", ".onnx"):
        if path.suffix.lower() == ".onnx":
            from densemed.build import recipe_from_sidecar
            from densemed.export import sidecar_path

            side = sidecar_path(path)
            try:
                meta = json.loads(side.read_text())
            except (OSError, ValueError):
                raise DensemedError(f"{side}: the exported model's sidecar is missing or not JSON") from None
            return recipe_from_sidecar(meta, str(side)).data.class_names
        from densemed.checkpoint import load

        return config.from_dict(load(path)["config"], str(path)).data.class_names
    return config.load(path).data.class_names


def _parse_label_map(text: str) -> dict[int, int]:
    try:
        return {int(k): int(v) for k, v in (item.split(":") for item in text.split(","))}
    except ValueError:
        raise DensemedError(f"--label-map: expected RAW:CLASS pairs like '0:1,255:0', got {text!r}") from None


def _cmd_models(args: argparse.Namespace) -> int:
    import torch

    from densemed import nets

    print(f"{'name':<16} {'dims':<6} {'parameters':>14}  description")
    for name in nets.names():
        entry = nets.info(name)
        kwargs = {"dims": entry.dims[0]} if "dims" in entry.builder.__code__.co_varnames else {}
        with torch.device("meta"):  # counts without allocating 250 M floats
            count = nets.count_parameters(nets.build(name, **kwargs))
        dims = "/".join(f"{d}D" for d in entry.dims)
        print(f"{name:<16} {dims:<6} {count:>14,}  {entry.summary}")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from densemed.demo import run_demo

    return run_demo(args.out, args.data, args.budget, args.device)


def _cmd_bench(args: argparse.Namespace) -> int:
    import subprocess

    root = Path(__file__).resolve().parents[2]
    if not (root / "benchmarks" / "__main__.py").is_file():
        raise DensemedError(f"{root}: benchmarks/ not found (densemed bench runs from a source checkout)")
    # the benchmarks are a source-checkout tool, run as their own module, not imported by the package
    return subprocess.call([sys.executable, "-m", "benchmarks", *args.rest], cwd=root)


def _cmd_degrade(args: argparse.Namespace) -> int:
    from densemed.data.io import read_image, split_name, write_float
    from densemed.data.sr import degrade
    from densemed.infer.predict import list_inputs

    if args.factor < 1:
        raise DensemedError(f"--factor: must be a positive integer, got {args.factor}")
    files = list_inputs(args.input)
    for path in files:
        image, meta = read_image(path)
        if image.ndim != 4:
            raise DensemedError(f"{path}: thick-slice simulation needs a 3D volume, got shape {image.shape[1:]}")
        stem, suffix = split_name(path)
        write_float(Path(args.output) / f"{stem}{suffix}", degrade(image[0], args.factor, args.axis), meta)
    print(f"wrote {len(files)} thick-slice volume(s), factor {args.factor} along axis {args.axis}, to {args.output}")
    return 0


def _cmd_augment_preview(args: argparse.Namespace) -> int:
    from densemed.augment.preview import preview_from_source

    preview_from_source(args.source, n=args.n, out=args.out, overrides=args.set)
    print(f"wrote {args.out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and documentation)."""
    from densemed import __version__

    p = argparse.ArgumentParser(
        prog="densemed", description="Dense prediction networks for medical image segmentation."
    )
    p.add_argument("--version", action="version", version=f"densemed {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    t = sub.add_parser("train", help="train from a YAML recipe")
    t.add_argument("config", nargs="?", help="recipe YAML (configs/*.yaml); without it the defaults plus --set")
    t.add_argument(
        "--set", nargs="*", default=[], metavar="KEY=VALUE", help="override recipe keys, e.g. train.epochs=3"
    )
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from RUN_DIR/last.pt")
    t.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (overrides train.device)")
    t.add_argument("--check", "--dry-run", action="store_true",
                   help="validate the recipe, read the data, build everything and take one step on a tiny batch; "
                        "write nothing")
    t.add_argument("--nproc", type=int, metavar="N",
                   help="train with N processes on this machine (torchrun --standalone --nproc_per_node N)")
    t.add_argument("--plan", metavar="DATA_DIR", help="plan the recipe from DATA_DIR (densemed plan) and train it")
    t.add_argument("--budget", type=float, default=30.0, help="with --plan: training budget in minutes (default 30)")
    t.set_defaults(fn=_cmd_train)

    pr = sub.add_parser("predict", help="predict label maps for a file or a folder")
    pr.add_argument("--checkpoint", required=True, help="RUN/best.pt (or a run folder, or an exported model.onnx)")
    pr.add_argument("--input", required=True, help="an image file, a DICOM series folder, or a folder of them")
    pr.add_argument("--output", required=True, help="output folder")
    pr.add_argument("--tta", action="store_true", default=None, help="average over flips (test-time augmentation)")
    pr.add_argument("--probabilities", action="store_true", help="also write the foreground probability map")
    pr.add_argument("--overlap", type=float, help="sliding-window overlap (default from the recipe, 0.5)")
    pr.add_argument("--window", type=int, nargs="+", help="sliding-window size per axis (default: the training patch)")
    pr.add_argument("--instances", action="store_true", help="write instance label maps (touching objects separated)")
    pr.add_argument(
        "--instance-method", default=None,
        help="components | watershed | contour_watershed | dcan | deepdistance (default: the recipe's, else by network)"
    )
    pr.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps")
    pr.add_argument("--skip-existing", action="store_true",
                    help="skip inputs whose outputs a previous (interrupted) run into --output completed")
    pr.add_argument("--strict", action="store_true",
                    help="stop at the first unreadable input (default: report it, go on, exit 2 at the end)")
    pr.set_defaults(fn=_cmd_predict)

    e = sub.add_parser("evaluate", help="score predicted label maps against the truth")
    e.add_argument("--pred", required=True, help="folder of predictions")
    e.add_argument("--truth", required=True, help="folder of ground-truth label maps (same stems)")
    e.add_argument("--json", help="write the results as JSON to this file")
    e.add_argument("--num-classes", type=int, help="number of classes (default: from the data)")
    e.add_argument("--label-map", help="raw truth value -> class, e.g. '0:1,255:0' (ISBI membranes)")
    e.add_argument("--instances", action="store_true", help="same as --task instances (object F1, Dice, AJI, PQ)")
    e.add_argument("--config", metavar="RECIPE_OR_RUN",
                   help="show the class names (data.class_names) of this recipe, run folder, checkpoint or .onnx")
    e.add_argument("--class-names", metavar="NAMES",
                   help="class names in class order, e.g. 'background,anterior,posterior' (overrides --config)")
    e.add_argument("--membranes", action="store_true",
                   help="also the ISBI 2012 pixel and Rand errors of binary 2D membrane maps (class 1 = membrane; "
                   "STEM_prob files of predict --probabilities are scored at their best threshold)")
    e.add_argument("--task", default="segmentation",
                   help="segmentation (Dice, IoU, HD95), instances (object scores), image or sr (PSNR, SSIM)")
    e.add_argument("--baseline",
                   help="with --task image: folder of baseline (e.g. tricubic) volumes to score alongside")
    e.add_argument("--figure", help="with --task image and --baseline: PNG of input, tricubic, prediction, truth and "
                   "their error maps (first volume)")
    e.set_defaults(fn=_cmd_evaluate)

    m = sub.add_parser("models", help="list the registered networks with their parameter counts")
    m.set_defaults(fn=_cmd_models)

    d = sub.add_parser("demo", help="train a small U-Net on generated touching cells, evaluate, write overlay.png")
    d.add_argument("--out", default="runs/demo", help="output folder")
    d.add_argument("--data", help="a real data folder (images/ + labels/) instead of the generated cells")
    d.add_argument("--budget", type=float, default=90.0, help="training time budget in seconds")
    d.add_argument("--device", default="auto")
    d.set_defaults(fn=_cmd_demo)

    b = sub.add_parser("bench", help="run benchmarks/ (python -m benchmarks) from a source checkout")
    b.add_argument("rest", nargs=argparse.REMAINDER, help="arguments for the benchmark runner")
    b.set_defaults(fn=_cmd_bench)

    g = sub.add_parser(
        "degrade", help="simulate thick slices (block average + tricubic back to the grid) for super-resolution"
    )
    g.add_argument("--input", required=True, help="a NIfTI volume or a folder of them (high resolution)")
    g.add_argument("--output", required=True, help="output folder: the tricubic baseline, and the input of predict")
    g.add_argument("--factor", type=int, default=2, help="slice thickness factor")
    g.add_argument("--axis", type=int, default=2, help="slice axis of the volume")
    g.set_defaults(fn=_cmd_degrade)

    a = sub.add_parser("augment-preview", help="write a grid of augmented samples with label contours")
    a.add_argument("source", help="a recipe YAML or a data folder")
    a.add_argument("--n", type=int, default=8, help="number of samples")
    a.add_argument("--out", default="grid.png", help="output PNG")
    a.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    a.set_defaults(fn=_cmd_augment_preview)
    for module in FEATURES:
        importlib.import_module(module).register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script; returns the exit code."""
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # `train --nproc` hands them to torchrun
    try:
        return int(args.fn(args) or 0)
    except DensemedError as exc:
        print(f"densemed: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a full disk, a read-only folder, a vanished mount: the system's reason, one line
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"densemed: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("densemed: interrupted; checkpoints written so far are intact", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
