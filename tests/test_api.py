"""densemed.load(path).predict(array): the same label maps and probabilities as `densemed predict`."""

import subprocess
import sys

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

import densemed
from densemed.cli import main
from densemed.errors import DensemedError


def _blobs(root, n=4, shape=(40, 48), seed=0):
    """Bright discs on noise; labels 0/255 like the ISBI and GlaS folders."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    for i in range(n):
        cy, cx = rng.integers(10, 30, 2)
        lab = ((yy - cy) ** 2 + (xx - cx) ** 2 < 60).astype(np.uint8)
        img = (lab * 120 + rng.normal(60, 20, shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(img).save(root / "images" / f"c{i}.png")
        Image.fromarray(lab * 255).save(root / "labels" / f"c{i}.png")
    return root


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("api")
    data = _blobs(tmp / "data")
    out = tmp / "run"
    argv = ["train", "--set", f"data.root={data}", "data.patch_size=[32,32]", "model.name=unet", "model.base_width=4",
            "model.depth=2", "train.epochs=1", "data.samples_per_epoch=4", f"train.out={out}", "train.progress=false",
            "train.threads=1"]
    assert main(argv) == 0
    return data, out


def test_predict_array_equals_the_files_written_by_the_cli(run, tmp_path, capsys):
    data, out = run
    assert main(["predict", "--checkpoint", str(out / "best.pt"), "--input", str(data / "images"),
                 "--output", str(tmp_path / "pred"), "--probabilities", "--device", "cpu"]) == 0
    predictor = densemed.load(out / "best.pt", "cpu")
    for i in range(4):
        image = np.asarray(Image.open(data / "images" / f"c{i}.png"))
        labels, probs = predictor.predict(image, probabilities=True)
        written = np.asarray(Image.open(tmp_path / "pred" / f"c{i}.png"))
        assert labels.shape == image.shape and probs.shape == (2, *image.shape)
        np.testing.assert_array_equal(labels * 255, written)  # binary 2D maps are written as 0/255
        np.testing.assert_allclose(1 - probs[0], tifffile.imread(tmp_path / "pred" / f"c{i}_prob.tif"), atol=1e-6)


def test_predict_on_one_window_equals_softmax_of_the_network_on_the_normalised_image(run):
    # the image is the window size (32 x 32): one window, whose Gaussian weight divides out
    _, out = run
    predictor = densemed.load(out, "cpu")  # a run folder loads its best.pt
    image = np.random.default_rng(1).uniform(0, 255, (32, 32)).astype(np.float32)
    labels, probs = predictor.predict(image, probabilities=True)
    x = torch.from_numpy((image - image.mean()) / image.std())[None, None]  # data.normalize: zscore
    with torch.no_grad():
        ref = torch.softmax(predictor.model(x), dim=1)[0].numpy()
    np.testing.assert_allclose(probs, ref, atol=1e-5)
    np.testing.assert_array_equal(labels, ref.argmax(0))


def test_channel_last_colour_arrays_are_moved_and_bad_shapes_refused(run):
    _, out = run
    predictor = densemed.load(out / "best.pt", "cpu")
    grey = np.random.default_rng(2).uniform(0, 255, (24, 20)).astype(np.float32)
    np.testing.assert_array_equal(predictor.predict(grey[None]), predictor.predict(grey))
    with pytest.raises(DensemedError, match=r"array: the model takes 2D images"):
        predictor.predict(np.zeros((1, 1, 8, 8)))
    with pytest.raises(DensemedError, match="image has 3 channels, the model expects 1"):
        predictor.predict(np.zeros((3, 8, 8)))


def test_loading_a_missing_checkpoint_is_one_error_line(tmp_path):
    with pytest.raises(DensemedError, match="checkpoint not found"):
        densemed.load(tmp_path / "nothing.pt")


def test_importing_densemed_does_not_import_torch():
    # densemed.load is resolved on first use (the other tests call it); the bare import stays light
    code = "import sys, densemed; assert 'torch' not in sys.modules and densemed.__version__"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True).returncode == 0
