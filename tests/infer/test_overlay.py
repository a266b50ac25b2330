import numpy as np
import pytest
import torch
from PIL import Image

from densemed.infer.overlay import CAPTION, GAP, PALETTE, pick_slice, save_overlay


def test_2d_overlay_has_expected_pixel_size_and_colours(tmp_path, rng):
    lab = np.zeros((64, 48), np.int64)
    lab[10:30, 5:20] = 1
    pred = np.zeros_like(lab)
    pred[40:50, 30:40] = 2
    out = save_overlay(rng.random((64, 48)), lab, pred, tmp_path / "o.png")
    s = 256 // 64  # integer upscaling to at least 256 rows
    with Image.open(out) as im:
        assert im.size == (3 * s * 48 + 2 * GAP, CAPTION + s * 64)
        arr = np.asarray(im.convert("RGB")).astype(int)
    # a truth pixel in the middle panel leans red (class 1); a predicted pixel in the right panel green
    y, x = CAPTION + s * 20, (s * 48 + GAP) + s * 10
    assert arr[y, x, 0] > arr[y, x, 1] + 50
    y, x = CAPTION + s * 45, 2 * (s * 48 + GAP) + s * 35
    assert arr[y, x, 1] > arr[y, x, 0] + 50 and PALETTE[2, 1] > PALETTE[2, 0]


def test_rgb_channels_first_and_large_image_is_not_upscaled(tmp_path, rng):
    img = rng.random((3, 300, 20))
    lab = torch.zeros((1, 300, 20), dtype=torch.int64)
    with Image.open(save_overlay(img, lab, lab, tmp_path / "rgb.png")) as im:
        assert im.size == (3 * 20 + 2 * GAP, CAPTION + 300)


def test_3d_overlay_shows_the_slice_with_most_foreground(tmp_path, rng):
    vol = rng.random((9, 16, 16))
    lab = np.zeros((9, 16, 16), np.int64)
    lab[2, 4:12, 4:12] = 1
    lab[6, 5:7, 5:7] = 1
    assert pick_slice(lab, np.zeros_like(lab)) == 2
    assert pick_slice(np.zeros_like(lab), np.zeros_like(lab)) == 4  # empty: the middle slice
    out = save_overlay(vol[None], lab, lab, tmp_path / "v.png")
    with Image.open(out) as im:
        assert im.size == (3 * 16 * 16 + 2 * GAP, CAPTION + 16 * 16)


def test_mismatched_shapes_raise(tmp_path):
    with pytest.raises(ValueError, match="differ in shape"):
        save_overlay(np.zeros((4, 4)), np.zeros((4, 4)), np.zeros((4, 5)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="does not fit"):
        save_overlay(np.zeros((5, 4)), np.zeros((4, 4)), np.zeros((4, 4)), tmp_path / "x.png")
