"""An HRNet-like teacher, written from scratch (no pretrained weights).

HRNet (Wang et al., "Deep High-Resolution Representation Learning for Visual Recognition", TPAMI 2020) keeps
a high-resolution stream through the whole network and adds a lower-resolution stream per stage, exchanging
information between all streams at the end of every module; the segmentation head is HRNetV2's (§3.3).

Layout for an input `[B, 3, H, W]` (H and W multiples of 32, so every stream is an exact 1/4 … 1/32):

* stem: two 3×3 stride-2 ConvBN-ReLU → `[B, stem, H/4, W/4]`;
* stage 1: one stream at 1/4 of bottleneck blocks (4× expansion) → `4·planes` channels;
* stages 2, 3, 4: a transition (3×3 ConvBN-ReLU where a stream changes width, a 3×3 stride-2 ConvBN-ReLU from the
  coarsest stream for the new one), then modules, each = basic residual blocks per stream followed by the
  multi-resolution fusion: output i sums, over inputs j, the input itself (j = i), a 1×1 ConvBN then bilinear
  upsampling (j > i, coarser), or i − j stride-2 3×3 ConvBNs (j < i, finer), then ReLU.
  Streams run at 1/4, 1/8, 1/16, 1/32 with C, 2C, 4C, 8C channels (C = `width`);
* head: every stream bilinearly upsampled to 1/4, concatenated (15C channels), 1×1 ConvBN-ReLU, 1×1 conv to
  the classes.

`forward(x)` returns ``{"logits": [B, K, H, W], "logits_lowres": [B, K, H/4, W/4], "feat4": [B, C, H/4, W/4],
"feat8": [B, 2C, H/8, W/8], "feat16": [B, 4C, H/16, W/16], "feat32": [B, 8C, H/32, W/32]}`` (the streams after
the last fusion).

Presets: ``w18_small`` (C = 18, stage 1 one bottleneck of 32 planes, one module per stage 2–4 with two basic
blocks per stream: HRNetV2-W18-Small-v1's depth at W18's width) and ``tiny`` (C = 8, one block everywhere) for
tests.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.baselines.common import init_weights
from search_spaces.upsample import resize

__all__ = ["HRNetSpec", "HRNET_PRESETS", "HRNetTeacher", "build_hrnet"]


@dataclass(frozen=True)
class HRNetSpec:
    """Sizes of an HRNet-like network."""

    width: int = 18  # C: the streams have C, 2C, 4C, 8C channels
    stem_channels: int = 64
    stage1_planes: int = 32  # stage 1 bottleneck planes (its output has 4× as many channels)
    blocks: tuple[int, int, int, int] = (1, 2, 2, 2)  # residual blocks per stream in each module, stages 1–4
    num_modules: tuple[int, int, int] = (1, 1, 1)  # modules in stages 2, 3, 4
    head_channels: int | None = None  # the head's 1×1 ConvBN-ReLU width; None = 15C, the concatenated width

    def __post_init__(self) -> None:
        for name in ("width", "stem_channels", "stage1_planes"):
            if getattr(self, name) < 1:
                raise ValueError(f"HRNet {name} must be positive but got {getattr(self, name)}.")
        if len(self.blocks) != 4 or min(self.blocks) < 1:
            raise ValueError(f"HRNet blocks must be 4 positive ints (stages 1–4) but got {self.blocks}.")
        if len(self.num_modules) != 3 or min(self.num_modules) < 1:
            raise ValueError(
                f"HRNet num_modules must be 3 positive ints (stages 2–4) but got {self.num_modules}."
            )
        if self.head_channels is not None and self.head_channels < 1:
            raise ValueError(f"HRNet head_channels must be positive but got {self.head_channels}.")


HRNET_PRESETS: dict[str, HRNetSpec] = {
    "w18_small": HRNetSpec(),
    "tiny": HRNetSpec(width=8, stem_channels=16, stage1_planes=8, blocks=(1, 1, 1, 1)),
}


def _conv_bn(c_in: int, c_out: int, kernel: int, stride: int = 1, relu: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(c_in, c_out, kernel, stride, kernel // 2, bias=False),
        nn.BatchNorm2d(c_out),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class _BasicBlock(nn.Module):
    """Two 3×3 ConvBNs with an identity shortcut (He et al., CVPR 2016), `[B, C, h, w]` → same."""

    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            _conv_bn(channels, channels, 3), _conv_bn(channels, channels, 3, relu=False)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + x)


class _Bottleneck(nn.Module):
    """1×1 → 3×3 → 1×1 (4× expansion) with a 1×1 ConvBN shortcut when the width changes."""

    def __init__(self, c_in: int, planes: int):
        super().__init__()
        c_out = 4 * planes
        self.body = nn.Sequential(
            _conv_bn(c_in, planes, 1), _conv_bn(planes, planes, 3), _conv_bn(planes, c_out, 1, relu=False)
        )
        self.shortcut: nn.Module = nn.Identity() if c_in == c_out else _conv_bn(c_in, c_out, 1, relu=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.body(x) + self.shortcut(x))


class _Same(nn.Module):
    """Fusion term j = i: the stream itself."""

    def forward(self, x: torch.Tensor, size: list[int]) -> torch.Tensor:
        return x


class _Up(nn.Module):
    """Fusion term j > i: 1×1 ConvBN to the finer stream's width, bilinear upsampling to its size."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.proj = _conv_bn(c_in, c_out, 1, relu=False)

    def forward(self, x: torch.Tensor, size: list[int]) -> torch.Tensor:
        return resize(self.proj(x), size)


class _Down(nn.Module):
    """Fusion term j < i: `steps` 3×3 stride-2 ConvBNs (ReLU between them, none after the last)."""

    def __init__(self, c_in: int, c_out: int, steps: int):
        super().__init__()
        layers = [_conv_bn(c_in, c_in, 3, 2) for _ in range(steps - 1)]
        layers.append(_conv_bn(c_in, c_out, 3, 2, relu=False))
        self.body = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor, size: list[int]) -> torch.Tensor:
        return self.body(x)


class _HRModule(nn.Module):
    """Basic blocks per stream, then the exchange between all streams; `list[[B, c_k, h_k, w_k]]` → same."""

    def __init__(self, channels: list[int], blocks: int):
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*[_BasicBlock(c) for _ in range(blocks)]) for c in channels
        )
        self.fuse = nn.ModuleList()
        for i, c_out in enumerate(channels):
            row = nn.ModuleList()
            for j, c_in in enumerate(channels):
                if j == i:
                    row.append(_Same())
                elif j > i:
                    row.append(_Up(c_in, c_out))
                else:
                    row.append(_Down(c_in, c_out, i - j))
            self.fuse.append(row)

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        ys: list[torch.Tensor] = []
        for i, branch in enumerate(self.branches):
            ys.append(branch(xs[i]))
        outs: list[torch.Tensor] = []
        for i, row in enumerate(self.fuse):
            size = [ys[i].shape[-2], ys[i].shape[-1]]
            total = torch.zeros_like(ys[i])
            for j, term in enumerate(row):
                total = total + term(ys[j], size)
            outs.append(F.relu(total))
        return outs


class _Stage(nn.Module):
    """Transition to `channels` (one new, coarser stream), then `num_modules` HR modules."""

    def __init__(self, c_prev: list[int], channels: list[int], num_modules: int, blocks: int):
        super().__init__()
        self.transition = nn.ModuleList()
        for i, c in enumerate(channels):
            if i < len(c_prev):
                self.transition.append(nn.Identity() if c_prev[i] == c else _conv_bn(c_prev[i], c, 3))
            else:
                self.transition.append(_conv_bn(c_prev[-1], c, 3, 2))
        self.body = nn.ModuleList(_HRModule(channels, blocks) for _ in range(num_modules))

    def forward(self, xs: list[torch.Tensor]) -> list[torch.Tensor]:
        n_in = len(xs)
        ys: list[torch.Tensor] = []
        for i, layer in enumerate(self.transition):
            ys.append(layer(xs[min(i, n_in - 1)]))
        for module in self.body:
            ys = module(ys)
        return ys


class HRNetTeacher(nn.Module):
    """An HRNet-like segmentation network (see the module docstring for the layout and outputs).

    `preset` gives the sizes; `width`, `blocks` (an int for every stage, or four ints for stages 1–4),
    `num_modules` (an int or three ints for stages 2–4), `stem_channels` and `head_channels` override them.
    Input `[B, in_channels, H, W]`, H and W multiples of 32.
    """

    def __init__(
        self,
        num_classes: int,
        width: int | None = None,
        blocks: int | tuple[int, int, int, int] | None = None,
        num_modules: int | tuple[int, int, int] | None = None,
        preset: str = "w18_small",
        in_channels: int = 3,
        stem_channels: int | None = None,
        head_channels: int | None = None,
    ):
        super().__init__()
        if preset not in HRNET_PRESETS:
            raise ValueError(f"unknown HRNet preset '{preset}' (known: {', '.join(HRNET_PRESETS)}).")
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive but got {num_classes}.")
        if isinstance(blocks, int):
            blocks = (blocks,) * 4
        if isinstance(num_modules, int):
            num_modules = (num_modules,) * 3
        overrides = {
            "width": width,
            "blocks": blocks,
            "num_modules": num_modules,
            "stem_channels": stem_channels,
            "head_channels": head_channels,
        }
        spec = replace(HRNET_PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None})
        self.spec, self.num_classes, self.preset = spec, num_classes, preset

        c = spec.width
        self.stream_channels = [c, 2 * c, 4 * c, 8 * c]
        self.stem = nn.Sequential(
            _conv_bn(in_channels, spec.stem_channels, 3, 2),
            _conv_bn(spec.stem_channels, spec.stem_channels, 3, 2),
        )
        c1 = 4 * spec.stage1_planes
        self.layer1 = nn.Sequential(
            _Bottleneck(spec.stem_channels, spec.stage1_planes),
            *[_Bottleneck(c1, spec.stage1_planes) for _ in range(spec.blocks[0] - 1)],
        )
        self.stages = nn.ModuleList()
        c_prev = [c1]
        for s in range(3):
            chans = self.stream_channels[: s + 2]
            self.stages.append(_Stage(c_prev, chans, spec.num_modules[s], spec.blocks[s + 1]))
            c_prev = chans
        c_cat = sum(self.stream_channels)
        c_head = spec.head_channels or c_cat
        self.head = nn.Sequential(_conv_bn(c_cat, c_head, 1), nn.Conv2d(c_head, num_classes, 1))
        init_weights(self)

    def feature_channels(self) -> dict[str, int]:
        """Channels of each named output (`feat4` … `feat32`, `logits`)."""
        names = ("feat4", "feat8", "feat16", "feat32")
        return {
            **dict(zip(names, self.stream_channels)),
            "logits": self.num_classes,
            "logits_lowres": self.num_classes,
        }

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = [x.shape[-2], x.shape[-1]]
        xs = [self.layer1(self.stem(x))]
        for stage in self.stages:
            xs = stage(xs)
        hw = [xs[0].shape[-2], xs[0].shape[-1]]
        ups = [xs[0]]
        for i in range(1, len(xs)):
            ups.append(resize(xs[i], hw))
        low = self.head(torch.cat(ups, dim=1))
        logits = resize(low, size)
        return {
            "logits": logits,
            "logits_lowres": low,
            "feat4": xs[0],
            "feat8": xs[1],
            "feat16": xs[2],
            "feat32": xs[3],
        }


def build_hrnet(preset: str, num_classes: int, **overrides: int | tuple[int, ...] | None) -> HRNetTeacher:
    """An :class:`HRNetTeacher` from a preset name (``w18_small`` or ``tiny``), with optional size overrides."""
    return HRNetTeacher(num_classes, preset=preset, **overrides)  # type: ignore[arg-type]
