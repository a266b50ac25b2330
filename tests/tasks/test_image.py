"""The image (super-resolution) task: tissue masks and patches, exact intensity round trip, seamless tiles,
validation inside the tissue, several training folders, loss weighting, the evaluation figure."""

import numpy as np
import pytest
import torch

from densemed import config, tasks
from densemed.data.sr import degrade
from densemed.errors import DensemedError
from densemed.nets.deepresolve import DeepResolve
from densemed.tasks.image import receptive_radius, thick_slice_geometry, tiled_forward

nib = pytest.importorskip("nibabel")


def _brain(shape=(40, 36, 32), seed=0, scale=1.0):
    """A textured ellipsoid "brain" in a large empty border (the object fills ~15 % of the volume)."""
    rng = np.random.default_rng(seed)
    grids = np.meshgrid(*[np.linspace(-1, 1, n) for n in shape], indexing="ij")
    inside = sum((g / r) ** 2 for g, r in zip(grids, (0.6, 0.55, 0.5))) < 1
    texture = 80 + 40 * np.sin(7 * grids[0] + 3 * grids[1]) * np.cos(5 * grids[2]) + 5 * rng.random(shape)
    return (np.where(inside, texture, 0.0) * scale).astype(np.float32)


def _save(path, vol):
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), path)
    return path


def _cfg(root, *extra):
    return config.load(None, [
        "task={name: image, factor: 4, axis: 2}", "data.dims=3", "data.num_classes=1", f"data.root={root}",
        "data.normalize=none", "data.patch_size=[16,16,16]", "model={name: deepresolve, depth: 3, width: 4}",
        "loss={name: mse}", f"data.cache_dir={root}/_cache", *extra,
    ])


# -- recipe checks -------------------------------------------------------------------------------------
def test_slice_axis_patch_side_must_be_a_multiple_of_the_factor(tmp_path):
    with pytest.raises(DensemedError, match=r"data.patch_size\[2\] = 18 is not a multiple of task.factor 4"):
        tasks.build(_cfg(tmp_path, "data.patch_size=[16,16,18]"))
    tasks.build(_cfg(tmp_path, "data.patch_size=[18,18,16]"))  # the other axes are free


@pytest.mark.parametrize(("override", "match"), [
    ("data.normalize=percentile", "clips intensities"),
    ("task.mask=kmeans", "task.mask must be one of otsu, threshold, none"),
    ("task.mask_threshold=1.5", "task.mask_threshold"),
    ("task.percentiles=[99, 1]", "task.percentiles"),
    ("task.halo=-1", "task.halo"),
])
def test_bad_task_options_raise_one_line(tmp_path, override, match):
    with pytest.raises(DensemedError, match=match):
        tasks.build(_cfg(tmp_path, override))


# -- cases and validation patches ------------------------------------------------------------------------
def test_case_is_scaled_degraded_input_target_and_tissue_label(tmp_path):
    vol = _brain(scale=1e4)  # float crops reach 1e6: the scaling makes them comparable
    path = _save(tmp_path / "images" / "b.nii.gz", vol)
    task = tasks.build(_cfg(tmp_path))
    case = task.load_case("b", path, None)
    lr = degrade(vol, 4, 2)
    lo, hi = np.percentile(lr.astype(np.float64), [0.5, 99.5])
    np.testing.assert_allclose(case.image[0], (lr - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(case.maps["target"][0], (vol - lo) / (hi - lo), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(case.label, (vol > 0).astype(np.int64))  # Otsu: the object, no holes


def test_no_validation_patch_is_mostly_background_on_a_volume_with_a_large_empty_border(tmp_path):
    from densemed.data.dataset import fixed_patches

    path = _save(tmp_path / "images" / "b.nii.gz", _brain((64, 60, 56)))
    task = tasks.build(_cfg(tmp_path, "data.val_patches_per_image=12"))
    case = task.load_case("b", path, None)
    assert case.label.mean() < 0.1
    patches = task.validation_patches([case])
    assert len(patches) == 12
    assert min(float(p["sample"]["label"].float().mean()) for p in patches) >= 0.5
    # the generic patches (half of them anywhere) would have been mostly background
    generic = fixed_patches([case], [16, 16, 16], 12)
    assert min(float(p["label"].float().mean()) for p in generic) < 0.5


def test_validation_psnr_is_the_tissue_psnr_of_the_patches(tmp_path):
    from densemed.metrics.image_quality import psnr

    path = _save(tmp_path / "images" / "b.nii.gz", _brain())
    task = tasks.build(_cfg(tmp_path, "data.val_patches_per_image=3"))
    case = task.load_case("b", path, None)
    net = DeepResolve(depth=2, width=4)  # zero last layer: the identity, so the prediction is the input
    rec = task.validate(net, task_loss(), [case], [], torch.device("cpu"))
    patches = task.validation_patches([case])
    x = np.concatenate([p["sample"]["image"].numpy()[0][p["sample"]["label"].numpy()[0] > 0] for p in patches])
    y = np.concatenate([p["sample"]["target"].numpy()[0][p["sample"]["label"].numpy()[0] > 0] for p in patches])
    r = float(case.maps["target"].max() - case.maps["target"].min())
    assert rec["val_score"] == rec["val_psnr"] == pytest.approx(psnr(x, y, data_range=r), rel=1e-5)
    assert rec["val_psnr_tricubic"] == pytest.approx(rec["val_psnr"], rel=1e-6)
    assert rec["val_psnr_volume"] > rec["val_psnr"]  # the empty voxels of the patches are restored exactly


def task_loss():
    from densemed.losses import build

    return build("mse")


# -- intensities, tiles -----------------------------------------------------------------------------------
@pytest.mark.parametrize("normalize", ["none", "zscore"])
def test_predict_with_an_identity_network_writes_back_the_input_intensities(tmp_path, normalize):
    from densemed.infer.predict import Predictor

    vol = _brain(scale=3e4)  # up to ~4e6, like the float hippocampus crops
    vol[0, 0, 0] = 9e6  # a hot voxel far above the 99.5th percentile: nothing clips it
    src = _save(tmp_path / "in" / "b.nii.gz", vol)
    cfg = _cfg(tmp_path, f"data.normalize={normalize}", "infer.window=[24,24,24]")
    predictor = Predictor(DeepResolve(depth=2, width=4), cfg)  # zero last layer: exactly x + 0
    (out,) = predictor.predict_file(src, tmp_path / "out")
    back = nib.load(out).get_fdata(dtype=np.float32)
    np.testing.assert_allclose(back, vol, rtol=2e-6, atol=1e-6 * float(vol.max()))


def test_tiled_inference_has_no_seam_it_equals_the_whole_volume_pass(tmp_path):
    torch.manual_seed(0)
    net = DeepResolve(depth=4, width=4, zero_init_last=False).eval()  # translation equivariant, radius 4
    x = torch.from_numpy(_brain((37, 30, 26)))[None, None] / 100
    with torch.no_grad():
        whole = net(x)
        tiled = tiled_forward(net, x, (14, 13, 26), receptive_radius(net))  # 6- and 5-voxel cores
    np.testing.assert_allclose((tiled - x).numpy(), (whole - x).numpy(), atol=2e-6)  # the residual
    # through the task (window from infer.window), and the blended windows it replaces, which show seams
    from densemed.infer.runner import predict_main

    cfg = _cfg(tmp_path, "infer.window=[14,13,26]")
    restored = tasks.build(cfg).restore(net, x, torch.device("cpu"))
    np.testing.assert_allclose(restored.numpy(), whole.numpy(), atol=2e-6)
    blended = predict_main(net, x, cfg, torch.device("cpu"))
    assert float((blended - whole).abs().max()) > 1e-3


def test_receptive_radius_of_conv_stacks_and_none_with_pooling():
    assert receptive_radius(DeepResolve(depth=7, width=2)) == 7
    dilated = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 5, padding=2), torch.nn.Conv3d(2, 1, 3, padding=2, dilation=2))
    assert receptive_radius(dilated) == 2 + 2
    pooled = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 3, padding=1), torch.nn.MaxPool3d(2))
    assert receptive_radius(pooled) is None
    with pytest.raises(DensemedError, match="no core"):
        tiled_forward(dilated, torch.zeros(1, 1, 20, 8, 8), (8, 8, 8), 4)


# -- loss weighting, several folders ------------------------------------------------------------------------
def test_background_weight_weights_the_loss_outside_the_tissue(tmp_path):
    task = tasks.build(_cfg(tmp_path, "task.background_weight=0.25"))
    out = torch.zeros(1, 1, 2, 2, 1)
    batch = {"target": torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 2, 2, 1),
             "label": torch.tensor([1, 0, 0, 1]).view(1, 1, 2, 2, 1)}
    # mse with weights: mean over voxels of w * err^2 = (1 + 0.25 * 4 + 0.25 * 9 + 16) / 4
    assert float(task.compute_loss(task_loss(), out, batch)) == pytest.approx((1 + 1 + 2.25 + 16) / 4)


def test_training_volumes_come_from_several_folders(tmp_path):
    from densemed.data.dataset import PatchDataset, load_cases

    for k in range(3):
        _save(tmp_path / "templates" / "images" / f"t{k}.nii.gz", _brain(seed=k))
    for k in range(2):
        _save(tmp_path / "crops" / "images" / f"c{k}.nii.gz", _brain((24, 24, 20), seed=10 + k, scale=5e3))
    cfg = _cfg(tmp_path / "templates", "data.val_files=[t2]",
               f"data.extra_roots=[{{root: {tmp_path / 'crops'}, share: 0.5}}]")
    task = tasks.build(cfg)
    train, val = load_cases(cfg, task)
    assert [c.name for c in train] == ["t0", "t1", "crops/c0", "crops/c1"] and [c.name for c in val] == ["t2"]
    # every case read by the image task: scaled input, target and tissue label, whatever its intensity range
    for case in train:
        assert case.label is not None and case.maps["target"].max() < 2.0
    ds = PatchDataset(train, [16, 16, 16], 1.0, 40, seed=0)
    drawn = [ds[i] for i in range(40)]
    assert all(float(s["label"].float().mean()) > 0 for s in drawn)  # centred on tissue (foreground_fraction 1)


# -- evaluation and the figure ------------------------------------------------------------------------------
def test_thick_slice_geometry_is_read_back_from_the_baseline():
    vol = _brain((20, 24, 16))
    assert thick_slice_geometry(vol, degrade(vol, 4, 1)) == (4, 1)
    assert thick_slice_geometry(vol, degrade(vol, 2, 2)) == (2, 2)
    with pytest.raises(DensemedError, match="not `densemed degrade`"):
        thick_slice_geometry(vol, vol + 1)


def test_evaluate_with_figure_scores_tissue_and_writes_the_png(tmp_path):
    from PIL import Image

    vol = _brain((32, 28, 24))
    _save(tmp_path / "truth" / "b.nii.gz", vol)
    _save(tmp_path / "base" / "b.nii.gz", degrade(vol, 4, 2))
    _save(tmp_path / "pred" / "b.nii.gz", 0.5 * (vol + degrade(vol, 4, 2)))  # halfway to the truth
    task = tasks.get("sr")
    res = task.evaluate_folders(tmp_path / "pred", tmp_path / "truth",
                                {"baseline": tmp_path / "base", "figure": tmp_path / "fig" / "sr.png"})
    m = res["mean"]
    assert m["psnr_tissue"] == pytest.approx(m["baseline_psnr_tissue"] + 20 * np.log10(2), abs=1e-3)
    assert m["psnr"] == pytest.approx(m["baseline_psnr"] + 20 * np.log10(2), abs=1e-3)
    with Image.open(tmp_path / "fig" / "sr.png") as im:
        assert im.size[0] > 600 and im.size[1] > 600
    assert "wrote" in task.format_result(res)
    with pytest.raises(DensemedError, match="needs --baseline"):
        task.evaluate_folders(tmp_path / "pred", tmp_path / "truth", {"figure": tmp_path / "x.png"})


def test_whole_volume_validation_scores_the_tissue_of_every_volume(tmp_path):
    from densemed.metrics.image_quality import psnr

    path = _save(tmp_path / "images" / "b.nii.gz", _brain())
    task = tasks.build(_cfg(tmp_path, "task.val_full_images=true", "infer.window=[24,24,24]"))
    case = task.load_case("b", path, None)
    rec = task.validate(DeepResolve(depth=2, width=4), task_loss(), [case], [], torch.device("cpu"))  # identity
    target = case.maps["target"]
    r = float(target.max() - target.min())
    assert rec["val_psnr"] == pytest.approx(psnr(case.image, target, data_range=r, mask=case.label[None] > 0),
                                            rel=1e-5)
    assert rec["val_psnr_volume"] == pytest.approx(psnr(case.image, target, data_range=r), rel=1e-5)
