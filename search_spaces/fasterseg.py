"""FasterSeg's multi-resolution supernet, with sampled (single-path) and mixed (DARTS-style) forward passes.

Trellis (FasterSeg, ICLR 2020, §3.1–3.3 and its `search/model_search.py`): L layers × scales 1/8, 1/16, 1/32
(scale index si = 0, 1, 2). Cell (l, si) exists for l ≥ si and reads the *node* feature F(l, si):

* F(0, 0) is the stem output; for si = 0 (l ≥ 1) F(l, 0) is the keep output of cell (l−1, 0); for l = si it is
  the down output of cell (l−1, si−1); otherwise it is chosen by β(l, si) = softmax over (keep from (l−1, si),
  down from (l−1, si−1)) — index 0 = keep, 1 = down (FasterSeg stores the reverse order);
* cell (l, si) has a stride-1 *keep* operator C → C at its scale and, unless si is the coarsest scale or l = L−1,
  a stride-2 *down* operator to 1/(2s); both choose among the ops with the cell's α(l, si) (FasterSeg eq. 1);
* γ(l, si), l ≥ max(1, si), picks the width multiplier of F(l, si) (shared by whichever operator produces it);
  the last layer outputs the head width; the teacher set has no γ and always runs the widest width.

A forward pass returns the logits of every head (FasterSeg trains them all): the refine chain of each ending
scale climbs to 1/8 with :class:`~search_spaces.heads.FusionStep` (single-path modes: skip = the input of the cell
where the route leaves the finer scale, as in the derived network; ``mixed``: the last layer's finer output), the
two-branch combinations {coarsest, e} are fused (:class:`FeatureFusion` → :class:`SegHead`) and upsampled ×8
with the searched final upsampler; the single-branch heads are auxiliary (bilinear ×8).

Modes. ``sampled``: α, β and upsampler choices are hard straight-through Gumbel one-hots (GDAS, Dong & Yang,
CVPR 2019, eq. 3–5); a backward reachability pass from the heads finds the cells the sampled routes use, and only
those cells, and only their chosen operator at the chosen width, run. ``mixed``: FasterSeg's own forward — every
op applied to every candidate input, weighted by softmax(α) and softmax(β) (DARTS, Liu et al. ICLR 2019, eq. 2).
Widths are sampled with hard Gumbel (τ) in both modes and each output is multiplied by the one-hot values of its
input and output widths (=1 forward, gradient to γ), as FasterSeg does.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from search_spaces.arch import SpaceSpec
from search_spaces.gumbel import gumbel_softmax_st
from search_spaces.heads import FeatureFusion, FusionStep, SegHead, Stem
from search_spaces.ops import SlimOperator, channels
from search_spaces.upsample import UPSAMPLERS, Bilinear, PixelShuffleUp, init_pixel_shuffle, resize

__all__ = ["Supernet", "create_supernet", "MODES", "WIDTH_MODES"]

MODES = ("sampled", "mixed")
WIDTH_MODES = ("sample", "max", "min", "random")
_UPSAMPLE_MODES = ("search", *UPSAMPLERS)


class _ArchParams(nn.Module):
    """α `[L−si, n_ops]`, β `[L−1−si, 2]` (si ≥ 1), γ `[L−max(1,si), n_widths]` per scale, upsample `[n+1, 2]`."""

    def __init__(self, L: int, S: int, n_ops: int, n_widths: int | None, n_up: int | None):
        super().__init__()
        init = lambda *shape: nn.Parameter(1e-3 * torch.ones(*shape))  # noqa: E731  (FasterSeg's init)
        self.alpha = nn.ParameterList(init(L - si, n_ops) for si in range(S))
        self.beta = nn.ParameterList(init(L - 1 - si, 2) for si in range(1, S))
        self.gamma = nn.ParameterList(init(L - max(1, si), n_widths) for si in range(S)) if n_widths else None
        self.upsample = init(n_up, 2) if n_up else None


class _UpChoice(nn.Module):
    """Searchable ×`factor` upsampler: bilinear or PixelShuffle, picked by a one-hot (sampled) or mixed."""

    def __init__(self, c: int, factor: int, kind: str):
        super().__init__()
        self.kind = kind
        self.cands = nn.ModuleDict()
        if kind in ("search", "bilinear"):
            self.cands["bilinear"] = Bilinear(factor)
        if kind in ("search", "pixel_shuffle"):
            self.cands["pixel_shuffle"] = PixelShuffleUp(c, factor)

    def forward(self, x: torch.Tensor, w: torch.Tensor | None, idx: int | None) -> torch.Tensor:
        if self.kind != "search":
            return self.cands[self.kind](x)
        if idx is not None:
            return self.cands[UPSAMPLERS[idx]](x) * w[idx]
        return sum(w[i] * self.cands[u](x) for i, u in enumerate(UPSAMPLERS))


class _Fusion(nn.Module):
    """A :class:`FusionStep` whose ×2 upsampler is searchable and whose skip may be narrower than `c_skip` (the
    widest it can be): its missing channels are zeros, i.e. the refine kernel is sliced to the skip's width."""

    def __init__(self, c_in: int, c_skip: int, c_out: int, kind: str):
        super().__init__()
        self.c_skip = c_skip
        self.step = FusionStep(c_in, c_skip, c_out, "bilinear")
        self.step.up = _UpChoice(c_out, 2, kind)

    def forward(self, coarse: torch.Tensor, fine: torch.Tensor, w: torch.Tensor | None, idx: int | None):
        up = self.step.up(self.step.arm(coarse), w, idx)
        if up.shape[-2:] != fine.shape[-2:]:
            up = resize(up, fine.shape[-2:], align_corners=True)
        if fine.shape[1] < self.c_skip:
            fine = F.pad(fine, (0, 0, 0, 0, 0, self.c_skip - fine.shape[1]))
        return self.step.refine(torch.cat([up, fine], dim=1))


class _Heads(nn.Module):
    """Refine chains of every ending scale, the two-branch heads {coarsest, e} and the auxiliary heads."""

    def __init__(self, spec: SpaceSpec, head_width: float, kind: str, skip_channels: list[int]):
        super().__init__()
        sc, fch, nc = spec.scales, spec.fch, spec.num_classes
        c = [channels(s, fch, head_width) for s in sc]
        self.chains = nn.ModuleDict({
            str(sc[e]): nn.ModuleList(_Fusion(c[e - k], skip_channels[e - k - 1], c[e - k - 1], kind)
                                      for k in range(e))
            for e in range(1, len(sc))
        })
        self.aux = nn.ModuleDict({str(s): SegHead(c[0], nc) for s in sc})
        pairs = [str(s) for s in sc[:-1]]
        self.ffm = nn.ModuleDict({p: FeatureFusion(2 * c[0]) for p in pairs})
        self.head = nn.ModuleDict({p: SegHead(2 * c[0], nc) for p in pairs})
        self.final = nn.ModuleDict({p: _UpChoice(nc, sc[0], kind) for p in pairs})


class Supernet(nn.Module):
    """FasterSeg supernet with teacher/student architecture sets sharing the cell weights.

    Args: `spec` (space), `num_classes` (overrides `spec.num_classes`), `mode` sampled|mixed,
    `shared_kernels` (candidate convs of a cell direction slice one kernel: single-path NAS, Stamoulis et al.
    2019), student stem/head widths, `upsample` search|bilinear|pixel_shuffle, `arch_sets` (a set named
    "teacher" runs at full width without γ), `main_branches` (the pair returned as "logits").
    """

    def __init__(self, spec: SpaceSpec, num_classes: int | None = None, mode: str = "sampled",
                 shared_kernels: bool = False, student_stem_width: float = 8 / 12,
                 student_head_width: float = 8 / 12, upsample: str = "search",
                 arch_sets: tuple[str, ...] = ("student", "teacher"),
                 main_branches: tuple[int, int] | None = None):
        super().__init__()
        if num_classes is not None:
            spec = replace(spec, num_classes=num_classes)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {list(MODES)} but got {mode!r}.")
        if upsample not in _UPSAMPLE_MODES:
            raise ValueError(f"upsample must be one of {list(_UPSAMPLE_MODES)} but got {upsample!r}.")
        if len(spec.scales) < 2 or spec.layers < len(spec.scales):
            raise ValueError(f"the supernet needs ≥ 2 scales and layers ≥ scales, got {spec.scales}, {spec.layers}")
        if not arch_sets or len(set(arch_sets)) != len(arch_sets):
            raise ValueError(f"arch_sets must be distinct names, got {arch_sets!r}")
        self.spec, self.mode, self.upsample_mode = spec, mode, upsample
        self.shared_kernels, self.arch_sets = shared_kernels, tuple(arch_sets)
        self.L, self.S = spec.layers, len(spec.scales)
        sc = spec.scales
        self.main_branches = tuple(main_branches) if main_branches else (sc[-1], sc[-2])
        if self.main_branches[0] != sc[-1] or self.main_branches[1] not in sc[:-1]:
            raise ValueError(f"main_branches must be (coarsest, finer scale), got {self.main_branches}")
        teacher = {s: s == "teacher" for s in self.arch_sets}
        self.stem_width = {s: 1.0 if teacher[s] else student_stem_width for s in self.arch_sets}
        self.head_width = {s: 1.0 if teacher[s] else student_head_width for s in self.arch_sets}
        self._wide = max(range(len(spec.widths)), key=lambda i: spec.widths[i])
        self.fusion_keys = [(sc[e], k) for e in range(1, self.S) for k in range(e)]
        n_up = len(self.fusion_keys) + 1 if upsample == "search" else None
        self.arch = nn.ModuleDict({
            s: _ArchParams(self.L, self.S, len(spec.ops), None if teacher[s] else len(spec.widths), n_up)
            for s in self.arch_sets
        })
        self.stems = nn.ModuleDict({s: Stem(spec.fch, self.stem_width[s]) for s in self.arch_sets})
        self.heads = nn.ModuleDict({s: _Heads(spec, self.head_width[s], upsample, self._skip_channels(s))
                                    for s in self.arch_sets})
        self.cells = nn.ModuleDict()
        self._head_idx: dict[tuple[int, str], int] = {}
        for layer, si, d in self._slots():
            c_in, c_out = self._slot_channels(layer, si, d)
            ops = nn.ModuleList(SlimOperator(op, max(c_in), c_out, 2 if d == "down" else 1) for op in spec.ops)
            if shared_kernels:
                _share_kernels(ops)
            self.cells[f"{layer}_{si}_{d}"] = ops

    # ------------------------------------------------------------------ structure
    def _skip_channels(self, arch_set: str) -> list[int]:
        """Per scale, the widest feature a fusion step can take as its skip: a node input at any width, the stem
        output at 1/8, or (mixed mode) the last layer's output at the head width."""
        sp = self.spec
        out = []
        for si, s in enumerate(sp.scales):
            widths = [*sp.widths, self.head_width[arch_set], *([self.stem_width[arch_set]] if si == 0 else [])]
            out.append(max(channels(s, sp.fch, w) for w in widths))
        return out

    def _slots(self) -> list[tuple[int, int, str]]:
        """(layer, scale index, direction) of every operator slot, in execution order."""
        out = []
        for layer in range(self.L):
            for si in range(min(layer, self.S - 1) + 1):
                out.append((layer, si, "keep"))
                if si < self.S - 1 and layer < self.L - 1:
                    out.append((layer, si, "down"))
        return out

    def _slot_channels(self, layer: int, si: int, d: str) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """C_in and C_out choices of a slot: the union over the sets, which the shared weights must hold."""
        sp, sets = self.spec, list(self.arch_sets)
        s, s_out = sp.scales[si], sp.scales[si + (d == "down")]
        widths = tuple(channels(s, sp.fch, w) for w in sp.widths)
        c_in = _unique((*(channels(s, sp.fch, self.stem_width[a]) for a in sets), *widths)) if layer == 0 else widths
        if layer == self.L - 1:
            c_out = _unique(channels(s_out, sp.fch, self.head_width[a]) for a in sets)
            for a in sets:
                self._head_idx[(si, a)] = c_out.index(channels(s_out, sp.fch, self.head_width[a]))
        else:
            c_out = tuple(channels(s_out, sp.fch, w) for w in sp.widths)
        return c_in, c_out

    # ------------------------------------------------------------------ parameters
    def arch_parameters(self, arch_set: str | None = None) -> list[nn.Parameter]:
        """α, β, γ and upsampler logits of one set (all sets when None)."""
        sets = [arch_set] if arch_set else self.arch_sets
        for s in sets:
            self._check_set(s)
        return [p for s in sets for p in self.arch[s].parameters()]

    def named_arch_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in self.named_parameters() if n.startswith("arch.")]

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every parameter that is not an architecture parameter (shared kernels listed once)."""
        arch = {id(p) for p in self.arch_parameters()}
        return [p for p in self.parameters() if id(p) not in arch]

    def arch_probs(self, arch_set: str = "student") -> dict[str, Any]:
        """Softmaxes in the layout of :class:`nas.latency.expected.ArchProbs` (``ArchProbs(**probs)``):
        alpha[(l, si)] `[n_ops]`, beta[(l, si)] `[2]` = (keep, down), gamma[(l, si)] `[n_widths]` (teacher: one-hot
        widest), upsample[(e, k)] `[2]` over UPSAMPLERS, final_upsample `[2]` (one-hot when not searched)."""
        self._check_set(arch_set)
        p, L = self.arch[arch_set], self.L
        dev = p.alpha[0].device
        alpha = {(si + i, si): r for si, a in enumerate(p.alpha) for i, r in enumerate(F.softmax(a, -1))}
        beta = {(si + 2 + i, si + 1): r for si, b in enumerate(p.beta) for i, r in enumerate(F.softmax(b, -1))}
        gamma: dict[tuple[int, int], torch.Tensor] = {}
        for si in range(self.S):
            for i, layer in enumerate(range(max(1, si), L)):
                if p.gamma is not None:
                    gamma[(layer, si)] = F.softmax(p.gamma[si][i], -1)
                else:
                    gamma[(layer, si)] = F.one_hot(torch.tensor(self._wide), len(self.spec.widths)).float().to(dev)
        if p.upsample is not None:
            ups = F.softmax(p.upsample, -1)
        else:
            fixed = F.one_hot(torch.tensor(UPSAMPLERS.index(self.upsample_mode)), 2).float().to(dev)
            ups = fixed.expand(len(self.fusion_keys) + 1, 2)
        upsample = {k: ups[i] for i, k in enumerate(self.fusion_keys)}
        return {"alpha": alpha, "beta": beta, "gamma": gamma, "upsample": upsample, "final_upsample": ups[-1]}

    def has_widths(self, arch_set: str) -> bool:
        """Whether `arch_set` searches widths (the teacher runs at full width and has no γ)."""
        self._check_set(arch_set)
        return self.arch[arch_set].gamma is not None

    def _check_set(self, arch_set: str) -> None:
        if arch_set not in self.arch_sets:
            raise ValueError(f"unknown architecture set {arch_set!r} (this supernet has: {', '.join(self.arch_sets)})")

    # ------------------------------------------------------------------ forward
    def forward(self, x: torch.Tensor, arch_set: str = "student", tau: float = 1.0,
                generator: torch.Generator | None = None, argmax: bool = False,
                width_mode: str = "sample") -> dict[str, torch.Tensor]:
        """`x` `[B, 3, H, W]` → {"logits", "logits_<c>_<e>" per pair, "logits_<s>" aux: `[B, K, H, W]`;
        "feat8": `[B, 2·C8, H/8, W/8]` the fused feature of the main pair}. Gumbel noise from `generator`.

        `argmax=True` runs the single path of every choice's argmax (no noise, either mode): the derived
        network with the supernet's weights. `width_mode` (sample | max | min | random) overrides the student's
        width sampling, for the sandwich rule of the weight warm-up (Yu & Huang, ICCV 2019, §3.2).
        """
        self._check_set(arch_set)
        if width_mode not in WIDTH_MODES:
            raise ValueError(f"width_mode must be one of {list(WIDTH_MODES)} but got {width_mode!r}.")
        smp = _Sample(self, arch_set, tau, generator, argmax=argmax, width_mode=width_mode)
        feat0 = self.stems[arch_set](x)
        if self.mode == "sampled" or argmax:
            outs, inputs = self._trellis_sampled(feat0, smp)
            skips = self._route_skips(smp.beta_idx, inputs)
        else:
            outs = self._trellis_mixed(feat0, smp)
            skips = {(e, j): outs[j] for e in range(1, self.S) for j in range(e)}
        return self._heads(outs, skips, smp, arch_set, (x.shape[2], x.shape[3]))

    def _sources(self, layer: int, si: int) -> list[tuple[int, int, str]]:
        """Candidate inputs of node (l, si) as (layer, scale index, direction), β order (keep, down)."""
        if layer == 0:
            return []
        if si == 0:
            return [(layer - 1, 0, "keep")]
        if layer == si:
            return [(layer - 1, si - 1, "down")]
        return [(layer - 1, si, "keep"), (layer - 1, si - 1, "down")]

    def _run_slot(self, inp: torch.Tensor, layer: int, si: int, d: str, smp: _Sample, op_idx: int) -> torch.Tensor:
        o = si + (d == "down")
        w_out, g_out = smp.width_out(layer, o)
        y = self.cells[f"{layer}_{si}_{d}"][op_idx](inp, w_out)
        return y * g_out * smp.width_in(layer, si)

    def _trellis_sampled(self, feat0: torch.Tensor, smp: _Sample
                         ) -> tuple[dict[int, torch.Tensor], dict[tuple[int, int], torch.Tensor]]:
        """The last layer's output per scale index, and the input feature of every node (layer, si) that ran."""
        need = self.reachable(smp.beta_idx)
        outs: dict[tuple[int, int, str], torch.Tensor] = {}
        inputs: dict[tuple[int, int], torch.Tensor] = {}
        for layer in range(self.L):
            for si in range(min(layer, self.S - 1) + 1):
                dirs = need.get((layer, si))
                if not dirs:
                    continue
                srcs = self._sources(layer, si)
                if not srcs:
                    inp = feat0
                elif len(srcs) == 1:
                    inp = outs[srcs[0]]
                else:
                    b = smp.beta_idx[(layer, si)]
                    inp = outs[srcs[b]] * smp.beta[(layer, si)][b]
                inputs[(layer, si)] = inp
                k = smp.alpha_idx[(layer, si)]
                for d in dirs:
                    outs[(layer, si, d)] = self._run_slot(inp, layer, si, d, smp, k) * smp.alpha[(layer, si)][k]
        return {si: outs[(self.L - 1, si, "keep")] for si in range(self.S)}, inputs

    def _route_skips(self, beta_idx: dict[tuple[int, int], int], inputs: dict[tuple[int, int], torch.Tensor]
                     ) -> dict[tuple[int, int], torch.Tensor]:
        """{(e, j): the skip of the fusion step into scale index j on the head chain of ending scale e}: the
        input of the cell where the route to the last node at e leaves scale j (the stem output when it leaves
        1/8 at layer 0), as in the derived network. The last layer's own output at j would make every route's
        detail pass through the whole trellis at j, a much deeper network than the one derived."""
        skips = {}
        for e in range(1, self.S):
            layer, si = self.L - 1, e
            while layer > 0:
                srcs = self._sources(layer, si)
                pl, psi, d = srcs[beta_idx[(layer, si)]] if len(srcs) == 2 else srcs[0]
                if d == "down" and (e, psi) not in skips:
                    skips[(e, psi)] = inputs[(pl, psi)]
                layer, si = pl, psi
        return skips

    def _trellis_mixed(self, feat0: torch.Tensor, smp: _Sample) -> dict[int, torch.Tensor]:
        outs: dict[tuple[int, int, str], torch.Tensor] = {}
        for layer, si, d in self._slots():
            srcs = self._sources(layer, si)
            inputs = [(feat0, 1.0)] if not srcs else [(outs[s], 1.0) for s in srcs]
            if len(srcs) == 2:
                inputs = [(outs[s], smp.beta[(layer, si)][b]) for b, s in enumerate(srcs)]
            a = smp.alpha[(layer, si)]
            y = 0
            for inp, wb in inputs:
                for k in range(len(self.spec.ops)):
                    y = y + self._run_slot(inp, layer, si, d, smp, k) * (a[k] * wb)
            outs[(layer, si, d)] = y
        return {si: outs[(self.L - 1, si, "keep")] for si in range(self.S)}

    def reachable(self, beta_idx: dict[tuple[int, int], int]) -> dict[tuple[int, int], list[str]]:
        """Backward pass from the last layer's nodes (all heads read them): the directions each cell must run
        when node (l, si) takes input `beta_idx[(l, si)]` (0 keep, 1 down)."""
        need: dict[tuple[int, int], list[str]] = {(self.L - 1, si): ["keep"] for si in range(self.S)}
        for layer in range(self.L - 1, 0, -1):
            for si in range(min(layer, self.S - 1), -1, -1):
                if (layer, si) not in need:
                    continue
                srcs = self._sources(layer, si)
                sl, ss, d = srcs[beta_idx[(layer, si)]] if len(srcs) == 2 else srcs[0]
                dirs = need.setdefault((sl, ss), [])
                if d not in dirs:
                    dirs.append(d)
        return need

    def _heads(self, outs: dict[int, torch.Tensor], skips: dict[tuple[int, int], torch.Tensor], smp: _Sample,
               arch_set: str, size: tuple[int, int]) -> dict[str, torch.Tensor]:
        h, sc = self.heads[arch_set], self.spec.scales
        fused = {sc[0]: outs[0]}
        for e in range(1, self.S):
            y = outs[e]
            for k, step in enumerate(h.chains[str(sc[e])]):
                w, idx = smp.upsample(self.fusion_keys.index((sc[e], k)))
                y = step(y, skips[(e, e - k - 1)], w, idx)
            fused[sc[e]] = y
        res: dict[str, torch.Tensor] = {}
        w, idx = smp.upsample(len(self.fusion_keys))
        for e in sc[:-1]:
            feat = h.ffm[str(e)](torch.cat([fused[sc[-1]], fused[e]], dim=1))
            logits = resize(h.final[str(e)](h.head[str(e)](feat), w, idx), size, align_corners=True)
            res[f"logits_{sc[-1]}_{e}"] = logits
            if e == self.main_branches[1]:
                res["logits"], res["feat8"] = logits, feat
        for s in sc:
            res[f"logits_{s}"] = resize(h.aux[str(s)](fused[s]), size, align_corners=True)
        return res


class _Sample:
    """The choices of one forward pass: one-hot (sampled) or softmax (mixed) weights and the chosen indices."""

    def __init__(self, net: Supernet, arch_set: str, tau: float, gen: torch.Generator | None,
                 argmax: bool = False, width_mode: str = "sample"):
        p, sampled = net.arch[arch_set], net.mode == "sampled" or argmax
        self.net, self.arch_set = net, arch_set

        def draw(logits: torch.Tensor, hard: bool) -> tuple[torch.Tensor, list | None]:
            if not hard:
                return F.softmax(logits, -1), None
            if argmax:
                idx = logits.detach().argmax(-1)
                return F.one_hot(idx, logits.shape[-1]).to(logits.dtype), idx.tolist()
            y, idx = gumbel_softmax_st(logits, tau, gen)
            return y, idx.tolist()

        def draw_width(logits: torch.Tensor) -> tuple[torch.Tensor, list]:
            if width_mode == "sample" or argmax:
                return draw(logits, True)
            n_rows, n = logits.shape
            if width_mode == "random":
                idx = torch.randint(n, (n_rows,), generator=gen, device=gen.device if gen else "cpu")
            else:
                order = sorted(range(n), key=lambda i: net.spec.widths[i])
                idx = torch.full((n_rows,), order[-1] if width_mode == "max" else order[0], dtype=torch.long)
            idx = idx.to(logits.device)
            return F.one_hot(idx, n).to(logits.dtype), idx.tolist()

        self.alpha, self.alpha_idx = {}, {}
        for si, a in enumerate(p.alpha):
            y, idx = draw(a, sampled)
            for i in range(a.shape[0]):
                self.alpha[(si + i, si)] = y[i]
                if idx is not None:
                    self.alpha_idx[(si + i, si)] = idx[i]
        self.beta, self.beta_idx = {}, {}
        for j, b in enumerate(p.beta):
            y, idx = draw(b, sampled)
            for i in range(b.shape[0]):
                self.beta[(j + 2 + i, j + 1)] = y[i]
                if idx is not None:
                    self.beta_idx[(j + 2 + i, j + 1)] = idx[i]
        self.gamma, self.gamma_idx = {}, {}
        if p.gamma is not None:
            for si, g in enumerate(p.gamma):
                y, idx = draw_width(g)
                for i in range(g.shape[0]):
                    self.gamma[(max(1, si) + i, si)], self.gamma_idx[(max(1, si) + i, si)] = y[i], idx[i]
        self.ups, self.ups_idx = None, None
        if p.upsample is not None:
            self.ups, self.ups_idx = draw(p.upsample, sampled)

    def width_in(self, layer: int, si: int) -> torch.Tensor | float:
        """Straight-through value of the input width's one-hot (1.0 for the stem and the teacher)."""
        key = (layer, si)
        return self.gamma[key][self.gamma_idx[key]] if key in self.gamma else 1.0

    def width_out(self, layer: int, o: int) -> tuple[int, torch.Tensor | float]:
        """(index into the slot's C_out choices, straight-through value) for the output of layer l at scale o."""
        net = self.net
        if layer == net.L - 1:
            return net._head_idx[(o, self.arch_set)], 1.0
        key = (layer + 1, o)
        if key not in self.gamma:
            return net._wide, 1.0
        i = self.gamma_idx[key]
        return i, self.gamma[key][i]

    def upsample(self, row: int) -> tuple[torch.Tensor | None, int | None]:
        if self.ups is None:
            return None, None
        return self.ups[row], (self.ups_idx[row] if self.ups_idx is not None else None)


def _unique(values) -> tuple[int, ...]:
    out: list[int] = []
    for v in values:
        if v not in out:
            out.append(v)
    return tuple(out)


def _share_kernels(ops: nn.ModuleList) -> None:
    """Tie the k-th 3×3 kernel of every conv candidate of one slot to the first candidate's (BNs stay apart)."""
    for k in range(2):
        units = [op.units[k] for op in ops if len(op.units) > k]
        for u in units[1:]:
            u.weight = units[0].weight


def create_supernet(cfg: Any, num_classes: int) -> Supernet:
    """The supernet a :class:`nas.config.SpaceConfig` describes."""
    from search_spaces.registry import branches_from_config, space_from_config

    spec = space_from_config(cfg, num_classes)
    main = branches_from_config(cfg)
    net = Supernet(spec, num_classes, mode=cfg.mode, shared_kernels=cfg.shared_kernels,
                   student_stem_width=cfg.student_stem_width, student_head_width=cfg.student_head_width,
                   upsample=cfg.upsample, main_branches=main)
    if not getattr(cfg, "icnr", True):
        init_pixel_shuffle(net, icnr=False)
    return net
