"""The instances task: object-level model selection (``task.select``) and after-fit tuning of every method."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from densemed import config, nets, tasks
from densemed.errors import DensemedError
from densemed.tasks.base import FitContext


def _brute_force_aji(pred: np.ndarray, truth: np.ndarray) -> float:
    """AJI (Kumar et al. 2017) by masks: each true object with the prediction of largest IoU; a true object
    that no prediction overlaps adds only itself to the union; unused predictions add to the union."""
    t_ids = [i for i in np.unique(truth) if i]
    p_ids = [j for j in np.unique(pred) if j]
    if not t_ids and not p_ids:
        return 1.0
    c = u = 0
    used: set[int] = set()
    for i in t_ids:
        g = truth == i
        best, best_iou = None, 0.0
        for j in p_ids:
            s = pred == j
            iou = (g & s).sum() / (g | s).sum()
            if iou > best_iou:
                best, best_iou = j, iou
        if best is None:
            u += g.sum()
            continue
        s = pred == best
        c += (g & s).sum()
        u += (g | s).sum()
        used.add(best)
    u += sum((pred == j).sum() for j in p_ids if j not in used)
    return c / u if u else 1.0


def test_brute_force_aji_on_a_hand_computed_split():
    truth = np.zeros((4, 8), np.int32)
    truth[:, :6] = 1  # 24 px
    pred = np.zeros_like(truth)
    pred[:, :4], pred[:, 4:6], pred[:, 7] = 1, 2, 3  # split 16 + 8, and a spurious 4-px object
    assert _brute_force_aji(pred, truth) == pytest.approx(16 / (24 + 8 + 4))


def test_select_must_be_a_known_score():
    with pytest.raises(DensemedError, match=r"task.select must be one of dice, aji, object_f1, got 'iou'") as err:
        config.load(None, ["task={name: instances, select: iou}", "model={name: unet, base_width: 2}",
                           "data.patch_size=[16,16]"])
    assert "\n" not in str(err.value)


def test_validation_with_select_aji_scores_the_written_instance_labels(tmp_path):
    from densemed.checkpoint import load
    from densemed.cli import main
    from densemed.data.io import read_label, write_label
    from densemed.data.synthetic import make_dataset
    from densemed.train import Trainer

    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i, (img, inst) in enumerate(make_dataset(n=6, size=40, seed=3)):
        Image.fromarray((img[0].clip(0, 1) * 255).astype(np.uint8)).save(root / "images" / f"c{i}.png")
        write_label(root / "labels" / f"c{i}.png", inst)
    run = tmp_path / "run"
    cfg = config.load(None, [
        "task={name: instances, postprocess: {method: components, min_size: 5}, select: aji}",
        f"data.root={root}", "data.patch_size=[32,32]", "data.samples_per_epoch=8", "data.batch_size=4",
        "data.val_fraction=0.34", "model={name: unet, base_width: 4, depth: 2}", "augment=null",
        "train.epochs=4", "train.lr=0.01", "train.progress=false", f"train.out={run}",
    ])
    trainer = Trainer(cfg, log=lambda s: None)
    trainer.fit()
    history = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert all({"val_aji", "val_object_f1", "val_dice"} <= set(h) for h in history)
    assert all(h["val_score"] == h["val_aji"] for h in history)
    best = max(history, key=lambda h: h["val_score"])  # the first best: best.pt is only replaced on improvement
    assert load(run / "best.pt")["epoch"] == best["epoch"]

    names = [c.name for c in trainer.val_cases]
    val_dir = tmp_path / "val"
    val_dir.mkdir()
    for name in names:
        (val_dir / f"{name}.png").write_bytes((root / "images" / f"{name}.png").read_bytes())
    assert main(["predict", "--checkpoint", str(run / "best.pt"), "--input", str(val_dir),
                 "--output", str(tmp_path / "pred"), "--instances"]) == 0
    ajis = []
    for name in names:
        pred, _ = read_label(tmp_path / "pred" / f"{name}.png")
        truth, _ = read_label(root / "labels" / f"{name}.png")
        ajis.append(_brute_force_aji(np.asarray(pred), np.asarray(truth)))
    assert best["val_score"] == pytest.approx(float(np.mean(ajis)), abs=1e-9)
    assert best["val_score"] > 0  # objects were found: the comparison is not 0 == 0


def test_after_fit_tunes_the_auto_options_of_components_and_keeps_the_others(monkeypatch):
    # two true 6x6 squares; the "network" also gives a 2x2 speck: min_size 11 (0.3 x the median area 36,
    # rounded) is the first candidate that removes it
    from densemed.data.dataset import Case

    truth = np.zeros((16, 24), np.int32)
    truth[2:8, 2:8], truth[2:8, 12:18] = 1, 2
    fg = (truth > 0).astype(np.float32) * 0.9
    fg[12:14, 20:22] = 0.9
    import densemed.tasks.instances as inst

    monkeypatch.setattr(inst, "network_outputs", lambda *a, **k: {"foreground": fg})
    post = "{method: components, min_size: auto, threshold: 0.4}"
    cfg = config.load(None, [f"task={{name: instances, postprocess: {post}}}",
                             "model={name: unet, base_width: 2, depth: 1}", "data.patch_size=[16,16]"])
    model = nets.build("unet", in_channels=1, out_channels=2, base_width=2, depth=1)
    case = Case("c", np.zeros((1, 16, 24), np.float32), (truth > 0).astype(np.int64), {}, None, truth)
    updates = tasks.build(cfg).after_fit(FitContext(None, model, [case], torch.device("cpu"), lambda s: None))
    assert updates["postprocess"] == {"method": "components", "min_size": 11, "threshold": 0.4}
    assert updates["_scores"]["min_size=0"] == pytest.approx(72 / 76) and updates["_scores"]["min_size=11"] == 1.0
