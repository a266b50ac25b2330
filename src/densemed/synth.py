"""``densemed synth``: train a label-to-image GAN and write new synthetic image/label pairs.

``densemed synth train RECIPE.yaml`` is ``densemed train`` for a recipe whose task is
``synthesis`` (:mod:`densemed.tasks.synthesis`): the same run folder, atomic checkpoints,
``--resume``, time budget and one-line errors; the run ends with ``synth_preview.png``.

``densemed synth generate --checkpoint RUN/best.pt --n 500 --out DIR`` writes ``DIR/images/`` and
``DIR/labels/``, a data folder that ``densemed train`` reads as it is (alone, or mixed with the
real one through ``data.extra_roots``). Pair ``k`` (stem ``synth_<k>``) is made from training
label map ``k mod n_train`` of the checkpoint's recipe (its ``data.root`` and split; ``--data``
points elsewhere):

1. a new label map by :class:`densemed.data.label_synth.LabelSynthesizer` (instance maps:
   objects removed, moved and added from the other training maps; then flips, rotations, affine
   and elastic deformation; ``task.synthesizer`` options) with seed ``s_label``;
2. the image by the generator on the map's condition channels with pix2pix's test-time dropout
   drawn from seed ``s_noise`` (``(s_label, s_noise)`` from ``numpy.random.SeedSequence([seed, k])``,
   so ``--seed`` and ``k`` fix pair ``k`` whatever ``--n``);
3. written in the **source's formats and encodings**: the image with the suffix, mode and dtype
   of the source image (8-bit grey, RGBA with opaque alpha, 16-bit, NIfTI with the source header)
   and the source image's intensity scale (the normalisation of training undone with the
   per-channel shift and scale of the real image whose label map was deformed); the label map with
   the source label's suffix and dtype (16-bit PNG instance maps stay 16-bit) and its raw values
   (classes mapped back through ``data.label_map``, e.g. ISBI's membrane class back to 0).

``DIR/synth.json`` records the checkpoint, the seed and the source and seeds of every pair; the
checkpoint's run folder gets a fresh ``synth_preview.png``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from densemed.errors import DensemedError

if TYPE_CHECKING:
    from densemed.config import Config
    from densemed.data.io import ImageMeta


def register(subparsers: Any) -> None:
    """Add ``synth train`` and ``synth generate`` to the ``densemed`` parser."""
    p = subparsers.add_parser("synth", help="synthetic image/label pairs from a label-to-image GAN (pix2pix)")
    sub = p.add_subparsers(dest="synth_command", required=True, metavar="SYNTH_COMMAND")

    t = sub.add_parser("train", help="train the GAN from a synthesis recipe (configs/pix2pix_*.yaml)")
    t.add_argument("config", nargs="?", help="recipe YAML with task: synthesis")
    t.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override recipe keys")
    t.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run from RUN_DIR/last.pt")
    t.add_argument("--device", help="auto, cpu, cuda, cuda:N or mps (overrides train.device)")
    t.set_defaults(fn=_cmd_train)

    g = sub.add_parser("generate", help="write N new image/label pairs (DIR/images, DIR/labels)")
    g.add_argument("--checkpoint", required=True, help="RUN/best.pt of a synthesis run (or the run folder)")
    g.add_argument("--n", type=int, required=True, help="number of pairs")
    g.add_argument("--out", required=True, help="output folder (gets images/ and labels/)")
    g.add_argument("--seed", type=int, default=0, help="seed of the label maps and the dropout noise")
    g.add_argument("--data", help="data folder of the source labels (default: the recipe's data.root)")
    g.add_argument("--device", default="cpu", help="auto, cpu, cuda, cuda:N or mps")
    g.set_defaults(fn=_cmd_generate)


def _check_synthesis(cfg: Config, source: str) -> Any:
    from densemed import tasks
    from densemed.tasks.synthesis import Synthesis

    task = tasks.build(cfg, source)
    if not isinstance(task, Synthesis):
        raise DensemedError(f"{source}: task is {cfg.task_name!r}; densemed synth needs a recipe with "
                            "task: synthesis (see configs/pix2pix_*.yaml)")
    return task


def _cmd_train(args: argparse.Namespace) -> int:
    from densemed import config
    from densemed.train import train

    if args.resume:
        source = str(args.config or Path(args.resume) / "config.yaml")
        cfg = config.load_run(args.resume, args.config, args.set)
    else:
        if not args.config:
            raise DensemedError("synth train: give a recipe with task: synthesis (configs/pix2pix_*.yaml)")
        source = str(args.config)
        cfg = config.load(args.config, args.set)
    _check_synthesis(cfg, source)
    if args.device:
        cfg.train.device = args.device
    result = train(cfg, resume=bool(args.resume))
    print(result.summary())
    return 0


def _cmd_generate(args: argparse.Namespace) -> int:
    written = generate(args.checkpoint, args.n, args.out, seed=args.seed, data=args.data, device=args.device)
    print(f"wrote {len(written)} image/label pairs to {args.out} (images/, labels/)")
    return 0


# --------------------------------------------------------------------------------- encodings
def file_dtype(path: Path, meta: ImageMeta) -> np.dtype:
    """The dtype a source file stores its values in (PNG mode, TIFF page, NIfTI header)."""
    if meta.format == "nifti":
        return np.dtype(meta.header.get_data_dtype())
    if meta.format == "tiff":
        import tifffile

        with tifffile.TiffFile(str(path)) as tif:
            return np.dtype(tif.pages[0].dtype)
    mode = meta.extra.get("mode", "L")
    if mode.startswith("I;16"):
        return np.dtype(np.uint16)
    if mode in ("I", "F"):
        return np.dtype(np.int32 if mode == "I" else np.float32)
    return np.dtype(np.uint8)


def to_dtype(arr: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round and clip to an integer dtype's range (floats pass through)."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.round(arr), info.min, info.max).astype(dtype)
    return arr.astype(dtype)


def image_array(image: np.ndarray, meta: ImageMeta) -> np.ndarray:
    """A ``(C, *S)`` image laid out as its source file stores it (grey 2D, RGB(A) last axis, NIfTI 4th axis)."""
    if image.shape[0] == 1:
        return image[0]
    arr = np.moveaxis(image, 0, -1)
    if meta.format != "nifti" and meta.extra.get("mode") == "RGBA" and arr.shape[-1] == 3:
        alpha = np.full(arr.shape[:-1] + (1,), 255, arr.dtype)  # the source's opaque alpha
        arr = np.concatenate([arr, alpha], axis=-1)
    return arr


def inverse_label_values(pairs: list[tuple[np.ndarray, np.ndarray]], num_classes: int) -> np.ndarray:
    """Class index -> raw file value, from (raw, class) maps of the training labels (smallest raw per class).

    A class never seen keeps its index as its value.
    """
    lut = np.arange(num_classes, dtype=np.int64)
    seen = np.zeros(num_classes, bool)
    for raw, classes in pairs:
        for c in range(num_classes):
            values = raw[classes == c]
            if values.size:
                v = int(values.min())
                lut[c] = v if not seen[c] else min(int(lut[c]), v)
                seen[c] = True
    return lut


# --------------------------------------------------------------------------------- generation
def _write(path: Path, arr: np.ndarray, like: ImageMeta) -> None:
    # io's atomic writer keeps the array's dtype (write_label would pick 8 bits for small ids)
    from densemed.data.io import _atomic_write

    _atomic_write(path, arr, like)


def generate(
    checkpoint: str | Path, n: int, out: str | Path, seed: int = 0, data: str | None = None,
    device: str = "cpu", log: Any = print,
) -> list[Path]:
    """Write ``n`` new pairs into ``out/images`` and ``out/labels`` (see the module docstring).

    Returns:
        The written image files.
    """
    import torch

    from densemed.build import load_model, resolve_device
    from densemed.config import resolve_data_root
    from densemed.data.dataset import discover_pairs, split
    from densemed.data.io import read_image, read_label, split_name
    from densemed.data.normalize import intensity_params

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise DensemedError(f"--n: must be a positive integer, got {n!r}")
    dev = resolve_device(device)
    model, cfg, _ = load_model(checkpoint, dev)
    task = _check_synthesis(cfg, str(checkpoint))
    d = cfg.data
    if d.synthetic is not None and data is None:
        raise DensemedError(f"{checkpoint}: trained on data.synthetic; give the source labels with --data")
    if d.target_spacing:
        raise DensemedError(f"{checkpoint}: data.target_spacing is set; synth generate writes on the source grid "
                            "only (train the GAN without target_spacing)")
    root = resolve_data_root(data or d.root)
    d.root, d.synthetic = str(root), None
    out = Path(out)
    for sub in ("images", "labels"):
        if (out / sub).is_dir() and any((out / sub).iterdir()):
            raise DensemedError(f"{out / sub}: already holds files; choose an empty --out")

    pairs = discover_pairs(root, d.image_dir, d.label_dir)
    train_stems, val_stems = split([s for s, _, _ in pairs], d)
    by = {s: (i, lab) for s, i, lab in pairs}
    sources = []
    for stem in train_stems:
        img_path, lab_path = by[stem]
        raw_img, img_meta = read_image(img_path, d.dims)
        raw_lab, lab_meta = read_label(lab_path, d.dims)
        classes, ids = task.labels_of(raw_lab, lab_path)
        shift, scale, _ = intensity_params(raw_img, d.normalize, d.percentiles, d.window)
        sources.append({
            "stem": stem, "img_path": img_path, "lab_path": lab_path, "img_meta": img_meta, "lab_meta": lab_meta,
            "raw": raw_lab, "classes": classes, "ids": ids, "shift": shift, "scale": scale,
            "img_dtype": file_dtype(img_path, img_meta), "lab_dtype": file_dtype(lab_path, lab_meta),
        })
    if not sources:
        raise DensemedError(f"{root}: the recipe's split leaves no training labels to start from")
    instances = bool(task.opts.instances)
    lut = None if instances else inverse_label_values([(s["raw"], s["classes"]) for s in sources], d.num_classes)
    donors = [s["ids"] for s in sources] if instances else []
    synthesizer = task.synthesizer()
    written, records = [], []
    width = max(5, len(str(n - 1)))
    for k in range(n):
        s_label, s_noise = (int(v) for v in np.random.SeedSequence([seed, k]).generate_state(2))
        src = sources[k % len(sources)]
        if instances:
            new_ids = synthesizer(src["ids"], seed=s_label, donors=donors)
            classes, ids = (new_ids > 0).astype(np.int64), new_ids
            raw_label = new_ids
        else:
            classes, ids = synthesizer(src["classes"], seed=s_label), None
            raw_label = lut[classes]
        cond = torch.from_numpy(task.condition(classes, ids))[None]
        fake = task.generate(model, cond, s_noise, dev)[0].numpy().astype(np.float64)  # (C, *S) normalised
        shift, scale = src["shift"], src["scale"]
        raw_image = fake * scale.reshape((-1,) + (1,) * (fake.ndim - 1)) + shift.reshape((-1,) + (1,) * (fake.ndim - 1))
        stem = f"synth_{k:0{width}d}"
        img_suffix, lab_suffix = split_name(src["img_path"])[1], split_name(src["lab_path"])[1]
        img_file = out / "images" / f"{stem}{img_suffix}"
        _write(img_file, image_array(to_dtype(raw_image, src["img_dtype"]), src["img_meta"]), src["img_meta"])
        _write(out / "labels" / f"{stem}{lab_suffix}", to_dtype(raw_label, src["lab_dtype"]), src["lab_meta"])
        written.append(img_file)
        records.append({"stem": stem, "source": src["stem"], "label_seed": s_label, "noise_seed": s_noise})
        if log is not None and ((k + 1) % max(1, n // 10) == 0 or k + 1 == n):
            log(f"generated {k + 1}/{n}")
    manifest = {"checkpoint": str(checkpoint), "seed": seed, "n": n, "data_root": str(root), "pairs": records}
    (out / "synth.json").write_text(json.dumps(manifest, indent=1))
    if task.opts.preview_rows:
        stems = (val_stems or train_stems)[: task.opts.preview_rows]
        cases = [task.load_case(s, *by[s]) for s in stems]
        run = Path(checkpoint)
        _preview(task, model, cases, run if run.is_dir() else run.parent, dev, log)
    return written


def _preview(task: Any, model: Any, cases: list, run: Path, device: Any, log: Any) -> None:
    """Refresh the run folder's ``synth_preview.png`` (real validation pairs, else training pairs)."""
    from densemed.tasks.synthesis import PREVIEW_NAME, write_preview

    target = write_preview(task, model, cases, run / PREVIEW_NAME, device)
    if log is not None:
        log(f"wrote {target}")
