"""The recon_seg task: simulated measurements in the batch, the pre-training phase, CLI train/predict/evaluate."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from densemed import config, tasks
from densemed.build import build_loss, build_model
from densemed.cli import main
from densemed.data import kspace as ks
from densemed.data.slices import slice_seed, step_seed

SEGNET = "model={name: slicewise, axis: 0, net: {name: segnetmri, base_width: 2, depth: 1, num_blocks: 2}}"
LOSS = ("loss={name: multitask, tasks: {reconstruction: {loss: {name: mse}, target: target}, "
        "segmentation: {loss: {name: ce}, weight: 0.5, target: label}}}")


def _volumes(root: Path, n: int = 3, shape: tuple[int, int, int] = (8, 20, 14)) -> Path:
    """Tiny volumes: noise plus a bright two-class block (classes 1 and 2 side by side along axis 1)."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i in range(n):
        img = rng.normal(100, 5, shape).astype(np.float32)
        lab = np.zeros(shape, np.uint8)
        lab[2:6, 4:10, 3:9], lab[2:6, 10:15, 3:9] = 1, 2
        img[lab > 0] += 60
        nib.save(nib.Nifti1Image(img, np.eye(4)), str(root / "images" / f"v{i}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(root / "labels" / f"v{i}.nii.gz"))
    return root


def _args(data: Path, *extra: str) -> list[str]:
    return ["task={name: recon_seg}", f"data.root={data}", "data.dims=3", "data.num_classes=3",
            "data.patch_size=[1,24,16]", "data.normalize=percentile", "data.percentiles=[0,100]",
            "data.batch_size=2", "data.samples_per_epoch=4", "data.val_fraction=0.34", SEGNET, LOSS,
            "train.progress=false", *extra]


def test_cli_trains_predicts_and_evaluates_reconstruction_and_segmentation(tmp_path, capsys):
    data = _volumes(tmp_path / "data")
    run, pred = tmp_path / "run", tmp_path / "pred"
    assert main(["train", "--set", *_args(data, "train.epochs=1", f"train.out={run}")]) == 0
    rec = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(rec) == 1 and {"val_loss", "val_dice", "val_psnr", "val_psnr_zero_filled"} <= set(rec[-1])
    assert rec[-1]["val_score"] == rec[-1]["val_dice"]
    assert set(rec[-1]["train_terms"]) == {"reconstruction", "segmentation"}
    assert main(["predict", "--checkpoint", str(run / "best.pt"), "--input", str(data / "images"),
                 "--output", str(pred)]) == 0
    for sub in ("", "reconstruction/", "zero_filled/"):
        assert sorted(p.name for p in (pred / sub).glob("*.nii.gz")) == ["v0.nii.gz", "v1.nii.gz", "v2.nii.gz"]

    # the written zero-filled image, recomputed here with numpy's FFT: min-max normalised slice along
    # axis 0, zero-padded from 20 x 14 to the 24 x 16 patch (2 rows / 1 column before), rows of the
    # slice-k mask (seed (0, k)) kept, inverse FFT, magnitude, cropped, normalisation undone
    vol = nib.load(str(data / "images" / "v1.nii.gz")).get_fdata()
    lo, hi = vol.min(), vol.max()
    zf = np.asarray(nib.load(str(pred / "zero_filled" / "v1.nii.gz")).dataobj)
    for k in (0, 5):
        x = np.zeros((24, 16))
        x[2:22, 1:15] = (vol[k] - lo) / (hi - lo)
        mask = ks.cartesian_mask((24, 16), 0.25, 0.08, slice_seed(0, k))
        kspace = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x), norm="ortho"))
        image = np.abs(np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(kspace * mask), norm="ortho")))
        np.testing.assert_allclose(zf[k], image[2:22, 1:15] * (hi - lo) + lo, rtol=1e-5, atol=1e-3)

    capsys.readouterr()
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--task", "recon_seg", "--pred", str(pred), "--truth", str(data),
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert [im["name"] for im in result["segmentation"]["images"]] == ["v0", "v1", "v2"]
    assert result["segmentation"]["classes"] == [1, 2]
    assert {"psnr", "ssim", "baseline_psnr", "baseline_ssim"} <= set(result["reconstruction"]["mean"])
    assert "baseline = zero-filled" in capsys.readouterr().out


def _task_and_module(data: Path, *extra: str):
    cfg = config.load(None, _args(data, *extra))
    task = tasks.build(cfg)
    model = build_model(cfg, 2 if task.opts.input_mode == "complex" else 1)
    return cfg, task, task.training_module(model, build_loss(cfg), torch.device("cpu"))


@pytest.mark.parametrize("mode", ["magnitude", "complex"])
def test_the_batch_holds_kspace_simulate_of_every_slice_with_the_step_seed(tmp_path, mode):
    cfg, task, module = _task_and_module(tmp_path, f"task.input_mode={mode}", "train.seed=7")
    module.step = 3
    full = torch.rand(2, 1, 2, 10, 12)  # two samples of two slices (axis 0) of 10 x 12
    if mode == "complex":
        full = torch.cat([full, torch.zeros_like(full)], dim=1)
    label = torch.zeros(2, 1, 2, 10, 12, dtype=torch.long)
    batch = task.undersampled_batch({"image": full, "label": label}, module.axis, module.seeds())
    assert batch["label"] is label
    for b in range(2):
        for k in range(2):
            ref = ks.simulate(full[b, 0, k].numpy(), 0.25, 0.08, step_seed(7, 3, b, k), mode)
            for key in ("image", "kspace", "mask", "target"):
                np.testing.assert_array_equal(batch[key][b, :, k].numpy(), ref[key])
    # masks differ between the samples (random mode), and the fully sampled target is the input
    assert not torch.equal(batch["mask"][0, :, 0], batch["mask"][1, :, 0])
    np.testing.assert_array_equal(batch["target"].numpy(), full.numpy())


def test_fixed_masks_are_the_seed_mask_for_every_slice_and_full_sampling_changes_nothing(tmp_path):
    _, task, module = _task_and_module(tmp_path, "task.mask=fixed", "task.seed=5")
    full = torch.rand(3, 1, 2, 16, 9)
    batch = task.undersampled_batch({"image": full}, module.axis, module.seeds())
    ref = ks.cartesian_mask((16, 9), 0.25, 0.08, 5)
    for b in range(3):
        for k in range(2):
            np.testing.assert_array_equal(batch["mask"][b, 0, k].numpy(), ref)
    assert int(ref[:, 0].sum()) == 4  # floor(0.25 * 16 + 0.5) rows
    _, task, module = _task_and_module(tmp_path, "task.rate=1.0")
    batch = task.undersampled_batch({"image": full}, module.axis, module.seeds())
    torch.testing.assert_close(batch["image"], full, rtol=0, atol=1e-6)  # F^-1 F x = x


def test_pretraining_epochs_train_the_reconstruction_alone_then_both(tmp_path):
    _, _, module = _task_and_module(tmp_path, "task.pretrain_epochs=2")
    seg = module.loss_fn.tasks["segmentation"]
    module.set_epoch(0)
    assert seg.weight == 0.0
    batch = {"image": torch.rand(2, 1, 1, 12, 8), "label": torch.randint(0, 3, (2, 1, 1, 12, 8))}
    rec = module.train_step(batch)
    assert rec["loss"] == pytest.approx(rec["term_reconstruction"])  # 1 * mse + 0 * ce
    module.set_epoch(1)
    assert seg.weight == 0.0
    module.set_epoch(2)
    assert seg.weight == 0.5  # the recipe's lambda
    rec = module.train_step(batch)
    assert rec["loss"] == pytest.approx(rec["term_reconstruction"] + 0.5 * rec["term_segmentation"], rel=1e-5)


def test_pretraining_needs_the_two_named_loss_terms(tmp_path):
    from densemed.errors import DensemedError

    with pytest.raises(DensemedError, match="pretrain_epochs needs loss"):
        config.load(None, _args(tmp_path, "task.pretrain_epochs=1", "loss={name: ce}"))


@pytest.mark.parametrize("rate", [0, 1.5, -0.25])
def test_a_sampling_rate_outside_0_1_is_one_line_exit_2(tmp_path, capsys, rate):
    assert main(["train", "--set", *_args(tmp_path, f"task.rate={rate}")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and f"task.rate must be in (0, 1], got {rate}" in err


def test_kspace_on_rgb_images_is_one_line_exit_2(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    for i in range(2):
        Image.fromarray(np.full((16, 16, 3), 90, np.uint8)).save(tmp_path / "images" / f"c{i}.png")
        Image.fromarray(np.zeros((16, 16), np.uint8)).save(tmp_path / "labels" / f"c{i}.png")
    args = ["task={name: recon_seg}", f"data.root={tmp_path}", "data.patch_size=[16,16]",
            "model={name: segnetmri, base_width: 2, depth: 1, num_blocks: 1}", f"train.out={tmp_path / 'run'}"]
    assert main(["train", "--set", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert re.search(r"c[01]\.png: k-space simulation needs single-channel \(magnitude\) images, got 3 channels", err)


def test_volumes_need_a_network_applied_slice_by_slice(tmp_path, capsys):
    data = _volumes(tmp_path / "data", n=2)
    args = _args(data, "model={name: unet, base_width: 2, depth: 1}", "loss={name: ce}",
                 f"train.out={tmp_path / 'run'}", "data.val_fraction=0")
    assert main(["train", "--set", *args]) == 2
    assert "needs a 2D network applied slice by slice" in capsys.readouterr().err
