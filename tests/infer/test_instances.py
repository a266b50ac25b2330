"""Post-processing to instances: each method on synthetic maps with touching objects."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import densemed.nets as nets
from densemed.errors import DensemedError
from densemed.infer.instances import choose_h, detect, head_maps, network_outputs, to_instances
from densemed.metrics.instance import aggregated_jaccard, object_f1
from densemed.targets import contours, distance


@pytest.fixture
def cells() -> np.ndarray:
    """Two touching discs of different size and a small separate one."""
    yy, xx = np.mgrid[:40, :60]
    lab = np.zeros((40, 60), np.int32)
    lab[(yy - 20) ** 2 + (xx - 20) ** 2 <= 144] = 1
    lab[((yy - 20) ** 2 + (xx - 42) ** 2 <= 100) & (lab == 0)] = 2
    lab[(yy - 6) ** 2 + (xx - 52) ** 2 <= 16] = 3
    return lab


def maps(lab: np.ndarray) -> dict[str, np.ndarray]:
    inner, outer = distance.encode(lab)
    return {
        "foreground": (lab > 0).astype(np.float32),
        "contour": contours.encode(lab, thickness=2),
        "inner_distance": inner,
        "outer_distance": outer,
    }


def test_components_merge_touching_objects(cells):
    out = to_instances(maps(cells), "components")
    assert out.max() == 2 and out.dtype == np.int32
    assert object_f1(out, cells)["f1"] == pytest.approx(0.8)  # the merged pair counts once


def test_watershed_methods_split_touching_objects(cells):
    m = maps(cells)
    for method, params in [
        ("watershed", {}),
        ("dcan", {"min_size": 10, "dilate": 2}),
        ("contour_watershed", {}),
        ("deepdistance", {}),
    ]:
        out = to_instances(m, method, **params)
        assert out.max() == 3, method
        assert object_f1(out, cells)["f1"] == 1.0, method
        assert aggregated_jaccard(out, cells) > 0.95, method


def test_deepdistance_without_segmentation_uses_the_outer_map(cells):
    m = maps(cells)
    out = to_instances({"inner_distance": m["inner_distance"], "outer_distance": m["outer_distance"]}, "deepdistance",
                       outer_threshold=0.0)
    assert out.max() == 3 and aggregated_jaccard(out, cells) > 0.99


def test_dcan_removes_small_objects_and_fills_holes():
    fg = np.zeros((20, 20), np.float32)
    fg[2:12, 2:12] = 0.9
    fg[6, 6] = 0.1  # a hole
    fg[16:18, 16:18] = 0.9  # 4 pixels: removed by min_size
    out = to_instances({"foreground": fg, "contour": np.zeros_like(fg)}, "dcan", min_size=10, dilate=0)
    assert out.max() == 1 and out[6, 6] == 1 and out[16, 16] == 0


def test_3d_components_and_dcan():
    lab = np.zeros((6, 10, 10), np.int32)
    lab[1:5, 1:5, 1:5] = 1
    lab[1:5, 5:9, 1:5] = 2
    m = {"foreground": (lab > 0).astype(np.float32), "contour": contours.encode(lab)}
    assert to_instances(m, "components").max() == 1
    assert to_instances(m, "dcan", min_size=1, dilate=2).max() == 2


def test_bad_requests_raise():
    fg = np.zeros((4, 4), np.float32)
    with pytest.raises(DensemedError, match="unknown method"):
        to_instances({"foreground": fg}, "magic")
    with pytest.raises(DensemedError, match="needs the 'contour'"):
        to_instances({"foreground": fg}, "dcan")
    with pytest.raises(DensemedError, match="no option"):
        to_instances({"foreground": fg}, "components", t_o=0.3)
    with pytest.raises(DensemedError, match="different shapes"):
        to_instances({"foreground": fg, "contour": np.zeros((3, 3))}, "dcan")


def test_detect_and_choose_h(cells):
    inner = distance.encode_inner(cells)
    rng = np.random.default_rng(0)
    noisy = inner + (cells > 0) * rng.uniform(0, 0.03, inner.shape)  # spurious shallow maxima
    assert len(detect(inner, h=0.02)) == 3
    assert len(detect(noisy, h=0.0)) > 3
    best, scores = choose_h([noisy], [cells], candidates=(0.0, 0.05))
    assert best == 0.05 and scores[0.05] == 1.0 and scores[0.0] < 1.0


def test_head_maps_activation_and_names():
    logits = torch.zeros(2, 3, 4)
    logits[1] = 2.0
    out = head_maps(
        {"object": [logits, logits], "contour": torch.zeros(1, 3, 4), "inner_distance": torch.ones(1, 3, 4)}
    )
    np.testing.assert_allclose(out["foreground"], 1 / (1 + np.exp(-2.0)), rtol=1e-6)
    np.testing.assert_allclose(out["contour"], 0.5)
    np.testing.assert_allclose(out["inner_distance"], 1.0)


def test_network_outputs_from_multitask_nets_whole_and_windowed():
    torch.manual_seed(0)
    dcan = nets.build("dcan", in_channels=1, out_channels=2, base_width=2, depth=2, fuse_levels=2)
    x = torch.randn(1, 1, 24, 40)
    whole = network_outputs(dcan, x)
    assert set(whole) == {"foreground", "contour"} and whole["foreground"].shape == (24, 40)
    dd = nets.build("deepdistance", in_channels=1, out_channels=2, base_width=2, depth=2)
    win = network_outputs(dd, x, window=(16, 16))
    assert set(win) == {"inner_distance", "outer_distance"} and win["outer_distance"].shape == (24, 40)
    unet = nets.build("unet", in_channels=1, out_channels=2, base_width=2, depth=2)
    assert set(network_outputs(unet, x)) == {"foreground"}


def test_instance_callback_picks_the_method_by_network_and_recipe():
    from types import SimpleNamespace

    from densemed.infer.instances import default_method, instance_callback

    torch.manual_seed(0)
    cfg = SimpleNamespace(
        model={"name": "dcan"},
        data=SimpleNamespace(patch_size=[16, 16]),
        infer=SimpleNamespace(window=None, overlap=0.5, instances={"min_size": 1, "dilate": 0}),
    )
    assert default_method(cfg) == "dcan"
    assert default_method(SimpleNamespace(model={"name": "multitask", "tasks": {"mask": None, "contour": 2}})) == (
        "contour_watershed"
    )
    assert default_method(SimpleNamespace(model={"name": "unet"})) == "watershed"
    net = nets.build("dcan", in_channels=1, out_channels=2, base_width=2, depth=2, fuse_levels=2).eval()
    x = torch.randn(1, 1, 20, 24)
    labels = instance_callback(cfg)(net, x, np.zeros((2, 20, 24), np.float32))
    assert labels.shape == (20, 24) and labels.dtype == np.int32
    # components on the given probabilities: foreground = 1 - background
    probs = np.zeros((2, 20, 24), np.float32)
    probs[0] = 1
    probs[0, 2:6, 2:6] = 0
    probs[0, 10:15, 10:15] = 0
    assert instance_callback(cfg, "components")(net, x, probs).max() == 2
    with pytest.raises(DensemedError, match="unknown method"):
        instance_callback(cfg, "magic")


def test_instance_callback_rejects_a_recipe_typo_early():
    from types import SimpleNamespace

    from densemed.infer.instances import instance_callback

    cfg = SimpleNamespace(model={"name": "dcan"}, data=SimpleNamespace(patch_size=[16, 16]),
                          infer=SimpleNamespace(window=None, overlap=0.5, instances={"method": "dcan", "t0": 0.5}))
    with pytest.raises(DensemedError, match="no option 't0'"):
        instance_callback(cfg)


def test_h_auto_of_an_unfinished_run_predicts_with_the_default_h():
    from types import SimpleNamespace

    import densemed.nets as nets
    from densemed.infer.instances import DEFAULT_H, instance_callback, network_outputs, to_instances

    torch.manual_seed(0)
    net = nets.build("deepdistance", in_channels=1, base_width=4, depth=2, segmentation=True).eval()
    x = torch.randn(1, 1, 24, 24)
    auto = SimpleNamespace(model={"name": "deepdistance"}, data=SimpleNamespace(patch_size=[16, 16]),
                           infer=SimpleNamespace(window=None, overlap=0.5, instances={"h": "auto"}))
    got = instance_callback(auto)(net, x, np.zeros((2, 24, 24), np.float32))
    expected = to_instances(network_outputs(net, x, [16, 16], 0.5), "deepdistance", h=DEFAULT_H)
    np.testing.assert_array_equal(got, expected)
