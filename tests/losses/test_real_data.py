"""A few optimisation steps on a real image with every loss decrease that loss (slow marker)."""

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import densemed.losses as losses

pytestmark = pytest.mark.slow


class TwoHeads(nn.Module):
    """A tiny conv net with two heads: stage 1/2 for AttentionBoost, full/half size for deep supervision."""

    def __init__(self, out_channels):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()
        )
        self.head1 = nn.Conv2d(8, out_channels, 1)
        self.head2 = nn.Conv2d(8 + out_channels, out_channels, 3, padding=1)

    def forward(self, x):
        f = self.body(x)
        s1 = self.head1(f)
        return [s1, self.head2(torch.cat([f, s1], 1))]


def crop(root, dataset, size=48, name=None):
    name = name or sorted((root / dataset / "images").iterdir())[0].name
    img = np.asarray(Image.open(root / dataset / "images" / name).convert("L"), np.float32)[:size, :size]
    lab = np.asarray(Image.open(root / dataset / "labels" / name))[:size, :size]
    img = (img - img.mean()) / (img.std() + 1e-6)
    return torch.from_numpy(img)[None, None], lab


def fit(loss, out_channels, image, target, weights=None, kind="plain", steps=20):
    torch.manual_seed(0)
    net = TwoHeads(out_channels)
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    values = []
    for _ in range(steps):
        s1, s2 = net(image)
        if kind == "stages":
            out = [s1, s2]
        elif kind == "levels":
            out = [s2, nn.functional.avg_pool2d(s1, 2)]
        else:
            out = s2
        value = loss(out, target, weights=weights)
        opt.zero_grad()
        value.backward()
        opt.step()
        values.append(value.item())
    return values


CASES = [
    ("bce", {}, 1, "plain"), ("ce", {}, 2, "plain"),
    ("weighted_ce", {"class_weights": [0.6, 2.5]}, 2, "plain"),
    ("dice", {}, 2, "plain"), ("dice_ce", {}, 2, "plain"), ("generalized_dice", {}, 2, "plain"),
    ("focal", {"gamma": 2.0, "alpha": 0.75}, 1, "plain"),
    ("tversky", {"alpha": 0.3, "beta": 0.7}, 1, "plain"),
    ("attentionboost", {}, 2, "stages"),
    ("compound", {"terms": [{"name": "dice"}, {"name": "focal", "weight": 2}]}, 2, "plain"),
    ("deep_supervision", {"loss": {"name": "dice_ce"}, "weights": [1, 0.5]}, 2, "levels"),
]


@pytest.mark.parametrize("name,params,channels,kind", CASES, ids=[c[0] for c in CASES])
def test_short_training_on_isbi2012_decreases_the_loss(real_data, name, params, channels, kind):
    image, lab = crop(real_data, "isbi2012_em")
    target = torch.from_numpy((lab == 0).astype(np.int64))[None, None]  # membrane = 0 in the files
    values = fit(losses.build(name, **params), channels, image, target, kind=kind)
    assert np.isfinite(values).all()
    assert min(values[-5:]) < 0.8 * values[0], values


def test_border_weighted_ce_on_dsb2018_nuclei_decreases_the_loss(real_data):
    import csv

    with open(real_data / "dsb2018_nuclei" / "meta.csv") as f:
        rows = [r for r in csv.DictReader(f) if r["group"] == "fluorescence" and r["height"] == "256"]
    name = max(rows, key=lambda r: int(r["n_nuclei"]))["id"] + ".png"
    image, lab = crop(real_data, "dsb2018_nuclei", size=64, name=name)
    weights = torch.from_numpy(losses.border_weight_map(lab.astype(np.int32)))[None, None]
    assert weights.max() > 2  # touching nuclei: some gap pixels are heavily weighted
    target = torch.from_numpy((lab > 0).astype(np.int64))[None, None]
    values = fit(losses.build("weighted_ce"), 2, image, target, weights=weights)
    assert min(values[-5:]) < 0.8 * values[0], values
