"""Checkpoint files: truncated, foreign and mismatched files give one clear line."""

from __future__ import annotations

import pytest
import torch

from densemed.checkpoint import load, load_state, network_state, save_atomic
from densemed.errors import DensemedError


def test_a_truncated_checkpoint_is_reported_with_its_path(tmp_path):
    path = tmp_path / "last.pt"
    save_atomic({"config": {}, "networks": {"model": {"w": torch.ones(100)}}}, path)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(DensemedError, match=rf"{path}: cannot read checkpoint"):
        load(path)


def test_a_foreign_torch_file_is_not_a_checkpoint(tmp_path):
    torch.save({"state_dict": {"w": torch.ones(2)}}, tmp_path / "other.pt")
    with pytest.raises(DensemedError, match="not a densemed checkpoint"):
        load(tmp_path / "other.pt")
    (tmp_path / "text.pt").write_text("hello")
    with pytest.raises(DensemedError, match="cannot read checkpoint"):
        load(tmp_path / "text.pt")


def test_a_run_folder_loads_best_then_last(tmp_path):
    save_atomic({"config": {}, "model": {"w": torch.zeros(1)}}, tmp_path / "last.pt")
    assert network_state(load(tmp_path))["w"].item() == 0
    save_atomic({"config": {}, "networks": {"model": {"w": torch.ones(1)}}}, tmp_path / "best.pt")
    assert network_state(load(tmp_path))["w"].item() == 1


def test_weights_of_another_architecture_name_both(tmp_path):
    net = torch.nn.Linear(2, 2)
    with pytest.raises(DensemedError, match="holds a 'fcn8s' network, but the recipe builds 'unet'"):
        load_state(net, net.state_dict(), tmp_path / "x.pt", "unet", "fcn8s")
    with pytest.raises(DensemedError, match="weights do not fit the 'unet' network"):
        load_state(net, {"weight": torch.zeros(3, 3)}, tmp_path / "x.pt", "unet", "unet")
