"""The network contract, checked for every registered network at its ``small`` preset.

For each ``densemed.nets.names()`` and each of its ``dims``: the network declares its heads
(:mod:`densemed.nets.heads`); in eval mode it returns one tensor, its main head, with the declared
channels and (for a dense head) the input's exact spatial size for odd sizes, no NaNs; in training
mode every declared head is present; every parameter receives a gradient (every output used);
eval mode is deterministic. Networks that take more than the image (``inputs``) get example
tensors from their ``example_inputs(image)``. Plus the registry's own behaviour.
"""

from __future__ import annotations

import inspect

import pytest
import torch

import densemed.nets as nets
from densemed.errors import DensemedError
from densemed.nets.heads import KINDS, head_outputs, heads_of, main_head, model_inputs

SIZES = {2: [(97, 131), (300, 200)], 3: [(19, 23, 17)]}
CASES = [(name, d) for name in nets.names() for d in nets.info(name).dims]


def _build(name: str, dims: int, in_channels: int = 1, out_channels: int = 2) -> torch.nn.Module:
    entry = nets.info(name)
    kw = dict(entry.small)
    kw.update(in_channels=in_channels, out_channels=out_channels)
    if "dims" in inspect.signature(entry.builder).parameters:
        kw["dims"] = dims
    torch.manual_seed(0)
    return nets.build(name, **kw)


def _forward(net: torch.nn.Module, image: torch.Tensor) -> object:
    """Call ``net`` with the inputs it declares (extra ones from its ``example_inputs``)."""
    keys = model_inputs(net)
    extra = net.example_inputs(image) if len(keys) > 1 else {}
    return net(*[image if k == "image" else extra[k] for k in keys])


def _tensors(out: object) -> list[torch.Tensor]:
    """Every tensor in a network output: tensor, list, or dict of those."""
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        return [t for v in out.values() for t in _tensors(v)]
    if isinstance(out, (list, tuple)):
        return [t for v in out for t in _tensors(v)]
    raise TypeError(f"unexpected output type {type(out)}")


@pytest.mark.parametrize(("name", "dims"), CASES)
def test_network_declares_its_heads_and_inputs(name, dims):
    net = _build(name, dims)
    heads = heads_of(net)
    assert heads and main_head(net) in heads
    assert all(h.kind in KINDS and h.channels >= 1 for h in heads.values())
    assert model_inputs(net)[0] == "image"


@pytest.mark.parametrize(("name", "dims"), CASES)
def test_eval_output_is_the_main_head_of_input_size_without_nans(name, dims):
    net = _build(name, dims, in_channels=2, out_channels=3).eval()
    head = heads_of(net)[main_head(net)]
    for size in SIZES[dims]:
        with torch.no_grad():
            y = _forward(net, torch.randn(1, 2, *size))
        assert isinstance(y, torch.Tensor), f"{name}: eval mode must return one tensor"
        assert y.shape[:2] == (1, head.channels)
        if head.dense:
            assert tuple(y.shape[2:]) == tuple(size)
        assert torch.isfinite(y).all()


@pytest.mark.parametrize(("name", "dims"), CASES)
def test_training_output_holds_every_declared_head_with_its_channels(name, dims):
    net = _build(name, dims).train()
    size = SIZES[dims][0]
    outs = head_outputs(net, _forward(net, torch.randn(2, 1, *size)))
    heads = heads_of(net)
    assert set(outs) == set(heads)
    for key, t in outs.items():
        assert t.shape[1] == heads[key].channels, key
        if heads[key].dense:
            assert tuple(t.shape[2:]) == tuple(size), key


@pytest.mark.parametrize(("name", "dims"), CASES)
def test_every_parameter_gets_a_gradient(name, dims):
    net = _build(name, dims).train()
    size = SIZES[dims][0]
    out = _forward(net, torch.randn(2, 1, *size))
    loss = sum(t.float().mean() for t in _tensors(out))
    loss.backward()
    missing = [n for n, p in net.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"{name}: no gradient for {missing[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in net.parameters() if p.grad is not None)


@pytest.mark.parametrize(("name", "dims"), CASES)
def test_eval_is_deterministic(name, dims):
    net = _build(name, dims).eval()
    x = torch.randn(1, 1, *SIZES[dims][0])
    with torch.no_grad():
        torch.testing.assert_close(_forward(net, x), _forward(net, x), rtol=0, atol=0)


def test_unknown_name_raises_with_closest_match():
    with pytest.raises(DensemedError, match="did you mean 'fcn8s'"):
        nets.build("fcn8")
    with pytest.raises(DensemedError, match="unknown network 'zzz'"):
        nets.info("zzz")


def test_unknown_option_raises_with_closest_match():
    with pytest.raises(DensemedError, match="did you mean 'base_width'"):
        nets.build("fcn8s", base_widht=8)


def test_duplicate_registration_raises_and_keeps_the_original():
    original = nets.info("unet").builder
    with pytest.raises(ValueError, match="registered twice"):
        nets.register("unet")(lambda **kw: torch.nn.Identity())
    assert nets.info("unet").builder is original


def test_every_network_has_a_summary_and_supported_dims():
    for name in nets.names():
        entry = nets.info(name)
        assert entry.summary, f"{name}: builder needs a docstring"
        assert set(entry.dims) <= {2, 3} and entry.dims


@pytest.mark.gpu
@pytest.mark.parametrize(("name", "dims"), CASES)
def test_cuda_output_equals_cpu_output(name, dims, cuda_exact):
    net = _build(name, dims).eval()
    x = torch.randn(1, 1, *SIZES[dims][0])
    keys = model_inputs(net)
    args = [x if k == "image" else net.example_inputs(x)[k] for k in keys]
    with torch.no_grad():
        cpu = net(*args)
        gpu = net.to(cuda_exact)(*[a.to(cuda_exact) for a in args]).cpu()
    torch.testing.assert_close(gpu, cpu, atol=1e-4, rtol=1e-4)
