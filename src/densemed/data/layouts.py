"""Dataset folder layouts read without conversion: densemed folders, nnU-Net v2 raw, MSD.

Three layouts are recognised (:func:`detect_layout`):

``folders`` (densemed's own)
    ``images/<stem>.<ext>`` and ``labels/<stem>.<ext>`` with the same stem. A multi-channel case
    is one file (RGB PNG, 4D NIfTI). An optional ``dataset.json`` may name the classes
    (``labels``, either ``{"name": int}`` or ``{"int": "name"}``) and channels (``channel_names``).
    Only a ``train`` split.
``nnunet`` (nnU-Net v2 raw dataset)
    ``imagesTr/<case>_<XXXX><file_ending>`` with one file per channel (``_0000``, ``_0001``, ...,
    four digits) stacked into channels in suffix order, ``labelsTr/<case><file_ending>``,
    optional ``imagesTs/`` (and ``labelsTs/``) for the ``test`` split, and ``dataset.json`` with
    ``channel_names`` (``{"0": "T2", ...}``; nnU-Net v1's ``modality`` is accepted), ``labels``
    (``{"background": 0, "tumour": 1}``), ``numTraining`` and ``file_ending``. Region-based
    labels (a value that is a list of ints, for nnU-Net's overlapping-region training) are
    refused: densemed trains mutually exclusive classes. A file may hold several channels itself
    (nnU-Net's RGB PNGs are one ``_0000.png`` with three ``channel_names``).
``msd`` (Medical Segmentation Decathlon)
    ``dataset.json`` with ``training: [{"image": "./imagesTr/x.nii.gz", "label": ...}]``,
    ``test: ["./imagesTs/y.nii.gz"]``, ``labels`` (``{"0": "background", ...}``) and
    ``modality`` (``{"0": "FLAIR", "1": "T1w", ...}``). Multi-channel images are one 4D NIfTI
    with the channels on the **last** axis, ``(X, Y, Z, C)``; :func:`densemed.data.io.read_image`
    moves that axis to the front, so case arrays are ``(C, X, Y, Z)`` with channel ``c`` the
    ``modality`` entry ``"c"``, the same order nnU-Net's ``_000c`` files use.

Detection (``layout="auto"``): a ``dataset.json`` with a ``training`` list is MSD (nnU-Net v1
used the MSD format too); one with ``file_ending``, or an ``imagesTr/`` folder, is nnU-Net v2;
otherwise ``images/`` means ``folders``.

Files whose name starts with ``.`` are skipped (the ``._x.nii.gz`` AppleDouble files that the
macOS tar of the MSD archives leaves next to every volume).

Problems found while indexing (a missing partner file, a channel file missing for one case) are
collected by :func:`scan` with the file that has them, for :mod:`densemed.data.check`;
:func:`discover` raises the first one that would break training as a
:class:`~densemed.errors.DensemedError`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from densemed.data.io import ImageMeta, is_supported, read_image, split_name
from densemed.errors import DensemedError
from densemed.typing import PathType

LAYOUTS = ("folders", "nnunet", "msd")
SPLITS = ("train", "test")
_CHANNEL_SUFFIX = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")


class CaseFiles(NamedTuple):
    """One case: its stem, its image files in channel order, its label file (None if unlabelled)."""

    stem: str
    images: list[Path]
    label: Path | None


@dataclass
class Issue:
    """A problem found while indexing a dataset, with the file that has it.

    ``fatal`` marks problems that would break training (a missing label, a missing channel file).
    """

    path: Path
    kind: str
    message: str
    fatal: bool = True

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class DatasetIndex:
    """The files of one split of a dataset and what its ``dataset.json`` declares.

    Attributes:
        root: the dataset folder.
        layout: ``folders``, ``nnunet`` or ``msd``.
        split: ``train`` or ``test``.
        cases: ``(stem, [image per channel file], label or None)``, sorted by stem.
        class_names: ``{class index: name}`` from ``dataset.json``, or None when not declared.
        channel_names: ``{channel index: name}`` (nnU-Net ``channel_names``, MSD ``modality``), or None.
        file_ending: nnU-Net's ``file_ending`` (``.nii.gz``, ``.png``); None for other layouts.
        num_training: ``numTraining`` from ``dataset.json``, or None.
        ignore_label: value of nnU-Net's ``ignore`` label (not trained on there), or None;
            densemed does not treat it specially yet, it is carried for the caller.
        issues: problems noticed while indexing, with their file; after :func:`discover` only
            non-fatal ones remain (a label without an image, a ``numTraining`` mismatch).
    """

    root: Path
    layout: str
    split: str
    cases: list[CaseFiles]
    class_names: dict[int, str] | None = None
    channel_names: dict[int, str] | None = None
    file_ending: str | None = None
    num_training: int | None = None
    ignore_label: int | None = None
    issues: list[Issue] = field(default_factory=list)

    @property
    def stems(self) -> list[str]:
        """Case stems in index order."""
        return [c.stem for c in self.cases]

    def __len__(self) -> int:
        return len(self.cases)


def detect_layout(root: PathType) -> str:
    """``"folders"``, ``"nnunet"`` or ``"msd"`` for the dataset folder ``root``.

    Raises:
        DensemedError: ``root`` is not a folder or matches no layout.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp()); (d / "images").mkdir()
        >>> print(detect_layout(d))
        folders
    """
    root = Path(root)
    if not root.is_dir():
        raise DensemedError(f"{root}: dataset folder not found")
    js = root / "dataset.json"
    if js.is_file():
        meta = _load_json(js)
        if isinstance(meta.get("training"), list):
            return "msd"
        if "file_ending" in meta or (root / "imagesTr").is_dir():
            return "nnunet"
        if (root / "images").is_dir():  # today's layout with class names in dataset.json
            return "folders"
        raise DensemedError(
            f"{js}: neither an MSD dataset.json (no 'training' list) nor an nnU-Net v2 one "
            f"(no 'file_ending'), and {root} has no imagesTr/ or images/ folder"
        )
    if (root / "imagesTr").is_dir():
        raise DensemedError(f"{js}: not found (imagesTr/ suggests an nnU-Net or MSD dataset, which needs it)")
    if (root / "images").is_dir():
        return "folders"
    raise DensemedError(
        f"{root}: no dataset layout found (expected images/ + labels/, an nnU-Net v2 raw dataset with "
        "imagesTr/ and dataset.json, or an MSD dataset.json)"
    )


def discover(
    root: PathType,
    layout: str = "auto",
    split: str = "train",
    image_dir: str = "images",
    label_dir: str = "labels",
) -> DatasetIndex:
    """Index the cases of ``split`` in the dataset at ``root``.

    Args:
        root: dataset folder.
        layout: ``auto`` (see :func:`detect_layout`), ``folders``, ``nnunet`` or ``msd``.
        split: ``train`` (labelled cases) or ``test`` (nnU-Net ``imagesTs/``, MSD ``test``).
        image_dir: image folder of the ``folders`` layout.
        label_dir: label folder of the ``folders`` layout (e.g. ``instances``).

    Returns:
        The index; every ``train`` case has a label.

    Raises:
        DensemedError: naming the file: a missing partner file, a malformed or region-based
            ``dataset.json``, an empty dataset.

    Example:
        >>> import tempfile, pathlib, numpy as np
        >>> from densemed.data.io import write_label
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> _ = write_label(d / "images" / "a.png", np.zeros((4, 5), np.uint8))
        >>> _ = write_label(d / "labels" / "a.png", np.zeros((4, 5), np.uint8))
        >>> print(discover(d).cases[0].stem)
        a
    """
    index = scan(root, layout, split, image_dir, label_dir)
    raise_first_fatal(index.issues)
    if not index.cases:
        raise DensemedError(f"{index.root}: no {split} cases found ({index.layout} layout)")
    return index


def raise_first_fatal(issues: list[Issue], check_command: str = "densemed check") -> None:
    """Raise the first fatal issue, with the count of the others and a pointer to ``check_command``.

    Raises:
        DensemedError: ``"<file>: <message> (and N more problems; run `densemed check`)"``.
    """
    fatal = [i for i in issues if i.fatal]
    if fatal:
        more = f" (and {len(fatal) - 1} more problems; run `{check_command}`)" if len(fatal) > 1 else ""
        raise DensemedError(f"{fatal[0]}{more}")


def scan(
    root: PathType,
    layout: str = "auto",
    split: str = "train",
    image_dir: str = "images",
    label_dir: str = "labels",
) -> DatasetIndex:
    """Like :func:`discover`, but collects file problems in ``index.issues`` instead of raising.

    Cases with a fatal problem (e.g. no label) are left out of ``index.cases``. A malformed
    ``dataset.json`` still raises unless the problem is limited to its ``labels`` (region-based
    entries), which becomes an issue.
    """
    root = Path(root)
    if split not in SPLITS:
        raise DensemedError(f"split: must be one of {SPLITS}, got {split!r}")
    layout = detect_layout(root) if layout == "auto" else layout
    if layout not in LAYOUTS:
        raise DensemedError(f"data.layout: must be 'auto' or one of {LAYOUTS}, got {layout!r}")
    if not root.is_dir():
        raise DensemedError(f"{root}: dataset folder not found")
    scanner = {"folders": _scan_folders, "nnunet": _scan_nnunet, "msd": _scan_msd}[layout]
    index = scanner(root, split, image_dir, label_dir)
    index.cases.sort(key=lambda c: c.stem)
    return index


def read_case_image(paths: list[Path] | tuple[Path, ...], dims: int | None = None) -> tuple[np.ndarray, ImageMeta]:
    """Read a case's channel files and stack them into one float32 ``(C, *S)`` array.

    Each file is read with :func:`densemed.data.io.read_image` (so a file may hold several
    channels itself) and the files are concatenated along channels in the given order.

    Args:
        paths: the case's image files in channel order (``CaseFiles.images``).
        dims: expected spatial dimensionality (2 or 3), or None.

    Returns:
        The stacked image and the first file's :class:`ImageMeta` (spacing cut to the spatial
        axes: nibabel reports a 4th zoom for 4D files).

    Raises:
        DensemedError: a file cannot be read, or its spatial size differs from the first file's.

    Shape:
        ``C`` is the sum of the files' channels; ``S`` the common spatial size.

    Example:
        >>> import tempfile, pathlib, numpy as np
        >>> from densemed.data.io import write_label
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> files = [write_label(d / f"x_{c:04d}.png", np.full((4, 5), c, np.uint8)) for c in range(2)]
        >>> print(read_case_image(files, dims=2)[0].shape)
        (2, 4, 5)
    """
    if not paths:
        raise DensemedError("read_case_image: no image files given")
    arrays, first = [], None
    for p in paths:
        arr, meta = read_image(p, dims)
        if first is None:
            first = meta
        elif arr.shape[1:] != arrays[0].shape[1:]:
            raise DensemedError(
                f"{p}: channel file has spatial size {arr.shape[1:]}, but {paths[0]} has {arrays[0].shape[1:]}"
            )
        arrays.append(arr)
    assert first is not None
    spatial = arrays[0].ndim - 1
    if first.spacing is not None and len(first.spacing) > spatial:
        first.spacing = tuple(first.spacing[:spatial])
    image = arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=0)
    return image, first


# -- dataset.json --------------------------------------------------------------------------


def _load_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError) as exc:
        raise DensemedError(f"{path}: cannot read ({exc})") from None
    except json.JSONDecodeError as exc:
        raise DensemedError(f"{path}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    if not isinstance(data, dict):
        raise DensemedError(f"{path}: expected a JSON object at the top level")
    return data


def _int_keys(mapping: Any, path: Path, key: str) -> dict[int, str]:
    """``{"0": "T1", "1": "T2"}`` -> ``{0: "T1", 1: "T2"}``."""
    if not isinstance(mapping, dict):
        raise DensemedError(f"{path}: '{key}' must be an object like {{\"0\": \"name\"}}, got {type(mapping).__name__}")
    out = {}
    for k, v in mapping.items():
        try:
            out[int(k)] = str(v)
        except (TypeError, ValueError):
            raise DensemedError(f"{path}: '{key}' key {k!r} is not an integer index") from None
    return dict(sorted(out.items()))


def _class_names(labels: Any, path: Path, issues: list[Issue]) -> tuple[dict[int, str], int | None]:
    """Class names from ``labels`` in either direction; region-based entries become fatal issues.

    nnU-Net v2 maps name -> int (or -> list of ints for a region); MSD maps "int" -> name.
    Returns ``({index: name}, ignore label value or None)``.
    """
    if not isinstance(labels, dict) or not labels:
        raise DensemedError(f"{path}: 'labels' must be a non-empty object")
    names: dict[int, str] = {}
    ignore = None
    if all(isinstance(k, str) and k.strip().lstrip("-").isdigit() for k in labels):  # MSD style
        for k, v in labels.items():
            names[int(k)] = str(v)
        return dict(sorted(names.items())), None
    for name, value in labels.items():
        if isinstance(value, (list, tuple)):
            issues.append(Issue(path, "regions", (
                f"label {name!r} is region-based ({list(value)}); region-based (overlapping) classes are not "
                "supported: give each class a single integer value"), True))
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise DensemedError(f"{path}: label {name!r} must map to an integer, got {value!r}")
        if value in names:
            raise DensemedError(f"{path}: labels {names[value]!r} and {name!r} share the value {value}")
        names[value] = str(name)
        if name == "ignore":
            ignore = value
    return dict(sorted(names.items())), ignore


# -- layouts -----------------------------------------------------------------------------------


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and is_supported(p))


def _scan_folders(root: Path, split: str, image_dir: str, label_dir: str) -> DatasetIndex:
    if split != "train":
        raise DensemedError(f"{root}: the folders layout (images/ + labels/) has no {split!r} split")
    index = DatasetIndex(root, "folders", split, [])
    js = root / "dataset.json"
    if js.is_file():
        meta = _load_json(js)
        if "labels" in meta:
            index.class_names, index.ignore_label = _class_names(meta["labels"], js, index.issues)
        if "channel_names" in meta:
            index.channel_names = _int_keys(meta["channel_names"], js, "channel_names")
    img_dir, lab_dir = root / image_dir, root / label_dir
    if not img_dir.is_dir():
        raise DensemedError(f"{img_dir}: image folder not found")
    if not lab_dir.is_dir():
        raise DensemedError(f"{lab_dir}: label folder not found")
    labels = {split_name(p)[0]: p for p in _files(lab_dir)}
    seen = set()
    for img in _files(img_dir):
        stem = split_name(img)[0]
        if stem in seen:
            index.issues.append(Issue(img, "duplicate", f"a second image with stem {stem!r}"))
            continue
        seen.add(stem)
        if stem not in labels:
            index.issues.append(Issue(img, "missing", f"no label file with stem {stem!r} in {lab_dir}"))
            continue
        index.cases.append(CaseFiles(stem, [img], labels[stem]))
    for stem, lab in labels.items():
        if stem not in seen:
            index.issues.append(Issue(lab, "orphan", f"label without an image with stem {stem!r} in {img_dir}", False))
    return index


def _scan_nnunet(root: Path, split: str, image_dir: str, label_dir: str) -> DatasetIndex:
    js = root / "dataset.json"
    if not js.is_file():
        raise DensemedError(f"{js}: not found (an nnU-Net v2 raw dataset needs it)")
    meta = _load_json(js)
    index = DatasetIndex(root, "nnunet", split, [])
    if "labels" not in meta:
        raise DensemedError(f"{js}: 'labels' missing")
    index.class_names, index.ignore_label = _class_names(meta["labels"], js, index.issues)
    channels = meta.get("channel_names", meta.get("modality"))
    if channels is None:
        raise DensemedError(f"{js}: 'channel_names' missing")
    index.channel_names = _int_keys(channels, js, "channel_names")
    ending = meta.get("file_ending")
    if not isinstance(ending, str) or not ending.startswith("."):
        raise DensemedError(f"{js}: 'file_ending' missing or not a suffix like \".nii.gz\" (got {ending!r})")
    index.file_ending = ending
    if "numTraining" in meta:
        try:
            index.num_training = int(meta["numTraining"])
        except (TypeError, ValueError):
            raise DensemedError(f"{js}: 'numTraining' must be an integer, got {meta['numTraining']!r}") from None
    img_dir = root / ("imagesTr" if split == "train" else "imagesTs")
    lab_dir = root / ("labelsTr" if split == "train" else "labelsTs")
    if not img_dir.is_dir():
        raise DensemedError(f"{img_dir}: image folder not found")
    if split == "train" and not lab_dir.is_dir():
        raise DensemedError(f"{lab_dir}: label folder not found")

    def with_ending(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")
                      and p.name.endswith(ending))

    by_case: dict[str, dict[int, Path]] = {}
    for p in with_ending(img_dir):
        m = _CHANNEL_SUFFIX.match(p.name[: -len(ending)])
        if m is None:
            index.issues.append(Issue(p, "name", f"image name lacks the 4-digit channel suffix (_0000{ending})"))
            continue
        by_case.setdefault(m["case"], {})[int(m["channel"])] = p
    labels = {p.name[: -len(ending)]: p for p in with_ending(lab_dir)} if lab_dir.is_dir() else {}
    n_files = max((len(c) for c in by_case.values()), default=0)
    for case, chans in sorted(by_case.items()):
        # every case must have _0000 .. _{n-1}, n the largest count seen: one file per channel
        missing = [c for c in range(n_files) if c not in chans]
        extra = sorted(c for c in chans if c >= n_files)
        if missing or extra:
            for c in extra:
                index.issues.append(Issue(chans[c], "name", f"channel {c} but case {case!r} lacks lower channel files"))
            for c in missing:
                index.issues.append(Issue(img_dir / f"{case}_{c:04d}{ending}", "missing", (
                    f"channel file missing for case {case!r} (other cases have {n_files} channel files)")))
            continue
        label = labels.get(case)
        if label is None and split == "train":
            index.issues.append(Issue(chans[0], "missing", f"no label file {lab_dir / (case + ending)}"))
            continue
        index.cases.append(CaseFiles(case, [chans[c] for c in range(n_files)], label))
    for case, lab in labels.items():
        if case not in by_case:
            index.issues.append(Issue(lab, "orphan", f"label without image files {img_dir / (case + '_0000' + ending)}",
                                      split == "train"))
    if split == "train" and index.num_training is not None and index.num_training != len(by_case):
        index.issues.append(Issue(js, "count", (
            f"numTraining is {index.num_training}, but {img_dir} holds {len(by_case)} cases"), False))
    return index


def _scan_msd(root: Path, split: str, image_dir: str, label_dir: str) -> DatasetIndex:
    js = root / "dataset.json"
    meta = _load_json(js)
    index = DatasetIndex(root, "msd", split, [])
    if "labels" in meta:
        index.class_names, index.ignore_label = _class_names(meta["labels"], js, index.issues)
    if "modality" in meta:
        index.channel_names = _int_keys(meta["modality"], js, "modality")
    if "numTraining" in meta:
        try:
            index.num_training = int(meta["numTraining"])
        except (TypeError, ValueError):
            raise DensemedError(f"{js}: 'numTraining' must be an integer, got {meta['numTraining']!r}") from None
    entries = meta.get("training" if split == "train" else "test", [])
    if not isinstance(entries, list):
        raise DensemedError(f"{js}: '{'training' if split == 'train' else 'test'}' must be a list")

    def resolve(rel: Any, where: str) -> Path:
        if not isinstance(rel, str) or not rel:
            raise DensemedError(f"{js}: {where} must be a file path, got {rel!r}")
        return root / rel  # "./imagesTr/x.nii.gz": Path drops the "./"

    seen: set[str] = set()
    for i, entry in enumerate(entries):
        if split == "train":
            if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
                raise DensemedError(f"{js}: training[{i}] must be {{\"image\": ..., \"label\": ...}}, got {entry!r}")
            image = resolve(entry["image"], f"training[{i}].image")
            label = resolve(entry["label"], f"training[{i}].label")
        else:
            rel = entry.get("image") if isinstance(entry, dict) else entry
            image, label = resolve(rel, f"test[{i}]"), None
        stem = split_name(image)[0]
        if stem in seen:
            index.issues.append(Issue(image, "duplicate", f"listed twice in {js}"))
            continue
        seen.add(stem)
        bad = False
        for p, what in ((image, "image"), (label, "label")):
            if p is not None and not p.is_file():
                index.issues.append(Issue(p, "missing", f"{what} listed in {js} not found"))
                bad = True
        if not bad:
            index.cases.append(CaseFiles(stem, [image], label))
    if split == "train" and index.num_training is not None and index.num_training != len(entries):
        index.issues.append(Issue(js, "count", (
            f"numTraining is {index.num_training}, but 'training' lists {len(entries)} cases"), False))
    return index
