"""`densemed train` reads nnU-Net v2 and MSD folders exactly as the same data in images/ + labels/."""

import json

import nibabel as nib
import numpy as np
import pytest
import yaml

from densemed import config
from densemed.cli import main
from densemed.data.dataset import load_cases
from densemed.errors import DensemedError

N, SHAPE, SPACING = 5, (12, 11, 10), (1.5, 1.0, 2.0)
AFFINE = np.diag([*SPACING, 1.0])
NAMES = {"background": 0, "left": 1, "right": 2}


def _case(i):
    """Two channels (T1, T2) and a 3-class label with both foreground classes present."""
    rng = np.random.default_rng(i)
    label = np.zeros(SHAPE, np.uint8)
    label[2:6, 2:8, 2:8] = 1
    label[7:10, 3:9, 2 + i % 3 : 7 + i % 3] = 2
    t1 = (40.0 * label + rng.normal(100, 10, SHAPE)).astype(np.float32)
    t2 = (-30.0 * label + rng.normal(50, 5, SHAPE)).astype(np.float32)
    return t1, t2, label


def _save(path, arr):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(arr, AFFINE), str(path))


@pytest.fixture(scope="module")
def layouts(tmp_path_factory):
    """The same five cases as images/ + labels/ (4D NIfTI), nnU-Net v2 raw and MSD."""
    tmp = tmp_path_factory.mktemp("layouts")
    folders, nnunet, msd = tmp / "folders", tmp / "Dataset001_Two", tmp / "Task01_Two"
    training = []
    for i in range(N):
        t1, t2, label = _case(i)
        stacked = np.stack([t1, t2], axis=-1)  # (X, Y, Z, C): channels on the last axis
        _save(folders / "images" / f"c{i}.nii.gz", stacked)
        _save(folders / "labels" / f"c{i}.nii.gz", label)
        _save(nnunet / "imagesTr" / f"c{i}_0000.nii.gz", t1)
        _save(nnunet / "imagesTr" / f"c{i}_0001.nii.gz", t2)
        _save(nnunet / "labelsTr" / f"c{i}.nii.gz", label)
        _save(msd / "imagesTr" / f"c{i}.nii.gz", stacked)
        _save(msd / "labelsTr" / f"c{i}.nii.gz", label)
        training.append({"image": f"./imagesTr/c{i}.nii.gz", "label": f"./labelsTr/c{i}.nii.gz"})
    (nnunet / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1", "1": "T2"}, "labels": NAMES, "numTraining": N, "file_ending": ".nii.gz"}))
    (msd / "dataset.json").write_text(json.dumps({
        "name": "Two", "modality": {"0": "T1", "1": "T2"}, "labels": {str(v): k for k, v in NAMES.items()},
        "numTraining": N, "training": training, "test": []}))
    return {"folders": folders, "nnunet": nnunet, "msd": msd}


def _cfg(root, layout="auto"):
    return config.load(None, [f"data.root={root}", "data.dims=3", "data.num_classes=3", "data.patch_size=[8,8,8]",
                              f"data.layout={layout}", "data.cache_dir=null"])


def test_the_three_layouts_load_identical_cases(layouts):
    ref_train, ref_val = load_cases(_cfg(layouts["folders"]))
    assert [c.image.shape for c in ref_train] == [(2, *SHAPE)] * 4 and len(ref_val) == 1
    # channel 0 is T1: z-scored per channel, the label-1 voxels are brighter than the background in T1 only
    case = ref_train[0]
    assert case.image[0][case.label == 1].mean() > case.image[0][case.label == 0].mean()
    assert case.image[1][case.label == 1].mean() < case.image[1][case.label == 0].mean()
    for layout in ("nnunet", "msd"):
        cfg = _cfg(layouts[layout])
        train, val = load_cases(cfg)
        for got, ref in zip(train + val, ref_train + ref_val):
            assert got.name == ref.name
            np.testing.assert_array_equal(got.image, ref.image)
            np.testing.assert_array_equal(got.label, ref.label)
            assert got.meta.spacing == pytest.approx(SPACING)
        assert cfg.data.class_names == {0: "background", 1: "left", 2: "right"}


def test_an_explicit_layout_that_does_not_fit_the_folder_names_the_missing_file(layouts):
    with pytest.raises(DensemedError, match=r"folders/dataset.json: not found \(an nnU-Net v2 raw dataset needs it\)"):
        load_cases(_cfg(layouts["folders"], "nnunet"))


def test_training_one_epoch_gives_the_same_losses_in_every_layout(layouts, tmp_path):
    records, saved = {}, {}
    for layout, root in layouts.items():
        out = tmp_path / layout
        argv = ["train", "--set", f"data.root={root}", "data.dims=3", "data.num_classes=3", "data.patch_size=[8,8,8]",
                "data.batch_size=2", "data.samples_per_epoch=4", "model.name=unet", "model.base_width=2",
                "model.depth=1", "train.epochs=1", "train.seed=3", f"train.out={out}", "train.progress=false",
                "train.threads=1"]
        assert main(argv) == 0
        lines = (out / "metrics.jsonl").read_text().splitlines()
        records[layout] = [{k: v for k, v in json.loads(x).items() if "second" not in k} for x in lines]
        saved[layout] = yaml.safe_load((out / "config.yaml").read_text())["data"]["class_names"]
    assert records["folders"][0]["train_loss"] > 0
    assert records["nnunet"] == records["folders"]
    assert records["msd"] == records["folders"]
    # class names come from dataset.json into the run's recipe (and so every checkpoint); none for images/labels
    assert saved["nnunet"] == saved["msd"] == {0: "background", 1: "left", 2: "right"}
    assert saved["folders"] is None


def test_an_unknown_layout_is_refused_by_the_recipe():
    with pytest.raises(DensemedError, match=r"data\.layout.*auto.*folders.*nnunet.*msd.*got 'nnUNet'"):
        config.load(None, ["data.layout=nnUNet"])
