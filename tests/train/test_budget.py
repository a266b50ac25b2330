"""The time budget with a fake clock: stop between steps, one final validation, exhausted resume, schedule end."""

from __future__ import annotations

import math

import pytest

from densemed import config
from densemed.checkpoint import load
from densemed.errors import DensemedError
from densemed.train import Trainer

TINY = [
    "data.synthetic={n: 8, size: 32, seed: 1}", "data.patch_size=[32,32]", "data.samples_per_epoch=8",
    "data.batch_size=4", "model={name: unet, base_width: 2, depth: 2}", "train.progress=false",
    "train.epochs=100", "train.lr=0.01",
]


class FakeClock:
    """Seconds advance only when a training step runs (1 s each), so the budget is exact."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def _trainer(out, *extra, clock=None):
    clock = clock or FakeClock()
    tr = Trainer(config.load(None, TINY + [f"train.out={out}", *extra]), log=lambda s: None, clock=clock)
    step = tr.module.train_step

    def timed(batch):
        clock.t += 1.0
        return step(batch)

    tr.module.train_step = timed
    calls = []
    validate = tr.task.validate

    def counted(*args):
        calls.append(tr.module.step)
        return validate(*args)

    tr.task.validate = counted
    return tr, clock, calls


def test_the_run_stops_at_the_first_step_past_the_budget(tmp_path):
    tr, clock, _ = _trainer(tmp_path / "r", "train.time_budget_s=6.5", "train.scheduler=none")
    tr.fit()
    # 2 steps per epoch, 1 s each: 7 s after step 7, the first step at or past 6.5 s
    assert tr.module.step == 7 and clock.t == 7.0
    ckpt = load(tmp_path / "r" / "last.pt")
    assert (ckpt["epoch"], ckpt["epoch_step"], ckpt["step"]) == (3, 1, 7)


def test_the_final_validation_runs_once_and_is_reported_apart(tmp_path):
    tr, _, calls = _trainer(tmp_path / "r", "train.time_budget_s=5", "train.val_every=1000")
    result = tr.fit()
    assert calls == [5]  # only the final validation, after the last step
    assert "val_dice" in result.history[-1] and "final_val_seconds" in result.history[-1]
    assert load(tmp_path / "r" / "best.pt")["step"] == 5  # best.pt reflects the end of training


def test_resuming_an_exhausted_budget_trains_zero_steps(tmp_path):
    tr, _, _ = _trainer(tmp_path / "r", "train.time_budget_s=4")
    tr.fit()
    before = load(tmp_path / "r" / "last.pt")["step"]
    with pytest.raises(DensemedError, match="time budget of 4 s is used up; raise train.time_budget_s"):
        Trainer(config.load(None, TINY + [f"train.out={tmp_path / 'r'}", "train.time_budget_s=4"]), resume=True,
                log=lambda s: None)
    assert load(tmp_path / "r" / "last.pt")["step"] == before


def test_raising_the_budget_continues_the_run(tmp_path):
    tr, _, _ = _trainer(tmp_path / "r", "train.time_budget_s=4")
    tr.fit()
    clock = FakeClock()
    clock.t = 100.0
    tr2 = Trainer(config.load(None, TINY + [f"train.out={tmp_path / 'r'}", "train.time_budget_s=6"]), resume=True,
                  log=lambda s: None, clock=clock)
    step = tr2.module.train_step

    def timed(batch):
        clock.t += 1.0
        return step(batch)

    tr2.module.train_step = timed
    tr2.fit()
    assert tr2.module.step == 6  # 4 steps before, 2 more for the 2 added seconds


@pytest.mark.parametrize("schedule", ["cosine", "poly"])
def test_the_schedule_ends_at_its_final_value_when_the_budget_binds(tmp_path, schedule):
    tr, _, _ = _trainer(tmp_path / schedule, "train.time_budget_s=9", f"train.scheduler={schedule}")
    result = tr.fit()
    assert tr.module.step == 9 and tr.module.total_steps == 9
    assert result.history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)
    # the first epoch ran at the learning rates of a 9-step schedule from step 2 on (fixed after epoch 1)
    assert result.history[0]["lr"] < 0.01 and not math.isclose(result.history[0]["lr"], 0.0)


def test_validation_is_skipped_when_it_would_exceed_its_share_of_the_elapsed_time(tmp_path):
    # 2 steps of 1 s per epoch, each validation 3 s, val_share 0.25, budget 40 s. By hand: the first
    # validation always runs (after step 2; elapsed 5 s). A due validation runs when
    # val_s + 3 <= 0.25 (elapsed + 2 + 3): with val_s = 3 that needs elapsed >= 19 s at the start of
    # the epoch (epochs start at 5, 7, ..., 19: the 9th epoch, after step 18; elapsed then 24 s);
    # with val_s = 6, elapsed >= 31 s (24, 26, ..., 32: after step 28; elapsed 37 s); the budget
    # ends at step 31 (40 s), whose final validation always runs.
    tr, clock, calls = _trainer(tmp_path / "r", "train.time_budget_s=40", "train.scheduler=none",
                                "train.val_share=0.25")
    validate = tr.task.validate

    def slow(*args):
        clock.t += 3.0
        return validate(*args)

    tr.task.validate = slow
    result = tr.fit()
    assert calls == [2, 18, 28, 31]
    skipped = [r["epoch"] for r in result.history if r.get("skipped_validation")]
    assert skipped == [e for e in range(15) if e not in (0, 8, 13)]


def test_without_val_share_every_due_epoch_validates(tmp_path):
    tr, _, calls = _trainer(tmp_path / "r", "train.time_budget_s=8", "train.scheduler=none", "train.val_share=null")
    tr.fit()
    assert calls == [2, 4, 6, 8]  # every epoch; the budget ends at the 4th epoch's last step: the final one
