"""FourierNet end to end through the console script: train -> predict --instances -> evaluate --task instances.

The recipe is configs/fouriernet_glas.yaml itself (the fourier descriptor target, the foreground
weights of the masked MSE, the multi-task loss, the components post-processing), pointed at a tiny
generated dataset of bright ellipses on a dark background, with the network at its ``small`` size.
"""

import json
from pathlib import Path

import numpy as np
from PIL import Image

from densemed import config
from densemed.cli import main
from densemed.data.io import read_label, write_label
from densemed.metrics.shape import descriptor_error, match_objects

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "fouriernet_glas.yaml"


def _ellipses(root: Path, n: int = 6, size: int = 48) -> Path:
    """``n`` images with two separated ellipses (ids 1, 2; ``instances/`` as in glas_gland)."""
    (root / "images").mkdir(parents=True)
    (root / "instances").mkdir()
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        inst = np.zeros((size, size), np.uint16)
        for k, cx in enumerate((12, 36)):
            ry, rx = rng.uniform(6, 10), rng.uniform(4, 8)
            inst[((yy - 24) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1] = k + 1
        img = 40 + 160 * (inst > 0) + rng.normal(0, 10, inst.shape)
        Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(root / "images" / f"c{i}.png")
        write_label(root / "instances" / f"c{i}.png", inst)
    return root


def test_fouriernet_recipe_trains_predicts_instances_and_reports_a_finite_descriptor_error(tmp_path, capsys):
    root = _ellipses(tmp_path / "data")
    run = tmp_path / "run"
    # instance norm: after a handful of steps batch norm's running statistics are still mostly
    # their initial values, which would make the eval-mode prediction a coin toss
    assert main(["train", str(RECIPE), "--set", f"data.root={root}", f"train.out={run}", "train.epochs=1",
                 "train.progress=false", "data.patch_size=[48,48]", "data.samples_per_epoch=16", "data.batch_size=4",
                 "train.lr=0.01", "train.scheduler=none", "model.base_width=4", "model.depth=2", "model.n_harmonics=4",
                 "model.norm=instance", "task.targets.descriptors.n_harmonics=4", "infer.overlap=0",
                 "task.postprocess={method: components, min_size: 20}"]) == 0
    cfg = config.load(run / "config.yaml")
    assert cfg.model["name"] == "fouriernet" and set(cfg.loss["tasks"]) == {"segmentation", "descriptors"}
    terms = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])["val_terms"]
    assert set(terms) == {"segmentation", "descriptors"} and all(np.isfinite(v) and v > 0 for v in terms.values())

    pred = tmp_path / "pred"
    assert main(["predict", "--checkpoint", str(run / "best.pt"), "--input", str(root / "images"),
                 "--output", str(pred), "--instances"]) == 0
    assert sorted(p.name for p in pred.iterdir()) == [f"c{i}.png" for i in range(6)]

    capsys.readouterr()
    assert main(["evaluate", "--task", "instances", "--pred", str(pred), "--truth", str(root / "instances"),
                 "--json", str(tmp_path / "scores.json")]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert "descriptor_error" in header and "object_dice" in header and "object_hausdorff" in header
    result = json.loads((tmp_path / "scores.json").read_text())
    assert "descriptor_error" in result["metrics"]
    mean = result["mean"]["descriptor_error"]
    assert mean is not None and np.isfinite(mean) and 0 <= mean < 1
    # the column is the shape score of the written maps, recomputed here from the files
    first = result["images"][0]
    p, _ = read_label(pred / f"{first['name']}.png")
    t, _ = read_label(root / "instances" / f"{first['name']}.png")
    expected = descriptor_error(p.astype(np.int64), t.astype(np.int64), match_objects(p, t))
    np.testing.assert_allclose(first["descriptor_error"], expected, equal_nan=True)
