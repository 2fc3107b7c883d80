"""The units a latency table prices, and their keys.

A derived network is a sequence of *units* (stem, cell operators, fusion steps, feature fusion, head, final
upsampler); its predicted latency is the sum of their table entries (plus a fitted correction, see
:mod:`nas.latency.table`). Keys are computed from a live module and its input shapes (:func:`unit_key`),
enumerated from a search space (:func:`enumerate_units`) or read off an architecture's plan without building it
(:func:`architecture_unit_keys`: 0.3 ms against 113 ms for a forward pass at 256×512, what a latency fit
prices many candidates with), and all must agree: tests check it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import nn

from search_spaces.arch import Architecture, SpaceSpec
from search_spaces.heads import FeatureFusion, FusionStep, SegHead, Stem
from search_spaces.ops import Operator, channels
from search_spaces.upsample import UPSAMPLERS, Bilinear, PixelShuffleUp, make_upsampler

__all__ = ["UNIT_TYPES", "Unit", "unit_key", "unit_modules", "enumerate_units", "op_key", "fusion_key",
           "architecture_unit_keys"]

UNIT_TYPES = (Stem, Operator, FusionStep, FeatureFusion, SegHead, Bilinear, PixelShuffleUp)


@dataclass(frozen=True)
class Unit:
    """One table entry to measure: its key, a factory for the module and the input shapes (batch first)."""

    key: str
    make: Callable[[], nn.Module]
    shapes: tuple[tuple[int, ...], ...]


def _hw(shape: tuple[int, ...]) -> str:
    return f"{shape[-2]}x{shape[-1]}"


def op_key(op: str, stride: int, c_in: int, c_out: int, h: int, w: int) -> str:
    return f"op:{op}:s{stride}:{c_in}->{c_out}@{h}x{w}"


def fusion_key(up: str, c_in: int, c_skip: int, c_out: int, h: int, w: int) -> str:
    return f"fusion:{up}:{c_in}+{c_skip}->{c_out}@{h}x{w}"


def _upsampler_kind(m: nn.Module) -> str:
    return "pixel_shuffle" if isinstance(m, PixelShuffleUp) else "bilinear"


def unit_key(module: nn.Module, shapes: list[tuple[int, ...]]) -> str:
    """The table key of a unit module called with inputs of `shapes` (batch dimension ignored)."""
    s0 = shapes[0]
    if isinstance(module, Stem):
        convs = [m.conv for m in module.layers]
        return "stem:" + "-".join(str(c.out_channels) for c in convs) + f"@{_hw(s0)}"
    if isinstance(module, Operator):
        c_out = _operator_out_channels(module, s0[1])
        return op_key(module.op, module.stride, s0[1], c_out, s0[-2], s0[-1])
    if isinstance(module, FusionStep):
        return fusion_key(_upsampler_kind(module.up), s0[1], shapes[1][1], module.arm.conv.out_channels,
                          s0[-2], s0[-1])
    if isinstance(module, FeatureFusion):
        return f"ffm:{s0[1]}@{_hw(s0)}"
    if isinstance(module, SegHead):
        return f"head:{s0[1]}->{module.classifier.out_channels}@{_hw(s0)}"
    if isinstance(module, (Bilinear, PixelShuffleUp)):
        return f"up:{_upsampler_kind(module)}:{s0[1]}x{module.factor}@{_hw(s0)}"
    raise TypeError(f"{type(module).__name__} is not a latency unit")


def _operator_out_channels(op: Operator, c_in: int) -> int:
    if op.skip is not None:
        if isinstance(op.skip, nn.Identity):
            return c_in
        return op.skip.bn.num_features
    return op.units[-1].conv.out_channels


def unit_modules(model: nn.Module) -> list[nn.Module]:
    """The outermost unit modules of `model` (a unit inside a unit, e.g. a fusion step's upsampler, is not
    listed on its own)."""
    found: list[nn.Module] = []
    inside: set[int] = set()
    for _, m in model.named_modules():
        if id(m) in inside:
            for c in m.children():
                inside.add(id(c))
            continue
        if isinstance(m, UNIT_TYPES):
            found.append(m)
            for c in m.children():
                inside.add(id(c))
    return found


def record_unit_calls(model: nn.Module, inputs: torch.Tensor) -> list[str]:
    """Run `model(inputs)` once (eval, no grad) and return the key of every unit call, in order."""
    keys: list[str] = []

    def hook(mod: nn.Module, args: tuple, _out: object) -> None:
        keys.append(unit_key(mod, [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]))

    handles = [m.register_forward_hook(hook) for m in unit_modules(model)]
    was_training = model.training
    try:
        model.eval()
        with torch.no_grad():
            model(inputs)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return keys


@lru_cache(maxsize=64)
def _stem_key(fch: int, width: float, h: int, w: int) -> str:
    return unit_key(Stem(fch, width), [(1, 3, h, w)])


def architecture_unit_keys(arch: Architecture, input_hw: tuple[int, int]) -> list[str] | None:
    """The keys of every unit call of `arch`'s deployable network (no auxiliary heads) at input H×W, from its
    plan (:func:`search_spaces.builder.plan_network`) instead of a forward pass; None when H or W is not a
    multiple of the coarsest scale (feature sizes then round, and only a forward pass knows them)."""
    from search_spaces.builder import plan_network

    sp = arch.space
    H, W = input_hw
    if H % sp.scales[-1] or W % sp.scales[-1]:
        return None
    plan = plan_network(arch)
    base = sp.scales[0]
    keys = [_stem_key(sp.fch, arch.stem_width, H, W)]
    keys += [op_key(c.op, c.stride, c.c_in, c.c_out, H // c.scale, W // c.scale) for c in plan.cells]
    for branch in plan.branches:
        s = branch.scale
        for f in branch.fusions:
            keys.append(fusion_key(f.upsample, f.c_in, f.c_skip, f.c_out, H // s, W // s))
            s //= 2
    fused, k = plan.head_channels * len(plan.branches), sp.num_classes
    h8, w8 = H // base, W // base
    keys += [f"ffm:{fused}@{h8}x{w8}", f"head:{fused}->{k}@{h8}x{w8}", f"up:{arch.final_upsample}:{k}x{base}@{h8}x{w8}"]
    return keys


def _cell_widths(spec: SpaceSpec, scale: int, extra: tuple[float, ...]) -> list[int]:
    return sorted({channels(scale, spec.fch, w) for w in (*spec.widths, *extra)})


def enumerate_units(
    spec: SpaceSpec,
    input_hw: tuple[int, int],
    stem_widths: tuple[float, ...],
    head_widths: tuple[float, ...],
    batch: int = 1,
    max_branches: int = 2,
) -> Iterator[Unit]:
    """Every unit a network derived from `spec` can contain at this input size (student and teacher widths)."""
    H, W = input_hw
    seen: set[str] = set()

    def emit(key: str, make: Callable[[], nn.Module], *shapes: tuple[int, ...]) -> Iterator[Unit]:
        if key not in seen:
            seen.add(key)
            yield Unit(key, make, tuple((batch, *s) for s in shapes))

    for sw in stem_widths:
        key = unit_key(Stem(spec.fch, sw), [(batch, 3, H, W)])
        yield from emit(key, lambda sw=sw: Stem(spec.fch, sw), (3, H, W))
    extra = (*stem_widths, *head_widths)
    for si, s in enumerate(spec.scales):
        h, w = H // s, W // s
        c_ins = _cell_widths(spec, s, extra)
        for stride in (1, 2) if si + 1 < len(spec.scales) else (1,):
            out_scale = s * stride
            c_outs = _cell_widths(spec, out_scale, tuple(head_widths))
            for op in spec.ops:
                for ci in c_ins:
                    for co in c_outs:
                        yield from emit(op_key(op, stride, ci, co, h, w),
                                        lambda op=op, ci=ci, co=co, st=stride: Operator(op, ci, co, st), (ci, h, w))
    base = spec.scales[0]
    for hw_ in head_widths:
        for si in range(1, len(spec.scales)):
            s = spec.scales[si]
            fine = spec.scales[si - 1]
            c_in, c_out = channels(s, spec.fch, hw_), channels(fine, spec.fch, hw_)
            skips = _cell_widths(spec, fine, tuple(stem_widths) if fine == base else ())
            for up in UPSAMPLERS:
                for cs in skips:
                    key = fusion_key(up, c_in, cs, c_out, H // s, W // s)
                    yield from emit(key, lambda a=c_in, b=cs, c=c_out, u=up: FusionStep(a, b, c, u),
                                    (c_in, H // s, W // s), (cs, H // fine, W // fine))
        c8 = channels(base, spec.fch, hw_)
        h8, w8 = H // base, W // base
        for nb in range(1, max_branches + 1):
            c = c8 * nb
            yield from emit(f"ffm:{c}@{h8}x{w8}", lambda c=c: FeatureFusion(c), (c, h8, w8))
            yield from emit(f"head:{c}->{spec.num_classes}@{h8}x{w8}",
                            lambda c=c: SegHead(c, spec.num_classes), (c, h8, w8))
    k = spec.num_classes
    for up in UPSAMPLERS:
        yield from emit(f"up:{up}:{k}x{base}@{H // base}x{W // base}",
                        lambda up=up: make_upsampler(up, k, base), (k, H // base, W // base))
