"""Learning-rate schedules per step and the schedule length that follows the budget."""

from __future__ import annotations

import math

import pytest
import torch

from densemed.config import TrainConfig
from densemed.errors import DensemedError
from densemed.train.module import TrainingModule, make_optimizer
from densemed.train.schedule import budget_steps, factor


def test_factor_values_by_hand():
    assert factor("cosine", 0.0) == 1.0 and factor("cosine", 1.0) == pytest.approx(0.0, abs=1e-15)
    assert factor("cosine", 0.25) == pytest.approx((1 + math.sqrt(0.5)) / 2)
    assert factor("poly", 0.5) == pytest.approx(0.5**0.9)
    assert factor("none", 0.7) == 1.0
    assert factor("cosine", 1.5) == factor("cosine", 1.0)  # clipped past the end
    with pytest.raises(DensemedError, match="unknown scheduler 'step'"):
        factor("step", 0.1)


def test_budget_steps_ends_the_schedule_with_the_budget():
    # 40 s left at 0.5 s per step: 80 more steps
    assert budget_steps(20, 60.0, 100.0, 0.5, cap=1000) == 100
    assert budget_steps(20, 60.0, 100.0, 0.5, cap=50) == 50  # never past the epochs
    assert budget_steps(20, 120.0, 100.0, 0.5, cap=1000) == 21  # budget spent: end after the next step


@pytest.mark.parametrize("name", ["cosine", "poly", "none"])
def test_the_learning_rate_follows_the_schedule_per_step(name):
    t = TrainConfig(lr=0.1, scheduler=name)
    w = torch.nn.Parameter(torch.zeros(3))
    module = TrainingModule({"model": torch.nn.Linear(1, 1)}, t, torch.device("cpu"))
    module.add_optimizer("model", make_optimizer([w], t))
    module.set_total_steps(10)
    lrs = []
    for _ in range(10):
        lrs.append(module.lr())
        w.sum().backward()
        module.backward_step("model", (w * 0).sum() + w.sum(), [w])
        module.step += 1
    assert lrs == pytest.approx([0.1 * factor(name, k / 10) for k in range(10)])
    assert module.lr() == pytest.approx(0.1 * factor(name, 1.0), abs=1e-12)


def test_changing_the_schedule_length_moves_the_learning_rate_at_once():
    t = TrainConfig(lr=1.0, scheduler="cosine")
    w = torch.nn.Parameter(torch.zeros(1))
    module = TrainingModule({"model": torch.nn.Linear(1, 1)}, t, torch.device("cpu"))
    module.add_optimizer("model", make_optimizer([w], t))
    module.step = 5
    module.set_total_steps(10)
    assert module.lr() == pytest.approx(factor("cosine", 0.5))
    module.set_total_steps(20)
    assert module.lr() == pytest.approx(factor("cosine", 0.25))
