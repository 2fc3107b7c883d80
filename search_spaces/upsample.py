"""Upsamplers searchable at each fusion point and at the final ×8: bilinear or depthwise-separable PixelShuffle.

``pixel_shuffle`` follows the seed paper (Yang, Xue, Qi, Xin, LNCS 13018): depthwise 3×3 conv → pointwise 1×1
conv to C·r² channels → PixelShuffle(r), which learns the upsampling at the cost of a few parameters.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UPSAMPLERS", "Bilinear", "PixelShuffleUp", "make_upsampler"]

UPSAMPLERS: tuple[str, ...] = ("bilinear", "pixel_shuffle")


class Bilinear(nn.Module):
    """Bilinear resize by an integer factor (align_corners=True, as FasterSeg's heads)."""

    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = (x.shape[2] * self.factor, x.shape[3] * self.factor)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=True)


class PixelShuffleUp(nn.Module):
    """`[B, C, H, W]` → `[B, C, rH, rW]`: depthwise 3×3 → pointwise 1×1 to C·r² → PixelShuffle(r)."""

    def __init__(self, channels: int, factor: int):
        super().__init__()
        self.factor = factor
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, channels * factor * factor, 1, bias=True)
        self.shuffle = nn.PixelShuffle(factor)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.pointwise(self.depthwise(x)))


def make_upsampler(kind: str, channels: int, factor: int) -> nn.Module:
    """Build upsampler `kind` for `channels`-channel features and an integer `factor`."""
    if factor < 1:
        raise ValueError(f"upsampling factor must be positive but got {factor}.")
    if kind == "bilinear":
        return Bilinear(factor)
    if kind == "pixel_shuffle":
        return PixelShuffleUp(channels, factor)
    raise ValueError(f"unknown upsampler '{kind}' (known: {', '.join(UPSAMPLERS)})")
