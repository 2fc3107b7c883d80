"""Evaluating a segmentation model on a loader: a confusion matrix and its scores."""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn

from nas.metrics import ConfusionMatrix, SegScores
from search_spaces.upsample import resize

__all__ = ["evaluate"]


@torch.no_grad()
def evaluate(
    model: nn.Module | Callable[[torch.Tensor], dict[str, torch.Tensor]],
    loader: Iterable[dict[str, torch.Tensor]],
    num_classes: int,
    device: torch.device,
    size_buckets: tuple[str, ...] = (),
    ignore_index: int = 255,
    max_batches: int | None = None,
    combine: Callable[[ConfusionMatrix], None] | None = None,
) -> SegScores:
    """mIoU, per-class IoU, pixel accuracy (and per-size-bucket mIoU when batches carry a "size" map).

    `model(images)` returns a dict with "logits" `[B, K, H, W]` (any resolution: resized to the labels).
    The model is put in eval mode and restored afterwards. `combine` gets the filled matrix before scoring,
    e.g. :func:`nas.distributed.sum_confusion` to add the counts of the other torchrun ranks' shards.
    """
    was_training = getattr(model, "training", False)
    if isinstance(model, nn.Module):
        model.eval()
    cm = ConfusionMatrix(num_classes, ignore_index, size_buckets)
    try:
        for i, batch in enumerate(loader):
            if max_batches is not None and i >= max_batches:
                break
            image = batch["image"].to(device, non_blocking=True)
            label = batch["label"].to(device, non_blocking=True)
            logits = resize(model(image)["logits"], label.shape[-2:])
            sizes = batch.get("size")
            cm.update(logits.argmax(1), label, sizes.to(device) if sizes is not None else None)
    finally:
        if isinstance(model, nn.Module):
            model.train(was_training)
    if combine is not None:
        combine(cm)
    return cm.scores()
