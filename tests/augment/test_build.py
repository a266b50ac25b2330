"""build(): config schema, identity cases, errors naming the key, defaults in 2D and 3D."""

from __future__ import annotations

import pytest
import torch

from densemed.augment import DEFAULT_AUGMENT, Compose, build, identity
from densemed.errors import DensemedError


@pytest.mark.parametrize("cfg", [None, {}, {"enabled": False, "flip": {}}, {"flip": None, "noise": False}])
def test_off_configs_are_identity(cfg: dict | None) -> None:
    aug = build(cfg)
    assert aug is identity
    batch = {"image": torch.rand(1, 1, 4, 4)}
    assert aug(batch, torch.Generator()) is batch


@pytest.mark.parametrize(
    ("cfg", "match"),
    [
        ({"flp": {}}, "augment: unknown key 'flp'; did you mean 'flip'"),
        ({"affine": {"rotat": 10}}, "augment.affine: unknown key 'rotat'"),
        ({"flip": {"p": 1.5}}, r"augment.flip.p: must be a number in \[0, 1\]"),
        ({"affine": {"scale": [1.2, 0.8]}}, "augment.affine.scale"),
        ({"elastic": {"grid": 1}}, "augment.elastic.grid"),
        ({"padding": "wrap"}, "augment.padding"),
        ({"interpolation": "spline"}, "augment.interpolation"),
        ("strong", "augment: must be a mapping"),
    ],
)
def test_bad_config_names_the_key(cfg: object, match: str) -> None:
    with pytest.raises(DensemedError, match=match):
        build(cfg)  # type: ignore[arg-type]


def test_batch_errors() -> None:
    aug = build({"flip": {}})
    with pytest.raises(DensemedError, match="'image'"):
        aug({"label": torch.zeros(1, 1, 4, 4, dtype=torch.long)})
    with pytest.raises(DensemedError, match="'label' has shape"):
        aug({"image": torch.zeros(1, 1, 4, 4), "label": torch.zeros(1, 1, 4, 5, dtype=torch.long)})


@pytest.mark.parametrize("shape", [(2, 1, 32, 32), (2, 1, 16, 16, 12)])
def test_default_recipe_runs_in_2d_and_3d(shape: tuple[int, ...]) -> None:
    aug = build("default")
    assert isinstance(aug, Compose) and aug.padding == DEFAULT_AUGMENT["padding"]
    g = torch.Generator().manual_seed(0)
    batch = {"image": torch.randn(*shape, generator=g), "label": torch.randint(0, 4, shape, generator=g)}
    for _ in range(3):
        out = aug(batch, g)
        assert out["image"].shape == shape and set(out["label"].unique().tolist()) <= {0, 1, 2, 3}


def test_yaml_style_config_matches_explicit_transforms() -> None:
    cfg = {"flip": {"p": 0.5, "axes": [0, 1]}, "rot90": {"p": 0.5},
           "affine": {"p": 0.5, "rotate": 15, "scale": [0.9, 1.1], "translate": 0.05, "shear": 0.05},
           "elastic": {"p": 0.5, "grid": 8, "magnitude": 10}, "padding": "border", "interpolation": "cubic"}
    aug = build(cfg)
    names = [type(t).__name__ for t in aug.geometric]
    assert names == ["RandomFlip", "RandomRot90", "RandomAffine", "RandomElastic"]
    assert aug.padding == "border" and aug.interpolation == "cubic"
    assert cfg["flip"] == {"p": 0.5, "axes": [0, 1]}  # the caller's dict is not consumed
