"""Fourier descriptors of object contours: FourierNet's shape target, encoded and decoded.

Cansiz, Kesim, Bingol, Gunduz-Demir, "FourierNet: Shape-preserving network for Henle's fiber
layer segmentation in optical coherence tomography images", IEEE JBHI 27(2), 2023
(doi 10.1109/JBHI.2022.3225425). Every object's shape is quantified by a function on its contour,
expanded in a Fourier series; the network regresses the harmonic amplitudes beside the mask.

For every object (instance id) of a 2D label map:

* its outer contour is traced in order (closed polygon ``p_0 .. p_{T-1}``, holes ignored);
  ``l_t = sum_{k=1..t} |p_k - p_{k-1}|`` (``p_T = p_0``) are the cumulative arc lengths,
  ``L = l_T`` the perimeter, ``z_c`` the centroid of the object's pixels;
* ``xi_t = |p_t - z_c|`` is the centroid distance, the shape function ``xi(l)``;
* with ``dxi_t = xi_t - xi_{t-1}`` (``t = 1..T``, ``xi_T = xi_0``) the coefficients are the closed-form sums

      a_n = 1 / (pi n) sum_t dxi_t sin(2 pi n l_t / L)
      b_n = -1 / (pi n) sum_t dxi_t cos(2 pi n l_t / L)
      a_0 = (1 / L) integral_0^L xi(l) dl                  (trapezoid rule over the polygon)

  and the amplitudes ``A_n = sqrt(a_n^2 + b_n^2)``, ``n = 1..N``.

The sums are the exact Fourier coefficients of the step function that holds ``xi_t`` on
``[l_t, l_{t+1})`` (integrate by parts: the jumps ``dxi_t`` at ``l_t`` are all that remains), with
the sign convention ``xi(l) = a_0 - sum_n (a_n cos(2 pi n l / L) + b_n sin(2 pi n l / L))``, i.e.
``a_n = -(2/L) int xi cos``, ``b_n = -(2/L) int xi sin``: the negated textbook coefficients. The
amplitudes do not depend on the sign, on the starting point or on the traversal direction
(which only shift or mirror the phase), and are invariant to translation and rotation.

Documented choices where the paper is silent:

* **Contour**: marching squares (:func:`skimage.measure.find_contours`) at level 0.5 on the
  object's mask, zero-padded by one pixel, so an object touching the image border gets a closed
  contour along the edge; vertices lie on pixel edges, so the polygon encloses about the pixel
  count (a digital disc of radius r has ``a_0 ≈ r``). Objects are 8-connected (holes
  4-connected); of an id split into several pieces only the largest piece is encoded (and its
  pixels give ``z_c``); of its contours the one enclosing the largest area is the outer one.
* **Tiny objects** (fewer than ``min_pixels = 4`` pixels in that piece): their contour is all
  pixelisation, not shape, so they get the descriptors of a disc of the same area:
  ``a_0 = sqrt(area / pi)``, every ``a_n = b_n = 0``. Never NaN, never an error.
* **Normalisation** (the regression target, :func:`normalise`): ``A_n / a_0`` for ``n >= 1``
  (scale invariant: the network learns shape independently of size, and the values are O(0.01-0.3)
  for real objects), and ``log1p(a_0 / a0_scale)`` with ``a0_scale = 10`` pixels for the size
  channel (log: glands of radius ~100 px and nuclei of ~5 px differ by 20x in ``a_0`` but only
  2.4 vs 0.4 here; ``log1p`` keeps a background value of 0 equal to "no object", and is
  invertible by :func:`denormalise`).
* **Several objects per image** (the registered target ``fourier``, :func:`descriptor_map`):
  a dense map ``(N + 1, H, W)`` in which every pixel of object i carries object i's normalised
  vector and the background is 0. It is well defined for any number of objects, including none
  (all zeros), it has the image's size like every other target (so patch cropping and the
  existing losses apply unchanged: an MSE over the pixels, optionally weighted by the object
  mask), and an object cut by a patch border keeps its full-image descriptor. The values are
  per-object constants invariant to rotation and translation, so geometric augmentation must
  copy them with nearest neighbour, never interpolate (``augment = "nearest"``).
* **Decoding** (:func:`decode`): the descriptor carries no angle, only ``xi`` as a function of
  arc length. A contour ``z(l) = z_c + xi(l) e^{i theta(l)}`` traversed at unit speed satisfies
  ``xi'^2 + xi^2 theta'^2 = 1``; so ``theta' = sqrt(1 - xi'^2) / xi`` and the perimeter is the
  ``L`` for which ``theta`` turns once (``2 pi``). This inverts the encoding exactly for contours
  that are star-shaped around the centroid; for others it draws the star-shaped curve with the
  same ``xi(l)`` as closely as it exists. The orientation (``start_angle``) is a free parameter.

Spacing: with ``spacing`` the contour and the centroid are in physical units (so is ``a_0``).
2D only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from densemed.errors import DensemedError
from densemed.targets.registry import register
from densemed.typing import PathType

#: Objects with fewer pixels than this are encoded as a disc of their area (module docstring).
MIN_PIXELS = 4
#: Scale (pixels) of the size channel ``log1p(a_0 / A0_SCALE)``.
A0_SCALE = 10.0


@dataclass(frozen=True)
class ObjectDescriptor:
    """The Fourier descriptor of one object.

    Attributes:
        label: instance id.
        centroid: ``z_c`` as ``(row, col)`` (physical units with ``spacing``).
        a0: mean centroid distance ``a_0``.
        a: ``a_n``, ``n = 1..N``, shape ``(N,)``.
        b: ``b_n``, shape ``(N,)``.
        perimeter: contour length ``L`` (0 for objects encoded as discs).
        start_angle: angle of the contour's start point ``p_0`` around the centroid, in the
            ``(row, col)`` plane (``atan2(col - c_col, row - c_row)``), for :func:`decode`.
        pixels: pixel count of the encoded piece.
    """

    label: int
    centroid: tuple[float, float]
    a0: float
    a: np.ndarray
    b: np.ndarray
    perimeter: float
    start_angle: float
    pixels: int

    @property
    def amplitudes(self) -> np.ndarray:
        """``A_n = sqrt(a_n^2 + b_n^2)``, shape ``(N,)``."""
        return np.hypot(self.a, self.b)

    def normalised(self, a0_scale: float = A0_SCALE) -> np.ndarray:
        """The regression vector ``[log1p(a_0 / a0_scale), A_1 / a_0, ..., A_N / a_0]``, shape ``(N + 1,)``."""
        return normalise(self.a0, self.amplitudes, a0_scale)


def normalise(a0: float, amplitudes: np.ndarray, a0_scale: float = A0_SCALE) -> np.ndarray:
    """``[log1p(a_0 / a0_scale), A_n / a_0]`` as float64 ``(N + 1,)`` (module docstring)."""
    amplitudes = np.asarray(amplitudes, float)
    return np.concatenate([[np.log1p(a0 / a0_scale)], amplitudes / max(a0, 1e-12)])


def denormalise(vector: np.ndarray, a0_scale: float = A0_SCALE) -> tuple[float, np.ndarray]:
    """Inverse of :func:`normalise`: ``(a_0, A_n)`` from ``(N + 1,)``."""
    v = np.asarray(vector, float)
    a0 = float(a0_scale * np.expm1(v[0]))
    return a0, v[1:] * a0


def _signed_area(poly: np.ndarray) -> float:
    """Shoelace area of a closed polygon ``(T, 2)`` in ``(row, col)``; > 0 when counter-clockwise there."""
    r, c = poly[:, 0], poly[:, 1]
    return 0.5 * float(np.sum(r * np.roll(c, -1) - np.roll(r, -1) * c))


def _largest_piece(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a boolean mask."""
    lab, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
    if n <= 1:
        return lab > 0
    sizes = np.bincount(lab.ravel())
    sizes[0] = 0
    return lab == int(sizes.argmax())


def trace_contour(mask: np.ndarray) -> np.ndarray:
    """Outer contour of the largest 8-connected piece of ``mask``, in order, holes ignored.

    Marching squares at level 0.5 on the zero-padded mask: vertices lie on pixel edges, the
    polygon is closed (no repeated end point) and oriented so that its shoelace area in
    ``(row, col)`` is positive.

    Shape:
        ``(H, W)`` bool -> ``(T, 2)`` float ``(row, col)`` pixel coordinates.

    Example:
        >>> m = np.zeros((5, 5), bool); m[1:4, 1:4] = True
        >>> print(trace_contour(m).shape)
        (12, 2)
    """
    from skimage.measure import find_contours

    piece = _largest_piece(np.asarray(mask, bool))
    if not piece.any():
        raise ValueError("trace_contour: the mask is empty")
    # 'high': object pixels touching diagonally are one object, as in _largest_piece
    contours = find_contours(np.pad(piece, 1).astype(np.float64), 0.5, fully_connected="high")
    poly = max(contours, key=lambda c: abs(_signed_area(c)))
    if len(poly) > 1 and np.allclose(poly[0], poly[-1]):
        poly = poly[:-1]
    poly = poly - 1.0  # undo the padding
    return poly if _signed_area(poly) > 0 else poly[::-1].copy()


def polygon_coefficients(
    contour: np.ndarray, centroid: Sequence[float], n_harmonics: int = 8
) -> tuple[float, np.ndarray, np.ndarray, float]:
    """``(a_0, a_n, b_n, L)`` of a closed polygon around ``centroid`` by the closed-form sums.

    Args:
        contour: ``(T, 2)`` vertices in order, ``p_0`` first, not repeated at the end.
        centroid: ``z_c``, same coordinates.
        n_harmonics: ``N``.

    Shape:
        ``(T, 2)`` -> scalar, ``(N,)``, ``(N,)``, scalar.

    Example:
        >>> t = np.linspace(0, 2 * np.pi, 400, endpoint=False)
        >>> a0, a, b, L = polygon_coefficients(np.stack([5 * np.cos(t), 5 * np.sin(t)], 1), (0, 0), 3)
        >>> print(a.shape, round(a0, 3))
        (3,) 5.0
    """
    p = np.asarray(contour, float)
    if p.ndim != 2 or p.shape[1] != 2 or len(p) < 3:
        raise ValueError(f"contour must be (T >= 3, 2), got {p.shape}")
    xi = np.linalg.norm(p - np.asarray(centroid, float), axis=1)  # xi_0 .. xi_{T-1}
    seg = np.linalg.norm(np.roll(p, -1, axis=0) - p, axis=1)  # |p_t - p_{t-1}| for t = 1..T
    lengths = np.cumsum(seg)  # l_1 .. l_T
    perimeter = float(lengths[-1])
    if perimeter <= 0:
        raise ValueError("contour has zero length")
    dxi = np.roll(xi, -1) - xi  # xi_t - xi_{t-1}, t = 1..T (xi_T = xi_0)
    n = np.arange(1, n_harmonics + 1, dtype=float)[:, None]  # (N, 1)
    phase = 2.0 * np.pi * n * lengths[None, :] / perimeter  # (N, T)
    a = (dxi * np.sin(phase)).sum(axis=1) / (np.pi * n[:, 0])
    b = -(dxi * np.cos(phase)).sum(axis=1) / (np.pi * n[:, 0])
    a0 = float(np.sum(seg * (xi + np.roll(xi, -1)) / 2.0) / perimeter)
    return a0, a, b, perimeter


def _spacing(spacing: Sequence[float] | None) -> np.ndarray:
    if spacing is None:
        return np.ones(2)
    sp = np.asarray(spacing, float)
    if sp.shape != (2,) or (sp <= 0).any():
        raise DensemedError(f"task.targets: fourier: spacing {tuple(spacing)} does not fit a 2D label map")
    return sp


def _check(instances: np.ndarray) -> np.ndarray:
    lab = np.asarray(instances)
    if lab.ndim != 2:
        raise DensemedError(f"task.targets: fourier descriptors need a 2D label map, got shape {lab.shape}")
    if lab.dtype.kind not in "iub":
        raise DensemedError(f"task.targets: fourier: instances must be integers, got dtype {lab.dtype}")
    return lab


def describe(
    mask: np.ndarray,
    label: int = 1,
    n_harmonics: int = 8,
    spacing: Sequence[float] | None = None,
    min_pixels: int = MIN_PIXELS,
    offset: Sequence[float] = (0.0, 0.0),
) -> ObjectDescriptor:
    """The descriptor of one object given as a boolean mask (its largest 8-connected piece).

    Args:
        mask: ``(H, W)`` bool, the object.
        label: id stored in the result.
        n_harmonics: ``N``.
        spacing: pixel size ``(row, col)``; default 1.
        min_pixels: pieces smaller than this are encoded as a disc of their area.
        offset: ``(row, col)`` of ``mask[0, 0]`` in the full image (for crops).

    Example:
        >>> yy, xx = np.mgrid[:41, :41]
        >>> d = describe(np.hypot(yy - 20, xx - 20) <= 15)
        >>> print(round(d.a0), d.amplitudes.shape)
        15 (8,)
    """
    sp = _spacing(spacing)
    piece = _largest_piece(np.asarray(mask, bool))
    count = int(piece.sum())
    if count == 0:
        raise ValueError("describe: the mask is empty")
    rows, cols = np.nonzero(piece)
    centre = (np.array([rows.mean(), cols.mean()]) + np.asarray(offset, float)) * sp
    zeros = np.zeros(n_harmonics)
    if count < min_pixels:
        a0 = float(np.sqrt(count * sp.prod() / np.pi))
        return ObjectDescriptor(int(label), (centre[0], centre[1]), a0, zeros, zeros.copy(), 0.0, 0.0, count)
    poly = (trace_contour(piece) + np.asarray(offset, float)) * sp
    a0, a, b, perimeter = polygon_coefficients(poly, centre, n_harmonics)
    start = poly[0] - centre
    angle = float(np.arctan2(start[1], start[0]))
    return ObjectDescriptor(int(label), (centre[0], centre[1]), a0, a, b, perimeter, angle, count)


def encode(
    instances: np.ndarray,
    n_harmonics: int = 8,
    spacing: Sequence[float] | None = None,
    min_pixels: int = MIN_PIXELS,
) -> dict[int, ObjectDescriptor]:
    """Per-object Fourier descriptors of a 2D instance label map.

    Args:
        instances: integer ``(H, W)``, 0 = background, one id per object.
        n_harmonics: ``N`` harmonics per object.
        spacing: pixel size ``(row, col)``; default 1 (pixel units).
        min_pixels: objects with fewer pixels are encoded as a disc of their area.

    Returns:
        ``{id: ObjectDescriptor}`` in increasing id order (empty without objects).

    Example:
        >>> lab = np.zeros((20, 30), int); lab[2:12, 3:9] = 4; lab[15, 20] = 9
        >>> print({k: v.a.shape for k, v in encode(lab, n_harmonics=5).items()})
        {4: (5,), 9: (5,)}
    """
    ids, inverse, descriptors = _encode_indexed(_check(instances), n_harmonics, spacing, min_pixels)
    return {int(ids[k]): d for k, d in descriptors.items()}


def _encode_indexed(
    lab: np.ndarray, n_harmonics: int, spacing: Sequence[float] | None, min_pixels: int
) -> tuple[np.ndarray, np.ndarray, dict[int, ObjectDescriptor]]:
    """``(ids, inverse, {index: descriptor})`` with ``ids[inverse] == lab`` (ids may be large or sparse)."""
    if n_harmonics < 1:
        raise DensemedError(f"task.targets: fourier: n_harmonics must be >= 1, got {n_harmonics}")
    ids, inverse = np.unique(lab, return_inverse=True)
    inverse = inverse.reshape(lab.shape)
    out: dict[int, ObjectDescriptor] = {}
    for k, box in enumerate(ndimage.find_objects(inverse + 1)):
        if box is None or ids[k] == 0:
            continue
        mask = inverse[box] == k
        offset = (box[0].start, box[1].start)
        out[k] = describe(mask, int(ids[k]), n_harmonics, spacing, min_pixels, offset)
    return ids, inverse, out


def descriptor_channels(n_harmonics: int = 8) -> int:
    """Channels ``C = n_harmonics + 1`` of the dense map of :func:`descriptor_map`."""
    return int(n_harmonics) + 1


@register("fourier", augment="nearest")
def descriptor_map(
    instances: np.ndarray,
    spacing: Sequence[float] | None = None,
    n_harmonics: int = 8,
    a0_scale: float = A0_SCALE,
    min_pixels: int = MIN_PIXELS,
) -> np.ndarray:
    """Dense descriptor map: each object's normalised vector on every one of its pixels, 0 elsewhere.

    Channel 0 is ``log1p(a_0 / a0_scale)``, channels ``1..N`` are ``A_n / a_0`` (module docstring).
    All pixels of an id carry the vector of its largest piece. Geometric augmentation must
    resample it by nearest neighbour (``descriptor_map.augment == "nearest"``).

    Args:
        instances: integer ``(H, W)``, 0 = background.
        spacing: pixel size ``(row, col)``; default 1.
        n_harmonics: ``N``.
        a0_scale: scale of the size channel, in pixels (or ``spacing`` units).
        min_pixels: objects with fewer pixels are encoded as a disc of their area.

    Returns:
        float32 ``(N + 1, H, W)``.

    Shape:
        ``(H, W)`` -> ``(n_harmonics + 1, H, W)``.

    Example:
        >>> lab = np.zeros((16, 16), int); lab[2:10, 3:12] = 1
        >>> print(descriptor_map(lab, n_harmonics=4).shape)
        (5, 16, 16)
    """
    lab = _check(instances)
    if a0_scale <= 0:
        raise DensemedError(f"task.targets: fourier: a0_scale must be > 0, got {a0_scale}")
    ids, inverse, descriptors = _encode_indexed(lab, n_harmonics, spacing, min_pixels)
    table = np.zeros((len(ids), descriptor_channels(n_harmonics)), np.float32)  # row k: vector of ids[k]
    for k, desc in descriptors.items():
        table[k] = desc.normalised(a0_scale)
    return np.ascontiguousarray(np.moveaxis(table[inverse], -1, 0))  # (H, W, C) -> (C, H, W)


descriptor_map.augment = "nearest"  # type: ignore[attr-defined]


def shape_function(a0: float, a: np.ndarray, b: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``xi(s L) = a_0 - sum_n (a_n cos(2 pi n s) + b_n sin(2 pi n s))`` at arc-length fractions ``s``."""
    phase = 2 * np.pi * np.arange(1, len(a) + 1, dtype=float)[:, None] * np.asarray(s, float)[None, :]  # (N, S)
    return a0 - (np.asarray(a)[:, None] * np.cos(phase) + np.asarray(b)[:, None] * np.sin(phase)).sum(0)


def decode(
    a0: float,
    a: np.ndarray,
    b: np.ndarray,
    centroid: Sequence[float] = (0.0, 0.0),
    start_angle: float = 0.0,
    n_points: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """Rebuild ``xi(l)`` and a polar contour around ``centroid`` from ``(a_0, a_n, b_n)``.

    ``xi`` is sampled at ``n_points`` equal arc-length steps; the polar angle follows from the
    unit-speed condition ``theta' = sqrt(1 - xi'^2) / xi`` with the perimeter ``L`` chosen so that
    ``theta`` turns exactly once (module docstring). When no ``L`` reaches a full turn (``xi``
    changes faster than any unit-speed curve allows) the smallest admissible ``L`` is used and
    ``theta`` is rescaled to one turn. ``xi`` is floored at ``1e-3 a_0`` (a truncated series can
    dip below 0 for extreme inputs).

    Args:
        a0: ``a_0`` (> 0).
        a: ``a_n``, ``(N,)``.
        b: ``b_n``, ``(N,)``.
        centroid: ``(row, col)`` of the contour's centre.
        start_angle: angle of the point at ``l = 0`` (``ObjectDescriptor.start_angle``).
        n_points: samples along the contour.

    Returns:
        ``(xi, contour)``: ``(n_points,)`` and ``(n_points, 2)`` ``(row, col)`` vertices.

    Example:
        >>> xi, contour = decode(5.0, np.zeros(3), np.zeros(3), centroid=(10, 10))
        >>> print(contour.shape, np.allclose(np.hypot(*(contour - 10).T), 5))
        (256, 2) True
    """
    from scipy.optimize import brentq

    if a0 <= 0:
        raise ValueError(f"decode: a0 must be > 0, got {a0}")
    a, b = np.asarray(a, float), np.asarray(b, float)
    s = np.arange(n_points) / n_points
    xi = np.maximum(shape_function(a0, a, b, s), 1e-3 * a0)
    n = np.arange(1, len(a) + 1, dtype=float)[:, None]
    # d xi / ds (s = l / L), from the series: the derivative of -a_n cos - b_n sin
    dxi = (2 * np.pi * n * (a[:, None] * np.sin(2 * np.pi * n * s) - b[:, None] * np.cos(2 * np.pi * n * s))).sum(0)

    def turn(length: float) -> float:  # total angle swept, minus one turn
        return float(np.mean(np.sqrt(np.maximum(length**2 - dxi**2, 0.0)) / xi)) - 2 * np.pi

    lo = float(np.abs(dxi).max())
    if turn(lo) >= 0:
        length = lo
    else:
        # sqrt(L^2 - x^2) >= L - |x|, so this bound sweeps at least one turn
        length = brentq(turn, lo, lo + 2 * np.pi / float(np.mean(1 / xi)) + 1e-9, xtol=1e-10 * (lo + a0))
    rate = np.sqrt(np.maximum(length**2 - dxi**2, 0.0)) / xi  # d theta / ds
    # periodic trapezoid: theta_k = sum_{j<k} (rate_j + rate_{j+1}) / 2 / n_points
    steps = (rate + np.roll(rate, -1)) / (2 * n_points)
    theta = np.concatenate([[0.0], np.cumsum(steps)[:-1]])
    theta *= 2 * np.pi / steps.sum()
    angle = theta + start_angle
    contour = np.asarray(centroid, float) + xi[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)
    return xi, contour


def preview(
    instances: np.ndarray,
    out_path: PathType,
    n_harmonics: int = 8,
    image: np.ndarray | None = None,
    n_points: int = 256,
) -> Path:
    """Write a PNG of every object's true contour (solid) and its decoded ``N``-harmonic contour (dashed).

    Shows what a descriptor vector means: the decoded contour uses ``a_0, a_n, b_n`` (n <= N)
    and the true start angle, so both curves overlay where ``N`` harmonics suffice.

    Args:
        instances: integer ``(H, W)`` label map.
        out_path: PNG file to write (folders are created).
        n_harmonics: ``N``.
        image: optional ``(H, W)`` or ``(H, W, 3)`` background; the label map otherwise.
        n_points: samples of each decoded contour.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lab = _check(instances)
    fig, ax = plt.subplots(figsize=(6, 6 * lab.shape[0] / max(lab.shape[1], 1)))
    if image is not None:
        ax.imshow(image, cmap="gray", interpolation="nearest")
    else:
        ax.imshow(lab > 0, cmap="gray", vmin=0, vmax=2, interpolation="nearest")
    for obj_id, d in encode(lab, n_harmonics).items():
        if d.perimeter == 0:  # tiny object encoded as a disc: no traced contour to compare with
            continue
        true = trace_contour(lab == obj_id)
        _, dec = decode(d.a0, d.a, d.b, d.centroid, d.start_angle, n_points)
        for poly, style in ((true, "-"), (dec, "--")):
            closed = np.vstack([poly, poly[:1]])
            ax.plot(closed[:, 1], closed[:, 0], style, color="#ff3b30" if style == "-" else "#0a84ff", lw=1)
    ax.set_xlim(-0.5, lab.shape[1] - 0.5)
    ax.set_ylim(lab.shape[0] - 0.5, -0.5)
    ax.set_title(f"true (solid) vs decoded from N = {n_harmonics} harmonics (dashed)", fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.tight_layout()
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
