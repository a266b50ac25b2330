"""Typed training recipes: dataclass sections, YAML on disk, dotted overrides.

A recipe has sections ``data``, ``model``, ``loss``, ``augment``, ``train``, ``infer`` and a
``task`` (``segmentation`` or ``sr`` for super-resolution). ``data``, ``train`` and ``infer`` are
typed: an unknown key is rejected with the closest valid key suggested. ``model`` and ``loss`` hold
a ``name`` plus the keyword arguments of that network or loss (checked by its builder);
``augment`` is the dict given to :func:`densemed.augment.build`; a recipe without the section
gets :data:`densemed.augment.DEFAULT_AUGMENT`, and ``augment: null`` turns augmentation off.

Overrides use dotted keys with YAML values: ``--set train.epochs=3 data.patch_size=[128,128]``.
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
    image_dir: str = "images"
    label_dir: str = "labels"
    #: raw label value -> class index; default maps {0, 255} to {0, 1} and keeps other values.
    label_map: dict[int, int] | None = None
    #: label files hold instance ids (class = id > 0); required by instance targets.
    instances: bool = False
    num_classes: int = 2
    in_channels: int | None = None  # default: read from the first image
    patch_size: list[int] = field(default_factory=lambda: [256, 256])
    foreground_fraction: float = 0.5
    normalize: str = "zscore"  # zscore | percentile | window | none
    window: list[float] | None = None  # CT window [lo, hi] for normalize=window
    percentiles: list[float] = field(default_factory=lambda: [0.5, 99.5])
    target_spacing: list[float] | None = None  # resample volumes to this spacing (mm) when set
    val_fraction: float = 0.2
    split_seed: int = 0
    train_files: list[str] | None = None  # explicit split by file stem
    val_files: list[str] | None = None
    batch_size: int = 4
    samples_per_epoch: int = 64
    val_patches_per_image: int = 2
    num_workers: int = 0
    #: derived per-image targets: {batch_key: {name: <densemed.targets name>, **params}}
    targets: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: super-resolution: {factor: int, axis: int} (task: sr)
    sr: dict[str, Any] = field(default_factory=dict)
    #: synthetic demo data instead of files: {n: 40, size: 128, seed: 0}
    synthetic: dict[str, Any] | None = None


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
    amp: bool = False
    threads: int | None = None
    grad_clip: float | None = None
    val_every: int = 1
    #: super-resolution: PSNR on whole validation volumes (slow on a CPU) instead of on the
    #: fixed validation patches
    val_full_images: bool = False
    progress: bool = True


@dataclass
class InferConfig:
    """Sliding-window prediction."""

    overlap: float = 0.5
    tta: bool = False
    sw_batch_size: int = 4
    window: list[int] | None = None  # default: data.patch_size
    blend: str = "gaussian"  # gaussian | constant
    #: instance post-processing for ``predict --instances``: {method: ..., **params}
    instances: dict[str, Any] | None = None


def _default_augment() -> dict[str, Any]:
    import copy

    from densemed.augment.compose import DEFAULT_AUGMENT

    return copy.deepcopy(DEFAULT_AUGMENT)


@dataclass
class Config:
    """A whole recipe."""

    task: str = "segmentation"
    data: DataConfig = field(default_factory=DataConfig)
    model: dict[str, Any] = field(default_factory=lambda: {"name": "unet"})
    loss: dict[str, Any] = field(default_factory=lambda: {"name": "dice_ce"})
    augment: dict[str, Any] | None = field(default_factory=_default_augment)
    train: TrainConfig = field(default_factory=TrainConfig)
    infer: InferConfig = field(default_factory=InferConfig)

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dict (for YAML and checkpoints)."""
        return asdict(self)


_TYPED = {"data": DataConfig, "train": TrainConfig, "infer": InferConfig}
_FREE = ("model", "loss", "augment")
TASKS = ("segmentation", "sr")


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
    top = [f.name for f in dataclasses.fields(Config)]
    for key in raw:
        if key not in top:
            raise DensemedError(f"{source}: unknown config key {key!r}{closest(key, top, cutoff=0.5)}")
    cfg = Config()
    for name, cls in _TYPED.items():
        section = raw.get(name) or {}
        if not isinstance(section, dict):
            raise DensemedError(f"{source}: section {name!r} must be a mapping")
        valid = [f.name for f in dataclasses.fields(cls)]
        for key in section:
            if key not in valid:
                raise DensemedError(
                    f"{source}: unknown config key '{name}.{key}'{closest(key, valid, cutoff=0.5)}"
                )
        setattr(cfg, name, cls(**{k: _coerce(cls, k, v, f"{source}: {name}.{k}") for k, v in section.items()}))
    for name in _FREE:
        if name in raw:
            value = raw[name]
            if value is not None and not isinstance(value, dict):
                raise DensemedError(f"{source}: section {name!r} must be a mapping or null")
            if name != "augment" and value is not None and "name" not in value:
                value = {**getattr(cfg, name), **value}  # keys for the default network / loss
            if name != "augment" and value is None:
                raise DensemedError(f"{source}: section {name!r} cannot be null")
            setattr(cfg, name, dict(value) if value is not None else None)
    if "task" in raw:
        cfg.task = raw["task"]
    if cfg.task not in TASKS:
        raise DensemedError(f"{source}: task must be one of {TASKS}, got {cfg.task!r}")
    if cfg.data.dims not in (2, 3):
        raise DensemedError(f"{source}: data.dims must be 2 or 3, got {cfg.data.dims}")
    if len(cfg.data.patch_size) != cfg.data.dims:
        raise DensemedError(
            f"{source}: data.patch_size {cfg.data.patch_size} must have {cfg.data.dims} entries (data.dims)"
        )
    if cfg.data.label_map is not None:
        cfg.data.label_map = {int(k): int(v) for k, v in cfg.data.label_map.items()}
    return cfg


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
    """Load a YAML recipe (or the defaults when ``path`` is None) and apply overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise DensemedError(f"{path}: config file not found")
        try:
            raw = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1}" if mark is not None else ""
            raise DensemedError(f"{path}: invalid YAML{where}") from None
    apply_overrides(raw, overrides or [])
    return from_dict(raw, str(path) if path else "--set")


def save(cfg: Config, path: PathType) -> None:
    """Write the resolved recipe as YAML."""
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def data_home() -> Path:
    """``$DENSEMED_DATA``, else ``../shared/data`` (relative to the current directory)."""
    return Path(os.environ.get("DENSEMED_DATA", "../shared/data"))


def resolve_data_root(root: str) -> Path:
    """An absolute or cwd-relative folder if it exists, else relative to :func:`data_home`."""
    if not root:
        raise DensemedError("data.root: no data folder given (set data.root or pass --data)")
    p = Path(root).expanduser()
    if p.is_dir() or p.is_absolute():
        return p
    alt = data_home() / root
    return alt if alt.is_dir() else p
