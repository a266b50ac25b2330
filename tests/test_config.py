import pytest

from densemed import config
from densemed.errors import DensemedError


def test_unknown_data_key_suggests_the_closest_valid_key():
    with pytest.raises(DensemedError, match=r"unknown config key 'data.patchsize'; did you mean 'patch_size'"):
        config.load(None, ["data.patchsize=[64,64]"])


def test_unknown_section_is_rejected_with_suggestion():
    with pytest.raises(DensemedError, match=r"'trian'.*did you mean 'train'"):
        config.from_dict({"trian": {}})


def test_overrides_are_parsed_as_yaml_values():
    cfg = config.load(
        None, ["train.epochs=3", "data.patch_size=[32,48]", "train.lr=1e-4", "data.label_map={0: 1, 255: 0}"]
    )
    assert cfg.train.epochs == 3
    assert cfg.data.patch_size == [32, 48]
    assert cfg.train.lr == pytest.approx(1e-4)
    assert cfg.data.label_map == {0: 1, 255: 0}


def test_model_keys_without_name_extend_the_default_network():
    cfg = config.load(None, ["model.base_width=8"])
    assert cfg.model == {"name": "unet", "base_width": 8}


def test_patch_size_must_match_dims():
    with pytest.raises(DensemedError, match="patch_size"):
        config.load(None, ["data.dims=3"])


def test_saved_recipe_loads_back_identically(tmp_path):
    cfg = config.load("configs/unet_isbi2012.yaml", ["train.epochs=2"])
    config.save(cfg, tmp_path / "c.yaml")
    assert config.load(tmp_path / "c.yaml").to_dict() == cfg.to_dict()


def test_every_recipe_in_configs_loads():
    from pathlib import Path

    recipes = sorted(Path("configs").glob("*.yaml"))
    assert recipes, "no recipes found"
    for path in recipes:
        config.load(path)
