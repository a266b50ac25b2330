"""Adversarial losses for the conditional GAN, and discriminator feature matching.

Each adversarial loss is a module with a per-logit term ``f(x, real)`` and three entry points::

    loss(logits, target_is_real)            # mean of f over every patch logit
    loss.generator(fake_logits)             # = loss(fake_logits, True)
    loss.discriminator(real_logits, fake_logits)   # = (loss(real, True) + loss(fake, False)) / 2

The discriminator objective is halved as in pix2pix ("we divide the objective by 2 while
optimizing D, which slows down the rate at which D learns relative to G"); the generator term is
not, so ``lambda_L1 = 100`` keeps pix2pix's balance. Logits are PatchGAN score maps
``(B, 1, *P)``; the mean runs over batch and patches.

* ``gan_ns`` — non-saturating GAN (Goodfellow et al., NeurIPS 2014, Sec. 3; pix2pix's choice):
  ``f(x, real) = softplus(-x)`` (= ``-log sigmoid(x)``), ``f(x, fake) = softplus(x)``
  (= ``-log(1 - sigmoid(x))``); the generator maximises ``log D(G(s))`` instead of minimising
  ``log(1 - D(G(s)))``, whose gradient vanishes early in training.
* ``gan_ls`` — least squares GAN (Mao et al., ICCV 2017, Eq. 2 with ``a = 0, b = c = 1``):
  ``f(x, real) = (x - 1)^2``, ``f(x, fake) = x^2``. **The recommended default** (:data:`DEFAULT`):
  the quadratic penalises fakes by their distance from the decision boundary even when they are
  already on the real side, which gives the generator non-vanishing, well-scaled gradients; Mao et
  al. report more stable training and less mode collapse, and pix2pix's authors switched to it in
  CycleGAN (Zhu et al. 2017) and pix2pixHD (Wang et al. 2018), the label-to-image successor of
  pix2pix that also uses the feature matching below.
* ``feature_matching`` — pix2pixHD (Wang, Liu, Zhu, Tao, Kautz, Catanzaro, CVPR 2018, Eq. 4):
  ``L_FM = sum_i w_i (1 / N_i) || D_i(s, x) - D_i(s, G(s)) ||_1`` over the discriminator's hidden
  activations ``D_i`` (``N_i`` elements each, ``w_i = 1`` unless ``layer_weights`` is given);
  the real features are detached (they are targets, as in the authors' code).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from densemed.errors import DensemedError
from densemed.losses.registry import Loss, register

#: Registered name of the recommended adversarial loss (see the module docstring).
DEFAULT = "gan_ls"


class AdversarialLoss(Loss):
    """Base of the adversarial losses: subclasses define the per-logit term :meth:`term`.

    Args:
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (per-logit losses, logits' shape).
    """

    def term(self, logits: torch.Tensor, real: bool) -> torch.Tensor:  # pragma: no cover - abstract
        """Per-logit loss of ``logits`` judged against the label real (True) or fake (False)."""
        raise NotImplementedError

    def _reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.reduction == "mean":
            return x.mean()
        if self.reduction == "sum":
            return x.sum()
        return x

    def forward(self, logits: torch.Tensor, target_is_real: bool = True) -> torch.Tensor:  # type: ignore[override]
        """Loss of the discriminator's ``logits`` when the truth is real (or fake).

        Shape:
            logits ``(B, C, *P)`` -> scalar (``reduction="none"``: ``(B, C, *P)``).
        """
        if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
            raise ValueError(f"{type(self).__name__} takes a float logits tensor, got {type(logits).__name__}")
        if not isinstance(target_is_real, bool):
            raise ValueError(f"target_is_real must be True or False, got {target_is_real!r}")
        return self._reduce(self.term(logits, target_is_real))

    def generator(self, fake_logits: torch.Tensor) -> torch.Tensor:
        """Generator loss: the discriminator's scores of fakes judged as real."""
        return self(fake_logits, True)

    def discriminator(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
        """Discriminator loss ``(L(real, real) + L(fake, fake)) / 2`` (pix2pix halves D's objective).

        With ``reduction="none"`` both score maps must have the same shape.
        """
        if self.reduction == "none" and real_logits.shape != fake_logits.shape:
            raise ValueError(f"real {tuple(real_logits.shape)} and fake {tuple(fake_logits.shape)} scores differ")
        return 0.5 * (self(real_logits, True) + self(fake_logits, False))


@register("gan_ns")
class NonSaturatingGANLoss(AdversarialLoss):
    """Non-saturating GAN loss: ``softplus(-x)`` for real, ``softplus(x)`` for fake (BCE on logits).

    Args:
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shape:
        logits ``(B, C, *P)`` -> scalar.

    Example:
        >>> loss = NonSaturatingGANLoss()
        >>> print(round(loss.generator(torch.zeros(1, 1, 2, 2)).item(), 4))  # ln 2
        0.6931
    """

    def term(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        """``-log sigmoid(x)`` for real, ``-log(1 - sigmoid(x))`` for fake, in the stable softplus form."""
        return F.softplus(-logits if real else logits)


@register("gan_ls")
class LeastSquaresGANLoss(AdversarialLoss):
    """Least squares GAN loss: ``(x - 1)^2`` for real, ``x^2`` for fake.

    Args:
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Shape:
        logits ``(B, C, *P)`` -> scalar.

    Example:
        >>> loss = LeastSquaresGANLoss()
        >>> print(loss.discriminator(torch.ones(1, 1, 2, 2), torch.zeros(1, 1, 2, 2)).item())
        0.0
    """

    def term(self, logits: torch.Tensor, real: bool) -> torch.Tensor:
        """Squared distance to the target score 1 (real) or 0 (fake)."""
        return (logits - 1.0) ** 2 if real else logits**2


@register("feature_matching")
class FeatureMatchingLoss(Loss):
    """L1 between the discriminator's hidden activations on real and on fake pairs (pix2pixHD Eq. 4).

    Args:
        layer_weights: one weight per feature layer (default 1 each).
        detach_real: treat the real features as constants (default, as in pix2pixHD).

    Shape:
        two lists of ``L`` tensors ``(B, C_l, *S_l)`` (e.g. :meth:`densemed.nets.patchgan.PatchGAN.features`)
        -> scalar.

    Example:
        >>> real, fake = [torch.ones(1, 2, 3, 3), torch.ones(1, 4, 2, 2)], [torch.zeros(1, 2, 3, 3)] * 2
        >>> fake[1] = torch.zeros(1, 4, 2, 2)
        >>> print(FeatureMatchingLoss()(real, fake).item())  # two layers, each mean |1 - 0| = 1
        2.0
    """

    def __init__(self, layer_weights: Sequence[float] | None = None, detach_real: bool = True) -> None:
        super().__init__("mean")
        if layer_weights is not None:
            ok = isinstance(layer_weights, (list, tuple)) and all(
                isinstance(w, (int, float)) and not isinstance(w, bool) and w >= 0 for w in layer_weights
            )
            if not ok or not layer_weights:
                raise DensemedError(f"loss.layer_weights: must be a list of numbers >= 0, got {layer_weights!r}")
        self.layer_weights = None if layer_weights is None else [float(w) for w in layer_weights]
        self.detach_real = bool(detach_real)

    def forward(  # type: ignore[override]
        self, real_features: Sequence[torch.Tensor], fake_features: Sequence[torch.Tensor]
    ) -> torch.Tensor:
        """``sum_i w_i mean |real_i - fake_i|`` over the feature layers."""
        if len(real_features) != len(fake_features) or not real_features:
            n_real, n_fake = len(real_features), len(fake_features)
            raise ValueError(f"feature lists differ in length or are empty: {n_real} vs {n_fake}")
        weights = self.layer_weights or [1.0] * len(real_features)
        if len(weights) != len(real_features):
            raise ValueError(f"{len(weights)} layer_weights for {len(real_features)} feature layers")
        total = real_features[0].new_zeros(())
        for w, r, f in zip(weights, real_features, fake_features):
            if r.shape != f.shape:
                raise ValueError(f"real feature {tuple(r.shape)} and fake feature {tuple(f.shape)} differ")
            total = total + w * (f - (r.detach() if self.detach_real else r)).abs().mean()
        return total
