import json

import numpy as np
import pytest
import torch

from densemed import config
from densemed.errors import DensemedError
from densemed.train import Trainer, train
from densemed.train.checkpoint import load, save_atomic

TINY = [
    "data.synthetic={n: 8, size: 32, seed: 1}",
    "data.patch_size=[32,32]",
    "data.samples_per_epoch=8",
    "data.batch_size=4",
    "model.base_width=4",
    "model.depth=2",
    "train.progress=false",
    "augment=null",
]


def _cfg(out, *extra):
    return config.load(None, TINY + [f"train.out={out}", *extra])


def test_run_folder_has_config_metrics_curves_and_checkpoints(tmp_path):
    result = train(_cfg(tmp_path / "run", "train.epochs=2"), log=lambda s: None)
    names = {p.name for p in (tmp_path / "run").iterdir()}
    assert {"config.yaml", "metrics.jsonl", "last.pt", "best.pt"} <= names
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["epoch"] for x in lines] == [0, 1] and result.epochs == 2
    assert {"train_loss", "val_loss", "val_dice", "lr", "seconds"} <= set(lines[0])
    assert config.load(tmp_path / "run" / "config.yaml").train.epochs == 2


def test_resume_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path):
    train(_cfg(tmp_path / "a", "train.epochs=2", "augment={flip: {p: 0.5}}"), log=lambda s: None)
    # interrupted after its first epoch by a tiny time budget, then resumed without one
    train(_cfg(tmp_path / "b", "train.epochs=2", "augment={flip: {p: 0.5}}", "train.time_budget_s=1e-6"), log=lambda s: None)
    assert load(tmp_path / "b" / "last.pt")["epoch"] == 0
    train(_cfg(tmp_path / "b", "train.epochs=2", "augment={flip: {p: 0.5}}"), resume=True, log=lambda s: None)
    a, b = load(tmp_path / "a" / "last.pt"), load(tmp_path / "b" / "last.pt")
    assert a["epoch"] == b["epoch"] == 1
    for k in a["model"]:
        torch.testing.assert_close(a["model"][k], b["model"][k], rtol=0, atol=0)
    la = [json.loads(x)["train_loss"] for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["train_loss"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert la == lb


def test_existing_run_folder_is_not_overwritten_without_resume(tmp_path):
    train(_cfg(tmp_path / "r", "train.epochs=1"), log=lambda s: None)
    before = (tmp_path / "r" / "last.pt").read_bytes()
    with pytest.raises(DensemedError, match="already holds a run"):
        train(_cfg(tmp_path / "r", "train.epochs=1"), log=lambda s: None)
    assert (tmp_path / "r" / "last.pt").read_bytes() == before


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path):
    tr = Trainer(_cfg(tmp_path / "n", "train.epochs=3"), log=lambda s: None)
    tr.fit()  # 3 good epochs
    good = load(tmp_path / "n" / "last.pt")
    tr.cfg.train.epochs = 5
    with torch.no_grad():
        for p in tr.model.parameters():
            p.fill_(float("nan"))
    with pytest.raises(DensemedError, match="loss became nan"):
        tr._train_epoch(3)
    kept = load(tmp_path / "n" / "last.pt")
    assert kept["epoch"] == good["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


def test_atomic_save_leaves_old_checkpoint_intact_when_writing_fails(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_atomic({"model": {"w": torch.ones(3)}, "config": {}}, path)

    def broken_save(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError):
        save_atomic({"model": {"w": torch.zeros(3)}, "config": {}}, path)
    monkeypatch.undo()
    assert torch.equal(load(path)["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


def test_training_beats_the_untrained_network_on_synthetic_cells(tmp_path):
    result = train(_cfg(tmp_path / "s", "train.epochs=6", "train.lr=0.01", "model.base_width=8"), log=lambda s: None)
    dice = [h["val_dice"] for h in result.history]
    assert max(dice) > 0.7, dice
    assert np.isfinite([h["train_loss"] for h in result.history]).all()


def test_best_checkpoint_follows_last_until_a_validation_runs(tmp_path):
    train(_cfg(tmp_path / "v", "train.epochs=3", "train.val_every=100", "train.time_budget_s=1e-6"), log=lambda s: None)
    assert load(tmp_path / "v" / "best.pt")["epoch"] == load(tmp_path / "v" / "last.pt")["epoch"] == 0
    train(_cfg(tmp_path / "v", "train.epochs=3", "train.val_every=100", "train.time_budget_s=null"), resume=True,
          log=lambda s: None)  # the last epoch validates
    assert load(tmp_path / "v" / "best.pt")["epoch"] == 2
