"""Inference: sliding window with Gaussian blending, flip TTA, whole-image runners, post-processing."""

from densemed.infer.sliding_window import flip_tta, sliding_window, sliding_window_labels

__all__ = ["flip_tta", "sliding_window", "sliding_window_labels"]
