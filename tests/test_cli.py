"""Exit codes and one-line errors of the console script."""

import subprocess
import sys

import numpy as np
from PIL import Image

from densemed.cli import main


def _data(tmp_path, n=4, size=(32, 32)):
    (tmp_path / "images").mkdir(parents=True)
    (tmp_path / "labels").mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        img = rng.integers(0, 255, size).astype(np.uint8)
        Image.fromarray(img).save(tmp_path / "images" / f"c{i}.png")
        Image.fromarray(((img > 128) * 255).astype(np.uint8)).save(tmp_path / "labels" / f"c{i}.png")
    return tmp_path


def _train_args(root, out):
    return ["train", "--set", f"data.root={root}", "data.patch_size=[32,32]", "model.name=unet", "model.base_width=4",
            "model.depth=2",
            "train.epochs=1", "data.samples_per_epoch=4", f"train.out={out}", "train.progress=false"]


def _expect_error(capsys, argv, pattern):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("densemed: error:") and "\n" not in err and "Traceback" not in err
    assert pattern in err, err
    return err


def test_image_without_label(tmp_path, capsys):
    root = _data(tmp_path / "d")
    (root / "labels" / "c2.png").unlink()
    _expect_error(capsys, _train_args(root, tmp_path / "r"), "c2.png: no label file")


def test_label_size_differs(tmp_path, capsys):
    root = _data(tmp_path / "d")
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(root / "labels" / "c1.png")
    _expect_error(capsys, _train_args(root, tmp_path / "r"), "c1.png: label size")


def test_label_values_outside_classes(tmp_path, capsys):
    root = _data(tmp_path / "d")
    Image.fromarray(np.full((32, 32), 7, np.uint8)).save(root / "labels" / "c0.png")
    _expect_error(capsys, _train_args(root, tmp_path / "r"), "outside the 2 configured classes")


def test_truncated_image(tmp_path, capsys):
    root = _data(tmp_path / "d")
    p = root / "images" / "c3.png"
    p.write_bytes(p.read_bytes()[:40])
    _expect_error(capsys, _train_args(root, tmp_path / "r"), "c3.png: cannot read")


def test_empty_data_folder(tmp_path, capsys):
    (tmp_path / "d" / "images").mkdir(parents=True)
    (tmp_path / "d" / "labels").mkdir()
    _expect_error(capsys, _train_args(tmp_path / "d", tmp_path / "r"), "no images found")


def test_unknown_config_key_suggests_nearest(tmp_path, capsys):
    _expect_error(capsys, ["train", "configs/unet_isbi2012.yaml", "--set", "train.epoch=3"], "did you mean 'epochs'")


def test_checkpoint_from_different_architecture(tmp_path, capsys):
    root = _data(tmp_path / "d")
    assert main(_train_args(root, tmp_path / "r")) == 0
    capsys.readouterr()
    _expect_error(capsys, ["train", "--resume", str(tmp_path / "r"), "--set", "model.base_width=8"], "do not fit")
    # the run's files are untouched by the failed resume
    assert (tmp_path / "r" / "last.pt").is_file()


def test_train_predict_evaluate_round_trip(tmp_path, capsys):
    root = _data(tmp_path / "d", size=(40, 52))
    assert main(_train_args(root, tmp_path / "r")) == 0
    assert main(["predict", "--checkpoint", str(tmp_path / "r" / "best.pt"), "--input", str(root / "images"),
                 "--output", str(tmp_path / "p"), "--probabilities", "--tta"]) == 0
    written = sorted(p.name for p in (tmp_path / "p").iterdir())
    assert "c0.png" in written and "c0_prob.tif" in written
    pred = np.asarray(Image.open(tmp_path / "p" / "c0.png"))
    assert pred.shape == (40, 52) and set(np.unique(pred)) <= {0, 255}
    assert main(["evaluate", "--pred", str(tmp_path / "p"), "--truth", str(root / "labels"),
                 "--json", str(tmp_path / "e.json")]) == 0
    assert "dice" in (tmp_path / "e.json").read_text().lower()


def test_tta_on_a_recipe_without_flip_axes_says_it_averages_nothing(tmp_path, capsys):
    root = _data(tmp_path / "d")
    assert main([*_train_args(root, tmp_path / "r"), "infer.tta_axes=[]"]) == 0
    capsys.readouterr()
    argv = ["predict", "--checkpoint", str(tmp_path / "r"), "--input", str(root / "images" / "c0.png")]
    assert main([*argv, "--output", str(tmp_path / "p"), "--tta"]) == 0
    assert "--tta has nothing to average" in capsys.readouterr().err
    assert main([*argv, "--output", str(tmp_path / "q")]) == 0
    assert "--tta" not in capsys.readouterr().err
    # and the prediction is the one without --tta
    assert (tmp_path / "p" / "c0.png").read_bytes() == (tmp_path / "q" / "c0.png").read_bytes()


def test_models_lists_every_registered_network_with_counts(capsys):
    from densemed import nets

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in nets.names():
        assert f"\n{name} " in out
    # the U-Net row's count is the paper-setting network's, counted independently here
    import torch

    with torch.device("meta"):
        count = sum(p.numel() for p in nets.build("unet", dims=2).parameters())
    unet_line = next(line for line in out.splitlines() if line.startswith("unet "))
    assert f"{count:,}" in unet_line


def test_console_script_exits_2_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "densemed.cli", "predict", "--checkpoint", str(tmp_path / "nope.pt"),
                           "--input", str(tmp_path), "--output", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"densemed: error: {tmp_path / 'nope.pt'}: checkpoint not found"


def test_deepdistance_predicts_distance_maps_or_instances(tmp_path):
    from densemed.data.io import write_label
    from densemed.data.synthetic import make_dataset

    root = tmp_path / "d"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i, (img, inst) in enumerate(make_dataset(n=3, size=40, seed=2)):
        Image.fromarray((img[0].clip(0, 1) * 255).astype(np.uint8)).save(root / "images" / f"c{i}.png")
        write_label(root / "labels" / f"c{i}.png", inst)
    run = tmp_path / "r"
    assert main(["train", "configs/deepdistance_dsb2018.yaml", "--set", f"data.root={root}", "model.segmentation=false",
                 "model.base_width=4", "model.depth=2", "data.patch_size=[32,32]", "data.samples_per_epoch=4",
                 "train.epochs=1", f"train.out={run}", "train.progress=false",
                 "loss.tasks={inner_distance: {loss: {name: mse}, target: inner_distance},"
                 " outer_distance: {loss: {name: mse}, target: outer_distance}}"]) == 0
    assert main(["predict", "--checkpoint", str(run), "--input", str(root / "images" / "c0.png"),
                 "--output", str(tmp_path / "m")]) == 0
    written = sorted(p.name for p in (tmp_path / "m").iterdir() if not p.name.startswith("."))  # not the manifest
    assert written == ["c0_inner_distance.tif", "c0_outer_distance.tif"]
    assert main(["predict", "--checkpoint", str(run), "--input", str(root / "images" / "c0.png"),
                 "--output", str(tmp_path / "i"), "--instances"]) == 0
    inst = np.asarray(Image.open(tmp_path / "i" / "c0.png"))
    # the file holds exactly the instance map the post-processing gives for the written distance maps
    import tifffile

    from densemed.infer.postprocess import to_instances

    maps = {k: tifffile.imread(tmp_path / "m" / f"c0_{k}.tif") for k in ("inner_distance", "outer_distance")}
    from densemed.checkpoint import load

    post = load(run / "best.pt")["config"]["task"]["postprocess"]  # h tuned on the validation image
    expected = to_instances(maps, "deepdistance", h=post["h"], threshold=post["threshold"])
    np.testing.assert_array_equal(inst, expected)


def test_demo_on_a_real_folder_prints_dice_and_writes_overlay(tmp_path, capsys):
    root = _data(tmp_path / "d", n=5, size=(48, 40))
    assert main(["demo", "--data", str(root), "--budget", "1", "--out", str(tmp_path / "demo")]) == 0
    out = capsys.readouterr().out
    assert "held-out Dice" in out and (tmp_path / "demo" / "overlay.png").is_file()
