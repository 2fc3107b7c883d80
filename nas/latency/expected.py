"""Differentiable expected latency of the network a supernet would derive, and the latency term of the loss.

Route model. A derived branch ending at scale e is a route through the trellis from the stem (layer 0, 1/8) to
(layer L−1, e). Walking it backwards, the input of node (l, s) comes from the same scale with probability
β_keep(l, s) or from the finer scale's strided output with β_down(l, s), so the probability u_b(l, s) that
branch b visits node (l, s) follows from u_b(L−1, e) = 1:

    u_b(l−1, s)   += u_b(l, s) · β_keep(l, s)        u_b(l−1, s/2) += u_b(l, s) · β_down(l, s)

An edge (the keep or down operator of cell (l−1, ·)) is used by the derived network with probability
1 − Π_b (1 − usage_b) over the kept branches (they share their common prefix). Its expected cost is

    E[T] = Σ_{op, c_in, c_out} α(op) · γ_in(c_in) · γ_out(c_out) · T(op, stride, c_in, c_out, H_s × W_s)

(FasterSeg eq. 4 generalised to widths, with T from the measured table). Heads add the fusion steps (each
with its upsampler probability and the width of the feature where the branch leaves the finer scale), the
feature fusion, the classifier and the final ×8 upsampler. For the sampled mode the same expectation is used
(it is the mean latency of the sampled networks, with far less variance than a single sample).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from nas.latency.table import LatencyTable
from nas.latency.units import fusion_key, op_key, unit_key
from search_spaces.arch import SpaceSpec
from search_spaces.heads import Stem
from search_spaces.ops import channels
from search_spaces.upsample import UPSAMPLERS

__all__ = ["ArchProbs", "ExpectedLatency", "latency_loss", "LATENCY_LOSSES"]

LATENCY_LOSSES = ("hinge", "mnas")


@dataclass
class ArchProbs:
    """Architecture probabilities in the layout the latency model reads (all tensors sum to 1 on the last dim).

    * ``alpha[(l, si)]``: `[n_ops]` over the space's ops for cell (layer l, scale index si);
    * ``beta[(l, si)]``: `[2]` = (from the same scale, from the finer scale) for nodes with both inputs;
    * ``gamma[(l, si)]``: `[n_widths]` width of the feature entering node (l, si), for l ≥ 1;
    * ``upsample[(e, k)]``: `[2]` over UPSAMPLERS for step k of the head of the branch ending at scale e;
    * ``final_upsample``: `[2]`.
    """

    alpha: dict[tuple[int, int], torch.Tensor]
    beta: dict[tuple[int, int], torch.Tensor]
    gamma: dict[tuple[int, int], torch.Tensor]
    upsample: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    final_upsample: torch.Tensor | None = None

    def detached(self) -> ArchProbs:
        d = lambda m: {k: v.detach() for k, v in m.items()}  # noqa: E731
        fu = self.final_upsample.detach() if self.final_upsample is not None else None
        return ArchProbs(d(self.alpha), d(self.beta), d(self.gamma), d(self.upsample), fu)

    def mix(self, alpha: bool, beta: bool, gamma: bool, upsample: bool = True) -> ArchProbs:
        """Keep gradients only through the chosen kinds (the others are detached), for decoupled weighting."""
        det = self.detached()
        return ArchProbs(
            self.alpha if alpha else det.alpha,
            self.beta if beta else det.beta,
            self.gamma if gamma else det.gamma,
            self.upsample if upsample else det.upsample,
            self.final_upsample if upsample else det.final_upsample,
        )


class ExpectedLatency:
    """Expected latency (ms) of the derived network under :class:`ArchProbs`, from a latency table.

    `branches` are the ending scales kept by the derived network (FasterSeg keeps 1/32 and one of 1/16, 1/8).
    """

    def __init__(self, table: LatencyTable, spec: SpaceSpec, input_hw: tuple[int, int], stem_width: float,
                 head_width: float, branches: tuple[int, ...] = (32, 16)):
        self.table, self.spec, self.hw = table, spec, input_hw
        self.stem_width, self.head_width, self.branches = stem_width, head_width, branches
        H, W = input_hw
        self.L = spec.layers
        self.S = len(spec.scales)
        self._cost: dict[tuple, torch.Tensor] = {}
        self._ref = torch.zeros((), dtype=torch.float64)  # dtype/device of the probabilities being priced
        self._fixed = table.lookup(unit_key(Stem(spec.fch, stem_width), [(1, 3, H, W)]))
        c8 = channels(spec.scales[0], spec.fch, head_width) * len(branches)
        h8, w8 = H // spec.scales[0], W // spec.scales[0]
        self._fixed += table.lookup(f"ffm:{c8}@{h8}x{w8}")
        self._fixed += table.lookup(f"head:{c8}->{spec.num_classes}@{h8}x{w8}")
        self._final_up = torch.tensor([
            table.lookup(f"up:{u}:{spec.num_classes}x{spec.scales[0]}@{h8}x{w8}") for u in UPSAMPLERS
        ], dtype=torch.float64)

    # ---------------------------------------------------------------- cost tensors
    def _widths(self, scale: int, which: str) -> list[int]:
        if which == "stem":
            return [channels(scale, self.spec.fch, self.stem_width)]
        if which == "head":
            return [channels(scale, self.spec.fch, self.head_width)]
        return [channels(scale, self.spec.fch, w) for w in self.spec.widths]

    def _op_cost(self, si: int, stride: int, cin: str, cout: str) -> torch.Tensor:
        """`[n_ops, n_cin, n_cout]` table latencies for a cell at scale index si."""
        key = (si, stride, cin, cout, self._ref.dtype, self._ref.device)
        if key not in self._cost:
            s = self.spec.scales[si]
            h, w = self.hw[0] // s, self.hw[1] // s
            ins, outs = self._widths(s, cin), self._widths(s * stride, cout)
            self._cost[key] = torch.tensor([
                [[self.table.lookup(op_key(op, stride, ci, co, h, w)) for co in outs] for ci in ins]
                for op in self.spec.ops
            ], dtype=self._ref.dtype, device=self._ref.device)
        return self._cost[key]

    def _fusion_cost(self, si: int, skip: str) -> torch.Tensor:
        """`[n_up, n_skip]` latencies of the fusion step from scale index si to si−1."""
        key = ("fusion", si, skip, self._ref.dtype, self._ref.device)
        if key not in self._cost:
            s, fine = self.spec.scales[si], self.spec.scales[si - 1]
            c_in, c_out = channels(s, self.spec.fch, self.head_width), channels(fine, self.spec.fch, self.head_width)
            h, w = self.hw[0] // s, self.hw[1] // s
            self._cost[key] = torch.tensor([
                [self.table.lookup(fusion_key(u, c_in, cs, c_out, h, w)) for cs in self._widths(fine, skip)]
                for u in UPSAMPLERS
            ], dtype=self._ref.dtype, device=self._ref.device)
        return self._cost[key]

    # ---------------------------------------------------------------- the expectation
    def _route(self, probs: ArchProbs, end_si: int) -> dict[tuple[int, int, int], torch.Tensor]:
        """Usage probability of each edge (l, si, stride) — the operator of cell (l, si) — by one branch."""
        L = self.L
        one = self._ref + 1
        u: dict[tuple[int, int], torch.Tensor] = {(L - 1, end_si): one}
        edges: dict[tuple[int, int, int], torch.Tensor] = {(L - 1, end_si, 1): one}
        for layer in range(L - 1, 0, -1):
            for si in range(min(layer, self.S - 1), -1, -1):
                p = u.get((layer, si))
                if p is None:
                    continue
                if si == 0:
                    keep, down = p, None
                elif layer == si:
                    keep, down = None, p
                else:
                    b = probs.beta[(layer, si)]
                    keep, down = p * b[0], p * b[1]
                if keep is not None:
                    u[(layer - 1, si)] = u.get((layer - 1, si), 0) + keep
                    edges[(layer - 1, si, 1)] = edges.get((layer - 1, si, 1), 0) + keep
                if down is not None:
                    u[(layer - 1, si - 1)] = u.get((layer - 1, si - 1), 0) + down
                    edges[(layer - 1, si - 1, 2)] = edges.get((layer - 1, si - 1, 2), 0) + down
        return edges

    def __call__(self, probs: ArchProbs) -> torch.Tensor:
        """Expected latency in ms (a differentiable scalar), before the table's whole-network correction."""
        first = next(iter(probs.alpha.values()))
        self._ref = first.new_zeros(())
        scales = list(self.spec.scales)
        routes = [self._route(probs, scales.index(e)) for e in self.branches]
        total = self._ref + self._fixed
        for key in set().union(*routes):
            miss = self._ref + 1
            for r in routes:
                if key in r:
                    miss = miss * (1 - r[key])
            used = 1 - miss
            layer, si, stride = key
            cin = "stem" if layer == 0 else "cell"
            pin = (self._ref + 1).reshape(1) if layer == 0 else probs.gamma[(layer, si)]
            out_si = si + (stride == 2)
            if layer == self.L - 1:
                cout, pout = "head", (self._ref + 1).reshape(1)
            else:
                cout, pout = "cell", probs.gamma[(layer + 1, out_si)]
            cost = self._op_cost(si, stride, cin, cout)
            total = total + used * torch.einsum("o,i,j,oij->", probs.alpha[(layer, si)], pin, pout, cost)
        for e, route in zip(self.branches, routes):
            total = total + self._head_cost(probs, scales.index(e), route)
        final = self._final_up.to(self._ref)
        if probs.final_upsample is not None:
            total = total + (probs.final_upsample * final).sum()
        else:
            total = total + final[0]
        return total

    def _head_cost(self, probs: ArchProbs, end_si: int, route: dict) -> torch.Tensor:
        """Fusion steps of one branch: the skip feature is where the route leaves the finer scale."""
        cost = self._ref.clone()
        for k, si in enumerate(range(end_si, 0, -1)):
            fine = si - 1
            leave = [(layer, route[(layer, fine, 2)]) for layer in range(self.L) if (layer, fine, 2) in route]
            up = probs.upsample.get((self.spec.scales[end_si], k))
            up = up if up is not None else self._ref.new_tensor([1.0, 0.0])
            norm = sum(p for _, p in leave) if leave else self._ref + 1
            for layer, p in leave:
                if layer == 0:
                    c = self._fusion_cost(si, "stem")[:, 0]
                    cost = cost + (p / norm) * (up * c).sum()
                else:
                    c = self._fusion_cost(si, "cell")
                    cost = cost + (p / norm) * torch.einsum("u,j,uj->", up, probs.gamma[(layer, fine)], c)
        return cost


def latency_loss(latency: torch.Tensor, target_ms: float, kind: str = "hinge", weight: float = 1.0,
                 exponent: float = 2.0) -> torch.Tensor:
    """The latency term of the architecture loss with an explicit target T (ms).

    * ``hinge``: w · max(0, Lat/T − 1) — no pressure below the target;
    * ``mnas``: w · (Lat/T)^β — MnasNet's soft constraint (Tan et al., CVPR 2019, eq. 2) written as a penalty.
    """
    if target_ms <= 0:
        raise ValueError(f"latency target must be positive but got {target_ms}.")
    ratio = latency / target_ms
    if kind == "hinge":
        return weight * torch.relu(ratio - 1)
    if kind == "mnas":
        return weight * ratio.clamp_min(1e-6) ** exponent
    raise ValueError(f"unknown latency loss '{kind}' (known: {', '.join(LATENCY_LOSSES)})")
