"""Build a derived network from an :class:`~search_spaces.arch.Architecture`: a plain module, no supernet.

The network follows FasterSeg's derived model (`train/model_seg.py`):

1. a stem reaches 1/8;
2. every branch is a chain of cells (:class:`~search_spaces.ops.Operator`); branches that begin with the same
   cells compute them once. Cell `i` of two branches is shared when cells `0..i` agree and both branches go on
   to the same scale; a branch's last cell is never shared (FasterSeg's rule);
3. each branch climbs back to 1/8 through fusion steps, concatenating "its last feature at the finer scale"
   (the input of the cell where it leaves that scale, or the stem output when it leaves 1/8 at cell 0);
4. the branch outputs are concatenated (in the order the branches are listed), fused, classified at 1/8 and
   upsampled ×8.

Auxiliary heads (training only, FasterSeg's `heads16`/`heads32`) read, at 1/16 and 1/32, the feature of every
branch that reaches that scale: its output if it ends there, else its last feature there (coarsest branch
first); their logits are resized to the input. Cell outputs live in one list indexed as `feats[0]` = stem
output, `feats[j + 1]` = output of unique cell `j`, so the forward pass is a flat loop TorchScript can compile.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from search_spaces.arch import Architecture, Branch
from search_spaces.heads import FeatureFusion, FusionStep, SegHead, Stem
from search_spaces.ops import Operator, channels
from search_spaces.upsample import make_upsampler, resize

__all__ = ["CellPlan", "FusionPlan", "BranchPlan", "NetworkPlan", "plan_network", "build_network", "SegNet", "SkipFusion", "AuxHead", "InferenceWrapper"]


@dataclass(frozen=True)
class CellPlan:
    """One unique cell: which feature it reads (0 = stem, j + 1 = cell j), its op, channels and stride."""

    source: int
    op: str
    c_in: int
    c_out: int
    stride: int
    scale: int  # scale of the feature it reads


@dataclass(frozen=True)
class FusionPlan:
    """One ×2 step of a branch's head: `c_in` at the coarse scale, the skip feature `feats[skip]`."""

    c_in: int
    skip: int
    c_skip: int
    c_out: int
    upsample: str


@dataclass(frozen=True)
class BranchPlan:
    """Where a branch's features live in the feature list, for its head and the auxiliary heads."""

    scale: int  # ending scale
    feats: tuple[int, ...]  # feature index of each of its cell outputs, in order
    output: int  # feature index of its last cell's output
    last_at: dict[int, int]  # scale → feature index of its last feature at that scale (finer than its end)
    fusions: tuple[FusionPlan, ...]  # coarse to fine


@dataclass(frozen=True)
class NetworkPlan:
    """Channels and wiring of a derived network, computed from the architecture alone (no modules)."""

    stem_channels: int
    cells: tuple[CellPlan, ...]
    branches: tuple[BranchPlan, ...]
    feature_channels: tuple[int, ...]  # channels of feats[i]
    head_channels: int  # channels of one branch output at the base scale


def plan_network(arch: Architecture) -> NetworkPlan:
    """Resolve channels, strides and prefix sharing of `arch` (pure data; :class:`SegNet` builds from it)."""
    sp = arch.space
    base = sp.scales[0]
    stem_c = channels(base, sp.fch, arch.stem_width)
    feat_c: list[int] = [stem_c]
    cells: list[CellPlan] = []
    index: dict[tuple, int] = {}  # (source, scale, op, width, next scale, owner if last) → unique cell
    branches: list[BranchPlan] = []
    for bi, branch in enumerate(arch.branches):
        src = 0
        path: list[int] = []
        last_at: dict[int, int] = {}
        for ci, (cell, stride) in enumerate(zip(branch.cells, branch.strides())):
            is_last = ci == len(branch.cells) - 1
            if stride == 2:
                last_at[cell.scale] = src  # it leaves this scale: its input is the last feature there
            next_scale = cell.scale * stride
            c_out = channels(next_scale, sp.fch, arch.head_width if is_last else cell.width)
            key = (src, cell.scale, cell.op, round(cell.width, 6), next_scale, bi if is_last else -1)
            if key not in index:
                cells.append(CellPlan(src, cell.op, feat_c[src], c_out, stride, cell.scale))
                feat_c.append(c_out)
                index[key] = len(cells)
            src = index[key]
            path.append(src)
        branches.append(BranchPlan(branch.scale, tuple(path), src, last_at, _fusions(arch, branch, last_at, feat_c)))
    return NetworkPlan(stem_c, tuple(cells), tuple(branches), tuple(feat_c), channels(base, sp.fch, arch.head_width))


def _fusions(arch: Architecture, branch: Branch, last_at: dict[int, int],
             feat_c: list[int]) -> tuple[FusionPlan, ...]:
    """FasterSeg's head: C_s^head = channels(s, fch, head_width); climb from the branch's end to the base."""
    sp = arch.space
    steps = []
    s = branch.scale
    for up in branch.upsample:
        fine = s // 2
        skip = last_at[fine]
        steps.append(FusionPlan(channels(s, sp.fch, arch.head_width), skip, feat_c[skip],
                                channels(fine, sp.fch, arch.head_width), up))
        s = fine
    return tuple(steps)


class SegNet(nn.Module):
    """A derived segmentation network.

    `forward(x)` with `x` `[B, 3, H, W]` returns a dict: ``logits`` `[B, K, H, W]`, ``logits8`` `[B, K, H/8, W/8]`
    (before the final upsampling), ``feat8`` `[B, C, H/8, W/8]` (the fused feature, for distillation) and, in
    training mode, ``aux16`` / ``aux32`` `[B, K, H, W]` where the network has them.
    """

    def __init__(self, arch: Architecture, aux_heads: bool = True):
        super().__init__()
        self.arch = arch
        self.plan = plan = plan_network(arch)
        sp = arch.space
        k = sp.num_classes
        self.stem = Stem(sp.fch, arch.stem_width)
        self.cells = nn.ModuleList(Operator(c.op, c.c_in, c.c_out, c.stride) for c in plan.cells)
        self.sources = [c.source for c in plan.cells]
        self.fusions = nn.ModuleList(nn.ModuleList(SkipFusion(f) for f in b.fusions) for b in plan.branches)
        self.outputs = [b.output for b in plan.branches]
        fused = plan.head_channels * len(plan.branches)
        self.ffm = FeatureFusion(fused)
        self.head = SegHead(fused, k)
        self.upsample = make_upsampler(arch.final_upsample, k, sp.scales[0])
        self.aux = nn.ModuleDict()
        if aux_heads:
            for s in sp.scales[1:]:
                srcs = _aux_sources(plan, s)
                if srcs:
                    self.aux[f"aux{s}"] = AuxHead(srcs, sum(plan.feature_channels[i] for i in srcs), k)

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """`[B, 3, H, W]` → every feature: index 0 the stem output, `j + 1` the output of unique cell `j`."""
        feats = [self.stem(x)]
        for j, cell in enumerate(self.cells):
            feats.append(cell(feats[self.sources[j]]))
        return feats

    def branch_outputs(self, feats: list[torch.Tensor]) -> list[torch.Tensor]:
        """Each branch's head output at 1/8, `[B, C_8^head, H/8, W/8]`, in the order the branches are listed."""
        outs: list[torch.Tensor] = []
        for b, steps in enumerate(self.fusions):
            out = feats[self.outputs[b]]
            for step in steps:
                out = step(out, feats)
            outs.append(out)
        return outs

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.decode(self.features(x), [x.shape[2], x.shape[3]])

    def decode(self, feats: list[torch.Tensor], size: list[int]) -> dict[str, torch.Tensor]:
        """The named outputs of :meth:`forward` from the features of :meth:`features` for an input of H×W `size`;
        separate so that networks sharing early features (OKDDip peers) run the heads over their own list."""
        outs = self.branch_outputs(feats)
        feat8 = self.ffm(torch.cat(outs, dim=1) if len(outs) > 1 else outs[0])
        logits8 = self.head(feat8)
        result = {"logits": self.upsample(logits8), "logits8": logits8, "feat8": feat8}
        if self.training:
            for name, aux in self.aux.items():
                result[name] = aux(feats, size)
        return result


class SkipFusion(nn.Module):
    """A :class:`FusionStep` that knows which feature is its skip: `feats[skip]` (see :meth:`SegNet.features`)."""

    def __init__(self, plan: FusionPlan):
        super().__init__()
        self.skip = plan.skip
        self.step = FusionStep(plan.c_in, plan.c_skip, plan.c_out, plan.upsample)

    def forward(self, coarse: torch.Tensor, feats: list[torch.Tensor]) -> torch.Tensor:
        """`[B, C_in, h, w]` → `[B, C_out, 2h, 2w]`, fused with `feats[skip]`."""
        return self.step(coarse, feats[self.skip])


class AuxHead(nn.Module):
    """A training-only head: concatenates `feats[i]` for `i` in `sources`, classifies, resizes to `size`."""

    def __init__(self, sources: list[int], c_in: int, num_classes: int):
        super().__init__()
        self.sources = list(sources)
        self.head = SegHead(c_in, num_classes)

    def forward(self, feats: list[torch.Tensor], size: list[int]) -> torch.Tensor:
        """`feats` as :meth:`SegNet.features` returns them → logits `[B, K, *size]`."""
        inp = torch.cat([feats[i] for i in self.sources], dim=1) if len(self.sources) > 1 else feats[self.sources[0]]
        return resize(self.head(inp), size, align_corners=True)


def _aux_sources(plan: NetworkPlan, scale: int) -> list[int]:
    """Features an auxiliary head at `scale` reads: each branch reaching it, coarsest branch first."""
    ordered = sorted(plan.branches, key=lambda b: -b.scale)
    srcs = []
    for b in ordered:
        if b.scale == scale:
            srcs.append(b.output)
        elif b.scale > scale and scale in b.last_at:
            srcs.append(b.last_at[scale])
    return srcs


class InferenceWrapper(nn.Module):
    """`[B, 3, H, W]` → logits `[B, K, H, W]` only: the form traced and exported to ONNX."""

    def __init__(self, model: SegNet):
        super().__init__()
        self.model = model
        self.train(model.training)  # mirror the wrapped model, so exporting it keeps it in its mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)["logits"]


def build_network(arch: Architecture, aux_heads: bool = True) -> SegNet:
    """The derived network of `arch`; `aux_heads=False` leaves the training-only auxiliary heads out."""
    return SegNet(arch, aux_heads=aux_heads)
