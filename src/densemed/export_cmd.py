"""``densemed export --checkpoint RUN/best.pt --format onnx|torchscript [--dynamic] [--out PATH]``.

Writes the checkpoint's main network (:func:`densemed.export.export`) and its JSON sidecar
(:func:`densemed.build.sidecar_meta`: sliding window, normalisation, target spacing, classes and
class names, the recipe), then verifies the written file in the same command: onnxruntime (or
``torch.jit.load``) against PyTorch on a random batch, on another spatial size with ``--dynamic``,
and on one real image: ``--image``, else the first validation image of the recipe's data (the
first training image when there is no validation split), read and normalised as training does. A
difference above ``--tolerance`` (1e-4) removes the files and exits 2.

``densemed predict --checkpoint RUN/model.onnx`` then runs the export through the same sliding
window and writers (:func:`densemed.build.load_exported`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def register(subparsers: Any) -> None:
    """Add the ``export`` subcommand."""
    x = subparsers.add_parser("export", help="export a checkpoint's network to ONNX or TorchScript, verified")
    x.add_argument("--checkpoint", required=True, help="RUN/best.pt (or a run folder)")
    x.add_argument("--format", default="onnx", choices=("onnx", "torchscript"), help="file format (default onnx)")
    x.add_argument("--dynamic", action="store_true", help="accept any spatial size (default: the window only)")
    x.add_argument("--out", help="model file (default: model.onnx or model.pt beside the checkpoint)")
    x.add_argument("--image", help="real image to verify on (default: the first validation image of the recipe)")
    x.add_argument("--tolerance", type=float, default=1e-4, help="largest allowed absolute difference of the logits")
    x.set_defaults(fn=run)


def default_out(checkpoint: Path, fmt: str) -> Path:
    """``model.onnx`` / ``model.pt`` in the run folder of ``checkpoint``."""
    folder = checkpoint if checkpoint.is_dir() else checkpoint.parent
    return folder / ("model.onnx" if fmt == "onnx" else "model.pt")


def real_image(cfg: Any, image: str | None) -> tuple[Any, str]:
    """One normalised image ``(C, *S)`` to verify on and where it came from, or ``(None, reason)``."""
    import numpy as np

    from densemed.data.dataset import resample
    from densemed.data.normalize import normalize

    d = cfg.data
    if image is not None:
        from densemed.infer.predict import read_input

        arr, meta = read_input(image, d.dims)
        if d.target_spacing:
            arr = resample(arr, meta.spacing, d.target_spacing, order=1)
        return normalize(arr, d.normalize, d.percentiles, d.window), str(image)
    from densemed import tasks

    task = tasks.build(cfg)
    if d.synthetic is not None:
        from densemed.data.synthetic import make_dataset

        img, inst = make_dataset(**{**d.synthetic, "n": 1})[0]
        return task.synthetic_case("synthetic_000", img, inst).image, "the first generated image"
    from densemed.config import resolve_data_root
    from densemed.data.dataset import discover_cases, split

    root = resolve_data_root(d.root)
    if not root.is_dir():
        return None, f"skipped (data folder {root} not found; pass --image)"
    index = discover_cases(root, d, task.needs_labels())
    train, val = split(index.stems, d)
    stem = (val or train)[0]
    case = index.cases[index.stems.index(stem)]
    from densemed.data.dataset import read_image_case

    arr, _ = read_image_case(cfg, case.images[0] if len(case.images) == 1 else case.images)
    return np.ascontiguousarray(arr), str(case.images[0])


def run(args: argparse.Namespace) -> int:
    """Export, verify, print what was written and the differences."""
    from densemed.build import load_model, sidecar_meta
    from densemed.export import check_exportable, export
    from densemed.infer.predict import model_in_channels

    checkpoint = Path(args.checkpoint)
    model, cfg, ckpt = load_model(checkpoint, "cpu")
    check_exportable(model, args.format)  # before the data are read for the verification
    in_channels = int(ckpt.get("in_channels") or model_in_channels(model) or cfg.data.in_channels or 1)
    meta = sidecar_meta(cfg, in_channels)
    image, where = real_image(cfg, args.image)
    out = Path(args.out) if args.out else default_out(checkpoint, args.format)
    result = export(model, meta, out, args.format, args.dynamic, real_image=image, tolerance=args.tolerance)
    shape = ", ".join(str(s) for s in [result["input_shape"][0], in_channels, *result["input_shape"][1:]])
    runtime = "onnxruntime" if args.format == "onnx" else "torch.jit.load"
    print(f"wrote {result['path']} and {result['sidecar']} ({args.format}, input ({shape}))")
    names = {"random": "random batch", "random_other_size": "random batch of another size",
             "real": f"real image {where}"}
    checks = ", ".join(f"{names[k]} {v:.2g}" for k, v in result["checks"].items())
    if "real" not in result["checks"]:
        checks += f", real image {where}"
    print(f"verified with {runtime} against PyTorch: max abs difference {result['max_abs_diff']:.2g} "
          f"(tolerance {args.tolerance:g}): {checks}")
    return 0
