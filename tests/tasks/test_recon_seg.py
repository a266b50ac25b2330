"""The recon_seg task: simulated measurements in the batch, the pre-training phase, CLI train/predict/evaluate."""

from __future__ import annotations

import copy
import functools
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


@pytest.fixture
def args(sliced_args):
    """``args(data, *extra)``: the ``--set`` arguments of this module's sliced-volume recipe."""
    return functools.partial(sliced_args, "task={name: recon_seg}", SEGNET, LOSS)


def test_cli_trains_predicts_and_evaluates_reconstruction_and_segmentation(tmp_path, capsys, args, volumes):
    data = volumes(tmp_path / "data")
    run, pred = tmp_path / "run", tmp_path / "pred"
    assert main(["train", "--set", *args(data, "train.epochs=1", f"train.out={run}")]) == 0
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


def _task_and_module(argv: list[str]):
    cfg = config.load(None, argv)
    task = tasks.build(cfg)
    model = build_model(cfg, 2 if task.opts.input_mode == "complex" else 1)
    return cfg, task, task.training_module(model, build_loss(cfg), torch.device("cpu"))


@pytest.mark.parametrize("mode", ["magnitude", "complex"])
def test_the_batch_holds_kspace_simulate_of_every_slice_with_the_step_seed(tmp_path, mode, args):
    cfg, task, module = _task_and_module(args(tmp_path, f"task.input_mode={mode}", "train.seed=7"))
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


def test_fixed_masks_are_the_seed_mask_for_every_slice_and_full_sampling_changes_nothing(tmp_path, args):
    _, task, module = _task_and_module(args(tmp_path, "task.mask=fixed", "task.seed=5"))
    full = torch.rand(3, 1, 2, 16, 9)
    batch = task.undersampled_batch({"image": full}, module.axis, module.seeds())
    ref = ks.cartesian_mask((16, 9), 0.25, 0.08, 5)
    for b in range(3):
        for k in range(2):
            np.testing.assert_array_equal(batch["mask"][b, 0, k].numpy(), ref)
    assert int(ref[:, 0].sum()) == 4  # floor(0.25 * 16 + 0.5) rows
    _, task, module = _task_and_module(args(tmp_path, "task.rate=1.0"))
    batch = task.undersampled_batch({"image": full}, module.axis, module.seeds())
    torch.testing.assert_close(batch["image"], full, rtol=0, atol=1e-6)  # F^-1 F x = x


def test_pretraining_epochs_train_the_reconstruction_alone_then_both(tmp_path, args):
    _, _, module = _task_and_module(args(tmp_path, "task.pretrain_epochs=2"))
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


def test_pretraining_needs_the_two_named_loss_terms(tmp_path, args):
    from densemed.errors import DensemedError

    with pytest.raises(DensemedError, match="pretrain_epochs needs loss"):
        config.load(None, args(tmp_path, "task.pretrain_epochs=1", "loss={name: ce}"))


@pytest.mark.parametrize("rate", [0, 1.5, -0.25])
def test_a_sampling_rate_outside_0_1_is_one_line_exit_2(tmp_path, capsys, rate, args):
    assert main(["train", "--set", *args(tmp_path, f"task.rate={rate}")]) == 2
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


def test_volumes_need_a_network_applied_slice_by_slice(tmp_path, capsys, args, volumes):
    data = volumes(tmp_path / "data", n=2)
    argv = args(data, "model={name: unet, base_width: 2, depth: 1}", "loss={name: ce}",
                 f"train.out={tmp_path / 'run'}", "data.val_fraction=0")
    assert main(["train", "--set", *argv]) == 2
    assert "needs a 2D network applied slice by slice" in capsys.readouterr().err


# -- task.pretrain: reconstruction-only phase on unlabelled volumes, then the joint loss ------------------------

def _templates(root: Path) -> Path:
    """One unlabelled volume (10 x 30 x 26, a bright block in noise) and a labels/ file that must never be read."""
    rng = np.random.default_rng(3)
    vol = rng.uniform(0, 10, (10, 30, 26)).astype(np.float32)
    vol[2:8, 5:25, 4:22] += 100
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(root / "images" / "t0.nii.gz"))
    (root / "labels" / "t0.nii.gz").write_bytes(b"not a NIfTI file")
    return root


def _pretrain(templates: Path, length: str = "steps: 2") -> str:
    return f"task={{name: recon_seg, pretrain: {{roots: [{templates}], {length}}}}}"


def test_phase_1_trains_the_reconstruction_alone_on_template_slices(tmp_path, args):
    _, task, module = _task_and_module(args(tmp_path, _pretrain(_templates(tmp_path / "tpl")), "train.seed=4"))
    model = module.model
    inner = model.net  # the slicewise-wrapped SegNetMRI
    groups = inner.parameter_groups()
    seg_before = [p.detach().clone() for p in groups["segmentation"]]
    rec_before = [p.detach().clone() for p in groups["reconstruction"]]
    labelled = {"image": torch.rand(2, 1, 1, 24, 16), "label": torch.randint(0, 3, (2, 1, 1, 24, 16))}

    # what the step will see: this step's template slices, measured with this step's masks
    images = module.pretrain_images(2)
    assert images.shape == (2, 1, 1, 24, 16)
    batch = task.undersampled_batch({"image": images}, module.axis, module.seeds())
    twin = copy.deepcopy(model).train()
    with torch.no_grad():
        out = twin(*task.model_args(twin, batch))
    mse = float(((out["reconstruction"] - batch["target"]) ** 2).mean())  # weight 1 in LOSS

    rec = module.train_step(labelled)
    assert task.in_pretraining and module.pretrain_end is None
    assert set(rec) == {"loss", "term_reconstruction"}
    assert rec["loss"] == pytest.approx(mse, rel=1e-5) and rec["term_reconstruction"] == pytest.approx(mse, rel=1e-5)
    assert all(p.grad is None for p in groups["segmentation"])  # the segmentation is not in the loss
    assert all(torch.equal(a, b) for a, b in zip(seg_before, groups["segmentation"]))
    assert any(not torch.equal(a, b) for a, b in zip(rec_before, groups["reconstruction"]))

    module.train_step(labelled)  # step 1: still phase 1 (steps: 2)
    rec = module.train_step(labelled)  # step 2: the joint loss on the labelled batch
    assert not task.in_pretraining and module.pretrain_end == 2
    assert rec["loss"] == pytest.approx(rec["term_reconstruction"] + 0.5 * rec["term_segmentation"], rel=1e-5)
    assert all(p.grad is not None for p in groups["segmentation"])


def test_phase_1_slices_are_windows_of_the_normalised_template(tmp_path, args):
    tpl = _templates(tmp_path / "tpl")
    _, _, module = _task_and_module(args(tmp_path, _pretrain(tpl)))
    vol = nib.load(str(tpl / "images" / "t0.nii.gz")).get_fdata()
    norm = (vol - vol.min()) / (vol.max() - vol.min())  # data.normalize: percentile [0, 100]
    for step in range(3):
        module.step = step
        for x in module.pretrain_images(4)[:, 0, 0].numpy():  # (24, 16) windows of 30 x 26 slices (axis 0)
            hits = [(d, i, j) for d in range(10) for i in range(7) for j in range(11)
                    if np.allclose(norm[d, i:i + 24, j:j + 16], x, atol=1e-6)]
            assert len(hits) == 1
            assert x.max() > norm.mean()  # centred on a voxel brighter than the volume's mean


def test_fraction_of_the_schedule_and_the_phase_survive_a_resume(tmp_path, args):
    argv = args(tmp_path, _pretrain(_templates(tmp_path / "tpl"), "fraction: 0.25"))
    _, task, module = _task_and_module(argv)
    module.set_total_steps(8)  # phase 1: steps 0 and 1 (0.25 * 8)
    assert [module.pretraining() for _ in range(1)] == [True]
    module.step = 2
    assert not module.pretraining() and module.pretrain_end == 2
    module.set_total_steps(100)  # a longer schedule later (time budget) does not reopen phase 1
    assert not module.pretraining()
    state = module.state_dict()
    _, _, again = _task_and_module(argv)
    again.load_state_dict(state)
    assert again.pretrain_end == 2 and not again.pretraining()


def test_cli_two_phases_write_recon_terms_first_then_both(tmp_path, args, volumes):
    data = volumes(tmp_path / "data", n=3)
    run = tmp_path / "run"
    argv = args(data, _pretrain(_templates(tmp_path / "tpl")), "train.epochs=2", f"train.out={run}")
    assert main(["train", "--set", *argv]) == 0
    first, second = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert set(first["train_terms"]) == {"reconstruction"} and first["val_pretraining"] is True
    assert "val_score" not in first and "val_dice" in first
    assert set(second["train_terms"]) == {"reconstruction", "segmentation"} and "val_pretraining" not in second
    assert second["val_score"] == second["val_dice"]
    assert torch.load(run / "last.pt", weights_only=False)["pretrain_end"] == 2


@pytest.mark.parametrize("section, message", [
    ("{roots: [t], steps: 0}", "task.pretrain.steps must be an integer >= 1, got 0"),
    ("{roots: [t], fraction: 1.5}", "task.pretrain.fraction must be a number in (0, 1), got 1.5"),
    ("{roots: [t]}", "task.pretrain: give the length of phase 1 as steps or as fraction"),
    ("{roots: [t], steps: 3, fraction: 0.5}", "task.pretrain: give the length of phase 1 as steps or as fraction"),
    ("{roots: [t], stepz: 3}", "unknown config key 'task.pretrain.stepz'; did you mean 'steps'?"),
    ("{roots: t, steps: 3}", "task.pretrain.roots must be a list of folder names, got 't'"),
    ("{roots: [t], steps: 3, axis: 3}", "task.pretrain.axis: the slice axis must be 0, 1 or 2"),
])
def test_bad_pretrain_sections_are_one_line_exit_2(tmp_path, capsys, args, section, message):
    assert main(["train", "--set", *args(tmp_path, f"task={{name: recon_seg, pretrain: {section}}}")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and message in err


def test_pretrain_needs_a_reconstruction_term_and_excludes_pretrain_epochs(tmp_path, capsys, args):
    for extra, message in (
        (["loss={name: ce}"], "task.pretrain needs loss: {name: multitask} with a 'reconstruction' task"),
        (["task.pretrain_epochs=1"], "task.pretrain and task.pretrain_epochs exclude each other"),
    ):
        assert main(["train", "--set", *args(tmp_path, _pretrain(tmp_path), *extra)]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err


def test_rgb_or_missing_template_folders_are_one_line_exit_2(tmp_path, capsys, args, volumes):
    data = volumes(tmp_path / "data", n=2)
    rgb = tmp_path / "rgb"
    (rgb / "images").mkdir(parents=True)
    Image.fromarray(np.full((30, 30, 3), 90, np.uint8)).save(rgb / "images" / "c.png")
    for root, message in ((rgb, f"{rgb / 'images' / 'c.png'}: k-space simulation needs single-channel (magnitude) "
                                "images, got 3 channels"),
                          (tmp_path / "nowhere", "task.pretrain.roots[0]: ")):
        argv = args(data, _pretrain(root), f"train.out={tmp_path / 'run'}", "train.epochs=1")
        assert main(["train", "--set", *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and message in err
