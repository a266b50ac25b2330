"""Recipes and checkpoints from before tasks had their own recipe section, read by moving keys.

Until the task seam, task options lived in other sections: ``task: sr`` with ``data.sr``;
``data.instances`` / ``data.targets`` / ``infer.instances`` for instance recipes;
``train.val_full_images`` for super-resolution. :func:`migrate` moves them into ``task``, so old
recipes keep working and old checkpoints still predict.
"""

from __future__ import annotations

from typing import Any


def migrate(raw: dict[str, Any]) -> dict[str, Any]:
    """Move the task keys of older recipes and checkpoints into the ``task`` section (a new dict).

    ``task: sr`` + ``data.sr`` -> ``task: {name: image, factor, axis}``; ``data.instances`` /
    ``data.targets`` / ``infer.instances`` -> ``task: {name: instances, targets, postprocess}``;
    ``train.val_full_images`` -> ``task.val_full_images``.
    """
    import copy

    raw = copy.deepcopy(raw)
    task = raw.get("task")
    data = raw.get("data") if isinstance(raw.get("data"), dict) else {}
    train = raw.get("train") if isinstance(raw.get("train"), dict) else {}
    infer = raw.get("infer") if isinstance(raw.get("infer"), dict) else {}
    legacy = any(k in data for k in ("sr", "instances", "targets")) or "val_full_images" in train
    legacy = legacy or "instances" in infer or task in ("sr",)
    if not legacy:
        return raw
    if isinstance(task, dict):
        new = dict(task)
    else:
        new = {"name": "image" if task == "sr" else (task or "segmentation")}
    sr = data.pop("sr", None) or {}
    if new["name"] == "image":
        new.update({k: v for k, v in sr.items() if k in ("factor", "axis")})
    instances = data.pop("instances", False)
    targets = data.pop("targets", None)
    post = infer.pop("instances", None)
    if instances and new["name"] == "segmentation":
        new["name"] = "instances"
    if targets:
        new["targets"] = targets
    if post and new["name"] == "instances":
        new["postprocess"] = post
    if "val_full_images" in train:
        value = train.pop("val_full_images")
        if new["name"] == "image":
            new["val_full_images"] = value
    raw["task"] = new
    return raw
