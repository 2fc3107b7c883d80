"""Random derived architectures: valid trellis routes with a shared prefix, random ops, widths and upsamplers.

Used to validate the latency model on many networks and as the random-search baseline. One route is drawn to
the coarsest ending scale; every other branch shares a random prefix of it, then goes its own way. As in
FasterSeg's derivation, no run of cells at one scale is all `skip`. Deterministic given the generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from search_spaces.arch import Architecture, Branch, Cell, SpaceSpec
from search_spaces.upsample import UPSAMPLERS

__all__ = ["BRANCH_PAIRS", "draw_within", "random_architecture", "width_windows"]

BRANCH_PAIRS: tuple[tuple[int, int], ...] = ((32, 16), (32, 8))  # FasterSeg's two kinds of derived network


def width_windows(widths: Sequence[float]) -> list[tuple[float, ...]]:
    """Windows of two adjacent widths, narrowest to widest. Drawing each network's cell widths from one window
    (windows in turn) spreads random networks over the space's latency range; widths drawn independently per
    cell average out and put nearly every network near the median latency."""
    ws = sorted(widths)
    return [tuple(ws[i:i + 2]) for i in range(max(1, len(ws) - 1))]


def _down_positions(rng: np.random.Generator, n_cells: int, downs: int) -> set[int]:
    """Which of the first `n_cells - 1` cells stride (each takes the next cell one scale coarser)."""
    if downs == 0:
        return set()
    return {int(i) for i in rng.choice(n_cells - 1, size=downs, replace=False)}


def _scales_from(start: int, n_cells: int, downs: set[int]) -> list[int]:
    scales, s = [], start
    for i in range(n_cells):
        scales.append(s)
        if i in downs:
            s *= 2
    return scales


def _fix_all_skip(rng: np.random.Generator, ops: list[str], scales: list[int], first_free: int,
                  non_skip: Sequence[str]) -> None:
    """Replace one `skip` in every run of same-scale cells that is all `skip` (only cells ≥ `first_free`)."""
    start = 0
    for i in range(1, len(ops) + 1):
        if i == len(ops) or scales[i] != scales[start]:
            run = range(start, i)
            if all(ops[j] == "skip" for j in run):
                free = [j for j in run if j >= first_free]
                if free:
                    ops[int(rng.choice(free))] = str(rng.choice(non_skip))
            start = i


def _route(rng: np.random.Generator, start_scale: int, end_scale: int, max_cells: int,
           min_cells: int) -> list[int]:
    """Scales of a random route of between `min_cells` and `max_cells` cells from `start_scale` to `end_scale`."""
    downs = int(round(np.log2(end_scale / start_scale)))
    lo = max(downs + 1, min_cells)
    n = int(rng.integers(lo, max(lo, max_cells) + 1))
    return _scales_from(start_scale, n, _down_positions(rng, n, downs))


def random_architecture(
    spec: SpaceSpec,
    rng: np.random.Generator,
    branches: tuple[int, ...] | None = None,
    stem_width: float = 8 / 12,
    head_width: float = 8 / 12,
    upsample: str = "random",
    kind: str = "student",
    widths: tuple[float, ...] | None = None,
) -> Architecture:
    """A random valid architecture of `spec`; `branches` are ending scales (None: (32, 16) or (32, 8)); cell
    widths are drawn from `widths` (a subset of the space's; None: all of them)."""
    pool = tuple(spec.widths) if widths is None else tuple(widths)
    if not pool or any(all(abs(w - sw) > 1e-6 for sw in spec.widths) for w in pool):
        raise ValueError(f"widths must be a non-empty subset of {list(spec.widths)} but got {list(pool)}.")
    if upsample != "random" and upsample not in UPSAMPLERS:
        raise ValueError(f"upsample must be 'random' or one of {list(UPSAMPLERS)} but got {upsample!r}.")
    non_skip = [op for op in spec.ops if op != "skip"]
    if not non_skip:
        raise ValueError(f"space '{spec.name}' has no operator other than skip.")
    if branches is None:
        pairs = [p for p in BRANCH_PAIRS if all(s in spec.scales for s in p)]
        branches = pairs[int(rng.integers(len(pairs)))]
    ends = sorted({int(s) for s in branches}, reverse=True)
    if len(ends) != len(branches) or any(s not in spec.scales for s in ends):
        raise ValueError(f"branches must be distinct scales of {list(spec.scales)} but got {branches}.")
    base = spec.scales[0]

    def up_choice(n: int) -> tuple[str, ...]:
        if upsample == "random":
            return tuple(str(rng.choice(UPSAMPLERS)) for _ in range(n))
        return (upsample,) * n

    def widths(n: int) -> list[float]:
        return [float(rng.choice(pool)) for _ in range(n - 1)] + [head_width]

    # the route to the coarsest scale: at least half the layers, as FasterSeg's minimum depth keeps it deep
    main_scales = _route(rng, base, ends[0], spec.layers, spec.layers // 2)
    main_ops = [str(rng.choice(spec.ops)) for _ in main_scales]
    _fix_all_skip(rng, main_ops, main_scales, 0, non_skip)
    main_widths = widths(len(main_scales))
    result = [_branch(main_scales, main_ops, main_widths, up_choice)]

    for end in ends[1:]:
        # a shared prefix of p cells: cell p of the main route must still read a scale ≤ `end`
        downs_needed = [int(round(np.log2(end / s))) for s in main_scales]
        p_max = max((p for p in range(1, len(main_scales)) if main_scales[p] <= end
                     and spec.layers - p >= downs_needed[p] + 1), default=0)
        p = int(rng.integers(1, p_max + 1)) if p_max >= 1 else 0
        start = main_scales[p] if p else base
        rest = _route(rng, start, end, spec.layers - p, max(1, spec.layers // 2 - p))
        scales = main_scales[:p] + rest
        ops = main_ops[:p] + [str(rng.choice(spec.ops)) for _ in rest]
        _fix_all_skip(rng, ops, scales, p, non_skip)
        ws = main_widths[:p] + widths(len(rest))
        result.append(_branch(scales, ops, ws, up_choice))

    return Architecture(
        space=spec,
        branches=tuple(result),
        stem_width=stem_width,
        head_width=head_width,
        final_upsample=up_choice(1)[0],
        kind=kind,
        meta={"source": "random_architecture"},
    )


def _branch(scales: list[int], ops: list[str], widths: list[float],
            up_choice: Callable[[int], tuple[str, ...]]) -> Branch:
    steps = int(round(np.log2(scales[-1] / scales[0])))
    cells = tuple(Cell(scale=s, op=o, width=w) for s, o, w in zip(scales, ops, widths))
    return Branch(cells=cells, upsample=up_choice(steps))


def draw_within(spec: SpaceSpec, price: Callable[[Architecture], float], accept: Callable[[float], bool], n: int,
                seed: int | Sequence[int], stem_width: float = 8 / 12, head_width: float = 8 / 12,
                branches: tuple[int, ...] | None = None, upsample: str = "random", max_draws: int = 50_000,
                ) -> tuple[list[tuple[Architecture, float]], int]:
    """The first `n` random architectures whose price (table latency, ms) `accept` takes, with their prices, and
    how many were drawn. Draw k takes its cell widths from the k-th window of :func:`width_windows` in turn, so that
    every latency of the space is reachable (widths drawn per cell average out near the median); everything else
    is :func:`random_architecture`'s. Only the price decides acceptance, never anything learnt. Returns fewer
    than `n` when `max_draws` run out."""
    rng = np.random.default_rng(seed)
    windows = width_windows(spec.widths)
    found: list[tuple[Architecture, float]] = []
    draw = 0
    while draw < max_draws and len(found) < n:
        arch = random_architecture(spec, rng, branches=branches, stem_width=stem_width, head_width=head_width,
                                   upsample=upsample, widths=windows[draw % len(windows)])
        draw += 1
        lat = price(arch)
        if accept(lat):
            found.append((arch, lat))
    return found, draw
