"""Recipe validation: every key refused with one line naming it, the value and what is allowed."""

import dataclasses
import math
import typing

import pytest

from densemed import config, nets, validate
from densemed.errors import DensemedError

TINY = [
    "data.synthetic={n: 4, size: 32, seed: 1}",
    "data.patch_size=[32,32]",
    "model.name=unet",
    "model.base_width=2",
    "model.depth=2",
    "train.progress=false",
    "train.threads=1",
]


def _error(*overrides, base=TINY):
    with pytest.raises(DensemedError) as info:
        config.load(None, [*base, *overrides])
    text = str(info.value)
    assert "\n" not in text
    return text


# -- the nine overrides of issue 18 that used to end in a traceback ---------------------------------
@pytest.mark.parametrize(("override", "message"), [
    ("data.label_map=[[1]]", "--set: data.label_map: expected null or a mapping raw label value -> class index in "
                             "0..1 (data.num_classes=2), got [[1]]"),
    ("data.label_map=1", "--set: data.label_map: expected null or a mapping raw label value -> class index"),
    ("data.val_fraction={a: 1}", "--set: data.val_fraction: expected a number in [0, 1), got {'a': 1}"),
    ("model.name={}", "--set: model.name: expected a registered network name (see `densemed models`), got {}"),
    ("data.samples_per_epoch=[]", "--set: data.samples_per_epoch: expected a positive integer, got []"),
    ("train.time_budget_s={0: 5}", "--set: train.time_budget_s: expected null or a positive number, got {0: 5}"),
    ("infer.blend=deepdistance", "--set: infer.blend: expected one of gaussian, constant, got 'deepdistance'"),
    ("data.normalize=fcn8s", "--set: data.normalize: expected one of zscore, percentile, window, none, got 'fcn8s'"),
    ("data.num_classes=null", "--set: data.num_classes: expected a positive integer, got None"),
])
def test_issue_overrides_end_in_one_line_naming_key_value_and_allowed(override, message):
    assert _error(override).startswith(message)


def test_near_miss_names_get_did_you_mean():
    assert _error("infer.blend=gausian").endswith("got 'gausian'; did you mean 'gaussian'?")
    assert "did you mean 'adamw'" in _error("train.optimizer=adamW")
    assert "did you mean 'unet'" in _error("model.name=unt")
    assert "did you mean 'dice_ce'" in _error("loss.name=dice_c")
    assert "did you mean 'segmentation'" in _error("task=segmentaton")


@pytest.mark.parametrize(("override", "expected"), [
    ("train.lr=.nan", "train.lr: expected a number >= 0, got nan"),
    ("train.lr=-.inf", "train.lr: expected a number >= 0, got -inf"),
    ("infer.overlap=.inf", "infer.overlap: expected a number in [0, 1), got inf"),
    ("data.foreground_fraction=1.5", "data.foreground_fraction: expected a number in [0, 1], got 1.5"),
    ("data.val_fraction=1", "data.val_fraction: expected a number in [0, 1), got 1"),
    ("data.batch_size=true", "data.batch_size: expected a positive integer, got True"),
    ("data.batch_size=2.0", "data.batch_size: expected a positive integer, got 2.0"),
    ("train.seed=-1", "train.seed: expected an integer in [0, 9223372036854775808), got -1"),
    ("train.threads=0", "train.threads: expected null or an integer in [1, 1025), got 0"),
    ("train.weight_decay=-0.1", "train.weight_decay: expected a number >= 0, got -0.1"),
    ("train.amp=yes please", "train.amp: expected true, false, auto, bf16 or fp16, got 'yes please'"),
    ("data.dims=4", "data.dims: expected an integer in [2, 3], got 4"),
    ("data.percentiles=[99, 1]", "data.percentiles: expected [low, high] with low < high inside [0, 100], got [99, 1]"),
    ("infer.tta_axes=[0, 0]", "infer.tta_axes: expected null or a list of distinct axes in 0..1 (data.dims=2)"),
    ("train.device=gpu0", "train.device: expected auto, cpu, cuda, cuda:N or mps, got 'gpu0'"),
])
def test_types_ranges_fractions_and_non_finite_numbers_are_refused(override, expected):
    assert expected in _error(override)


def test_fraction_bounds_are_inclusive_at_zero_and_exclusive_at_one():
    assert config.load(None, [*TINY, "data.val_fraction=0"]).data.val_fraction == 0
    assert config.load(None, [*TINY, "data.val_fraction=0.999"]).data.val_fraction == 0.999
    assert config.load(None, [*TINY, "infer.overlap=0"]).infer.overlap == 0


def test_patch_size_and_window_need_one_positive_size_per_axis_of_data_dims():
    assert "data.patch_size: expected a list of 2 positive integers (one per axis, data.dims=2), got [32, 32, 32]" in (
        _error("data.patch_size=[32,32,32]"))
    assert "got [32, 0]" in _error("data.patch_size=[32,0]")
    assert "infer.window: expected null or a list of 2 positive integers" in _error("infer.window=[8]")
    # 2**31 voxels: over the cap of 2**30, refused before anything allocates
    assert "at most 2**30 voxels" in _error("data.patch_size=[65536,32768]")


def test_keys_that_depend_on_each_other_are_checked_together():
    assert "data.window: data.normalize is 'window', which needs data.window" in _error("data.normalize=window")
    assert config.load(None, [*TINY, "data.normalize=window", "data.window=[-100, 240]"]).data.window == [-100, 240]
    assert "train.momentum: expected a number in (0, 1) for Nesterov SGD" in _error(
        "train.optimizer=sgd", "train.momentum=0")
    assert "stems ['a'] are also in data.train_files" in _error("data.train_files=[a, b]", "data.val_files=[a]")
    assert "class index in 0..2 (data.num_classes=3), got {0: 0, 255: 3}" in _error(
        "data.num_classes=3", "data.label_map={0: 0, 255: 3}")


def test_every_typed_key_refuses_a_value_of_the_wrong_kind_naming_the_key():
    """No key of data/train/infer goes unchecked: a rule or its annotation catches nested garbage."""
    for section in (config.DataConfig, config.TrainConfig, config.InferConfig):
        name = {config.DataConfig: "data", config.TrainConfig: "train", config.InferConfig: "infer"}[section]
        hints = typing.get_type_hints(section)
        for f in dataclasses.fields(section):
            mapping = validate.fits({"k": 1}, hints[f.name])
            garbage = "[[{x: 1}]]" if mapping else "{garbage: [1]}"
            text = _error(f"{name}.{f.name}={garbage}")
            assert text.startswith(f"--set: {name}.{f.name}: expected "), text


def test_annotation_fallback_fits_and_describes_values_as_read_from_yaml():
    assert validate.fits([1, 2], list[int]) and not validate.fits([1, "a"], list[int])
    assert validate.fits({"0": 1, 255: 0}, dict[int, int]) and not validate.fits({"x": 1}, dict[int, int])
    assert validate.fits(None, int | None) and not validate.fits(True, int)
    assert not validate.fits(math.nan, float) and validate.fits(3, float)
    assert validate.fits(["relu", {"inplace": True}], tuple[str, dict[str, typing.Any]])
    assert validate.describe(list[int] | None) == "null or a list of integers"
    assert validate.describe(dict[int, str]) == "a mapping of integers to strings"
    assert validate.describe(list[dict[str, typing.Any]] | None) == "null or a list of mappings"
    assert validate.describe(bool) == "true or false"


def test_task_options_are_typed_by_the_task_and_checked_by_it():
    sr = ["task={name: image, factor: 2, axis: 2}", "data.dims=3", "data.patch_size=[8,8,8]", "model.name=deepresolve",
          "loss.name=mse"]
    assert config.load(None, sr).task["factor"] == 2
    assert "task.factor: expected an integer, got '2'" in _error("task.factor='2'", base=sr)
    assert "task.axis must be in 0..2, got 3" in _error("task.axis=3", base=sr)
    assert "unknown config key 'task.factr'; did you mean 'factor'" in _error("task.factr=2", base=sr)


def test_model_options_are_checked_by_building_the_network():
    assert "model.base_width: expected an integer, got 2.5" in _error("model.base_width=2.5")
    assert "network 'unet' has no option 'base_widht'; did you mean 'base_width'" in _error("model.base_widht=4")
    text = _error("model.padding=bogus")
    assert text.startswith("--set: model: cannot build 'unet'") and "padding must be 'same' or 'valid'" in text
    text = _error("model.depth=-1")  # the constructor's IndexError, as one line
    assert text.startswith("--set: model: cannot build network 'unet' with {") and "IndexError" in text
    text = _error("model.base_width=100000", "model.depth=4")  # 4.8e11 parameters, built on the meta device only
    assert "parameters, more than the cap of 2**31" in text
    assert "model.name: 'vnet' supports (3,)D data, the recipe has data.dims=2" in _error("model.name=vnet")


def test_loss_and_augment_options_are_checked_by_building_and_running_them():
    assert "loss.reduction: 'avg' is not one of" in _error("loss={name: focal, reduction: avg}")
    assert "loss 'dice_ce' has no option 'smoth'; did you mean 'smooth'" in _error("loss={name: dice_ce, smoth: 1}")
    assert "augment.flip.p: must be a number in [0, 1], got 2" in _error("augment={flip: {p: 2}}")
    # axis 2 does not exist in 2D images: found only by running the augmentation on a tiny 2D batch
    assert "augment.flip.axes: [2] invalid for 2-D images" in _error("augment={flip: {axes: [2]}}")


def test_meta_network_counts_the_same_parameters_as_a_real_build_for_every_network():
    """The meta build (no memory, no initialisation) is the real architecture: counts match the CPU build."""
    for name in nets.names():
        entry = nets.info(name)
        dims = entry.dims[0]
        spec = {"name": name, **entry.small}
        meta = validate.meta_network(spec, dims, 1, None)
        assert all(p.device.type == "meta" for p in meta.parameters()), name
        from densemed.build import build_network

        real = build_network(spec, dims, 1, None)
        assert sum(p.numel() for p in meta.parameters()) == sum(p.numel() for p in real.parameters()), name


def test_meta_network_builds_paper_size_networks_without_allocating():
    net = validate.meta_network({"name": "deconvnet"}, 2, 1, 2)
    weight = next(net.parameters())
    assert weight.device.type == "meta" and sum(p.numel() for p in net.parameters()) > 2e8


def test_long_values_are_shown_on_one_shortened_line():
    text = validate.show({"a": "x\ny" * 100})
    assert "\n" not in text and len(text) == 80 and text.endswith("...")
