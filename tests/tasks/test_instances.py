"""The instances task: targets, augmentation modes, post-processing choice, after-fit tuning."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from densemed import config, nets, tasks
from densemed.errors import DensemedError
from densemed.tasks.base import FitContext


def _cfg(*extra):
    return config.load(None, ["task={name: instances}", "model={name: dcan, base_width: 2, depth: 2, fuse_levels: 2}",
                              "data.patch_size=[16,16]", *extra])


def test_postprocess_method_comes_from_the_recipe_then_the_network_declaration():
    dcan = nets.build("dcan", in_channels=1, out_channels=2, base_width=2, depth=2, fuse_levels=2)
    task = tasks.build(_cfg())
    assert task.postprocess_spec(dcan, None) == ("dcan", {})  # DCAN declares default_instances
    multi = nets.build("multitask", in_channels=1, out_channels=2, base_width=2, depth=1,
                       tasks={"mask": None, "contour": 2})
    assert task.postprocess_spec(multi, None)[0] == "contour_watershed"  # by its contour head
    unet = nets.build("unet", in_channels=1, out_channels=2, base_width=2, depth=1)
    assert task.postprocess_spec(unet, None)[0] == "watershed"
    recipe = tasks.build(_cfg("task.postprocess={method: dcan, min_size: 5}"))
    assert recipe.postprocess_spec(dcan, None) == ("dcan", {"min_size": 5})
    # the flag overrides the recipe's method, and the recipe's options belong to its own method
    assert recipe.postprocess_spec(dcan, "components") == ("components", {})


def test_a_postprocess_typo_is_refused_when_the_recipe_loads():
    with pytest.raises(DensemedError, match="method 'dcan' has no option 't0'; did you mean 't_o'"):
        _cfg("task.postprocess={method: dcan, t0: 0.5}")


def test_targets_declare_how_augmentation_treats_them():
    task = tasks.build(_cfg("task.targets={c: {name: contour}, d: {name: inner_distance}}"))
    assert task.nearest_keys() == frozenset()  # both scalar maps, resampled linearly
    from densemed.targets import augment_mode, register

    register("_test_refusing", augment="refuse")(lambda instances, spacing=None: instances.astype(np.float32))
    assert augment_mode("_test_refusing") == "refuse"
    with pytest.raises(DensemedError, match="cannot follow geometric augmentation"):
        _cfg("task.targets={r: {name: _test_refusing}}", "augment={flip: {p: 0.5}}")
    _cfg("task.targets={r: {name: _test_refusing}}", "augment={noise: {p: 0.5}}")  # intensity only: fine


def test_after_fit_tunes_h_to_the_value_known_by_construction(monkeypatch):
    # three cells whose "inner distance" is a shallow cone 1 - 0.005 r (r from the centre) plus noise
    # in [0, 0.045): along the straight path to the centre the map never drops more than 0.045 below
    # any point, so every spurious maximum has a dynamic under 0.045 and the true peaks one of ~1.
    # h = 0.05 is the smallest candidate that keeps exactly the three true markers (ties go to the
    # smaller h), while h = 0.01 and 0.02 keep spurious ones: the tuner must choose 0.05.
    from densemed.data.dataset import Case

    yy, xx = np.mgrid[:40, :60]
    lab = np.zeros((40, 60), np.int32)
    inner = np.zeros((40, 60))
    for i, (cy, cx) in enumerate([(12, 12), (25, 40), (30, 15)], start=1):
        r = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
        lab[r <= 8] = i
        inner[r <= 8] = 1 - 0.005 * r[r <= 8]
    inner += (lab > 0) * np.random.default_rng(0).uniform(0, 0.045, lab.shape)
    import densemed.tasks.instances as inst

    monkeypatch.setattr(inst, "network_outputs", lambda *a, **k: {"inner_distance": inner,
                                                                 "foreground": (lab > 0).astype(np.float32)})
    cfg = config.load(None, ["task={name: instances, postprocess: {method: deepdistance, h: auto}}",
                             "model={name: deepdistance, base_width: 2, depth: 1, segmentation: true}",
                             "data.patch_size=[16,16]"])
    model = nets.build("deepdistance", in_channels=1, base_width=2, depth=1, segmentation=True)
    case = Case("c", np.zeros((1, 40, 60), np.float32), (lab > 0).astype(np.int64), {}, None, lab)
    updates = tasks.build(cfg).after_fit(FitContext(None, model, [case], torch.device("cpu"), lambda s: None))
    assert updates["postprocess"]["h"] == 0.05
    assert updates["_scores"]["0.05"] == 1.0 and max(updates["_scores"]["0.01"], updates["_scores"]["0.02"]) < 1.0


def test_seams_clear_the_contact_in_the_class_and_weight_targets_but_not_the_scored_ids():
    lab = np.zeros((12, 16), np.int32)
    lab[2:10, 2:8], lab[2:10, 8:14] = 1, 2  # two touching blocks, no background between them
    spec = "task.targets={w: {name: border_weights, w0: 10.0, sigma: 5.0}}"
    plain = tasks.build(_cfg(spec)).synthetic_case("c", np.zeros((1, 12, 16), np.float32), lab)
    cut = tasks.build(_cfg(spec, "task.seams=1")).synthetic_case("c", np.zeros((1, 12, 16), np.float32), lab)
    np.testing.assert_array_equal(plain.label, lab > 0)
    assert (cut.label[2:10, 7:9] == 0).all() and cut.label.sum() == plain.label.sum() - 16
    np.testing.assert_array_equal(cut.instances, lab)  # validation and tuning compare with the truth
    # column 7 of the seam is background 1 px from block 1 (now ending at column 6) and 2 px from
    # block 2 (now starting at column 9): w = 1 + 10 exp(-(1 + 2)^2 / (2 * 5^2))
    np.testing.assert_allclose(cut.maps["w"][0, 5, 7], 1 + 10 * np.exp(-9 / 50), rtol=1e-5)
    assert plain.maps["w"][0, 5, 7] == 1.0  # without seams the contact is foreground with no border term


def test_a_negative_or_fractional_seam_width_is_refused():
    with pytest.raises(DensemedError, match="task.seams must be a whole number of pixels >= 0, got -1"):
        _cfg("task.seams=-1")
    with pytest.raises(DensemedError, match="task.seams: expected an integer, got 1.5"):
        _cfg("task.seams=1.5")
