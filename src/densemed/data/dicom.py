"""DICOM series -> volume with its geometry, for prediction input (needs ``pydicom``).

A folder holding the 2D slices of one series is read into a float32 volume ``(1, X, Y, Z)`` and
an :class:`~densemed.data.io.ImageMeta` whose ``affine`` maps voxel indices to RAS+ millimetres,
the convention of NIfTI and nibabel, so a prediction written with
:func:`densemed.data.io.write_label` to ``.nii.gz`` lies on the same grid in patient space.

Geometry (DICOM PS3.3 C.7.6.2, Image Plane module). For the slice at ``ImagePositionPatient``
``P`` (the centre of its first transmitted pixel) with ``ImageOrientationPatient`` ``(r, c)``
(unit vectors along a row, i.e. of increasing column index, then along a column) and
``PixelSpacing`` ``(Δrow, Δcol)`` (distance between rows, then between columns), pixel
``(row j, column i)`` lies at::

    x_LPS = P + i * Δcol * r + j * Δrow * c

Slices are sorted by their position along the normal ``n = r × c`` (``dot(P, n)``), never by
``InstanceNumber`` or file name. The volume's axes are ``(i, j, k)`` = (column, row, slice),
the order dcm2niix and nibabel use, so the LPS affine is::

    [[Δcol*r, Δrow*c, s, P_0],      s = (P_last - P_0) / (n_slices - 1), the slice step
     [0,      0,      0, 1  ]]      (a column per axis; s follows gantry tilt when there is one)

DICOM patient coordinates are LPS (+x to the patient's Left, +y Posterior, +z Superior);
NIfTI's are RAS (+x Right, +y Anterior, +z Superior). The two differ by a sign on x and y, so
``affine_RAS = diag(-1, -1, 1, 1) @ affine_LPS``; both are kept (``meta.affine`` RAS,
``meta.extra["affine_lps"]``).

Spacing is ``(Δcol, Δrow, |s|)``: the slice spacing comes from the positions, not from
``SliceThickness`` (slices can overlap or have gaps). A series whose slice steps differ by more
than 1 % (a missing slice) is refused; a single slice gets ``SpacingBetweenSlices`` or
``SliceThickness`` (default 1 mm) along the normal. Stored values are mapped with
``RescaleSlope`` and ``RescaleIntercept`` of each slice (Hounsfield units for CT). Multi-frame
(enhanced) DICOM and colour images are not supported. Files that are not DICOM (a DICOMDIR, a
README) are skipped; several series in one folder are an error naming their UIDs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from densemed.data.io import ImageMeta
from densemed.errors import DensemedError
from densemed.typing import PathType

#: LPS (DICOM) <-> RAS (NIfTI): flip x and y. Its own inverse.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def _pydicom() -> Any:
    try:
        import pydicom
    except ImportError:
        raise DensemedError("reading DICOM needs pydicom: pip install pydicom") from None
    return pydicom


def _floats(ds: Any, key: str, n: int, path: Path) -> np.ndarray:
    value = getattr(ds, key, None)
    if value is None or len(value) != n:
        raise DensemedError(f"{path}: DICOM attribute {key} missing or not {n} numbers")
    return np.asarray([float(v) for v in value], dtype=np.float64)


def read_dicom_series(folder: PathType) -> tuple[np.ndarray, ImageMeta]:
    """Read the slices of one DICOM series in ``folder`` into a volume with its geometry.

    Args:
        folder: a folder whose DICOM files are the slices of one series (not recursed into).

    Returns:
        ``(volume, meta)``: the rescaled values and an :class:`ImageMeta` with ``format="dicom"``,
        ``spacing`` ``(Δcol, Δrow, Δslice)`` mm, ``affine`` voxel -> RAS mm, and in ``extra``
        ``affine_lps``, ``series_uid``, ``modality`` and the slice ``files`` in volume order.

    Raises:
        DensemedError: no DICOM slices, several series, inconsistent slice size or orientation,
            duplicate or unevenly spaced positions, unreadable pixel data.

    Shape:
        volume ``(1, X, Y, Z)`` float32: ``X`` columns, ``Y`` rows, ``Z`` slices, so
        ``volume[0, i, j, k]`` is pixel ``(row j, column i)`` of the ``k``-th slice along the normal.

    Example:
        >>> volume, meta = read_dicom_series("ct_series/")  # doctest: +SKIP
        >>> print(volume.shape)  # doctest: +SKIP
        (1, 512, 512, 120)
    """
    pydicom = _pydicom()
    folder = Path(folder)
    if not folder.is_dir():
        raise DensemedError(f"{folder}: DICOM series folder not found")
    slices = []
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        try:
            ds = pydicom.dcmread(str(path))
        except Exception:  # not DICOM (README, DICOMDIR fragments, thumbnails): skip
            continue
        if "PixelData" not in ds:
            continue
        slices.append((path, ds))
    if not slices:
        raise DensemedError(f"{folder}: no DICOM slices with pixel data found")
    uids = sorted({str(getattr(ds, "SeriesInstanceUID", "")) for _, ds in slices})
    if len(uids) > 1:
        raise DensemedError(f"{folder}: holds {len(uids)} series ({', '.join(uids[:3])}); put one series per folder")
    first_path, first = slices[0]
    if int(getattr(first, "NumberOfFrames", 1) or 1) > 1:
        raise DensemedError(
            f"{first_path}: multi-frame (enhanced) DICOM is not supported; convert to one file per slice"
        )
    orient = _floats(first, "ImageOrientationPatient", 6, first_path)
    row_dir, col_dir = orient[:3], orient[3:]
    normal = np.cross(row_dir, col_dir)
    d_row, d_col = _floats(first, "PixelSpacing", 2, first_path)
    shape = (int(first.Rows), int(first.Columns))
    positions = []
    for path, ds in slices:
        if (int(ds.Rows), int(ds.Columns)) != shape:
            raise DensemedError(f"{path}: slice size {(ds.Rows, ds.Columns)} differs from {first_path}'s {shape}")
        if not np.allclose(_floats(ds, "ImageOrientationPatient", 6, path), orient, atol=1e-4):
            raise DensemedError(f"{path}: slice orientation differs from {first_path}'s")
        if not np.allclose(_floats(ds, "PixelSpacing", 2, path), (d_row, d_col), rtol=1e-4):
            raise DensemedError(f"{path}: PixelSpacing differs from {first_path}'s")
        positions.append(_floats(ds, "ImagePositionPatient", 3, path))
    dist = np.array([p @ normal for p in positions])
    order = np.argsort(dist, kind="stable")
    slices = [slices[i] for i in order]
    positions = [positions[i] for i in order]
    dist = dist[order]
    if len(slices) > 1:
        gaps = np.diff(dist)
        if np.any(gaps < 1e-4):
            k = int(np.argmin(gaps))
            raise DensemedError(f"{slices[k + 1][0]}: same slice position as {slices[k][0]} (two series mixed?)")
        if np.ptp(gaps) > 0.01 * np.mean(gaps):
            raise DensemedError(
                f"{folder}: slice spacing varies from {gaps.min():.4g} to {gaps.max():.4g} mm (a missing slice?)"
            )
        step = (positions[-1] - positions[0]) / (len(slices) - 1)
    else:
        thick = getattr(first, "SpacingBetweenSlices", None) or getattr(first, "SliceThickness", None) or 1.0
        step = normal * float(thick)
    planes = []
    for path, ds in slices:
        try:
            pixels = ds.pixel_array
        except Exception as exc:  # compressed syntax without a decoder, truncated data
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DensemedError(f"{path}: cannot decode pixel data ({msg})") from None
        if pixels.ndim != 2:
            raise DensemedError(f"{path}: expected one greyscale frame, got pixel data of shape {pixels.shape}")
        slope = float(getattr(ds, "RescaleSlope", 1) or 1)
        intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
        planes.append(pixels.astype(np.float64) * slope + intercept)
    # (k, row j, column i) -> (i, j, k)
    volume = np.stack(planes).transpose(2, 1, 0)[None].astype(np.float32)
    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_dir * d_col
    affine_lps[:3, 1] = col_dir * d_row
    affine_lps[:3, 2] = step
    affine_lps[:3, 3] = positions[0]
    spacing = (float(d_col), float(d_row), float(np.linalg.norm(step)))
    meta = ImageMeta(folder, "dicom", spacing, LPS_TO_RAS @ affine_lps, None, {
        "affine_lps": affine_lps,
        "series_uid": uids[0],
        "modality": str(getattr(first, "Modality", "")),
        "files": [p for p, _ in slices],
    })
    return np.ascontiguousarray(volume), meta


def is_dicom_series(path: PathType) -> bool:
    """True when ``path`` is a folder holding at least one DICOM file (checked by its preamble)."""
    path = Path(path)
    if not path.is_dir():
        return False
    for p in path.iterdir():
        if p.is_file():
            try:
                with open(p, "rb") as f:
                    head = f.read(132)
            except OSError:
                continue
            if head[128:132] == b"DICM":
                return True
    return False
