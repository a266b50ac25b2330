"""Readers and writers for 2D (PNG, TIFF) and 3D (NIfTI, NRRD) images and label maps.

Arrays are channel-first: images come back as ``(C, *S)`` (grey ``C=1``, RGB ``C=3``; an alpha
channel is dropped), label maps as integer ``(*S)``. NIfTI arrays keep the file's voxel axis
order; their ``affine`` and header travel in :class:`ImageMeta` so predictions are written back
on the input's grid, and ``spacing`` (voxel size in mm) feeds distance-based metrics. NRRD files
(``.nrrd``) go through :mod:`densemed.data.nrrd` (needs ``pynrrd``), which keeps their geometry the
same way (``affine`` in RAS).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from densemed.errors import DensemedError
from densemed.typing import PathType

NIFTI_SUFFIXES = (".nii.gz", ".nii")
IMAGE_2D_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
NRRD_SUFFIXES = (".nrrd",)
SUFFIXES = NIFTI_SUFFIXES + IMAGE_2D_SUFFIXES + NRRD_SUFFIXES


@dataclass
class ImageMeta:
    """Where an array came from and how to write a result back in the same format."""

    path: Path
    format: str  # "png" | "tiff" | "nifti" | "jpeg" | "bmp" | "nrrd" | "dicom"
    spacing: tuple[float, ...] | None = None
    affine: np.ndarray | None = None
    header: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def split_name(path: PathType) -> tuple[str, str]:
    """``("case_01", ".nii.gz")`` for ``case_01.nii.gz``; handles the double NIfTI suffix."""
    name = Path(path).name
    low = name.lower()
    for suf in SUFFIXES:
        if low.endswith(suf):
            return name[: -len(suf)], name[-len(suf):]
    return Path(name).stem, Path(name).suffix


def is_supported(path: PathType) -> bool:
    """True when ``path`` has a suffix densemed can read."""
    return str(path).lower().endswith(SUFFIXES)


def _format_of(path: Path) -> str:
    low = path.name.lower()
    if low.endswith(NIFTI_SUFFIXES):
        return "nifti"
    if low.endswith((".tif", ".tiff")):
        return "tiff"
    if low.endswith(".png"):
        return "png"
    if low.endswith((".jpg", ".jpeg")):
        return "jpeg"
    if low.endswith(".bmp"):
        return "bmp"
    if low.endswith(NRRD_SUFFIXES):
        return "nrrd"
    raise DensemedError(f"{path}: unsupported file type (use PNG, TIFF, NIfTI .nii/.nii.gz or NRRD .nrrd)")


def _read_raw(path: PathType) -> tuple[np.ndarray, ImageMeta]:
    path = Path(path)
    if not path.is_file():
        raise DensemedError(f"{path}: file not found")
    fmt = _format_of(path)
    try:
        if fmt == "nifti":
            import nibabel as nib

            img = nib.load(str(path))
            arr = np.asanyarray(img.dataobj)
            zooms = tuple(float(z) for z in img.header.get_zooms()[: arr.ndim])
            return np.asarray(arr), ImageMeta(path, fmt, zooms, img.affine.copy(), img.header.copy())
        if fmt == "tiff":
            import tifffile

            return np.asarray(tifffile.imread(str(path))), ImageMeta(path, fmt)
        from PIL import Image

        with Image.open(path) as im:
            im.load()
            mode = im.mode
            arr = np.asarray(im)
        return arr, ImageMeta(path, fmt, extra={"mode": mode})
    except DensemedError:
        raise
    except Exception as exc:  # the reader libraries raise many types for corrupt files
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DensemedError(f"{path}: cannot read ({msg})") from None


def read_image(path: PathType, dims: int | None = None) -> tuple[np.ndarray, ImageMeta]:
    """Read an image as float32 ``(C, *S)``.

    2D files: grey ``(H, W)`` -> ``(1, H, W)``; colour ``(H, W, 3|4)`` -> ``(3, H, W)`` (alpha dropped).
    NIfTI: ``(X, Y, Z)`` -> ``(1, X, Y, Z)``; a 4th axis is taken as channels. NRRD: see
    :func:`densemed.data.nrrd.read_nrrd`.
    """
    if str(path).lower().endswith(NRRD_SUFFIXES):
        from densemed.data.nrrd import read_nrrd

        return read_nrrd(path, dims)
    arr, meta = _read_raw(path)
    if meta.format == "nifti":
        if arr.ndim == 3:
            arr = arr[None]
        elif arr.ndim == 4:
            arr = np.moveaxis(arr, -1, 0)
        else:
            raise DensemedError(f"{meta.path}: expected a 3D or 4D NIfTI volume, got {arr.ndim} dimensions")
    else:
        if arr.ndim == 2:
            arr = arr[None]
        elif arr.ndim == 3 and arr.shape[-1] in (3, 4):
            arr = np.moveaxis(arr[..., :3], -1, 0)
        elif arr.ndim == 3 and dims == 3:  # a TIFF stack as a volume
            arr = arr[None]
        else:
            raise DensemedError(f"{meta.path}: cannot interpret an image of shape {arr.shape}")
    if dims is not None and arr.ndim - 1 != dims:
        raise DensemedError(f"{meta.path}: expected a {dims}D image, got shape {arr.shape[1:]}")
    return np.ascontiguousarray(arr, dtype=np.float32), meta


def read_label(path: PathType, dims: int | None = None) -> tuple[np.ndarray, ImageMeta]:
    """Read a label map as int64 ``(*S)``; float files must hold whole numbers."""
    if str(path).lower().endswith(NRRD_SUFFIXES):
        from densemed.data.nrrd import read_nrrd_label

        return read_nrrd_label(path, dims)
    arr, meta = _read_raw(path)
    if arr.ndim == 3 and meta.format != "nifti" and arr.shape[-1] in (3, 4):
        chans = arr[..., :3]
        if not (np.array_equal(chans[..., 0], chans[..., 1]) and np.array_equal(chans[..., 0], chans[..., 2])):
            raise DensemedError(f"{meta.path}: a label map must have one channel, got a colour image")
        arr = chans[..., 0]
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if dims is not None and arr.ndim != dims:
        raise DensemedError(f"{meta.path}: expected a {dims}D label map, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer) and not np.issubdtype(arr.dtype, np.bool_):
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise DensemedError(f"{meta.path}: label map holds non-integer values (dtype {arr.dtype})")
    return np.ascontiguousarray(arr, dtype=np.int64), meta


def write_label(path: PathType, label: np.ndarray, like: ImageMeta | None = None) -> Path:
    """Write an integer label map ``(*S)`` in the format given by ``path``'s suffix.

    NIfTI copies ``like``'s affine and header (dtype set to uint8/uint16); PNG uses 8 bits when
    values fit, else 16. Written atomically (temporary file, then rename).
    """
    path = Path(path)
    label = np.asarray(label)
    dtype = np.uint8 if label.max(initial=0) < 256 else np.uint16
    return _atomic_write(path, label.astype(dtype), like)


def write_float(path: PathType, data: np.ndarray, like: ImageMeta | None = None) -> Path:
    """Write a float32 map ``(*S)`` (probabilities, super-resolved volumes) as TIFF or NIfTI."""
    return _atomic_write(Path(path), np.asarray(data, dtype=np.float32), like)


def _atomic_write(path: Path, arr: np.ndarray, like: ImageMeta | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fmt = _format_of(path)
    if fmt == "nrrd":  # gzip NRRD on like's grid, written atomically by the NRRD module
        from densemed.data.nrrd import write_nrrd

        return write_nrrd(path, arr, like)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}{split_name(path)[1]}")
    try:
        if fmt == "nifti":
            import nibabel as nib

            affine = like.affine if like is not None and like.affine is not None else np.eye(4)
            header = like.header.copy() if like is not None and like.header is not None else None
            img = nib.Nifti1Image(arr, affine, header)
            img.set_data_dtype(arr.dtype)
            nib.save(img, str(tmp))
        elif fmt == "tiff":
            import tifffile

            tifffile.imwrite(str(tmp), arr)
        else:
            from PIL import Image

            if arr.dtype == np.float32:
                raise DensemedError(f"{path}: float maps are written as .tif or .nii.gz, not {fmt}")
            Image.fromarray(arr).save(tmp, format="PNG" if fmt == "png" else fmt.upper())
        os.replace(tmp, path)
    except OSError as exc:  # a full disk, a quota, a read-only folder: one line, the old file kept
        raise write_error(path, exc) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


class WriteFailed(DensemedError, OSError):
    """A write that failed: a user-facing line (:class:`DensemedError`) that is still an :class:`OSError`."""


def write_error(path: PathType, exc: BaseException) -> WriteFailed:
    """The one line for a write that failed (disk full, quota, read-only, file too large).

    Writers go through a temporary file and a rename, so the target is either the previous file
    or absent; the line says which, with the free space left on that disk. The error is both a
    :class:`DensemedError` (the CLI prints the line, exit 2) and an :class:`OSError` (what callers
    of a writer already catch).
    """
    import shutil

    path = Path(path)
    if isinstance(exc, OSError) and exc.strerror:
        reason = exc.strerror
    else:  # torch's zip writer reports a short write as "[enforce fail at inline_container.cc] ..."
        reason = "the file could not be written completely"
    try:
        free = shutil.disk_usage(path.parent).free
        reason += f"; {free / 2**20:.1f} MiB free on that disk"
    except OSError:
        pass
    kept = f"the previous {path.name} is unchanged" if path.exists() else "no partial file was left"
    return WriteFailed(f"{path}: cannot write ({reason}); {kept}")


def write_text_atomic(path: PathType, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename (a run's ``config.yaml``, ``metrics.jsonl``).

    A write that fails (a full disk, a read-only folder) raises :func:`write_error`'s one line
    naming ``path``; the previous file stays as it was and no temporary file remains.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    except OSError as exc:
        raise write_error(path, exc) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def remove_stale_temporaries(folder: PathType) -> list[Path]:
    """Delete the temporary files ``.<name>.tmp<pid>[suffix]`` that writers of dead processes left in ``folder``.

    A process killed between writing a temporary file and renaming it (``kill -9``) leaves one;
    the target itself is intact. Files of live processes (the pid still runs) are kept.
    """
    import re

    pattern = re.compile(r"^\.(.+)\.tmp(\d+)(\.[^.]+(\.gz)?)?$")
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for f in folder.iterdir():
        m = pattern.match(f.name)
        if m is None or not f.is_file() or int(m.group(2)) == os.getpid():
            continue
        try:
            os.kill(int(m.group(2)), 0)
            continue  # still running: its temporary file is in use
        except ProcessLookupError:
            pass
        except (PermissionError, OverflowError):
            continue
        f.unlink(missing_ok=True)
        removed.append(f)
    return removed
