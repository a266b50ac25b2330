"""New label maps to condition a label-to-image GAN on, and the condition channels it reads.

Synthetic training pairs help only when their *layouts* are new; a generator fed the training
labels reproduces the training images. From a real label map this module makes a new one by

1. **recombination** of objects (instance maps only; :func:`recombine`): remove objects, move
   objects to free places and add objects copied from other images ("donors"). Objects are
   pasted as whole masks at integer offsets, fully inside the image, onto background only, so
   they keep their exact shape and never overlap (``gap`` pixels of background between a placed
   object and the others can be required). Objects that touch the image border are truncated by
   it; they may be removed but are never moved or copied (a cut edge in the middle of an image
   is not a real shape).
2. **deformation**: flips, 90-degree rotations, a random affine map and the U-Net elastic
   deformation (Ronneberger et al. 2015, 3x3 control points, 10 pixels standard deviation),
   composed into one warp by :mod:`densemed.augment` and resampled by nearest neighbour, so no
   new label value appears (class maps stay in range, instance ids stay unique); pixels from
   outside the image become background (zero padding).

Instance ids are renumbered ``1..K`` at the end. Everything is drawn from one seed
(``numpy.random.default_rng(seed)``, and a ``torch.Generator`` seeded from it for the warp), so a
seed gives one output. :class:`LabelSynthesizer` retries (new draws from the same stream) until the
result differs from its input.

:func:`condition_channels` turns a class map, or an instance map, into the generator's input: a
one-hot class map, plus for instance maps a boundary channel (Wang et al., pix2pixHD, CVPR 2018,
Sec. 3.3: "a pixel in the boundary map is 1 if its object ID is different from any of its
4-neighbors"), so that touching objects of the same class remain separate objects in the
condition.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy import ndimage as ndi

from densemed.augment import build
from densemed.errors import DensemedError

#: Geometric deformation of a label map, in the ``augment:`` recipe format (:func:`densemed.augment.build`).
DEFAULT_DEFORM: dict[str, Any] = {
    "flip": {"p": 0.5},
    "rot90": {"p": 0.5},
    "affine": {"p": 1.0, "rotate": 15, "scale": [0.85, 1.15]},
    "elastic": {"p": 1.0, "grid": 3, "magnitude": 10},
}
_GEOMETRIC_KEYS = ("flip", "rot90", "affine", "elastic", "padding")


# --------------------------------------------------------------------------------- conditions
def boundaries(instances: np.ndarray) -> np.ndarray:
    """Boolean map: pixels whose id differs from one of their axis neighbours (both sides marked).

    Shape:
        ``(*S) -> (*S)`` bool.

    Example:
        >>> print(boundaries(np.array([[1, 1, 2, 2, 0]])).astype(int).tolist())
        [[0, 1, 1, 1, 1]]
    """
    inst = np.asarray(instances)
    edge = np.zeros(inst.shape, bool)
    for axis in range(inst.ndim):
        lo = [slice(None)] * inst.ndim
        hi = [slice(None)] * inst.ndim
        lo[axis], hi[axis] = slice(None, -1), slice(1, None)
        diff = inst[tuple(lo)] != inst[tuple(hi)]
        edge[tuple(lo)] |= diff
        edge[tuple(hi)] |= diff
    return edge


def condition_channels(label_or_instances: np.ndarray, num_classes: int, instances: bool) -> np.ndarray:
    """The generator's condition: one-hot classes (+ a boundary channel for instance maps).

    Args:
        label_or_instances: class indices ``(*S)`` in ``[0, num_classes)``, or (``instances=True``)
            instance ids ``(*S)``, 0 the background, whose classes are background / object.
        num_classes: classes including the background (``2`` for instance maps).
        instances: the map holds instance ids; adds the :func:`boundaries` channel.

    Returns:
        ``(num_classes + instances, *S)`` float32 of 0 and 1.

    Raises:
        DensemedError: a value out of range, or ``num_classes != 2`` for an instance map.

    Example:
        >>> c = condition_channels(np.array([[0, 1, 1, 2]]), num_classes=2, instances=True)
        >>> print(c.shape, c[2].tolist())
        (3, 1, 4) [[1.0, 1.0, 1.0, 1.0]]
    """
    lab = np.asarray(label_or_instances)
    if not np.issubdtype(lab.dtype, np.integer) and not np.issubdtype(lab.dtype, np.bool_):
        raise DensemedError(f"label_synth: the label map must hold integers, got {lab.dtype}")
    if num_classes < 2:
        raise DensemedError(f"label_synth: num_classes must be >= 2 (background included), got {num_classes}")
    if lab.size and lab.min() < 0:
        raise DensemedError(f"label_synth: negative label value {int(lab.min())}")
    if instances:
        if num_classes != 2:
            raise DensemedError(f"label_synth: an instance map has 2 classes (background, object), not {num_classes}")
        classes = (lab > 0).astype(np.int64)
    else:
        if lab.size and lab.max() >= num_classes:
            raise DensemedError(f"label_synth: label value {int(lab.max())} is not below num_classes={num_classes}")
        classes = lab.astype(np.int64)
    out = np.zeros((num_classes + int(instances), *lab.shape), np.float32)
    np.put_along_axis(out, classes[None], 1.0, axis=0)
    if instances:
        out[num_classes] = boundaries(lab)
    return out


# ------------------------------------------------------------------------------ recombination
@dataclass(frozen=True)
class Edit:
    """One object of a recombined map and where it came from.

    Attributes:
        op: ``"keep"``, ``"move"`` or ``"add"`` (removed objects are not in the output).
        id: its id in the output map.
        source: ``-1`` for the input map, ``k`` for ``donors[k]``.
        source_id: its id in the source map.
        offset: integer shift from its place in the source map (zeros for ``keep``).
    """

    op: str
    id: int
    source: int
    source_id: int
    offset: tuple[int, ...]


def relabel_sequential(instances: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """Ids renumbered ``1..K`` in increasing order of the old ids; returns the map and ``old -> new``."""
    ids = np.unique(instances)
    ids = ids[ids != 0]
    lut = np.zeros(int(instances.max(initial=0)) + 1, np.int64)
    lut[ids] = np.arange(1, len(ids) + 1)
    return lut[instances], {int(o): int(n) for o, n in zip(ids, lut[ids])}


def _objects(instances: np.ndarray) -> dict[int, tuple[tuple[slice, ...], np.ndarray]]:
    """``id -> (bounding box, mask within it)`` of every object not touching the image border."""
    out = {}
    for i, box in enumerate(ndi.find_objects(instances), start=1):
        if box is None:
            continue
        if any(s.start == 0 or s.stop == n for s, n in zip(box, instances.shape)):
            continue
        out[i] = (box, instances[box] == i)
    return out


def _fits(canvas: np.ndarray, mask: np.ndarray, corner: np.ndarray, gap: int) -> bool:
    """True when ``mask`` placed with its box at ``corner`` lies inside and ``gap`` pixels from other ids."""
    hi = corner + np.array(mask.shape)
    if (corner < 0).any() or (hi > np.array(canvas.shape)).any():
        return False
    if gap <= 0:
        region = canvas[tuple(slice(a, b) for a, b in zip(corner, hi))]
        return not region[mask].any()
    lo_g = np.maximum(corner - gap, 0)
    hi_g = np.minimum(hi + gap, canvas.shape)
    grown = np.zeros(tuple(hi_g - lo_g), bool)
    grown[tuple(slice(a - c, a - c + s) for a, c, s in zip(corner, lo_g, mask.shape))] = mask
    grown = ndi.binary_dilation(grown, np.ones((3,) * canvas.ndim, bool), iterations=gap)
    return not canvas[tuple(slice(a, b) for a, b in zip(lo_g, hi_g))][grown].any()


def _paste(canvas: np.ndarray, mask: np.ndarray, corner: np.ndarray, value: int) -> None:
    region = canvas[tuple(slice(a, a + s) for a, s in zip(corner, mask.shape))]
    region[mask] = value


def recombine(
    instances: np.ndarray,
    rng: np.random.Generator,
    donors: Sequence[np.ndarray] = (),
    remove: float = 0.2,
    move: float = 0.5,
    add: int | Sequence[int] = (0, 3),
    max_shift: float = 0.25,
    gap: int = 0,
    attempts: int = 20,
) -> tuple[np.ndarray, list[Edit]]:
    """A new instance layout: remove, move and add whole objects without overlap.

    Args:
        instances: instance ids ``(*S)``, 0 the background.
        rng: numpy generator (all draws).
        donors: other instance maps to copy added objects from (default: ``instances`` itself).
        remove: probability per object of removing it.
        move: probability per (kept, movable) object of moving it.
        add: number of objects to add, ``n`` or a range ``[low, high]`` (inclusive).
        max_shift: largest move as a fraction of each axis.
        gap: background pixels required between a placed object and any other (0: may touch).
        attempts: random places tried per object before giving up (a moved object then stays).

    Returns:
        The new map (ids ``1..K``, dtype of the input) and one :class:`Edit` per output object.

    Shape:
        ``(*S) -> (*S)``.

    Example:
        >>> inst = np.zeros((12, 12), np.int32); inst[2:4, 2:4] = 1; inst[7:10, 6:9] = 2
        >>> out, edits = recombine(inst, np.random.default_rng(0), remove=0, move=1, add=0)
        >>> print(sorted(np.bincount(out.ravel())[1:].tolist()), [e.op for e in edits])
        [4, 9] ['move', 'move']
    """
    inst = np.asarray(instances)
    if not np.issubdtype(inst.dtype, np.integer) or (inst.size and inst.min() < 0):
        raise DensemedError("label_synth: an instance map holds integer ids >= 0")
    for name, p in (("remove", remove), ("move", move)):
        if not 0.0 <= p <= 1.0:
            raise DensemedError(f"label_synth.{name}: must be a probability in [0, 1], got {p!r}")
    lo_add, hi_add = (add, add) if isinstance(add, int) else (int(add[0]), int(add[1]))
    if not 0 <= lo_add <= hi_add:
        raise DensemedError(f"label_synth.add: must be n >= 0 or [low, high] with 0 <= low <= high, got {add!r}")
    donors = [np.asarray(d) for d in donors] or [inst]
    for k, d in enumerate(donors):
        if d.ndim != inst.ndim:
            raise DensemedError(f"label_synth: donor {k} has {d.ndim} dims, the map {inst.ndim}")
    canvas = inst.astype(np.int64, copy=True)
    shape = np.array(inst.shape)
    reach = np.maximum(1, np.round(max_shift * shape)).astype(int)
    ids = [int(i) for i in np.unique(inst) if i != 0]
    movable = _objects(canvas)
    edits: dict[int, Edit] = {}
    zero = (0,) * inst.ndim
    # fixed number of draws per object, whatever the coin flips say
    drop = rng.random(len(ids)) < remove
    shift_coin = rng.random(len(ids)) < move
    order = rng.permutation(len(ids))
    for i, gone in zip(ids, drop):
        if gone:
            canvas[canvas == i] = 0
    for j in order:
        i = ids[j]
        if drop[j]:
            continue
        edits[i] = Edit("keep", i, -1, i, zero)
        if not shift_coin[j] or i not in movable:
            continue
        box, mask = movable[i]
        corner = np.array([s.start for s in box])
        _paste(canvas, mask, corner, 0)
        shifts = rng.integers(-reach, reach + 1, size=(attempts, inst.ndim))
        for t in shifts:
            if t.any() and _fits(canvas, mask, corner + t, gap):
                _paste(canvas, mask, corner + t, i)
                edits[i] = Edit("move", i, -1, i, tuple(int(v) for v in t))
                break
        else:
            _paste(canvas, mask, corner, i)
    donor_objects = [_objects(d.astype(np.int64)) for d in donors]
    pool = [(k, i) for k, objs in enumerate(donor_objects) for i in objs]
    n_add = int(rng.integers(lo_add, hi_add + 1))
    next_id = int(max(canvas.max(initial=0), inst.max(initial=0))) + 1
    for _ in range(n_add if pool else 0):
        k, i = pool[int(rng.integers(len(pool)))]
        box, mask = donor_objects[k][i]
        free = shape - np.array(mask.shape)
        if (free < 0).any():
            continue
        corners = rng.integers(0, free + 1, size=(attempts, inst.ndim))
        for corner in corners:
            if _fits(canvas, mask, corner, gap):
                _paste(canvas, mask, corner, next_id)
                offset = tuple(int(c - s.start) for c, s in zip(corner, box))
                edits[next_id] = Edit("add", next_id, -1 if donors[k] is inst else k, i, offset)
                next_id += 1
                break
    out, lut = relabel_sequential(canvas)
    renamed = [Edit(e.op, lut[e.id], e.source, e.source_id, e.offset) for e in edits.values() if e.id in lut]
    return out.astype(inst.dtype), sorted(renamed, key=lambda e: e.id)


# -------------------------------------------------------------------------------- deformation
def deform(
    label: np.ndarray, generator: torch.Generator, augment: Mapping[str, Any] | None = None
) -> np.ndarray:
    """Label map resampled by nearest neighbour through a random geometric warp.

    Args:
        label: class or instance map ``(*S)`` (2D or 3D), integers.
        generator: CPU ``torch.Generator`` for the draws.
        augment: geometric part of an ``augment:`` recipe section (``flip``, ``rot90``, ``affine``,
            ``elastic``, ``padding``; default :data:`DEFAULT_DEFORM`).

    Shape:
        ``(*S) -> (*S)``, same dtype.
    """
    cfg = dict(DEFAULT_DEFORM if augment is None else augment)
    bad = [k for k in cfg if k not in _GEOMETRIC_KEYS]
    if bad:
        raise DensemedError(f"label_synth.deform: only geometric transforms {_GEOMETRIC_KEYS}, got {bad}")
    lab = np.asarray(label)
    if lab.ndim not in (2, 3):
        raise DensemedError(f"label_synth.deform: a 2D or 3D map, got {lab.ndim} dims")
    aug = build(cfg)
    t = torch.from_numpy(lab.astype(np.int64))[None, None]
    # the warp needs an image; one zero channel costs one extra grid_sample of the map's size
    batch = {"image": torch.zeros(t.shape, dtype=torch.float32), "label": t}
    return aug(batch, generator)["label"][0, 0].numpy().astype(lab.dtype)


class LabelSynthesizer:
    """New label maps from real ones: recombination (instance maps), then a geometric deformation.

    Args:
        instances: the maps hold instance ids (recombination on) rather than classes.
        deform: geometric ``augment:`` section for :func:`deform` (``None``: :data:`DEFAULT_DEFORM`,
            ``{}``: no deformation).
        remove, move, add, max_shift, gap, attempts: options of :func:`recombine`.
        tries: draws (from the same stream) until the result differs from the input.

    Example:
        >>> inst = np.zeros((32, 32), np.int32); inst[4:10, 4:10] = 1; inst[20:26, 18:24] = 2
        >>> new = LabelSynthesizer(instances=True)(inst, seed=0)
        >>> print(new.shape, new.dtype, bool((new != inst).any()))
        (32, 32) int32 True
    """

    def __init__(
        self,
        instances: bool,
        deform: Mapping[str, Any] | None = None,
        remove: float = 0.2,
        move: float = 0.5,
        add: int | Sequence[int] = (0, 3),
        max_shift: float = 0.25,
        gap: int = 0,
        attempts: int = 20,
        tries: int = 10,
    ) -> None:
        self.instances = bool(instances)
        self.deform = dict(DEFAULT_DEFORM if deform is None else deform)
        self.recombine_options = {"remove": remove, "move": move, "add": add, "max_shift": max_shift,
                                  "gap": gap, "attempts": attempts}
        self.tries = max(1, int(tries))

    def __call__(self, label: np.ndarray, seed: int, donors: Sequence[np.ndarray] = ()) -> np.ndarray:
        """A new label map from ``label`` (and objects of ``donors``), fixed by ``seed``.

        Shape:
            ``(*S) -> (*S)``, same dtype; instance ids ``1..K``.
        """
        lab = np.asarray(label)
        rng = np.random.default_rng(seed)
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        out = lab
        for _ in range(self.tries):
            out = lab
            if self.instances:
                out, _ = recombine(lab, rng, donors, **self.recombine_options)
            if self.deform:
                out = deform(out, gen, self.deform)
            if self.instances:
                out = relabel_sequential(out)[0].astype(lab.dtype)
            if out.shape != lab.shape or (out != lab).any():
                break
        return out
