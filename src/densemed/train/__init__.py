"""The training loop, training modules, schedules, curves.

Imports are lazy so that ``densemed.train.module`` can be imported (by tasks) without pulling in
the loop.
"""

from __future__ import annotations

from typing import Any

__all__ = ["RunResult", "Trainer", "train"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from densemed.train import loop

        return getattr(loop, name)
    raise AttributeError(name)
