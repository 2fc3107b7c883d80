"""Pieces every hand-designed baseline family shares: the family registry, width/depth scaling, conv-BN blocks,
segmentation heads and weight initialisation.

A family is a builder ``(num_classes, width=1.0, depth=1.0, aux_heads=True) -> nn.Module`` registered in
:data:`BASELINES`. Its network follows the forward contract of :class:`search_spaces.builder.SegNet`, so that
training, distillation, evaluation and export treat it like a searched student: for ``x`` `[B, 3, H, W]` it
returns ``logits`` `[B, K, H, W]`, ``logits8`` `[B, K, H/8, W/8]` (the main head before upsampling), ``feat8``
`[B, C, H/8, W/8]` (the feature the main head reads, for pair-wise and feature KD) and, in training mode with
auxiliary heads, ``aux*`` logits `[B, K, H, W]`. H and W multiples of 32 give exact 1/s features; other sizes
run too (a 1/s feature is then ceil(H/s) high). The training-only heads live under the
attribute ``aux``, so a model file's deployable state leaves them out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from nas.registry import Registry

__all__ = ["BASELINES", "scaled", "repeats", "make_stages", "conv_bn", "SegHead", "init_weights"]

BASELINES: Registry[Callable[..., nn.Module]] = Registry("baseline family")


def scaled(channels: int, width: float) -> int:
    """`channels` × `width`, rounded to the nearest multiple of 8, at least 8."""
    return max(8, int(channels * width / 8 + 0.5) * 8)


def repeats(n: int, depth: float) -> int:
    """`n` repeated blocks × `depth`, rounded, at least 1."""
    return max(1, int(n * depth + 0.5))


def make_stages(block: Callable[[int, int, int], nn.Module], c_in: int, stages: Sequence[tuple[int, int]],
                width: float, depth: float) -> tuple[nn.ModuleList, list[int]]:
    """The stages (channels, blocks) of a backbone, each `nn.Sequential` of blocks `block(c_in, c_out, stride)`: the
    first halves the resolution, the others (`blocks` − 1, × `depth`) keep it; channels are `scaled` by `width`.
    Returns the stages and each one's output channels."""
    out, channels = nn.ModuleList(), []
    for c, n in stages:
        c = scaled(c, width)
        out.append(nn.Sequential(block(c_in, c, 2), *(block(c, c, 1) for _ in range(repeats(n - 1, depth)))))
        channels.append(c)
        c_in = c
    return out, channels


def conv_bn(c_in: int, c_out: int, kernel: int = 3, stride: int = 1, groups: int = 1,
            relu: bool = True) -> nn.Sequential:
    """A bias-free `kernel`×`kernel` convolution ("same" padding), BatchNorm, and a ReLU unless `relu=False`."""
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SegHead(nn.Module):
    """3×3 ConvBN-ReLU to `mid` channels, optional dropout, 1×1 convolution (with bias) to the class logits."""

    def __init__(self, c_in: int, mid: int, num_classes: int, dropout: float = 0.0):
        super().__init__()
        self.conv = conv_bn(c_in, mid, 3)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.classifier = nn.Conv2d(mid, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """`[B, c_in, h, w]` → logits `[B, K, h, w]`."""
        return self.classifier(self.drop(self.conv(x)))


def init_weights(module: nn.Module) -> None:
    """He initialisation (fan-out) for convolutions, unit scale and zero shift for BatchNorm, zero conv biases."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
