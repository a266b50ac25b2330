"""Domain type aliases shared across the package."""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from typing import Any, Union

import torch

PathType = Union[str, "PathLike[str]"]
#: A layer given by name, or by ``(name, kwargs)``, so that it fits in YAML.
LayerSpec = str | tuple[str, dict[str, Any]] | list[Any] | None
#: Spatial size: ``(H, W)`` or ``(D, H, W)``.
SpatialSize = Sequence[int]
#: What a network returns in training mode: its logits, a list of outputs (deep supervision,
#: stages), or a dict of named task outputs (multi-task networks).
NetOutput = torch.Tensor | list[torch.Tensor] | dict[str, Any]
#: A batch: ``image`` (B, C, *spatial) float, ``label`` (B, 1, *spatial) int64, optional maps.
Batch = dict[str, torch.Tensor]
