"""``densemed check``: walk a dataset, list every problem with the file that has it, summarise it.

Every case is read once (image channel files and label) and checked; nothing stops at the first
problem. Each :class:`Problem` names the file, a kind, and whether it is *fatal*, i.e. would make
training fail or train on wrong data:

================  =====  ===============================================================
kind              fatal  found when
================  =====  ===============================================================
``missing``       yes    a partner file is absent: image without label, a channel file
                         of an nnU-Net case, a file listed in an MSD ``dataset.json``
``orphan``        no     a label without an image
``unreadable``    yes    a file cannot be read as an image / label map of ``dims``
``shape``         yes    label size differs from the image's
``spacing``       no     label voxel size (or affine) differs from the image's
``channels``      yes    a case has another channel count than most cases (or than
                         ``dataset.json`` declares), or its channel files differ in size
``nonfinite``     yes    NaN or infinite intensities
``classes``       yes    label values outside the declared classes (``num_classes`` or
                         ``dataset.json``), or declared class values not ``0..K-1``
``consecutive``   no     undeclared classes whose values over the dataset are not ``0..K-1``
``binary``        yes    ``instances=True`` but a label is a binary mask (values {0, 255},
                         or {0, 1} forming several objects)
``split``         no     ``instances=True`` and one id covers several connected components
``empty``         no     a label map holds only background
``regions``       yes    region-based labels in an nnU-Net ``dataset.json``
``count``         no     ``numTraining`` disagrees with the files
================  =====  ===============================================================

Spacing mismatches are warnings because training reads the two arrays voxel by voxel; they
matter only for resampling (``data.target_spacing``) and surface metrics. Label values
``{0, 255}`` with ``num_classes=2`` are accepted, as the data pipeline maps them to 0/1.

Connected components use full connectivity (8 in 2D, 26 in 3D), the same as
:func:`densemed.targets.check_instances` and the ``glas_gland`` instance derivation: an object
touching itself only diagonally is one object. Component search for ``split`` works inside each
id's bounding box (:func:`scipy.ndimage.find_objects`), so thousands of nuclei cost about one
pass over the image.

The summary holds counts, channel counts, sizes, spacings, the intensity range, class voxel
frequencies (with the number of cases each class occurs in) and object counts and sizes
(instance ids with ``instances=True``, else connected components of the foreground).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from densemed.data.io import read_image, read_label
from densemed.data.layouts import DatasetIndex, Issue, scan
from densemed.errors import DensemedError
from densemed.typing import PathType


class Problem(Issue):
    """One problem, with the file that has it; ``fatal`` when it would break training.

    The fields of :class:`densemed.data.layouts.Issue`: ``path``, ``kind``, ``message``, ``fatal``.
    """


@dataclass
class CheckReport:
    """Everything :func:`check_dataset` found: problems (errors first) and a summary dict."""

    root: Path
    layout: str | None
    split: str
    problems: list[Problem] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)

    @property
    def fatal(self) -> bool:
        """True when a problem would break training (``densemed check`` then exits 2)."""
        return any(p.fatal for p in self.problems)

    def of_kind(self, kind: str) -> list[Problem]:
        """The problems of one kind."""
        return [p for p in self.problems if p.kind == kind]


def _from_error(exc: DensemedError, fallback: Path, kind: str) -> Problem:
    """A DensemedError ("<file>: <what>") as a fatal problem of that file."""
    msg = str(exc)
    head, sep, rest = msg.partition(": ")
    if sep and ("/" in head or "." in head or Path(head).exists()):
        return Problem(Path(head), kind, rest)
    return Problem(fallback, kind, msg)


def _components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    return ndimage.label(mask, structure=ndimage.generate_binary_structure(mask.ndim, mask.ndim))


def check_dataset(
    root: PathType,
    layout: str = "auto",
    num_classes: int | None = None,
    instances: bool = False,
    dims: int | None = None,
    image_dir: str = "images",
    label_dir: str = "labels",
    label_map: dict[int, int] | None = None,
    split: str = "train",
) -> CheckReport:
    """Check every case of a dataset and summarise it.

    Args:
        root: dataset folder, in any layout of :mod:`densemed.data.layouts`.
        layout: ``auto``, ``folders``, ``nnunet`` or ``msd``.
        num_classes: declared class count (values must lie in ``0..num_classes-1``); None
            takes the classes of ``dataset.json``, else only checks that they are consecutive.
        instances: labels must be instance ids (``data.instances``).
        dims: expected spatial dimensionality (2 or 3), or None.
        image_dir: image folder of the ``folders`` layout.
        label_dir: label folder of the ``folders`` layout (e.g. ``instances``).
        label_map: raw label value -> class index (``data.label_map``), applied before the class check.
        split: ``train`` or ``test`` (unlabelled cases are checked as images only).

    Returns:
        The report; ``report.fatal`` says whether training would break.

    Example:
        >>> import tempfile, pathlib, numpy as np
        >>> from densemed.data.io import write_label
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = write_label(d / "images" / "a.png", np.full((4, 5), 7, np.uint8))
        >>> _ = write_label(d / "labels" / "a.png", np.eye(4, 5, dtype=np.uint8))
        >>> report = check_dataset(d, num_classes=2)
        >>> print(report.fatal, report.summary["cases"])
        False 1
    """
    root = Path(root)
    report = CheckReport(root, None, split)
    try:
        index = scan(root, layout, split, image_dir, label_dir)
    except DensemedError as exc:
        report.problems.append(_from_error(exc, root, "layout"))
        return report
    report.layout = index.layout
    report.problems += [Problem(i.path, i.kind, i.message, i.fatal) for i in index.issues]
    _Checker(report, index, num_classes, instances, dims, label_map).run()
    report.problems.sort(key=lambda p: (not p.fatal, str(p.path), p.kind))
    return report


class _Checker:
    """Reads each case once, records problems and accumulates the summary."""

    def __init__(self, report: CheckReport, index: DatasetIndex, num_classes: int | None, instances: bool,
                 dims: int | None, label_map: dict[int, int] | None) -> None:
        self.report, self.index, self.instances, self.dims = report, index, instances, dims
        self.label_map = label_map
        self.num_classes = num_classes
        self.declared: set[int] | None = None
        self.names: dict[int, str] = dict(index.class_names or {})
        js = index.root / "dataset.json"
        if num_classes is not None:
            self.declared = set(range(num_classes))
            if index.class_names and len(index.class_names) != num_classes:
                self.add(js, "classes", f"declares {len(index.class_names)} classes, but {num_classes} are configured",
                         False)
        elif index.class_names:
            self.declared = set(index.class_names)
            if sorted(self.declared) != list(range(len(self.declared))):
                self.add(js, "classes", (f"class values {sorted(self.declared)} are not consecutive "
                                         f"0..{len(self.declared) - 1} (densemed trains class indices)"))
        self.channels: dict[Path, int] = {}  # first image file of a case -> channel count
        self.ndims: dict[Path, int] = {}
        self.sizes: list[tuple[int, ...]] = []
        self.spacings: Counter = Counter()
        self.intensity = [np.inf, -np.inf]
        self.voxels: Counter = Counter()
        self.cases_with: Counter = Counter()
        self.objects_per_case: list[int] = []
        self.object_sizes: list[np.ndarray] = []
        self.labelled = 0

    def add(self, path: Path, kind: str, message: str, fatal: bool = True) -> None:
        self.report.problems.append(Problem(path, kind, message, fatal))

    # -- per case ---------------------------------------------------------------------------
    def run(self) -> None:
        for case in self.index.cases:
            image, spacing, affine = self.check_image(case.images)
            if case.label is not None:
                self.check_label(case.label, case.images[0], image, spacing, affine)
        self.finish()

    def check_image(self, files: list[Path]) -> tuple[tuple[int, ...] | None, Any, Any]:
        """Read each channel file; returns the spatial size, spacing and affine (None when unreadable)."""
        shape, spacing, affine, channels = None, None, None, 0
        for f in files:
            try:
                arr, meta = read_image(f, self.dims)
            except DensemedError as exc:
                self.report.problems.append(_from_error(exc, f, "unreadable"))
                return None, None, None
            sp = tuple(meta.spacing[: arr.ndim - 1]) if meta.spacing is not None else None
            bad = ~np.isfinite(arr)
            if bad.any():
                n_nan, n_inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
                self.add(f, "nonfinite", f"{n_nan} NaN and {n_inf} infinite intensities")
            finite = arr[~bad] if bad.any() else arr
            if finite.size:
                lo, hi = float(finite.min()), float(finite.max())
                self.intensity = [min(self.intensity[0], lo), max(self.intensity[1], hi)]
            if shape is None:
                shape, spacing, affine = arr.shape[1:], sp, meta.affine
            elif arr.shape[1:] != shape:
                self.add(f, "channels", f"channel file size {arr.shape[1:]} differs from {files[0].name}'s {shape}")
                return None, None, None
            elif sp is not None and spacing is not None and not np.allclose(sp, spacing, rtol=1e-3):
                self.add(f, "channels", f"channel file spacing {_fmt(sp)} differs from {files[0].name}'s "
                                        f"{_fmt(spacing)}", False)
            channels += arr.shape[0]
        self.channels[files[0]] = channels
        self.ndims[files[0]] = len(shape)
        self.sizes.append(tuple(shape))
        if spacing is not None:
            self.spacings[tuple(round(s, 3) for s in spacing)] += 1
        return shape, spacing, affine

    def check_label(self, path: Path, image_path: Path, shape: tuple[int, ...] | None, spacing: Any,
                    affine: Any) -> None:
        try:
            label, meta = read_label(path, self.dims)
        except DensemedError as exc:
            self.report.problems.append(_from_error(exc, path, "unreadable"))
            return
        self.labelled += 1
        if shape is not None and label.shape != tuple(shape):
            self.add(path, "shape",
                     f"label size {label.shape} differs from image size {tuple(shape)} ({image_path.name})")
        lsp = tuple(meta.spacing[: label.ndim]) if meta.spacing is not None else None
        if shape is not None and lsp is not None and spacing is not None:
            if not np.allclose(lsp, spacing, rtol=1e-3):
                self.add(path, "spacing", f"label spacing {_fmt(lsp)} differs from image spacing {_fmt(spacing)}",
                         False)
            elif affine is not None and meta.affine is not None and not np.allclose(meta.affine, affine, atol=1e-3):
                self.add(path, "spacing", f"label affine (origin or direction) differs from the image's "
                                          f"({image_path.name})", False)
        values, counts = np.unique(label, return_counts=True)
        if values.size == 1 and values[0] == 0:
            self.add(path, "empty", "label map holds only background (0)", False)
        if self.instances:
            self.check_instances(path, label, values)
        else:
            self.check_classes(path, label, values, counts)

    def check_classes(self, path: Path, label: np.ndarray, values: np.ndarray, counts: np.ndarray) -> None:
        vals = [int(v) for v in values]
        lut = self.label_map
        if lut is None and self.num_classes == 2 and set(vals) <= {0, 255}:
            lut = {0: 0, 255: 1}  # what the data pipeline does for 0/255 masks
        if lut is not None:
            unknown = [v for v in vals if v not in lut]
            if unknown:
                self.add(path, "classes", f"label values {unknown[:8]} are not in the label map {lut}")
                return
            mapped: Counter = Counter()
            for v, n in zip(vals, counts):
                mapped[int(lut[v])] += int(n)
            vals, counts = list(mapped), np.asarray(list(mapped.values()))
        if self.declared is not None:
            bad = [v for v in vals if v not in self.declared]
            if bad:
                top = max(self.declared) if self.declared else -1
                self.add(path, "classes", f"label values {bad[:8]} are not declared classes (0..{top})")
        for v, n in zip(vals, counts):
            self.voxels[v] += int(n)
            self.cases_with[v] += 1
        fg, n = _components(label > 0)
        self.objects_per_case.append(n)
        if n:
            self.object_sizes.append(np.bincount(fg.ravel())[1:])

    def check_instances(self, path: Path, label: np.ndarray, values: np.ndarray) -> None:
        vals = [int(v) for v in values]
        if vals and vals[0] < 0:
            self.add(path, "classes", f"instance ids must be >= 0, found {vals[0]}")
            return
        if vals == [0, 255]:
            self.add(path, "binary", "binary mask (values 0 and 255) where instance ids 1..N are required")
            return
        if vals == [0, 1]:
            _, n = _components(label == 1)
            if n > 1:
                self.add(path, "binary", f"binary mask (values 0 and 1 forming {n} objects) where instance ids are "
                                         "required")
                return
        ids = [v for v in vals if v > 0]
        # class frequencies of what training sees: background (0) and foreground (any id)
        self.voxels[0] += int((label == 0).sum())
        self.voxels[1] += int((label > 0).sum())
        self.cases_with[0] += int(0 in vals)
        self.cases_with[1] += int(bool(ids))
        self.objects_per_case.append(len(ids))
        if not ids:
            return
        self.object_sizes.append(np.bincount(label.ravel())[ids])
        split = []
        boxes = ndimage.find_objects(label)
        for i in ids:
            box = boxes[i - 1]
            _, n = _components(label[box] == i)
            if n > 1:
                split.append((i, n))
        if split:
            shown = ", ".join(f"{i} ({n} parts)" for i, n in split[:5])
            more = f" and {len(split) - 5} more" if len(split) > 5 else ""
            self.add(path, "split", f"{len(split)} instance ids cover several separate components: {shown}{more}",
                     False)

    # -- whole dataset ------------------------------------------------------------------------
    def finish(self) -> None:
        idx, rep = self.index, self.report
        if self.channels:
            common = Counter(self.channels.values()).most_common(1)[0][0]
            for f, c in self.channels.items():
                if c != common:
                    self.add(f, "channels", f"{c} channel(s), but most cases have {common}")
            if idx.channel_names and len(idx.channel_names) != common:
                self.add(idx.root / "dataset.json", "channels",
                         f"declares {len(idx.channel_names)} channels, but the images have {common}")
            ndim = Counter(self.ndims.values()).most_common(1)[0][0]
            for f, d in self.ndims.items():
                if d != ndim:
                    self.add(f, "shape", f"{d}D image, but most cases are {ndim}D")
        if not self.instances and self.declared is None and self.voxels:
            seen = sorted(self.voxels)
            if seen != list(range(seen[-1] + 1)):
                missing = sorted(set(range(seen[-1] + 1)) - set(seen))
                hint = " (0/255 masks: set data.num_classes: 2)" if seen == [0, 255] else ""
                self.add(idx.root, "consecutive", (
                    f"label values {_short(seen)} are not consecutive: {len(missing)} values between 0 and {seen[-1]} "
                    f"never occur{hint}"), False)
        if self.declared is not None and not self.instances and self.labelled:
            never = sorted(self.declared - set(self.voxels))
            if never:
                names = ", ".join(f"{v} ({self.names[v]})" if v in self.names else str(v) for v in never[:8])
                self.add(idx.root, "classes", f"declared classes never occur in any label: {names}", False)
        total = sum(self.voxels.values())
        sizes = np.concatenate(self.object_sizes) if self.object_sizes else np.zeros(0, int)
        rep.summary = {
            "layout": idx.layout,
            "split": idx.split,
            "cases": len(idx.cases),
            "labelled": self.labelled,
            "channels": dict(Counter(self.channels.values())),
            "channel_names": idx.channel_names,
            "sizes": _stats_per_axis(self.sizes),
            "spacings": dict(self.spacings.most_common()),
            "intensity": tuple(self.intensity) if np.isfinite(self.intensity[0]) else None,
            "classes": {
                v: {"name": self.names.get(v, "foreground" if self.instances and v == 1 else None),
                    "voxels": n, "fraction": n / total if total else 0.0, "cases": self.cases_with[v]}
                for v, n in sorted(self.voxels.items())
            },
            "objects": {
                "what": "instance ids" if self.instances else "connected components of the foreground",
                "total": int(sizes.size),
                "per_case": _stats(self.objects_per_case),
                "size": _stats(sizes),
            },
        }


def _stats(values: Any) -> tuple[float, float, float] | None:
    a = np.asarray(values, dtype=np.float64)
    return (float(a.min()), float(np.median(a)), float(a.max())) if a.size else None


def _stats_per_axis(sizes: list[tuple[int, ...]]) -> dict[str, tuple[int, ...]] | None:
    if not sizes or len({len(s) for s in sizes}) != 1:
        return None
    a = np.asarray(sizes)
    return {"min": tuple(int(v) for v in a.min(0)), "median": tuple(int(v) for v in np.median(a, 0)),
            "max": tuple(int(v) for v in a.max(0))}


def _fmt(values: Any) -> str:
    return " x ".join(f"{v:.4g}" for v in values)


def _short(values: list[int]) -> str:
    return str(values) if len(values) <= 8 else f"[{', '.join(map(str, values[:6]))}, ..., {values[-1]}]"


def format_report(report: CheckReport) -> str:
    """The report as text for a terminal: problems (errors first), then the summary.

    Example:
        >>> print(format_report(CheckReport(Path("data"), "folders", "train")).splitlines()[0])
        densemed check data (folders layout, train split)
    """
    lines = [f"densemed check {report.root} ({report.layout or 'unknown'} layout, {report.split} split)"]
    errors = [p for p in report.problems if p.fatal]
    warnings = [p for p in report.problems if not p.fatal]
    if report.problems:
        lines.append(f"{len(report.problems)} problem(s): {len(errors)} error(s) (would break training), "
                     f"{len(warnings)} warning(s)")
        for p in report.problems:
            lines.append(f"  {'error' if p.fatal else 'warning':<7} {p.kind:<11} {p}")
    else:
        lines.append("no problems found")
    s = report.summary
    if s:
        lines.append("summary")
        lines.append(f"  cases      {s['cases']} ({s['labelled']} labelled)")
        chans = ", ".join(f"{c} in {n} cases" if len(s["channels"]) > 1 else str(c) for c, n in s["channels"].items())
        names = f" ({', '.join(s['channel_names'].values())})" if s.get("channel_names") else ""
        lines.append(f"  channels   {chans}{names}")
        if s["sizes"]:
            lines.append("  size       " + ", ".join(f"{k} {' x '.join(map(str, v))}" for k, v in s["sizes"].items()))
        if s["spacings"]:
            sp = list(s["spacings"].items())
            text = "; ".join(f"{_fmt(k)} ({n})" for k, n in sp[:4]) + (f"; {len(sp) - 4} more" if len(sp) > 4 else "")
            lines.append(f"  spacing    {text}")
        if s["intensity"]:
            lines.append(f"  intensity  {s['intensity'][0]:.4g} .. {s['intensity'][1]:.4g}")
        classes = list(s["classes"].items())
        if classes:
            lines.append(f"  classes    {len(classes)} values" if len(classes) > 10 else "  classes")
            for v, c in sorted(classes, key=lambda kv: -kv[1]["voxels"])[:10]:
                name = f" {c['name']}" if c["name"] else ""
                lines.append(f"    {v}{name}: {100 * c['fraction']:.2f}% of voxels, in {c['cases']} cases")
            if len(classes) > 10:
                lines.append(f"    ... {len(classes) - 10} more values")
        o = s["objects"]
        if o["per_case"]:
            pc, sz = o["per_case"], o["size"]
            text = f"  objects    {o['total']} {o['what']}; per case {pc[0]:.0f}..{pc[2]:.0f} (median {pc[1]:.0f})"
            if sz:
                text += f"; size {sz[0]:.0f}..{sz[2]:.0f} voxels (median {sz[1]:.0f})"
            lines.append(text)
    lines.append(f"result: {len(errors)} errors would break training" if errors else "result: ok")
    return "\n".join(lines)
