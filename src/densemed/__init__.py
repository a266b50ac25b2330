"""densemed: dense prediction networks for medical image segmentation.

Sub-packages: ``nets`` (one network per module, a registry), ``blocks`` (shared layers),
``losses``, ``targets`` (label -> training target encodings), ``augment``, ``metrics``,
``data``, ``train``, ``infer``; ``config`` holds the typed recipe and ``cli`` the console script.
"""

__version__ = "0.1.0"
