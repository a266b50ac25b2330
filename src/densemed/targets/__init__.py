"""Target encodings: instance label map -> training targets (weight maps, contours, distances).

``build(name, **params)`` returns ``f(instances, spacing) -> np.ndarray float32 (*S) or (C, *S)``;
recipes ask for them under ``task.targets: {<batch key>: {name: ..., **params}}``. ``names()`` lists
them; ``augment_mode(name)`` says how geometric augmentation treats each.

Modules are imported here explicitly so that registration never depends on what a user imported.
"""

from densemed.targets import (
    contours,  # noqa: F401
    distance,  # noqa: F401
    fourier,  # noqa: F401
    weights,  # noqa: F401
)
from densemed.targets.registry import augment_mode, build, names, register
from densemed.targets.validate import check_instances  # noqa: F401

__all__ = ["augment_mode", "build", "names", "register"]
