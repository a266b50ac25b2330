"""The conditional-GAN training module: a generator and a PatchGAN discriminator, alternating steps.

pix2pix (Isola, Zhu, Zhou, Efros, CVPR 2017; arXiv 1611.07004), Eq. 4, with a condition ``s``
(label channels), a real image ``x`` and the generated ``G(s)``::

    G* = arg min_G max_D  L_GAN(G, D) + lambda_L1 E[ ||x - G(s)||_1 ]

Each :meth:`GANModule.train_step` on a batch ``(s, x)`` does, in the paper's order, one gradient
step of ``D`` and then one of ``G`` (Goodfellow et al.'s alternation with ``k = 1``):

1. ``y = G(s)`` (dropout active: pix2pix's noise);
2. **D step**: ``L_D = (f(D(s, x), real) + f(D(s, y.detach()), fake)) / 2`` with the recipe's
   adversarial loss (:mod:`densemed.losses.adversarial`; the halving is pix2pix's);
3. **G step**: ``L_G = f(D(s, y), real) + lambda_L1 mean|y - x| + lambda_FM L_FM``, where
   ``L_FM`` is pix2pixHD's feature matching (Wang et al., CVPR 2018, Eq. 4) between ``D``'s
   hidden activations on ``(s, x)`` and on ``(s, y)``; ``D``'s weights are frozen during the G
   step (no gradient is computed for them).

With DiffAugment (Zhao et al., NeurIPS 2020) ``D`` sees ``T(s, x)`` and ``T(s, y)`` in both
steps; one transform ``T`` is drawn per step and applied to the real and the generated pair alike
(:mod:`densemed.augment.diffaugment`), and the L1 term is on the unaugmented images. ``T`` is drawn
from a CPU generator seeded from torch's global generator, which the loop reseeds every step, so
a resumed run draws the same transforms.

Optimisers: Adam with ``betas = (0.5, 0.999)`` for both networks (pix2pix's), learning rates
``train.lr`` (G) and ``task.lr_d`` (D, default ``train.lr``), each with the loop's step schedule.
The loss reported as ``loss`` is ``L_G``; ``g_adv``, ``g_l1`` (unweighted), ``g_fm`` and ``d_loss``
go to ``metrics.jsonl`` / ``curves.png`` as training terms.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from densemed.train.module import TrainingModule

if TYPE_CHECKING:
    from densemed.config import TrainConfig


class GANModule(TrainingModule):
    """Generator ``networks["model"]`` and discriminator ``networks["discriminator"]`` with an Adam each.

    Args:
        generator: condition ``(B, C_s, *S)`` -> image ``(B, C_x, *S)``.
        discriminator: ``(B, C_s + C_x, *S)`` -> patch logits; needs ``forward_features`` when
            ``feature_matching > 0``.
        adversarial: an adversarial loss with ``.generator(fake)`` and ``.discriminator(real, fake)``.
        t: the ``train`` section (``lr``, ``weight_decay``, schedule, ``amp``, ``grad_clip``).
        device: where the networks live.
        lambda_l1: weight of the L1 term (pix2pix: 100).
        feature_matching: weight of the feature-matching term (0: off; pix2pixHD uses 10).
        diffaugment: DiffAugment policy (e.g. ``["color", "translation", "cutout"]``), or None.
        betas: Adam's ``(beta1, beta2)``.
        lr_d: discriminator learning rate (default ``t.lr``).

    Example:
        >>> from densemed.config import TrainConfig
        >>> from densemed.losses.adversarial import LeastSquaresGANLoss
        >>> from densemed.nets.pix2pix import Pix2PixGenerator
        >>> from densemed.nets.patchgan import PatchGAN
        >>> m = GANModule(Pix2PixGenerator(2, 1, depth=3, base_width=4), PatchGAN(3, base_width=4),
        ...               LeastSquaresGANLoss(), TrainConfig(), torch.device("cpu"))
        >>> rec = m.train_step({"image": torch.zeros(2, 2, 32, 32), "target": torch.zeros(2, 1, 32, 32)})
        >>> print(sorted(rec))
        ['loss', 'term_d_loss', 'term_g_adv', 'term_g_l1']
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        adversarial: nn.Module,
        t: TrainConfig,
        device: torch.device,
        lambda_l1: float = 100.0,
        feature_matching: float = 0.0,
        diffaugment: Sequence[str] | None = None,
        betas: Sequence[float] = (0.5, 0.999),
        lr_d: float | None = None,
    ) -> None:
        super().__init__({"model": generator, "discriminator": discriminator}, t, device)
        self.adversarial = adversarial
        self.lambda_l1, self.lambda_fm = float(lambda_l1), float(feature_matching)
        b = (float(betas[0]), float(betas[1]))
        self.add_optimizer("model", torch.optim.Adam(generator.parameters(), lr=t.lr, betas=b,
                                                     weight_decay=t.weight_decay))
        self.add_optimizer("discriminator", torch.optim.Adam(discriminator.parameters(), lr=lr_d or t.lr, betas=b,
                                                             weight_decay=t.weight_decay))
        self.fm = None
        if self.lambda_fm > 0:
            from densemed.losses.adversarial import FeatureMatchingLoss

            self.fm = FeatureMatchingLoss()
        self.diffaugment = None
        if diffaugment:
            from densemed.augment.diffaugment import RandomDiffAugment

            self.diffaugment = RandomDiffAugment(diffaugment)

    @property
    def discriminator(self) -> nn.Module:
        """The discriminator network."""
        return self.networks["discriminator"]

    def _augment(self, cond: torch.Tensor, *images: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.diffaugment is None:
            return (cond, *images)
        # one seed from torch's generator (reseeded per step by the loop): resumable, device-independent
        gen = torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,)).item()))
        return self.diffaugment(cond, *images, generator=gen)

    def _judge(self, cond: torch.Tensor, image: torch.Tensor, features: bool = False) -> Any:
        with self.autocast():
            pair = torch.cat([cond, image], dim=1)
            if features:
                logits, feats = self.discriminator.forward_features(pair)
                return logits.float(), [f.float() for f in feats]
            return self.discriminator(pair).float()

    def train_step(self, batch: dict[str, torch.Tensor]) -> dict[str, float]:
        """One D step then one G step on ``batch["image"]`` (condition) and ``batch["target"]`` (real image)."""
        cond, real = batch["image"], batch["target"]
        gen, disc = self.model, self.discriminator
        with self.autocast():
            fake = gen(cond)
        fake = fake.float()

        # -- discriminator: real pairs -> real, generated pairs -> fake (G's output detached)
        c, r, f = self._augment(cond, real, fake.detach())
        d_loss = self.adversarial.discriminator(self._judge(c, r), self._judge(c, f))
        if not torch.isfinite(d_loss):
            raise FloatingPointError(float(d_loss.detach()))
        self.backward_step("discriminator", d_loss, disc.parameters())

        # -- generator: fool the (frozen) discriminator, stay close to the real image
        disc.requires_grad_(False)
        try:
            c, f, r = self._augment(cond, fake, real)
            if self.fm is not None:
                logits, fake_feats = self._judge(c, f, features=True)
                with torch.no_grad():
                    _, real_feats = self._judge(c, r, features=True)
                g_fm = self.fm(real_feats, fake_feats)
            else:
                logits, g_fm = self._judge(c, f), None
            g_adv = self.adversarial.generator(logits)
            g_l1 = (fake - real).abs().mean()
            loss = g_adv + self.lambda_l1 * g_l1 + (self.lambda_fm * g_fm if g_fm is not None else 0.0)
            if not torch.isfinite(loss):
                raise FloatingPointError(float(loss.detach()))
            self.backward_step("model", loss, gen.parameters())
        finally:
            disc.requires_grad_(True)
        self.step += 1
        rec = {"loss": float(loss.detach()), "term_g_adv": float(g_adv.detach()), "term_g_l1": float(g_l1.detach()),
               "term_d_loss": float(d_loss.detach())}
        if g_fm is not None:
            rec["term_g_fm"] = float(g_fm.detach())
        return rec
