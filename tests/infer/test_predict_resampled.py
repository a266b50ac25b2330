"""Prediction through data.target_spacing: instances are made on the network's grid, then resized back.

The options of the post-processing (``min_size`` here) are chosen on the validation images on the
network's grid, so they must be applied there: a recipe that halves the images keeps a 12x12 object
(36 px on the network's grid) and drops an 8x8 one (16 px) with ``min_size`` 30, where the input's
grid would keep both (144 and 64 px).
"""

import numpy as np
import torch
from PIL import Image
from torch import nn

from densemed import config
from densemed.infer.predict import Predictor
from densemed.nets.heads import Head, declare


class Bright(nn.Module):
    """Two-class logits (0, 10 x): object where the normalised image is above its mean."""

    def __init__(self) -> None:
        super().__init__()
        declare(self, {"logits": Head(2)})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(x[:, :1]), 10 * x[:, :1]], dim=1)


def _image() -> np.ndarray:
    img = np.zeros((40, 40), np.float32)
    img[4:16, 4:16] = 100.0  # 12 x 12, on even pixels: exactly 6 x 6 after halving
    img[24:32, 24:32] = 100.0  # 8 x 8 -> 4 x 4
    return img


def _predictor(*extra: str) -> Predictor:
    cfg = config.load(None, ["data.dims=2", "data.patch_size=[16,16]", "task.name=instances",
                             "task.postprocess={method: components, threshold: 0.5, min_size: 30}", *extra])
    return Predictor(Bright(), cfg, "cpu")


def test_min_size_applies_on_the_network_grid_and_the_map_comes_back_to_the_input_grid():
    img = _image()
    labels, ids = _predictor("data.target_spacing=[2,2]").predict(img, instances=True)
    assert labels.shape == ids.shape == img.shape
    expected = np.zeros((40, 40), np.int32)
    expected[4:16, 4:16] = 1  # the big square only, with its exact borders
    np.testing.assert_array_equal(ids, expected)
    # the same network without resampling keeps both squares (144 and 64 px >= 30)
    _, ids_full = _predictor().predict(img, instances=True)
    assert sorted(np.bincount(ids_full.ravel())[1:].tolist()) == [64, 144]


def test_written_instances_equal_the_array_api_on_a_resampled_recipe(tmp_path):
    img = _image()
    Image.fromarray(img.astype(np.uint8)).save(tmp_path / "a.png")
    predictor = _predictor("data.target_spacing=[2,2]")
    written = predictor.predict_file(tmp_path / "a.png", tmp_path / "out", {"instances": True})
    _, ids = predictor.predict(img, instances=True)
    np.testing.assert_array_equal(np.asarray(Image.open(written[0])), ids)
