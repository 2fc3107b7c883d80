"""Derive a discrete :class:`~search_spaces.arch.Architecture` from a supernet's α, β, γ and upsampler logits.

FasterSeg's rules (`train/model_seg.py`: `betas2path`, `path2widths`, `alphas2ops_path_width`), per ending scale e:

1. **Route** — the most probable β route from the stem to node (L−1, e). A route visits one node per layer;
   its probability is the product of β(l, si)[choice] over the nodes with two inputs (choice 0 = from the same
   scale, 1 = from the finer scale), found exactly by a max-product (Viterbi) recursion
   P*(l, si) = max(P*(l−1, si)·β_keep(l, si), P*(l−1, si−1)·β_down(l, si)). FasterSeg's `betas2path` only scores
   the down-transitions (and its double loop for 1/32 skips some pairs); we use the full route probability.
   Ties go to the keep input.
2. **Ops and widths** — op = argmax α(l, si) at each visited cell; the width of each cell's output is
   argmax γ of the node it feeds (`path2widths`); the last cell outputs the head width.
3. **Skips as depth** — a stride-1 `skip` is removed from the chain (its output width goes with it), except:
   * a branch may not be *all* skips between two downsamples (nor between the last downsample and its end):
     the skip with the smallest α_skip there takes its second-best op (`alphas2ops_path_width`);
   * minimum depth min_len = round(len(route)/3) + 2·(index of e): if more skips would go than
     len(route) − min_len allows, the ones with the highest softmax α_skip go and the others take their
     second-best op. ``meta["at_min_depth"][branch]`` tells whether the branch ended at exactly min_len cells.
4. **Branches** — two kept branches, the coarsest with one finer ending ({32,16} or {32,8}); they share their
   common prefix when the builder finds identical leading cells. ``branches="auto"`` scores each pair by the
   geometric mean of the β probabilities of the decisions its routes make (a node shared by both routes counts
   once): P_pair^(1/n_decisions). The 1/8 route makes no decision of its own (a 1/8 node has one input), so the
   score of {32,8} is the 1/32 route's; {32,16} wins when the 1/16 route's decisions are at least as confident
   (ties go to {32,16}, FasterSeg's released student). A plain product would always pick {32,8}.
5. **Upsamplers** — argmax per fusion step and for the final ×8.
6. **Budget** (:func:`derive_within_budget`, used by the search when it has a latency target) — while the
   derived network's table latency is above the target, the single change of choice that gives up the least
   log-probability per ms saved, then the rules above again.

The teacher set derives with kind "teacher", full widths and stem/head width 1.0.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from search_spaces.arch import Architecture, Branch, Cell, SpaceSpec, branch_name
from search_spaces.fasterseg import Supernet
from search_spaces.upsample import UPSAMPLERS

__all__ = ["derive", "derive_from_probs", "derive_within_budget", "best_route", "min_depth", "BRANCH_CHOICES"]

BRANCH_CHOICES = ("auto", "32,16", "32,8")
_TIE = 1e-9  # pair scores this close count as equal (then the coarser finer branch, 1/16, wins)


def min_depth(route_len: int, end_index: int) -> int:
    """FasterSeg's minimum number of cells of a branch: round(len/3) + 2·(index of its ending scale)."""
    return int(round(route_len / 3)) + 2 * end_index


def best_route(beta: dict[tuple[int, int], torch.Tensor], layers: int, end_index: int) -> tuple[list[int], float]:
    """Most probable route to node (layers−1, end_index): scale index per layer, and its probability."""
    best: dict[tuple[int, int], tuple[float, int]] = {(0, 0): (1.0, -1)}  # node -> (prob, previous scale index)
    for layer in range(1, layers):
        for si in range(min(layer, end_index) + 1):
            cands = []
            if si == 0 or layer > si:
                prev = best.get((layer - 1, si))
                if prev is not None:
                    w = float(beta[(layer, si)][0].detach()) if (si > 0 and layer > si) else 1.0
                    cands.append((prev[0] * w, si))
            if si > 0:
                prev = best.get((layer - 1, si - 1))
                if prev is not None:
                    w = float(beta[(layer, si)][1].detach()) if layer > si else 1.0
                    cands.append((prev[0] * w, si - 1))
            if cands:
                best[(layer, si)] = max(cands, key=lambda c: (c[0], c[1] == si))
    route = [end_index]
    for layer in range(layers - 1, 0, -1):
        route.append(best[(layer, route[-1])][1])
    route.reverse()
    return route, best[(layers - 1, end_index)][0]


def _decisions(route: list[int], beta: dict[tuple[int, int], torch.Tensor]) -> dict[tuple[int, int], float]:
    """β probability of each choice the route makes, keyed by node."""
    out = {}
    for layer in range(1, len(route)):
        key = (layer, route[layer])
        if key in beta:
            out[key] = float(beta[key][int(route[layer - 1] != route[layer])].detach())
    return out


def _branch_cells(sp: SpaceSpec, probs: dict[str, Any], route: list[int], head_width: float,
                  teacher: bool, min_depth_rule: bool) -> tuple[list[Cell], dict[str, Any]]:
    """Ops, widths and skip removal along one route (FasterSeg's `path2widths` + `alphas2ops_path_width`)."""
    L = len(route)
    skip = sp.ops.index("skip") if "skip" in sp.ops else None
    alpha = {layer: probs["alpha"][(layer, si)].detach().clone() for layer, si in enumerate(route)}
    widths = []
    for layer in range(L - 1):
        if teacher:
            widths.append(max(sp.widths))
        else:
            widths.append(sp.widths[int(probs["gamma"][(layer + 1, route[layer + 1])].argmax())])
    widths.append(head_width)
    stride1 = [layer == L - 1 or route[layer] == route[layer + 1] for layer in range(L)]
    forbidden: set[int] = set()
    skips = [i for i in range(L) if skip is not None and stride1[i] and int(alpha[i].argmax()) == skip]
    downs = [i for i in range(L - 1) if route[i] < route[i + 1]]
    for a, b in zip(downs, [*downs[1:], L]):
        between = list(range(a + 1, b))
        if between and all(i in skips for i in between):
            forbidden.add(min(between, key=lambda i: float(alpha[i][skip])))
    removable = [i for i in skips if i not in forbidden]
    bound = min_depth(L, route[-1]) if min_depth_rule else 1
    allowed = max(0, L - bound)
    if len(removable) > allowed:
        removable = sorted(removable, key=lambda i: float(alpha[i][skip]), reverse=True)[:allowed]
    removed = set(removable)
    cells = []
    for i in range(L):
        if i in removed:
            continue
        a = alpha[i]
        if skip is not None and int(a.argmax()) == skip and stride1[i]:
            a[skip] = -math.inf
        cells.append(Cell(scale=sp.scales[route[i]], op=sp.ops[int(a.argmax())], width=float(widths[i])))
    cells[-1] = Cell(cells[-1].scale, cells[-1].op, float(head_width))
    info = {"min_depth": bound, "at_min_depth": len(cells) == bound,
            "skips_kept": len(skips) - len(removed)}
    return cells, info


def derive(supernet: Supernet, arch_set: str = "student", branches: str = "auto", min_depth_rule: bool = True,
           cost: Callable[[Architecture], float] | None = None, budget_ms: float | None = None,
           fill: float = 0.0) -> Architecture:
    """The discrete architecture of `arch_set` (see the module docstring for the rules); with `cost` and
    `budget_ms`, kept within the budget (and grown toward it below `fill` × budget) by
    :func:`derive_within_budget`."""
    teacher = arch_set == "teacher"
    with torch.no_grad():
        probs = supernet.arch_probs(arch_set)
    kwargs = {"branches": branches, "min_depth_rule": min_depth_rule,
              "stem_width": 1.0 if teacher else supernet.stem_width[arch_set],
              "head_width": 1.0 if teacher else supernet.head_width[arch_set],
              "kind": "teacher" if teacher else "student"}
    if cost is not None and budget_ms is not None:
        arch = derive_within_budget(supernet.spec, probs, cost, budget_ms, fill=fill, **kwargs)
    else:
        arch = derive_from_probs(supernet.spec, probs, **kwargs)
    return arch.with_meta(arch_set=arch_set)


def derive_from_probs(sp: SpaceSpec, probs: dict[str, Any], branches: str = "auto", min_depth_rule: bool = True,
                      stem_width: float = 1.0, head_width: float = 1.0, kind: str = "student") -> Architecture:
    """The discrete architecture that probabilities in :meth:`Supernet.arch_probs` layout describe, by the
    rules of the module docstring; lets other search back-ends (NNI) derive exactly as the native one."""
    if branches not in BRANCH_CHOICES:
        raise ValueError(f"branches must be one of {list(BRANCH_CHOICES)} but got {branches!r}.")
    if tuple(sp.scales) != (8, 16, 32) and branches != "auto":
        raise ValueError(f"branches={branches!r} needs scales (8, 16, 32), got {sp.scales}")
    teacher = kind == "teacher"
    beta, L = probs["beta"], sp.layers
    routes = {e: best_route(beta, L, ei) for ei, e in enumerate(sp.scales)}
    coarse = sp.scales[-1]
    scores = {}
    for e in sp.scales[:-1]:
        dec = {**_decisions(routes[coarse][0], beta), **_decisions(routes[e][0], beta)}
        scores[e] = math.exp(sum(math.log(max(p, 1e-30)) for p in dec.values()) / len(dec)) if dec else 1.0
    if branches == "auto":
        top = max(scores.values())
        finer = max(e for e in sp.scales[:-1] if scores[e] >= top - _TIE)
    else:
        finer = int(branches.split(",")[1])
    out_branches, at_min, info_all = [], {}, {}
    for e in (coarse, finer):
        cells, info = _branch_cells(sp, probs, routes[e][0], head_width, teacher, min_depth_rule)
        n_steps = sp.scales.index(e)
        ups = tuple(UPSAMPLERS[int(probs["upsample"][(e, k)].argmax())] for k in range(n_steps))
        out_branches.append(Branch(cells=tuple(cells), upsample=ups))
        at_min[branch_name(e)] = info["at_min_depth"]
        info_all[branch_name(e)] = info
    meta = {
        "arch_set": kind,
        "at_min_depth": at_min,
        "branch_rule": branches,
        "min_depth": {k: v["min_depth"] for k, v in info_all.items()},
        "skips_kept": {k: v["skips_kept"] for k, v in info_all.items()},
        "probabilities": {
            "route": {branch_name(e): routes[e][1] for e in sp.scales},
            "pair_score": {f"{coarse},{e}": scores[e] for e in sp.scales[:-1]},
            "final_upsample": [float(v) for v in probs["final_upsample"]],
        },
    }
    return Architecture(
        space=sp,
        branches=tuple(out_branches),
        stem_width=stem_width,
        head_width=head_width,
        final_upsample=UPSAMPLERS[int(probs["final_upsample"].argmax())],
        kind=kind,
        meta=meta,
    )


def _forced(vec: torch.Tensor, choice: int) -> torch.Tensor:
    """`vec` with `choice` made its argmax (the other entries keep their order for the skip rules)."""
    out = vec.clone()
    out[choice] = 2.0
    return out


def _route_nodes(sp: SpaceSpec, probs: dict[str, Any], arch: Architecture) -> list[tuple[int, int]]:
    """The (layer, scale index) nodes the routes of `arch`'s branches visit."""
    nodes: set[tuple[int, int]] = set()
    for b in arch.branches:
        route, _ = best_route(probs["beta"], sp.layers, sp.scales.index(b.cells[-1].scale))
        nodes.update((layer, si) for layer, si in enumerate(route))
    return sorted(nodes)


def _budget_moves(sp: SpaceSpec, probs0: dict[str, Any], work: dict[str, Any], arch: Architecture,
                  kind: str) -> list[tuple[str, Any, int, float, float]]:
    """Single changes of choice: (group, key, new choice, p₀ of the current choice, p₀ of the new one). An
    operator may become any other, a width the most probable narrower one, an upsampler the other."""
    moves = []
    nodes = _route_nodes(sp, work, arch)
    for node in nodes:
        cur = int(work["alpha"][node].argmax())
        moves += [("alpha", node, c, float(probs0["alpha"][node][cur]), float(probs0["alpha"][node][c]))
                  for c in range(len(sp.ops)) if c != cur]
        if kind != "teacher" and node in work["gamma"]:
            cur = int(work["gamma"][node].argmax())
            narrower = [j for j in range(len(sp.widths)) if sp.widths[j] < sp.widths[cur]]
            if narrower:
                j = max(narrower, key=lambda i: float(probs0["gamma"][node][i]))
                moves.append(("gamma", node, j, float(probs0["gamma"][node][cur]), float(probs0["gamma"][node][j])))
    ends = {b.cells[-1].scale for b in arch.branches}
    for key, vec in work["upsample"].items():
        if key[0] in ends:
            cur = int(vec.argmax())
            moves.append(("upsample", key, 1 - cur, float(probs0["upsample"][key][cur]),
                          float(probs0["upsample"][key][1 - cur])))
    cur = int(work["final_upsample"].argmax())
    moves.append(("final_upsample", None, 1 - cur, float(probs0["final_upsample"][cur]),
                  float(probs0["final_upsample"][1 - cur])))
    return moves


def _grow_moves(sp: SpaceSpec, probs0: dict[str, Any], work: dict[str, Any], arch: Architecture,
                kind: str) -> list[tuple[str, Any, int, float, float]]:
    """Single changes that may spend more: an operator may become any other, a width the most probable wider
    one (the routes stay)."""
    moves = []
    for node in _route_nodes(sp, work, arch):
        cur = int(work["alpha"][node].argmax())
        moves += [("alpha", node, c, float(probs0["alpha"][node][cur]), float(probs0["alpha"][node][c]))
                  for c in range(len(sp.ops)) if c != cur]
        if kind != "teacher" and node in work["gamma"]:
            cur = int(work["gamma"][node].argmax())
            wider = [j for j in range(len(sp.widths)) if sp.widths[j] > sp.widths[cur]]
            if wider:
                j = max(wider, key=lambda i: float(probs0["gamma"][node][i]))
                moves.append(("gamma", node, j, float(probs0["gamma"][node][cur]), float(probs0["gamma"][node][j])))
    return moves


def _apply(work: dict[str, Any], group: str, key: Any, choice: int) -> dict[str, Any]:
    """A copy of `work` with one choice forced (entries replaced, never edited in place)."""
    trial = dict(work)
    if key is None:
        trial[group] = _forced(work[group], choice)
    else:
        trial[group] = {**work[group], key: _forced(work[group][key], choice)}
    return trial


def derive_within_budget(sp: SpaceSpec, probs: dict[str, Any], cost: Callable[[Architecture], float],
                         budget_ms: float, max_moves: int = 64, fill: float = 0.0,
                         **derive_kwargs: Any) -> Architecture:
    """:func:`derive_from_probs`, then, while `cost` (ms) is above `budget_ms`, the single change of choice
    (an operator, a narrower width, an upsampler; the routes stay) that gives up the least log-probability per
    ms saved, re-deriving after each so that every rule still holds. The most probable architecture is often
    not the one the expected latency was constrained to (derivation turns skips into depth and forbids
    all-skip runs), so a search may end above its target; this keeps the result within it where the space
    allows. With `fill` > 0, a network below `fill · budget_ms` grows the same way (an operator, a wider width)
    while it stays within the budget, so that a generous target is spent rather than left unused.
    ``meta["budget"]`` records the fit."""
    arch = derive_from_probs(sp, probs, **derive_kwargs)
    seen: dict[Any, float] = {}

    def price(a: Architecture) -> float:
        key = (a.branches, a.final_upsample, a.stem_width, a.head_width)
        if key not in seen:
            seen[key] = float(cost(a))
        return seen[key]

    start = spent = price(arch)
    if spent <= budget_ms and not (fill > 0 and spent < fill * budget_ms):
        return arch
    work, moves, grown, lost = dict(probs), 0, 0, 0.0
    kind = derive_kwargs.get("kind", "student")

    def best_move(candidates: list[tuple[str, Any, int, float, float]], gain: Callable[[float], float | None]
                  ) -> tuple[dict[str, Any], Architecture, float, float] | None:
        """The candidate giving up the least log-probability per ms of `gain(ms)` (None: not allowed), ties to
        the larger gain: (choices, architecture, its ms, log-probability given up)."""
        best: tuple[tuple[float, float], dict[str, Any], Architecture, float, float] | None = None
        for group, key, choice, p_from, p_to in candidates:
            trial = _apply(work, group, key, choice)
            cand = derive_from_probs(sp, trial, **derive_kwargs)
            ms = price(cand)
            g = gain(ms)
            if g is None:
                continue
            loss = max(0.0, math.log(max(p_from, 1e-30)) - math.log(max(p_to, 1e-30)))
            score = (loss / g, -g)
            if best is None or score < best[0]:
                best = (score, trial, cand, ms, loss)
        return None if best is None else best[1:]

    while spent > budget_ms and moves < max_moves:  # shrink: ms saved
        found = best_move(_budget_moves(sp, probs, work, arch, kind),
                          lambda ms, now=spent: now - ms if ms < now - 1e-9 else None)
        if found is None:
            break
        work, arch, spent, loss = found
        moves, lost = moves + 1, lost + loss
    while fill > 0 and spent < fill * budget_ms and grown < max_moves:  # grow: ms spent, within the budget
        found = best_move(_grow_moves(sp, probs, work, arch, kind),
                          lambda ms, now=spent: ms - now if now + 1e-9 < ms <= budget_ms else None)
        if found is None:
            break
        work, arch, spent, loss = found
        grown, lost = grown + 1, lost + loss
    return arch.with_meta(budget={"target_ms": budget_ms, "most_probable_ms": start, "ms": spent, "moves": moves,
                                  "grown": grown, "log_prob_given_up": lost, "met": spent <= budget_ms})
