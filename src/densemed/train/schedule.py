"""Learning-rate schedules per optimiser step, and a schedule length that follows the time budget.

``factor(name, progress)`` is the multiplier of the base learning rate at ``progress`` in [0, 1]:

* ``cosine``: ``0.5 (1 + cos(pi p))`` (1 -> 0);
* ``poly``: nnU-Net's ``(1 - p)^0.9`` (1 -> 0);
* ``none``: 1.

The schedule runs over ``total_steps`` optimiser steps (``progress = step / total_steps``), so it
is as smooth for a run of 3 epochs as for one of 300. Without a time budget ``total_steps =
train.epochs x steps per epoch``. With ``train.time_budget_s`` the loop re-fixes ``total_steps``
after every epoch from the measured seconds per step (training and periodic validation):
``steps done + ceil(remaining budget / seconds per step)``, capped by the epochs (the last step
may end up to one step past the budget); the value is stored in
the checkpoint, so a resumed run continues the same schedule. The run stops when the schedule
ends or the budget is spent, whichever comes first, so a run whose budget binds ends with the
learning rate at (or within one epoch's re-estimate of) its final value.
"""

from __future__ import annotations

import math

from densemed.errors import DensemedError

SCHEDULES = ("cosine", "poly", "none")


def factor(name: str, progress: float) -> float:
    """Multiplier of the base learning rate at ``progress`` (clipped to [0, 1]).

    Example:
        >>> print(factor("cosine", 0.5), factor("poly", 1.0), factor("none", 0.3))
        0.5 0.0 1.0
    """
    p = min(max(float(progress), 0.0), 1.0)
    if name == "cosine":
        return 0.5 * (1 + math.cos(math.pi * p))
    if name == "poly":
        return (1 - p) ** 0.9
    if name == "none":
        return 1.0
    raise DensemedError(f"train.scheduler: unknown scheduler {name!r} (use {', '.join(SCHEDULES)})")


def budget_steps(done: int, spent_s: float, budget_s: float, seconds_per_step: float, cap: int) -> int:
    """Schedule length that ends when the budget does, at the measured speed, at most ``cap``.

    Args:
        done: optimiser steps already taken.
        spent_s: budget seconds already spent.
        budget_s: the whole budget.
        seconds_per_step: measured cost of one step (training plus amortised validation).
        cap: the schedule length the epochs allow.

    Example:
        >>> print(budget_steps(done=100, spent_s=50.0, budget_s=150.2, seconds_per_step=0.5, cap=10_000))
        301
    """
    if seconds_per_step <= 0:
        return cap
    remaining = max(budget_s - spent_s, 0.0)
    return int(min(cap, max(done + 1, done + math.ceil(remaining / seconds_per_step - 1e-9))))
