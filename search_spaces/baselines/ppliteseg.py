"""PP-LiteSeg on an STDC encoder, written from scratch (no pretrained weights), scalable in width and depth.

PP-LiteSeg (Peng et al., "PP-LiteSeg: A Superior Real-Time Semantic Segmentation Model", 2022) decodes an STDC
encoder (Fan et al., "Rethinking BiSeNet For Real-time Semantic Segmentation", CVPR 2021) with three pieces:

* encoder, STDC1 (PP-LiteSeg-T): two 3×3 stride-2 ConvBN-ReLU (32 and 64 channels, 1/4), then three stages of
  short-term dense concatenate (STDC) modules ending at 1/8, 1/16, 1/32 with 256, 512, 1024 channels (two
  modules each, the first with stride 2). An STDC module with output C (Fan et al., Fig. 3, four blocks) runs a
  1×1 ConvBN-ReLU to C/2 and then 3×3 ConvBN-ReLUs to C/4, C/8, C/8, each reading the previous block, and
  concatenates all four outputs; the stride-2 module downsamples after the first block with a 3×3 depth-wise
  stride-2 ConvBN and average-pools (3×3, stride 2) the first block's output before the concatenation;
* simple pyramid pooling module (SPPM, §3.3) on the 1/32 feature: average pooling to 1×1, 2×2 and 4×4 bins,
  a 1×1 ConvBN-ReLU (128 channels) on each, upsampled and summed, then a 3×3 ConvBN-ReLU (128 channels);
* flexible and lightweight decoder (§3.1) of unified attention fusion modules (UAFM, §3.2) at 1/32, 1/16 and
  1/8, with 128, 64, 32 output channels: a UAFM takes the encoder feature x of its scale (through a 3×3
  ConvBN-ReLU to the width of the coarser input y) and y upsampled to x's size, computes a spatial attention
  α = sigmoid(3×3 ConvBN(3×3 ConvBN-ReLU([mean_c x, max_c x, mean_c y, max_c y]))), fuses x·α + y·(1 − α) and
  applies a 3×3 ConvBN-ReLU to its output width;
* segmentation heads (3×3 ConvBN-ReLU to 32, 64, 64 channels, 1×1 conv to the classes, bilinear to the input):
  the 1/8 one is the network's output; the 1/16 and 1/32 ones (``aux16``, ``aux32``) are auxiliary heads used
  in training only.

`width` scales every channel count above (an STDC module's C/2, C/4, C/8 split is of its scaled C), `depth` the
stride-1 STDC modules per stage (1, 1, 1; STDC2's 3, 4, 2 is about `depth = 3`). ``feat8`` is the 1/8 UAFM
output. The SPPM's pooling is written as products with pooling matrices (:func:`adaptive_avg_pool`), so the
network exports to ONNX at any input size.
"""

from __future__ import annotations

import torch
from torch import nn

from search_spaces.baselines.common import BASELINES, SegHead, conv_bn, init_weights, make_stages, scaled
from search_spaces.upsample import resize

__all__ = ["PPLiteSeg", "build_ppliteseg", "adaptive_avg_pool"]

_STEM = (32, 64)  # the two stride-2 convs before the STDC stages
_STAGES = ((256, 2), (512, 2), (1024, 2))  # (channels, STDC modules) at 1/8, 1/16, 1/32
_SPPM_CHANNELS = 128  # the SPPM's inner and output channels
_BINS = (1, 2, 4)
_DECODER = (32, 64, 128)  # UAFM output channels at 1/8, 1/16, 1/32
_HEAD_MID = (32, 64, 64)  # segmentation head channels at 1/8, 1/16, 1/32


class _STDCModule(nn.Module):
    """Short-term dense concatenate module: `[B, c_in, h, w]` → `[B, c_out, h/stride, w/stride]`."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        half, quarter = c_out // 2, c_out // 4
        rest = c_out - half - quarter  # C/4 more, split into the last two blocks' C/8 each
        self.first = conv_bn(c_in, half, 1)
        if stride == 2:
            self.down: nn.Module = conv_bn(half, half, 3, 2, groups=half, relu=False)
            self.skip: nn.Module = nn.AvgPool2d(3, 2, 1)
        else:
            self.down, self.skip = nn.Identity(), nn.Identity()
        self.blocks = nn.ModuleList([
            conv_bn(half, quarter, 3),
            conv_bn(quarter, rest // 2, 3),
            conv_bn(rest // 2, rest - rest // 2, 3),
        ])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = self.first(x)
        out = self.down(first)
        outs = [self.skip(first)]
        for block in self.blocks:
            out = block(out)
            outs.append(out)
        return torch.cat(outs, dim=1)


class _STDCEncoder(nn.Module):
    """`[B, 3, H, W]` → the stage outputs at 1/8, 1/16, 1/32."""

    def __init__(self, width: float, depth: float):
        super().__init__()
        c1, c2 = (scaled(c, width) for c in _STEM)
        self.stem = nn.Sequential(conv_bn(3, c1, 3, 2), conv_bn(c1, c2, 3, 2))
        self.stages, self.out_channels = make_stages(_STDCModule, c2, _STAGES, width, depth)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats: list[torch.Tensor] = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def _pooling_matrix(n: int, bins: int, x: torch.Tensor) -> torch.Tensor:
    """`[bins, n]`: row i averages positions floor(i·n/bins) … ceil((i+1)·n/bins) − 1, adaptive average
    pooling's windows (overlapping, or repeating positions, where n is not a multiple of bins)."""
    j = torch.arange(n, device=x.device).unsqueeze(0)
    i = torch.arange(bins, device=x.device).unsqueeze(1)
    start = torch.div(i * n, bins, rounding_mode="floor")
    end = torch.div((i + 1) * n + bins - 1, bins, rounding_mode="floor")
    window = ((j >= start) & (j < end)).to(x.dtype)
    return window / window.sum(dim=1, keepdim=True)


def adaptive_avg_pool(x: torch.Tensor, bins: int) -> torch.Tensor:
    """`[B, C, h, w]` → `[B, C, bins, bins]`, equal to ``F.adaptive_avg_pool2d(x, bins)`` but written as two
    products with pooling matrices: ONNX has no adaptive pooling, and the exporter's fixed-kernel rewrite needs
    h and w to be static multiples of `bins`; this form exports at any size, dynamic height and width included."""
    rows = _pooling_matrix(x.shape[-2], bins, x)
    cols = _pooling_matrix(x.shape[-1], bins, x)
    return torch.matmul(torch.matmul(rows, x), cols.transpose(0, 1))


class _PoolBranch(nn.Module):
    """Average pooling to `bins` × `bins`, then a 1×1 ConvBN-ReLU."""

    def __init__(self, c_in: int, c_out: int, bins: int):
        super().__init__()
        self.bins = bins
        self.conv = conv_bn(c_in, c_out, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.bins == 1:
            return self.conv(x.mean(dim=(2, 3), keepdim=True))
        return self.conv(adaptive_avg_pool(x, self.bins))


class _SPPM(nn.Module):
    """Simple pyramid pooling: pooled branches upsampled and summed, then a 3×3 ConvBN-ReLU."""

    def __init__(self, c_in: int, c_inner: int, c_out: int):
        super().__init__()
        self.branches = nn.ModuleList(_PoolBranch(c_in, c_inner, b) for b in _BINS)
        self.out = conv_bn(c_inner, c_out, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = [x.shape[-2], x.shape[-1]]
        pooled: list[torch.Tensor] = []
        for branch in self.branches:
            pooled.append(resize(branch(x), size))
        total = pooled[0]
        for p in pooled[1:]:
            total = total + p
        return self.out(total)


class _UAFM(nn.Module):
    """Unified attention fusion with spatial attention: encoder feature x (`c_x`) and the coarser decoder feature
    y (`c_y`) → `c_out` at x's resolution."""

    def __init__(self, c_x: int, c_y: int, c_out: int):
        super().__init__()
        self.conv_x = conv_bn(c_x, c_y, 3)
        self.attention = nn.Sequential(conv_bn(4, 2, 3), conv_bn(2, 1, 3, relu=False))
        self.out = conv_bn(c_y, c_out, 3)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.conv_x(x)
        y = resize(y, [x.shape[-2], x.shape[-1]])
        stats = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True),
                           y.mean(dim=1, keepdim=True), y.amax(dim=1, keepdim=True)], dim=1)
        alpha = torch.sigmoid(self.attention(stats))
        return self.out(x * alpha + y * (1 - alpha))


class PPLiteSeg(nn.Module):
    """PP-LiteSeg-T at `width` × its channels and `depth` × its stride-1 STDC modules (see the module docstring).

    `forward(x)`, `x` `[B, 3, H, W]` with H, W multiples of 32, returns ``logits`` `[B, K, H, W]`, ``logits8``
    `[B, K, H/8, W/8]`, ``feat8`` `[B, C, H/8, W/8]` and, in training mode with `aux_heads`, ``aux16`` and
    ``aux32`` `[B, K, H, W]`.
    """

    def __init__(self, num_classes: int, width: float = 1.0, depth: float = 1.0, aux_heads: bool = True):
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be positive but got {num_classes}.")
        self.num_classes, self.width, self.depth = num_classes, width, depth
        self.encoder = _STDCEncoder(width, depth)
        c_sppm = scaled(_SPPM_CHANNELS, width)
        self.sppm = _SPPM(self.encoder.out_channels[-1], c_sppm, c_sppm)
        dec = [scaled(c, width) for c in _DECODER]
        highs = [dec[1], dec[2], c_sppm]
        fine_to_coarse = [_UAFM(c_x, c_y, c_out)
                          for c_x, c_y, c_out in zip(self.encoder.out_channels, highs, dec)]
        self.decoder = nn.ModuleList(fine_to_coarse[::-1])  # run from 1/32 to 1/8
        mids = [scaled(c, width) for c in _HEAD_MID]
        self.head = SegHead(dec[0], mids[0], num_classes)
        self.aux = nn.ModuleDict()
        if aux_heads:
            self.aux["aux16"] = SegHead(dec[1], mids[1], num_classes)
            self.aux["aux32"] = SegHead(dec[2], mids[2], num_classes)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = [x.shape[-2], x.shape[-1]]
        feats = self.encoder(x)
        y = self.sppm(feats[-1])
        decoded: list[torch.Tensor] = []  # 1/32, 1/16, 1/8
        for i, uafm in enumerate(self.decoder):
            y = uafm(feats[len(feats) - 1 - i], y)
            decoded.append(y)
        feat8 = decoded[-1]
        logits8 = self.head(feat8)
        result = {"logits": resize(logits8, size), "logits8": logits8, "feat8": feat8}
        if self.training:
            stages = {"aux16": decoded[1], "aux32": decoded[0]}
            for name, head in self.aux.items():
                result[name] = resize(head(stages[name]), size)
        return result


@BASELINES.register("ppliteseg")
def build_ppliteseg(num_classes: int, width: float = 1.0, depth: float = 1.0, aux_heads: bool = True) -> PPLiteSeg:
    """PP-LiteSeg-T (Peng et al., 2022; STDC1 encoder, Fan et al., CVPR 2021) at `width` × its channels and
    `depth` × its stride-1 STDC modules."""
    return PPLiteSeg(num_classes, width=width, depth=depth, aux_heads=aux_heads)
