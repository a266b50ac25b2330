"""Networks: one per module, each registered by name.

Every network takes ``in_channels`` and ``out_channels`` (and ``dims`` where it supports 2D and
3D) and returns logits ``(B, out_channels, *S)`` for an input ``(B, in_channels, *S)`` of any
spatial size ``S``. Auxiliary outputs (deep supervision, stages, task heads) are returned only
in training mode; in eval mode every network returns its main logits tensor.

Modules are imported here explicitly so that registration never depends on what a user imported.
"""

from densemed.nets import (
    attentionboost,  # noqa: F401
    classnseg,  # noqa: F401
    dcan,  # noqa: F401
    deconvnet,  # noqa: F401
    deepdistance,  # noqa: F401
    deepresolve,  # noqa: F401
    fcn,  # noqa: F401
    fouriernet,  # noqa: F401
    multitask,  # noqa: F401
    patchgan,  # noqa: F401
    pix2pix,  # noqa: F401
    segnetmri,  # noqa: F401
    slicewise,  # noqa: F401
    unet,  # noqa: F401
    unet3d_ds,  # noqa: F401
    vnet,  # noqa: F401
    voxresnet,  # noqa: F401
)
from densemed.nets._aux import all_outputs, wants_aux
from densemed.nets.registry import build, count_parameters, info, names, register

__all__ = ["all_outputs", "wants_aux", "build", "count_parameters", "info", "names", "register"]
