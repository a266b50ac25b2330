"""The VGG16 feature hierarchy shared by FCN and DeconvNet, and a loader of VGG16 weights.

VGG16 (Simonyan & Zisserman, ICLR 2015, configuration D): five blocks of 3x3 convolutions
(stride 1, padding 1) with ReLU, two convolutions in blocks 1-2 and three in blocks 3-5, each block
closed by a 2x2 max pooling of stride 2. Widths ``w, 2w, 4w, 8w, 8w`` with ``w = 64`` in the paper,
so block ``k`` has stride ``2**k`` and ``pool5`` is at stride 32.

:class:`VGG16Features` is an ``nn.Sequential`` laid out exactly as ``torchvision``'s
``vgg16().features`` (``conv, relu, ..., maxpool``) or, with ``norm="batch"``, as
``vgg16_bn().features`` (``conv, bn, relu, ...``), so a module holding it as ``self.features``
has the state-dict keys ``features.{0,2,5,...}.weight`` of a torchvision checkpoint, and
:func:`load_vgg16_weights` reads such a file from disk (nothing is ever downloaded). The fully
connected ``classifier.0`` (fc6, ``4096 x 25088``) and ``classifier.3`` (fc7, ``4096 x 4096``)
are reshaped into the 7x7 and 1x1 convolutions of the fully convolutional networks.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

from densemed.blocks.factories import norm_layer
from densemed.errors import DensemedError
from densemed.typing import LayerSpec, PathType

#: Convolutions per block in VGG16 (configuration D).
VGG16_CONVS = (2, 2, 3, 3, 3)
#: Width multipliers per block relative to ``base_width``.
VGG16_MULTS = (1, 2, 4, 8, 8)


class VGG16Features(nn.Sequential):
    """VGG16 conv1_1 ... pool5 in torchvision's layer order.

    Args:
        in_channels: image channels (3 in the paper).
        base_width: channels of block 1 (64 in the paper); blocks have ``1, 2, 4, 8, 8`` times it.
        norm: ``None`` (VGG16) or ``"batch"`` (VGG16-BN, DeconvNet's encoder). The convolutions
            keep their bias either way, as in torchvision, so its checkpoints load unchanged.
        return_indices: max poolings also return their argmax "switches" (for unpooling).

    Shape:
        ``(B, in_channels, H, W)`` with ``H, W`` multiples of 32 -> a list of the five pooled maps,
        ``pool_k`` of shape ``(B, widths[k-1], H / 2**k, W / 2**k)``.

    Example:
        >>> f = VGG16Features(1, base_width=4)
        >>> print([tuple(p.shape) for p in f(torch.zeros(1, 1, 64, 32))][-1])
        (1, 32, 2, 1)
    """

    def __init__(
        self, in_channels: int = 3, base_width: int = 64, norm: LayerSpec = None, return_indices: bool = False
    ) -> None:
        self.widths = [base_width * m for m in VGG16_MULTS]
        layers: list[nn.Module] = []
        c = in_channels
        for n, w in zip(VGG16_CONVS, self.widths):
            for _ in range(n):
                layers.append(nn.Conv2d(c, w, 3, padding=1))
                if norm not in (None, "none"):
                    layers.append(norm_layer(norm, 2, w))
                layers.append(nn.ReLU(inplace=True))
                c = w
            layers.append(nn.MaxPool2d(2, 2, return_indices=return_indices))
        super().__init__(*layers)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # He initialisation (as torchvision's VGG): PyTorch's default uniform init shrinks
                # the signal through 13 plain convolutions and a from-scratch VGG barely trains
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:  # type: ignore[override]
        """The five pooled maps ``[pool1, ..., pool5]``."""
        return self.forward_with_switches(x)[0]

    def forward_with_switches(
        self, x: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Size]]:
        """Pooled maps, pooling switches (empty without ``return_indices``) and pre-pooling sizes."""
        pools: list[torch.Tensor] = []
        switches: list[torch.Tensor] = []
        sizes: list[torch.Size] = []
        for layer in self:
            if isinstance(layer, nn.MaxPool2d):
                sizes.append(x.shape[2:])
                out = layer(x)
                if isinstance(out, tuple):
                    x, idx = out
                    switches.append(idx)
                else:
                    x = out
                pools.append(x)
            else:
                x = layer(x)
        return pools, switches, sizes


def _read_state_dict(source: PathType | Mapping[str, torch.Tensor]) -> Mapping[str, torch.Tensor]:
    if isinstance(source, Mapping):
        return source
    path = Path(source)
    if not path.is_file():
        raise DensemedError(f"{path}: encoder_weights file not found (nothing is downloaded)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a pickle error or a truncated file: say which file
        raise DensemedError(f"{path}: cannot read a state dict ({type(e).__name__}: {e})") from e
    if isinstance(state, Mapping) and "state_dict" in state and isinstance(state["state_dict"], Mapping):
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise DensemedError(f"{path}: expected a state dict (a mapping of names to tensors)")
    # checkpoints saved from nn.DataParallel prefix every key with "module."
    return {k.removeprefix("module."): v for k, v in state.items()}


@torch.no_grad()
def load_vgg16_weights(
    features: VGG16Features,
    source: PathType | Mapping[str, torch.Tensor],
    fc6: nn.Conv2d | None = None,
    fc7: nn.Conv2d | None = None,
) -> None:
    """Copy a torchvision-layout VGG16 (or VGG16-BN) state dict into ``features`` and fc6/fc7.

    Keys read: ``features.<i>.*`` for every parameter and buffer of ``features`` (the indices are
    those of ``vgg16`` or ``vgg16_bn``, matching how ``features`` was built), and, when given,
    ``classifier.0`` into ``fc6`` (``(F, 8w * k * k)`` reshaped to ``(F, 8w, k, k)``) and
    ``classifier.3`` into ``fc7`` (``(F, F)`` reshaped to ``(F, F, 1, 1)``).

    A one-channel encoder takes the sum of conv1_1's RGB filters: a grey image replicated to three
    channels gives the same response. Any other shape mismatch raises.

    Args:
        features: the encoder to fill.
        source: path of a ``torch.save``-d state dict, or the state dict itself.
        fc6: the fc6 convolution (kernel ``k x k``), or None to skip it.
        fc7: the fc7 1x1 convolution, or None to skip it.

    Raises:
        DensemedError: file missing or unreadable, a key missing, or a shape that cannot match.
    """
    state = _read_state_dict(source)
    name = str(source) if not isinstance(source, Mapping) else "encoder_weights"
    targets: list[tuple[str, torch.Tensor]] = [(f"features.{k}", v) for k, v in features.state_dict().items()]
    if fc6 is not None:
        targets += [("classifier.0.weight", fc6.weight), ("classifier.0.bias", fc6.bias)]
    if fc7 is not None:
        targets += [("classifier.3.weight", fc7.weight), ("classifier.3.bias", fc7.bias)]
    missing = [k for k, _ in targets if k not in state]
    if missing:
        raise DensemedError(
            f"{name}: not a VGG16{'-BN' if any('running_mean' in k for k in missing) else ''} "
            f"state dict in torchvision layout; missing {', '.join(missing[:4])}"
            f"{' ...' if len(missing) > 4 else ''}"
        )
    first_conv = "features.0.weight"
    for key, dst in targets:
        src = state[key].to(dst.dtype)
        if key == first_conv and src.shape != dst.shape and dst.shape[1] == 1 and src.shape[1] == 3:
            src = src.sum(1, keepdim=True)  # grey input: sum of the RGB filters
        if key.startswith("classifier.") and key.endswith("weight") and src.numel() == dst.numel():
            src = src.reshape(dst.shape)  # fc -> conv: (F, C*k*k) -> (F, C, k, k)
        if src.shape != dst.shape:
            raise DensemedError(
                f"{name}: {key} has shape {tuple(state[key].shape)}, the network needs {tuple(dst.shape)} "
                "(check base_width, fc_width, norm and in_channels)"
            )
        dst.copy_(src)
