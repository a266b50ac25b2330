"""The augmentation pipeline: geometric draws folded into one warp, then intensity on the image.

Per batch and sample, in this order:

1. every enabled geometric transform draws its parameters (flip, rot90, affine, elastic);
2. their sampling maps compose into one :class:`~densemed.augment.warp.Warp`
   (``T = T_flip o T_rot90 o T_affine``, plus the elastic field), so each tensor is resampled
   once — by exact index operations for flip/rot90-only samples, else by one ``grid_sample`` per
   role (image + float maps linear, integer maps nearest);
3. the intensity transforms modify ``image`` only: noise, blur, brightness, contrast, gamma
   (after resampling, so the noise is not interpolated).

All draws come from one CPU generator in a fixed order and number, so a seed fixes the output.
"""

from __future__ import annotations

import copy
from typing import Any

import torch

from densemed.augment._common import Generator, check_keys, spatial_roles
from densemed.augment.affine import RandomAffine
from densemed.augment.blur import RandomBlur
from densemed.augment.brightness import RandomBrightness
from densemed.augment.contrast import RandomContrast
from densemed.augment.elastic import RandomElastic
from densemed.augment.flip import RandomFlip
from densemed.augment.gamma import RandomGamma
from densemed.augment.noise import RandomNoise
from densemed.augment.rot90 import RandomRot90
from densemed.augment.warp import INTERPOLATION, PADDING, Warp
from densemed.errors import DensemedError

#: Recipe key -> random transform, in the order they are applied.
GEOMETRIC = {"flip": RandomFlip, "rot90": RandomRot90, "affine": RandomAffine, "elastic": RandomElastic}
INTENSITY = {
    "noise": RandomNoise,
    "blur": RandomBlur,
    "brightness": RandomBrightness,
    "contrast": RandomContrast,
    "gamma": RandomGamma,
}
SETTINGS = ("enabled", "padding", "interpolation")

#: Defaults used by recipes (``augment: default``): nnU-Net-like probabilities, the U-Net paper's
#: elastic deformation (3x3 control grid, 10 pixels standard deviation) on a fifth of the samples.
DEFAULT_AUGMENT: dict[str, Any] = {
    "flip": {"p": 0.5},
    "rot90": {"p": 0.5},
    "affine": {"p": 0.3, "rotate": 15, "scale": [0.85, 1.25]},
    "elastic": {"p": 0.2, "grid": 3, "magnitude": 10},
    "noise": {"p": 0.15, "std": 0.1},
    "blur": {"p": 0.1, "sigma": [0.5, 1.0]},
    "brightness": {"p": 0.15, "delta": 0.1},
    "contrast": {"p": 0.15, "range": [0.75, 1.25]},
    "gamma": {"p": 0.15, "range": [0.7, 1.5]},
    "padding": "zeros",
    "interpolation": "linear",
}


class Compose:
    """Apply random geometric transforms jointly (one resampling) and intensity transforms to the image.

    Args:
        geometric: random geometric transforms (``RandomFlip``, ``RandomRot90``, ``RandomAffine``,
            ``RandomElastic``), composed in this order.
        intensity: random intensity transforms, applied in this order to ``image``.
        padding: ``"zeros"``, ``"border"`` or ``"reflection"``.
        interpolation: image interpolation, ``"linear"`` or ``"cubic"`` (2D only; 3D stays linear).

    Shape:
        ``batch["image"]`` (B, C, *S), ``batch["label"]`` (B, 1, *S) and other maps keep their shapes.

    Example:
        >>> aug = Compose([RandomFlip(1.0)], [])
        >>> out = aug({"image": torch.rand(2, 1, 8, 8), "label": torch.zeros(2, 1, 8, 8, dtype=torch.long)})
        >>> print(out["image"].shape, out["label"].dtype)
        torch.Size([2, 1, 8, 8]) torch.int64
    """

    def __init__(
        self,
        geometric: list[Any],
        intensity: list[Any],
        padding: str = "zeros",
        interpolation: str = "linear",
    ) -> None:
        if padding not in PADDING:
            raise DensemedError(f"augment.padding: must be one of {', '.join(PADDING)}, got {padding!r}")
        if interpolation not in INTERPOLATION:
            raise DensemedError(
                f"augment.interpolation: must be one of {', '.join(INTERPOLATION)}, got {interpolation!r}"
            )
        self.geometric = list(geometric)
        self.intensity = list(intensity)
        self.padding = padding
        self.interpolation = interpolation

    def draw_warp(
        self, batch_size: int, size: torch.Size, device: torch.device, generator: Generator
    ) -> Warp:
        """Draw every geometric transform and compose their sampling maps."""
        warp = Warp.identity(batch_size, len(size))
        for t in self.geometric:
            warp = warp.then(t.sample(batch_size, size, generator).to_warp(size, device))
        return warp

    def __call__(
        self, batch: dict[str, Any], generator: Generator = None, nearest: tuple[str, ...] | frozenset[str] = ()
    ) -> dict[str, Any]:
        """Augment a batch with one draw per sample; returns a new dict.

        ``nearest`` names float maps to resample by nearest neighbour (targets that declare it).
        """
        image, _ = spatial_roles(batch)
        out = dict(batch)
        if self.geometric:
            warp = self.draw_warp(image.shape[0], image.shape[2:], image.device, generator)
            out = warp.apply(batch, self.padding, self.interpolation, nearest=nearest)
        x = out["image"]
        for t in self.intensity:
            x = t.sample(image.shape[0], generator)(x)
        out["image"] = x
        return out

    def __repr__(self) -> str:
        parts = [type(t).__name__ for t in self.geometric + self.intensity]
        settings = f"padding={self.padding!r}, interpolation={self.interpolation!r}"
        return f"Compose([{', '.join(parts)}], {settings})"


def identity(batch: dict[str, Any], generator: Generator = None, nearest: Any = ()) -> dict[str, Any]:
    """No augmentation: returns ``batch`` unchanged."""
    return batch


def build(cfg: dict[str, Any] | str | None) -> Any:
    """Build ``aug(batch, generator=None) -> batch`` from the recipe's ``augment:`` section.

    Args:
        cfg: ``None``, ``{}`` or ``{"enabled": false}``: no augmentation. ``"default"``:
            :data:`DEFAULT_AUGMENT`. Otherwise a dict whose keys name the transforms to use
            (``flip``, ``rot90``, ``affine``, ``elastic``, ``noise``, ``blur``, ``brightness``,
            ``contrast``, ``gamma``), each mapping to its options (``p`` and the transform's
            arguments; ``{}`` for the defaults; ``null``/``false`` to switch it off), plus
            ``padding`` and ``interpolation``. Transforms not named are off.

    Raises:
        DensemedError: unknown key or bad value, naming the key.

    Example:
        >>> aug = build({"flip": {"p": 0.5, "axes": [1]}, "noise": {"p": 1.0, "std": 0.05}})
        >>> out = aug({"image": torch.zeros(4, 1, 16, 16)}, torch.Generator().manual_seed(0))
        >>> print(out["image"].shape)
        torch.Size([4, 1, 16, 16])
    """
    if cfg is None:
        return identity
    if isinstance(cfg, str):
        if cfg != "default":
            raise DensemedError(f"augment: must be a mapping, null or 'default', got {cfg!r}")
        cfg = DEFAULT_AUGMENT
    if not isinstance(cfg, dict):
        raise DensemedError(f"augment: must be a mapping, null or 'default', got {type(cfg).__name__}")
    cfg = copy.deepcopy(cfg)
    check_keys(cfg, [*SETTINGS, *GEOMETRIC, *INTENSITY], "augment")
    enabled = cfg.pop("enabled", True)
    if not isinstance(enabled, bool):
        raise DensemedError(f"augment.enabled: must be true or false, got {enabled!r}")
    if not enabled:
        return identity
    padding = cfg.pop("padding", "zeros")
    interpolation = cfg.pop("interpolation", "linear")
    Compose([], [], padding, interpolation)  # validates the two settings even when nothing is on

    def make(table: dict[str, Any]) -> list[Any]:
        made = []
        for name, cls in table.items():
            opts = cfg.get(name)
            if opts is None or opts is False:
                continue
            if opts is True:
                opts = {}
            if not isinstance(opts, dict):
                raise DensemedError(f"augment.{name}: must be a mapping of options, got {opts!r}")
            allowed = [a for a in cls.__init__.__code__.co_varnames[1 : cls.__init__.__code__.co_argcount]]
            check_keys(opts, allowed, f"augment.{name}")
            made.append(cls(**opts))
        return made

    geometric, intensity = make(GEOMETRIC), make(INTENSITY)
    if not geometric and not intensity:
        return identity
    return Compose(geometric, intensity, padding, interpolation)
