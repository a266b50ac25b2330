"""Losses for imbalanced classes and touching objects, selectable by name in a recipe.

``build(name, **params)`` returns an ``nn.Module`` called as ``loss(output, target, weights=None)``
with logits ``(B, C, *S)`` (``C == 1``: sigmoid, ``C >= 2``: softmax) and a target of class
indices ``(B, 1, *S)`` or one-hot ``(B, C, *S)``; ``names()`` lists them. The pure functions are in
:mod:`densemed.losses.functional`. The U-Net border weight map is a data-pipeline target
(:mod:`densemed.targets.weights`), re-exported here as :func:`border_weight_map`.

Modules are imported here explicitly so that registration never depends on what a user imported.
"""

from densemed.losses import (
    activation,  # noqa: F401
    adversarial,  # noqa: F401
    attentionboost,  # noqa: F401
    cross_entropy,  # noqa: F401
    dice,  # noqa: F401
    focal,  # noqa: F401
    multitask,  # noqa: F401
    restoration,  # noqa: F401
    wrappers,  # noqa: F401
)
from densemed.losses.functional import class_weights_from_labels
from densemed.losses.registry import Loss, build, names, register
from densemed.targets.weights import border_weight_map

__all__ = ["Loss", "border_weight_map", "build", "class_weights_from_labels", "names", "register"]
