"""Convert FasterSeg's released architecture description (our decoded reference file) into an Architecture.

The reference format lists, per kept branch, `ops`, `scales` (the scale each cell reads) and `widths` (one
fewer than ops: the last cell outputs the head width). FasterSeg's zoomed operators are called `conv_downup`
and `conv_2x_downup` there; ours are `zoomed_conv` and `zoomed_conv_2x`.
"""

from __future__ import annotations

import math
from typing import Any

from search_spaces.arch import Architecture, ArchitectureError, Branch, Cell, SpaceSpec

__all__ = ["FASTERSEG_OP_NAMES", "import_fasterseg"]

FASTERSEG_OP_NAMES: dict[str, str] = {
    "skip": "skip",
    "conv": "conv",
    "conv_2x": "conv_2x",
    "conv_downup": "zoomed_conv",
    "conv_2x_downup": "zoomed_conv_2x",
}


def _field(ref: dict[str, Any], key: str, tp: type | tuple[type, ...]) -> Any:
    if key not in ref:
        raise ArchitectureError(f"field {key}: missing")
    v = ref[key]
    if isinstance(v, bool) or not isinstance(v, tp):
        raise ArchitectureError(f"field {key}: expected {getattr(tp, '__name__', 'number')}, got {v!r:.60}")
    if isinstance(v, float) and not math.isfinite(v):
        raise ArchitectureError(f"field {key}: must be finite, got {v!r}")
    return v


def _number_list(v: Any, where: str, tp: type | tuple[type, ...]) -> list[Any]:
    if not isinstance(v, list):
        raise ArchitectureError(f"field {where}: expected a list, got {v!r:.60}")
    for i, item in enumerate(v):
        if isinstance(item, bool) or not isinstance(item, tp):
            raise ArchitectureError(f"field {where}[{i}]: expected a number, got {item!r:.60}")
    return v


def _branch_scale(name: Any, where: str) -> int:
    if not isinstance(name, str) or not name.startswith("1/") or not name[2:].isdigit():
        raise ArchitectureError(f"field {where}: expected a branch name like '1/32', got {name!r:.60}")
    return int(name[2:])


def _import_branch(name: str, raw: Any, head_width: float) -> Branch:
    where = f"branches.{name}"
    if not isinstance(raw, dict):
        raise ArchitectureError(f"field {where}: expected an object")
    for key in ("ops", "scales", "widths"):
        if key not in raw:
            raise ArchitectureError(f"field {where}.{key}: missing")
    ops = raw["ops"]
    if not isinstance(ops, list) or not ops:
        raise ArchitectureError(f"field {where}.ops: expected a non-empty list")
    scales = _number_list(raw["scales"], f"{where}.scales", int)
    widths = _number_list(raw["widths"], f"{where}.widths", (int, float))
    if len(scales) != len(ops):
        raise ArchitectureError(f"field {where}.scales: {len(scales)} entries for {len(ops)} ops")
    if len(widths) != len(ops) - 1:
        raise ArchitectureError(
            f"field {where}.widths: expected {len(ops) - 1} entries (one fewer than ops), got {len(widths)}"
        )
    cells = []
    for i, (op, scale) in enumerate(zip(ops, scales)):
        if op not in FASTERSEG_OP_NAMES:
            raise ArchitectureError(
                f"field {where}.ops[{i}]: unknown FasterSeg op {op!r:.40} (known: {', '.join(FASTERSEG_OP_NAMES)})"
            )
        width = float(widths[i]) if i < len(widths) else head_width
        cells.append(Cell(scale=int(scale), op=FASTERSEG_OP_NAMES[op], width=width))
    steps = max(0, int(round(math.log2(max(cells[-1].scale, 8) / 8))))
    return Branch(cells=tuple(cells), upsample=("bilinear",) * steps)


def import_fasterseg(ref: dict[str, Any]) -> Architecture:
    """FasterSeg reference dict → our Architecture (space 'fasterseg', bilinear upsamplers, kind 'student')."""
    if not isinstance(ref, dict):
        raise ArchitectureError(f"field <top level>: expected an object, got {type(ref).__name__}")
    num_classes = _field(ref, "num_classes", int)
    layers = _field(ref, "layers", int)
    fch = _field(ref, "Fch", int)
    width_choices = tuple(float(w) for w in _number_list(_field(ref, "width_choices", list), "width_choices",
                                                         (int, float)))
    stem_width = float(_field(ref, "stem_width", (int, float)))
    head_width = float(_field(ref, "head_width", (int, float)))
    kept = _field(ref, "kept_branches", list)
    raw_branches = _field(ref, "branches", dict)
    if not kept:
        raise ArchitectureError("field kept_branches: expected at least one branch")
    branches = []
    for i, name in enumerate(kept):
        scale = _branch_scale(name, f"kept_branches[{i}]")
        if name not in raw_branches:
            raise ArchitectureError(f"field branches.{name}: missing (listed in kept_branches)")
        branch = _import_branch(name, raw_branches[name], head_width)
        if branch.scale != scale:
            raise ArchitectureError(f"field branches.{name}.scales: the cells end at 1/{branch.scale}, not 1/{scale}")
        branches.append(branch)
    branches.sort(key=lambda b: -b.scale)
    space = SpaceSpec(name="fasterseg", layers=layers, fch=fch, widths=width_choices, num_classes=num_classes)
    return Architecture(
        space=space,
        branches=tuple(branches),
        stem_width=stem_width,
        head_width=head_width,
        final_upsample="bilinear",
        kind="student",
        meta={"source": "FasterSeg arch_1 import"},
    )
