"""DeepDistance (Koyuncu et al., Medical Image Analysis 63, 2020; arXiv 1908.11211).

A multi-task regression network for cell detection: one shared encoder and two decoders that
regress two complementary distance maps computed from the instance labels
(:mod:`densemed.targets.distance`), for every pixel ``q`` of cell ``i``:

* inner distance ``d_in(q) = 1 / (1 + alpha ||q - C_i||)`` (``C_i`` the centroid, ``alpha = 0.1``),
* normalised outer distance ``d_out(q) = min_{b in B_i} ||q - b|| / max_{p in i} min_{b in B_i} ||p - b||``
  (``B_i`` the 4-neighbours of the cell outside it),

both 0 on background, each head trained with the mean squared error and equal task weights:
``L = MSE(d_in) + MSE(d_out)``. The extended variant (``segmentation=True``) adds a third decoder
for the cell-vs-background segmentation learned in parallel, task weights 0.1 (segmentation),
1 and 1 (the distances) — see ``configs/deepdistance_dsb2018.yaml``.

Detection: the regional maxima of the h-maxima transform of the predicted inner distance, each
4-connected maximum region one cell; instance masks by marker-controlled watershed within the
foreground (:func:`densemed.infer.instances.to_instances` with ``method="deepdistance"``).

Architecture (documented choices where the paper's details differ or are silent): the decoders
are U-Net expanding paths with skips from the shared encoder (:class:`MultiTaskUNet`), batch norm,
``depth=4`` and ``base_width=64`` by default; regression heads are linear (no activation).

Outputs: training / :func:`densemed.nets.all_outputs`: ``{"inner_distance": (B, 1, *S),
"outer_distance": (B, 1, *S)[, "mask": (B, out_channels, *S)]}``. Eval mode: with the
segmentation head its logits ``(B, out_channels, *S)``; without it the inner distance
``(B, 1, *S)`` (the declared main head; ``out_channels`` is then unused). Declared heads
(:mod:`densemed.nets.heads`): ``mask`` logits, ``inner_distance`` and ``outer_distance`` regression.
"""

from __future__ import annotations

from densemed.nets.multitask import MultiTaskUNet
from densemed.nets.registry import register
from densemed.typing import LayerSpec


class DeepDistance(MultiTaskUNet):
    """Shared encoder, decoders for the inner and outer distance (and optionally segmentation).

    Args:
        in_channels: image channels.
        out_channels: segmentation classes with ``segmentation=True``; 2 otherwise.
        segmentation: add the third (segmentation) decoder of the extended variant.
        dims, depth, base_width, norm, act: as :class:`MultiTaskUNet`.

    Shape:
        ``(B, in_channels, *S)`` -> dict (training) or ``(B, out_channels, *S)`` (eval).

    Example:
        >>> net = DeepDistance(1, 2, segmentation=True, depth=2, base_width=4).eval()
        >>> print(net(torch.zeros(1, 1, 21, 40)).shape)
        torch.Size([1, 2, 21, 40])
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_channels: int = 2,
        segmentation: bool = False,
        dims: int = 2,
        depth: int = 4,
        base_width: int = 64,
        norm: LayerSpec = "batch",
        act: LayerSpec = "relu",
    ) -> None:
        dist = {"channels": 1, "kind": "regression"}
        tasks: dict[str, object] = {"inner_distance": dist, "outer_distance": dist}
        if segmentation:
            tasks = {"mask": out_channels, **tasks}
        super().__init__(
            in_channels, tasks, out_channels if segmentation else None, None,
            dims, depth, base_width, norm, act,
        )
        self.segmentation = segmentation
        self.default_instances = "deepdistance"  # h-maxima of the inner distance + watershed


@register("deepdistance", dims=(2, 3), small={"base_width": 4, "depth": 2, "segmentation": True})
def deepdistance(
    in_channels: int = 1,
    out_channels: int = 2,
    segmentation: bool = False,
    dims: int = 2,
    depth: int = 4,
    base_width: int = 64,
    norm: LayerSpec = "batch",
    act: LayerSpec = "relu",
) -> DeepDistance:
    """DeepDistance (Koyuncu 2020): inner + outer distance regression; segmentation=True: extended."""
    return DeepDistance(in_channels, out_channels, segmentation, dims, depth, base_width, norm, act)
