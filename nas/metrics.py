"""Segmentation metrics from a confusion matrix: mIoU, per-class IoU, pixel accuracy, per-size-bucket IoU."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

__all__ = ["ConfusionMatrix", "SegScores"]


@dataclass(frozen=True)
class SegScores:
    """Scores of one evaluation; IoU of a class absent from both prediction and label is NaN (left out of mIoU)."""

    miou: float
    pixel_acc: float
    iou: tuple[float, ...]  # per class
    size_miou: dict[str, float]  # per object-size bucket, when the dataset gives sizes

    def as_row(self, class_names: tuple[str, ...] | None = None, prefix: str = "") -> dict[str, float]:
        row = {f"{prefix}miou": self.miou, f"{prefix}pixel_acc": self.pixel_acc}
        names = class_names or tuple(str(i) for i in range(len(self.iou)))
        row.update({f"{prefix}iou_{n}": v for n, v in zip(names, self.iou)})
        row.update({f"{prefix}miou_{b}": v for b, v in self.size_miou.items()})
        return row


def _iou_from(mat: np.ndarray) -> np.ndarray:
    tp = np.diag(mat).astype(np.float64)
    denom = mat.sum(0) + mat.sum(1) - np.diag(mat)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)


class ConfusionMatrix:
    """Accumulates a `[K, K]` matrix (rows = label, columns = prediction), skipping `ignore_index` pixels.

    Size buckets: when `update` gets a `sizes` map (`[B, H, W]`, 0 = background, b ≥ 1 = pixel of an object
    in bucket b), bucket b's matrix counts the pixels of bucket-b objects plus all background pixels, so its
    mIoU measures how well objects of that size are found without crediting the others.
    """

    def __init__(self, num_classes: int, ignore_index: int = 255, size_buckets: tuple[str, ...] = ()):
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive but got {num_classes}.")
        self.num_classes = num_classes
        self.ignore_index = ignore_index
        self.size_buckets = size_buckets
        self.mat = np.zeros((num_classes, num_classes), dtype=np.int64)
        self.bucket_mats = [np.zeros_like(self.mat) for _ in size_buckets]

    def _count(self, pred: torch.Tensor, label: torch.Tensor) -> np.ndarray:
        k = self.num_classes
        idx = label.to(torch.int64) * k + pred.to(torch.int64)
        return torch.bincount(idx, minlength=k * k).reshape(k, k).cpu().numpy()

    @torch.no_grad()
    def update(self, pred: torch.Tensor, label: torch.Tensor, sizes: torch.Tensor | None = None) -> None:
        """`pred`: `[B, H, W]` class ids or `[B, K, H, W]` logits; `label`: `[B, H, W]` with ignore pixels."""
        if pred.dim() == label.dim() + 1:
            pred = pred.argmax(1)
        if pred.shape != label.shape:
            raise ValueError(f"prediction shape {tuple(pred.shape)} does not match label shape {tuple(label.shape)}")
        pred, label = pred.flatten(), label.flatten()
        valid = label != self.ignore_index
        self.mat += self._count(pred[valid], label[valid])
        if sizes is not None and self.size_buckets:
            sizes = sizes.flatten()
            for b in range(len(self.size_buckets)):
                keep = valid & ((sizes == b + 1) | (sizes == 0))
                self.bucket_mats[b] += self._count(pred[keep], label[keep])

    def merge(self, other: ConfusionMatrix) -> None:
        self.mat += other.mat
        for a, b in zip(self.bucket_mats, other.bucket_mats):
            a += b

    def scores(self) -> SegScores:
        iou = _iou_from(self.mat)
        total = self.mat.sum()
        acc = float(np.diag(self.mat).sum() / total) if total else float("nan")
        size_miou = {}
        for name, mat in zip(self.size_buckets, self.bucket_mats):
            # only object classes that occur in this bucket count, plus background; no objects: n/a
            present = mat.sum(1) > 0
            vals = _iou_from(mat)[present]
            has_objects = present[1:].any()
            size_miou[name] = float(np.nanmean(vals)) if has_objects else float("nan")
        miou = float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")
        return SegScores(miou=miou, pixel_acc=acc, iou=tuple(float(v) for v in iou), size_miou=size_miou)
