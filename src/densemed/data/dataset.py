"""Datasets: folders of image/label pairs, split, loaded once, sampled as patches.

A dataset folder holds ``images/`` and ``labels/`` with files of the same stem (PNG/TIFF for 2D,
NIfTI for 3D). Every case is read, checked, normalised and its derived targets computed once
(labels never change during training), then training draws random patches with a configurable
share centred on foreground. Randomness comes from ``numpy.random.default_rng([seed, epoch, i])``,
so sample ``i`` of epoch ``e`` is the same whatever the worker layout, and a resumed run sees
the same data as an uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch.utils.data import Dataset

from densemed.config import Config, DataConfig, resolve_data_root
from densemed.data.io import ImageMeta, is_supported, read_image, read_label, split_name
from densemed.data.normalize import normalize
from densemed.errors import DensemedError

if TYPE_CHECKING:
    from densemed.tasks.base import Task


@dataclass
class Case:
    """One loaded image with its label and derived targets, all channel-first numpy arrays."""

    name: str
    image: np.ndarray  # (C, *S) float32, normalised
    label: np.ndarray | None  # (*S) int64 class indices; None for super-resolution
    maps: dict[str, np.ndarray] = field(default_factory=dict)  # key -> (C, *S) float32 or int64
    meta: ImageMeta | None = None
    instances: np.ndarray | None = None  # (*S) int32 object ids (instance tasks: tuning, object scores)


def discover_pairs(root: Path, image_dir: str = "images", label_dir: str = "labels") -> list[tuple[str, Path, Path]]:
    """``(stem, image, label)`` for every image in ``root/image_dir``; a missing label is an error."""
    img_dir, lab_dir = root / image_dir, root / label_dir
    if not img_dir.is_dir():
        raise DensemedError(f"{img_dir}: image folder not found")
    images = sorted(p for p in img_dir.iterdir() if p.is_file() and is_supported(p))
    if not images:
        raise DensemedError(f"{img_dir}: no images found (PNG, TIFF or NIfTI expected)")
    if not lab_dir.is_dir():
        raise DensemedError(f"{lab_dir}: label folder not found")
    labels = {split_name(p)[0]: p for p in lab_dir.iterdir() if p.is_file() and is_supported(p)}
    pairs = []
    for img in images:
        stem = split_name(img)[0]
        if stem not in labels:
            raise DensemedError(f"{img}: no label file with stem {stem!r} in {lab_dir}")
        pairs.append((stem, img, labels[stem]))
    return pairs


def discover_images(root: Path, image_dir: str = "images") -> list[tuple[str, Path]]:
    """``(stem, image)`` for every image (super-resolution needs no labels)."""
    img_dir = root / image_dir
    if not img_dir.is_dir():
        raise DensemedError(f"{img_dir}: image folder not found")
    images = sorted(p for p in img_dir.iterdir() if p.is_file() and is_supported(p))
    if not images:
        raise DensemedError(f"{img_dir}: no images found (PNG, TIFF or NIfTI expected)")
    return [(split_name(p)[0], p) for p in images]


def map_labels(label: np.ndarray, cfg: DataConfig, path: Path | str) -> np.ndarray:
    """Raw label values -> class indices (see ``DataConfig.label_map``); checks the range."""
    values = np.unique(label)
    lut = cfg.label_map
    if lut is None and cfg.num_classes == 2 and set(values.tolist()) <= {0, 255}:
        lut = {0: 0, 255: 1}
    if lut is not None:
        unknown = [int(v) for v in values if int(v) not in lut]
        if unknown:
            raise DensemedError(f"{path}: label values {unknown[:5]} are not in data.label_map {lut}")
        out = np.zeros_like(label)
        for raw, cls in lut.items():
            out[label == raw] = cls
        label = out
        values = np.unique(label)
    bad = values[(values < 0) | (values >= cfg.num_classes)]
    if bad.size:
        raise DensemedError(
            f"{path}: label values {bad[:5].tolist()} are outside the {cfg.num_classes} configured classes "
            f"0..{cfg.num_classes - 1} (set data.num_classes or data.label_map)"
        )
    return label


def resample(
    arr: np.ndarray, spacing: Sequence[float] | None, target: Sequence[float] | None, order: int
) -> np.ndarray:
    """Resample ``(*S)`` or ``(C, *S)`` from ``spacing`` to ``target`` spacing (``order`` 0 for labels)."""
    if target is None or spacing is None:
        return arr
    from scipy import ndimage as ndi

    zoom = [float(s) / float(t) for s, t in zip(spacing, target)]
    if np.allclose(zoom, 1.0):
        return arr
    return (
        np.stack([ndi.zoom(a, zoom, order=order) for a in arr])
        if arr.ndim == len(zoom) + 1
        else ndi.zoom(arr, zoom, order=order)
    )


def target_maps(
    instances: np.ndarray, spacing: Sequence[float] | None, specs: dict[str, dict]
) -> dict[str, np.ndarray]:
    """Derived targets of one instance map, each ``(C, *S)`` float32 (``C = 1`` for scalar maps).

    ``specs`` is ``{batch key: {name: <densemed.targets name>, **params}}`` (a task's ``targets``).
    """
    if not specs:
        return {}
    from densemed import targets

    maps = {}
    for key, spec in specs.items():
        spec = dict(spec)
        arr = np.asarray(targets.build(spec.pop("name"), **spec)(instances, spacing), dtype=np.float32)
        maps[key] = arr[None] if arr.ndim == instances.ndim else arr
    return maps


def read_image_case(cfg: Config, image_path: Path) -> tuple[np.ndarray, ImageMeta]:
    """Read one image, resample it to ``data.target_spacing`` and normalise it: ``(C, *S)`` float32."""
    d = cfg.data
    image, meta = read_image(image_path, d.dims)
    if d.in_channels is not None and image.shape[0] != d.in_channels:
        raise DensemedError(f"{image_path}: image has {image.shape[0]} channels, data.in_channels is {d.in_channels}")
    image = resample(image, meta.spacing, d.target_spacing, order=1)
    return normalize(image, d.normalize, d.percentiles, d.window), meta


def read_label_case(cfg: Config, label_path: Path, image_shape: Sequence[int]) -> tuple[np.ndarray, ImageMeta]:
    """Read one label map (raw values), resampled like its image; its size must match the image's."""
    d = cfg.data
    raw, lmeta = read_label(label_path, d.dims)
    raw = resample(raw, lmeta.spacing, d.target_spacing, order=0)
    if raw.shape != tuple(image_shape):
        raise DensemedError(f"{label_path}: label size {raw.shape} differs from image size {tuple(image_shape)}")
    return raw, lmeta


def split(names: list[str], d: DataConfig) -> tuple[list[str], list[str]]:
    """Train/validation split by explicit lists, or by ``val_fraction`` with ``split_seed``."""
    if d.train_files or d.val_files:
        missing = [n for n in (d.train_files or []) + (d.val_files or []) if n not in names]
        if missing:
            raise DensemedError(f"data.train_files/val_files: unknown stems {missing[:5]}")
        val = list(d.val_files or [n for n in names if n not in (d.train_files or [])])
        train = list(d.train_files or [n for n in names if n not in val])
        return train, val
    order = np.random.default_rng(d.split_seed).permutation(len(names))
    n_val = max(1, round(d.val_fraction * len(names))) if d.val_fraction > 0 and len(names) > 1 else 0
    val = sorted(names[i] for i in order[:n_val])
    train = sorted(names[i] for i in order[n_val:])
    return train, val


def load_cases(cfg: Config, task: Task | None = None) -> tuple[list[Case], list[Case]]:
    """Load the train and validation cases of a recipe (synthetic when ``data.synthetic`` is set).

    The recipe's task (:mod:`densemed.tasks`) reads each case; cases whose images have another
    channel count than the first one are refused with a line naming the file.
    """
    from densemed import tasks

    task = task or tasks.build(cfg)
    d = cfg.data
    if d.synthetic is not None:
        from densemed.data.synthetic import make_dataset

        cases = [task.synthetic_case(f"synthetic_{i:03d}", img, inst)
                 for i, (img, inst) in enumerate(make_dataset(**d.synthetic))]
        train, val = split([c.name for c in cases], d)
        by = {c.name: c for c in cases}
        return [by[n] for n in train], [by[n] for n in val]
    root = resolve_data_root(d.root)
    if not root.is_dir():
        raise DensemedError(f"{root}: data folder not found (data.root; relative paths also try $DENSEMED_DATA)")
    if task.needs_labels():
        items = discover_pairs(root, d.image_dir, d.label_dir)
    else:
        items = [(s, p, None) for s, p in discover_images(root, d.image_dir)]
    train, val = split([s for s, _, _ in items], d)
    by = {s: (s, i, lab) for s, i, lab in items}
    first: tuple[int, Path] | None = None
    loaded: dict[str, Case] = {}
    for stem in train + val:
        case = task.load_case(*by[stem])
        path = by[stem][1]
        first = first or (case.image.shape[0], path)
        if case.image.shape[0] != first[0]:
            raise DensemedError(
                f"{path}: image has {case.image.shape[0]} channels, {first[1].name} has {first[0]}; "
                "all images of a dataset need the same channels"
            )
        loaded[stem] = case
    return [loaded[n] for n in train], [loaded[n] for n in val]


def _crop(arr: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Crop the trailing ``len(size)`` dims; zero-pad where the crop leaves the array."""
    spatial = arr.shape[-len(size):]
    src, dst, pads = [], [], False
    for st, sz, full in zip(start, size, spatial):
        lo, hi = max(st, 0), min(st + sz, full)
        src.append(slice(lo, hi))
        dst.append(slice(lo - st, hi - st))
        pads |= lo - st > 0 or st + sz - hi > 0
    lead = (slice(None),) * (arr.ndim - len(size))
    if not pads:
        return arr[lead + tuple(src)]
    out = np.zeros(arr.shape[: arr.ndim - len(size)] + tuple(size), arr.dtype)
    out[lead + tuple(dst)] = arr[lead + tuple(src)]
    return out


def sample_patch(
    case: Case, size: Sequence[int], fg_fraction: float, rng: np.random.Generator
) -> dict[str, torch.Tensor]:
    """A random patch of ``case`` as a sample dict (``image`` ``(C, *P)``, ``label`` ``(1, *P)``, maps)."""
    spatial = case.image.shape[1:]
    center = None
    if case.label is not None and rng.random() < fg_fraction:
        fg = case.maps.get("_fg_index")
        if fg is None:  # flat foreground indices, cached on the case the first time
            fg = np.flatnonzero(case.label > 0)
            case.maps["_fg_index"] = fg
        if fg.size:
            center = np.unravel_index(fg[rng.integers(fg.size)], spatial)
    start = []
    for d, (s, p) in enumerate(zip(spatial, size)):
        if s < p:  # smaller than the patch: centre it, the crop zero-pads
            start.append((s - p) // 2)
        elif center is None:
            start.append(int(rng.integers(0, s - p + 1)))
        else:
            start.append(min(max(int(center[d]) - p // 2, 0), s - p))
    return case_sample(case, start, size)


def case_sample(case: Case, start: Sequence[int], size: Sequence[int]) -> dict[str, torch.Tensor]:
    """The crop of ``case`` at ``start`` of ``size`` as tensors."""
    out = {"image": torch.from_numpy(np.ascontiguousarray(_crop(case.image, start, size)))}
    if case.label is not None:
        out["label"] = torch.from_numpy(np.ascontiguousarray(_crop(case.label, start, size)))[None]
    for key, arr in case.maps.items():
        if not key.startswith("_"):
            out[key] = torch.from_numpy(np.ascontiguousarray(_crop(arr, start, size)))
    return out


class PatchDataset(Dataset):
    """``samples_per_epoch`` random patches per epoch from a list of cases.

    Call :meth:`set_epoch` before each epoch; item ``i`` uses ``default_rng([seed, epoch, i])``.
    """

    def __init__(
        self, cases: list[Case], patch_size: Sequence[int], fg_fraction: float, samples: int, seed: int = 0
    ) -> None:
        if not cases:
            raise DensemedError("training split is empty: add images or lower data.val_fraction")
        self.cases, self.size, self.fg, self.samples, self.seed = cases, list(patch_size), fg_fraction, samples, seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose samples ``__getitem__`` returns."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        case = self.cases[int(rng.integers(len(self.cases)))]
        return sample_patch(case, self.size, self.fg, rng)


def fixed_patches(
    cases: list[Case], patch_size: Sequence[int], per_case: int, seed: int = 1234
) -> list[dict[str, torch.Tensor]]:
    """Deterministic validation patches (same every epoch), for the validation loss."""
    out = []
    for k, case in enumerate(cases):
        rng = np.random.default_rng([seed, k])
        out += [sample_patch(case, patch_size, 0.5, rng) for _ in range(per_case)]
    return out
