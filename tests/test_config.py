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


def test_a_model_section_without_name_is_an_error():
    with pytest.raises(DensemedError, match="model.name is required"):
        config.load(None, ["model.base_width=8"])
    with pytest.raises(DensemedError, match="loss.name is required"):
        config.load(None, ["loss.smooth=1"])


def test_a_recipe_without_augment_gets_none_and_default_asks_for_it():
    from densemed.augment.compose import DEFAULT_AUGMENT, Compose, identity
    from densemed.build import build_augment

    assert config.load(None).augment is None and build_augment(config.load(None)) is None
    cfg = config.load(None, ["augment=default"])
    aug = build_augment(cfg)
    assert isinstance(aug, Compose) and len(aug.geometric) + len(aug.intensity) == sum(
        1 for k, v in DEFAULT_AUGMENT.items() if isinstance(v, dict))
    assert build_augment(config.load(None, ["augment={}"])) is identity


def test_defaults_compose_recipes_and_later_keys_win(tmp_path):
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "b.yaml").write_text("data: {dims: 3, patch_size: [8, 8, 8], batch_size: 2}\n"
                                              "train: {epochs: 7, lr: 0.5}\n")
    (tmp_path / "r.yaml").write_text("defaults: [base/b.yaml]\ntrain: {lr: 0.1}\nmodel: {name: vnet}\n")
    cfg = config.load(tmp_path / "r.yaml", ["data.batch_size=3"])
    assert (cfg.data.dims, cfg.data.batch_size, cfg.train.epochs, cfg.train.lr) == (3, 3, 7, 0.1)
    assert cfg.model == {"name": "vnet"}


def test_a_recipe_that_includes_itself_is_refused(tmp_path):
    (tmp_path / "a.yaml").write_text("defaults: [b.yaml]\n")
    (tmp_path / "b.yaml").write_text("defaults: [a.yaml]\n")
    with pytest.raises(DensemedError, match="includes itself"):
        config.load(tmp_path / "a.yaml")


def test_recipes_of_the_older_layout_move_their_task_keys():
    old = {
        "task": "sr", "data": {"sr": {"factor": 4, "axis": 1}, "dims": 3, "patch_size": [8, 8, 8]},
        "train": {"val_full_images": True},
    }
    cfg = config.from_dict(old)
    assert cfg.task == {"name": "image", "factor": 4, "axis": 1, "val_full_images": True}
    inst = config.from_dict({"data": {"instances": True, "targets": {"w": {"name": "border_weights"}}},
                             "infer": {"instances": {"method": "watershed", "h": 1.0}}})
    assert inst.task == {"name": "instances", "targets": {"w": {"name": "border_weights"}},
                         "postprocess": {"method": "watershed", "h": 1.0}}


def test_unknown_task_and_task_option_are_refused_with_suggestions():
    with pytest.raises(DensemedError, match="unknown task 'segmentaton'; did you mean 'segmentation'"):
        config.load(None, ["task=segmentaton"])
    with pytest.raises(DensemedError, match="unknown config key 'task.factr'; did you mean 'factor'"):
        config.load(None, ["task={name: image, factr: 2}", "data.dims=3", "data.patch_size=[8,8,8]"])
    with pytest.raises(DensemedError, match="task.axis must be in 0..1"):
        config.load(None, ["task={name: image, axis: 2}"])


def test_the_data_root_resolves_the_same_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.delenv("DENSEMED_DATA", raising=False)
    here = config.data_home()
    monkeypatch.chdir(tmp_path)
    assert config.data_home() == here


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
