"""Augmentation: densemed's batched affine + elastic vs MONAI and TorchIO applied per sample (CPU).

Every transform always applies (p = 1.0 / prob = 1.0); images linear, labels nearest, zero padding.

* densemed: ``build({"affine": {p: 1, rotate: 15, scale: [0.9, 1.1], translate: 0.05},
  "elastic": {p: 1, spacing: 64 (2D) / 32 (3D), magnitude: 5}})`` on the whole batch, one
  resampling per tensor.
* MONAI 1.6: ``RandAffined(prob=1, rotate_range=15 deg, scale_range=0.1, translate_range=5 %)``
  then ``Rand2DElasticd(prob=1, spacing=64, magnitude_range=(0, 5))`` /
  ``Rand3DElasticd(prob=1, sigma_range=(5, 8), magnitude_range=(100, 200))`` (MONAI's 3D elastic
  smooths a dense random field, its documented example values), one sample at a time.
* TorchIO 1.2: ``RandomAffine(p=1, degrees=15 (2D: about the slice normal), scales=(0.9, 1.1),
  translation=5 %)`` then ``RandomElasticDeformation(p=1, num_control_points=9 (2D) / 5 (3D),
  max_displacement=5)``, one subject at a time.

Shear is 0 everywhere (TorchIO has none). The same tensors go to all three; the reference
subjects/dicts are built once outside the timed calls. Memory: extra peak resident memory of one
first call in a fresh process over its baseline (``harness.measure_peak_memory``, sampled every
millisecond; the inputs themselves are in the baseline).
"""

from __future__ import annotations

import math
import statistics

import torch

from benchmarks.harness import Row, compare, in_fresh_process, measure_peak_memory
from densemed.augment import build

NOTES = (
    "pairs/s = pairs per call / median seconds per call. 2D batches are processed by densemed in one "
    "call and by the references in a Python loop over the samples (their intended per-sample use)."
)


def _ours(dims: int):
    spacing = 64 if dims == 2 else 32
    return build({
        "affine": {"p": 1.0, "rotate": 15, "scale": [0.9, 1.1], "translate": 0.05},
        "elastic": {"p": 1.0, "spacing": spacing, "magnitude": 5},
    })


def _monai(dims: int):
    import monai.transforms as mt

    keys = ["image", "label"]
    common = {"keys": keys, "prob": 1.0, "mode": ["bilinear", "nearest"], "padding_mode": "zeros"}
    affine = mt.RandAffined(
        rotate_range=[math.radians(15)] * (1 if dims == 2 else 3), scale_range=[0.1] * dims,
        translate_range=[0.05 * (512 if dims == 2 else 128)] * dims, **common,
    )
    if dims == 2:
        elastic = mt.Rand2DElasticd(spacing=(64, 64), magnitude_range=(0, 5), **common)
    else:
        elastic = mt.Rand3DElasticd(sigma_range=(5, 8), magnitude_range=(100, 200), **common)
    affine.set_random_state(0)
    elastic.set_random_state(0)
    return mt.Compose([affine, elastic])


def _torchio(dims: int):
    import torchio as tio

    if dims == 2:
        affine = tio.RandomAffine(scales=(0.9, 1.1, 0.9, 1.1, 1, 1), degrees=(0, 0, 0, 0, -15, 15),
                                  translation=(-25.6, 25.6, -25.6, 25.6, 0, 0), default_pad_value=0, p=1.0)
        elastic = tio.RandomElasticDeformation(
            num_control_points=(9, 9, 5), max_displacement=(5, 5, 0), p=1.0
        )
    else:
        affine = tio.RandomAffine(scales=(0.9, 1.1), degrees=15, translation=6.4, default_pad_value=0, p=1.0)
        elastic = tio.RandomElasticDeformation(num_control_points=5, max_displacement=5, p=1.0)
    return tio.Compose([affine, elastic])


def _setup(dims: int, batch: int) -> tuple[str, dict[str, object]]:
    """The case's title and its three callables (densemed, MONAI, TorchIO) on the same tensors."""
    import torchio as tio

    size = (512, 512) if dims == 2 else (128, 128, 128)
    g = torch.Generator().manual_seed(0)
    image = torch.rand(batch, 1, *size, generator=g)
    label = (torch.rand(batch, 1, *size, generator=g) > 0.5).long()
    ours = _ours(dims)
    gen = torch.Generator().manual_seed(0)
    monai_t, tio_t = _monai(dims), _torchio(dims)
    dicts = [{"image": image[b], "label": label[b]} for b in range(batch)]
    # TorchIO wants (C, W, H, D); a 2D image is a one-slice volume.
    subjects = [
        tio.Subject(
            image=tio.ScalarImage(tensor=image[b] if dims == 3 else image[b].unsqueeze(-1)),
            label=tio.LabelMap(tensor=label[b] if dims == 3 else label[b].unsqueeze(-1)),
        )
        for b in range(batch)
    ]
    what = f"{dims}D affine+elastic, {batch} x 1x{'x'.join(map(str, size))} image+label"
    return what, {
        "ours": lambda: ours({"image": image, "label": label}, gen),
        "monai": lambda: [monai_t(d) for d in dicts],
        "torchio": lambda: [tio_t(s) for s in subjects],
    }


def _child_peak(dims: int, batch: int, which: str, threads: int) -> float:
    torch.set_num_threads(threads)
    _, fns = _setup(dims, batch)
    return measure_peak_memory(fns[which])  # type: ignore[arg-type]


def peak_fresh(dims: int, batch: int, which: str) -> float:
    """Peak extra MiB of one first call in a fresh process (a warm allocator would hide the peak)."""
    return in_fresh_process(_child_peak, dims, batch, which, torch.get_num_threads())


def _case(dims: int, batch: int, repeats: int) -> list[Row]:
    what, fns = _setup(dims, batch)
    mem_ours = peak_fresh(dims, batch, "ours")
    rows = []
    for key, name in (("monai", f"MONAI RandAffined+Rand{dims}DElasticd"),
                      ("torchio", "TorchIO RandomAffine+RandomElasticDeformation")):
        row = compare(what, fns["ours"], fns[key], ref_name=name, repeats=repeats)  # type: ignore[arg-type]
        row.extra["pairs/s ours"] = f"{batch / statistics.median(row.ours):.1f}"
        row.extra["pairs/s ref"] = f"{batch / statistics.median(row.ref or [math.nan]):.2f}"
        row.extra["peak MiB ours/ref"] = f"{mem_ours:.0f} / {peak_fresh(dims, batch, key):.0f}"
        rows.append(row)
    return rows


def run(quick: bool) -> list[Row]:
    """2D: batch of 512x512 pairs; 3D: one 128^3 volume with its label."""
    rows = _case(2, 2 if quick else 8, 2 if quick else 3)
    rows += _case(3, 1, 2 if quick else 3)
    return rows
