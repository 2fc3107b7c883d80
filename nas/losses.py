"""Segmentation losses: class-weighted cross-entropy with online hard-example mining (OHEM)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["OhemCrossEntropy", "resize_logits"]


def resize_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize `[B, K, h, w]` logits to `size` when they differ."""
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)


class OhemCrossEntropy(nn.Module):
    """Cross-entropy over the hard pixels only (Shrivastava et al., CVPR 2016; FasterSeg's `ProbOhemCrossEntropy2d`).

    A pixel is hard when the predicted probability of its true class is below `thresh`; at least `min_kept`
    pixels (the least confident) are kept so the loss never goes empty. `thresh = 1` is plain cross-entropy.
    Logits `[B, K, h, w]` are resized to the labels `[B, H, W]`; `ignore_index` pixels never count.
    """

    def __init__(self, thresh: float = 0.7, min_kept: int = 10_000, weight: torch.Tensor | None = None,
                 ignore_index: int = 255):
        super().__init__()
        if not 0 < thresh <= 1:
            raise ValueError(f"OHEM threshold must be in (0, 1] but got {thresh}.")
        self.thresh, self.min_kept, self.ignore_index = thresh, min_kept, ignore_index
        self.register_buffer("weight", weight if weight is not None else None, persistent=False)

    def forward(self, logits: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        logits = resize_logits(logits, tuple(label.shape[-2:]))
        pixel_loss = F.cross_entropy(logits, label, weight=self.weight, ignore_index=self.ignore_index,
                                     reduction="none").flatten()
        valid = (label != self.ignore_index).flatten()
        if not valid.any():
            return logits.sum() * 0.0
        if self.thresh < 1:
            with torch.no_grad():
                prob = logits.detach().softmax(1)
                safe = label.clone()
                safe[safe == self.ignore_index] = 0
                p_true = prob.gather(1, safe.unsqueeze(1)).flatten()
                p_true[~valid] = 2.0  # never mined
                n_valid = int(valid.sum())
                k = min(self.min_kept, n_valid)
                thresh = self.thresh
                if k > 0:
                    kth = torch.kthvalue(p_true, k).values.item()
                    thresh = max(thresh, kth)
                keep = valid & (p_true <= thresh)
        else:
            keep = valid
        if self.weight is not None:
            safe = label.flatten().clone()
            safe[~valid] = 0
            w = self.weight[safe]
            return (pixel_loss * keep).sum() / (w * keep).sum().clamp_min(1e-12)
        return pixel_loss[keep].mean()
