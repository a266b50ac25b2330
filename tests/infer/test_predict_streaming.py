"""Many files: a corrupt input is skipped and reported (exit 2 at the end), --strict stops, ranks shard."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from densemed import config, nets
from densemed.checkpoint import save_atomic
from densemed.cli import main
from densemed.errors import DensemedError
from densemed.infer.predict import Predictor, shard


@pytest.fixture
def folder(tmp_path):
    """Five inputs, ``c.png`` holding bytes that are no PNG."""
    src = tmp_path / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    for name in "abde":
        Image.fromarray(rng.integers(0, 255, (24, 20)).astype(np.uint8)).save(src / f"{name}.png")
    (src / "c.png").write_bytes(b"\x89PNG not really")
    return src


def _written(out) -> list[str]:
    return sorted(p.name for p in out.iterdir() if not p.name.startswith("."))  # not the run's manifest


def _predictor() -> Predictor:
    cfg = config.load(None, ["model={name: unet, base_width: 2, depth: 2}", "data.patch_size=[16,16]"])
    torch.manual_seed(0)
    return Predictor(nets.build("unet", in_channels=1, out_channels=2, base_width=2, depth=2), cfg)


def test_a_corrupt_input_is_skipped_reported_and_raised_after_the_others(folder, tmp_path):
    lines: list[str] = []
    inputs = sorted(folder.iterdir())
    with pytest.raises(DensemedError, match=r"1 of 5 inputs could not be predicted \(c.png; first: .*c.png"):
        _predictor().predict_paths(inputs, tmp_path / "out", log=lines.append)
    assert _written(tmp_path / "out") == ["a.png", "b.png", "d.png", "e.png"]
    assert [x for x in lines if "skipped" in x] == [x for x in lines if x.startswith("c.png: skipped (")]
    assert len(lines) == 5


def test_strict_stops_at_the_first_corrupt_input(folder, tmp_path):
    with pytest.raises(DensemedError, match="c.png"):
        _predictor().predict_paths(sorted(folder.iterdir()), tmp_path / "out", log=lambda s: None, strict=True)
    assert _written(tmp_path / "out") == ["a.png", "b.png"]


def test_ranks_take_every_world_th_input(monkeypatch):
    items = list(range(7))
    assert shard(items) == items
    monkeypatch.setenv("WORLD_SIZE", "3")
    got = []
    for r in range(3):
        monkeypatch.setenv("RANK", str(r))
        got.append(shard(items))
    assert got == [[0, 3, 6], [1, 4], [2, 5]]


def test_cli_writes_the_readable_inputs_and_exits_2(folder, tmp_path, capsys):
    p = _predictor()
    ckpt = {"format": 2, "config": p.cfg.to_dict(), "net": "unet", "in_channels": 1,
            "networks": {"model": p.model.state_dict()}}
    save_atomic(ckpt, tmp_path / "best.pt")
    argv = ["predict", "--checkpoint", str(tmp_path / "best.pt"), "--input", str(folder), "--device", "cpu"]
    assert main([*argv, "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("densemed: error: 1 of 5 inputs could not be predicted")
    assert len(_written(tmp_path / "out")) == 4
    assert main([*argv, "--output", str(tmp_path / "strict"), "--strict"]) == 2
    assert len(_written(tmp_path / "strict")) == 2
