"""``densemed plan``: a training recipe derived from a dataset's fingerprint and the user's time budget.

The idea is nnU-Net's (Isensee et al., "nnU-Net: a self-configuring method for deep learning-based
biomedical image segmentation", Nature Methods 18, 2021): a few properties of a dataset — its
*fingerprint* — decide most of a good recipe. nnU-Net plans for semantic segmentation on a GPU with a
fixed number of epochs; this planner also plans instance tasks and sizes the network to the user's
time budget on the user's machine, from a measured training step.

Fingerprint (:func:`fingerprint`, a bounded sample of at most ``max_cases`` cases, evenly spread):
dimensionality, channels, image sizes, voxel spacings and their anisotropy ``max(s) / min(s)`` of the
median spacing, intensity statistics (percentiles 0.5 / 99.5, mean, standard deviation, whether the
values are integers; *CT-like* means integer values with the 0.5-th percentile at or below -900, air
being -1000 HU), class frequencies, positional classes and, for instance labels, object sizes and the
fraction of objects that touch another.

* Label kind: instance ids when, in at least 80 % of the sampled cases, the non-zero values are exactly
  ``1..N``, ``N`` varies between cases, the median ``N`` is at least 3 and at least 80 % of the ids are
  one connected component; otherwise class labels. A ``folders`` dataset with class labels and an
  ``instances/`` folder beside them (GlaS here) is planned on ``instances/``.
* Positional classes: for every pair of foreground classes and every axis, the difference of the two
  class centroids (voxels) per case; the axis is *positional* when the difference has the same sign in
  at least 90 % of the cases holding both classes and ``|mean| >= 2 std`` and ``|mean| >= 2`` voxels.
  A flip on that axis would swap the classes' meaning (left/right, anterior/posterior), so training
  flips, quarter turns and test-time flips on it are off. A lone class that always sits on one side is
  not detected (a documented limit).
* Touching objects: an object touches another when a voxel of it has a voxel of another id among its
  ``3^d - 1`` neighbours (computed with a maximum and a minimum filter of the id map).

Decisions (:func:`plan`, each returned with its reason):

* 2D or 3D: the data's dimensionality.
* Target spacing: none when all sampled cases share one spacing (within 1 %); the median spacing when
  they differ and the data are isotropic (anisotropy < 3); kept (no resampling) when anisotropic,
  because resampling thick slices to the fine spacing invents slices and the reverse discards detail.
* Image scale (2D instance data): when the 95th-percentile object's equivalent diameter exceeds
  ``OBJECT_SPAN`` (128 px, half a 256-px patch), the images are shrunk by powers of 2
  (``data.target_spacing``; pictures without a spacing count one unit per pixel) until it does not,
  as long as the 5th-percentile object keeps ``MIN_OBJECT_SPAN`` (8) px: the network then sees the
  largest objects whole with the stroma around them. GlaS (glands up to ~250 px) is shrunk 2x;
  nuclei (DSB, ~46 px) are not. Predictions are made on the shrunk grid, where post-processing
  options are tuned, and resized back to the input (:func:`densemed.infer.postprocess.resize_labels`).
* Patch: the median image size (after shrinking) rounded down to multiples of ``2^depth`` (at least
  ``2^depth``); while it holds more than ``PATCH_VOXELS[dims]`` voxels, the axis with the largest
  physical extent (size x spacing) loses ``2^depth`` voxels, so anisotropic volumes get anisotropic
  patches covering a similar extent in millimetres (nnU-Net's rule).
* Batch: ``BATCH_VOXELS / patch voxels``, clipped to [2, 16].
* Normalisation: CT-like -> a fixed window at the foreground's 0.5 / 99.5 percentiles (nnU-Net's CT
  scheme; densemed's window then scales to [0, 1]); otherwise a per-image z-score.
* Mixed precision: on a CPU with bf16 units (:func:`densemed.precision.cpu_has_bf16`) the width-16
  step is timed in float32 and under bf16 autocast; ``train.amp: auto`` when bf16 takes at most
  ``AMP_GAIN`` (0.8) of the float32 time, and the widths below are then timed under bf16. On other CPUs
  float32 (bf16 would run emulated: a U-Net step measured 4x slower on an AVX2 CPU).
  With bf16, ``train.channels_last: true`` too (oneDNN's bf16 convolutions run channels-last natively).
* Network and width: a U-Net (depth 4 in 2D, 3 in 3D, batch norm); base widths 16, then 32 or 8, are timed
  on this machine (:func:`measure_step`, three steps after one warm-up, cached): width 16 when it gets
  ``MIN_STEPS`` (1,000) optimiser steps within 90 % of the budget (8 when it does not), 32 when that gets
  ``WIDE_STEPS`` (4,000): measured at 30 min on a 2-core CPU, width 32 with ~2,200-3,300 steps scored below
  width 16 with ~4,500 on DSB nuclei and the hippocampus, so a wider net needs the steps to use it.
* Loss: ``dice_ce`` for classes; for instance labels whose objects touch (>= ``TOUCH_FRACTION`` of them)
  the instance task with 1-px seams between touching objects (``task.seams``,
  :mod:`densemed.targets.seams`), the U-Net border weight map (Ronneberger et al. 2015, Eq. 2, w0 = 10,
  sigma = 5 px) and ``weighted_ce``, post-processed by the distance-transform watershed, its markers
  (h-maxima or the network's confident cores) ``auto``; instance labels without touching objects: the
  instance task with ``dice_ce`` and connected components. Their post-processing parameters
  (``markers``, ``core``, ``h``, ``threshold``, ``min_size``, ``seams``) are ``auto``: chosen on the
  validation images at the end of training and stored in the checkpoint.
* Augmentation: flips on the non-positional axes, quarter turns when no axis is positional and the data
  are not anisotropic, a small affine (rotation 10 degrees, scale 0.9-1.1) unless anisotropic, and the
  intensity transforms of the hand-written hippocampus recipes.
* Validation cadence: whole-image validation costs about ``n_val x (windows + 2) x t_step / (3 batch)``
  (forward only is about a third of a training step); ``val_every`` epochs is chosen so that this is
  about 10 % of training plus validation.
* ``train.time_budget_s``: the budget; ``train.epochs`` twice the estimated number of epochs, so that
  the budget, not the epoch count, ends the run (the loop fits the schedule to the measured speed).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from densemed.errors import DensemedError
from densemed.precision import amp_dtype
from densemed.typing import PathType

#: voxels of the largest patch per dimensionality (CPU-sized: 256^2 in 2D, about 48^3 in 3D)
PATCH_VOXELS = {2: 256 * 256, 3: 48 * 48 * 48}
#: voxels of one batch (patch voxels x batch size), the hand-written recipes' 4 x 256^2
BATCH_VOXELS = 4 * 256 * 256
#: fewest optimiser steps a width must get within the budget to be chosen
MIN_STEPS = 1000
#: fewest steps for the wider network (base width 32): at 30 min on a 2-core CPU width 32 (~2,200 steps on
#: DSB, ~3,300 on the hippocampus) scored below width 16 (~4,500 steps) on both (README, issue 17)
WIDE_STEPS = 4000
#: fraction of objects touching another above which the instance recipe separates touching objects
TOUCH_FRACTION = 0.1
#: distance (voxels, chessboard) within which two objects count as near, reported in the fingerprint: 2 sigma
#: of the border weight map, where its term w0 exp(-(d1 + d2)^2 / 2 sigma^2) is still 1.35 of w0 = 10
NEAR_GAP = 10
#: anisotropy (max / min spacing) from which spacing is kept and patches are anisotropic
ANISOTROPY = 3.0
DEPTH = {2: 4, 3: 3}
#: equivalent diameter (px) that the 95th-percentile object of 2D instance data may span on the
#: network's grid: half the side of a 256-px patch, so the largest objects are seen whole with their
#: surroundings; larger ones shrink the images by powers of 2 (``data.target_spacing``)
OBJECT_SPAN = 128
#: equivalent diameter (px) that the 5th-percentile object must keep after shrinking
MIN_OBJECT_SPAN = 8

#: ``(model, dims, in_channels, out_channels, patch, batch, amp) -> seconds`` of one training step
StepTimer = Callable[[dict[str, Any], int, int, int, list[int], int, bool], float]
#: bf16 is used when its step takes at most this share of the float32 step
AMP_GAIN = 0.8


@dataclass
class Fingerprint:
    """What :func:`fingerprint` found in a dataset (see the module docstring for each rule)."""

    root: str
    layout: str
    label_dir: str
    n_cases: int
    n_sampled: int
    dims: int
    channels: int
    sizes: list[list[int]]
    median_size: list[int]
    spacings: list[list[float]]
    median_spacing: list[float]
    anisotropy: float
    intensity: dict[str, float]
    ct_like: bool
    label_kind: str  # "classes" | "instances"
    class_values: list[int]
    class_fractions: dict[int, float]
    class_names: dict[int, str] | None = None
    positional_axes: list[int] = field(default_factory=list)
    positional_detail: list[str] = field(default_factory=list)
    objects_per_case: float = 0.0
    object_sizes: dict[str, float] = field(default_factory=dict)
    touching_fraction: float = 0.0
    #: fraction of objects with another object within ``NEAR_GAP`` voxels (touching ones included)
    near_fraction: float = 0.0

    def summary(self) -> list[str]:
        """Human-readable lines, one per property."""
        sz = "x".join(map(str, self.median_size))
        sp = "x".join(f"{s:g}" for s in self.median_spacing)
        lines = [
            f"data: {self.root} ({self.layout} layout, labels in {self.label_dir}/), {self.n_cases} cases, "
            f"{self.n_sampled} sampled",
            f"images: {self.dims}D, {self.channels} channel(s), median size {sz}, median spacing {sp} "
            f"(anisotropy {self.anisotropy:.2f})",
            f"intensity: p0.5 {self.intensity['p0.5']:g}, p99.5 {self.intensity['p99.5']:g}, mean "
            f"{self.intensity['mean']:.4g}, std {self.intensity['std']:.4g}, "
            f"{'integer' if self.intensity['integer'] else 'real'} values, CT-like: {'yes' if self.ct_like else 'no'}",
        ]
        freq = ", ".join(f"{v}: {f:.3f}" for v, f in self.class_fractions.items())
        lines.append(f"labels: {self.label_kind}; voxel fraction by label value: {freq}")
        if self.label_kind == "instances":
            s = self.object_sizes
            lines.append(f"objects: {self.objects_per_case:g} per case (median), size median {s['median']:g} "
                         f"(p5 {s['p5']:g}, p95 {s['p95']:g}) voxels, "
                         f"{100 * self.touching_fraction:.0f}% touch another, {100 * self.near_fraction:.0f}% "
                         f"have another within {NEAR_GAP} voxels")
        pos = "; ".join(self.positional_detail) if self.positional_axes else "none"
        lines.append(f"positional axes: {pos}")
        return lines


# -- fingerprint --------------------------------------------------------------------------------------


def _sample(n: int, k: int) -> list[int]:
    """``k`` indices evenly spread over ``range(n)`` (all when ``n <= k``)."""
    if n <= k:
        return list(range(n))
    return sorted({int(round(i)) for i in np.linspace(0, n - 1, k)})


def _is_instance_map(lab: np.ndarray) -> tuple[bool, int, float]:
    """(values are exactly 1..N, N, fraction of ids that form one connected component)."""
    from scipy import ndimage

    ids = np.unique(lab)
    ids = ids[ids != 0]
    n = len(ids)
    if n == 0:
        return False, 0, 0.0
    consecutive = bool(ids[0] == 1 and ids[-1] == n)
    if n > 200:  # enough evidence on a subset; labelling every id of a large map costs seconds
        ids = ids[:: int(math.ceil(n / 200))]
    objs = ndimage.find_objects(lab.astype(np.int64))
    single = 0
    for v in ids:
        sl = objs[int(v) - 1] if int(v) - 1 < len(objs) else None
        if sl is None:
            continue
        _, k = ndimage.label(lab[sl] == v, structure=np.ones((3,) * lab.ndim))
        single += k == 1
    return consecutive, n, single / len(ids)


def _touching(lab: np.ndarray, reach: int = 1) -> tuple[int, int]:
    """(objects with another object within ``reach`` voxels, objects) of an instance id map.

    ``reach`` 1 counts touching objects (8/26-neighbourhood); distances are chessboard, in voxels.
    """
    from densemed.targets.seams import separate

    fg = lab > 0
    near = fg & (separate(lab, reach) == 0)  # the voxels a seam of width ``reach`` would clear
    return len(np.unique(lab[near])), len(np.unique(lab[fg]))


def _positional(centroids: list[dict[int, np.ndarray]], dims: int) -> tuple[list[int], list[str]]:
    """Axes along which some pair of classes keeps a consistent order (module docstring rule)."""
    classes = sorted({c for cs in centroids for c in cs})
    axes, detail = [], []
    for ax in range(dims):
        for i, a in enumerate(classes):
            for b in classes[i + 1:]:
                d = np.array([cs[a][ax] - cs[b][ax] for cs in centroids if a in cs and b in cs])
                if len(d) < 2:
                    continue
                mean, std = float(d.mean()), float(d.std())
                same_sign = max((d > 0).mean(), (d < 0).mean())
                if same_sign >= 0.9 and abs(mean) >= 2 * std and abs(mean) >= 2.0:
                    if ax not in axes:
                        axes.append(ax)
                        detail.append(f"axis {ax}: class {a} - class {b} centroid {mean:+.1f} +- {std:.1f} voxels "
                                      f"({100 * same_sign:.0f}% of {len(d)} cases same side)")
    return axes, detail


def fingerprint(root: PathType, max_cases: int = 16, layout: str = "auto", seed: int = 0) -> Fingerprint:
    """Fingerprint the labelled training cases of the dataset at ``root`` from a bounded sample.

    Args:
        root: dataset folder (densemed ``images/`` + ``labels/``, nnU-Net v2 raw or MSD).
        max_cases: cases read at most (evenly spread over the sorted case list), so it runs in seconds.
        layout: dataset layout (``auto`` detects it).
        seed: seed of the intensity subsampling.

    Returns:
        The :class:`Fingerprint`.

    Raises:
        DensemedError: no dataset there, images without labels, or no foreground in the sample.

    Example:
        >>> import tempfile, pathlib, numpy as np
        >>> from densemed.data.io import write_label
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for i in range(2):
        ...     lab = np.zeros((16, 16), np.uint8); lab[4:8, 4:8] = 1
        ...     _ = write_label(d / "images" / f"c{i}.png", (lab * 200 + 20).astype(np.uint8))
        ...     _ = write_label(d / "labels" / f"c{i}.png", lab)
        >>> print(fingerprint(d).dims)
        2
    """
    from densemed.data.io import read_label
    from densemed.data.layouts import discover, read_case_image

    root = Path(root)
    label_dir = "labels"
    try:
        index = discover(root, layout)
    except DensemedError as exc:
        raise DensemedError(f"{exc} (densemed plan needs a label for every training image)") from None
    picks = _sample(len(index.cases), max_cases)
    rng = np.random.default_rng(seed)
    labels, images, metas = [], [], []
    for i in picks:
        case = index.cases[i]
        img, meta = read_case_image(case.images)
        lab, _ = read_label(case.label, img.ndim - 1)
        if lab.shape != img.shape[1:]:
            raise DensemedError(f"{case.label}: label size {lab.shape} differs from image size {img.shape[1:]}")
        images.append(img)
        labels.append(lab)
        metas.append(meta)
    checks = [_is_instance_map(lab) for lab in labels]
    is_instances = _decide_instances(checks)
    if not is_instances and index.layout == "folders" and (root / "instances").is_dir():
        alt = discover(root, "folders", label_dir="instances")
        by_stem = {c.stem: c for c in alt.cases}
        inst = [read_label(by_stem[index.cases[i].stem].label, images[0].ndim - 1)[0] for i in picks
                if index.cases[i].stem in by_stem]
        if inst and _decide_instances([_is_instance_map(lab) for lab in inst]):
            labels, label_dir, is_instances = inst, "instances", True

    dims = images[0].ndim - 1
    sizes = [list(map(int, im.shape[1:])) for im in images]
    spacings = [list(map(float, m.spacing)) if m.spacing is not None else [1.0] * dims for m in metas]
    med_spacing = [float(v) for v in np.median(np.array(spacings), axis=0)]
    anis = max(med_spacing) / max(min(med_spacing), 1e-12)
    # intensity statistics from a bounded random subsample of every sampled case (all channels pooled)
    vals, fg_vals = [], []
    for im, lab in zip(images, labels):
        flat = im.reshape(im.shape[0], -1)
        take = rng.choice(flat.shape[1], size=min(flat.shape[1], 50_000), replace=False)
        vals.append(flat[:, take].ravel())
        fg = lab.reshape(-1)[take] > 0
        fg_vals.append(flat[:, take][:, fg].ravel())
    allv = np.concatenate(vals).astype(np.float64)
    fgv = np.concatenate(fg_vals).astype(np.float64)
    integer = bool(np.all(allv == np.round(allv)))
    p_lo, p_hi = np.percentile(allv, [0.5, 99.5])
    intensity = {"p0.5": float(p_lo), "p99.5": float(p_hi), "mean": float(allv.mean()), "std": float(allv.std()),
                 "min": float(allv.min()), "max": float(allv.max()), "integer": integer}
    if len(fgv):
        intensity["fg_p0.5"], intensity["fg_p99.5"] = (float(v) for v in np.percentile(fgv, [0.5, 99.5]))
    # air is -1000 HU; scanners pad outside the field of view with -1024 or -3024
    ct_like = bool(integer and p_lo <= -900 and intensity["min"] >= -3100 and p_hi > 0)

    total = sum(lab.size for lab in labels)
    fp = Fingerprint(
        root=str(root), layout=index.layout, label_dir=label_dir, n_cases=len(index.cases), n_sampled=len(picks),
        dims=dims, channels=int(images[0].shape[0]), sizes=sizes,
        median_size=[int(v) for v in np.median(np.array(sizes), axis=0)], spacings=spacings,
        median_spacing=med_spacing, anisotropy=float(anis), intensity=intensity, ct_like=ct_like,
        label_kind="instances" if is_instances else "classes", class_values=[], class_fractions={},
        class_names=index.class_names,
    )
    if is_instances:
        fg = sum(int((lab > 0).sum()) for lab in labels)
        fp.class_values = [0, 1]
        fp.class_fractions = {0: 1 - fg / total, 1: fg / total}
        sizes_obj, touch, close, count, per_case = [], 0, 0, 0, []
        for lab in labels:
            ids, counts = np.unique(lab[lab > 0], return_counts=True)
            sizes_obj.extend(counts.tolist())
            per_case.append(len(ids))
            t, n = _touching(lab)
            touch, close, count = touch + t, close + _touching(lab, NEAR_GAP)[0], count + n
        if not sizes_obj:
            raise DensemedError(f"{root}: no object in the {len(picks)} sampled label maps")
        fp.objects_per_case = float(np.median(per_case))
        fp.object_sizes = {k: float(v) for k, v in zip(("p5", "median", "p95"), np.percentile(sizes_obj, [5, 50, 95]))}
        fp.touching_fraction = touch / max(count, 1)
        fp.near_fraction = close / max(count, 1)
    else:
        values, counts = np.unique(np.concatenate([lab.ravel() for lab in labels]), return_counts=True)
        if len(values) < 2:
            raise DensemedError(f"{root}: the {len(picks)} sampled label maps hold one value only ({values.tolist()})")
        fp.class_values = [int(v) for v in values]
        fp.class_fractions = {int(v): float(c) / total for v, c in zip(values, counts)}
        fg_values = [v for v in fp.class_values if v != 0]
        if len(fg_values) >= 2:
            from scipy import ndimage

            cents = []
            for lab in labels:
                present = [v for v in fg_values if (lab == v).any()]
                cm = ndimage.center_of_mass(np.ones_like(lab, dtype=np.float64), lab, present) if present else []
                cents.append({v: np.asarray(c) for v, c in zip(present, cm)})
            fp.positional_axes, fp.positional_detail = _positional(cents, dims)
    return fp


def _decide_instances(checks: list[tuple[bool, int, float]]) -> bool:
    """The instance-id rule of the module docstring over per-case ``_is_instance_map`` results."""
    labelled = [c for c in checks if c[1] > 0]
    if not labelled:
        return False
    counts = [c[1] for c in labelled]
    consecutive = np.mean([c[0] for c in labelled])
    single = np.mean([c[2] for c in labelled])
    return bool(consecutive >= 0.8 and np.median(counts) >= 3 and len(set(counts)) > 1 and single >= 0.8)


# -- step timing ---------------------------------------------------------------------------------------


def _cache_file() -> Path:
    import os

    env = os.environ.get("DENSEMED_CACHE")
    xdg = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    base = Path(env).expanduser() if env else xdg / "densemed"
    return base / "plan_step_times.json"


def measure_step(model: dict[str, Any], dims: int, in_channels: int, out_channels: int, patch: list[int],
                 batch: int, amp: bool = False, steps: int = 3, cache: bool = True) -> float:
    """Seconds of one training step (forward, dice_ce loss, backward, Adam) of ``model`` on this machine.

    ``amp``: the forward pass under bf16 autocast (the loss in float32), as ``train.amp`` runs it.

    One warm-up step, then the mean of ``steps`` timed ones on a random batch; the result is cached in
    ``$DENSEMED_CACHE/plan_step_times.json`` (default ``~/.cache/densemed``) keyed by the network, the
    shapes, the torch version, the thread count and the CPU count.

    Example:
        >>> t = measure_step({"name": "unet", "base_width": 4, "depth": 2}, 2, 1, 2, [16, 16], 2, False, steps=1,
        ...                  cache=False)
        >>> print(t > 0)
        True
    """
    import os

    import torch

    from densemed import losses
    from densemed.build import build_network

    key = json.dumps([model, dims, in_channels, out_channels, patch, batch, torch.__version__,
                      torch.get_num_threads(), os.cpu_count()] + (["bf16"] if amp else []), sort_keys=True)
    path = _cache_file()
    table: dict[str, float] = {}
    if cache and path.is_file():
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            table = {}
        if key in table:
            return float(table[key])
    net = build_network(model, dims, in_channels, out_channels)
    net.train()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    loss_fn = losses.build("dice_ce")
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, in_channels, *patch, generator=gen)
    y = torch.randint(0, out_channels, (batch, 1, *patch), generator=gen)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            out = net(x)
        out = out[0] if isinstance(out, (list, tuple)) else out
        loss = loss_fn(out.float(), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up: allocations, kernel selection
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    seconds = (time.perf_counter() - t0) / steps
    if cache:
        table[key] = seconds
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(table, indent=1))
        except OSError:
            pass  # a read-only home: the plan still works, only slower next time
    return seconds


# -- decisions -----------------------------------------------------------------------------------------


def shrink_factor(fp: Fingerprint) -> int:
    """Power of 2 by which 2D instance images are shrunk so large objects fit ``OBJECT_SPAN`` (1: kept).

    Doubled while the 95th-percentile object's equivalent diameter ``sqrt(4 A / pi)`` exceeds
    ``OBJECT_SPAN`` px and the 5th-percentile object would keep at least ``MIN_OBJECT_SPAN`` px.
    """
    if fp.dims != 2 or fp.label_kind != "instances" or not fp.object_sizes:
        return 1
    d95, d5 = (math.sqrt(4 * fp.object_sizes[k] / math.pi) for k in ("p95", "p5"))
    f = 1
    while d95 / f > OBJECT_SPAN and d5 / (2 * f) >= MIN_OBJECT_SPAN:
        f *= 2
    return f


def _patch(fp: Fingerprint, depth: int, shrink: int = 1) -> list[int]:
    m = 2 ** depth
    size = [max(m, s // shrink // m * m) for s in fp.median_size]
    while math.prod(size) > PATCH_VOXELS[fp.dims]:
        # shrink the axis with the largest physical extent by one pooling multiple
        extent = [s * sp if s > m else -1.0 for s, sp in zip(size, fp.median_spacing)]
        ax = int(np.argmax(extent))
        if extent[ax] < 0:
            break
        size[ax] -= m
    return size


def _windows(size: list[int], patch: list[int], overlap: float = 0.5) -> int:
    n = 1
    for s, p in zip(size, patch):
        n *= 1 if s <= p else math.ceil((s - p) / (p * (1 - overlap))) + 1
    return n


def plan(fp: Fingerprint, budget_minutes: float, step_time: StepTimer | None = None,
         val_fraction: float = 0.2) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A recipe for ``fp`` that trains within ``budget_minutes`` on this machine, with its reasons.

    Args:
        fp: the dataset's fingerprint.
        budget_minutes: training budget (training plus periodic validation), minutes.
        step_time: ``(model, dims, in_channels, out_channels, patch, batch) -> seconds`` of one training
            step; default :func:`measure_step` (measured here, cached).
        val_fraction: share of the cases held out for validation.

    Returns:
        The recipe as a dict (loads with :func:`densemed.config.from_dict`) and the decisions as
        ``(decision, reason)`` pairs in the order they were taken.

    Example:
        >>> fp = Fingerprint("d", "folders", "labels", 10, 10, 2, 1, [[64, 64]], [64, 64], [[1.0, 1.0]],
        ...                  [1.0, 1.0], 1.0, {"p0.5": 0.0, "p99.5": 1.0, "mean": 0.5, "std": 0.3,
        ...                  "integer": False}, False, "classes", [0, 1], {0: 0.9, 1: 0.1})
        >>> recipe, why = plan(fp, 5, step_time=lambda *a: 0.01)
        >>> print(recipe["data"]["patch_size"])
        [64, 64]
    """
    if budget_minutes <= 0:
        raise DensemedError(f"--budget: must be a positive number of minutes, got {budget_minutes}")
    timer = step_time or measure_step
    why: list[tuple[str, str]] = []
    dims = fp.dims
    why.append((f"{dims}D", f"the images are {dims}D (median size {'x'.join(map(str, fp.median_size))})"))

    # spacing
    target_spacing = None
    distinct = {tuple(round(v, 6) for v in s) for s in fp.spacings}
    same = all(np.allclose(s, fp.spacings[0], rtol=0.01) for s in fp.spacings)
    sp_text = "x".join(f"{v:g}" for v in fp.median_spacing)
    if fp.anisotropy >= ANISOTROPY:
        spacing_why = ("target spacing: kept (no resampling)", f"anisotropic spacing {sp_text} (ratio "
                       f"{fp.anisotropy:.1f} >= {ANISOTROPY:g}): resampling would invent or discard slices")
    elif same:
        spacing_why = ("target spacing: none", f"all {fp.n_sampled} sampled cases share spacing {sp_text}")
    else:
        target_spacing = [round(v, 4) for v in fp.median_spacing]
        spacing_why = (f"target spacing: {sp_text} (median)", f"{len(distinct)} different spacings in the sample")

    shrink = shrink_factor(fp)
    if shrink > 1:  # one decision, one line: the spacing the network sees
        base = target_spacing or [float(v) for v in fp.median_spacing]
        target_spacing = [round(v * shrink, 4) for v in base]
        d95 = math.sqrt(4 * fp.object_sizes["p95"] / math.pi)
        spacing_why = (f"target spacing: {'x'.join(f'{v:g}' for v in target_spacing)} (images shrunk {shrink}x)", (
            f"{spacing_why[1]}; large objects: the 95th percentile spans {d95:.0f} px (equivalent diameter) > "
            f"{OBJECT_SPAN} px, half a 256-px patch; shrunk {shrink}x they are seen whole with their surroundings "
            "(GlaS glands: object F1 and Dice up, README); predictions come back to the input grid"))
    why.append(spacing_why)

    depth = DEPTH[dims]
    patch = _patch(fp, depth, shrink)
    aniso_patch = fp.anisotropy >= ANISOTROPY and len(set(patch)) > 1
    why.append((f"patch: {patch}", (
        f"median image {[v // shrink for v in fp.median_size]}{' (shrunk)' if shrink > 1 else ''} in multiples "
        f"of 2^{depth} (the U-Net's {depth} poolings), its longest "
        f"physical axis shrunk to <= {PATCH_VOXELS[dims]} voxels" + ("; anisotropic like the voxels" if aniso_patch
                                                                        else ""))))
    batch = int(min(16, max(2, BATCH_VOXELS // math.prod(patch))))
    why.append((f"batch: {batch}", f"{BATCH_VOXELS} voxels per step / {math.prod(patch)} per patch, within [2, 16]"))

    # normalisation
    data: dict[str, Any] = {"root": fp.root, "dims": dims}
    if fp.label_dir != "labels":
        data["label_dir"] = fp.label_dir
    if fp.ct_like:
        lo = fp.intensity.get("fg_p0.5", fp.intensity["p0.5"])
        hi = fp.intensity.get("fg_p99.5", fp.intensity["p99.5"])
        data.update(normalize="window", window=[round(lo, 1), round(hi, 1)])
        why.append((f"normalisation: window [{lo:g}, {hi:g}]", "CT-like intensities (integers, air near -1000): a "
                    "fixed window at the foreground's 0.5/99.5 percentiles keeps Hounsfield units comparable"))
    else:
        data["normalize"] = "zscore"
        why.append(("normalisation: z-score per image", "not CT-like (p0.5 "
                    f"{fp.intensity['p0.5']:g}): intensities have no absolute scale, so each image is standardised"))
    if target_spacing is not None:
        data["target_spacing"] = target_spacing

    # classes
    if fp.label_kind == "instances":
        num_classes = 2
    else:
        vals = fp.class_values
        num_classes = len(vals)
        if vals != list(range(len(vals))) and vals != [0, 255]:
            data["label_map"] = {v: i for i, v in enumerate(vals)}
            why.append((f"label_map: {data['label_map']}", f"label values {vals} are not 0..{len(vals) - 1}"))
        zero = fp.class_fractions.get(0, 1.0)
        if len(vals) == 2 and zero < 0.5:
            # 0 is read as background; a planner cannot tell which of two values is the structure
            why.append(("classes: value 0 = background (check)", (
                f"value 0 covers only {100 * zero:.1f}% of the voxels, less than {vals[1]}: if 0 marks the structure "
                f"(as ISBI 2012's membranes), add --set \"data.label_map={{0: 1, {vals[1]}: 0}}\"")))
    data["num_classes"] = num_classes
    fg_frac = 1.0 - fp.class_fractions.get(0, 0.0)
    data["foreground_fraction"] = 0.5 if fg_frac < 0.2 else 0.0
    why.append((f"foreground_fraction: {data['foreground_fraction']}", f"foreground is {100 * fg_frac:.1f}% of the "
                "voxels" + (": half the patches centred on it" if fg_frac < 0.2 else ": uniform crops see enough")))

    # mixed precision where this machine runs bf16 faster, then the network width from the measured step time
    def timed(w: int, bf16: bool) -> float:
        spec = {"name": "unet", "base_width": w, "depth": depth, "norm": "batch"}
        return float(timer(spec, dims, fp.channels, num_classes, patch, batch, bf16))

    amp = False
    times: dict[int, float] = {}  # seconds per step by width, in the chosen precision
    if amp_dtype("auto", "cpu") is None:
        why.append(("train.amp: false", "this CPU has no bf16 units (amx_bf16 / avx512_bf16): bf16 would run "
                    "emulated, slower than float32"))
    else:
        fp32, bf16 = timed(16, False), timed(16, True)
        amp = bf16 <= AMP_GAIN * fp32
        times[16] = bf16 if amp else fp32
        why.append((f"train.amp: {'auto' if amp else 'false'}", (
            f"measured width-16 step: bf16 {bf16:.3g} s vs float32 {fp32:.3g} s "
            + (f"({fp32 / bf16:.1f}x faster)" if amp else f"(not {1 / AMP_GAIN:.2g}x faster)"))))
        if amp:
            why.append(("train.channels_last: true", "bf16 convolutions run natively in channels-last layout "
                        "(same arithmetic; 1.8x / 1.4x faster 2D / 3D steps on an AMX Xeon, benchmarks/RESULTS.md)"))
    train_s = 0.9 * budget_minutes * 60.0

    def t(w: int) -> float:
        if w not in times:
            times[w] = timed(w, amp)
        return times[w]

    width = 8
    if train_s / t(16) >= MIN_STEPS:
        width = 16
        if train_s / t(16) >= 2 * WIDE_STEPS and train_s / t(32) >= WIDE_STEPS:
            width = 32
    elif train_s / t(8) < MIN_STEPS:
        why.append(("budget short", f"even width 8 gets only {int(train_s / t(8))} steps (< {MIN_STEPS}); "
                    "expect an undertrained network"))
    measured = ", ".join(f"width {w}: {s:.3g} s" for w, s in sorted(times.items()))
    steps = int(train_s / t(width))
    why.append((f"network: unet depth {depth}, base width {width}", (
        f"measured step time ({measured}); in 90% of {budget_minutes:g} min width 16 needs >= {MIN_STEPS} steps, "
        f"32 >= {WIDE_STEPS} (fewer steps of a wider net scored lower, README); width {width} gets about {steps}")))
    model = {"name": "unet", "base_width": width, "depth": depth, "norm": "batch"}

    # loss and task
    recipe: dict[str, Any] = {}
    if fp.label_kind == "instances" and fp.touching_fraction >= TOUCH_FRACTION:
        post: dict[str, Any] = {"method": "watershed", "markers": "auto", "core": "auto", "h": "auto",
                                "threshold": "auto", "min_size": "auto", "seams": "auto"}
        recipe["task"] = {"name": "instances", "seams": 1,
                          "targets": {"weights": {"name": "border_weights", "w0": 10.0, "sigma": 5.0}},
                          "postprocess": post}
        recipe["loss"] = {"name": "weighted_ce"}
        why.append(("task: instances, seams 1 px, border weights + weighted_ce", (
            f"{100 * fp.touching_fraction:.0f}% of the objects touch another (>= {100 * TOUCH_FRACTION:.0f}%): "
            "a 2-px background seam is drawn between touching objects in the training target and the U-Net "
            "border weight map (w0 10, sigma 5 px) makes those seams and the gaps count")))
        why.append((f"postprocess: watershed, {' / '.join(k for k, v in post.items() if v == 'auto')} auto", (
            "distance-transform watershed splits objects that the mask joins, from h-maxima of the distance or "
            "from the network's confident cores, and gives the seams back; the rule and its parameters are chosen "
            "on the validation images "
            f"at the end of training (objects here: 5th percentile {fp.object_sizes['p5']:g} voxels)")))
    elif fp.label_kind == "instances":
        recipe["task"] = {"name": "instances",
                          "postprocess": {"method": "components", "threshold": "auto", "min_size": "auto"}}
        recipe["loss"] = {"name": "dice_ce"}
        why.append(("task: instances, dice_ce", (
            f"only {100 * fp.touching_fraction:.0f}% of the objects touch another ({100 * fp.near_fraction:.0f}% "
            f"have another within {NEAR_GAP} voxels: on GlaS, 34 %, border weights + watershed instead measured "
            "no better, docs/plan.md)")))
        why.append(("postprocess: components, threshold / min_size auto", (
            "separate objects are connected components; threshold and minimum size chosen on the validation "
            f"images at the end of training (objects here: 5th percentile {fp.object_sizes['p5']:g} voxels)")))
    else:
        recipe["task"] = {"name": "segmentation"}
        recipe["loss"] = {"name": "dice_ce"}
        why.append(("loss: dice_ce", f"{num_classes} classes, foreground {100 * fg_frac:.1f}% of the voxels: Dice "
                    "counters the imbalance, cross entropy keeps gradients smooth"))

    # augmentation
    free = [a for a in range(dims) if a not in fp.positional_axes]
    aug: dict[str, Any] = {}
    if free:
        aug["flip"] = {"p": 0.5, "axes": free} if fp.positional_axes else {"p": 0.5}
    anisotropic = fp.anisotropy >= ANISOTROPY
    if not fp.positional_axes and not anisotropic:
        aug["rot90"] = {"p": 0.5}
    if not anisotropic:
        aug["affine"] = {"p": 0.3, "rotate": 10, "scale": [0.9, 1.1]}
    aug.update(noise={"p": 0.15, "std": 0.1}, contrast={"p": 0.15, "range": [0.75, 1.25]},
               gamma={"p": 0.15, "range": [0.7, 1.5]})
    reasons = []
    if fp.positional_axes:
        reasons.append(f"positional classes on axes {fp.positional_axes}: no flips there, no quarter turns, "
                       f"test-time flips only on {free}")
    if anisotropic:
        reasons.append("anisotropic voxels: no quarter turns or rotations mixing coarse and fine axes")
    geo = [k for k in ("flip", "rot90", "affine") if k in aug]
    flip_axes = f" on axes {free}" if fp.positional_axes and free else ""
    why.append((f"augmentation: {', '.join(geo) or 'no geometric'}{flip_axes} + intensity",
                "; ".join(reasons) or "no positional classes, isotropic: all flips and quarter turns keep the labels"))

    # validation cadence
    n_val = max(1, int(round(val_fraction * fp.n_cases)))
    steps_per_epoch = 16
    val_s = n_val * (_windows([v // shrink for v in fp.median_size], patch) + 2) * t(width) / (3 * batch)
    epoch_s = steps_per_epoch * t(width)
    val_every = max(1, math.ceil(9 * val_s / epoch_s))
    why.append((f"val_every: {val_every} epochs", (
        f"whole-image validation of {n_val} cases ~{val_s:.1f} s vs an epoch of {steps_per_epoch} steps "
        f"~{epoch_s:.1f} s: "
        "about 10% of the budget")))
    epochs = max(1, math.ceil(2 * steps / steps_per_epoch))
    why.append((f"time budget: {budget_minutes:g} min", f"train.time_budget_s {budget_minutes * 60:g}; epochs {epochs} "
                "(twice the estimate, so the budget ends the run)"))

    data.update(patch_size=patch, batch_size=batch, samples_per_epoch=steps_per_epoch * batch,
                val_fraction=val_fraction)
    recipe.update(
        data=data, model=model, augment=aug,
        train={"epochs": epochs, "lr": 0.001, "scheduler": "cosine", "seed": 0, "time_budget_s": budget_minutes * 60.0,
               "val_every": val_every, "out": f"runs/plan_{Path(fp.root).name}",
               **({"amp": "auto", "channels_last": True} if amp else {})},
        infer={"overlap": 0.5, **({"tta_axes": list(free)} if fp.positional_axes else {})},  # a copy: no YAML alias
    )
    return recipe, why


# -- command -------------------------------------------------------------------------------------------


def recipe_for(data_dir: PathType, budget_minutes: float, echo: Callable[[str], None] | None = print,
               max_cases: int = 16) -> dict[str, Any]:
    """Fingerprint ``data_dir``, plan for ``budget_minutes`` and print the fingerprint and decisions."""
    from densemed.config import resolve_data_root

    root = resolve_data_root(str(data_dir))
    fp = fingerprint(root, max_cases=max_cases)
    recipe, why = plan(fp, budget_minutes)
    if echo is not None:
        for line in fp.summary():
            echo(f"fingerprint  {line}")
        for decision, reason in why:
            echo(f"decision     {decision}  <- {reason}")
    return recipe


def _cmd_plan(args: argparse.Namespace) -> int:
    import yaml

    from densemed import config

    recipe = recipe_for(args.data_dir, args.budget, max_cases=args.max_cases)
    config.from_dict(recipe, "plan")  # the planned recipe must load like a hand-written one
    text = "# planned by `densemed plan` (see docs/plan.md)\n" + yaml.safe_dump(recipe, sort_keys=False)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"wrote {args.out}")
    else:
        print(text, end="")
    return 0


def register(subparsers: Any) -> None:
    """Add ``densemed plan DATA_DIR [--budget MINUTES] [--out recipe.yaml]``."""
    p = subparsers.add_parser("plan", help="fingerprint a dataset and write a recipe that fits a time budget")
    p.add_argument("data_dir", help="dataset folder (images/ + labels/, nnU-Net v2 raw or MSD)")
    p.add_argument("--budget", type=float, default=30.0, help="training budget in minutes (default 30)")
    p.add_argument("--out", help="write the recipe here (default: print it)")
    p.add_argument("--max-cases", type=int, default=16, help="cases read for the fingerprint (default 16)")
    p.set_defaults(fn=_cmd_plan)


__all__ = ["Fingerprint", "fingerprint", "measure_step", "plan", "recipe_for", "register"]
