"""Candidate operators of the FasterSeg cell, in a plain form (derived networks) and a width-sliced form (supernet).

The five operators (FasterSeg, ICLR 2020, §3.2 and its `operations.py`), none with a residual:

* ``skip``: identity; a factorized reduce when the cell strides or changes width;
* ``conv``: 3×3 conv-BN-ReLU;  ``conv_2x``: two of them;
* ``zoomed_conv`` / ``zoomed_conv_2x``: bilinear ×0.5 → the convs → bilinear back to the input size
  (the way back is skipped when the cell strides, so a strided zoomed op outputs half the input size).

Both forms read one :class:`OpSpec` and apply the same sequence (zoom, convs, resize, ReLU), so a slimmable op
at a given width computes exactly what the plain op with the sliced weights computes (tested).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from nas.registry import Registry
from search_spaces.upsample import resize

__all__ = [
    "OpSpec",
    "OPS",
    "PRIMITIVES",
    "register_op",
    "ConvBN",
    "ConvBNReLU",
    "FactorizedReduce",
    "Operator",
    "SlimConvBN",
    "SlimOperator",
    "channels",
]


@dataclass(frozen=True)
class OpSpec:
    """What an operator is, independent of its channels: number of 3×3 convs and whether it works zoomed out."""

    name: str
    convs: int  # 0 for skip
    zoomed: bool = False


OPS: Registry[OpSpec] = Registry("operator")


def register_op(spec: OpSpec) -> OpSpec:
    """Add an operator to the registry under its name; a duplicate name raises."""
    return OPS.add(spec.name, spec)


for _spec in (
    OpSpec("skip", 0),
    OpSpec("conv", 1),
    OpSpec("conv_2x", 2),
    OpSpec("zoomed_conv", 1, zoomed=True),
    OpSpec("zoomed_conv_2x", 2, zoomed=True),
):
    register_op(_spec)

PRIMITIVES: tuple[str, ...] = tuple(OPS)


def channels(scale: int, fch: int, width: float) -> int:
    """Channels of a feature at 1/`scale` with width multiplier `width` (FasterSeg's `num_filters`)."""
    return int(round(scale * fch * width))


def _half(x: torch.Tensor) -> torch.Tensor:
    return resize(x, [x.shape[2] // 2, x.shape[3] // 2], align_corners=True)


class ConvBN(nn.Module):
    """k×k conv (no bias) → BatchNorm; `relu` adds the activation."""

    def __init__(self, c_in: int, c_out: int, kernel: int = 3, stride: int = 1, relu: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.conv(x))
        return F.relu(x) if self.relu else x


def ConvBNReLU(c_in: int, c_out: int, kernel: int = 3, stride: int = 1) -> ConvBN:  # noqa: N802
    """Conv-BN-ReLU, the unit FasterSeg calls ConvNorm."""
    return ConvBN(c_in, c_out, kernel, stride, relu=True)


class FactorizedReduce(nn.Module):
    """`skip` when shapes change: 1×1 conv-BN-ReLU at stride 1; two offset strided 1×1 convs concatenated at
    stride 2 (DARTS' factorized reduce), so no pixel is dropped."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.stride = stride
        if stride == 1:
            self.conv1 = nn.Conv2d(c_in, c_out, 1, bias=False)
            self.conv2 = None
        else:
            half = c_out // 2
            self.conv1 = nn.Conv2d(c_in, half, 1, stride=2, bias=False)
            self.conv2 = nn.Conv2d(c_in, c_out - half, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.conv2 is None:
            out = self.conv1(x)
        else:
            out = torch.cat([self.conv1(x), self.conv2(x[:, :, 1:, 1:])], dim=1)
        return F.relu(self.bn(out))


class Operator(nn.Module):
    """A plain candidate operator with fixed channels, used by derived networks."""

    def __init__(self, op: str, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        spec = OPS[op]
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2 but got {stride}.")
        self.op, self.zoomed, self.stride = op, spec.zoomed, stride
        self.skip: nn.Module | None = None
        self.units = nn.ModuleList()
        if spec.convs == 0:
            same = c_in == c_out and stride == 1
            self.skip = nn.Identity() if same else FactorizedReduce(c_in, c_out, stride)
        for i in range(spec.convs):
            conv_stride = stride if (i == 0 and not spec.zoomed) else 1
            self.units.append(ConvBN(c_in if i == 0 else c_out, c_out, 3, conv_stride, relu=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.skip is not None:
            return self.skip(x)
        size = [x.shape[2], x.shape[3]]
        out = _half(x) if self.zoomed else x
        n = len(self.units)
        for i, unit in enumerate(self.units):
            out = unit(out)
            if i < n - 1:
                out = F.relu(out)
        if self.zoomed and self.stride == 1:
            out = resize(out, size, align_corners=True)
        return F.relu(out)


class SlimConvBN(nn.Module):
    """A 3×3 conv whose largest kernel is sliced to the requested in/out channels, with one BatchNorm per
    output width (slimmable networks, Yu et al. ICLR 2019: BN statistics differ per width)."""

    def __init__(self, c_in_max: int, c_out_choices: Sequence[int], kernel: int = 3, stride: int = 1):
        super().__init__()
        self.c_out_choices = tuple(int(c) for c in c_out_choices)
        c_out_max = max(self.c_out_choices)
        self.stride, self.padding = stride, kernel // 2
        self.weight = nn.Parameter(torch.empty(c_out_max, c_in_max, kernel, kernel))
        nn.init.kaiming_normal_(self.weight, mode="fan_out", nonlinearity="relu")
        self.bns = nn.ModuleList(nn.BatchNorm2d(c) for c in self.c_out_choices)

    def forward(self, x: torch.Tensor, width_idx: int, relu: bool = True) -> torch.Tensor:
        c_out = self.c_out_choices[width_idx]
        w = self.weight[:c_out, : x.shape[1]]
        out = self.bns[width_idx](F.conv2d(x, w, None, self.stride, self.padding))
        return F.relu(out) if relu else out


class SlimOperator(nn.Module):
    """The supernet's version of an operator: any input width up to `c_in_max`, output width picked per call.

    `skip` with equal shapes is the identity only when the widths agree; otherwise a sliced 1×1
    factorized reduce, as in the plain form.
    """

    def __init__(self, op: str, c_in_max: int, c_out_choices: Sequence[int], stride: int = 1):
        super().__init__()
        spec = OPS[op]
        self.op, self.zoomed, self.stride = op, spec.zoomed, stride
        self.c_out_choices = tuple(int(c) for c in c_out_choices)
        self.units = nn.ModuleList()
        self.reduce: nn.ModuleList | None = None
        if spec.convs == 0:
            c_max = max(self.c_out_choices)
            n_convs = 1 if stride == 1 else 2
            self.reduce_out = [
                (c // 2, c - c // 2) if stride == 2 else (c,) for c in self.c_out_choices
            ]
            self.reduce = nn.ModuleList(
                nn.Conv2d(c_in_max, c_max, 1, stride=stride, bias=False) for _ in range(n_convs)
            )
            self.reduce_bns = nn.ModuleList(nn.BatchNorm2d(c) for c in self.c_out_choices)
        for i in range(spec.convs):
            conv_stride = stride if (i == 0 and not spec.zoomed) else 1
            self.units.append(SlimConvBN(c_in_max if i == 0 else max(self.c_out_choices), self.c_out_choices,
                                         3, conv_stride))

    def _skip(self, x: torch.Tensor, width_idx: int) -> torch.Tensor:
        c_out = self.c_out_choices[width_idx]
        if self.stride == 1 and x.shape[1] == c_out:
            return x
        parts = self.reduce_out[width_idx]
        outs = []
        for i, (conv, c) in enumerate(zip(self.reduce, parts)):
            xi = x if i == 0 else x[:, :, 1:, 1:]
            outs.append(F.conv2d(xi, conv.weight[:c, : x.shape[1]], None, self.stride))
        return F.relu(self.reduce_bns[width_idx](torch.cat(outs, 1) if len(outs) > 1 else outs[0]))

    def forward(self, x: torch.Tensor, width_idx: int) -> torch.Tensor:
        if self.reduce is not None:
            return self._skip(x, width_idx)
        size = [x.shape[2], x.shape[3]]
        out = _half(x) if self.zoomed else x
        n = len(self.units)
        for i, unit in enumerate(self.units):
            out = unit(out, width_idx, relu=i < n - 1)
        if self.zoomed and self.stride == 1:
            out = resize(out, size, align_corners=True)
        return F.relu(out)
