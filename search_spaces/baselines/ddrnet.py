"""DDRNet-23-slim, written from scratch (no pretrained weights), scalable in width and depth.

DDRNet (Hong et al., "Deep Dual-resolution Networks for Real-time and Accurate Semantic Segmentation of Road
Scenes", 2021) splits a ResNet-like trunk at 1/8 into a high-resolution branch that stays at 1/8 and a
low-resolution branch that goes down to 1/64, exchanging information twice (bilateral fusion):

* trunk: two 3×3 stride-2 ConvBN-ReLU (1/4, C = 32 channels), two basic residual blocks at 1/4 (C), two at 1/8
  (2C, the first strided);
* stage 3: low branch two basic blocks to 1/16 (4C), high branch two basic blocks at 1/8 (2C); stage 4: low to
  1/32 (8C), high stays (2C). After each, bilateral fusion: the high branch adds the low one through a 1×1
  ConvBN and bilinear upsampling, the low one adds the high one through 3×3 stride-2 ConvBNs (one per halving,
  ReLU between them); both read the features before the fusion;
* stage 5: one bottleneck block (expansion 2) per branch: high 2C → 4C at 1/8, low 8C → 16C at 1/64;
* deep aggregation pyramid pooling module (DAPPM, §3.3) on the 1/64 feature: average pools (5/2, 9/4, 17/8 and
  global) each followed by BN-ReLU-1×1 conv to 128 channels, upsampled and fused hierarchically (each added
  to the previous scale's output and refined by a BN-ReLU-3×3 conv), concatenated with the unpooled 1×1 branch,
  compressed by BN-ReLU-1×1 conv to 4C, plus a BN-ReLU-1×1 conv shortcut;
* the DAPPM output upsampled to 1/8 and added to the high branch, then the head (BN-ReLU-3×3 conv to 64
  channels, BN-ReLU-1×1 conv to the classes), bilinear to the input. The auxiliary head (training only,
  ``aux8``) reads the high branch after the stage-3 fusion.

Residual blocks end without their ReLU where a fusion follows, as in the reference design; the ReLU is applied
when the next stage reads the feature. `width` scales C, the DAPPM's 128 and the head's 64 channels, `depth`
the basic blocks of stages 1–4 (2 each). ``feat8`` is the sum the head reads.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.baselines.common import BASELINES, conv_bn, init_weights, repeats, scaled
from search_spaces.upsample import resize

__all__ = ["DDRNet", "build_ddrnet"]

_PLANES = 32  # C
_BLOCKS = 2  # basic blocks per stage 1–4 (and per branch in stages 3–4)
_SPP = 128
_HEAD = 64
_POOLS = ((5, 2, 2), (9, 4, 4), (17, 8, 8))  # (kernel, stride, padding) of the DAPPM's local average pools


class _BasicBlock(nn.Module):
    """Two 3×3 ConvBNs with a shortcut (a 1×1 ConvBN when the shape changes), then ReLU unless `last`."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1, last: bool = False):
        super().__init__()
        self.body = nn.Sequential(conv_bn(c_in, c_out, 3, stride), conv_bn(c_out, c_out, 3, relu=False))
        same = stride == 1 and c_in == c_out
        self.shortcut: nn.Module = nn.Identity() if same else conv_bn(c_in, c_out, 1, stride, relu=False)
        self.last = last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.body(x) + self.shortcut(x)
        return out if self.last else F.relu(out)


class _Bottleneck(nn.Module):
    """1×1 → 3×3 (strided) → 1×1 ConvBNs to 2·`planes` channels with a shortcut; no final ReLU (a sum follows)."""

    def __init__(self, c_in: int, planes: int, stride: int = 1):
        super().__init__()
        c_out = 2 * planes
        self.body = nn.Sequential(conv_bn(c_in, planes, 1), conv_bn(planes, planes, 3, stride),
                                  conv_bn(planes, c_out, 1, relu=False))
        same = stride == 1 and c_in == c_out
        self.shortcut: nn.Module = nn.Identity() if same else conv_bn(c_in, c_out, 1, stride, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x) + self.shortcut(x)


def _stage(c_in: int, c_out: int, n: int, stride: int) -> nn.Sequential:
    """`n` basic blocks, the first possibly strided, the last without its ReLU."""
    blocks = [_BasicBlock(c_in if i == 0 else c_out, c_out, stride if i == 0 else 1, last=i == n - 1)
              for i in range(n)]
    return nn.Sequential(*blocks)


def _bn_relu_conv(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    """Pre-activation: BN, ReLU, then a bias-free convolution (the DAPPM's and the head's unit)."""
    return nn.Sequential(nn.BatchNorm2d(c_in), nn.ReLU(inplace=True),
                         nn.Conv2d(c_in, c_out, kernel, padding=kernel // 2, bias=False))


class _PooledScale(nn.Module):
    """One DAPPM scale: pool (local, or global when `pool` is None), BN-ReLU-1×1 conv, upsample, add the previous
    scale's output, BN-ReLU-3×3 conv."""

    def __init__(self, c_in: int, c_branch: int, pool: tuple[int, int, int] | None):
        super().__init__()
        self.pool: nn.Module = nn.AvgPool2d(*pool) if pool is not None else nn.Identity()
        self.global_pool = pool is None
        self.reduce = _bn_relu_conv(c_in, c_branch, 1)
        self.process = _bn_relu_conv(c_branch, c_branch, 3)

    def forward(self, x: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        pooled = x.mean(dim=(2, 3), keepdim=True) if self.global_pool else self.pool(x)
        up = resize(self.reduce(pooled), [x.shape[-2], x.shape[-1]])
        return self.process(up + previous)


class _DAPPM(nn.Module):
    """Deep aggregation pyramid pooling: `[B, c_in, h, w]` → `[B, c_out, h, w]`."""

    def __init__(self, c_in: int, c_branch: int, c_out: int):
        super().__init__()
        self.scale0 = _bn_relu_conv(c_in, c_branch, 1)
        self.scales = nn.ModuleList([_PooledScale(c_in, c_branch, p) for p in _POOLS])
        self.scales.append(_PooledScale(c_in, c_branch, None))
        self.compress = _bn_relu_conv(c_branch * (len(self.scales) + 1), c_out, 1)
        self.shortcut = _bn_relu_conv(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [self.scale0(x)]
        for scale in self.scales:
            outs.append(scale(x, outs[-1]))
        return self.compress(torch.cat(outs, dim=1)) + self.shortcut(x)


class _Head(nn.Module):
    """BN-ReLU-3×3 conv to `mid`, BN-ReLU-1×1 conv (with bias) to the class logits."""

    def __init__(self, c_in: int, mid: int, num_classes: int):
        super().__init__()
        self.conv = _bn_relu_conv(c_in, mid, 3)
        self.classifier = nn.Sequential(nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Conv2d(mid, num_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.conv(x))


class DDRNet(nn.Module):
    """DDRNet-23-slim at `width` × its channels and `depth` × its basic blocks (see the module docstring).

    `forward(x)`, `x` `[B, 3, H, W]`, returns ``logits`` `[B, K, H, W]`, ``logits8`` `[B, K, H/8, W/8]`,
    ``feat8`` `[B, 4C, H/8, W/8]` and, in training mode with `aux_heads`, ``aux8`` `[B, K, H, W]`.
    """

    def __init__(self, num_classes: int, width: float = 1.0, depth: float = 1.0, aux_heads: bool = True):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive but got {num_classes}.")
        self.num_classes, self.width, self.depth = num_classes, width, depth
        c, n = scaled(_PLANES, width), repeats(_BLOCKS, depth)
        self.stem = nn.Sequential(conv_bn(3, c, 3, 2), conv_bn(c, c, 3, 2))
        self.layer1 = _stage(c, c, n, 1)
        self.layer2 = _stage(c, 2 * c, n, 2)
        self.low3 = _stage(2 * c, 4 * c, n, 2)
        self.high3 = _stage(2 * c, 2 * c, n, 1)
        self.down3 = conv_bn(2 * c, 4 * c, 3, 2, relu=False)
        self.compress3 = conv_bn(4 * c, 2 * c, 1, relu=False)
        self.low4 = _stage(4 * c, 8 * c, n, 2)
        self.high4 = _stage(2 * c, 2 * c, n, 1)
        self.down4 = nn.Sequential(conv_bn(2 * c, 4 * c, 3, 2), conv_bn(4 * c, 8 * c, 3, 2, relu=False))
        self.compress4 = conv_bn(8 * c, 2 * c, 1, relu=False)
        self.low5 = _Bottleneck(8 * c, 8 * c, 2)
        self.high5 = _Bottleneck(2 * c, 2 * c)
        self.dappm = _DAPPM(16 * c, scaled(_SPP, width), 4 * c)
        head = scaled(_HEAD, width)
        self.head = _Head(4 * c, head, num_classes)
        self.aux = nn.ModuleDict()
        if aux_heads:
            self.aux["aux8"] = _Head(2 * c, head, num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = [x.shape[-2], x.shape[-1]]
        x8 = self.layer2(F.relu(self.layer1(self.stem(x))))
        size8 = [x8.shape[-2], x8.shape[-1]]
        low = self.low3(F.relu(x8))
        high = self.high3(F.relu(x8))
        low, high = low + self.down3(F.relu(high)), high + resize(self.compress3(F.relu(low)), size8)
        high3 = high
        low = self.low4(F.relu(low))
        high = self.high4(F.relu(high))
        low, high = low + self.down4(F.relu(high)), high + resize(self.compress4(F.relu(low)), size8)
        context = resize(self.dappm(self.low5(F.relu(low))), size8)
        feat8 = self.high5(F.relu(high)) + context
        logits8 = self.head(feat8)
        result = {"logits": resize(logits8, size), "logits8": logits8, "feat8": feat8}
        if self.training:
            for name, head in self.aux.items():
                result[name] = resize(head(high3), size)
        return result


@BASELINES.register("ddrnet")
def build_ddrnet(num_classes: int, width: float = 1.0, depth: float = 1.0, aux_heads: bool = True) -> DDRNet:
    """DDRNet-23-slim (Hong et al., 2021) at `width` × its channels and `depth` × its basic blocks."""
    return DDRNet(num_classes, width=width, depth=depth, aux_heads=aux_heads)
