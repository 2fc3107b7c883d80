"""Named search spaces: `register_space` fills the registry, `space_spec(name)` returns its hyper-parameters.

Tests are parametrised over `list_spaces()`, so a new space is tested the moment it is registered.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from nas.registry import Registry
from search_spaces.arch import SpaceSpec

__all__ = ["SPACES", "register_space", "space_spec", "list_spaces", "space_from_config", "branches_from_config"]

SPACES: Registry[Callable[[], SpaceSpec]] = Registry("search space")  # name → factory of its SpaceSpec


def register_space(name: str) -> Callable[[Callable[[], SpaceSpec]], Callable[[], SpaceSpec]]:
    """Decorator registering a factory of a :class:`SpaceSpec`; a duplicate name raises."""
    return SPACES.register(name)


def list_spaces() -> tuple[str, ...]:
    return SPACES.names()


def space_spec(name: str, **overrides: Any) -> SpaceSpec:
    """The registered space `name` with some hyper-parameters replaced (None values are ignored)."""
    spec = SPACES[name]()
    return replace(spec, **{k: v for k, v in overrides.items() if v is not None})


@register_space("fasterseg")
def _fasterseg() -> SpaceSpec:
    """FasterSeg's space: L=16 layers, Fch=12, scales 1/8–1/32, five operators, widths {4..12}/12."""
    return SpaceSpec(name="fasterseg")


@register_space("tiny")
def _tiny() -> SpaceSpec:
    """A small space for tests and quick runs: 5 layers, Fch=4, two widths."""
    return SpaceSpec(name="tiny", layers=5, fch=4, widths=(0.5, 1.0))


def space_from_config(cfg: Any, num_classes: int) -> SpaceSpec:
    """The SpaceSpec a `SpaceConfig` section describes, for a dataset with `num_classes` classes."""
    return space_spec(cfg.name, layers=cfg.layers, fch=cfg.fch, ops=cfg.ops, widths=cfg.widths,
                      num_classes=num_classes)


def branches_from_config(cfg: Any) -> tuple[int, ...] | None:
    """The ending scales a `SpaceConfig`'s ``branches`` names ("32,16" → (32, 16)); None for ``auto``."""
    return None if cfg.branches == "auto" else tuple(int(s) for s in cfg.branches.split(","))
