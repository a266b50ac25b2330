"""``densemed train --check``: the run built as training builds it, one step on a tiny batch, nothing written."""

import pytest
import torch

from densemed import config
from densemed.errors import DensemedError
from densemed.train.dry_run import dry_run

TINY = [
    "data.synthetic={n: 4, size: 32, seed: 1}",
    "data.patch_size=[32,32]",
    "model.name=unet",
    "model.base_width=2",
    "model.depth=2",
    "train.progress=false",
    "train.threads=1",
]


def test_dry_run_builds_everything_takes_one_step_and_writes_nothing(tmp_path):
    cfg = config.load(None, [*TINY, f"train.out={tmp_path / 'run'}", "data.batch_size=8",
                             "augment={flip: {p: 0.5}}"])
    line = dry_run(cfg)
    assert line.startswith("check passed: 3 training and 1 validation case(s), 1 input channel(s), unet with ")
    assert "one step on a 2x1x32x32 batch" in line  # batch size capped at 2
    assert not (tmp_path / "run").exists()


def test_dry_run_names_the_loss_when_it_does_not_fit_the_network(tmp_path):
    # two logit channels, but a binary loss that takes one: found on the first batch, not at build time
    cfg = config.load(None, [*TINY, f"train.out={tmp_path / 'run'}", "loss.name=bce"])
    with pytest.raises(DensemedError) as info:
        dry_run(cfg)
    assert str(info.value) == (f"{tmp_path / 'run'}: loss: loss 'bce' on the output of 'unet' failed: ValueError: "
                               "bce needs one-channel logits, got 2 channels (use 'ce')")


def test_dry_run_refuses_a_folder_that_holds_a_run_like_training_would(tmp_path):
    (tmp_path / "run").mkdir()
    torch.save({}, tmp_path / "run" / "last.pt")
    cfg = config.load(None, [*TINY, f"train.out={tmp_path / 'run'}"])
    with pytest.raises(DensemedError, match="already holds a run"):
        dry_run(cfg)


def test_dry_run_with_resume_loads_the_runs_checkpoint_and_names_a_mismatch(tmp_path):
    from densemed.train import train

    run = tmp_path / "run"
    train(config.load(None, [*TINY, f"train.out={run}", "train.epochs=1", "data.samples_per_epoch=2"]),
          log=lambda s: None)
    before = sorted(p.name for p in run.iterdir())
    assert dry_run(config.load(run / "config.yaml"), resume=True).startswith("check passed")
    wider = config.load(run / "config.yaml", ["model.base_width=4"])
    with pytest.raises(DensemedError, match="weights do not fit the 'unet' network built from the recipe"):
        dry_run(wider, resume=True)
    assert sorted(p.name for p in run.iterdir()) == before  # the run folder only read


@pytest.mark.parametrize("recipe", ["classnseg_hippocampus", "segnetmri_hippocampus", "pix2pix_isbi2012"])
def test_dry_run_passes_recipes_whose_task_completes_the_batch_in_its_own_step(recipe, real_data, tmp_path):
    # these tasks add class labels, simulated measurements or GAN targets inside their training step,
    # so the network cannot be tried on the raw batch: the dry run must go through the step itself
    root = real_data / config.load(f"configs/{recipe}.yaml").data.root
    cfg = config.load(f"configs/{recipe}.yaml",
                      [f"data.root={root}", f"train.out={tmp_path / 'run'}", "train.threads=1"])
    line = dry_run(cfg)
    assert line.startswith("check passed:") and not (tmp_path / "run").exists()
