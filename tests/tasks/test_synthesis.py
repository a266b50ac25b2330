"""The synthesis task: condition channels in, real image as target, GAN module, validation, generation."""

import numpy as np
import pytest
import torch
from PIL import Image

from densemed import config, tasks
from densemed.augment import build as build_augment
from densemed.errors import DensemedError
from densemed.tasks.synthesis import Synthesis


def _membrane_pair(root, stem, size=40, seed=0):
    """ISBI-like pair: grey 8-bit image, label 0 on membrane lines, 255 inside cells."""
    rng = np.random.default_rng(seed)
    lab = np.full((size, size), 255, np.uint8)
    for k in rng.integers(4, size - 4, 3):
        lab[k, :] = 0
        lab[:, (k * 7) % size] = 0
    img = np.where(lab == 0, 60, 180).astype(np.float64) + rng.normal(0, 10, lab.shape)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(root / "images" / f"{stem}.png")
    Image.fromarray(lab).save(root / "labels" / f"{stem}.png")
    return img, lab


def _cfg(root, *extra):
    return config.load(None, [
        "task={name: synthesis}", f"data.root={root}", "data.label_map={0: 1, 255: 0}", "loss={name: gan_ls}",
        "model={name: pix2pix_generator, depth: 3, base_width: 4, max_width: 8}", "data.patch_size=[32,32]",
        *extra,
    ])


def test_case_holds_the_one_hot_condition_as_image_and_the_zscored_image_as_target(tmp_path):
    img, lab = _membrane_pair(tmp_path, "a")
    cfg = _cfg(tmp_path)
    task = tasks.build(cfg)
    case = task.load_case("a", tmp_path / "images" / "a.png", tmp_path / "labels" / "a.png")
    membrane = (lab == 0).astype(np.float32)
    np.testing.assert_array_equal(case.image, np.stack([1 - membrane, membrane]))
    raw = np.asarray(Image.open(tmp_path / "images" / "a.png"), np.float64)
    np.testing.assert_allclose(case.maps["target"][0], (raw - raw.mean()) / raw.std(), rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(case.label, membrane.astype(np.int64))
    assert task.out_channels() == 1 and cfg.data.in_channels == 1 and task.condition_channels == 2


def test_instance_case_adds_the_boundary_channel_of_touching_objects(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    ids = np.zeros((6, 6), np.uint16)
    ids[1:4, 1:3], ids[1:4, 3:5] = 1, 2  # two touching objects
    Image.fromarray(ids).save(tmp_path / "labels" / "c.png")
    Image.fromarray(np.full((6, 6, 4), 200, np.uint8)).save(tmp_path / "images" / "c.png")
    cfg = config.load(None, ["task={name: synthesis, instances: true}", f"data.root={tmp_path}", "loss={name: gan_ls}",
                             "model={name: pix2pix_generator}"])
    task = tasks.build(cfg)
    case = task.load_case("c", tmp_path / "images" / "c.png", tmp_path / "labels" / "c.png")
    assert case.image.shape == (3, 6, 6) and task.out_channels() == 3 and cfg.data.in_channels == 3
    # boundary = pixels whose id differs from a 4-neighbour (both sides), by hand for this layout
    expected = np.zeros((6, 6), np.float32)
    expected[0, 1:5] = 1  # background above the objects
    expected[4, 1:5] = 1  # background below
    expected[1:4, [0, 5]] = 1  # background left and right
    expected[1:4, 1:5] = 1  # every object pixel touches background or the other object
    np.testing.assert_array_equal(case.image[2], expected)
    np.testing.assert_array_equal(case.instances, ids.astype(np.int32))


def test_discriminator_sees_condition_and_image_channels(tmp_path):
    _membrane_pair(tmp_path, "a")
    cfg = _cfg(tmp_path, "task={name: synthesis, discriminator: {name: patchgan, base_width: 4, n_layers: 1}}")
    cfg.data.in_channels = 1
    task = tasks.build(cfg)
    from densemed.build import build_model

    module = task.training_module(build_model(cfg, 2), torch.nn.Identity(), torch.device("cpu"))
    first = next(m for m in module.networks["discriminator"].modules() if isinstance(m, torch.nn.Conv2d))
    assert first.in_channels == 2 + 1
    assert set(module.networks) == {"model", "discriminator"}


def test_a_non_adversarial_loss_is_refused(tmp_path):
    with pytest.raises(DensemedError, match="loss.name: the synthesis task trains with an adversarial loss"):
        config.load(None, ["task=synthesis", "loss={name: dice_ce}"])


def test_intensity_augmentation_is_refused():
    with pytest.raises(DensemedError, match="intensity"):
        config.load(None, ["task=synthesis", "loss={name: gan_ls}", "augment={flip: {p: 0.5}, noise: {p: 0.2}}"])


def test_bad_options_name_their_key():
    with pytest.raises(DensemedError, match="task.betas"):
        config.load(None, ["task={name: synthesis, betas: [0.5]}", "loss={name: gan_ls}"])
    with pytest.raises(DensemedError, match="task.lambda_l1"):
        config.load(None, ["task={name: synthesis, lambda_l1: -1}", "loss={name: gan_ls}"])
    with pytest.raises(DensemedError, match="diffaugment.policy"):
        config.load(None, ["task={name: synthesis, diffaugment: [zoom]}", "loss={name: gan_ls}"])
    with pytest.raises(DensemedError, match="task.instances"):
        config.load(None, ["task={name: synthesis, instances: true}", "loss={name: gan_ls}", "data.num_classes=3"])


def test_geometric_augmentation_keeps_the_condition_one_hot(tmp_path):
    _membrane_pair(tmp_path, "a")
    task = tasks.build(_cfg(tmp_path))
    case = task.load_case("a", tmp_path / "images" / "a.png", tmp_path / "labels" / "a.png")
    batch = {"image": torch.from_numpy(case.image)[None], "target": torch.from_numpy(case.maps["target"])[None]}
    aug = build_augment({"affine": {"p": 1.0, "rotate": 30, "scale": [0.8, 1.2]}, "elastic": {"p": 1.0}})
    out = aug(batch, torch.Generator().manual_seed(0), nearest=task.nearest_keys())
    cond = out["image"][0]
    assert set(torch.unique(cond).tolist()) <= {0.0, 1.0}
    assert not torch.equal(cond, batch["image"][0])
    # inside the image a pixel holds exactly one class; zero padding gives all-zero pixels at the border
    assert set(torch.unique(cond.sum(0)).tolist()) <= {0.0, 1.0}
    # the real image is interpolated linearly: values strictly between the input's
    assert len(torch.unique(out["target"])) > len(torch.unique(batch["target"])) // 2


class _Zero(torch.nn.Module):
    """A 'generator' that always paints 0 (the mean of a z-scored image)."""

    def forward(self, x):
        return torch.zeros(x.shape[0], 1, *x.shape[2:])


def test_validation_l1_is_the_mean_absolute_difference_to_the_real_image(tmp_path):
    _membrane_pair(tmp_path, "a", seed=0)
    _membrane_pair(tmp_path, "b", seed=1)
    task = tasks.build(_cfg(tmp_path))
    cases = [task.load_case(s, tmp_path / "images" / f"{s}.png", tmp_path / "labels" / f"{s}.png") for s in "ab"]
    rec = task.validate(_Zero(), torch.nn.Identity(), cases, [], torch.device("cpu"))
    expected = np.mean([np.abs(c.maps["target"]).mean() for c in cases])
    assert rec["val_l1"] == pytest.approx(expected, rel=1e-6)
    assert rec["val_loss"] == rec["val_l1"] and rec["val_score"] == -rec["val_l1"]
    # a flat image has no power in any ring: far from the real spectrum
    assert rec["val_spectral"] > 5


def test_generation_is_reproducible_by_seed_and_varies_across_seeds(tmp_path):
    _membrane_pair(tmp_path, "a")
    cfg = _cfg(tmp_path)
    task = tasks.build(cfg)
    from densemed.nets.pix2pix import Pix2PixGenerator

    torch.manual_seed(0)
    g = Pix2PixGenerator(2, 1, depth=3, base_width=4, max_width=8)
    cond = torch.from_numpy(task.load_case("a", tmp_path / "images" / "a.png", tmp_path / "labels" / "a.png").image)
    a, b = task.generate(g, cond[None], 5, torch.device("cpu")), task.generate(g, cond[None], 5, torch.device("cpu"))
    c = task.generate(g, cond[None], 6, torch.device("cpu"))
    assert torch.equal(a, b) and not torch.equal(a, c)
    # inference without dropout is deterministic and differs from a dropout sample
    d1, d2 = task.infer(g, cond[None], torch.device("cpu")), task.infer(g, cond[None], torch.device("cpu"))
    assert torch.equal(d1, d2) and not torch.equal(d1, a)


def test_task_is_registered():
    assert tasks.get("synthesis") is Synthesis


class _ThresholdSegmenter(torch.nn.Module):
    """Membrane = darker than the image mean: logits (10 z, -10 z); one 1x1 'encoder' for features."""

    def __init__(self):
        super().__init__()
        from densemed.nets.heads import Head, declare

        self.encoders = torch.nn.ModuleList([torch.nn.Conv2d(1, 2, 1)])
        declare(self, {"segmentation": Head(2)})

    def forward(self, x):
        self.encoders[0](x)  # the feature layer the Fréchet distance reads
        return torch.cat([10 * x, -10 * x], dim=1)


def test_fidelity_is_the_segmenters_dice_on_generated_images_and_fd_is_zero_for_real_ones(tmp_path):
    _membrane_pair(tmp_path, "a", seed=0)
    _membrane_pair(tmp_path, "b", seed=1)
    cfg = _cfg(tmp_path, "task={name: synthesis, segmenter: unused}")
    task = tasks.build(cfg)
    cases = [task.load_case(s, tmp_path / "images" / f"{s}.png", tmp_path / "labels" / f"{s}.png") for s in "ab"]
    seg_cfg = config.load(None, ["data.patch_size=[32,32]"])
    task._seg = (_ThresholdSegmenter().eval(), seg_cfg)
    fakes = [c.maps["target"] for c in cases]  # a perfect generator: the real images
    rec = task.fidelity(fakes, cases, torch.device("cpu"))
    expected = []
    for c in cases:
        pred, truth = c.maps["target"][0] < 0, c.label == 1
        expected.append(2 * (pred & truth).sum() / (pred.sum() + truth.sum()))
    assert rec["val_fidelity"] == pytest.approx(np.mean(expected), rel=1e-6)
    assert rec["val_fd"] == pytest.approx(0.0, abs=1e-6)
    # validation picks best.pt by fidelity when a segmenter is given
    out = task.validate(_Zero(), torch.nn.Identity(), cases, [], torch.device("cpu"))
    assert out["val_score"] == out["val_fidelity"] and "val_fd" in out
