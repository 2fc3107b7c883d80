"""Our FasterSeg search space written as an NNI 3.0 ``ModelSpace`` (imports nni: load it only through
:func:`nas.nni_backend.require_nni`).

Every choice is a ``LayerChoice`` (the only primitive NNI's DARTS, GumbelDARTS and RandomOneShot turn into a
one-shot supernet for us), with labels the converter reads back (:mod:`nas.nni_backend.convert`):

* ``op_{l}_{si}`` — the operator of cell (layer l, scale index si), candidates named by ``spec.ops``; the keep
  and the down operator of a cell share the label, as they share α in our supernet;
* ``path_{l}_{si}`` — the input of node (l, si) when it has two (candidates ``keep``, ``down``). A path is a
  LayerChoice over *edge modules*, each running its own source node and operator, so a frozen model computes
  only the chosen input (a frozen ``InputChoice`` would still compute every candidate); nodes are evaluated
  lazily from the heads backwards, so nothing off the chosen routes runs;
* ``width_{l}_{si}`` — the width of node (l, si), l ≥ 1: the operator runs at the widest width and the choice
  keeps the first `round(s·fch·w)` channels (channel masking, FBNetV2, Wan et al. CVPR 2020, §3.1), so every
  candidate has the shape NNI's differentiable layers need to sum them;
* ``up_{e}_{k}`` / ``up_final`` — bilinear or PixelShuffle upsampler of fusion step k of the branch ending at
  1/e, and of the final ×8 (absent when the config fixes the upsampler).

Operators are :class:`search_spaces.ops.SlimOperator`, stem and heads :mod:`search_spaces.heads`, upsamplers
:mod:`search_spaces.upsample`: nothing is re-implemented here. The two kept branches are fixed (the coarsest
and `main_branches[1]`), as the expected-latency model assumes.
"""

from __future__ import annotations

import torch
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from torch import nn

from search_spaces.arch import SpaceSpec
from search_spaces.heads import FeatureFusion, FusionStep, SegHead, Stem
from search_spaces.ops import SlimOperator, channels
from search_spaces.upsample import UPSAMPLERS, Bilinear, PixelShuffleUp, resize

__all__ = ["FasterSegModelSpace", "PATHS", "op_label", "path_label", "width_label", "up_label", "FINAL_UP"]

PATHS = ("keep", "down")
FINAL_UP = "up_final"


def op_label(layer: int, si: int) -> str:
    """Label of the operator choice of cell (layer, scale index)."""
    return f"op_{layer}_{si}"


def path_label(layer: int, si: int) -> str:
    """Label of the input choice (keep | down) of node (layer, scale index)."""
    return f"path_{layer}_{si}"


def width_label(layer: int, si: int) -> str:
    """Label of the width choice of node (layer, scale index)."""
    return f"width_{layer}_{si}"


def up_label(end_scale: int, step: int) -> str:
    """Label of the upsampler of fusion step `step` of the branch ending at 1/`end_scale`."""
    return f"up_{end_scale}_{step}"


def width_names(widths: tuple[float, ...]) -> list[str]:
    """Candidate names of a width choice: `w<index>` (NNI names choices by strings without dots)."""
    return [f"w{i}" for i in range(len(widths))]


class _Masked(nn.Module):
    """Keep the first `c` of `c_max` channels, zero the rest: `[B, c_max, H, W]` → same shape."""

    def __init__(self, c: int, c_max: int):
        super().__init__()
        self.register_buffer("mask", (torch.arange(c_max) < c).float().view(1, c_max, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.mask


class _Candidate(nn.Module):
    """One operator of a slot, run at its widest output, then the output width choice (None for the head width)."""

    def __init__(self, op: SlimOperator, width: LayerChoice | None):
        super().__init__()
        self.op, self.width = op, width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.op(x, len(self.op.c_out_choices) - 1)
        return y if self.width is None else self.width(y)


class _Features:
    """Lazily computed node features of one forward pass, so only what the heads reach is run."""

    def __init__(self, space: FasterSegModelSpace, stem: torch.Tensor):
        self.space, self.cache = space, {(0, 0): stem}

    def __getitem__(self, node: tuple[int, int]) -> torch.Tensor:
        if node not in self.cache:
            self.cache[node] = self.space.nodes[f"{node[0]}_{node[1]}"](self)
        return self.cache[node]


class _Edge(nn.Module):
    """One input of a node: the operator slot of cell (source layer, source scale) applied to the source node."""

    def __init__(self, source: tuple[int, int], slot: LayerChoice):
        super().__init__()
        self.source, self.slot = source, slot

    def forward(self, feats: _Features) -> torch.Tensor:
        return self.slot(feats[self.source])


def _upsampler(c: int, factor: int, mode: str, label: str) -> nn.Module:
    """A LayerChoice over the upsamplers (`mode` = search) or the fixed one."""
    make = {"bilinear": lambda: Bilinear(factor), "pixel_shuffle": lambda: PixelShuffleUp(c, factor)}
    if mode != "search":
        return make[mode]()
    return LayerChoice({u: make[u]() for u in UPSAMPLERS}, label=label)


class FasterSegModelSpace(ModelSpace):
    """FasterSeg trellis + two-branch head as an NNI model space (see the module docstring).

    `forward(x)` with `x` `[B, 3, H, W]` returns {"logits": `[B, K, H, W]`, "logits_<s>": auxiliary logits
    `[B, K, H, W]` of each kept branch, "feat8": fused feature `[B, 2·C8, H/8, W/8]`}.
    """

    def __init__(self, spec: SpaceSpec, stem_width: float, head_width: float, upsample: str = "search",
                 main_branches: tuple[int, int] | None = None):
        super().__init__()
        sc = spec.scales
        if len(sc) < 2 or spec.layers < len(sc):
            raise ValueError(f"the space needs ≥ 2 scales and layers ≥ scales, got {sc}, {spec.layers}")
        self.spec, self.L, self.S = spec, spec.layers, len(sc)
        self.stem_width, self.head_width, self.upsample_mode = stem_width, head_width, upsample
        self.main_branches = tuple(main_branches) if main_branches else (sc[-1], sc[-2])
        if self.main_branches[0] != sc[-1] or self.main_branches[1] not in sc[:-1]:
            raise ValueError(f"main_branches must be (coarsest, finer scale), got {self.main_branches}")
        self.stem = Stem(spec.fch, stem_width)
        self.nodes = nn.ModuleDict()
        self.outputs = nn.ModuleDict()
        for layer in range(1, self.L):
            for si in range(min(layer, self.S - 1) + 1):
                edges = {d: _Edge(src, self._slot(*src, d)) for d, src in self._sources(layer, si).items()}
                node = edges.popitem()[1] if len(edges) == 1 else LayerChoice(edges, label=path_label(layer, si))
                self.nodes[f"{layer}_{si}"] = node
        for si in range(self.S):
            self.outputs[str(si)] = self._slot(self.L - 1, si, "keep")
        c = [channels(s, spec.fch, head_width) for s in sc]
        self.chains = nn.ModuleDict()
        for e in self.main_branches:
            ei = sc.index(e)
            steps = nn.ModuleList()
            for k in range(ei):
                step = FusionStep(c[ei - k], c[ei - k - 1], c[ei - k - 1], "bilinear")
                step.up = _upsampler(c[ei - k - 1], 2, upsample, up_label(e, k))
                steps.append(step)
            self.chains[str(e)] = steps
        self.ffm = FeatureFusion(2 * c[0])
        self.head = SegHead(2 * c[0], spec.num_classes)
        self.final = _upsampler(spec.num_classes, sc[0], upsample, FINAL_UP)
        self.aux = nn.ModuleDict({str(e): SegHead(c[0], spec.num_classes) for e in self.main_branches})

    def _sources(self, layer: int, si: int) -> dict[str, tuple[int, int]]:
        """Candidate inputs of node (layer, si) by path name, as in :meth:`Supernet._sources`."""
        if si == 0:
            return {"keep": (layer - 1, 0)}
        if layer == si:
            return {"down": (layer - 1, si - 1)}
        return {"keep": (layer - 1, si), "down": (layer - 1, si - 1)}

    def _slot(self, layer: int, si: int, direction: str) -> LayerChoice:
        """The operator choice of cell (layer, si) in `direction`, each candidate with its output width choice."""
        sp = self.spec
        s = sp.scales[si]
        o = si + (direction == "down")
        c_in = channels(s, sp.fch, self.stem_width) if layer == 0 else max(channels(s, sp.fch, w) for w in sp.widths)
        last = layer == self.L - 1
        if last:
            c_out = (channels(sp.scales[o], sp.fch, self.head_width),)
        else:
            c_out = tuple(sorted(channels(sp.scales[o], sp.fch, w) for w in sp.widths))
        cands = {}
        for op in sp.ops:
            width = None
            if not last:
                widths = {n: _Masked(channels(sp.scales[o], sp.fch, w), c_out[-1])
                          for n, w in zip(width_names(sp.widths), sp.widths)}
                width = LayerChoice(widths, label=width_label(layer + 1, o))
            cands[op] = _Candidate(SlimOperator(op, c_in, c_out, 2 if direction == "down" else 1), width)
        return LayerChoice(cands, label=op_label(layer, si))

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """`[B, 3, H, W]` → logits of the two-branch head and the auxiliary heads (see the class docstring)."""
        sc = self.spec.scales
        feats = _Features(self, self.stem(x))
        outs = {si: self.outputs[str(si)](feats[(self.L - 1, si)]) for si in range(self.S)}
        fused = []
        for e in self.main_branches:
            ei = sc.index(e)
            y = outs[ei]
            for k, step in enumerate(self.chains[str(e)]):
                y = step(y, outs[ei - k - 1])
            fused.append(y)
        size = (x.shape[2], x.shape[3])
        feat = self.ffm(torch.cat(fused, dim=1))
        logits = resize(self.final(self.head(feat)), size, align_corners=True)
        res = {"logits": logits, "feat8": feat}
        for e, y in zip(self.main_branches, fused):
            res[f"logits_{e}"] = resize(self.aux[str(e)](y), size, align_corners=True)
        return res
