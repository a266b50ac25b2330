"""A quick-look PNG: image, truth and prediction side by side.

The truth and prediction panels show the label colours blended over the grey image (alpha 0.5;
class 1 red, 2 green, 3 blue, ...), so boundaries can be judged against the image itself. For
volumes one slice along the first axis is shown: the one with the most foreground in truth or
prediction, the one nearest the middle among ties (an empty volume shows its middle slice).

The PNG is composed with numpy and written with Pillow, so its size is exact: every panel is
the slice upscaled by an integer factor ``s = max(1, 256 // H)`` (nearest neighbour, so labels stay
crisp), with a 4-pixel gap between panels and an 18-pixel caption strip on top:
``(18 + s*H) x (3*s*W + 8)`` pixels (height x width).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from densemed.typing import PathType

CAPTION = 18
GAP = 4
MIN_HEIGHT = 256
#: RGB per class index (class 0 is not coloured).
PALETTE = np.array(
    [[0, 0, 0], [230, 40, 40], [40, 200, 60], [50, 100, 240], [240, 200, 30], [200, 60, 220], [40, 210, 220],
     [250, 130, 30], [150, 90, 40]],
    dtype=np.float32,
)


def _as_numpy(a: object) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()  # type: ignore[union-attr]
    return np.asarray(a)


def pick_slice(truth: np.ndarray, pred: np.ndarray) -> int:
    """Index along axis 0 with the most foreground in ``truth`` or ``pred``; ties -> nearest the middle."""
    fg = ((truth > 0) | (pred > 0)).reshape(truth.shape[0], -1).sum(1)
    mid = (truth.shape[0] - 1) / 2
    best = np.flatnonzero(fg == fg.max())
    return int(best[np.argmin(np.abs(best - mid))])


def _grey(image: np.ndarray) -> np.ndarray:
    """Image (H, W) or (H, W, 3) -> float RGB in [0, 255], contrast from the 1st-99th percentile."""
    lo, hi = (float(v) for v in np.percentile(image, (1, 99)))
    if hi <= lo:  # (nearly) constant image: full range, or any non-empty interval
        lo, hi = float(image.min()), float(image.max())
        hi = hi if hi > lo else lo + 1.0
    g = np.clip((image.astype(np.float32) - lo) / (hi - lo), 0, 1) * 255
    return g if g.ndim == 3 else np.repeat(g[..., None], 3, axis=-1)


def _blend(rgb: np.ndarray, labels: np.ndarray, alpha: float = 0.5) -> np.ndarray:
    colours = PALETTE[np.where(labels > 0, (labels - 1) % (len(PALETTE) - 1) + 1, 0)]
    fg = (labels > 0)[..., None]
    return np.where(fg, (1 - alpha) * rgb + alpha * colours, rgb)


def save_overlay(image: object, truth: object, pred: object, out_png: PathType) -> Path:
    """Write image | truth over image | prediction over image as one PNG.

    Args:
        image: grey ``(H, W)``, colour ``(C, H, W)`` with ``C`` 1 or 3, or a volume ``(D, H, W)``
            (``(C, D, H, W)`` with ``C = 1``); numpy or torch.
        truth: integer label map ``(H, W)`` or ``(D, H, W)`` (a leading axis of size 1 is dropped).
        pred: integer label map of the same shape as ``truth``.
        out_png: where to write.

    Returns:
        The written path.

    Raises:
        ValueError: the shapes do not fit together.

    Example:
        >>> lab = np.zeros((32, 40), int); lab[8:20, 10:30] = 1
        >>> p = save_overlay(np.random.rand(32, 40), lab, lab, "/tmp/overlay_doc.png")
        >>> from PIL import Image; print(Image.open(p).size)
        (968, 274)
    """
    from PIL import Image, ImageDraw

    img, t, p = _as_numpy(image), _as_numpy(truth), _as_numpy(pred)
    while t.ndim > 2 and t.shape[0] == 1:  # (1, H, W) labels or a one-slice volume
        t, p = t[0], p[0]
    while img.ndim > t.ndim + 1 and img.shape[0] == 1:
        img = img[0]
    if t.shape != p.shape:
        raise ValueError(f"truth {t.shape} and prediction {p.shape} differ in shape")
    if t.ndim not in (2, 3):
        raise ValueError(f"label maps must be 2D or 3D, got shape {t.shape}")
    if img.ndim == t.ndim + 1:  # channels first
        if img.shape[0] == 1:
            img = img[0]
        elif img.shape[0] == 3 and t.ndim == 2:
            img = np.moveaxis(img, 0, -1)
        else:
            raise ValueError(f"image of shape {img.shape} does not fit labels of shape {t.shape}")
    if img.shape[: t.ndim] != t.shape:
        raise ValueError(f"image of shape {img.shape} does not fit labels of shape {t.shape}")
    if t.ndim == 3:
        k = pick_slice(t, p)
        img, t, p = img[k], t[k], p[k]

    base = _grey(img)
    panels = [base, _blend(base, t), _blend(base, p)]
    h, w = t.shape
    s = max(1, MIN_HEIGHT // h)
    panels = [np.kron(x, np.ones((s, s, 1), dtype=np.float32)) for x in panels]  # nearest upscaling
    canvas = np.full((CAPTION + s * h, 3 * s * w + 2 * GAP, 3), 255, dtype=np.uint8)
    for i, panel in enumerate(panels):
        x0 = i * (s * w + GAP)
        canvas[CAPTION:, x0 : x0 + s * w] = np.round(panel).astype(np.uint8)
    pil = Image.fromarray(canvas)
    draw = ImageDraw.Draw(pil)
    for i, name in enumerate(("image", "truth", "prediction")):
        draw.text((i * (s * w + GAP) + 3, 3), name, fill=(0, 0, 0))

    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp{os.getpid()}.png")
    try:
        pil.save(tmp, format="PNG")
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out
