"""Segmentation metrics: confusion counts -> overlap scores; surface distances; folder evaluation.

One import line per module, so object-level (``instance``) and image-quality modules can add theirs.
"""

from densemed.metrics.confusion import (
    ConfusionAccumulator,
    ConfusionStats,
    confusion,
    dice,
    iou,
    precision,
    recall,
    to_labels,
)
from densemed.metrics.evaluate import evaluate_folders, format_table
from densemed.metrics.surface import hausdorff, hausdorff95, mean_surface_distance, surface_distances

__all__ = [
    "ConfusionAccumulator",
    "ConfusionStats",
    "confusion",
    "dice",
    "evaluate_folders",
    "format_table",
    "hausdorff",
    "hausdorff95",
    "iou",
    "mean_surface_distance",
    "precision",
    "recall",
    "surface_distances",
    "to_labels",
]
# Other metric modules (instance, image_quality) add their import line above and extend this:
# __all__ += ["..."]
