"""Geometric transforms: exactness (flip, rot90, shifts), label values, alignment, 2D/3D, dtypes."""

from __future__ import annotations

import pytest
import torch

from densemed.augment import (
    Affine,
    Elastic,
    Flip,
    RandomAffine,
    RandomElastic,
    RandomFlip,
    RandomRot90,
    Rot90,
    Warp,
    affine_matrix,
    build,
)
from densemed.augment.compose import Compose
from densemed.augment.elastic import cubic_weights

SIZES = {2: (12, 12), 3: (8, 8, 8)}


def make_batch(dims: int, b: int = 2, dtype: torch.dtype = torch.float32, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    size = SIZES[dims]
    image = torch.rand(b, 2, *size, generator=g).to(dtype)
    label = torch.randint(0, 3, (b, 1, *size), generator=g)
    weights = torch.rand(b, 1, *size, generator=g)
    return {"image": image, "label": label, "weights": weights, "names": ["a"] * b}


def all_geometric(p: float = 1.0, padding: str = "zeros") -> Compose:
    return Compose(
        [
            RandomFlip(p),
            RandomRot90(p),
            RandomAffine(p, rotate=30, scale=[0.8, 1.2], translate=0.1, shear=0.1),
            RandomElastic(p, grid=3, magnitude=2.0),
        ],
        [],
        padding=padding,
    )


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("b", [1, 3])
def test_flip_twice_is_exact_identity(dims: int, b: int) -> None:
    batch = make_batch(dims, b)
    flip = RandomFlip(0.7).sample(b, batch["image"].shape[2:], torch.Generator().manual_seed(1))
    out = flip(flip(batch))
    for k in ("image", "label", "weights"):
        assert torch.equal(out[k], batch[k])
    assert out["names"] is batch["names"]


@pytest.mark.parametrize("dims", [2, 3])
def test_flip_matches_torch_flip(dims: int) -> None:
    batch = make_batch(dims, 2)
    flips = torch.zeros(2, dims, dtype=torch.bool)
    flips[0, 0] = flips[1, dims - 1] = True
    out = Flip(flips)(batch)
    assert torch.equal(out["image"][0], batch["image"][0].flip(1))
    assert torch.equal(out["label"][1], batch["label"][1].flip(dims))


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_rot90_equals_torch_rot90(dims: int, k: int) -> None:
    batch = make_batch(dims, 2)
    plane = (0, 1) if dims == 2 else (0, 2)
    rot = Rot90(torch.tensor([k, k]), torch.tensor([plane, plane]))
    out = rot(batch)
    ref_dims = (2 + plane[0], 2 + plane[1])
    for key in ("image", "label", "weights"):
        assert torch.equal(out[key], torch.rot90(batch[key], k, dims=ref_dims))
    # The interpolating grid path agrees with the exact index path (to float rounding).
    grid = rot.to_warp(batch["image"].shape[2:], batch["image"].device).apply(batch, index_ops=False)
    assert torch.allclose(grid["image"], out["image"], atol=1e-5)
    assert torch.equal(grid["label"], out["label"])


def test_rot90_non_square_plane_only_half_turns() -> None:
    size = torch.Size([6, 10])
    rot = RandomRot90(1.0).sample(50, size, torch.Generator().manual_seed(0))
    assert set(rot.k.tolist()) == {2}
    batch = {"image": torch.rand(50, 1, *size)}
    assert torch.equal(rot(batch)["image"], torch.rot90(batch["image"], 2, dims=(2, 3)))


@pytest.mark.parametrize("dims", [2, 3])
def test_whole_pixel_translation_equals_shift(dims: int) -> None:
    batch = make_batch(dims, 1)
    t = torch.tensor([[2.0, -1.0, 3.0][:dims]])
    out = Affine(torch.eye(dims)[None], t)(batch)
    ref = {k: torch.zeros_like(batch[k]) for k in ("image", "label", "weights")}
    size = SIZES[dims]
    dst = tuple(slice(max(0, int(s)), n + min(0, int(s))) for s, n in zip(t[0].tolist(), size))
    src = tuple(slice(max(0, -int(s)), n - max(0, int(s))) for s, n in zip(t[0].tolist(), size))
    for k in ref:
        ref[k][(..., *dst)] = batch[k][(..., *src)]
    assert torch.allclose(out["image"], ref["image"], atol=1e-5)
    assert torch.allclose(out["weights"], ref["weights"], atol=1e-5)
    assert torch.equal(out["label"], ref["label"])


@pytest.mark.parametrize("dims", [2, 3])
def test_identity_params_return_input_through_the_grid(dims: int) -> None:
    batch = make_batch(dims, 2)
    n = 2
    w = Warp.identity(n, dims)
    w.continuous[:] = True  # force interpolation
    out = w.apply(batch, index_ops=False)
    assert torch.allclose(out["image"], batch["image"], atol=1e-5)
    assert torch.equal(out["label"], batch["label"])
    zero = Elastic(torch.zeros(n, dims, *([3] * dims)))
    assert zero(batch)["image"] is batch["image"]  # nothing drawn: no resampling at all
    ident = Affine(affine_matrix(torch.zeros(n, 1 if dims == 2 else 3), torch.ones(n, dims), None, dims))
    assert torch.equal(ident(batch)["image"], batch["image"])


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_label_values_kept_under_every_combination(dims: int, padding: str) -> None:
    batch = make_batch(dims, 3)
    parts = {
        "flip": RandomFlip(1.0),
        "rot90": RandomRot90(1.0),
        "affine": RandomAffine(1.0, rotate=40, scale=[0.7, 1.3], isotropic=False, translate=0.2, shear=0.2),
        "elastic": RandomElastic(1.0, grid=4, magnitude=3.0),
    }
    names = list(parts)
    combos = [[n] for n in names] + [names[:2], names[2:], names]
    for i, combo in enumerate(combos):
        aug = Compose([parts[n] for n in combo], [], padding=padding)
        out = aug(batch, torch.Generator().manual_seed(i))
        values = set(out["label"].unique().tolist())
        assert values <= {0, 1, 2}, combo
        assert out["label"].dtype == torch.int64
        assert out["label"].shape == batch["label"].shape


def test_instance_ids_never_appear() -> None:
    g = torch.Generator().manual_seed(3)
    inst = torch.zeros(2, 1, 32, 32, dtype=torch.int64)
    for i in range(1, 12):
        y, x = torch.randint(2, 28, (2,), generator=g).tolist()
        inst[:, :, y : y + 4, x : x + 4] = i * 1000 + 7  # large, sparse ids
    batch = {"image": torch.rand(2, 1, 32, 32), "label": inst}
    for seed in range(5):
        out = all_geometric()(batch, torch.Generator().manual_seed(seed))
        assert set(out["label"].unique().tolist()) <= set(inst.unique().tolist())


def centroid(mask: torch.Tensor) -> torch.Tensor:
    idx = mask.nonzero().double()
    return idx.mean(0)


@pytest.mark.parametrize("dims", [2, 3])
def test_image_and_label_stay_aligned(dims: int) -> None:
    size = (48, 48) if dims == 2 else (24, 24, 24)
    image = torch.zeros(2, 1, *size)
    label = torch.zeros(2, 1, *size, dtype=torch.int64)
    box = tuple(slice(s // 4, s // 4 + s // 5) for s in size)  # off-centre bright object
    image[(..., *box)] = 1.0
    label[(..., *box)] = 1
    aug = Compose(
        [RandomFlip(0.5), RandomRot90(0.5), RandomAffine(1.0, rotate=25, scale=[0.9, 1.1], translate=0.05),
         RandomElastic(1.0, grid=3, magnitude=1.5)],
        [],
    )
    moved = 0.0
    for seed in range(3):
        out = aug({"image": image, "label": label}, torch.Generator().manual_seed(seed))
        for b in range(2):
            ci = centroid(out["image"][b, 0] > 0.5)
            cl = centroid(out["label"][b, 0] == 1)
            assert torch.allclose(ci, cl, atol=0.5), (ci, cl)
            moved = max(moved, float((cl - centroid(label[b, 0] == 1)).abs().max()))
    assert moved > 2  # the object did move


@pytest.mark.parametrize("dims", [2, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("b", [1, 4])
def test_shapes_dtypes_and_float_maps(dims: int, dtype: torch.dtype, b: int) -> None:
    batch = make_batch(dims, b, dtype)
    out = all_geometric(0.8)(batch, torch.Generator().manual_seed(0))
    for k in ("image", "label", "weights"):
        assert out[k].shape == batch[k].shape and out[k].dtype == batch[k].dtype
    assert torch.isfinite(out["image"].float()).all()
    # Weight maps are interpolated linearly: values stay inside the input range (zeros padding adds 0).
    assert out["weights"].min() >= 0 and out["weights"].max() <= batch["weights"].max() + 1e-6


def test_float16_matches_float32_within_half_precision() -> None:
    b32 = make_batch(2, 2)
    b16 = dict(b32, image=b32["image"].half())
    aug = all_geometric()
    o32 = aug(b32, torch.Generator().manual_seed(5))
    o16 = aug(b16, torch.Generator().manual_seed(5))
    assert torch.allclose(o16["image"].float(), o32["image"], atol=2e-3)
    assert torch.equal(o16["label"], o32["label"])


@pytest.mark.parametrize("dims", [2, 3])
def test_same_seed_same_output_different_seed_different(dims: int) -> None:
    batch = make_batch(dims, 3)
    aug = build({"flip": {}, "rot90": {}, "affine": {"p": 1.0}, "elastic": {"p": 1.0, "magnitude": 2},
                 "noise": {"p": 1.0}, "gamma": {"p": 1.0}, "blur": {"p": 1.0}})
    a = aug(batch, torch.Generator().manual_seed(11))
    b = aug(batch, torch.Generator().manual_seed(11))
    c = aug(batch, torch.Generator().manual_seed(12))
    for k in ("image", "label", "weights"):
        assert torch.equal(a[k], b[k])
    assert not torch.allclose(a["image"], c["image"])


def test_samples_get_independent_draws() -> None:
    image = torch.rand(1, 1, 16, 16).expand(6, 1, 16, 16).contiguous()
    out = RandomAffine(1.0, rotate=45)
    warped = out.sample(6, image.shape[2:], torch.Generator().manual_seed(0))(
        {"image": image})["image"]
    assert len({round(float(v), 4) for v in warped.sum(dim=(1, 2, 3))}) == 6


def test_only_some_samples_warped_leaves_the_others_untouched() -> None:
    batch = make_batch(2, 4)
    aff = Affine(affine_matrix(torch.tensor([0.0, 20.0, 0.0, 0.0]), dims=2))
    out = aff(batch)
    for b in (0, 2, 3):
        assert torch.equal(out["image"][b], batch["image"][b])
    assert not torch.allclose(out["image"][1], batch["image"][1])


def test_rotation_direction_and_scale_match_scipy() -> None:
    scipy_ndimage = pytest.importorskip("scipy.ndimage")
    import numpy as np

    x = torch.rand(1, 1, 21, 21, dtype=torch.float64)
    m = affine_matrix(torch.tensor([30.0]), torch.tensor([[1.2, 0.9]]), None, dims=2)
    out = Affine(m)({"image": x}, padding="zeros")["image"][0, 0].numpy()
    a = np.linalg.inv(m[0].numpy())
    c = np.array([10.0, 10.0])
    ref = scipy_ndimage.affine_transform(x[0, 0].numpy(), a, offset=c - a @ c, order=1, mode="constant")
    # scipy zeroes any point outside [0, n - 1]; grid_sample blends with the zero padding there,
    # so compare where the source lies inside the image.
    assert np.allclose(out[4:17, 4:17], ref[4:17, 4:17], atol=1e-6)
    assert not np.allclose(out[4:17, 4:17], x[0, 0, 4:17, 4:17].numpy(), atol=1e-2)


def test_elastic_field_interpolates_control_points_and_is_smooth() -> None:
    w = cubic_weights(9, 3, torch.float64)
    assert torch.allclose(w.sum(1), torch.ones(9, dtype=torch.float64))
    assert torch.allclose(w[[0, 4, 8]], torch.eye(3, dtype=torch.float64))  # passes through control values
    el = RandomElastic(1.0, grid=3, magnitude=10.0).sample(64, torch.Size([33, 33]), torch.Generator())
    u = el.to_warp(torch.Size([33, 33]), torch.device("cpu")).displacement
    assert abs(float(u[:, :, ::16, ::16].std()) - 10.0) < 1.0  # N(0, 10^2) at the control points
    assert float(u.diff(dim=-1).abs().max()) < 5.0  # smooth: no jumps between neighbours


def test_elastic_spacing_sets_control_grid() -> None:
    assert RandomElastic(grid=3, spacing=32).control_shape([65, 129]) == [3, 5]
    assert RandomElastic(grid=[3, 4]).control_shape([10, 10]) == [3, 4]


def test_cubic_image_interpolation_2d_and_linear_fallback_3d() -> None:
    aug2 = Compose([RandomAffine(1.0, rotate=20)], [], interpolation="cubic")
    lin2 = Compose([RandomAffine(1.0, rotate=20)], [], interpolation="linear")
    b2 = make_batch(2, 2)
    c, lnr = aug2(b2, torch.Generator().manual_seed(0)), lin2(b2, torch.Generator().manual_seed(0))
    assert not torch.allclose(c["image"], lnr["image"])
    assert torch.equal(c["label"], lnr["label"]) and torch.equal(c["weights"], lnr["weights"])
    b3 = make_batch(3, 1)
    aug3 = Compose([RandomAffine(1.0, rotate=20)], [], interpolation="cubic")
    lin3 = Compose([RandomAffine(1.0, rotate=20)], [], interpolation="linear")
    assert torch.equal(aug3(b3, torch.Generator().manual_seed(0))["image"],
                       lin3(b3, torch.Generator().manual_seed(0))["image"])


def test_padding_modes_differ_at_the_border() -> None:
    batch = {"image": torch.ones(1, 1, 10, 10) + torch.rand(1, 1, 10, 10)}
    shift = Affine(torch.eye(2)[None], torch.tensor([[3.0, 0.0]]))
    zeros = shift(batch, padding="zeros")["image"]
    border = shift(batch, padding="border")["image"]
    refl = shift(batch, padding="reflection")["image"]
    assert zeros[0, 0, :3].abs().max() < 1e-5
    assert torch.allclose(border[0, 0, :3], batch["image"][0, 0, :1].expand(3, 10), atol=1e-5)
    # align_corners=True reflects about the first pixel centre: source row -1 is row 1, -3 is row 3.
    assert torch.allclose(refl[0, 0, 2], batch["image"][0, 0, 1], atol=1e-5)
    assert torch.allclose(refl[0, 0, 0], batch["image"][0, 0, 3], atol=1e-5)


def test_hand_built_non_permutation_warp_goes_through_the_grid() -> None:
    batch = make_batch(2, 1)
    w = Warp.identity(1, 2)
    w.matrix[0] = torch.tensor([[1.0, 0.0], [0.0, 0.5]], dtype=torch.float64)  # continuous flag left False
    out = w.apply(batch)
    ref = w.apply(batch, index_ops=False)
    assert torch.equal(out["image"], ref["image"]) and not torch.equal(out["image"], batch["image"])
