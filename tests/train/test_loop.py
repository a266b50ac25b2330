"""The training loop: run folder, exact resume (also mid-epoch), budget between steps, after-fit work."""

import json

import numpy as np
import pytest
import torch

from densemed import config
from densemed.checkpoint import load, network_state, save_atomic
from densemed.errors import DensemedError
from densemed.train import Trainer, train

TINY = [
    "data.synthetic={n: 8, size: 32, seed: 1}",
    "data.patch_size=[32,32]",
    "data.samples_per_epoch=8",
    "data.batch_size=4",
    "model.name=unet",
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


def test_resume_mid_epoch_reaches_the_same_weights_as_an_uninterrupted_run(tmp_path):
    train(_cfg(tmp_path / "a", "train.epochs=2", "augment={flip: {p: 0.5}}"), log=lambda s: None)
    # stopped after its first step (mid-epoch) by a tiny time budget, then resumed without one
    train(
        _cfg(tmp_path / "b", "train.epochs=2", "augment={flip: {p: 0.5}}", "train.time_budget_s=1e-6"),
        log=lambda s: None,
    )
    stopped = load(tmp_path / "b" / "last.pt")
    assert (stopped["epoch"], stopped["epoch_step"], stopped["step"]) == (0, 1, 1)
    train(_cfg(tmp_path / "b", "train.epochs=2", "augment={flip: {p: 0.5}}"), resume=True, log=lambda s: None)
    a, b = load(tmp_path / "a" / "last.pt"), load(tmp_path / "b" / "last.pt")
    assert a["epoch"] == b["epoch"] == 1 and a["step"] == b["step"] == 4
    for k in network_state(a):
        torch.testing.assert_close(network_state(a)[k], network_state(b)[k], rtol=0, atol=0)
    la = [json.loads(x)["train_loss"] for x in (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()]
    lb = [json.loads(x)["train_loss"] for x in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    assert la[1] == lb[1]  # the second epoch is identical; the first was split in two sessions


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
        tr._train_epoch(3, 0, tr.clock())
    kept = load(tmp_path / "n" / "last.pt")
    assert kept["epoch"] == good["epoch"] == 2
    assert all(torch.isfinite(v).all() for v in network_state(kept).values() if v.is_floating_point())


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
    tr = Trainer(_cfg(tmp_path / "v", "train.epochs=3", "train.val_every=100", "data.val_fraction=0"),
                 log=lambda s: None)
    tr.fit()  # no validation images: no score ever
    assert load(tmp_path / "v" / "best.pt")["step"] == load(tmp_path / "v" / "last.pt")["step"] == 6


DEEPDISTANCE = [
    "task={name: instances, targets: {inner_distance: {name: inner_distance}, outer_distance: {name: outer_distance}},"
    " postprocess: {method: deepdistance, h: auto}}",
    "model={name: deepdistance, base_width: 4, depth: 2, segmentation: true}",
    "loss={name: multitask, tasks: {mask: {loss: {name: ce}, weight: 0.1, target: label}, "
    "inner_distance: {loss: {name: mse}, target: inner_distance}, "
    "outer_distance: {loss: {name: mse}, target: outer_distance}}}",
]


def test_deepdistance_h_auto_is_chosen_on_validation_images_and_stored_in_both_checkpoints(tmp_path):
    from densemed.build import load_model
    from densemed.infer.postprocess.deepdistance import choose_h
    from densemed.infer.runner import network_outputs

    trainer = Trainer(
        _cfg(tmp_path / "dd", "train.epochs=3", "data.val_fraction=0.25", *DEEPDISTANCE), log=lambda s: None
    )
    trainer.fit()
    for name in ("best.pt", "last.pt"):
        ckpt = load(tmp_path / "dd" / name)
        h = ckpt["config"]["task"]["postprocess"]["h"]
        assert isinstance(h, float) and str(h) in ckpt["task_state"]
        # recomputed from the checkpoint's own weights and the validation truth by choose_h directly
        model, cfg, _ = load_model(tmp_path / "dd" / name)
        inner, masks = [], []
        for case in trainer.val_cases:
            out = network_outputs(model, torch.from_numpy(case.image)[None], cfg.data.patch_size)
            inner.append(out["inner_distance"])
            masks.append(out["foreground"] > 0.5)
        best, scores = choose_h(inner, [c.instances for c in trainer.val_cases], masks=masks)
        assert h == best and ckpt["task_state"] == {str(k): v for k, v in scores.items()}


def test_deepdistance_h_auto_without_validation_images_falls_back_to_the_default(tmp_path):
    from densemed.build import load_model
    from densemed.infer.postprocess.deepdistance import DEFAULT_H
    from densemed.tasks import build

    train(_cfg(tmp_path / "dd", "train.epochs=1", "data.val_fraction=0", *DEEPDISTANCE), log=lambda s: None)
    ckpt = load(tmp_path / "dd" / "last.pt")
    assert ckpt["config"]["task"]["postprocess"]["h"] == "auto" and "task_state" not in ckpt
    # prediction resolves the untuned "auto" to the method's default h
    model, cfg, _ = load_model(tmp_path / "dd" / "last.pt")
    from densemed.tasks.segmentation import resolve_auto

    method, params = build(cfg).postprocess_spec(model, None)
    assert (method, resolve_auto(method, params)["h"]) == ("deepdistance", DEFAULT_H)


@pytest.mark.gpu
def test_training_on_cuda_writes_checkpoints_that_predict_on_the_cpu(tmp_path):
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    from densemed.build import load_model

    result = train(_cfg(tmp_path / "gpu", "train.epochs=2", "train.device=cuda"), log=lambda s: None)
    assert result.epochs == 2 and np.isfinite(result.history[-1]["train_loss"])
    model, _, _ = load_model(tmp_path / "gpu" / "best.pt")  # saved from CUDA tensors, mapped to the CPU
    assert torch.isfinite(model(torch.randn(1, 1, 32, 32))).all()


def test_data_loader_workers_give_the_same_run_as_the_main_process(tmp_path):
    a = train(_cfg(tmp_path / "w0", "train.epochs=1", "augment={flip: {p: 0.5}}"), log=lambda s: None)
    b = train(_cfg(tmp_path / "w2", "train.epochs=1", "augment={flip: {p: 0.5}}", "data.num_workers=2"),
              log=lambda s: None)
    assert a.history[0]["train_loss"] == b.history[0]["train_loss"]
    wa, wb = network_state(load(tmp_path / "w0" / "last.pt")), network_state(load(tmp_path / "w2" / "last.pt"))
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0)


def test_multitask_terms_are_logged_per_head(tmp_path):
    result = train(_cfg(tmp_path / "mt", "train.epochs=1", *DEEPDISTANCE), log=lambda s: None)
    rec = result.history[0]
    assert set(rec["train_terms"]) == set(rec["val_terms"]) == {"mask", "inner_distance", "outer_distance"}
    # the total is the weighted sum of the terms (weights 0.1, 1, 1 in DEEPDISTANCE) for the validation patches
    t = rec["val_terms"]
    assert rec["val_loss"] == pytest.approx(0.1 * t["mask"] + t["inner_distance"] + t["outer_distance"], rel=1e-5)


def test_resuming_with_more_epochs_says_what_happens_to_the_schedule(tmp_path):
    train(_cfg(tmp_path / "e", "train.epochs=1"), log=lambda s: None)
    lines = []
    train(_cfg(tmp_path / "e", "train.epochs=2"), resume=True, log=lines.append)
    assert any("train.epochs changed from 1 to 2" in line for line in lines)
    assert load(tmp_path / "e" / "last.pt")["total_steps"] == 4


def test_an_old_format_checkpoint_predicts_but_does_not_resume(tmp_path):
    from densemed.build import load_model

    train(_cfg(tmp_path / "o", "train.epochs=1"), log=lambda s: None)
    ckpt = load(tmp_path / "o" / "last.pt")
    old = {"config": ckpt["config"], "net": "unet", "in_channels": 1, "model": network_state(ckpt), "epoch": 0}
    save_atomic(old, tmp_path / "o" / "last.pt")
    model, _, _ = load_model(tmp_path / "o" / "last.pt")
    assert model(torch.zeros(1, 1, 32, 32)).shape == (1, 2, 32, 32)
    with pytest.raises(DensemedError, match="older densemed .* can still predict, but not resume"):
        train(_cfg(tmp_path / "o", "train.epochs=2"), resume=True, log=lambda s: None)
