"""NRRD images and label maps in and out, with their geometry (needs ``pynrrd``, pure Python).

NRRD (the format of 3D Slicer and ITK-SNAP exports) stores per axis a ``space directions`` vector
(voxel step in mm, ``none`` for a non-spatial axis), a ``space origin`` and the ``space`` they
are expressed in. Arrays are read in file axis order (``index_order="F"``: the fastest axis
first), the order the directions are listed in, like NIfTI's ``(i, j, k)``.

Geometry: the voxel -> ``space`` affine has the direction vectors of the spatial axes as columns
and the origin as translation. ``ImageMeta.affine`` is always RAS+ (as for NIfTI), so a volume
read from NRRD can be written as NIfTI on the same grid and back::

    affine_RAS = diag(f_x, f_y, f_z, 1) @ affine_space,    f = +1 for R, A, S and -1 for L, P, I

e.g. ``left-posterior-superior`` (Slicer's default) flips x and y. Spaces without an anatomical
meaning (``scanner-xyz``, ``3D-right-handed``) are taken as RAS and named in
``meta.extra["space"]``. Spacing is the length of each spatial direction vector, or the
``spacings`` field when a file has no ``space directions``.

Channels: one axis whose direction is ``none`` (kinds ``vector``, ``RGB-color``, ``list``, ...)
becomes the channel axis of ``(C, *S)``; files with several non-spatial axes are refused.
Writing uses ``left-posterior-superior`` (or the space of the NRRD the ``like`` meta was read
from) and gzip encoding.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from densemed.data.io import ImageMeta
from densemed.errors import DensemedError
from densemed.typing import PathType

#: sign of each axis relative to RAS, per NRRD space name (full and abbreviated spellings)
_SPACE_SIGNS = {
    "right-anterior-superior": (1, 1, 1), "ras": (1, 1, 1),
    "left-anterior-superior": (-1, 1, 1), "las": (-1, 1, 1),
    "left-posterior-superior": (-1, -1, 1), "lps": (-1, -1, 1),
}


def _pynrrd() -> Any:
    try:
        import nrrd
    except ImportError:
        raise DensemedError("reading or writing NRRD needs pynrrd: pip install pynrrd") from None
    return nrrd


def _space_flip(space: str | None) -> np.ndarray:
    signs = _SPACE_SIGNS.get((space or "").lower(), (1, 1, 1))
    return np.diag([*signs, 1]).astype(np.float64)


def _read(path: PathType) -> tuple[np.ndarray, ImageMeta, int | None]:
    """Raw array in file axis order, its meta, and the index of the channel axis (or None)."""
    nrrd = _pynrrd()
    path = Path(path)
    if not path.is_file():
        raise DensemedError(f"{path}: file not found")
    try:
        data, header = nrrd.read(str(path), index_order="F")
    except Exception as exc:  # pynrrd raises NRRDError, ValueError, zlib errors for bad files
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DensemedError(f"{path}: cannot read NRRD ({msg})") from None
    ndim = data.ndim
    directions = header.get("space directions")
    channel_axis = None
    spacing: tuple[float, ...] | None = None
    affine = None
    space = header.get("space")
    if directions is not None:
        directions = np.asarray(directions, dtype=np.float64)
        none_axes = [a for a in range(ndim) if not np.all(np.isfinite(directions[a]))]
        if len(none_axes) > 1:
            raise DensemedError(f"{path}: {len(none_axes)} non-spatial axes; one channel axis at most is supported")
        channel_axis = none_axes[0] if none_axes else None
        spatial = [a for a in range(ndim) if a != channel_axis]
        vectors = directions[spatial]  # (n_spatial, space_dim)
        spacing = tuple(float(np.linalg.norm(v)) for v in vectors)
        if vectors.shape == (3, 3):
            affine_space = np.eye(4)
            affine_space[:3, :3] = vectors.T  # a column per voxel axis
            origin = header.get("space origin")
            if origin is not None:
                affine_space[:3, 3] = np.asarray(origin, dtype=np.float64)
            affine = _space_flip(space) @ affine_space
    else:
        kinds = [str(k).lower() for k in header.get("kinds", ["domain"] * ndim)]
        non_domain = [a for a, k in enumerate(kinds) if k not in ("domain", "space", "time")]
        if len(non_domain) > 1:
            raise DensemedError(f"{path}: {len(non_domain)} non-spatial axes; one channel axis at most is supported")
        channel_axis = non_domain[0] if non_domain else None
        if "spacings" in header:
            sp = np.asarray(header["spacings"], dtype=np.float64)
            spacing = tuple(float(s) for a, s in enumerate(sp) if a != channel_axis and np.isfinite(s))
    # header=None: ImageMeta.header is a NIfTI header that write_label copies into NIfTI files
    extra = {"space": space, "channel_axis": channel_axis, "nrrd_header": dict(header)}
    return np.asarray(data), ImageMeta(path, "nrrd", spacing, affine, None, extra), channel_axis


def read_nrrd(path: PathType, dims: int | None = None) -> tuple[np.ndarray, ImageMeta]:
    """Read an NRRD image as float32 ``(C, *S)`` with its geometry (``affine`` voxel -> RAS mm).

    Args:
        path: ``.nrrd`` or ``.nhdr`` file.
        dims: expected spatial dimensionality, or None.

    Shape:
        ``(C, *S)``: the ``none``-direction axis first (``C = 1`` when there is none).

    Example:
        >>> image, meta = read_nrrd("ct.nrrd")  # doctest: +SKIP
        >>> print(image.shape)  # doctest: +SKIP
        (1, 512, 512, 120)
    """
    data, meta, channel_axis = _read(path)
    image = data[None] if channel_axis is None else np.moveaxis(data, channel_axis, 0)
    if dims is not None and image.ndim - 1 != dims:
        raise DensemedError(f"{meta.path}: expected a {dims}D image, got shape {image.shape[1:]}")
    return np.ascontiguousarray(image, dtype=np.float32), meta


def read_nrrd_label(path: PathType, dims: int | None = None) -> tuple[np.ndarray, ImageMeta]:
    """Read an NRRD label map as int64 ``(*S)``; float files must hold whole numbers."""
    data, meta, channel_axis = _read(path)
    if channel_axis is not None:
        if data.shape[channel_axis] != 1:
            raise DensemedError(f"{meta.path}: a label map must have one channel, got {data.shape[channel_axis]}")
        data = np.take(data, 0, axis=channel_axis)
    if dims is not None and data.ndim != dims:
        raise DensemedError(f"{meta.path}: expected a {dims}D label map, got shape {data.shape}")
    if data.dtype.kind == "f" and (not np.all(np.isfinite(data)) or np.any(data != np.round(data))):
        raise DensemedError(f"{meta.path}: label map holds non-integer values (dtype {data.dtype})")
    return np.ascontiguousarray(data, dtype=np.int64), meta


def write_nrrd(path: PathType, array: np.ndarray, like: ImageMeta | None = None) -> Path:
    """Write a label or float map ``(*S)`` as gzipped NRRD on ``like``'s grid.

    Integer arrays are stored as uint8/uint16 when they fit (like
    :func:`densemed.data.io.write_label`), floats as float32. The geometry comes from
    ``like.affine`` (RAS; any format: NIfTI, DICOM, NRRD), expressed in ``like``'s NRRD space when
    it was read from NRRD, else ``left-posterior-superior``. Written atomically.

    Example:
        >>> import tempfile, pathlib, numpy as np
        >>> p = write_nrrd(pathlib.Path(tempfile.mkdtemp()) / "x.nrrd", np.zeros((3, 4, 5), np.uint8))
        >>> print(read_nrrd_label(p)[0].shape)
        (3, 4, 5)
    """
    nrrd = _pynrrd()
    path = Path(path)
    arr = np.asarray(array)
    if arr.dtype.kind in "biu":
        top = int(arr.max(initial=0))
        arr = arr.astype(np.uint8 if top < 256 and arr.min(initial=0) >= 0 else
                         np.uint16 if top < 65536 and arr.min(initial=0) >= 0 else np.int32)
    else:
        arr = arr.astype(np.float32)
    header: dict[str, Any] = {"encoding": "gzip"}
    if like is not None and like.affine is not None and arr.ndim == 3:
        space = like.extra.get("space") if like.format == "nrrd" else None
        space = space if (space or "").lower() in _SPACE_SIGNS else "left-posterior-superior"
        affine_space = _space_flip(space) @ np.asarray(like.affine, dtype=np.float64)  # the flip is its own inverse
        header["space"] = space
        header["space directions"] = affine_space[:3, :3].T
        header["space origin"] = affine_space[:3, 3]
        header["kinds"] = ["domain"] * 3
    elif like is not None and like.spacing is not None and len(like.spacing) == arr.ndim:
        header["spacings"] = np.asarray(like.spacing, dtype=np.float64)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}.nrrd")
    try:
        nrrd.write(str(tmp), arr, header, index_order="F")
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path
