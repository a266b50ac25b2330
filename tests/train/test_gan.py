"""The GAN training module: one D step then one G step, as pix2pix's objective computed by hand."""

import copy

import pytest
import torch

from densemed.config import TrainConfig
from densemed.losses.adversarial import LeastSquaresGANLoss, NonSaturatingGANLoss
from densemed.nets.patchgan import PatchGAN
from densemed.nets.pix2pix import Pix2PixGenerator
from densemed.train.gan import GANModule


def _nets(dropout: float = 0.0):
    torch.manual_seed(0)
    g = Pix2PixGenerator(2, 1, depth=3, base_width=4, max_width=8, dropout=dropout)
    d = PatchGAN(3, base_width=4, n_layers=1)
    return g, d


def _batch():
    gen = torch.Generator().manual_seed(1)
    cond = (torch.rand(2, 1, 24, 24, generator=gen) > 0.5).float()
    return {"image": torch.cat([1 - cond, cond], 1), "target": torch.randn(2, 1, 24, 24, generator=gen)}


def test_train_step_equals_the_pix2pix_alternation_computed_by_hand():
    g, d = _nets()
    ref_g, ref_d = copy.deepcopy(g), copy.deepcopy(d)
    t = TrainConfig(lr=1e-3, scheduler="none")
    adv = NonSaturatingGANLoss()
    module = GANModule(g, d, adv, t, torch.device("cpu"), lambda_l1=100.0)
    batch = _batch()
    module.train_step(batch)

    # the reference: D step on (real, detached fake), then G step against the updated D
    opt_g = torch.optim.Adam(ref_g.parameters(), lr=1e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(ref_d.parameters(), lr=1e-3, betas=(0.5, 0.999))
    s, x = batch["image"], batch["target"]
    y = ref_g(s)
    d_real, d_fake = ref_d(torch.cat([s, x], 1)), ref_d(torch.cat([s, y.detach()], 1))
    loss_d = 0.5 * (torch.nn.functional.softplus(-d_real).mean() + torch.nn.functional.softplus(d_fake).mean())
    opt_d.zero_grad()
    loss_d.backward()
    opt_d.step()
    loss_g = torch.nn.functional.softplus(-ref_d(torch.cat([s, y], 1))).mean() + 100.0 * (y - x).abs().mean()
    opt_g.zero_grad()
    loss_g.backward()
    opt_g.step()

    for a, b in zip(d.parameters(), ref_d.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    for a, b in zip(g.parameters(), ref_g.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-7)
    assert module.step == 1
    assert all(p.requires_grad for p in d.parameters())  # unfrozen after the G step


def test_one_step_changes_both_networks_and_reports_the_terms():
    g, d = _nets(dropout=0.5)
    before_g = [p.detach().clone() for p in g.parameters()]
    before_d = [p.detach().clone() for p in d.parameters()]
    module = GANModule(g, d, LeastSquaresGANLoss(), TrainConfig(lr=1e-3), torch.device("cpu"), feature_matching=10.0,
                       diffaugment=["color", "translation", "cutout"])
    rec = module.train_step(_batch())
    assert all(not torch.equal(a, b) for a, b in zip(before_g, g.parameters()))
    assert all(not torch.equal(a, b) for a, b in zip(before_d, d.parameters()))
    assert set(rec) == {"loss", "term_g_adv", "term_g_l1", "term_g_fm", "term_d_loss"}
    assert rec["loss"] == pytest.approx(rec["term_g_adv"] + 100 * rec["term_g_l1"] + 10 * rec["term_g_fm"], rel=1e-5)


def test_one_step_lowers_the_generators_l1_on_a_fixed_batch():
    g, d = _nets()
    batch = _batch()
    module = GANModule(g, d, LeastSquaresGANLoss(), TrainConfig(lr=1e-3), torch.device("cpu"))

    def l1() -> float:
        g.eval()
        with torch.no_grad():
            return float((g(batch["image"]) - batch["target"]).abs().mean())

    first = l1()
    module.train()
    module.train_step(batch)
    assert l1() < first


def test_same_global_seed_gives_the_same_step_with_dropout_and_diffaugment():
    outs = []
    for _ in range(2):
        g, d = _nets(dropout=0.5)
        module = GANModule(g, d, LeastSquaresGANLoss(), TrainConfig(), torch.device("cpu"), diffaugment=["translation"])
        torch.manual_seed(7)  # the loop reseeds torch's generator before every step
        outs.append((module.train_step(_batch()), [p.detach().clone() for p in g.parameters()]))
    assert outs[0][0] == outs[1][0]
    assert all(torch.equal(a, b) for a, b in zip(outs[0][1], outs[1][1]))


def test_discriminator_learning_rate_and_betas_are_the_recipes():
    g, d = _nets()
    module = GANModule(g, d, LeastSquaresGANLoss(), TrainConfig(lr=2e-4, scheduler="none"), torch.device("cpu"),
                       betas=(0.5, 0.9), lr_d=1e-4)
    assert module.optimizers["model"].param_groups[0]["lr"] == pytest.approx(2e-4)
    assert module.optimizers["discriminator"].param_groups[0]["lr"] == pytest.approx(1e-4)
    assert module.optimizers["discriminator"].param_groups[0]["betas"] == (0.5, 0.9)


def test_a_nonfinite_loss_raises_floating_point_error():
    g, d = _nets()
    module = GANModule(g, d, LeastSquaresGANLoss(), TrainConfig(), torch.device("cpu"))
    batch = _batch()
    batch["target"][0, 0, 0, 0] = float("nan")
    with pytest.raises(FloatingPointError):
        module.train_step(batch)
