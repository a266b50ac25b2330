"""The classify_seg task: classes by rule or CSV in the batch, per-slice loss, AUC, CLI train/predict/evaluate."""

from __future__ import annotations

import csv
import functools
import itertools
import json

import numpy as np
import pytest
import torch
from PIL import Image

from densemed import config, tasks
from densemed.build import build_loss, build_model
from densemed.cli import main
from densemed.losses.activation import ActivationLoss
from densemed.tasks.classify_seg import auc, class_scores, slice_classes

NET = "model={name: slicewise, axis: 0, net: {name: classnseg, encoder_channels: [2, 2, 4, 4, 8], trunk_layers: 2}}"
LOSS = ("loss={name: multitask, tasks: {activation: {loss: {name: activation}, target: class_label}, "
        "segmentation: {loss: {name: ce}, target: label}, reconstruction: {loss: {name: mse}, target: image}}}")
#: slices along axis 0 that hold foreground in the generated volumes
POSITIVE = (2, 3, 4, 5)


@pytest.fixture
def args(sliced_args):
    """``args(data, *extra)``: the ``--set`` arguments of this module's sliced-volume recipe."""
    return functools.partial(sliced_args, "task={name: classify_seg}", NET, LOSS)


def test_cli_trains_predicts_and_evaluates_classes_beside_dice(tmp_path, capsys, args, volumes):
    data = volumes(tmp_path / "data")
    run, pred = tmp_path / "run", tmp_path / "pred"
    assert main(["train", "--set", *args(data, "train.epochs=1", f"train.out={run}")]) == 0
    rec = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"val_loss", "val_dice", "val_accuracy", "val_auc", "val_accuracy_seg", "val_auc_seg"} <= set(rec)
    assert rec["val_score"] == pytest.approx((rec["val_dice"] + rec["val_accuracy"]) / 2)
    assert sum(map(sum, rec["val_confusion"])) == 8  # one validation volume of 8 slices
    assert set(rec["train_terms"]) == {"activation", "segmentation", "reconstruction"}
    assert main(["predict", "--checkpoint", str(run / "best.pt"), "--input", str(data / "images"),
                 "--output", str(pred)]) == 0
    with (pred / "classes.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert [(r["case"], r["slice"]) for r in rows] == [(f"v{i}", str(k)) for i in range(3) for k in range(8)]
    assert {r["axis"] for r in rows} == {"0"} and {r["class"] for r in rows} <= {"0", "1"}
    assert all(0 <= float(r["probability"]) <= 1 for r in rows)
    # predicting a case again replaces its rows
    assert main(["predict", "--checkpoint", str(run / "best.pt"), "--input", str(data / "images" / "v1.nii.gz"),
                 "--output", str(pred)]) == 0
    with (pred / "classes.csv").open() as fh:
        assert len(list(csv.DictReader(fh))) == 24

    out = tmp_path / "eval.json"
    assert main(["evaluate", "--task", "classify_seg", "--pred", str(pred), "--truth", str(data),
                 "--json", str(out)]) == 0
    c = json.loads(out.read_text())["classification"]
    assert c["n"] == 24 and c["positives"] == 3 * len(POSITIVE)  # the rule on the true label maps
    for key in ("network", "from_segmentation"):
        (tn, fp), (fn, tp) = c[key]["confusion"]
        assert tn + fp == 24 - 12 and fn + tp == 12
        assert c[key]["accuracy"] == pytest.approx((tn + tp) / 24)
    assert "confusion [[TN, FP], [FN, TP]]" in capsys.readouterr().out


def _task_and_module(argv: list[str]):
    cfg = config.load(None, argv)
    task = tasks.build(cfg)
    return task, task.training_module(build_model(cfg, 1), build_loss(cfg), torch.device("cpu"))


def test_rule_classes_are_per_slice_of_the_sample(tmp_path, args):
    task, module = _task_and_module(args(tmp_path))
    label = torch.zeros(2, 1, 3, 6, 5, dtype=torch.long)
    label[0, 0, 1, 2, 2] = 2  # one foreground voxel in slice 1 of sample 0
    label[1, 0, 0] = 1
    label[1, 0, 2, 5, 4] = 1
    batch = task.with_classes({"image": torch.zeros(2, 1, 3, 6, 5), "label": label}, module.axis)
    assert batch["class_label"].tolist() == [[0, 1, 0], [1, 0, 1]]
    lab = np.zeros((8, 4, 4), np.int64)
    lab[list(POSITIVE), 1, 1] = 1
    assert slice_classes(lab, 0).tolist() == [1 if k in POSITIVE else 0 for k in range(8)]
    assert slice_classes(lab, 1).tolist() == [0, 1, 0, 0] and slice_classes(lab[0], None).tolist() == [0]


def test_csv_classes_travel_as_a_map_and_a_missing_row_is_one_line_exit_2(tmp_path, capsys, args, volumes):
    data = volumes(tmp_path / "data", n=2)
    table = tmp_path / "classes.csv"
    rows = [f"v{i},{k},{(k + i) % 2}" for i in range(2) for k in range(8)]
    table.write_text("case,slice,class\n" + "\n".join(rows) + "\n")
    cfg = config.load(None, args(data, f"task={{name: classify_seg, csv: {table}, slice_axis: 0}}"))
    task = tasks.build(cfg)
    case = task.load_case("v1", data / "images" / "v1.nii.gz", data / "labels" / "v1.nii.gz")
    assert task.case_classes(case, 0).tolist() == [(k + 1) % 2 for k in range(8)]
    m = torch.from_numpy(case.maps["class_map"])[None]
    patch = {"image": torch.zeros(1, 1, 8, 20, 14), "class_map": m}
    assert task.with_classes(patch, 0)["class_label"].tolist() == [[(k + 1) % 2 for k in range(8)]]

    table.write_text("case,slice,class\n" + "\n".join(r for r in rows if r != "v1,3,0") + "\n")
    argv = args(data, f"task={{name: classify_seg, csv: {table}, slice_axis: 0}}", f"train.out={tmp_path / 'r'}")
    assert main(["train", "--set", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{table}: no class for case 'v1' slice 3" in err


def test_a_csv_on_volumes_needs_the_slice_axis(tmp_path, args):
    from densemed.errors import DensemedError

    with pytest.raises(DensemedError, match="task.slice_axis: needed with task.csv on volumes"):
        config.load(None, args(tmp_path, "task={name: classify_seg, csv: x.csv}"))


def test_per_slice_scores_reach_the_activation_loss_as_b_times_d_samples(tmp_path, args):
    task, module = _task_and_module(args(tmp_path, "loss={name: multitask, tasks: {activation: "
                                              "{loss: {name: activation}, target: class_label}}}"))
    # (B=2, 2, D=2): act[b, c, d] is a_c of slice d of sample b
    act = torch.tensor([[[0.2, 0.9], [0.7, 0.1]], [[0.5, 0.4], [0.3, 0.3]]])
    y = torch.tensor([[1, 0], [0, 1]])
    loss = task.compute_loss(module.loss_fn, {"activation": act}, {"class_label": y})
    # |a1 - y| + |a0 - (1 - y)| per slice, by hand: 0.3 + 0.2, 0.1 + 0.1, 0.3 + 0.5, 0.7 + 0.4
    assert float(loss) == pytest.approx((0.5 + 0.2 + 0.8 + 1.1) / 4)
    samples = torch.tensor([[0.2, 0.7], [0.9, 0.1], [0.5, 0.3], [0.4, 0.3]])  # (a_0, a_1) per slice
    assert float(loss) == pytest.approx(float(ActivationLoss()(samples, torch.tensor([1, 0, 0, 1]))))


def test_without_class_input_the_network_gets_no_label(tmp_path, args):
    task, module = _task_and_module(args(tmp_path, "task.class_input=false"))
    batch = {"image": torch.zeros(1, 1, 1, 8, 8), "class_label": torch.ones(1, 1, dtype=torch.long)}
    assert task.model_args(module.model, batch)[1] is None
    task, module = _task_and_module(args(tmp_path))
    assert task.model_args(module.model, batch)[1] is batch["class_label"]


def test_auc_equals_the_pairwise_probability_with_ties_as_half():
    assert auc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == 0.75  # 3 of 4 pairs ordered
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 40).astype(float)  # many ties
    truth = rng.integers(0, 2, 40)
    pairs = [(p, n) for p, n in itertools.product(scores[truth == 1], scores[truth == 0])]
    ref = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert auc(scores, truth) == pytest.approx(ref, abs=1e-12)
    assert auc(np.array([0.3, 0.2]), np.array([1, 1])) is None
    s = class_scores(np.array([1, 0, 1, 1]), np.array([0.9, 0.2, 0.6, 0.7]), np.array([1, 0, 0, 1]))
    assert s["confusion"] == [[1, 1], [0, 2]] and s["accuracy"] == 0.75 and s["auc"] == 1.0


def test_2d_images_get_one_class_each_through_the_cli(tmp_path):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(1)
    for i in range(4):
        lab = np.zeros((20, 24), np.uint8)
        if i % 2:
            lab[5:12, 6:15] = 255
        img = rng.integers(0, 60, (20, 24, 3)).astype(np.uint8) + (lab[..., None] > 0) * 150
        Image.fromarray(img.astype(np.uint8)).save(root / "images" / f"g{i}.png")
        Image.fromarray(lab).save(root / "labels" / f"g{i}.png")
    run, pred = tmp_path / "run", tmp_path / "pred"
    args = ["task={name: classify_seg}", f"data.root={root}", "data.patch_size=[16,16]", "data.batch_size=2",
            "data.samples_per_epoch=2", "data.val_fraction=0.25", "data.normalize=percentile",
            "model={name: classnseg, encoder_channels: [2, 2, 4, 4, 8], trunk_layers: 2}", LOSS,
            "train.epochs=1", "train.progress=false", f"train.out={run}"]
    assert main(["train", "--set", *args]) == 0
    assert main(["predict", "--checkpoint", str(run), "--input", str(root / "images"), "--output", str(pred)]) == 0
    with (pred / "classes.csv").open() as fh:
        assert [(r["case"], r["slice"], r["axis"]) for r in csv.DictReader(fh)] == [
            (f"g{i}", "0", "") for i in range(4)]
    out = tmp_path / "e.json"
    assert main(["evaluate", "--task", "classify_seg", "--pred", str(pred), "--truth", str(root / "labels"),
                 "--json", str(out)]) == 0
    c = json.loads(out.read_text())["classification"]
    assert c["n"] == 4 and c["positives"] == 2


def test_a_2d_image_without_a_class_row_is_one_line_exit_2(tmp_path, capsys):
    root = tmp_path / "data"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(3):
        Image.fromarray(np.full((16, 16), 40 * i, np.uint8)).save(root / "images" / f"g{i}.png")
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "labels" / f"g{i}.png")
    table = tmp_path / "classes.csv"
    table.write_text("case,class\ng0,0\ng2,1\n")  # no row for g1
    args = [f"task={{name: classify_seg, csv: {table}}}", f"data.root={root}", "data.patch_size=[16,16]",
            "model={name: classnseg, encoder_channels: [2, 2, 4, 4, 8], trunk_layers: 2}", LOSS,
            "train.epochs=1", "train.progress=false", f"train.out={tmp_path / 'run'}"]
    assert main(["train", "--set", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"{table}: no class for case 'g1' (task.csv needs a row per image)" in err
