"""Inference: sliding window with Gaussian blending, flip test-time augmentation, post-processing."""

from densemed.infer.sliding_window import flip_tta, sliding_window

__all__ = ["flip_tta", "sliding_window"]
