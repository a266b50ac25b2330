"""Readers and writers, datasets, patch sampling, normalisation, synthetic demo data."""

from densemed.data.dataset import Case, PatchDataset, discover_pairs, fixed_patches, load_cases
from densemed.data.io import ImageMeta, read_image, read_label, write_float, write_label
from densemed.data.normalize import normalize

__all__ = [
    "Case",
    "ImageMeta",
    "PatchDataset",
    "discover_pairs",
    "fixed_patches",
    "load_cases",
    "normalize",
    "read_image",
    "read_label",
    "write_float",
    "write_label",
]
