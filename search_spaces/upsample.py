"""Upsamplers searchable at each fusion point and at the final ×8: bilinear or depthwise-separable PixelShuffle.

``pixel_shuffle`` follows the seed paper (Yang, Xue, Qi, Xin, LNCS 13018): depthwise 3×3 conv → pointwise 1×1
conv to C·r² channels → PixelShuffle(r), which learns the upsampling at the cost of a few parameters.

Its pointwise conv starts from ICNR (Aitken et al., "Checkerboard artifact free sub-pixel convolution", 2017) by
default: a C-output kernel W0 is drawn as PyTorch would and each of its filters repeated r² times in a row
(``repeat_interleave``), because PixelShuffle fills output channel c at sub-position (i, j) from input channel
c·r² + i·r + j. At initialisation the upsampler then equals nearest-neighbour upsampling of the C-channel conv
W0: no checkerboard, and the learned upsampler starts where a fixed one is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["UPSAMPLERS", "resize", "Bilinear", "PixelShuffleUp", "make_upsampler", "init_pixel_shuffle"]

UPSAMPLERS: tuple[str, ...] = ("bilinear", "pixel_shuffle")


def resize(x: torch.Tensor, size: list[int], align_corners: bool = False) -> torch.Tensor:
    """Bilinear resize of `[B, C, h, w]` to `size` = [H, W]; `x` itself when it already has that size.

    `align_corners` False samples at half-pixel centres (the baselines, HRNet, the losses), True maps the corner
    pixels onto each other (FasterSeg's operators and heads). While tracing (ONNX, ``torch.jit.trace``) the resize
    is always recorded, so a graph traced at one size stays right at others; TorchScript keeps the check.
    """
    if not torch.jit.is_tracing() and x.shape[-2] == size[0] and x.shape[-1] == size[1]:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=align_corners)


class Bilinear(nn.Module):
    """Bilinear resize by an integer factor (align_corners=True, as FasterSeg's heads)."""

    def __init__(self, factor: int):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return resize(x, [x.shape[2] * self.factor, x.shape[3] * self.factor], align_corners=True)


class PixelShuffleUp(nn.Module):
    """`[B, C, H, W]` → `[B, C, rH, rW]`: depthwise 3×3 → pointwise 1×1 to C·r² → PixelShuffle(r)."""

    def __init__(self, channels: int, factor: int, icnr: bool = True):
        super().__init__()
        self.factor = factor
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1, groups=channels, bias=False)
        self.pointwise = nn.Conv2d(channels, channels * factor * factor, 1, bias=True)
        self.shuffle = nn.PixelShuffle(factor)
        if icnr:
            self.reset_pointwise(icnr=True)

    def reset_pointwise(self, icnr: bool = True) -> None:
        """Re-draw the pointwise conv: ICNR (each of C filters repeated r² times) or PyTorch's plain default."""
        if not icnr:
            self.pointwise.reset_parameters()
            return
        r2 = self.factor * self.factor
        seed = nn.Conv2d(self.pointwise.in_channels, self.pointwise.out_channels // r2, 1, bias=True)
        seed.to(device=self.pointwise.weight.device, dtype=self.pointwise.weight.dtype)
        with torch.no_grad():
            self.pointwise.weight.copy_(seed.weight.repeat_interleave(r2, dim=0))
            self.pointwise.bias.copy_(seed.bias.repeat_interleave(r2, dim=0))

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


def init_pixel_shuffle(model: nn.Module, icnr: bool) -> int:
    """Re-draw every PixelShuffle upsampler's pointwise conv in `model` (ICNR or plain); returns how many."""
    count = 0
    for module in model.modules():
        if isinstance(module, PixelShuffleUp):
            module.reset_pointwise(icnr)
            count += 1
    return count
