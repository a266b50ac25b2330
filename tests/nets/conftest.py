"""Fixtures shared by the network tests: a few optimiser steps on a fixed batch."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

LossFn = Callable[[], torch.Tensor]


def _fit(loss_fn: LossFn, opt: torch.optim.Optimizer, steps: int) -> list[float]:
    """Take ``steps`` optimiser steps on ``loss_fn()``; the loss before each step."""
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = loss_fn()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def _one_step_lowers(loss_fn: LossFn, opt: torch.optim.Optimizer) -> None:
    """Assert that one optimiser step lowers ``loss_fn()`` (measured again without gradients)."""
    before = _fit(loss_fn, opt, 1)[0]
    with torch.no_grad():
        after = loss_fn()
    assert after.item() < before


@pytest.fixture
def fit() -> Callable[[LossFn, torch.optim.Optimizer, int], list[float]]:
    """``fit(loss_fn, opt, steps)``: the loss before each of ``steps`` optimiser steps."""
    return _fit


@pytest.fixture
def one_step_lowers() -> Callable[[LossFn, torch.optim.Optimizer], None]:
    """``one_step_lowers(loss_fn, opt)``: assert one optimiser step lowers the loss."""
    return _one_step_lowers
