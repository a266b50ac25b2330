"""Typed training recipes: dataclass sections, YAML on disk, composition, dotted overrides.

A recipe has sections ``task``, ``data``, ``model``, ``loss``, ``augment``, ``train`` and ``infer``.
``data``, ``train`` and ``infer`` are typed dataclasses: an unknown key is rejected with the closest
valid key suggested. ``task`` is ``{name: <registered task>, **options}`` (a bare name is short for
``{name: ...}``); the task's own dataclass (:mod:`densemed.tasks`) types and checks the options.
``model`` and ``loss`` hold a ``name`` (required) plus the keyword arguments of that network or loss
(checked by its builder); ``augment`` is the dict given to :func:`densemed.augment.build`. A recipe
without an ``augment`` section gets no augmentation; ``augment: default`` asks for
:data:`densemed.augment.compose.DEFAULT_AUGMENT`.

Composition: ``defaults: [base.yaml, ...]`` (paths relative to the recipe) are loaded first, in
order, and the recipe is merged over them key by key (mappings merge, everything else replaces).

Overrides use dotted keys with YAML values: ``--set train.epochs=3 data.patch_size=[128,128]``.

Recipes and checkpoints written before tasks had their own section (``task: sr`` with
``data.sr``; ``data.instances``/``data.targets``; ``infer.instances``; ``train.val_full_images``)
are read by moving those keys into ``task`` (:func:`densemed.tasks.legacy.migrate`).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from densemed.errors import DensemedError
from densemed.registry import closest
from densemed.typing import PathType


@dataclass
class DataConfig:
    """Where the data lies and how training samples are drawn from it."""

    root: str = ""
    dims: int = 2
    #: folder layout: auto | folders (images/ + labels/) | nnunet (v2 raw) | msd (see densemed.data.layouts)
    layout: str = "auto"
    image_dir: str = "images"  # folders layout only
    label_dir: str = "labels"
    #: raw label value -> class index; default maps {0, 255} to {0, 1} and keeps other values.
    label_map: dict[int, int] | None = None
    num_classes: int = 2
    #: class index -> name (a recipe may give a list of names in class order); filled from the
    #: dataset's dataset.json when unset, so checkpoints carry it
    class_names: dict[int, str] | None = None
    in_channels: int | None = None  # default: read from the first image
    patch_size: list[int] = field(default_factory=lambda: [256, 256])
    foreground_fraction: float = 0.5
    normalize: str = "zscore"  # zscore | percentile | window | none
    window: list[float] | None = None  # CT window [lo, hi] for normalize=window
    percentiles: list[float] = field(default_factory=lambda: [0.5, 99.5])
    target_spacing: list[float] | None = None  # resample to this spacing (mm; pixels without a spacing) when set
    val_fraction: float = 0.2
    split_seed: int = 0
    train_files: list[str] | None = None  # explicit split by file stem
    val_files: list[str] | None = None
    batch_size: int = 4
    samples_per_epoch: int = 64
    val_patches_per_image: int = 2
    num_workers: int = 0
    #: preprocessed cases (normalised images, labels, targets) as memory-mapped .npy files, keyed by the
    #: source files and the parameters that shape them (densemed.data.cache). null (default): on, in
    #: $DENSEMED_CACHE else ~/.cache/densemed (read-only there: a warning, and memory); a folder; "memory":
    #: off, every case read into memory. On by default since concurrent writers and open-file limits are
    #: handled and the test suite measured no slower with it (densemed.data.cache docstring)
    cache_dir: str | None = None
    #: bound of the cases held open (memory-mapped) per process, MiB; least recently used ones are closed
    cache_mb: float = 1024.0
    #: synthetic demo data instead of files: {n: 40, size: 128, seed: 0}
    synthetic: dict[str, Any] | None = None
    #: more training folders mixed in: [{root: DIR, share: 0.3}, ...]; each folder supplies that share of the
    #: training patches, the recipe's own split the rest (densemed.data.dataset.extra_cases)
    extra_roots: list[dict[str, Any]] | None = None


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping."""

    epochs: int = 20
    lr: float = 1e-3
    optimizer: str = "adam"  # adam | adamw | sgd
    momentum: float = 0.99
    weight_decay: float = 0.0
    scheduler: str = "cosine"  # cosine | poly | none
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda | cuda:1 | mps
    time_budget_s: float | None = None
    out: str = "runs/run"
    #: mixed precision: bf16 autocast (CPU, recent GPUs), else fp16 with a gradient scaler. Off by default:
    #: on an AVX2 CPU without bf16 instructions a U-Net step measured 4x slower (benchmarks/bench_amp.py).
    #: "auto": bf16 only where the CPU has bf16 units (AMX / AVX512-BF16) or the GPU supports it (densemed.precision)
    amp: bool | str = False
    #: conv weights (hence activations) stored channels-last (NHWC / NDHWC): the same arithmetic in a layout
    #: oneDNN and cuDNN run faster (measured 1.1-1.4x per U-Net step on the CPU under bf16, benchmarks/bench_amp.py)
    channels_last: bool = False
    threads: int | None = None
    grad_clip: float | None = None
    val_every: int = 1
    #: time-budgeted runs only: the largest share of the elapsed time that periodic validation may take.
    #: A due validation is skipped when, at the cost of the previous one, it would push the share above
    #: this; the first one and the final one (when the budget or the schedule ends) always run. Whole-image
    #: validation took 75 % of a 600 s GlaS run at every epoch (453 of 600 s). null: every val_every epoch.
    val_share: float | None = 0.1
    progress: bool = True
    #: batch norm with the statistics of the global batch when several processes train (torchrun)
    sync_batchnorm: bool = False
    #: gradient accumulation: each optimiser step sums the gradients of this many batches of data.batch_size
    accumulate: int = 1


@dataclass
class InferConfig:
    """Sliding-window prediction."""

    overlap: float = 0.5
    tta: bool = False
    sw_batch_size: int = 4
    window: list[int] | None = None  # default: data.patch_size
    blend: str = "gaussian"  # gaussian | constant
    #: spatial axes flipped by test-time augmentation (default: all); positional classes need fewer
    tta_axes: list[int] | None = None
    #: run the network under autocast (bf16 on the CPU; blending stays float32); "auto" as train.amp
    amp: bool | str = False


@dataclass
class Config:
    """A whole recipe."""

    task: dict[str, Any] = field(default_factory=lambda: {"name": "segmentation"})
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=lambda: {"name": "unet"})
    loss: dict[str, Any] = field(default_factory=lambda: {"name": "dice_ce"})
    augment: dict[str, Any] | str | None = None
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for YAML and checkpoints)."""
        return asdict(self)

    @property
    def task_name(self) -> str:
        """The registered name of the recipe's task."""
        return str(self.task["name"])


_TYPED = {"data": DataConfig, "train": TrainConfig, "infer": InferConfig}
#: values of ``data.layout`` (the layouts of :mod:`densemed.data.layouts`, plus detection)
LAYOUTS = ("auto", "folders", "nnunet", "msd")
_FREE = ("model", "loss", "augment")


def typed_section(cls: type, section: Any, source: str, name: str) -> Any:
    """Build dataclass ``cls`` from recipe section ``name``, rejecting unknown keys with the nearest one."""
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise DensemedError(f"{source}: section {name!r} must be a mapping, got {type(section).__name__}")
    valid = [f.name for f in dataclasses.fields(cls)]
    for key in section:
        if key not in valid:
            raise DensemedError(
                f"{source}: unknown config key '{name}.{key}'{closest(str(key), valid, cutoff=0.5)}"
            )
    return cls(**{k: _coerce(cls, k, v, f"{source}: {name}.{k}") for k, v in section.items()})


def _coerce(cls: type, key: str, value: Any, where: str) -> Any:
    """YAML 1.1 reads ``1e-4`` as a string; numbers typed in a section are converted here."""
    ann = str(next(f.type for f in dataclasses.fields(cls) if f.name == key))
    if isinstance(value, str) and ann.split(" ")[0] in ("float", "int"):
        try:
            return float(value) if ann.startswith("float") else int(value)
        except ValueError:
            raise DensemedError(f"{where}: expected a number, got {value!r}") from None
    return value


def from_dict(raw: dict[str, Any], source: str = "config") -> Config:
    """Build a :class:`Config`, rejecting unknown keys with the nearest valid one."""
    if not isinstance(raw, dict):
        raise DensemedError(f"{source}: a recipe must be a mapping of sections, got {type(raw).__name__}")
    from densemed.tasks.legacy import migrate

    raw = migrate(raw)
    top = [f.name for f in dataclasses.fields(Config)]
    for key in raw:
        if key not in top:
            raise DensemedError(f"{source}: unknown config key {key!r}{closest(str(key), top, cutoff=0.5)}")
    cfg = Config()
    for name, cls in _TYPED.items():
        setattr(cfg, name, typed_section(cls, raw.get(name), source, name))
    for name in ("model", "loss"):
        if name in raw:
            value = raw[name]
            if not isinstance(value, dict):
                raise DensemedError(f"{source}: section {name!r} must be a mapping with a 'name', got {value!r}")
            if "name" not in value:
                raise DensemedError(f"{source}: {name}.name is required (the {name} section has no name)")
            setattr(cfg, name, dict(value))
    if "augment" in raw:
        value = raw["augment"]
        if value is not None and not isinstance(value, (dict, str)):
            raise DensemedError(f"{source}: section 'augment' must be a mapping, 'default' or null")
        cfg.augment = dict(value) if isinstance(value, dict) else value
    if "task" in raw:
        task = raw["task"]
        if isinstance(task, str):
            task = {"name": task}
        if not isinstance(task, dict) or not isinstance(task.get("name"), str):
            raise DensemedError(f"{source}: task must be a task name or a mapping with a 'name', got {task!r}")
        cfg.task = dict(task)
    from densemed import validate

    validate.check(cfg, source)  # every key: types, ranges, names; model, loss and augment built
    if cfg.data.dims not in (2, 3):
        raise DensemedError(f"{source}: data.dims must be 2 or 3, got {cfg.data.dims}")
    if len(cfg.data.patch_size) != cfg.data.dims:
        raise DensemedError(
            f"{source}: data.patch_size {cfg.data.patch_size} must have {cfg.data.dims} entries (data.dims)"
        )
    if cfg.data.label_map is not None:
        cfg.data.label_map = {int(k): int(v) for k, v in cfg.data.label_map.items()}
    if cfg.data.layout not in LAYOUTS:
        raise DensemedError(f"{source}: data.layout must be one of {LAYOUTS}, got {cfg.data.layout!r}")
    if cfg.data.class_names is not None:
        names = cfg.data.class_names
        if isinstance(names, (list, tuple)):  # [background, anterior, ...]: names in class order
            names = dict(enumerate(names))
        try:
            cfg.data.class_names = {int(k): str(v) for k, v in names.items()}
        except (AttributeError, TypeError, ValueError):
            raise DensemedError(f"{source}: data.class_names must map class indices to names, got {names!r}") from None
    from densemed import tasks

    tasks.check(cfg, source)  # the task's options, typed by the task
    return cfg


def load_run(run: str | Path, recipe: str | Path | None, overrides: list[str]) -> Config:
    """The recipe to resume the run folder ``run`` with.

    That is its ``config.yaml`` (or ``recipe``), with ``overrides`` and ``train.out`` pointing at
    ``run``. A folder without ``config.yaml`` or ``last.pt`` raises one :class:`DensemedError` line naming it.
    """
    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise DensemedError(f"{run}: not a run folder (no config.yaml)")
    if not (run / "last.pt").is_file():
        raise DensemedError(f"{run}: no last.pt to resume from")
    return load(recipe or run / "config.yaml", [*overrides, f"train.out={run}"])


def merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """``over`` merged into a copy of ``base``: mappings merge key by key, other values replace."""
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe file with its ``defaults:`` resolved (relative to the file), cycles refused."""
    if not path.is_file():
        raise DensemedError(f"{path}: config file not found")
    if path.resolve() in seen:
        raise DensemedError(f"{path}: recipe includes itself through defaults")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise DensemedError(f"{path}: invalid YAML{where}") from None
    if not isinstance(raw, dict):
        raise DensemedError(f"{path}: a recipe must be a mapping of sections, got {type(raw).__name__}")
    includes = raw.pop("defaults", None) or []
    if isinstance(includes, str):
        includes = [includes]
    if not isinstance(includes, list):
        raise DensemedError(f"{path}: defaults must be a list of recipe files")
    base: dict[str, Any] = {}
    for inc in includes:
        base = merge(base, _read_yaml(path.parent / str(inc), (*seen, path.resolve())))
    return merge(base, raw)


def apply_overrides(raw: dict[str, Any], overrides: list[str], source: str = "--set") -> dict[str, Any]:
    """Apply ``key.sub=value`` strings (values parsed as YAML) to a nested dict, in place."""
    for item in overrides:
        if "=" not in item:
            raise DensemedError(f"{source}: expected key=value, got {item!r}")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text != "" else None
        except yaml.YAMLError:
            value = text
        parts = key.strip().split(".")
        node = raw
        for part in parts[:-1]:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]
            if not isinstance(node, dict):
                raise DensemedError(f"{source}: {key!r} goes inside a value that is not a section")
        node[parts[-1]] = value
    return raw


def load(path: PathType | None, overrides: list[str] | None = None) -> Config:
    """Load a YAML recipe (with its ``defaults:``; the defaults when ``path`` is None) and apply overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        raw = _read_yaml(path)
    apply_overrides(raw, overrides or [])
    return from_dict(raw, str(path) if path else "--set")


def save(cfg: Config, path: PathType) -> None:
    """Write the resolved recipe as YAML, atomically.

    A failing write (a full disk, a read-only folder) raises one :class:`DensemedError` line
    naming ``path`` (:func:`densemed.data.io.write_error`); a previous file stays as it was.
    """
    from densemed.data.io import write_text_atomic

    write_text_atomic(path, yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def data_home() -> Path:
    """``$DENSEMED_DATA``, else ``shared/data`` beside the source checkout (same from any directory).

    For a source checkout at ``.../main`` that is ``.../shared/data``; an installed package without
    a checkout falls back to ``../shared/data`` relative to the current directory.
    """
    env = os.environ.get("DENSEMED_DATA")
    if env:
        return Path(env).expanduser()
    beside = Path(__file__).resolve().parents[3] / "shared" / "data"
    return beside if beside.is_dir() else Path("../shared/data")


def resolve_data_root(root: str) -> Path:
    """An absolute folder, or a relative one that exists from here, else relative to :func:`data_home`."""
    if not root or not isinstance(root, str):
        raise DensemedError("data.root: no data folder given (set data.root or pass --data)")
    p = Path(root).expanduser()
    if p.is_dir() or p.is_absolute():
        return p
    alt = data_home() / root
    return alt if alt.is_dir() else p
