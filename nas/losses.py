"""The segmentation loss of the search and of the retraining: class-weighted cross-entropy with online
hard-example mining (OHEM); and the check that stops any of their losses from going NaN silently."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from nas.errors import DivergedError
from nas.io import kept_checkpoint
from search_spaces.upsample import resize

__all__ = ["OhemCrossEntropy", "check_finite"]


def check_finite(loss: torch.Tensor, what: str, advice: str, epoch: int | None = None,
                 checkpoint: Path | None = None) -> None:
    """Stop on a NaN / Inf `loss` before it reaches the weights, with one line: the value, the epoch, `advice`
    (what to lower) and, given the job's `checkpoint` file, what is kept to resume from."""
    value = loss.detach()
    if bool(torch.isfinite(value).all()):
        return
    shown = value.item() if value.numel() == 1 else value.cpu().tolist()
    when = f" at epoch {epoch}" if epoch is not None else ""
    kept = f"; {kept_checkpoint(checkpoint)}" if checkpoint is not None else ""
    raise DivergedError(f"the {what} became {shown}{when}: stopping ({advice}){kept}")


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
        logits = resize(logits, label.shape[-2:])
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
