"""Fixed-width pieces around the searched cells: stem, branch fusion steps, feature fusion, segmentation heads.

Shapes follow FasterSeg's derived network (`train/model_seg.py`, `seg_oprs.py`): the stem reaches 1/8 with
bias-free conv-BN-ReLU; a branch ending at 1/s climbs back to 1/8 through fusion steps (1×1 ConvBN-ReLU,
×2 upsampling, concatenation with the branch's last feature at the finer scale, 3×3 ConvBN-ReLU); the kept
branches are concatenated, fused by a 1×1 ConvBN-ReLU and classified by a head (3×3 ConvBN-ReLU whose width
is halved above 256 channels, then a 1×1 conv with bias).
"""

from __future__ import annotations

import torch
from torch import nn

from search_spaces.ops import ConvBNReLU, channels
from search_spaces.upsample import make_upsampler, resize

__all__ = ["Stem", "FusionStep", "FeatureFusion", "SegHead", "head_mid_channels"]


class Stem(nn.Module):
    """`[B, 3, H, W]` → `[B, C8, H/8, W/8]`: 3×3 stride-2 conv, then two blocks of two 3×3 convs (first strided)."""

    def __init__(self, fch: int, width: float, in_channels: int = 3):
        super().__init__()
        c2 = channels(2, fch, width) * 2
        c4 = channels(4, fch, width) * 2
        self.out_channels = channels(8, fch, width)
        self.layers = nn.Sequential(
            ConvBNReLU(in_channels, c2, 3, 2),
            ConvBNReLU(c2, c4, 3, 2),
            ConvBNReLU(c4, c4, 3, 1),
            ConvBNReLU(c4, self.out_channels, 3, 2),
            ConvBNReLU(self.out_channels, self.out_channels, 3, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class FusionStep(nn.Module):
    """Climb one scale: 1×1 ConvBN-ReLU `c_in → c_out`, ×2 upsampling, concat with the finer feature
    (`c_skip` channels), 3×3 ConvBN-ReLU `c_out + c_skip → c_out`."""

    def __init__(self, c_in: int, c_skip: int, c_out: int, upsample: str = "bilinear"):
        super().__init__()
        self.arm = ConvBNReLU(c_in, c_out, 1)
        self.up = make_upsampler(upsample, c_out, 2)
        self.refine = ConvBNReLU(c_out + c_skip, c_out, 3)

    def forward(self, coarse: torch.Tensor, fine: torch.Tensor) -> torch.Tensor:
        up = self.up(self.arm(coarse))
        if up.shape[-2:] != fine.shape[-2:]:
            up = resize(up, fine.shape[-2:], align_corners=True)
        return self.refine(torch.cat([up, fine], dim=1))


class FeatureFusion(nn.Module):
    """1×1 ConvBN-ReLU over the concatenated branch outputs."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = ConvBNReLU(c, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


def head_mid_channels(c_in: int) -> int:
    """FasterSeg's head keeps its input width up to 256 channels and halves it above."""
    return c_in if c_in <= 256 else c_in // 2


class SegHead(nn.Module):
    """3×3 ConvBN-ReLU then a 1×1 conv with bias to the class logits (main and auxiliary heads alike)."""

    def __init__(self, c_in: int, num_classes: int):
        super().__init__()
        mid = head_mid_channels(c_in)
        self.conv = ConvBNReLU(c_in, mid, 3)
        self.classifier = nn.Conv2d(mid, num_classes, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.conv(x))
