"""`densemed check`: exit codes and the problem lines it prints; `train` refuses the same fatal problems."""

import json

import nibabel as nib
import numpy as np
from PIL import Image

from densemed.cli import main


def _folders(root, n=3):
    """2D cases with 0/1 labels, each label one disc (one component)."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    yy, xx = np.mgrid[:24, :20]
    for i in range(n):
        lab = ((yy - 8 - i) ** 2 + (xx - 9) ** 2 < 20).astype(np.uint8)
        Image.fromarray((lab * 100 + 50).astype(np.uint8)).save(root / "images" / f"c{i}.png")
        Image.fromarray(lab).save(root / "labels" / f"c{i}.png")
    return root


def _volumes(root, n=3, nan_in=None):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        img = np.random.default_rng(i).normal(size=(8, 9, 10)).astype(np.float32)
        if i == nan_in:
            img[1, 2, 3] = np.nan
        lab = np.zeros((8, 9, 10), np.uint8)
        lab[2:5, 2:6, 3:7] = 1
        nib.save(nib.Nifti1Image(img, np.eye(4)), str(root / "images" / f"v{i}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(root / "labels" / f"v{i}.nii.gz"))
    return root


def test_a_clean_folder_exits_0_with_its_summary(tmp_path, capsys):
    root = _folders(tmp_path / "d")
    assert main(["check", str(root), "--num-classes", "2"]) == 0
    out = capsys.readouterr().out
    assert "no problems found" in out and out.rstrip().endswith("result: ok")
    assert "cases      3 (3 labelled)" in out
    # three discs, one per case
    assert "objects    3 connected components of the foreground; per case 1..1" in out


def test_each_fatal_problem_is_listed_with_its_file_and_exits_2(tmp_path, capsys):
    root = _folders(tmp_path / "d", n=4)
    (root / "labels" / "c0.png").unlink()  # missing partner
    Image.fromarray(np.full((24, 20), 7, np.uint8)).save(root / "labels" / "c1.png")  # value outside 2 classes
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "labels" / "c2.png")  # size differs
    assert main(["check", str(root), "--num-classes", "2"]) == 2
    out = capsys.readouterr().out
    assert f"error   missing     {root / 'images' / 'c0.png'}: no label file with stem 'c0'" in out
    assert f"error   classes     {root / 'labels' / 'c1.png'}: label values [7] are not declared classes (0..1)" in out
    shape = f"error   shape       {root / 'labels' / 'c2.png'}: label size (10, 10) differs from image size (24, 20)"
    assert shape in out
    assert out.rstrip().endswith("result: 3 errors would break training")


def test_warnings_alone_exit_0(tmp_path, capsys):
    root = _folders(tmp_path / "d")
    Image.fromarray(np.zeros((24, 20), np.uint8)).save(root / "labels" / "c2.png")  # empty label: a warning
    assert main(["check", str(root), "--num-classes", "2"]) == 0
    line = f"warning empty       {root / 'labels' / 'c2.png'}: label map holds only background"
    assert line in capsys.readouterr().out


def test_nan_intensities_are_fatal_and_train_refuses_them_with_the_same_line(tmp_path, capsys):
    root = _volumes(tmp_path / "d", nan_in=1)
    assert main(["check", str(root)]) == 2
    line = f"{root / 'images' / 'v1.nii.gz'}: 1 NaN and 0 infinite intensities"
    assert line in capsys.readouterr().out
    argv = ["train", "--set", f"data.root={root}", "data.dims=3", "data.patch_size=[8,8,8]", "model.name=unet",
            "model.base_width=2", "model.depth=1", "train.epochs=1", f"train.out={tmp_path / 'r'}",
            "train.progress=false"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"densemed: error: {line}"


def test_recipe_of_an_instance_task_refuses_binary_masks(tmp_path, capsys):
    root = _folders(tmp_path / "d")
    for i in range(3):  # 0/255 masks where instance ids are needed
        lab = np.asarray(Image.open(root / "labels" / f"c{i}.png"))
        Image.fromarray((lab * 255).astype(np.uint8)).save(root / "labels" / f"c{i}.png")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"task: {{name: instances}}\ndata: {{root: {root}, patch_size: [16, 16]}}\n")
    assert main(["check", "--recipe", str(recipe)]) == 2
    out = capsys.readouterr().out
    assert f"error   binary      {root / 'labels' / 'c0.png'}: binary mask (values 0 and 255)" in out
    # the same folder as class labels (the recipe's default task) is fine: {0, 255} with 2 classes
    assert main(["check", str(root), "--num-classes", "2"]) == 0


def test_nnunet_region_labels_are_refused(tmp_path, capsys):
    root = tmp_path / "Dataset001_X"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    lab = np.zeros((6, 7, 8), np.uint8)
    lab[1:3, 1:3, 1:3] = 1
    nib.save(nib.Nifti1Image(np.ones((6, 7, 8), np.float32), np.eye(4)), str(root / "imagesTr" / "a_0000.nii.gz"))
    nib.save(nib.Nifti1Image(lab, np.eye(4)), str(root / "labelsTr" / "a.nii.gz"))
    (root / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "CT"}, "labels": {"background": 0, "tumour": 1, "whole": [1, 2]},
        "numTraining": 1, "file_ending": ".nii.gz"}))
    assert main(["check", str(root)]) == 2
    out = capsys.readouterr().out
    assert "(nnunet layout, train split)" in out
    assert "label 'whole' is region-based ([1, 2])" in out


def test_a_missing_folder_is_one_error_line(tmp_path, capsys):
    assert main(["check", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"densemed: error: {tmp_path / 'nothing'}: dataset folder not found"
