"""``synthesis``: a label-to-image conditional GAN (pix2pix) that makes new training pairs.

Recipe section (every key optional)::

    task:
      name: synthesis
      instances: false          # label files hold instance ids (adds the boundary channel)
      lambda_l1: 100            # pix2pix's weight of the L1 term
      feature_matching: 0       # pix2pixHD feature-matching weight (10 in pix2pixHD; 0 = off)
      diffaugment: null         # DiffAugment policy for D, e.g. [color, translation, cutout]
      discriminator: {name: patchgan, base_width: 64, spectral_norm: false}
      lr_d: null                # D's learning rate (default train.lr)
      betas: [0.5, 0.999]       # Adam, as pix2pix
      synthesizer: {}           # options of densemed.data.label_synth.LabelSynthesizer
      segmenter: null           # a segmentation checkpoint: label fidelity and FD at validation
      preview_rows: 4
      preview_samples: 3
    loss: {name: gan_ls}        # the adversarial loss (gan_ls recommended, or gan_ns)

Data: ``images/`` + ``labels/`` as for ``segmentation`` (class maps through ``data.label_map``)
or, with ``instances: true``, instance maps as for ``instances``. The **model input** (batch key
``image``) is the condition :func:`densemed.data.label_synth.condition_channels`: one-hot classes,
plus a boundary channel for instance maps (pix2pixHD Sec. 3.3); the **target** (batch key
``target``) is the normalised real image. ``data.in_channels`` is the images' channel count (the
generator's ``out_channels``; read from the dataset's first image when unset and saved in the
recipe). Geometric augmentation resamples the condition by nearest neighbour so it stays one-hot;
intensity augmentation is refused (it would alter the condition; DiffAugment is the
discriminator's augmentation).

Training: :class:`densemed.train.gan.GANModule` (generator = ``model``, discriminator from
``task.discriminator`` on condition + image channels). Validation generates each validation image
from its label map (whole image, eval mode: no dropout, deterministic) and reports ``val_l1``
(= ``val_loss``, mean absolute difference to the real normalised image), ``val_psnr``, and the
realism score ``val_spectral`` (:func:`densemed.metrics.realism.spectral_distance` between the
generated and the real validation images). With ``task.segmenter`` (a checkpoint of a segmentation
model trained on the real data, same classes) it also reports ``val_fidelity`` (the segmenter's
mean foreground Dice on the generated images against the label maps they were generated from,
pix2pix's "FCN-score") and ``val_fd`` (Fréchet distance in the segmenter's deepest encoder
features, :mod:`densemed.metrics.realism`). ``best.pt`` by ``val_fidelity`` when a segmenter is
given, else by the lowest ``val_l1``. After training, ``synth_preview.png`` in the run folder
shows per row the label map, the real image and ``preview_samples`` generated images (dropout
noise, seeds 0, 1, ...).

Inference (:meth:`Synthesis.infer`) is one whole-image pass (instance norm normalises over the
whole image, and blending windows would average dropout noise away); :meth:`Synthesis.generate`
adds pix2pix's test-time dropout with a seeded generator. ``densemed synth generate``
(:mod:`densemed.synth`) writes new pairs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from densemed.data.dataset import Case, map_labels, read_image_case, read_label_case
from densemed.data.io import ImageMeta, read_label, split_name, write_float
from densemed.data.normalize import normalize
from densemed.errors import DensemedError
from densemed.tasks.base import FitContext, Task
from densemed.tasks.registry import register

if TYPE_CHECKING:
    from densemed.data.label_synth import LabelSynthesizer

PREVIEW_NAME = "synth_preview.png"
_INTENSITY_AUGMENT = ("noise", "blur", "brightness", "contrast", "gamma")


@dataclass
class SynthesisOptions:
    """The ``task`` section of a synthesis recipe (see the module docstring)."""

    instances: bool = False
    lambda_l1: float = 100.0
    feature_matching: float = 0.0
    diffaugment: list[str] | None = None
    discriminator: dict[str, Any] = field(default_factory=lambda: {"name": "patchgan"})
    lr_d: float | None = None
    betas: list[float] = field(default_factory=lambda: [0.5, 0.999])
    synthesizer: dict[str, Any] = field(default_factory=dict)
    segmenter: str | None = None
    preview_rows: int = 4
    preview_samples: int = 3


def _number(value: Any, key: str, low: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < low:
        raise DensemedError(f"{key}: must be a number >= {low:g}, got {value!r}")
    return float(value)


@register
class Synthesis(Task):
    """Label map -> image conditional GAN (see the module docstring)."""

    name = "synthesis"
    Options = SynthesisOptions
    writes = "generated images (one per label map)"

    def check(self, source: str) -> None:
        """Options in range, an adversarial loss, no intensity augmentation, valid synthesizer options."""
        o, where = self.opts, f"{source}: task"
        _number(o.lambda_l1, f"{where}.lambda_l1")
        _number(o.feature_matching, f"{where}.feature_matching")
        if o.lr_d is not None:
            _number(o.lr_d, f"{where}.lr_d")
        if not isinstance(o.betas, (list, tuple)) or len(o.betas) != 2 or not all(
            isinstance(b, (int, float)) and not isinstance(b, bool) and 0 <= b < 1 for b in o.betas
        ):
            raise DensemedError(f"{where}.betas: must be two numbers in [0, 1), got {o.betas!r}")
        if not isinstance(o.discriminator, dict) or not isinstance(o.discriminator.get("name"), str):
            raise DensemedError(f"{where}.discriminator: must be a mapping with a network 'name', "
                                f"got {o.discriminator!r}")
        if o.diffaugment is not None:
            from densemed.augment.diffaugment import RandomDiffAugment

            RandomDiffAugment(o.diffaugment)
        for key in ("preview_rows", "preview_samples"):
            v = getattr(o, key)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise DensemedError(f"{where}.{key}: must be an integer >= 0, got {v!r}")
        if o.instances and self.cfg.data.num_classes != 2:
            raise DensemedError(f"{where}.instances: instance maps have 2 classes; data.num_classes is "
                                f"{self.cfg.data.num_classes}")
        if not isinstance(o.synthesizer, dict):
            raise DensemedError(f"{where}.synthesizer: must be a mapping of LabelSynthesizer options")
        try:
            self.synthesizer()
        except TypeError as exc:
            raise DensemedError(f"{where}.synthesizer: {exc}") from None
        from densemed.build import build_loss
        from densemed.losses.adversarial import DEFAULT, AdversarialLoss

        if not isinstance(build_loss(self.cfg), AdversarialLoss):
            raise DensemedError(f"{source}: loss.name: the synthesis task trains with an adversarial loss "
                                f"(gan_ls, recommended, or gan_ns), got {self.cfg.loss.get('name')!r}; "
                                f"use loss: {{name: {DEFAULT}}}")
        aug = self.cfg.augment
        if aug == "default" or (isinstance(aug, dict) and any(aug.get(k) for k in _INTENSITY_AUGMENT)):
            raise DensemedError(f"{source}: augment: the synthesis model's input is the label condition; intensity "
                                f"augmentation ({', '.join(_INTENSITY_AUGMENT)}) would alter it — use geometric "
                                "transforms only (and task.diffaugment for the discriminator)")

    # -- data -------------------------------------------------------------------------------------
    @property
    def condition_channels(self) -> int:
        """Channels of the generator's input: classes, plus the boundary channel for instance maps."""
        return int(self.cfg.data.num_classes) + int(bool(self.opts.instances))

    def out_channels(self) -> int | None:
        """The image channels: ``data.in_channels``, else read from the dataset's first image and kept there.

        Kept in the recipe (so in ``config.yaml`` and every checkpoint) because prediction rebuilds
        the generator from the recipe alone. Not set while loading cases: a case read from the
        on-disk cache does not call :meth:`load_case`.
        """
        d = self.cfg.data
        if d.in_channels is None:
            d.in_channels = 1 if d.synthetic is not None else self._first_image_channels()
        return int(d.in_channels)

    def _first_image_channels(self) -> int:
        from densemed.config import resolve_data_root
        from densemed.data.dataset import discover_cases, read_image_case

        first = discover_cases(resolve_data_root(self.cfg.data.root), self.cfg.data, True).cases[0]
        image, _ = read_image_case(self.cfg, first.images[0] if len(first.images) == 1 else list(first.images))
        return int(image.shape[0])

    def synthesizer(self) -> LabelSynthesizer:
        """The recipe's label-map synthesizer (``task.synthesizer`` options)."""
        from densemed.data.label_synth import LabelSynthesizer

        return LabelSynthesizer(bool(self.opts.instances), **self.opts.synthesizer)

    def labels_of(self, raw: np.ndarray, path: Path | str) -> tuple[np.ndarray, np.ndarray | None]:
        """``(class map, instance ids or None)`` of a raw label map, checked as the other tasks do."""
        if self.opts.instances:
            from densemed.targets import check_instances

            ids = check_instances(raw, path)
            return (ids > 0).astype(np.int64), ids.astype(np.int32)
        return map_labels(raw, self.cfg.data, path).astype(np.int64), None

    def condition(self, classes: np.ndarray, instances: np.ndarray | None) -> np.ndarray:
        """Condition channels ``(C_s, *S)`` float32 of a class map (or an instance map)."""
        from densemed.data.label_synth import condition_channels

        if self.opts.instances:
            return condition_channels(instances, 2, True)
        return condition_channels(classes, int(self.cfg.data.num_classes), False)

    def load_case(self, name: str, image_path: Path, label_path: Path | None) -> Case:
        """Condition as ``image``, the normalised real image as map ``target``, classes as ``label``."""
        image, meta = read_image_case(self.cfg, image_path)
        raw, _ = read_label_case(self.cfg, label_path, image.shape[1:])
        classes, ids = self.labels_of(raw, label_path)
        return Case(name, self.condition(classes, ids), classes, {"target": image}, meta, ids)

    def synthetic_case(self, name: str, image: np.ndarray, instances: np.ndarray) -> Case:
        """Generated cells: instance maps with ``instances: true``, else foreground = any object."""
        img = normalize(image, self.cfg.data.normalize)
        ids = instances.astype(np.int32) if self.opts.instances else None
        classes = (instances > 0).astype(np.int64)
        return Case(name, self.condition(classes, ids), classes, {"target": img}, None, ids)

    def nearest_keys(self) -> frozenset[str]:
        """The condition (batch key ``image``) is resampled by nearest neighbour: it stays one-hot."""
        return frozenset({"image"})

    # -- training ---------------------------------------------------------------------------------
    def training_module(self, model: nn.Module, loss_fn: nn.Module, device: torch.device) -> Any:
        """:class:`~densemed.train.gan.GANModule` with the recipe's discriminator on (condition, image) pairs."""
        from densemed.build import build_network
        from densemed.train.gan import GANModule

        o = self.opts
        disc = build_network(o.discriminator, self.cfg.data.dims, self.condition_channels + self.out_channels(),
                             1, key="task.discriminator").to(device)
        return GANModule(model, disc, loss_fn, self.cfg.train, device, lambda_l1=o.lambda_l1,
                         feature_matching=o.feature_matching, diffaugment=o.diffaugment, betas=o.betas,
                         lr_d=o.lr_d)

    def validate(
        self, model: nn.Module, loss_fn: nn.Module, val_cases: list[Case], val_patches: list[dict], device: torch.device
    ) -> dict[str, Any]:
        """L1, PSNR and spectral realism of generated validation images (+ fidelity and FD with a segmenter)."""
        if not val_cases:
            return {}
        from densemed.metrics.image_quality import psnr
        from densemed.metrics.realism import spectral_distance

        fakes = [self.infer(model, torch.from_numpy(c.image)[None], device)[0].numpy() for c in val_cases]
        reals = [c.maps["target"] for c in val_cases]
        l1 = float(np.mean([np.abs(f - r).mean() for f, r in zip(fakes, reals)]))
        rec: dict[str, Any] = {
            "val_loss": l1, "val_l1": l1,
            "val_psnr": float(np.mean([psnr(f, r, data_range=float(r.max() - r.min())) for f, r in zip(fakes, reals)])),
            "val_spectral": spectral_distance(fakes, reals),
        }
        if self.opts.segmenter:
            rec.update(self.fidelity(fakes, val_cases, device))
            rec["val_score"] = rec["val_fidelity"]
        else:
            rec["val_score"] = -l1
        return rec

    def _segmenter(self, device: torch.device) -> tuple[nn.Module, Any]:
        cached = getattr(self, "_seg", None)
        if cached is None:
            from densemed.build import load_model

            path = Path(str(self.opts.segmenter))
            if not path.exists():
                raise DensemedError(f"task.segmenter: {path} not found")
            model, cfg, _ = load_model(path, device)
            cached = self._seg = (model, cfg)
        return cached

    def fidelity(self, fakes: list[np.ndarray], cases: list[Case], device: torch.device) -> dict[str, float]:
        """``val_fidelity`` (segmenter Dice on generated images vs their labels) and ``val_fd``."""
        from densemed.infer.runner import predict_main
        from densemed.metrics.confusion import confusion, dice
        from densemed.metrics.realism import encoder_features, frechet_distance
        from densemed.nets.heads import to_labels

        seg, seg_cfg = self._segmenter(device)
        k = max(int(seg_cfg.data.num_classes), 2)
        d = seg_cfg.data

        def prep(x: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(normalize(x, d.normalize, d.percentiles, d.window))

        scores = []
        for fake, case in zip(fakes, cases):
            pred = to_labels(predict_main(seg, prep(fake)[None], seg_cfg, device, tta=False))[0]
            scores.append(float(np.mean(np.asarray(dice(confusion(pred, torch.from_numpy(case.label), k)))[1:])))
        real_feats = encoder_features(seg, [prep(c.maps["target"]) for c in cases], device=device)
        fake_feats = encoder_features(seg, [prep(f) for f in fakes], device=device)
        return {"val_fidelity": float(np.mean(scores)), "val_fd": frechet_distance(real_feats, fake_feats)}

    def after_fit(self, ctx: FitContext) -> dict[str, Any]:
        """Write ``synth_preview.png`` (label, real image, generated samples per row) into the run folder."""
        cases = ctx.val_cases
        if self.opts.preview_rows and cases:
            write_preview(self, ctx.model, cases, ctx.out / PREVIEW_NAME, ctx.device)
            ctx.log(f"wrote {ctx.out / PREVIEW_NAME}")
        return {}

    # -- inference --------------------------------------------------------------------------------
    def infer(
        self, model: nn.Module, image: torch.Tensor, device: torch.device, tta: bool | None = None
    ) -> torch.Tensor:
        """The generated image ``(1, C, *S)`` on the CPU for a condition ``(1, C_s, *S)``: one pass, no dropout."""
        model.eval()
        with torch.inference_mode():
            return model(image.to(device)).float().cpu()

    def generate(self, model: nn.Module, condition: torch.Tensor, seed: int, device: torch.device) -> torch.Tensor:
        """One sample ``(1, C, *S)`` with pix2pix's test-time dropout, fixed by ``seed`` (same on every device)."""
        model.eval()
        gen = torch.Generator().manual_seed(int(seed))
        with torch.inference_mode():
            if hasattr(model, "generate"):
                return model.generate(condition.to(device), gen).float().cpu()
            return model(condition.to(device)).float().cpu()

    def read_condition(self, path: Path) -> tuple[torch.Tensor, ImageMeta]:
        """A label file as the generator's input ``(1, C_s, *S)`` (for prediction from label maps)."""
        raw, meta = read_label(path, self.cfg.data.dims)
        classes, ids = self.labels_of(raw, path)
        return torch.from_numpy(self.condition(classes, ids))[None], meta

    def write(
        self, model: nn.Module, image: torch.Tensor, outputs: torch.Tensor, source: Path, meta: ImageMeta,
        out_dir: Path, norm: tuple[np.ndarray, np.ndarray], options: dict[str, Any],
    ) -> list[Path]:
        """The image generated from the label map ``source`` (re-read as labels), as float TIFF / NIfTI.

        The input of prediction is a label map; it is read again here as one (the predictor reads
        every input as an image) and the generator runs on its condition channels.
        """
        from densemed.tasks.segmentation import float_suffix

        cond, _ = self.read_condition(Path(source))
        fake = self.infer(model, cond, options.get("device", torch.device("cpu")))
        stem, _ = split_name(source)
        target = out_dir / f"{stem}{float_suffix(meta)}"
        data = fake[0, 0] if fake.shape[1] == 1 else np.moveaxis(fake[0].numpy(), 0, -1)
        write_float(target, np.asarray(data), meta)
        return [target]

    # -- evaluation -------------------------------------------------------------------------------
    @classmethod
    def evaluate_folders(cls, pred: Path, truth: Path, options: dict[str, Any]) -> dict[str, Any]:
        """Spectral distance between a folder of generated and a folder of real images (z-scored)."""
        from densemed.data.io import is_supported, read_image
        from densemed.metrics.realism import spectral_distance

        def images(folder: Path) -> list[np.ndarray]:
            if not folder.is_dir():
                raise DensemedError(f"{folder}: folder not found")
            files = sorted(p for p in folder.iterdir() if p.is_file() and is_supported(p))
            if not files:
                raise DensemedError(f"{folder}: no images found")
            return [normalize(read_image(p)[0], "zscore") for p in files]

        gen, real = images(Path(pred)), images(Path(truth))
        return {"n_generated": len(gen), "n_real": len(real), "spectral_distance": spectral_distance(gen, real)}

    @classmethod
    def format_result(cls, result: dict[str, Any]) -> str:
        """One line."""
        return (f"generated {result['n_generated']}, real {result['n_real']}: spectral distance "
                f"{result['spectral_distance']:.4f} (0 = same radial power spectrum)")


# ------------------------------------------------------------------------------------- preview
def _show_label(classes: np.ndarray, instances: np.ndarray | None) -> np.ndarray:
    """RGB rendering of a label map: instances in pseudo-random colours, classes in grey levels."""
    if instances is not None:
        rng = np.random.default_rng(0)
        colours = rng.uniform(0.3, 1.0, (int(instances.max(initial=0)) + 1, 3))
        colours[0] = 0.0
        return colours[instances]
    k = max(int(classes.max(initial=0)), 1)
    grey = classes.astype(np.float64) / k
    return np.repeat(grey[..., None], 3, axis=-1)


def _show_image(x: np.ndarray) -> np.ndarray:
    """A normalised image ``(C, H, W)`` as RGB in [0, 1]: z-scores -3..3 mapped linearly."""
    x = np.asarray(x, np.float64)
    rgb = np.repeat(x[:1], 3, axis=0) if x.shape[0] != 3 else x
    return np.clip((np.moveaxis(rgb, 0, -1) + 3.0) / 6.0, 0.0, 1.0)


def _mid_slice(arr: np.ndarray, dims: int) -> np.ndarray:
    """The middle slice along the last axis of a 3D array (channel-first when ``arr.ndim == 4``)."""
    if dims == 3:
        return arr[..., arr.shape[-1] // 2]
    return arr


def write_preview(task: Synthesis, model: nn.Module, cases: list[Case], out: Path, device: torch.device) -> Path:
    """A grid: per case the label map, the real image and ``preview_samples`` generated images.

    Generated samples use pix2pix's test-time dropout with seeds 0, 1, ... (3D: the middle slice
    of the last axis is shown).
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = cases[: task.opts.preview_rows]
    n_gen = task.opts.preview_samples
    cols = 2 + n_gen
    dims = task.cfg.data.dims
    fig = Figure(figsize=(2.2 * cols, 2.2 * len(rows)), dpi=100)
    FigureCanvasAgg(fig)
    axes = np.asarray(fig.subplots(len(rows), cols, squeeze=False))
    titles = ["label", "real", *[f"generated {s + 1}" for s in range(n_gen)]]
    for r, case in enumerate(rows):
        cond = torch.from_numpy(case.image)[None]
        tiles = [_show_label(_mid_slice(case.label, dims),
                             None if case.instances is None else _mid_slice(case.instances, dims)),
                 _show_image(_mid_slice(case.maps["target"], dims))]
        tiles += [_show_image(_mid_slice(task.generate(model, cond, s, device)[0].numpy(), dims)) for s in range(n_gen)]
        for c, tile in enumerate(tiles):
            ax = axes[r, c]
            ax.imshow(tile, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
        axes[r, 0].set_ylabel(case.name[:16], fontsize=8)
    fig.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp.png")
    try:
        fig.savefig(tmp, format="png")
        tmp.replace(out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
