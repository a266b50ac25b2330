"""Evaluate a folder of predicted label maps against a folder of true label maps.

Files are matched by stem (``case_01.nii.gz`` ↔ ``case_01.png`` would match too; the double
NIfTI suffix is handled). For every truth file and every evaluated class the result holds Dice,
IoU, precision, recall (:mod:`densemed.metrics.confusion`, empty classes score 1 when absent from
both maps) and the 95th-percentile Hausdorff distance and average symmetric surface distance
(:mod:`densemed.metrics.surface`, in the header's physical units for NIfTI, in pixels otherwise;
NaN when the class is empty in the prediction or the truth).

Label values (documented choices):

* A map whose values all lie in ``{0, 255}`` is binary: 255 means class 1 (PNG masks).
* ``label_map`` (e.g. ``{0: 1, 255: 0}`` for ISBI 2012, where 0 marks membrane, the class of
  interest) maps raw *truth* values to classes and replaces the rule above for the truth; any
  other truth value is an error. Predictions must hold class indices (or 0/255 for binary).

Means: every mean is a ``nanmean``: NaN values (HD95/ASD of an empty class) are left out, and
``nan_count`` says how many (image, class) values were left out per metric. The overall mean is
over all (image, class) pairs; ``per_class`` is over images; ``pooled`` scores the counts summed
over all images (every pixel weighs equally). NaN is stored as ``None`` so that the result is
strict JSON.

Class names: given ``class_names`` (a recipe's ``data.class_names``), the result's
``class_names`` maps every scored class (as a string key, like ``per_class``) to its name, an
unnamed class to its index; the table shows the names in its ``class`` column. The keys of
``per_class`` and ``pooled`` stay the class indices.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from densemed.data.io import is_supported, read_label, split_name
from densemed.errors import DensemedError
from densemed.metrics.confusion import ConfusionStats, confusion, dice, iou, precision, recall
from densemed.metrics.surface import hausdorff_from_distances, mean_from_distances, surface_distances
from densemed.typing import PathType

#: Metric names in the order of the table.
METRICS = ("dice", "iou", "precision", "recall", "hd95", "asd")
_OVERLAP = {"dice": dice, "iou": iou, "precision": precision, "recall": recall}


def _list_files(folder: Path, role: str) -> dict[str, Path]:
    if not folder.is_dir():
        raise DensemedError(f"{folder}: {role} folder not found")
    files: dict[str, Path] = {}
    for f in sorted(folder.iterdir()):
        if f.name.startswith(".") or not f.is_file() or not is_supported(f):
            continue
        stem = split_name(f)[0]
        if stem in files:
            raise DensemedError(f"{f}: two {role} files share the stem {stem!r} ({files[stem].name})")
        files[stem] = f
    return files


def _to_classes(raw: np.ndarray, path: Path, label_map: Mapping[int, int] | None) -> np.ndarray:
    """Raw values -> class indices: ``label_map`` if given, else the {0, 255} binary rule."""
    values = np.unique(raw)
    if label_map is not None:
        unknown = [int(v) for v in values if int(v) not in label_map]
        if unknown:
            raise DensemedError(
                f"{path}: values {unknown[:5]} are not in label_map (keys {sorted(label_map)})"
            )
        lut_keys = np.array(sorted(label_map), dtype=np.int64)
        lut_vals = np.array([label_map[k] for k in lut_keys], dtype=np.int64)
        return lut_vals[np.searchsorted(lut_keys, raw)]
    if values.size and values.min() < 0:
        raise DensemedError(f"{path}: negative label value {int(values.min())}")
    if set(values.tolist()) <= {0, 255}:
        return (raw == 255).astype(np.int64)
    return raw


def _nan_to_none(x: float) -> float | None:
    return None if math.isnan(x) else float(x)


def _nanmean(values: list[float]) -> tuple[float | None, int]:
    """Mean without NaNs, and how many NaNs were left out; None when all are NaN (or none given)."""
    arr = np.asarray(values, dtype=np.float64)
    finite = arr[~np.isnan(arr)]
    return (float(finite.mean()) if finite.size else None), int(arr.size - finite.size)


def evaluate_folders(
    pred_dir: PathType,
    truth_dir: PathType,
    num_classes: int | None = None,
    label_map: Mapping[int, int] | None = None,
    include_background: bool = False,
    class_names: Mapping[int, str] | None = None,
) -> dict[str, Any]:
    """Per-image, per-class and mean segmentation metrics of a prediction folder.

    Args:
        pred_dir: folder of predicted label maps (PNG, TIFF, NIfTI).
        truth_dir: folder of true label maps; every file here needs a prediction of the same stem
            (extra predictions are listed in ``unmatched_predictions`` and not scored).
        num_classes: number of classes; None = largest class index found + 1 (at least 2).
        label_map: raw truth value -> class index (keys may be strings, e.g. from YAML/JSON).
        include_background: also score class 0.
        class_names: class index -> name (keys may be strings); None: classes shown by index.

    Returns:
        A JSON-serialisable dict::

            {"num_classes": 2, "classes": [1], "include_background": False,
             "metrics": ["dice", "iou", "precision", "recall", "hd95", "asd"],
             "images": [{"name", "pred", "truth", "shape", "spacing", "units",
                         "per_class": {"1": {metric: value}}, "mean": {metric: value}}],
             "per_class": {"1": {metric: mean over images}},
             "mean": {metric: mean over (image, class)}, "nan_count": {metric: int},
             "pooled": {"1": {"dice", "iou", "precision", "recall"}}, "unmatched_predictions": [...],
             "class_names": {"1": "cell"} or None}

        ``units`` is ``"physical"`` when a NIfTI header gives the spacing (HD95/ASD then in the
        header's units, usually mm), else ``"pixels"``. Undefined values (NaN) are ``None``.

    Raises:
        DensemedError: a missing folder or prediction, an unreadable file, a size or spacing
            mismatch, or a value outside the classes; the message names the file.
    """
    pred_dir, truth_dir = Path(pred_dir), Path(truth_dir)
    if label_map is not None:
        try:
            label_map = {int(k): int(v) for k, v in label_map.items()}
        except (TypeError, ValueError):
            raise DensemedError(f"label_map: keys and values must be integers, got {label_map!r}") from None
    names = _class_names(class_names)
    truths = _list_files(truth_dir, "truth")
    preds = _list_files(pred_dir, "prediction")
    if not truths:
        raise DensemedError(f"{truth_dir}: no label files (PNG, TIFF or NIfTI) found")
    missing = [stem for stem in truths if stem not in preds]
    if missing:
        raise DensemedError(
            f"{truths[missing[0]]}: no prediction named {missing[0]}.* in {pred_dir}"
            + (f" (and {len(missing) - 1} more missing)" if len(missing) > 1 else "")
        )

    # Read everything first: num_classes may depend on all files, and a bad file fails early.
    pairs = []
    for stem, truth_path in truths.items():
        pred_path = preds[stem]
        raw_t, meta_t = read_label(truth_path)
        raw_p, meta_p = read_label(pred_path)
        if raw_t.shape != raw_p.shape:
            raise DensemedError(
                f"{pred_path}: size {raw_p.shape} differs from the truth {truth_path.name} {raw_t.shape}"
            )
        if (
            meta_t.spacing is not None
            and meta_p.spacing is not None
            and not np.allclose(meta_t.spacing, meta_p.spacing, rtol=1e-3)
        ):
            raise DensemedError(
                f"{pred_path}: voxel spacing {meta_p.spacing} differs from the truth's {meta_t.spacing}"
            )
        spacing = meta_t.spacing if meta_t.spacing is not None else meta_p.spacing
        truth = _to_classes(raw_t, truth_path, label_map)
        pred = _to_classes(raw_p, pred_path, None)
        pairs.append((stem, pred_path, truth_path, pred, truth, spacing))

    found = max(max(int(p.max(initial=0)), int(t.max(initial=0))) for _, _, _, p, t, _ in pairs) + 1
    if num_classes is None:
        num_classes = max(2, found)
    elif found > num_classes:
        for _, pred_path, truth_path, p, t, _ in pairs:
            for path, arr in ((pred_path, p), (truth_path, t)):
                if arr.size and arr.max() >= num_classes:
                    raise DensemedError(
                        f"{path}: class {int(arr.max())} is outside the {num_classes} classes "
                        f"(0..{num_classes - 1})"
                    )
    classes = list(range(0 if include_background else 1, num_classes))
    if not classes:
        raise DensemedError(f"num_classes: {num_classes} leaves no class to score without the background")

    images = []
    values: dict[str, dict[int, list[float]]] = {m: {c: [] for c in classes} for m in METRICS}
    pooled = np.zeros((4, num_classes), dtype=np.int64)
    for stem, pred_path, truth_path, pred, truth, spacing in pairs:
        stats = confusion(pred, truth, num_classes)
        pooled += np.stack(tuple(stats))
        overlap = {m: fn(stats) for m, fn in _OVERLAP.items()}
        per_class: dict[str, dict[str, float | None]] = {}
        raw_rows: list[dict[str, float]] = []
        for c in classes:
            d_pt, d_tp = surface_distances(pred == c, truth == c, spacing)
            row = {m: float(overlap[m][c]) for m in _OVERLAP}
            row["hd95"] = hausdorff_from_distances(d_pt, d_tp, 95)
            row["asd"] = mean_from_distances(d_pt, d_tp)
            for m in METRICS:
                values[m][c].append(row[m])
            per_class[str(c)] = {m: _nan_to_none(row[m]) for m in METRICS}
            raw_rows.append(row)
        image_mean = {m: _nanmean([r[m] for r in raw_rows])[0] for m in METRICS}
        images.append(
            {
                "name": stem,
                "pred": str(pred_path),
                "truth": str(truth_path),
                "shape": list(truth.shape),
                "spacing": None if spacing is None else [float(s) for s in spacing],
                "units": "physical" if spacing is not None else "pixels",
                "per_class": per_class,
                "mean": image_mean,
            }
        )

    pooled_stats = ConfusionStats(*pooled)
    result: dict[str, Any] = {
        "num_classes": num_classes,
        "classes": classes,
        "include_background": include_background,
        "label_map": None if label_map is None else {str(k): v for k, v in label_map.items()},
        "metrics": list(METRICS),
        "images": images,
        "per_class": {str(c): {m: _nanmean(values[m][c])[0] for m in METRICS} for c in classes},
        "mean": {m: _nanmean([v for c in classes for v in values[m][c]])[0] for m in METRICS},
        "nan_count": {m: _nanmean([v for c in classes for v in values[m][c]])[1] for m in METRICS},
        "pooled": {
            str(c): {m: float(fn(pooled_stats)[c]) for m, fn in _OVERLAP.items()} for c in classes
        },
        "unmatched_predictions": [str(p) for stem, p in preds.items() if stem not in truths],
        "class_names": None if names is None else {str(c): names.get(c, str(c)) for c in classes},
    }
    return result


def _class_names(class_names: Mapping[Any, Any] | None) -> dict[int, str] | None:
    """``{index: name}`` with integer keys, or None; a key that is not a class index is an error."""
    if class_names is None:
        return None
    try:
        return {int(k): str(v) for k, v in class_names.items()}
    except (AttributeError, TypeError, ValueError):
        raise DensemedError(f"class_names: expected a mapping class index -> name, got {class_names!r}") from None


def class_label(result: Mapping[str, Any], cls: str) -> str:
    """How class ``cls`` (a key of ``per_class``) is shown: its name when the result has one, else the index."""
    names = result.get("class_names") or {}
    return str(names.get(cls, cls))


def _fmt(x: float | None) -> str:
    return "nan" if x is None else f"{x:.4f}"


def format_table(result: Mapping[str, Any]) -> str:
    """Plain-text table of an :func:`evaluate_folders` result: one row per image and class, then means.

    With one scored class the rows are per image; with several, a row per (image, class) and
    per-class means. The ``class`` column shows the class names of ``result["class_names"]``
    where the result has them, else the indices. The last lines give the overall mean and how
    NaNs were counted.
    """
    metrics = list(result["metrics"])
    classes = [str(c) for c in result["classes"]]
    label = {c: class_label(result, c) for c in classes}
    multi = len(classes) > 1
    name_w = max([len("image")] + [len(im["name"]) for im in result["images"]] + [len("mean")])
    cls_w = max([5] + [len(v) for v in label.values()])
    header = f"{'image':<{name_w}}  {'class':>{cls_w}}  " + "  ".join(f"{m:>9}" for m in metrics)
    lines = [header, "-" * len(header)]

    def row(name: str, cls: str, vals: Mapping[str, float | None]) -> str:
        return f"{name:<{name_w}}  {cls:>{cls_w}}  " + "  ".join(f"{_fmt(vals[m]):>9}" for m in metrics)

    for im in result["images"]:
        for c in classes:
            lines.append(row(im["name"], label[c], im["per_class"][c]))
    lines.append("-" * len(header))
    if multi:
        for c in classes:
            lines.append(row("mean", label[c], result["per_class"][c]))
    lines.append(row("mean", "all" if multi else label[classes[0]], result["mean"]))
    units = {im["units"] for im in result["images"]}
    unit_txt = "physical units of the NIfTI header (usually mm)" if units == {"physical"} else (
        "pixels" if units == {"pixels"} else "physical units for NIfTI files, pixels for the others"
    )
    n_pairs = len(result["images"]) * len(classes)
    n_img, n_cls = len(result["images"]), len(classes)
    lines.append(f"hd95/asd in {unit_txt}")
    lines.append(
        f"means over {n_img} image{'s' * (n_img != 1)} x {n_cls} class{'es' * (n_cls != 1)}; "
        "NaN (class empty in prediction or truth) left out: "
        + ", ".join(f"{m} {result['nan_count'][m]}/{n_pairs}" for m in ("hd95", "asd"))
    )
    return "\n".join(lines)
