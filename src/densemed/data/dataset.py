"""Datasets: folders of image/label pairs, split, loaded once, sampled as patches.

A dataset folder holds ``images/`` and ``labels/`` with files of the same stem (PNG/TIFF for 2D,
NIfTI for 3D), or is an nnU-Net v2 raw or MSD dataset (``data.layout``, detected by default;
:mod:`densemed.data.layouts`): nnU-Net cases with one file per channel are stacked into channels,
and the class names of a ``dataset.json`` go into ``data.class_names`` (and so into the run's
``config.yaml`` and every checkpoint). Every case is read, checked, normalised and its derived
targets computed once (labels never change during training) into an on-disk cache that training
reads through memory maps, at most ``data.cache_mb`` open at a time (:mod:`densemed.data.cache`),
then training draws random patches with a configurable share centred on foreground. Randomness
comes from ``numpy.random.default_rng([seed, epoch, i])``, so sample ``i`` of epoch ``e`` is the
same whatever the worker layout, and a resumed run sees the same data as an uninterrupted one.
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
from densemed.data.cache import cached_loader
from densemed.data.io import ImageMeta, is_supported, read_label, split_name
from densemed.data.layouts import (
    CaseFiles,
    DatasetIndex,
    detect_layout,
    raise_first_fatal,
    read_case_image,
    scan,
)
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
    pool: tuple[str, float] | None = None  # (folder, share of patches) for cases of data.extra_roots


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
    """Resample ``(*S)`` or ``(C, *S)`` from ``spacing`` to ``target`` spacing (``order`` 0 for labels).

    An image without a spacing (PNG, TIFF, an array given none) counts one unit per pixel, so on 2D
    pictures ``data.target_spacing: [2, 2]`` halves each side (large objects, e.g. GlaS glands, then
    fit the network's field of view; :mod:`densemed.plan`).
    """
    if target is None:
        return arr
    if spacing is None:
        spacing = [1.0] * len(target)
    from scipy import ndimage as ndi

    zoom = [float(s) / float(t) for s, t in zip(spacing, target)]
    if np.allclose(zoom, 1.0):
        return arr
    # pixel centres matched (grid_mode), like the bilinear / nearest resizing back to the input grid
    # at prediction time (torch's align_corners=False, infer.postprocess.resize_labels)
    kw = {"order": order, "grid_mode": True, "mode": "nearest"}
    return np.stack([ndi.zoom(a, zoom, **kw) for a in arr]) if arr.ndim == len(zoom) + 1 else ndi.zoom(arr, zoom, **kw)


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


def check_finite(image: np.ndarray, paths: Sequence[Path]) -> None:
    """Refuse NaN or infinite intensities, naming the channel file that holds them.

    The same check and message as ``densemed check`` (kind ``nonfinite``), run on the array that
    training reads anyway. ``paths`` are the case's files in channel order, each holding an equal
    share of the channels (nnU-Net: one channel per file).
    """
    bad = ~np.isfinite(image)
    if not bad.any():
        return
    per_file = max(1, image.shape[0] // len(paths))
    channel = int(np.flatnonzero(bad.reshape(image.shape[0], -1).any(axis=1))[0])
    block = image[channel // per_file * per_file : (channel // per_file + 1) * per_file]
    n_nan, n_inf = int(np.isnan(block).sum()), int(np.isinf(block).sum())
    raise DensemedError(f"{paths[min(channel // per_file, len(paths) - 1)]}: {n_nan} NaN and {n_inf} infinite "
                        "intensities")


def read_image_case(cfg: Config, image_path: Path | Sequence[Path]) -> tuple[np.ndarray, ImageMeta]:
    """Read one image, resample it to ``data.target_spacing`` and normalise it: ``(C, *S)`` float32.

    ``image_path`` is one file, or a case's files in channel order (nnU-Net ``_0000``, ``_0001``,
    ...), stacked along channels (:func:`densemed.data.layouts.read_case_image`). NaN or infinite
    intensities are refused with the file named.
    """
    d = cfg.data
    paths = [Path(image_path)] if isinstance(image_path, (str, Path)) else [Path(p) for p in image_path]
    image, meta = read_case_image(paths, d.dims)
    if d.in_channels is not None and image.shape[0] != d.in_channels:
        raise DensemedError(f"{paths[0]}: image has {image.shape[0]} channels, data.in_channels is {d.in_channels}")
    check_finite(image, paths)
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
        return [by[n] for n in train] + extra_cases(cfg, task, cases[0].image.shape[0]), [by[n] for n in val]
    root = resolve_data_root(d.root)
    if not root.is_dir():
        raise DensemedError(f"{root}: data folder not found (data.root; relative paths also try $DENSEMED_DATA)")
    index = discover_cases(root, d, task.needs_labels())
    # single-file cases are passed as one path, as tasks always received them; several channel files as a list
    items = [(c.stem, c.images[0] if len(c.images) == 1 else list(c.images), c.label) for c in index.cases]
    train, val = split([s for s, _, _ in items], d)
    by = {s: (s, i, lab) for s, i, lab in items}
    first: tuple[int, Path] | None = None
    loaded: dict[str, Case] = {}
    load = cached_loader(cfg, task)  # the task's load_case through the on-disk cache (densemed.data.cache)
    for stem in train + val:
        case = load(*by[stem])
        path = by[stem][1][0] if isinstance(by[stem][1], list) else by[stem][1]
        if first is None:
            first = (case.image.shape[0], path)
            declared = index.channel_names
            if declared and len(declared) != first[0]:  # `densemed check` kind "channels"
                raise DensemedError(f"{root / 'dataset.json'}: declares {len(declared)} channels "
                                    f"({', '.join(declared.values())}), but {path.name} has {first[0]}")
        if case.image.shape[0] != first[0]:
            raise DensemedError(
                f"{path}: image has {case.image.shape[0]} channels, {first[1].name} has {first[0]}; "
                "all images of a dataset need the same channels"
            )
        loaded[stem] = case
    if d.class_names is None and index.class_names and sorted(index.class_names) == list(range(d.num_classes)):
        d.class_names = dict(index.class_names)  # saved with the recipe: config.yaml and every checkpoint
    extra = extra_cases(cfg, task, first[0] if first else None)
    return [loaded[n] for n in train] + extra, [loaded[n] for n in val]


def extra_cases(cfg: Config, task: Task, channels: int | None) -> list[Case]:
    """Training cases of ``data.extra_roots`` (every case of each folder, no split), tagged with their share.

    Each entry is ``{root: DIR, share: S}`` (optional ``image_dir``/``label_dir``, default ``images``/
    ``labels``, the layout ``densemed synth generate`` writes); the folder's cases are read by the
    recipe's task like the real ones. :class:`PatchDataset` draws a training patch from folder ``k``
    with probability ``S_k`` and from the recipe's own training split otherwise, so a batch holds
    that share on average. Shares are in ``(0, 1]`` and add up to at most 1.
    """
    extras = cfg.data.extra_roots
    if not extras:
        return []
    if not isinstance(extras, list):
        raise DensemedError("data.extra_roots: must be a list of {root: DIR, share: S}")
    out: list[Case] = []
    total = 0.0
    load = cached_loader(cfg, task)  # through the on-disk cache, as the recipe's own cases
    for k, spec in enumerate(extras):
        key = f"data.extra_roots[{k}]"
        if not isinstance(spec, dict) or "root" not in spec or "share" not in spec:
            raise DensemedError(f"{key}: must be a mapping {{root: DIR, share: S}}, got {spec!r}")
        unknown = sorted(set(spec) - {"root", "share", "image_dir", "label_dir"})
        if unknown:
            raise DensemedError(f"{key}: unknown keys {unknown} (use root, share, image_dir, label_dir)")
        share = spec["share"]
        if isinstance(share, bool) or not isinstance(share, (int, float)) or not 0 < share <= 1:
            raise DensemedError(f"{key}.share: must be a number in (0, 1], got {share!r}")
        total += float(share)
        root = resolve_data_root(str(spec["root"]))
        if not root.is_dir():
            raise DensemedError(f"{key}.root: {root}: folder not found")
        image_dir = str(spec.get("image_dir", "images"))
        if task.needs_labels():
            items = discover_pairs(root, image_dir, str(spec.get("label_dir", "labels")))
        else:
            items = [(s, p, None) for s, p in discover_images(root, image_dir)]
        for stem, image, label in items:
            case = load(f"{root.name}/{stem}", image, label)
            if channels is not None and case.image.shape[0] != channels:
                raise DensemedError(f"{image}: image has {case.image.shape[0]} channels, the recipe's images have "
                                    f"{channels}")
            case.pool = (str(root), float(share))
            out.append(case)
    if total > 1.0 + 1e-9:
        raise DensemedError(f"data.extra_roots: shares add up to {total:g}; they must add up to at most 1")
    return out


def _pools(cases: list[Case]) -> list[tuple[float, list[Case]]] | None:
    """``[(share, cases)]``: one pool per extra folder, the recipe's own cases take the rest; None without extras."""
    extra: dict[str, tuple[float, list[Case]]] = {}
    own = []
    for c in cases:
        if c.pool is None:
            own.append(c)
        else:
            extra.setdefault(c.pool[0], (c.pool[1], []))[1].append(c)
    if not extra:
        return None
    pools = list(extra.values())
    rest = 1.0 - sum(s for s, _ in pools)
    if own and rest > 1e-9:
        pools.insert(0, (rest, own))
    return pools


def resolve_layout(root: Path, d: DataConfig) -> str:
    """``data.layout``, or the detected one; a folder without ``dataset.json`` is the ``folders`` layout.

    Detection (:func:`densemed.data.layouts.detect_layout`) looks for ``images/``; a recipe with
    another ``data.image_dir`` and no ``dataset.json`` is taken as ``folders`` too, so its reader
    names the missing folder as before layouts existed.
    """
    if d.layout != "auto":
        return d.layout
    if not (root / "dataset.json").is_file() and not (root / "imagesTr").is_dir():
        return "folders"
    try:
        return detect_layout(root)
    except DensemedError:
        if (root / d.image_dir).is_dir():
            return "folders"
        raise


def discover_cases(root: Path, d: DataConfig, labelled: bool = True) -> DatasetIndex:
    """The training cases of the dataset at ``root`` in the recipe's layout (``data.layout``).

    Like :func:`densemed.data.layouts.discover` (the first problem that would break training is
    raised, with the count of the others and a pointer to ``densemed check``), with the messages
    of the ``folders`` layout unchanged. ``labelled=False`` (tasks that train on images alone)
    lists the images of a ``folders`` dataset without looking for labels.
    """
    layout = resolve_layout(root, d)
    if layout == "folders" and not labelled:
        cases = [CaseFiles(s, [p], None) for s, p in discover_images(root, d.image_dir)]
        return DatasetIndex(root, "folders", "train", cases)
    img_dir = root / d.image_dir
    if layout == "folders" and img_dir.is_dir() and not any(
            p.is_file() and is_supported(p) and not p.name.startswith(".") for p in img_dir.iterdir()):
        raise DensemedError(f"{img_dir}: no images found (PNG, TIFF or NIfTI expected)")
    index = scan(root, layout, "train", d.image_dir, d.label_dir)
    raise_first_fatal(index.issues, f"densemed check {root}")
    if not index.cases:
        raise DensemedError(f"{root}: no training cases found ({index.layout} layout)")
    return index


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
    """The crop of ``case`` at ``start`` of ``size`` as tensors.

    Always copies: a crop covering a whole array would otherwise be a view that keeps a cached
    case's memory map (and its file descriptor) open for as long as the patch lives.
    """
    out = {"image": torch.from_numpy(np.array(_crop(case.image, start, size), order="C"))}
    if case.label is not None:
        out["label"] = torch.from_numpy(np.array(_crop(case.label, start, size), order="C"))[None]
    for key, arr in case.maps.items():
        if not key.startswith("_"):
            out[key] = torch.from_numpy(np.array(_crop(arr, start, size), order="C"))
    return out


class PatchDataset(Dataset):
    """``samples_per_epoch`` random patches per epoch from a list of cases.

    Call :meth:`set_epoch` before each epoch; item ``i`` uses ``default_rng([seed, epoch, i])``.
    Cases of ``data.extra_roots`` (``case.pool`` set) are drawn by their folder's share.
    """

    def __init__(
        self, cases: list[Case], patch_size: Sequence[int], fg_fraction: float, samples: int, seed: int = 0
    ) -> None:
        if not cases:
            raise DensemedError("training split is empty: add images or lower data.val_fraction")
        self.cases, self.size, self.fg, self.samples, self.seed = cases, list(patch_size), fg_fraction, samples, seed
        self.epoch = 0
        self.pools = _pools(cases)  # data.extra_roots: folders drawn by their share

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose samples ``__getitem__`` returns."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.samples

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, i])
        cases = self.cases
        if self.pools is not None:  # first the folder, by its share (no extra draw without extra_roots)
            u, acc, total = rng.random(), 0.0, sum(s for s, _ in self.pools)
            for share, pool in self.pools:
                acc += share / total
                cases = pool  # the last pool when rounding leaves u >= acc
                if u < acc:
                    break
        case = cases[int(rng.integers(len(cases)))]
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
