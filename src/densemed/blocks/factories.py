"""Plain helpers that turn ``dims`` and layer names into layer classes.

``dims=2|3`` picks ``Conv2d``/``Conv3d``, pooling, norm and transposed convolution, so one
network class serves 2D and 3D. Layer options are names (``norm="batch"|"instance"|None``,
``act="relu"`` or ``("leakyrelu", {"negative_slope": 0.01})``) so recipes can set them in YAML.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from densemed.typing import LayerSpec

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}
_CONVT = {1: nn.ConvTranspose1d, 2: nn.ConvTranspose2d, 3: nn.ConvTranspose3d}
_MAXPOOL = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}
_MAXUNPOOL = {1: nn.MaxUnpool1d, 2: nn.MaxUnpool2d, 3: nn.MaxUnpool3d}
_AVGPOOL = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}
_DROPOUT = {1: nn.Dropout, 2: nn.Dropout2d, 3: nn.Dropout3d}
_BATCHNORM = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}
_INSTNORM = {1: nn.InstanceNorm1d, 2: nn.InstanceNorm2d, 3: nn.InstanceNorm3d}

_ACTS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "leakyrelu": nn.LeakyReLU,
    "prelu": nn.PReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}


def _check_dims(dims: int) -> None:
    if dims not in (1, 2, 3):
        raise ValueError(f"dims must be 1, 2 or 3, got {dims}")


def conv(dims: int) -> type[nn.Module]:
    """``nn.Conv{dims}d``."""
    _check_dims(dims)
    return _CONV[dims]


def conv_transpose(dims: int) -> type[nn.Module]:
    """``nn.ConvTranspose{dims}d``."""
    _check_dims(dims)
    return _CONVT[dims]


def max_pool(dims: int) -> type[nn.Module]:
    """``nn.MaxPool{dims}d``."""
    _check_dims(dims)
    return _MAXPOOL[dims]


def max_unpool(dims: int) -> type[nn.Module]:
    """``nn.MaxUnpool{dims}d``."""
    _check_dims(dims)
    return _MAXUNPOOL[dims]


def avg_pool(dims: int) -> type[nn.Module]:
    """``nn.AvgPool{dims}d``."""
    _check_dims(dims)
    return _AVGPOOL[dims]


def dropout(dims: int) -> type[nn.Module]:
    """Channel dropout (``nn.Dropout{dims}d``)."""
    _check_dims(dims)
    return _DROPOUT[dims]


def norm_layer(norm: LayerSpec, dims: int, channels: int) -> nn.Module:
    """A normalisation layer by name: ``"batch"``, ``"instance"``, ``"group"`` or ``None``.

    ``"group"`` uses 8 groups (or fewer when ``channels`` is not divisible); kwargs may be given as
    ``("group", {"num_groups": 4})``.
    """
    name, kwargs = _split(norm)
    if name is None or name == "none":
        return nn.Identity()
    _check_dims(dims)
    if name == "batch":
        return _BATCHNORM[dims](channels, **kwargs)
    if name == "instance":
        kwargs.setdefault("affine", True)
        return _INSTNORM[dims](channels, **kwargs)
    if name == "group":
        groups = kwargs.pop("num_groups", 8)
        while channels % groups:
            groups -= 1
        return nn.GroupNorm(groups, channels, **kwargs)
    raise ValueError(f"unknown norm {name!r}; use batch, instance, group or none")


def act_layer(act: LayerSpec, channels: int | None = None) -> nn.Module:
    """An activation by name: ``"relu"``, ``("leakyrelu", {"negative_slope": 0.01})``, ``"prelu"``.

    ``prelu`` gets one slope per channel when ``channels`` is given (as in V-Net).
    """
    name, kwargs = _split(act)
    if name is None or name == "none":
        return nn.Identity()
    if name not in _ACTS:
        raise ValueError(f"unknown activation {name!r}; use one of {sorted(_ACTS)}")
    if name == "prelu" and channels is not None:
        kwargs.setdefault("num_parameters", channels)
    if name in ("relu", "leakyrelu", "elu", "silu"):
        kwargs.setdefault("inplace", True)
    return _ACTS[name](**kwargs)


def _split(spec: LayerSpec) -> tuple[str | None, dict[str, Any]]:
    if spec is None:
        return None, {}
    if isinstance(spec, str):
        return spec.lower(), {}
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and isinstance(spec[1], dict):
        return str(spec[0]).lower(), dict(spec[1])
    raise ValueError(f"a layer is a name or (name, kwargs), got {spec!r}")
