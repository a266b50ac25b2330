"""Fast, batched, joint data augmentation in 2D and 3D.

``build(cfg)`` turns the recipe's ``augment:`` section into ``aug(batch, generator=None)``, which
augments a whole batch on its own device with one draw per sample shared by every tensor of the
sample: ``image`` (B, C, *S) gets linear (or 2D bicubic) interpolation and the intensity
transforms, integer maps (``label``, instance ids) nearest neighbour, other float maps (weights,
distance maps) linear. All geometric parts — flips, 90-degree rotations, rotation, scaling,
shearing, translation and the U-Net elastic deformation — compose into one sampling map per
sample, so each tensor is resampled once (see :mod:`densemed.augment.warp`).

One transform per module, each a random transform drawing parameters (``RandomFlip``) and its
deterministic twin applying them (``Flip``).
"""

from densemed.augment.affine import Affine, RandomAffine, affine_matrix
from densemed.augment.blur import Blur, RandomBlur
from densemed.augment.brightness import Brightness, RandomBrightness
from densemed.augment.compose import DEFAULT_AUGMENT, Compose, build, identity
from densemed.augment.contrast import Contrast, RandomContrast
from densemed.augment.elastic import Elastic, RandomElastic
from densemed.augment.flip import Flip, RandomFlip
from densemed.augment.gamma import Gamma, RandomGamma
from densemed.augment.noise import Noise, RandomNoise
from densemed.augment.rot90 import RandomRot90, Rot90
from densemed.augment.warp import Warp

__all__ = [
    "DEFAULT_AUGMENT",
    "Affine",
    "Blur",
    "Brightness",
    "Compose",
    "Contrast",
    "Elastic",
    "Flip",
    "Gamma",
    "Noise",
    "RandomAffine",
    "RandomBlur",
    "RandomBrightness",
    "RandomContrast",
    "RandomElastic",
    "RandomFlip",
    "RandomGamma",
    "RandomNoise",
    "RandomRot90",
    "Rot90",
    "Warp",
    "affine_matrix",
    "build",
    "identity",
]
