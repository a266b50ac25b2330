"""ClassNSeg: classification, segmentation and reconstruction from one Y-shaped autoencoder.

Nguyen, Fang, Yamagishi, Echizen, "Multi-task Learning for Detecting and Segmenting Manipulated
Facial Images and Videos", BTAS 2019, arXiv 1906.06876 (authors' code: nii-yamagishilab/ClassNSeg,
``model/ae.py``, ``train.py``).

An encoder of 3x3 convolutions with batch norm and ReLU, strides alternating 1, 2, 1, 2, ...
(channels 8, 8, 16, 16, 32, 32, 64, 64, 128: four stride-2 layers, latent at 1/16) maps the
image to a latent ``h`` whose channels are split into two halves ``h_0``, ``h_1``. Their mean
absolute activations are the class scores

    a_c = mean |h_c|,      class 1  iff  a_1 >= a_0      (:func:`predict_class`)

trained with the activation loss ``L_act = |a_1 - y| + |a_0 - (1 - y)|``
(:class:`densemed.losses.activation.ActivationLoss`). In training the half that does not match
the image-level label ``y`` is zeroed before decoding, so each class owns its half of the code.
A shared decoder trunk (transposed convolutions mirroring the encoder's last layers) feeds two
branches: a segmentation branch (logits; the paper's softmax is the loss's / :func:`activate`'s)
and a reconstruction branch ending in ``tanh``. Total loss (recipe):
``L = g_act L_act + g_seg L_seg + g_rec L_rec`` (all ``g = 1``; ``L_seg`` cross entropy,
``L_rec`` mean squared error against the input).

The decoder mirrors the encoder layer by layer: encoder layer ``i`` (``c_{i-1} -> c_i``, stride
``s_i``) has the decoder twin ``c_i -> c_{i-1}`` with the same stride (a transposed convolution,
kernel 3, padding 1, output padding ``s_i - 1``), the first ``trunk_layers`` twins (4, as in
the authors' code) forming the shared trunk and the rest each branch; the twin of the first
layer is the branch's output layer (to ``out_channels`` logits, or ``in_channels`` then tanh).

Documented choices:

* Convolutions followed by batch norm have no bias (the norm's shift makes it redundant); the
  authors' layers have one, so their model has 656 more parameters at the defaults (in 3, out 2).
  PyTorch's default initialisation (the authors draw conv weights from N(0, 0.02) and BN scales
  from N(0.5, 0.02)).
* Zeroing needs a label and happens only in training mode; with ``class_label=None``, or in eval
  mode (validation, prediction: the label must not leak into the segmentation), the full latent
  is decoded. The authors' validation loop also zeroes with the true label.
* Any spatial size: the input is zero-padded at the end to a multiple of ``2**n_stride2`` (16)
  and the outputs cropped back; ``a_c`` is averaged over the whole latent
  (``ceil(H / 16) x ceil(W / 16)`` positions), whose last row and column may see some padding.
* The ``activation`` head is ``(B, 2) = (a_0, a_1)``, not a map (``dense=False``);
  :func:`class_probability` (softmax over ``(a_0, a_1)``, as the authors score ROC curves) gives
  a score for AUC.
* The reconstruction is in ``[-1, 1]`` (tanh): normalise the target image to that range.

Outputs: training / :func:`densemed.nets.all_outputs`: ``{"segmentation": (B, out_channels, H, W)
logits, "reconstruction": (B, in_channels, H, W), "activation": (B, 2)}``; eval mode: the
segmentation logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from densemed.blocks import ConvNormAct, act_layer, conv_transpose, crop_to, norm_layer, pad_to_multiple
from densemed.nets._aux import wants_aux
from densemed.nets.heads import Head, declare
from densemed.nets.registry import register
from densemed.typing import LayerSpec, NetOutput

#: Encoder channels of the authors' code (``model/ae.py``); strides 1, 2, 1, 2, ... from the first.
AUTHORS_CHANNELS = (8, 8, 16, 16, 32, 32, 64, 64, 128)


class _DeconvNormAct(nn.Sequential):
    """Transposed 3x3 convolution (stride 1 or 2, exact 2x upsampling), norm, activation."""

    def __init__(self, cin: int, cout: int, stride: int, norm: LayerSpec, act: LayerSpec) -> None:
        super().__init__(
            conv_transpose(2)(cin, cout, 3, stride, 1, output_padding=stride - 1, bias=False),
            norm_layer(norm, 2, cout),
            act_layer(act, cout),
        )


def predict_class(activation: torch.Tensor) -> torch.Tensor:
    """Class decision ``1 iff a_1 >= a_0``: ``(B, 2, ...) -> (B,)`` int64."""
    a = activation.reshape(activation.shape[0], 2, -1)[:, :, 0]
    return (a[:, 1] >= a[:, 0]).long()


def class_probability(activation: torch.Tensor) -> torch.Tensor:
    """Score of class 1 for ROC/AUC: ``softmax(a_0, a_1)[1]``, ``(B, 2, ...) -> (B,)``."""
    a = activation.reshape(activation.shape[0], 2, -1)[:, :, 0]
    return torch.softmax(a, dim=1)[:, 1]


class ClassNSeg(nn.Module):
    """Y-shaped autoencoder: class scores from the latent halves, segmentation and reconstruction branches.

    Args:
        in_channels: image channels (reconstructed by the reconstruction branch).
        out_channels: segmentation classes.
        encoder_channels: output channels of the encoder layers, strides 1, 2, 1, 2, ...; the
            last (the latent) must be even.
        trunk_layers: decoder layers shared by both branches (the rest are per branch).
        norm: normalisation name.
        act: activation name.

    Shape:
        image ``(B, in_channels, H, W)``, class_label ``(B,)`` 0/1 or None ->
        ``{"segmentation": (B, out_channels, H, W), "reconstruction": (B, in_channels, H, W),
        "activation": (B, 2)}`` in training mode, the segmentation logits in eval mode.

    Example:
        >>> net = ClassNSeg(1, 2, encoder_channels=(2, 2, 4, 4, 8), trunk_layers=2).train()
        >>> out = net(torch.zeros(2, 1, 13, 10), torch.tensor([0, 1]))
        >>> print({k: tuple(v.shape) for k, v in out.items()})
        {'segmentation': (2, 2, 13, 10), 'reconstruction': (2, 1, 13, 10), 'activation': (2, 2)}
    """

    def __init__(
        self,
        in_channels: int = 3,
        out_channels: int = 2,
        encoder_channels: Sequence[int] = AUTHORS_CHANNELS,
        trunk_layers: int = 4,
        norm: LayerSpec = "batch",
        act: LayerSpec = "relu",
    ) -> None:
        super().__init__()
        chans = [int(c) for c in encoder_channels]
        if len(chans) < 2 or chans[-1] % 2:
            raise ValueError(f"encoder_channels needs >= 2 layers and an even latent width, got {chans}")
        if not 0 <= trunk_layers < len(chans):
            raise ValueError(f"trunk_layers must be in 0..{len(chans) - 1}, got {trunk_layers}")
        declare(
            self,
            {
                "segmentation": Head(out_channels),
                "reconstruction": Head(in_channels, "image"),
                "activation": Head(2, "regression", dense=False),
            },
            main="segmentation",
            inputs=("image", "class_label"),
        )
        strides = [1 + i % 2 for i in range(len(chans))]  # 1, 2, 1, 2, ...
        self.multiple = 2 ** sum(s == 2 for s in strides)
        ins = [in_channels, *chans[:-1]]
        self.encoder = nn.Sequential(
            *(ConvNormAct(ci, co, 2, 3, s, "same", norm, act) for ci, co, s in zip(ins, chans, strides))
        )
        # decoder twins of encoder layers n-1 .. 1 (c_i -> c_{i-1}); the twin of layer 0 is each branch's output
        twins = list(range(len(chans) - 1, 0, -1))
        self.trunk = nn.Sequential(
            *(_DeconvNormAct(chans[i], ins[i], strides[i], norm, act) for i in twins[:trunk_layers])
        )
        self.segmenter = self._branch(twins[trunk_layers:], chans, ins, strides, out_channels, norm, act)
        self.reconstructor = nn.Sequential(
            *self._branch(twins[trunk_layers:], chans, ins, strides, in_channels, norm, act), nn.Tanh()
        )

    @staticmethod
    def _branch(
        twins: list[int], chans: list[int], ins: list[int], strides: list[int], out: int, norm: LayerSpec,
        act: LayerSpec,
    ) -> nn.Sequential:
        layers = [_DeconvNormAct(chans[i], ins[i], strides[i], norm, act) for i in twins]
        layers.append(conv_transpose(2)(chans[0], out, 3, strides[0], 1, output_padding=strides[0] - 1))
        return nn.Sequential(*layers)

    @staticmethod
    def _labels(class_label: torch.Tensor, batch: int) -> torch.Tensor:
        y = class_label.reshape(-1)
        if y.numel() != batch:
            raise ValueError(
                f"class_label must hold one label per sample ({batch}), got shape {tuple(class_label.shape)}"
            )
        y = y.round().long() if y.is_floating_point() else y.long()
        if ((y != 0) & (y != 1)).any():
            raise ValueError(f"class_label must be 0 or 1, got {y.tolist()}")
        return y

    def forward(self, image: torch.Tensor, class_label: torch.Tensor | None = None) -> NetOutput:
        """Segmentation logits in eval mode; segmentation, reconstruction and ``(a_0, a_1)`` otherwise."""
        x, size = pad_to_multiple(image, self.multiple)
        h = self.encoder(x)  # (B, 2L, H/16, W/16)
        half = h.shape[1] // 2
        activation = torch.stack([h[:, :half].abs().mean((1, 2, 3)), h[:, half:].abs().mean((1, 2, 3))], 1)
        if self.training and class_label is not None:
            y = self._labels(class_label, h.shape[0])
            keep = torch.nn.functional.one_hot(y, 2).to(h.dtype)  # (B, 2): 1 for the label's half
            h = h * keep.repeat_interleave(half, dim=1)[:, :, None, None]
        z = self.trunk(h)
        seg = crop_to(self.segmenter(z), size)
        if not wants_aux(self):
            return seg
        rec = crop_to(self.reconstructor(z), size)
        return {"segmentation": seg, "reconstruction": rec, "activation": activation}

    def example_inputs(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """A random 0/1 image-level label per sample: ``{"class_label": (B,) int64}``."""
        return {"class_label": torch.randint(0, 2, (image.shape[0],), device=image.device)}


@register("classnseg", dims=(2,), small={"encoder_channels": (2, 2, 4, 4, 8), "trunk_layers": 2})
def classnseg(
    in_channels: int = 3,
    out_channels: int = 2,
    encoder_channels: Sequence[int] = AUTHORS_CHANNELS,
    trunk_layers: int = 4,
    norm: LayerSpec = "batch",
    act: LayerSpec = "relu",
) -> ClassNSeg:
    """ClassNSeg (Nguyen 2019): Y-shaped autoencoder, class from latent-half activations, seg + recon."""
    return ClassNSeg(in_channels, out_channels, encoder_channels, trunk_layers, norm, act)
