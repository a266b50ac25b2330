"""Tasks: what varies by kind of problem besides the network and the loss (see :mod:`.base`).

Registered tasks: ``segmentation`` (class label maps), ``instances`` (instance label maps:
derived targets, post-processing into objects, object-level evaluation) and ``image``
(super-resolution: a restored image per input). Modules are imported here explicitly so that
registration never depends on what a user imported.
"""

from densemed.tasks import (  # noqa: F401  (imported to register the tasks)
    classify_seg,
    image,
    instances,
    recon_seg,
    segmentation,
    synthesis,
)
from densemed.tasks.base import FitContext, Task
from densemed.tasks.registry import build, check, get, names, register

__all__ = ["FitContext", "Task", "build", "check", "get", "names", "register"]
