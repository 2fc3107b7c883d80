"""The tutor of tutor-guided distillation: the student's network plus a high-resolution path.

The seed paper (Yang, Xue, Qi, Xin, LNCS 13018) distils an HRNet-like teacher into the searched student through
a *tutor*: the student's architecture with an added high-resolution stream, so that each distillation step
(teacher → tutor → student) bridges a smaller structural gap than teacher → student.

Layout for an input `[B, 3, H, W]`:

* the **main path** is exactly the student's :class:`~search_spaces.builder.SegNet` (`self.main`, the same
  modules and channels, so the tutor keeps the student's parameter budget there);
* the **high-resolution path** reads the stem's feature at 1/`path` (`path` = 4: the output of the stem's
  third layer, `[B, C4, H/4, W/4]`; `path` = 8: the stem output, `[B, C8, H/8, W/8]`) and keeps that
  resolution through `blocks` 3×3 ConvBN-ReLU layers;
* before the head, the stream is resized to 1/8 (2×2 average pooling from 1/4) and concatenated with the fused
  branch feature; a 1×1 ConvBN-ReLU maps the concatenation back to the head's channels, and the student's head
  and final upsampler classify it.

`forward(x)` returns the keys of `SegNet`: ``logits`` `[B, K, H, W]`, ``logits8`` `[B, K, H/8, W/8]`,
``feat8`` `[B, C, H/8, W/8]` (after the high-resolution fusion) and, in training mode, ``aux16`` / ``aux32``.
The stem is split, not changed: its parameters and its output are the student's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.arch import Architecture
from search_spaces.builder import SegNet
from search_spaces.ops import ConvBNReLU, channels
from search_spaces.upsample import resize

__all__ = ["TUTOR_PATHS", "Tutor", "build_tutor", "stem_split"]

TUTOR_PATHS: tuple[int, ...] = (4, 8)
_STEM_AT_4 = 3  # the stem's first three layers reach 1/4 (stride 2, stride 2, stride 1)


def stem_split(net: SegNet, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Run `net`'s stem on `[B, 3, H, W]` and return its 1/4 and 1/8 features `([B, C4, H/4, W/4], [B, C8, H/8, W/8])`;
    the 1/8 feature equals `net.stem(x)`."""
    layers = net.stem.layers
    x4 = layers[:_STEM_AT_4](x)
    return x4, layers[_STEM_AT_4:](x4)


class Tutor(nn.Module):
    """The student's network with an added high-resolution stream fused before the head (see the module doc).

    `path` is 4 or 8 (the resolution the stream keeps); `blocks` the number of 3×3 ConvBN-ReLU layers in it;
    `aux_heads` as for :class:`SegNet` (training-only heads at 1/16 and 1/32).
    """

    def __init__(self, arch: Architecture, path: int = 8, blocks: int = 3, aux_heads: bool = True):
        super().__init__()
        if path not in TUTOR_PATHS:
            raise ValueError(f"tutor path must be one of {list(TUTOR_PATHS)} but got {path}.")
        if blocks < 1:
            raise ValueError(f"tutor blocks must be positive but got {blocks}.")
        self.arch, self.path = arch, path
        self.main = SegNet(arch, aux_heads=aux_heads)
        sp = arch.space
        c_hr = channels(4, sp.fch, arch.stem_width) * 2 if path == 4 else self.main.plan.stem_channels
        self.hr_channels = c_hr
        self.hr_path = nn.Sequential(*[ConvBNReLU(c_hr, c_hr, 3) for _ in range(blocks)])
        fused = self.main.plan.head_channels * len(self.main.plan.branches)
        self.hr_fuse = ConvBNReLU(fused + c_hr, fused, 1)

    def main_parameters(self) -> list[nn.Parameter]:
        """Parameters of the main path (the student's network)."""
        return list(self.main.parameters())

    def extra_parameters(self) -> list[nn.Parameter]:
        """Parameters the tutor adds: the high-resolution stream and its fusion."""
        return [*self.hr_path.parameters(), *self.hr_fuse.parameters()]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        net = self.main
        x4, x8 = stem_split(net, x)
        feats = [x8]
        for j, cell in enumerate(net.cells):
            feats.append(cell(feats[net.sources[j]]))
        outs = net.branch_outputs(feats)
        fused = net.ffm(torch.cat(outs, dim=1) if len(outs) > 1 else outs[0])
        hr = self.hr_path(x4 if self.path == 4 else x8)
        if hr.shape[-2:] != fused.shape[-2:]:
            if hr.shape[-2] == 2 * fused.shape[-2] and hr.shape[-1] == 2 * fused.shape[-1]:
                hr = F.avg_pool2d(hr, 2)
            else:
                hr = resize(hr, fused.shape[-2:])
        feat8 = self.hr_fuse(torch.cat([fused, hr], dim=1))
        logits8 = net.head(feat8)
        result = {"logits": net.upsample(logits8), "logits8": logits8, "feat8": feat8}
        if self.training:
            size = (x.shape[2], x.shape[3])
            for name, aux in net.aux.items():
                result[name] = aux(feats, size)
        return result


def build_tutor(arch: Architecture, path: int = 8, blocks: int = 3, aux_heads: bool = True) -> Tutor:
    """The tutor of the student `arch` with a high-resolution stream at 1/`path`."""
    return Tutor(arch, path=path, blocks=blocks, aux_heads=aux_heads)
