"""A 2D network applied slice by slice to 3D volumes (nnU-Net's "2d" configuration on volumes).

``slicewise`` wraps any registered 2D network ``f``: a volume batch ``x (B, C, X, Y, Z)`` is cut
into its ``D`` slices along ``axis`` (folded into the batch, :func:`densemed.data.slices.to_slices`),
``f`` runs on the ``B * D`` slices, and its outputs are stacked back
(:func:`densemed.data.slices.from_slices`)::

    y[b, :, ..., k, ...] = f(x[b, :, ..., k, ...])          (k at the slice axis)

So a 3D recipe (``data.dims: 3``: volumes read, split, normalised, patch-sampled and predicted as
volumes) can train a 2D network: a patch ``[1, 64, 48]`` with ``axis: 0`` is one slice per
sample, a thicker patch gives several slices per sample. SegNetMRI's k-space inputs and
ClassNSeg's per-slice class label are folded the same way.

Contract (the wrapped network's declarations, carried to 3D):

* heads, main head and ``inputs`` are the wrapped network's; a dense head has the volume's
  spatial size; a head that is not dense (an image-level score ``(B * D, K)``) comes back as
  ``(B, K, D)`` (``(B, K, *R, D)`` in general: one score per slice, the slice axis last);
* inputs: volume tensors ``(B, C, X, Y, Z)`` are folded; a per-slice vector ``(B, D)`` becomes
  ``(B * D,)``; ``(B,)`` is allowed when ``D == 1``; None passes through;
* training mode, auxiliary outputs and ``all_outputs`` are the wrapped network's (lists and dicts
  are unfolded element by element);
* ``example_inputs`` asks the wrapped network for its extra inputs on the folded slices.

Documented choices: the wrapped network is a child module ``net`` (checkpoints hold ``net.*``);
batch norm sees the ``B * D`` slices as its batch; the wrapper adds no parameters.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch
from torch import nn

from densemed.data.slices import check_axis, from_slices, to_slices
from densemed.nets.heads import declare, heads_of, main_head, model_inputs
from densemed.nets.registry import build, info, register
from densemed.typing import NetOutput


class SliceWise(nn.Module):
    """Run a 2D network on every slice of a volume along ``axis`` (see the module docstring).

    Args:
        net: the 2D network (declares its heads).
        axis: the spatial slice axis of the volumes (0, 1 or 2).

    Shape:
        ``(B, C, X, Y, Z)`` -> the wrapped network's heads as volumes ``(B, K, X, Y, Z)``
        (non-dense heads ``(B, K, D)``).

    Example:
        >>> from densemed.nets.unet import UNet
        >>> net = SliceWise(UNet(1, 2, base_width=4, depth=1), axis=2).eval()
        >>> print(net(torch.zeros(2, 1, 9, 10, 3)).shape)
        torch.Size([2, 2, 9, 10, 3])
    """

    def __init__(self, net: nn.Module, axis: int = 2) -> None:
        super().__init__()
        self.slice_axis = check_axis(axis, "model.axis")
        self.net = net
        declare(self, heads_of(net), main=main_head(net), inputs=model_inputs(net))
        for attr in ("final_last", "default_instances"):  # declarations that the consumers of heads read
            if hasattr(net, attr):
                setattr(self, attr, getattr(net, attr))

    def _fold(self, value: Any, batch: int, depth: int) -> Any:
        if value is None:
            return None
        if value.dim() == 5:
            return to_slices(value, self.slice_axis)
        if value.dim() == 2 and value.shape == (batch, depth):  # one value per slice
            return value.reshape(-1)
        if value.dim() == 1 and depth == 1:
            return value
        raise ValueError(
            f"slicewise: an input must be a volume (B, C, X, Y, Z) or one value per slice (B, D) = ({batch}, {depth}), "
            f"got {tuple(value.shape)}"
        )

    def _unfold(self, out: Any, batch: int, dense: bool) -> Any:
        if isinstance(out, torch.Tensor):
            return from_slices(out, batch, self.slice_axis if dense else None)
        if isinstance(out, (list, tuple)):
            return type(out)(self._unfold(o, batch, dense) for o in out)
        raise TypeError(f"slicewise: unexpected output type {type(out).__name__}")

    def forward(self, image: torch.Tensor, *extra: torch.Tensor | None) -> NetOutput:
        """The wrapped network on every slice; outputs stacked back into volumes (see the class docstring)."""
        if image.dim() != 5:
            raise ValueError(f"slicewise needs a volume batch (B, C, X, Y, Z), got {tuple(image.shape)}")
        batch, depth = image.shape[0], image.shape[2 + self.slice_axis]
        args = [to_slices(image, self.slice_axis)] + [self._fold(e, batch, depth) for e in extra]
        out = self.net(*args)
        if isinstance(out, dict):
            return {k: self._unfold(v, batch, self.heads[k].dense) for k, v in out.items()}
        return self._unfold(out, batch, self.heads[self.main_head].dense)

    def example_inputs(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The wrapped network's extra inputs for the slices of ``image``, as volumes (or per-slice values)."""
        batch, depth = image.shape[0], image.shape[2 + self.slice_axis]
        extra = self.net.example_inputs(to_slices(image, self.slice_axis))
        out = {}
        for key, value in extra.items():
            if value.dim() == 4:
                out[key] = from_slices(value, batch, self.slice_axis)
            else:  # one value per slice
                out[key] = value.reshape(batch, depth)
        return out


@register("slicewise", dims=(3,), small={"net": {"name": "unet", "base_width": 4, "depth": 3}})
def slicewise(
    in_channels: int = 1,
    out_channels: int = 2,
    net: dict[str, Any] | None = None,
    axis: int = 2,
) -> SliceWise:
    """A 2D network applied slice by slice to volumes (net: {name, options}; axis: the slice axis)."""
    spec = dict(net or {"name": "unet"})
    name = spec.pop("name", None)
    if not isinstance(name, str):
        raise ValueError(f"net needs the name of a registered 2D network, got {net!r}")
    entry = info(name)
    if 2 not in entry.dims or name == "slicewise":
        raise ValueError(f"net: {name!r} is not a 2D network")
    params = inspect.signature(entry.builder).parameters
    spec.setdefault("in_channels", in_channels)
    if "out_channels" in params:
        spec.setdefault("out_channels", out_channels)
    if "dims" in params:
        spec["dims"] = 2
    return SliceWise(build(name, **spec), axis)
