"""``densemed synth train`` / ``generate`` on tiny data: run folder, resume, formats, read-back, seeds."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from densemed import config
from densemed.cli import main
from densemed.data.dataset import load_cases

RECIPE = """
task: {name: synthesis, discriminator: {name: patchgan, base_width: 4, n_layers: 1}, preview_rows: 1,
       preview_samples: 2, diffaugment: [translation]}
data: {root: %s, label_map: {0: 1, 255: 0}, patch_size: [32, 32], batch_size: 2, samples_per_epoch: 4,
       val_files: [c], foreground_fraction: 0.0}
model: {name: pix2pix_generator, depth: 3, base_width: 4, max_width: 8}
loss: {name: gan_ls}
augment: {flip: {p: 0.5}}
train: {epochs: 2, lr: 0.001, scheduler: none, progress: false, device: cpu}
"""


def _membrane_data(root, stems="abc", size=40):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir(parents=True)
    for k, stem in enumerate(stems):
        rng = np.random.default_rng(k)
        lab = np.full((size, size), 255, np.uint8)
        for r in rng.integers(4, size - 4, 3):
            lab[r, :] = 0
            lab[:, (r * 7) % size] = 0
        img = np.clip(np.where(lab == 0, 60, 180) + rng.normal(0, 10, lab.shape), 0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"{stem}.png")
        Image.fromarray(lab).save(root / "labels" / f"{stem}.png")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 2-epoch GAN run on three 40x40 membrane pairs (two for training)."""
    base = tmp_path_factory.mktemp("synth")
    _membrane_data(base / "data")
    recipe = base / "pix2pix_tiny.yaml"
    recipe.write_text(RECIPE % (base / "data"))
    run = base / "run"
    assert main(["synth", "train", str(recipe), "--set", f"train.out={run}"]) == 0
    return base, recipe, run


def test_synth_train_writes_a_run_folder_with_gan_terms_and_a_preview(trained):
    _, _, run = trained
    for name in ("best.pt", "last.pt", "config.yaml", "metrics.jsonl", "curves.png", "synth_preview.png"):
        assert (run / name).is_file(), name
    recs = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert len(recs) == 2
    assert set(recs[0]["train_terms"]) == {"g_adv", "g_l1", "d_loss"}
    assert {"val_l1", "val_psnr", "val_spectral", "val_loss"} <= set(recs[-1])
    ckpt = torch.load(run / "last.pt", weights_only=False)
    assert set(ckpt["networks"]) == {"model", "discriminator"} and set(ckpt["optimizers"]) == {"model", "discriminator"}
    assert ckpt["in_channels"] == 2 and ckpt["config"]["data"]["in_channels"] == 1
    assert Image.open(run / "synth_preview.png").size[0] > 100


def test_resume_continues_bit_identically(trained, tmp_path):
    base, recipe, full = trained
    run = tmp_path / "run"
    # the preview (drawn after training) does not touch the networks: left out to save time
    assert main(["synth", "train", str(recipe), "--set", f"train.out={run}", "train.epochs=1",
                 "task.preview_rows=0"]) == 0
    assert main(["synth", "train", "--resume", str(run), "--set", "train.epochs=2"]) == 0
    a, b = torch.load(full / "last.pt", weights_only=False), torch.load(run / "last.pt", weights_only=False)
    for net in ("model", "discriminator"):
        for key, value in a["networks"][net].items():
            assert torch.equal(value, b["networks"][net][key]), (net, key)
        sa, sb = a["optimizers"][net]["state"], b["optimizers"][net]["state"]
        assert all(torch.equal(sa[k]["exp_avg"], sb[k]["exp_avg"]) for k in sa)
    assert a["step"] == b["step"] == 4


def test_generate_writes_pairs_that_load_cases_reads_back_in_the_source_encoding(trained, tmp_path):
    _, _, run = trained
    out = tmp_path / "synthetic"
    assert main(["synth", "generate", "--checkpoint", str(run / "best.pt"), "--n", "4", "--out", str(out)]) == 0
    images, labels = sorted((out / "images").iterdir()), sorted((out / "labels").iterdir())
    assert [p.name for p in images] == [f"synth_{k:05d}.png" for k in range(4)] == [p.name for p in labels]
    for p, q in zip(images, labels):
        im, lab = Image.open(p), Image.open(q)
        assert im.mode == "L" and im.size == (40, 40) and lab.mode == "L"
        assert set(np.unique(np.asarray(lab)).tolist()) <= {0, 255}  # membrane 0, interior 255 as the source
    cfg = config.load(None, [f"data.root={out}", "data.label_map={0: 1, 255: 0}", "data.val_fraction=0"])
    train, val = load_cases(cfg)
    assert len(train) == 4 and val == []
    manifest = json.loads((out / "synth.json").read_text())
    assert [r["source"] for r in manifest["pairs"]] == ["a", "b", "a", "b"]  # the two training labels in turn


def test_generate_is_reproducible_by_seed(trained, tmp_path):
    _, _, run = trained

    def arrays(out, seed):
        main(["synth", "generate", "--checkpoint", str(run), "--n", "2", "--out", str(out), "--seed", str(seed)])
        return [np.asarray(Image.open(p)) for sub in ("images", "labels") for p in sorted((out / sub).iterdir())]

    a, b, c = arrays(tmp_path / "a", 3), arrays(tmp_path / "b", 3), arrays(tmp_path / "c", 4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    # the new label maps are not copies of the training labels
    src = [np.asarray(Image.open(trained[0] / "data" / "labels" / f"{s}.png")) for s in "ab"]
    assert not any(np.array_equal(a[2], s) for s in src)


def test_generate_refuses_a_folder_that_holds_images(trained, tmp_path, capsys):
    _, _, run = trained
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "x.png").write_bytes(b"")
    assert main(["synth", "generate", "--checkpoint", str(run), "--n", "1", "--out", str(tmp_path)]) == 2
    assert "already holds files" in capsys.readouterr().err


def test_synth_train_refuses_a_recipe_of_another_task(tmp_path, capsys):
    recipe = tmp_path / "seg.yaml"
    recipe.write_text("task: segmentation\nmodel: {name: unet}\n")
    assert main(["synth", "train", str(recipe)]) == 2
    assert "densemed synth needs a recipe with task: synthesis" in capsys.readouterr().err


def test_instance_data_round_trips_as_rgba_images_and_16_bit_instance_maps(tmp_path):
    root = tmp_path / "nuclei"
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir(parents=True)
    for k, stem in enumerate("ab"):
        rng = np.random.default_rng(k)
        ids = np.zeros((40, 40), np.uint16)
        for i, (y, x) in enumerate(rng.integers(8, 32, (4, 2)), start=1):
            yy, xx = np.mgrid[:40, :40]
            ids[((yy - y) ** 2 + (xx - x) ** 2 < 16) & (ids == 0)] = i
        rgba = np.zeros((40, 40, 4), np.uint8)
        rgba[..., :3] = np.where(ids[..., None] > 0, [200, 80, 150], [20, 20, 30])
        rgba[..., 3] = 255
        Image.fromarray(rgba).save(root / "images" / f"{stem}.png")
        Image.fromarray(ids).save(root / "labels" / f"{stem}.png")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "task: {name: synthesis, instances: true, discriminator: {name: patchgan, base_width: 4, n_layers: 1},"
        " preview_rows: 0}\n"
        f"data: {{root: {root}, patch_size: [32, 32], batch_size: 2, samples_per_epoch: 2, val_fraction: 0}}\n"
        "model: {name: pix2pix_generator, depth: 3, base_width: 4, max_width: 8}\nloss: {name: gan_ls}\n"
        "train: {epochs: 1, progress: false, device: cpu}\n"
    )
    run, out = tmp_path / "run", tmp_path / "out"
    assert main(["synth", "train", str(recipe), "--set", f"train.out={run}"]) == 0
    assert main(["synth", "generate", "--checkpoint", str(run / "last.pt"), "--n", "2", "--out", str(out)]) == 0
    for p in sorted((out / "images").iterdir()):
        assert Image.open(p).mode == "RGBA" and np.all(np.asarray(Image.open(p))[..., 3] == 255)
    for p in sorted((out / "labels").iterdir()):
        lab = Image.open(p)
        assert lab.mode.startswith("I;16")
        ids = np.asarray(lab)
        assert np.array_equal(np.unique(ids), np.arange(ids.max() + 1))  # ids 0..K, unique objects
    cfg = config.load(None, ["task=instances", f"data.root={out}", "data.val_fraction=0"])
    train, _ = load_cases(cfg)
    assert len(train) == 2 and train[0].image.shape[0] == 3
