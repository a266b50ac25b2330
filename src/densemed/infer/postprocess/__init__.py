"""Instance post-processing: network outputs -> an instance label map (one integer id per object).

One entry point, :func:`to_instances` ``(outputs, method, **params)``. ``outputs`` maps names to
float arrays of the image's spatial shape ``(*S)`` (no batch or channel axis), as produced by
:func:`densemed.infer.runner.network_outputs` from the network's declared heads:

* ``"foreground"``: probability of any object (from the main logits head);
* every other logits head by its name (e.g. ``"contour"``): its foreground-class probability;
* regression heads by their name (``"inner_distance"``, ``"outer_distance"``), not activated.

One method per module, registered by name: ``components``, ``watershed`` (distance-transform
watershed), ``dcan``, ``contour_watershed``, ``deepdistance``, ``cells`` (cells grown between
predicted membranes). Every method returns int32 ids
1..N in scan order (0 = background). Every method registers a tuner for options set to ``auto``
(:func:`tunable` lists them), most of them by the shared grid search of :mod:`.tuning`.
"""

from densemed.infer.postprocess import cells, components, dcan, deepdistance, watershed  # noqa: F401
from densemed.infer.postprocess._common import fill_holes, relabel, remove_small, resize_labels
from densemed.infer.postprocess.registry import (
    check_params,
    get,
    get_tuner,
    names,
    register,
    to_instances,
    tunable,
    tuner,
)

__all__ = [
    "check_params", "fill_holes", "get", "get_tuner", "names", "register", "relabel", "remove_small",
    "resize_labels", "to_instances", "tunable", "tuner",
]
