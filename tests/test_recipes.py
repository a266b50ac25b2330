"""Every recipe in configs/ trains for a few steps through the CLI on its real dataset (small widths)."""

import json
from pathlib import Path

import pytest

from densemed import config, nets
from densemed.cli import main
from densemed.data.io import is_supported, split_name

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("recipe", CONFIGS, ids=lambda p: p.stem)
def test_recipe_trains_briefly_through_the_cli(recipe, real_data, tmp_path):
    cfg = config.load(recipe)
    root = real_data / cfg.data.root
    if not root.is_dir():
        pytest.skip(f"{root} not present")
    stems = sorted(split_name(p)[0] for p in (root / cfg.data.image_dir).iterdir() if is_supported(p))[:3]
    patch = [64, 64] if cfg.data.dims == 2 else [24, 24, 24]
    small = [f"model.{k}={json.dumps(v)}" for k, v in nets.info(cfg.model["name"]).small.items()]
    if cfg.model["name"] == "slicewise":  # the recipe's own 2D network, at its small size
        inner = cfg.model.get("net", {}).get("name", "unet")
        small = [f"model.net.{k}={json.dumps(v)}" for k, v in nets.info(inner).small.items()]
    out = tmp_path / "run"
    assert main([
        "train", str(recipe), "--set", f"data.root={root}", f"train.out={out}", "train.epochs=1",
        "train.progress=false", "data.samples_per_epoch=2", "data.batch_size=2", f"data.patch_size={patch}",
        f"data.train_files={stems[:-1]}", f"data.val_files={stems[-1:]}", "infer.overlap=0",
        f"infer.window={[64] * cfg.data.dims}", *small,
    ]) == 0
    rec = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert len(rec) == 1 and rec[0]["train_loss"] > 0 and "val_loss" in rec[0]
    assert (out / "best.pt").is_file() and config.load(out / "config.yaml").model["name"] == cfg.model["name"]
