"""End to end on the real data in $DENSEMED_DATA: train briefly, predict, evaluate (2D and 3D)."""

import json
import shutil

import numpy as np
import pytest

from densemed.cli import main


def _all_foreground_dice(truth_fraction: float) -> float:
    # Dice of predicting foreground everywhere = 2|T| / (|T| + N)
    return 2 * truth_fraction / (truth_fraction + 1)


@pytest.mark.slow
def test_isbi_short_training_beats_all_foreground_and_predict_evaluate_run(real_data, tmp_path):
    run = tmp_path / "run"
    assert main([
        "train", "configs/unet_isbi2012.yaml", "--set", f"data.root={real_data / 'isbi2012_em'}",
        "model.base_width=8", "data.patch_size=[128,128]", "data.samples_per_epoch=32", "data.batch_size=8",
        "train.epochs=4", "train.lr=0.01", f"train.out={run}", "train.progress=false", "train.threads=2",
        "data.val_files=[slice_20, slice_21]",
    ]) == 0
    # predict two held-out sections at full size (512x512, 4x the patch side) and evaluate them
    inp, truth = tmp_path / "in", tmp_path / "truth"
    inp.mkdir(), truth.mkdir()
    for name in ("slice_20.png", "slice_21.png"):
        shutil.copy(real_data / "isbi2012_em" / "images" / name, inp / name)
        shutil.copy(real_data / "isbi2012_em" / "labels" / name, truth / name)
    assert main(["predict", "--checkpoint", str(run / "best.pt"), "--input", str(inp),
                 "--output", str(tmp_path / "pred")]) == 0
    assert main(["evaluate", "--pred", str(tmp_path / "pred"), "--truth", str(truth), "--label-map", "0:1,255:0",
                 "--json", str(tmp_path / "e.json")]) == 0
    result = json.loads((tmp_path / "e.json").read_text())
    dice = result["mean"]["dice"]
    from PIL import Image

    frac = np.mean([(np.asarray(Image.open(truth / n)) == 0).mean() for n in ("slice_20.png", "slice_21.png")])
    assert dice > _all_foreground_dice(frac) + 0.1, (dice, _all_foreground_dice(frac))


@pytest.mark.slow
def test_hippocampus_3d_short_training_writes_nifti_with_input_affine(real_data, tmp_path):
    import nibabel as nib

    run = tmp_path / "run"
    have = sorted(p.name[: -len(".nii.gz")] for p in (real_data / "msd_hippocampus" / "images").glob("*.nii.gz"))[:8]
    assert len(have) == 8
    assert main([
        "train", "configs/unet3d_hippocampus.yaml", "--set", f"data.root={real_data / 'msd_hippocampus'}",
        f"data.train_files={have[:-2]}", f"data.val_files={have[-2:]}", "model.base_width=4",
        "data.patch_size=[32,32,32]", "data.samples_per_epoch=16", "train.epochs=3", "train.lr=0.01",
        f"train.out={run}", "train.progress=false", "train.threads=2",
    ]) == 0
    src = real_data / "msd_hippocampus" / "images" / f"{have[-1]}.nii.gz"
    assert main(["predict", "--checkpoint", str(run), "--input", str(src), "--output", str(tmp_path / "p")]) == 0
    out = nib.load(str(tmp_path / "p" / f"{have[-1]}.nii.gz"))
    ref = nib.load(str(src))
    np.testing.assert_array_equal(out.affine, ref.affine)
    assert out.shape == ref.shape and set(np.unique(np.asarray(out.dataobj))) <= {0, 1, 2}
