"""Random rotations by multiples of 90 degrees in a plane of two spatial axes.

``Rot90(k, planes)`` matches ``torch.rot90(x, k, dims=(2 + a, 2 + b))`` exactly: the sampling map
in centred pixel coordinates of plane ``(a, b)`` is ``R^k`` with ``R = [[0, 1], [-1, 0]]``
(``q_a = p_b``, ``q_b = -p_a``). A quarter turn swaps the two sizes, so the batch keeps its shape
only in planes where they are equal; in other planes the random transform draws a half turn only.
In 3D each sample rotates in one plane drawn uniformly; with the flips this reaches all 48
symmetries of the cube (not uniformly).
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import combinations

import torch

from densemed.augment._common import Generator, check_p, coin
from densemed.augment.warp import Geometric, Warp
from densemed.errors import DensemedError


class Rot90(Geometric):
    """Rotate sample ``b`` by ``k[b]`` quarter turns in the plane ``planes[b]``.

    Args:
        k: (B,) integer quarter turns (any integer, taken modulo 4).
        planes: (B, 2) spatial axes ``(a, b)`` of each rotation plane; ``None``: ``(0, 1)``.

    Shape:
        ``image`` (B, C, *S) -> (B, C, *S); the plane's two sizes must be equal unless ``k`` is even.

    Example:
        >>> x = torch.arange(4.0).view(1, 1, 2, 2)
        >>> y = Rot90(torch.tensor([1]))({"image": x})["image"]
        >>> print(torch.equal(y, torch.rot90(x, 1, dims=(2, 3))))
        True
    """

    def __init__(self, k: torch.Tensor, planes: torch.Tensor | None = None) -> None:
        self.k = k.to(torch.int64).cpu() % 4
        self.planes = torch.tensor([[0, 1]]).expand(len(self.k), 2) if planes is None else planes.cpu()

    def to_warp(self, size: torch.Size, device: torch.device) -> Warp:
        """Integer rotation matrices ``R^k`` embedded in the plane."""
        dims = len(size)
        w = Warp.identity(len(self.k), dims)
        for i, (k, (a, b)) in enumerate(zip(self.k.tolist(), self.planes.tolist())):
            if not (0 <= a < dims and 0 <= b < dims and a != b):
                raise DensemedError(f"augment.rot90: plane {(a, b)} invalid for {dims}-D images")
            if k % 2 and size[a] != size[b]:
                raise DensemedError(
                    f"augment.rot90: a quarter turn in plane {(a, b)} needs equal sizes, got {tuple(size)}"
                )
            r = torch.eye(2, dtype=torch.float64)
            for _ in range(k):
                r = r @ torch.tensor([[0.0, 1.0], [-1.0, 0.0]], dtype=torch.float64)
            w.matrix[i][[a, a, b, b], [a, b, a, b]] = r.flatten()
        return w


class RandomRot90:
    """With probability ``p`` per sample, rotate by 1, 2 or 3 quarter turns in a random plane.

    Args:
        p: probability per sample.
        planes: list of spatial-axis pairs to choose from; ``None``: every pair (one in 2D, three in 3D).
    """

    def __init__(self, p: float = 0.5, planes: Sequence[Sequence[int]] | None = None) -> None:
        self.p = check_p(p, "augment.rot90")
        if planes is not None:
            ok = isinstance(planes, (list, tuple)) and len(planes) > 0
            ok = ok and all(isinstance(q, (list, tuple)) and len(q) == 2 and q[0] != q[1] for q in planes)
            if not ok:
                raise DensemedError(f"augment.rot90.planes: must be a list of axis pairs, got {planes!r}")
        self.planes = planes

    def sample(self, batch_size: int, size: torch.Size, generator: Generator = None) -> Rot90:
        """Draw plane and turns per sample (a half turn where the plane is not square)."""
        every = list(combinations(range(len(size)), 2))
        planes = torch.tensor(self.planes if self.planes is not None else every)
        apply = coin(batch_size, self.p, generator)
        which = torch.randint(0, len(planes), (batch_size,), generator=generator)
        turns = torch.randint(1, 4, (batch_size,), generator=generator)
        chosen = planes[which]
        square = torch.tensor([size[a] == size[b] for a, b in chosen.tolist()], dtype=torch.bool)
        k = torch.where(square, turns, torch.full_like(turns, 2)) * apply
        return Rot90(k, chosen)
