"""The supervised training module: optimisers, clipping, mixed precision, state round trip."""

from __future__ import annotations

import copy

import pytest
import torch

from densemed import config, tasks
from densemed.build import build_loss, build_model
from densemed.train.module import SupervisedModule


def _module(*overrides):
    cfg = config.load(None, ["model={name: unet, base_width: 2, depth: 1}", "data.patch_size=[8,8]", *overrides])
    torch.manual_seed(0)
    model = build_model(cfg, 1)
    return SupervisedModule(tasks.build(cfg), model, build_loss(cfg), cfg.train, torch.device("cpu")), cfg


def _batch():
    g = torch.Generator().manual_seed(1)
    return {"image": torch.randn(2, 1, 8, 8, generator=g), "label": (torch.rand(2, 1, 8, 8, generator=g) > 0.5).long()}


@pytest.mark.parametrize(("name", "cls"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW),
                                           ("sgd", torch.optim.SGD)])
def test_the_recipe_names_the_optimizer(name, cls):
    module, _ = _module(f"train.optimizer={name}", "train.weight_decay=0.01", "train.momentum=0.9")
    opt = module.optimizers["model"]
    assert type(opt) is cls and opt.param_groups[0]["weight_decay"] == 0.01
    if name == "sgd":
        assert opt.param_groups[0]["momentum"] == 0.9 and opt.param_groups[0]["nesterov"]


def test_grad_clip_bounds_the_first_sgd_update():
    # plain SGD with Nesterov momentum m: the first update is lr * (1 + m) * g, so with the gradient
    # clipped to norm c the weights move by at most lr * (1 + m) * c
    module, _ = _module("train.optimizer=sgd", "train.lr=1.0", "train.momentum=0.5", "train.grad_clip=0.001",
                        "train.scheduler=none")
    module.set_total_steps(10)
    before = [p.detach().clone() for p in module.model.parameters()]
    module.train_step(_batch())
    moved = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(module.model.parameters(), before)))
    assert 0 < moved <= 1.5 * 0.001 * (1 + 1e-5)
    unclipped, _ = _module("train.optimizer=sgd", "train.lr=1.0", "train.momentum=0.5", "train.scheduler=none")
    before = [p.detach().clone() for p in unclipped.model.parameters()]
    unclipped.train_step(_batch())
    moved_free = torch.sqrt(sum(((p.detach() - b) ** 2).sum() for p, b in zip(unclipped.model.parameters(), before)))
    assert moved_free > 10 * moved  # the bound above is the clipping's doing


def test_amp_uses_bfloat16_on_the_cpu_without_a_scaler_and_computes_the_loss_in_float32():
    module, _ = _module("train.amp=true")
    assert module.amp_dtype == torch.bfloat16 and not module.scaler.is_enabled()
    seen = {}
    loss_fn = module.loss_fn

    def spy(out, target, **kw):
        seen["dtype"] = out.dtype
        return loss_fn(out, target, **kw)

    module.loss_fn = spy
    rec = module.train_step(_batch())
    assert seen["dtype"] == torch.float32 and torch.isfinite(torch.tensor(rec["loss"]))


def test_fp16_training_gets_a_gradient_scaler(monkeypatch):
    import densemed.train.module as mod

    monkeypatch.setattr(mod, "amp_dtype", lambda amp, device: torch.float16)
    module, _ = _module("train.amp=true")
    assert module.scaler.is_enabled() and module.amp_dtype == torch.float16
    rec = module.train_step(_batch())
    assert torch.isfinite(torch.tensor(rec["loss"])) and module.scaler.get_scale() > 0


def test_state_dict_round_trip_continues_identically():
    a, _ = _module()
    a.set_total_steps(4)
    a.train_step(_batch())
    state = copy.deepcopy(a.state_dict())  # as torch.save would: no tensors shared with the live module
    b, _ = _module()
    b.load_state_dict(state)
    a.train_step(_batch())
    b.train_step(_batch())
    for (n, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=n)
    assert a.lr() == b.lr() and a.step == b.step == 2


@pytest.mark.parametrize("dims", [2, 3])
def test_channels_last_stores_conv_weights_nhwc_and_trains_like_the_default_layout(dims):
    shape = "[8,8]" if dims == 2 else "[8,8,8]"
    fmt = torch.channels_last if dims == 2 else torch.channels_last_3d
    runs = {}
    for cl in (False, True):
        module, _ = _module(f"data.dims={dims}", f"data.patch_size={shape}", f"train.channels_last={str(cl).lower()}")
        convs = [p for p in module.model.parameters() if p.dim() == dims + 2]
        if cl:  # every conv weight NHWC, and (channels > 1) no longer in the default order
            assert convs and all(p.is_contiguous(memory_format=fmt) for p in convs)
            assert any(not p.is_contiguous() for p in convs)
        else:
            assert all(p.is_contiguous() for p in convs)
        g = torch.Generator().manual_seed(1)
        size = (2, 1) + (8,) * dims
        batch = {"image": torch.randn(*size, generator=g), "label": (torch.rand(*size, generator=g) > 0.5).long()}
        runs[cl] = [module.train_step(batch)["loss"] for _ in range(3)]
    # the same arithmetic in another memory order: equal up to float summation order
    assert runs[True] == pytest.approx(runs[False], rel=1e-4)
