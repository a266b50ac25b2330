"""A reconstruction head is a task like any other: added to a multi-task network from the recipe alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from densemed import config, tasks
from densemed.build import build_loss, build_model
from densemed.cli import main
from densemed.nets.heads import Head, heads_of

MODEL = "model={name: multitask, base_width: 4, depth: 2, tasks: {mask: null, reconstruction: {kind: image}}}"
LOSS = ("loss={name: multitask, tasks: {mask: {loss: {name: ce}, target: label}, "
        "reconstruction: {loss: {name: mse}, weight: 0.5, target: image}}}")


def _data(root):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        lab = np.zeros((24, 24), np.uint8)
        lab[5:15, 6 + i:16 + i] = 255
        img = rng.integers(0, 60, (24, 24)) + (lab > 0) * 150
        Image.fromarray(img.astype(np.uint8)).save(root / "images" / f"a{i}.png")
        Image.fromarray(lab).save(root / "labels" / f"a{i}.png")
    return root


def _args(root, *extra):
    return [f"data.root={root}", "data.patch_size=[16,16]", "data.batch_size=2", "data.samples_per_epoch=4",
            "data.val_fraction=0.25", MODEL, LOSS, "train.progress=false", *extra]


def test_an_image_head_regresses_the_input_and_its_term_is_the_mse(tmp_path):
    cfg = config.load(None, _args(tmp_path))
    task = tasks.build(cfg)
    model = build_model(cfg, 1).train()
    assert heads_of(model)["reconstruction"] == Head(1, "image")  # in_channels, kind image
    batch = {"image": torch.randn(2, 1, 16, 16), "label": torch.randint(0, 2, (2, 1, 16, 16))}
    loss_fn = build_loss(cfg)
    out = model(*task.model_args(model, batch))
    total = task.compute_loss(loss_fn, out, batch)
    mse = float(((out["reconstruction"].detach() - batch["image"]) ** 2).mean())
    ce = float(torch.nn.functional.cross_entropy(out["mask"].detach(), batch["label"][:, 0]))
    assert loss_fn.last_terms["reconstruction"] == pytest.approx(mse, rel=1e-5)
    assert float(total.detach()) == pytest.approx(ce + 0.5 * mse, rel=1e-5)


def test_a_recipe_with_a_reconstruction_head_trains_and_logs_both_terms(tmp_path):
    data, run = _data(tmp_path / "data"), tmp_path / "run"
    assert main(["train", "--set", *_args(data, "train.epochs=2", f"train.out={run}")]) == 0
    recs = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(recs) == 2
    for rec in recs:
        assert set(rec["train_terms"]) == {"mask", "reconstruction"} and rec["train_terms"]["reconstruction"] > 0
        assert set(rec["val_terms"]) == {"mask", "reconstruction"}
        assert "val_dice" in rec  # validation and best.pt still by the main head
    pred = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(run / "best.pt"), "--input", str(data / "images"),
                 "--output", str(pred)]) == 0
    assert sorted(p.name for p in pred.glob("*.png")) == [f"a{i}.png" for i in range(4)]
