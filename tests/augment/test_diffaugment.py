"""DiffAugment: hand values per policy, a numpy shift reference, gradients, shared draws, seeds."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densemed.augment.diffaugment import DiffAugment, RandomDiffAugment, cutout_mask, translate
from densemed.errors import DensemedError


def test_translation_hand_values_move_content_by_the_shift_with_zero_fill():
    x = torch.arange(1.0, 7.0).view(1, 1, 2, 3)  # [[1, 2, 3], [4, 5, 6]]
    assert translate(x, torch.tensor([[0, 1]]))[0, 0].tolist() == [[0, 1, 2], [0, 4, 5]]
    assert translate(x, torch.tensor([[-1, -2]]))[0, 0].tolist() == [[6, 0, 0], [0, 0, 0]]
    assert translate(x, torch.tensor([[0, 3]]))[0, 0].tolist() == [[0, 0, 0], [0, 0, 0]]


def _numpy_shift(a: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Independent reference: pad with zeros, then slice out the shifted window."""
    out = np.zeros_like(a)
    for b in range(a.shape[0]):
        n = max(abs(int(s)) for s in shift[b]) + 1
        padded = np.pad(a[b], [(0, 0)] + [(n, n)] * (a.ndim - 2))
        window = tuple(slice(n - int(s), n - int(s) + size) for s, size in zip(shift[b], a.shape[2:]))
        out[b] = padded[(slice(None),) + window]
    return out


@pytest.mark.parametrize("size", [(7, 9), (5, 6, 4)])
def test_translation_equals_a_numpy_pad_and_slice_reference(size):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, *size, generator=g)
    shift = torch.randint(-4, 5, (3, len(size)), generator=g)
    np.testing.assert_array_equal(translate(x, shift).numpy(), _numpy_shift(x.numpy(), shift.numpy()))


def test_cutout_hand_values_zero_a_box_clipped_at_the_border():
    m = cutout_mask((1, 1, 4, 5), torch.tensor([[-1, 3]]), (2, 3))
    assert m[0, 0].int().tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1], [1, 1, 1, 1, 1]]


def test_color_hand_values():
    x = torch.tensor([[[[0.0, 2.0]], [[2.0, 4.0]]]])  # (1, 2, 1, 2): channel means per pixel 1, 3
    assert DiffAugment(brightness=torch.tensor([0.5])).color(x).flatten().tolist() == [0.5, 2.5, 2.5, 4.5]
    # saturation 0: every channel becomes the channel mean
    assert DiffAugment(saturation=torch.tensor([0.0])).color(x).flatten().tolist() == [1.0, 3.0, 1.0, 3.0]
    # contrast 0.5 about the image mean 2
    assert DiffAugment(contrast=torch.tensor([0.5])).color(x).flatten().tolist() == [1.0, 2.0, 2.0, 3.0]
    gray = torch.tensor([[[[0.0, 2.0]]]])
    assert DiffAugment(saturation=torch.tensor([0.0])).color(gray).flatten().tolist() == [0.0, 2.0]


def test_gradcheck_through_every_policy():
    g = torch.Generator().manual_seed(3)
    draw = RandomDiffAugment().sample(2, (6, 7), g)
    cond = torch.rand(2, 3, 6, 7, dtype=torch.float64, generator=g).requires_grad_()
    image = torch.randn(2, 1, 6, 7, dtype=torch.float64, generator=g).requires_grad_()
    assert torch.autograd.gradcheck(lambda c, x: draw(c, x), (cond, image))


def test_gradient_reaches_the_generated_image():
    fake = torch.randn(2, 1, 16, 16, requires_grad=True)
    _, out = RandomDiffAugment()(torch.zeros(2, 3, 16, 16), fake, generator=torch.Generator().manual_seed(0))
    out.pow(2).sum().backward()
    assert fake.grad is not None and fake.grad.abs().sum() > 0


def test_condition_and_image_of_a_pair_get_the_same_geometry_and_color_only_on_the_image():
    g = torch.Generator().manual_seed(4)
    image = torch.randn(4, 1, 20, 24, generator=g)
    cond, out = RandomDiffAugment(("translation", "cutout"))(image.clone(), image, generator=g)
    torch.testing.assert_close(cond, out, rtol=0, atol=0)
    assert not torch.equal(out, image)
    cond2, out2 = RandomDiffAugment(("color",))(image.clone(), image, generator=g)
    torch.testing.assert_close(cond2, image, rtol=0, atol=0)
    assert not torch.equal(out2, image)


def test_real_and_fake_of_one_call_share_the_draw():
    g = torch.Generator().manual_seed(5)
    cond, x = torch.rand(3, 2, 16, 16, generator=g), torch.randn(3, 1, 16, 16, generator=g)
    _, real, fake = RandomDiffAugment()(cond, x, x.clone(), generator=g)
    torch.testing.assert_close(real, fake, rtol=0, atol=0)


def test_seeds_reproduce_draws_and_different_seeds_differ():
    cond, x = torch.rand(2, 2, 16, 16), torch.randn(2, 1, 16, 16)
    aug = RandomDiffAugment()
    a = aug(cond, x, generator=torch.Generator().manual_seed(0))
    b = aug(cond, x, generator=torch.Generator().manual_seed(0))
    c = aug(cond, x, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(a[1], c[1])


def test_draw_ranges_follow_the_paper():
    draw = RandomDiffAugment().sample(4000, (16, 40), torch.Generator().manual_seed(0))
    # translation 1/8: shifts in [-2, 2] and [-5, 5], every value drawn
    assert sorted(draw.shift[:, 0].unique().tolist()) == [-2, -1, 0, 1, 2]
    assert sorted(draw.shift[:, 1].unique().tolist()) == list(range(-5, 6))
    assert draw.cutout_size == (8, 20)  # half of each axis
    assert -0.5 <= draw.brightness.min() and draw.brightness.max() < 0.5
    assert 0.0 <= draw.saturation.min() and draw.saturation.max() < 2.0
    assert 0.5 <= draw.contrast.min() and draw.contrast.max() < 1.5
    centres = draw.cutout_start + torch.tensor([4, 10])
    assert centres.min() == 0 and centres[:, 0].max() == 15 and centres[:, 1].max() == 39


def test_bad_inputs_raise():
    with pytest.raises(DensemedError, match="unknown"):
        RandomDiffAugment(("colour",))
    with pytest.raises(DensemedError, match="translation"):
        RandomDiffAugment(translation=2.0)
    with pytest.raises(DensemedError, match="does not match"):
        RandomDiffAugment()(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 9))
    with pytest.raises(DensemedError, match="at least one image"):
        DiffAugment()(torch.zeros(1, 1, 8, 8))
