"""Tasks: what varies by kind of problem besides the network and the loss (see :mod:`.base`).

Registered tasks: ``segmentation`` (class label maps), ``instances`` (instance label maps:
derived targets, post-processing into objects, object-level evaluation) and ``image``
(super-resolution: a restored image per input). Modules are imported here explicitly so that
registration never depends on what a user imported.
"""

from densemed.tasks import image, instances, segmentation  # noqa: F401
from densemed.tasks import classify_seg  # noqa: F401
from densemed.tasks import recon_seg  # noqa: F401
from densemed.tasks import synthesis  # noqa: F401
from densemed.tasks.base import FitContext, Task
from densemed.tasks.registry import build, check, get, names, register

__all__ = ["FitContext", "Task", "build", "check", "get", "names", "register"]
