"""Architecture files: a versioned JSON description of a derived network, validated field by field on load.

A branch is a chain of cells from the stem (1/8) to its ending scale. Cell `i` reads the feature at
`cells[i].scale`; it strides when `cells[i+1].scale` is twice its own, and `cells[i].width` is the width
multiplier of what it outputs (at the next cell's scale), so a feature at scale s and width w has
`round(s · fch · w)` channels. The last cell of a branch outputs the head width. Branches that begin with the
same cells (same scale, op, width and next scale) share them, as in FasterSeg's derived networks.
Never pickled, never evaluated: plain JSON in, dataclasses out.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nas.errors import UserError
from search_spaces.ops import OPS, PRIMITIVES
from search_spaces.upsample import UPSAMPLERS

__all__ = [
    "SCHEMA_VERSION",
    "ArchitectureError",
    "SpaceSpec",
    "Cell",
    "Branch",
    "Architecture",
    "load_architecture",
    "save_architecture",
    "branch_name",
    "DISTILL_MODES",
]

SCHEMA_VERSION = 1
DISTILL_MODES = ("none", "pixel", "tutor")
FASTERSEG_WIDTHS = (4 / 12, 6 / 12, 8 / 12, 10 / 12, 1.0)


class ArchitectureError(UserError):
    """An architecture file or dictionary that does not describe a valid network."""


def branch_name(scale: int) -> str:
    return f"1/{scale}"


@dataclass(frozen=True)
class SpaceSpec:
    """The search space an architecture was drawn from (enough to rebuild it without the supernet)."""

    name: str = "fasterseg"
    layers: int = 16
    fch: int = 12
    scales: tuple[int, ...] = (8, 16, 32)
    ops: tuple[str, ...] = PRIMITIVES
    widths: tuple[float, ...] = FASTERSEG_WIDTHS
    num_classes: int = 19


@dataclass(frozen=True)
class Cell:
    scale: int  # scale of the feature it reads: 8, 16 or 32
    op: str
    width: float  # width multiplier of its output


@dataclass(frozen=True)
class Branch:
    cells: tuple[Cell, ...]
    upsample: tuple[str, ...]  # one per ×2 step of its head, coarse to fine

    @property
    def scale(self) -> int:
        return self.cells[-1].scale

    @property
    def name(self) -> str:
        return branch_name(self.scale)

    def strides(self) -> tuple[int, ...]:
        """Stride of each cell: 2 where the next cell reads a coarser scale."""
        nxt = [c.scale for c in self.cells[1:]] + [self.cells[-1].scale]
        return tuple(2 if n > c.scale else 1 for c, n in zip(self.cells, nxt))


@dataclass(frozen=True)
class Architecture:
    """A derived network: stem and head widths, branches (coarsest first), upsampling and distillation choices."""

    space: SpaceSpec
    branches: tuple[Branch, ...]
    stem_width: float = 1.0
    head_width: float = 1.0
    final_upsample: str = "bilinear"
    kind: str = "student"  # student | teacher
    distill: dict[str, Any] = field(default_factory=lambda: {"mode": "none"})
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Raise ArchitectureError naming the first bad field."""
        sp = self.space
        for i, op in enumerate(sp.ops):
            if op not in OPS:
                raise ArchitectureError(f"field space.ops[{i}]: unknown op '{op}' (known: {', '.join(OPS)})")
        if not sp.scales or sp.scales[0] != 8 or any(b != 2 * a for a, b in zip(sp.scales, sp.scales[1:])):
            raise ArchitectureError(f"field space.scales: expected 8, 16, 32, ... doubling, got {list(sp.scales)}")
        if sp.fch < 1 or sp.layers < 2 or sp.num_classes < 1:
            raise ArchitectureError("field space: fch, layers and num_classes must be positive (layers ≥ 2)")
        for name in ("stem_width", "head_width"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and 0 < v <= 1.0 + 1e-9):
                raise ArchitectureError(f"field {name}: must be in (0, 1], got {v!r}")
        if self.kind not in ("student", "teacher"):
            raise ArchitectureError(f"field kind: must be 'student' or 'teacher', got {self.kind!r}")
        if self.final_upsample not in UPSAMPLERS:
            raise ArchitectureError(
                f"field final_upsample: unknown upsampler '{self.final_upsample}' (known: {', '.join(UPSAMPLERS)})"
            )
        mode = self.distill.get("mode", "none") if isinstance(self.distill, dict) else None
        if mode not in DISTILL_MODES:
            raise ArchitectureError(f"field distill.mode: must be one of {list(DISTILL_MODES)}, got {mode!r}")
        if not 1 <= len(self.branches) <= len(sp.scales):
            raise ArchitectureError(f"field branches: expected 1 to {len(sp.scales)} branches, got {len(self.branches)}")
        ends = [b.scale for b in self.branches if b.cells]
        if len(set(ends)) != len(ends):
            raise ArchitectureError(f"field branches: two branches end at the same scale ({ends})")
        for bi, branch in enumerate(self.branches):
            self._validate_branch(bi, branch)

    def _validate_branch(self, bi: int, branch: Branch) -> None:
        sp = self.space
        where = f"branches[{bi}]"
        if not branch.cells:
            raise ArchitectureError(f"field {where}.cells: a branch needs at least one cell")
        if len(branch.cells) > sp.layers:
            raise ArchitectureError(f"field {where}.cells: {len(branch.cells)} cells exceed the space's {sp.layers} layers")
        prev = sp.scales[0]
        for ci, cell in enumerate(branch.cells):
            f = f"{where}.cells[{ci}]"
            if cell.op not in sp.ops:
                raise ArchitectureError(f"field {f}.op: unknown op '{cell.op}' (space has: {', '.join(sp.ops)})")
            if cell.scale not in sp.scales:
                raise ArchitectureError(f"field {f}.scale: {cell.scale} is not one of {list(sp.scales)}")
            if cell.scale not in (prev, 2 * prev):
                raise ArchitectureError(
                    f"field {f}.scale: impossible jump from 1/{prev} to 1/{cell.scale} (stay or halve the resolution)"
                )
            if ci == 0 and cell.scale != sp.scales[0]:
                raise ArchitectureError(f"field {f}.scale: the first cell reads the stem at 1/{sp.scales[0]}")
            if not any(math.isclose(cell.width, w, abs_tol=1e-6) for w in sp.widths) and not (
                ci == len(branch.cells) - 1 and math.isclose(cell.width, self.head_width, abs_tol=1e-6)
            ):
                raise ArchitectureError(
                    f"field {f}.width: {cell.width!r} is not in the space's widths {[round(w, 4) for w in sp.widths]}"
                )
            prev = cell.scale
        last = branch.cells[-1]
        if not math.isclose(last.width, self.head_width, abs_tol=1e-6):
            raise ArchitectureError(
                f"field {where}.cells[{len(branch.cells) - 1}].width: the last cell outputs the head width "
                f"{self.head_width:.4g}, got {last.width!r}"
            )
        steps = int(round(math.log2(branch.scale // sp.scales[0]))) if branch.scale >= sp.scales[0] else 0
        if len(branch.upsample) != steps:
            raise ArchitectureError(
                f"field {where}.upsample: a branch ending at 1/{branch.scale} needs {steps} upsampler(s), "
                f"got {len(branch.upsample)}"
            )
        for ui, u in enumerate(branch.upsample):
            if u not in UPSAMPLERS:
                raise ArchitectureError(f"field {where}.upsample[{ui}]: unknown upsampler '{u}' (known: {', '.join(UPSAMPLERS)})")

    # ------------------------------------------------------------------ conversion
    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,
            "kind": self.kind,
            "space": {
                "name": self.space.name,
                "layers": self.space.layers,
                "fch": self.space.fch,
                "scales": list(self.space.scales),
                "ops": list(self.space.ops),
                "widths": list(self.space.widths),
                "num_classes": self.space.num_classes,
            },
            "stem_width": self.stem_width,
            "head_width": self.head_width,
            "branches": [
                {
                    "name": b.name,
                    "cells": [{"scale": c.scale, "op": c.op, "width": c.width} for c in b.cells],
                    "upsample": list(b.upsample),
                }
                for b in self.branches
            ],
            "final_upsample": self.final_upsample,
            "distill": dict(self.distill),
            "meta": dict(self.meta),
        }

    @classmethod
    def from_dict(cls, data: Any) -> Architecture:
        """Parse and validate; every problem is an ArchitectureError naming the field."""
        d = _Fields(data, "")
        version = d.get("schema_version", int)
        if version > SCHEMA_VERSION or version < 1:
            raise ArchitectureError(
                f"field schema_version: {version} is not supported (this nas reads version {SCHEMA_VERSION})"
            )
        s = _Fields(d.get("space", dict), "space.")
        space = SpaceSpec(
            name=s.get("name", str),
            layers=s.get("layers", int),
            fch=s.get("fch", int),
            scales=tuple(s.get_list("scales", int)),
            ops=tuple(s.get_list("ops", str)),
            widths=tuple(s.number_list("widths")),
            num_classes=s.get("num_classes", int),
        )
        branches = []
        for bi, raw in enumerate(d.get_list("branches", dict)):
            b = _Fields(raw, f"branches[{bi}].")
            cells = []
            for ci, rc in enumerate(b.get_list("cells", dict)):
                c = _Fields(rc, f"branches[{bi}].cells[{ci}].")
                cells.append(Cell(scale=c.get("scale", int), op=c.get("op", str), width=c.number("width")))
            upsample = tuple(b.get_list("upsample", str)) if "upsample" in raw else None
            branches.append(Branch(cells=tuple(cells), upsample=upsample if upsample is not None else ()))
        distill = data.get("distill", {"mode": "none"})
        meta = data.get("meta", {})
        if not isinstance(distill, dict):
            raise ArchitectureError("field distill: expected an object")
        if not isinstance(meta, dict):
            raise ArchitectureError("field meta: expected an object")
        arch = cls(
            space=space,
            branches=tuple(branches),
            stem_width=d.number("stem_width"),
            head_width=d.number("head_width"),
            final_upsample=d.get("final_upsample", str),
            kind=d.get("kind", str),
            distill=distill,
            meta=meta,
        )
        for bi, (raw, branch) in enumerate(zip(d.data["branches"], arch.branches)):
            if "name" in raw and raw["name"] != branch.name:
                raise ArchitectureError(f"field branches[{bi}].name: '{raw['name']}' but its cells end at {branch.name}")
        return arch

    def with_meta(self, **meta: Any) -> Architecture:
        return replace(self, meta={**self.meta, **meta})

    @property
    def scales(self) -> tuple[int, ...]:
        """Ending scales of the branches."""
        return tuple(b.scale for b in self.branches)

    def summary_lines(self) -> list[str]:
        """A readable per-branch listing (scales, ops, widths)."""
        lines = [
            f"{self.kind} of space '{self.space.name}' (L={self.space.layers}, Fch={self.space.fch}, "
            f"{self.space.num_classes} classes), stem width {self.stem_width:.3g}, head width {self.head_width:.3g}, "
            f"final upsample {self.final_upsample}, distill {self.distill.get('mode', 'none')}"
        ]
        for b in self.branches:
            lines.append(f"branch {b.name}: {len(b.cells)} cells, head upsample {list(b.upsample)}")
            for i, (c, s) in enumerate(zip(b.cells, b.strides())):
                lines.append(f"  {i:2d} 1/{c.scale:<3d} {c.op:<15s} width {c.width:.3f}{'  stride 2' if s == 2 else ''}")
        return lines


class _Fields:
    """Typed access to a JSON object with errors naming the full field path."""

    def __init__(self, data: Any, prefix: str):
        if not isinstance(data, dict):
            where = prefix.rstrip(".") or "<top level>"
            raise ArchitectureError(f"field {where}: expected an object, got {type(data).__name__}")
        self.data, self.prefix = data, prefix

    def get(self, key: str, tp: type | tuple[type, ...]) -> Any:
        if key not in self.data:
            raise ArchitectureError(f"field {self.prefix}{key}: missing")
        v = self.data[key]
        if isinstance(v, bool) and tp is not bool or not isinstance(v, tp):
            want = tp.__name__ if isinstance(tp, type) else "number"
            raise ArchitectureError(f"field {self.prefix}{key}: expected {want}, got {v!r:.60}")
        if isinstance(v, float) and not math.isfinite(v):
            raise ArchitectureError(f"field {self.prefix}{key}: must be finite, got {v!r}")
        return v

    def number(self, key: str) -> float:
        """A JSON number as a float; an integer too large for a float is an error naming the field."""
        return _as_float(self.get(key, (int, float)), f"{self.prefix}{key}")

    def number_list(self, key: str) -> list[float]:
        """A list of JSON numbers as floats."""
        return [_as_float(v, f"{self.prefix}{key}[{i}]") for i, v in enumerate(self.get_list(key, (int, float)))]

    def get_list(self, key: str, tp: type | tuple[type, ...]) -> list[Any]:
        v = self.get(key, list)
        for i, item in enumerate(v):
            if isinstance(item, bool) or not isinstance(item, tp):
                want = tp.__name__ if isinstance(tp, type) else "number"
                raise ArchitectureError(f"field {self.prefix}{key}[{i}]: expected {want}, got {item!r:.60}")
            if isinstance(item, float) and not math.isfinite(item):
                raise ArchitectureError(f"field {self.prefix}{key}[{i}]: must be finite, got {item!r}")
        return v


def _as_float(value: int | float, where: str) -> float:
    """`value` as a float; an integer beyond the float range is an ArchitectureError naming `where`."""
    try:
        return float(value)
    except OverflowError:
        raise ArchitectureError(f"field {where}: an integer of {int(value).bit_length()} bits is too large") from None


def load_architecture(path: str | Path) -> Architecture:
    """Read and validate an architecture JSON file; any problem is one line naming the file and field."""
    from nas.io import read_json

    try:
        data = read_json(path, what="architecture file")
    except UserError as exc:  # missing or malformed file: still an architecture problem to the caller
        raise ArchitectureError(str(exc)) from None
    try:
        return Architecture.from_dict(data)
    except ArchitectureError as exc:
        raise ArchitectureError(f"architecture file {path}: {exc}") from None


def save_architecture(arch: Architecture, path: str | Path) -> Path:
    """Write atomically, stamping the nas version and time into `meta` if absent."""
    from nas import __version__
    from nas.io import atomic_write_json

    meta = {"nas_version": __version__, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), **arch.meta}
    return atomic_write_json(path, replace(arch, meta=meta).to_dict())
