"""SegNetMRI: joint compressed-sensing MRI reconstruction and segmentation.

Sun, Fan, Ding, Huang, Paisley, "Joint CS-MRI Reconstruction and Segmentation with a Unified
Deep Network", arXiv 1805.02165; IPMI 2019 (LNCS 11492).

The input is the zero-filled image ``x_0 = F^-1 (M k0)`` of k-space measured on the Cartesian
mask ``Omega`` (``M`` its indicator, ``F`` the centred orthonormal 2D FFT of
:mod:`densemed.data.kspace`), together with the measurements ``k0`` and the mask.

**MRN** (MRI reconstruction network): ``K`` cascaded blocks. Block ``k`` refines the current
image with an encoder-decoder ``D_k(E_k(.))`` and then enforces data consistency::

    x_cnn = x_{k-1} + D_k(E_k(x_{k-1}))
    k     = F x_cnn
    k_hat(j) = k(j)                          j not in Omega
    k_hat(j) = (k(j) + nu k0(j)) / (1 + nu)  j in Omega       (nu -> inf: k_hat(j) = k0(j))
    x_k   = F^-1 k_hat                                         (:class:`DataConsistency`)

The reconstruction is ``x_K``.

**MSN** (MRI segmentation network): one segmentation decoder ``S_k`` per block, fed by the same
encoder features ``E_k(x_{k-1})`` as the reconstruction decoder (the encoders are shared by the
two tasks), giving ``K`` segmentations ``s_k``; they are merged by a 1x1 convolution over their
concatenation into the final logits ``s = W * [s_1, ..., s_K] + b``.

**Loss** (in the recipe, not here): ``L = ||x_K - x||^2 + lambda CE(s, y)``; the paper pre-trains
the MRN, then the MSN on the shared encoders, then fine-tunes both; :meth:`SegNetMRI.parameter_groups`
gives the two parameter sets for such a schedule.

Documented choices where the paper is silent or where densemed fixes a convention:

* Each encoder-decoder is a small U-Net (:class:`densemed.nets.multitask.SharedEncoder` and
  :class:`~densemed.nets.multitask.TaskDecoder`: ``DoubleConv`` levels, max pooling, transposed
  convolutions, skip connections) of ``depth`` poolings (default 2) and widths
  ``base_width * 2**i`` (default 32, 64, 128); every segmentation decoder has the same structure
  as the reconstruction decoder and receives the same skip features. Blocks do **not** share
  weights across cascades (every ``E_k``, ``D_k``, ``S_k`` is its own module).
* The block output is residual (``x_{k-1} + D_k(E_k(x_{k-1}))``), as in cascaded CS-MRI networks.
* ``nu`` is a fixed constructor option (default ``None`` = infinity, exact replacement).
* Channels: ``in_channels = 2`` is the complex image as (real, imaginary) channels, the layout
  in which data consistency is exact. ``in_channels = 1`` treats the channel as a real image
  (imaginary part 0) and returns the real part of ``F^-1 k_hat``: the closest real image, which
  is consistent with ``k0`` only approximately (``k0`` of a real image on a mask that is not
  Hermitian symmetric). The reconstruction head has ``in_channels`` channels.
* Any spatial size: every block pads its input to a multiple of ``2**depth`` for the CNN and
  crops back before data consistency, which always works on the measured grid.

Outputs: training / :func:`densemed.nets.all_outputs`: ``{"segmentation": (B, out_channels, H, W)
logits, "reconstruction": (B, in_channels, H, W) image}``; eval mode: the segmentation logits.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from densemed.blocks import conv, crop_to, pad_to_multiple
from densemed.data.kspace import cartesian_mask, channels_to_complex, complex_to_channels, fft2c, ifft2c
from densemed.nets._aux import wants_aux
from densemed.nets.heads import Head, declare
from densemed.nets.multitask import SharedEncoder, TaskDecoder
from densemed.nets.registry import register
from densemed.typing import LayerSpec, NetOutput

#: Mask used by :meth:`SegNetMRI.example_inputs` (the issue's defaults), fixed seed.
EXAMPLE_RATE, EXAMPLE_CENTER, EXAMPLE_SEED = 0.25, 0.08, 0


class DataConsistency(nn.Module):
    """Data-consistency layer: replace (or average with weight ``nu``) the measured k-space entries.

    ``k_hat = k + M nu / (1 + nu) (k0 - k)`` with ``k = F x``, i.e. ``k`` off the mask and
    ``(k + nu k0) / (1 + nu)`` on it; ``nu = None`` or ``inf`` gives ``k0`` on the mask.

    Args:
        nu: weight of the measurements (noise-free limit: ``None`` / ``inf``), >= 0.

    Shape:
        image ``(B, C, H, W)`` with C = 2 (real, imag) or 1 (real), kspace ``(B, 2, H, W)``
        (real, imag), mask ``(B or 1, 1, H, W)`` -> ``(B, C, H, W)``.

    Example:
        >>> dc = DataConsistency()
        >>> x, k0, m = torch.zeros(1, 2, 4, 3), torch.ones(1, 2, 4, 3), torch.ones(1, 1, 4, 3)
        >>> print(dc(x, k0, m).shape)
        torch.Size([1, 2, 4, 3])
    """

    def __init__(self, nu: float | None = None) -> None:
        super().__init__()
        nu = None if nu is None else float(nu)
        if nu is not None and not nu >= 0:
            raise ValueError(f"nu must be >= 0 or None (infinity), got {nu}")
        self.nu = None if nu is None or math.isinf(nu) else nu

    def forward(self, image: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The image whose k-space agrees with the measurements on the mask (see class docstring)."""
        if kspace.shape[1] != 2:
            raise ValueError(f"kspace must be (B, 2, H, W) real/imag channels, got {tuple(kspace.shape)}")
        # FFTs in float32 at least: half-precision FFTs (autocast) need power-of-2 sizes on CUDA
        work = torch.float64 if image.dtype == torch.float64 else torch.float32
        k = fft2c(channels_to_complex(image.to(work)))  # (B, H, W) complex
        k0 = channels_to_complex(kspace.to(work))
        weight = mask[:, 0].to(work)  # (B, H, W), 1 on the measured lines
        if self.nu is not None:
            weight = weight * (self.nu / (1.0 + self.nu))
        x = ifft2c(k + weight * (k0 - k))
        if image.shape[1] == 2:
            return complex_to_channels(x).to(image.dtype)
        return x.real.unsqueeze(1).to(image.dtype)  # real-valued image: keep the real part (module docstring)

    def extra_repr(self) -> str:
        """``nu`` (inf when the measurements replace the prediction)."""
        return f"nu={'inf' if self.nu is None else self.nu}"


class _Cascade(nn.Module):
    """One MRN block's CNN: a U-Net encoder shared by a reconstruction and a segmentation decoder."""

    def __init__(
        self, channels: int, classes: int, widths: list[int], norm: LayerSpec, act: LayerSpec
    ) -> None:
        super().__init__()
        self.encoder = SharedEncoder(channels, widths, 2, norm, act)
        self.reconstruct = TaskDecoder(widths, channels, 2, norm, act)
        self.segment = TaskDecoder(widths, classes, 2, norm, act)
        self.multiple = 2 ** (len(widths) - 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x (B, C, H, W)`` -> (``x_cnn`` before data consistency, segmentation logits ``s_k``)."""
        padded, size = pad_to_multiple(x, self.multiple)
        feats = self.encoder(padded)
        x_cnn = x + crop_to(self.reconstruct(feats), size)
        return x_cnn, crop_to(self.segment(feats), size)


class SegNetMRI(nn.Module):
    """Cascaded reconstruction blocks with data consistency, and segmentation decoders on their encoders.

    Export: TorchScript only. ``densemed export --format onnx`` refuses it
    (:attr:`onnx_unsupported`, :func:`densemed.export.check_exportable`).

    Args:
        in_channels: channels of the zero-filled input and of the reconstruction: 2 (real,
            imaginary) or 1 (a real image; see the module docstring).
        out_channels: segmentation classes.
        num_blocks: number of cascaded blocks ``K`` (4).
        depth: poolings in each block's encoder-decoder.
        base_width: channels of the first level, doubled at each pooling.
        nu: data-consistency weight of the measurements (None = infinity: replace).
        norm: normalisation name.
        act: activation name.

    Shape:
        image ``(B, in_channels, H, W)``, kspace ``(B, 2, H, W)``, mask ``(B, 1, H, W)`` ->
        ``{"segmentation": (B, out_channels, H, W), "reconstruction": (B, in_channels, H, W)}``
        in training mode, the segmentation logits in eval mode.

    Example:
        >>> net = SegNetMRI(2, 3, num_blocks=2, depth=1, base_width=4).eval()
        >>> x = torch.zeros(1, 2, 20, 18)
        >>> print(net(x, **net.example_inputs(x)).shape)
        torch.Size([1, 3, 20, 18])
    """

    #: why ONNX cannot hold this network (read by :func:`densemed.export.check_exportable`)
    onnx_unsupported: ClassVar[str] = (
        "its data-consistency layers compute complex-valued FFTs (torch.fft on complex tensors), and the "
        "ONNX exporter has no complex tensor type (aten::complex is not supported)")

    def __init__(
        self,
        in_channels: int = 2,
        out_channels: int = 2,
        num_blocks: int = 4,
        depth: int = 2,
        base_width: int = 32,
        nu: float | None = None,
        norm: LayerSpec = "batch",
        act: LayerSpec = "relu",
    ) -> None:
        super().__init__()
        if in_channels not in (1, 2):
            raise ValueError(f"SegNetMRI takes 2 (real, imaginary) or 1 (real) input channels, got {in_channels}")
        if num_blocks < 1:
            raise ValueError(f"num_blocks must be >= 1, got {num_blocks}")
        declare(
            self,
            {"segmentation": Head(out_channels), "reconstruction": Head(in_channels, "image")},
            main="segmentation",
            inputs=("image", "kspace", "mask"),
        )
        widths = [base_width * 2**i for i in range(depth + 1)]
        self.blocks = nn.ModuleList(_Cascade(in_channels, out_channels, widths, norm, act) for _ in range(num_blocks))
        self.dc = DataConsistency(nu)  # no parameters: one module serves every block
        self.merge = conv(2)(num_blocks * out_channels, out_channels, kernel_size=1)

    def forward(self, image: torch.Tensor, kspace: torch.Tensor, mask: torch.Tensor) -> NetOutput:
        """Merged segmentation logits in eval mode; with the reconstruction ``x_K`` otherwise."""
        x = image
        segs = []
        for block in self.blocks:
            x_cnn, s = block(x)
            x = self.dc(x_cnn, kspace, mask)
            segs.append(s)
        seg = self.merge(torch.cat(segs, dim=1))
        if not wants_aux(self):
            return seg
        return {"segmentation": seg, "reconstruction": x}

    def example_inputs(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Measured k-space and mask for ``image`` taken as the fully sampled image (fixed-seed mask).

        Shape:
            ``(B, C, H, W) -> {kspace: (B, 2, H, W), mask: (B, 1, H, W)}``.
        """
        b, _, h, w = image.shape
        mask_np = cartesian_mask((h, w), EXAMPLE_RATE, EXAMPLE_CENTER, np.random.default_rng(EXAMPLE_SEED))
        mask = torch.from_numpy(mask_np).to(image.device, image.dtype).expand(b, 1, h, w)
        k0 = fft2c(channels_to_complex(image)) * mask[:, 0]
        return {"kspace": complex_to_channels(k0).to(image.dtype), "mask": mask}

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """``{"reconstruction": encoders + reconstruction decoders, "segmentation": segmentation decoders + merge}``.

        For the paper's schedule: train ``reconstruction`` first, then ``segmentation`` with the
        shared encoders frozen, then everything.
        """
        rec = [p for b in self.blocks for m in (b.encoder, b.reconstruct) for p in m.parameters()]
        seg = [p for b in self.blocks for p in b.segment.parameters()] + list(self.merge.parameters())
        return {"reconstruction": rec, "segmentation": seg}


@register("segnetmri", dims=(2,), small={"base_width": 4, "depth": 1, "num_blocks": 2})
def segnetmri(
    in_channels: int = 2,
    out_channels: int = 2,
    num_blocks: int = 4,
    depth: int = 2,
    base_width: int = 32,
    nu: float | None = None,
    norm: LayerSpec = "batch",
    act: LayerSpec = "relu",
) -> SegNetMRI:
    """SegNetMRI (Sun 2019): cascaded CS-MRI reconstruction blocks + segmentation on their encoders."""
    return SegNetMRI(in_channels, out_channels, num_blocks, depth, base_width, nu, norm, act)
