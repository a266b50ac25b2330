"""Slices of volumes: folding into the batch and back against explicit indexing, padding as the sampler pads."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densemed.data.dataset import Case, case_sample
from densemed.data.slices import center_crop, center_pad, check_axis, from_slices, slice_seed, step_seed, to_slices
from densemed.errors import DensemedError


@pytest.mark.parametrize("axis", [0, 1, 2])
def test_folded_row_b_d_plus_k_is_slice_k_of_sample_b(axis):
    x = torch.randn(2, 3, 4, 5, 6)
    s = to_slices(x, axis)
    depth = x.shape[2 + axis]
    assert s.shape == (2 * depth, 3, *[n for d, n in enumerate((4, 5, 6)) if d != axis])
    for b in range(2):
        for k in range(depth):
            torch.testing.assert_close(s[b * depth + k], x.select(2 + axis, k)[b], rtol=0, atol=0)
    torch.testing.assert_close(from_slices(s, 2, axis), x, rtol=0, atol=0)


def test_per_slice_scores_come_back_with_the_slice_axis_last():
    y = torch.arange(2 * 3 * 4, dtype=torch.float32).reshape(6, 4)  # (B * D, K) with B=2, D=3
    back = from_slices(y, 2, None)
    assert back.shape == (2, 4, 3)
    for b in range(2):
        for k in range(3):
            torch.testing.assert_close(back[b, :, k], y[b * 3 + k], rtol=0, atol=0)


def test_2d_batches_pass_through_and_bad_axes_are_refused():
    x = torch.randn(2, 1, 5, 6)
    assert to_slices(x, None) is x
    with pytest.raises(ValueError, match="volume batch"):
        to_slices(x, 0)
    with pytest.raises(ValueError, match="do not split"):
        from_slices(torch.zeros(5, 1, 2, 2), 2, 0)
    for bad in (3, -1, True, 1.0):
        with pytest.raises(DensemedError, match="slice axis must be 0, 1 or 2"):
            check_axis(bad)


@pytest.mark.parametrize(("size", "patch"), [((5, 7), (8, 8)), ((6, 9), (9, 8)), ((4, 4), (4, 4))])
def test_center_pad_places_the_image_where_the_patch_sampler_does(size, patch):
    img = np.random.default_rng(0).normal(size=(1, *size)).astype(np.float32)
    start = [(s - p) // 2 if s < p else 0 for s, p in zip(size, patch)]  # the sampler's start for small images
    want = [max(s, p) for s, p in zip(size, patch)]
    ref = case_sample(Case("c", img, None), start, want)["image"]
    padded, back = center_pad(torch.from_numpy(img)[None], want)
    torch.testing.assert_close(padded[0], ref, rtol=0, atol=0)
    torch.testing.assert_close(center_crop(padded, back)[0], torch.from_numpy(img), rtol=0, atol=0)


def test_seeds_are_reproducible_and_distinct():
    assert slice_seed(0, 3) == slice_seed(0, 3)
    assert len({slice_seed(0, k) for k in range(50)} | {slice_seed(1, k) for k in range(50)}) == 100
    assert step_seed(0, 1, 2, 3) == step_seed(0, 1, 2, 3)
    assert len({step_seed(0, s, b, k) for s in range(4) for b in range(4) for k in range(4)}) == 64
