"""BiSeNetV2, written from scratch (no pretrained weights), scalable in width and depth.

BiSeNetV2 (Yu et al., "BiSeNet V2: Bilateral Network with Guided Aggregation for Real-time Semantic
Segmentation", IJCV 2021) runs two branches side by side and merges them once:

* detail branch (§3.2, Table 1): three stages of 3×3 ConvBN-ReLU, each starting with a stride-2 conv (2, 3 and
  3 convs), widths 64, 64, 128 → `[B, 128, H/8, W/8]`: wide and shallow, for spatial detail;
* semantic branch (§3.3, λ = 1/4 of the detail widths): the stem block (a 3×3 stride-2 conv, then a split into
  a 1×1 conv + 3×3 stride-2 conv path and a 3×3 stride-2 max-pool path, concatenated and fused by a 3×3 conv)
  → 16 channels at 1/4; gather-and-expand (GE) layers → 32 at 1/8, 64 at 1/16, 128 at 1/32 (one stride-2 GE
  layer per stage followed by 1, 1 and 3 stride-1 ones); the context embedding block (global average pooling,
  BN, 1×1 ConvBN-ReLU, broadcast residual sum, 3×3 ConvBN-ReLU). A GE layer (Fig. 5) is a 3×3 ConvBN-ReLU, a
  3×3 depth-wise ConvBN expanding the channels 6×, a 1×1 ConvBN projection and an identity shortcut; the
  stride-2 form has two depth-wise convs (the first strided) and a depth-wise + 1×1 ConvBN shortcut;
* bilateral guided aggregation (BGA, Fig. 6): each branch gates the other at the other's resolution — detail
  (depth-wise 3×3 ConvBN + 1×1 conv) × sigmoid(semantic 3×3 ConvBN upsampled ×4) at 1/8, and detail (3×3
  stride-2 ConvBN + 3×3 stride-2 average pool) × sigmoid(semantic depth-wise 3×3 ConvBN + 1×1 conv) at 1/32,
  upsampled ×4 — summed and fused by a 3×3 ConvBN-ReLU;
* segmentation head: 3×3 ConvBN-ReLU to 1024 channels, dropout 0.1, 1×1 conv to the classes, bilinear ×8;
* booster heads (§3.5, training only): the same head (128 channels) on the semantic branch's 1/4, 1/8, 1/16
  feature and its 1/32 feature before the context block → ``aux4``, ``aux8``, ``aux16``, ``aux32``.

`width` scales every channel count (the semantic branch's 16 channels included; the GE expansion stays 6×),
`depth` the repeated layers: the stride-1 convs of the detail stages (1, 2, 2) and the stride-1 GE layers
(1, 1, 3). ``feat8`` is the BGA output.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.baselines.common import (
    BASELINES,
    SegHead,
    conv_bn,
    init_weights,
    make_stages,
    repeats,
    scaled,
)
from search_spaces.upsample import resize

__all__ = ["BiSeNetV2", "build_bisenetv2"]

_DETAIL = ((64, 2), (64, 3), (128, 3))  # (channels, convs) per detail stage; the first conv of each is stride 2
_SEMANTIC = ((32, 2), (64, 2), (128, 4))  # (channels, GE layers) per semantic stage at 1/8, 1/16, 1/32
_STEM = 16
_EXPAND = 6
_HEAD_MID = 1024
_BOOSTER_MID = 128


class _DetailBranch(nn.Module):
    """`[B, 3, H, W]` → `[B, C, H/8, W/8]`: three stages of 3×3 ConvBN-ReLU, each opened by a stride-2 conv."""

    def __init__(self, width: float, depth: float):
        super().__init__()
        layers: list[nn.Module] = []
        c_prev = 3
        for c, n in _DETAIL:
            c = scaled(c, width)
            layers.append(conv_bn(c_prev, c, 3, 2))
            layers.extend(conv_bn(c, c, 3) for _ in range(repeats(n - 1, depth)))
            c_prev = c
        self.layers = nn.Sequential(*layers)
        self.out_channels = c_prev

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class _StemBlock(nn.Module):
    """`[B, 3, H, W]` → `[B, C, H/4, W/4]`: 3×3 stride-2 conv, then a conv path and a max-pool path, fused."""

    def __init__(self, c: int):
        super().__init__()
        half = max(8, c // 2)
        self.conv = conv_bn(3, c, 3, 2)
        self.left = nn.Sequential(conv_bn(c, half, 1), conv_bn(half, c, 3, 2))
        self.right = nn.MaxPool2d(3, 2, 1)
        self.fuse = conv_bn(2 * c, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x)
        return self.fuse(torch.cat([self.left(x), self.right(x)], dim=1))


class _GatherExpand(nn.Module):
    """A gather-and-expand layer: 3×3 ConvBN-ReLU, depth-wise expansion (×6), 1×1 projection, shortcut, ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        mid = c_in * _EXPAND
        self.gather = conv_bn(c_in, c_in, 3)
        if stride == 1:
            self.expand = conv_bn(c_in, mid, 3, groups=c_in, relu=False)
        else:
            self.expand = nn.Sequential(conv_bn(c_in, mid, 3, 2, groups=c_in, relu=False),
                                        conv_bn(mid, mid, 3, groups=mid, relu=False))
        self.project = conv_bn(mid, c_out, 1, relu=False)
        if stride == 1 and c_in == c_out:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(conv_bn(c_in, c_in, 3, stride, groups=c_in, relu=False),
                                          conv_bn(c_in, c_out, 1, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.project(self.expand(self.gather(x))) + self.shortcut(x))


class _ContextEmbedding(nn.Module):
    """Global average pooling → BN → 1×1 ConvBN-ReLU, added to every position, then a 3×3 ConvBN-ReLU."""

    def __init__(self, c: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(c)
        self.gap_conv = conv_bn(c, c, 1)
        self.out = conv_bn(c, c, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        context = self.gap_conv(self.bn(x.mean(dim=(2, 3), keepdim=True)))
        return self.out(x + context)


class _SemanticBranch(nn.Module):
    """`[B, 3, H, W]` → the stage outputs at 1/4, 1/8, 1/16, 1/32 (before the context block) and the context
    block's output at 1/32."""

    def __init__(self, width: float, depth: float):
        super().__init__()
        c_stem = scaled(_STEM, width)
        self.stem = _StemBlock(c_stem)
        self.stages, channels = make_stages(_GatherExpand, c_stem, _SEMANTIC, width, depth)
        self.stage_channels = [c_stem, *channels]
        self.context = _ContextEmbedding(channels[-1])
        self.out_channels = channels[-1]

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        for stage in self.stages:
            feats.append(stage(feats[-1]))
        feats.append(self.context(feats[-1]))
        return feats


class _GuidedAggregation(nn.Module):
    """Bilateral guided aggregation of the detail (1/8, `c_d`) and semantic (1/32, `c_s`) features → `c_d` at 1/8."""

    def __init__(self, c_d: int, c_s: int):
        super().__init__()
        self.detail_keep = nn.Sequential(conv_bn(c_d, c_d, 3, groups=c_d, relu=False),
                                         nn.Conv2d(c_d, c_d, 1, bias=False))
        self.detail_down = nn.Sequential(conv_bn(c_d, c_d, 3, 2, relu=False), nn.AvgPool2d(3, 2, 1))
        self.semantic_up = conv_bn(c_s, c_d, 3, relu=False)
        self.semantic_keep = nn.Sequential(conv_bn(c_s, c_s, 3, groups=c_s, relu=False),
                                           nn.Conv2d(c_s, c_d, 1, bias=False))
        self.fuse = conv_bn(c_d, c_d, 3)

    def forward(self, detail: torch.Tensor, semantic: torch.Tensor) -> torch.Tensor:
        size = [detail.shape[-2], detail.shape[-1]]
        fine = self.detail_keep(detail) * torch.sigmoid(resize(self.semantic_up(semantic), size))
        coarse = self.detail_down(detail) * torch.sigmoid(self.semantic_keep(semantic))
        return self.fuse(fine + resize(coarse, size))


class BiSeNetV2(nn.Module):
    """BiSeNetV2 at `width` × the paper's channels and `depth` × its repeated layers (see the module docstring).

    `forward(x)`, `x` `[B, 3, H, W]` with H, W multiples of 32, returns ``logits`` `[B, K, H, W]`, ``logits8``
    `[B, K, H/8, W/8]`, ``feat8`` `[B, C, H/8, W/8]` and, in training mode with `aux_heads`, the booster logits
    ``aux4`` … ``aux32`` `[B, K, H, W]`.
    """

    def __init__(self, num_classes: int, width: float = 1.0, depth: float = 1.0, aux_heads: bool = True):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive but got {num_classes}.")
        self.num_classes, self.width, self.depth = num_classes, width, depth
        self.detail = _DetailBranch(width, depth)
        self.semantic = _SemanticBranch(width, depth)
        c_d = self.detail.out_channels
        self.bga = _GuidedAggregation(c_d, self.semantic.out_channels)
        self.head = SegHead(c_d, scaled(_HEAD_MID, width), num_classes, dropout=0.1)
        self.aux = nn.ModuleDict()
        if aux_heads:
            mid = scaled(_BOOSTER_MID, width)
            for scale, c in zip((4, 8, 16, 32), self.semantic.stage_channels):
                self.aux[f"aux{scale}"] = SegHead(c, mid, num_classes, dropout=0.1)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = [x.shape[-2], x.shape[-1]]
        sem = self.semantic(x)
        feat8 = self.bga(self.detail(x), sem[-1])
        logits8 = self.head(feat8)
        result = {"logits": resize(logits8, size), "logits8": logits8, "feat8": feat8}
        if self.training:
            stages = {"aux4": sem[0], "aux8": sem[1], "aux16": sem[2], "aux32": sem[3]}
            for name, head in self.aux.items():
                result[name] = resize(head(stages[name]), size)
        return result


@BASELINES.register("bisenetv2")
def build_bisenetv2(num_classes: int, width: float = 1.0, depth: float = 1.0, aux_heads: bool = True) -> BiSeNetV2:
    """BiSeNetV2 (Yu et al., IJCV 2021) at `width` × its channels and `depth` × its repeated layers."""
    return BiSeNetV2(num_classes, width=width, depth=depth, aux_heads=aux_heads)
