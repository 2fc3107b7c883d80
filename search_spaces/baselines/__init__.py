"""Hand-designed real-time segmentation networks, trained, distilled, exported and timed by the same pipeline as
searched students, so a searched student can be compared with the network one would otherwise pick.

Each family (one module each) registers a builder in :data:`BASELINES`; :func:`build_baseline` builds one at a
width multiplier (channels, rounded to multiples of 8) and a depth multiplier (repeated blocks), and
:func:`~search_spaces.baselines.scaling.scale_to_latency` finds the widest one within a latency target. The
forward contract is :class:`search_spaces.builder.SegNet`'s (see :mod:`search_spaces.baselines.common`).

Families: ``bisenetv2`` (:mod:`~search_spaces.baselines.bisenetv2`), ``ppliteseg``
(:mod:`~search_spaces.baselines.ppliteseg`), ``ddrnet`` (:mod:`~search_spaces.baselines.ddrnet`).
"""

from __future__ import annotations

import math

from torch import nn

from search_spaces.baselines import bisenetv2, ddrnet, ppliteseg  # noqa: F401  (registers the families)
from search_spaces.baselines.common import BASELINES
from search_spaces.baselines.scaling import latency_measure, latency_measure_from_config, scale_to_latency

__all__ = ["BASELINES", "build_baseline", "check_multipliers", "scale_to_latency", "latency_measure",
           "latency_measure_from_config"]


def check_multipliers(width: float, depth: float) -> None:
    """Refuse a width or depth multiplier that is not a finite number > 0 (ValueError)."""
    for name, value in (("width", width), ("depth", depth)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not (
            math.isfinite(value) and value > 0
        ):
            raise ValueError(f"baseline {name} multiplier must be a finite number > 0, got {value!r}")


def build_baseline(family: str, num_classes: int, width: float = 1.0, depth: float = 1.0,
                   aux_heads: bool = True) -> nn.Module:
    """The `family` network for `num_classes` classes at `width` × its channels and `depth` × its repeated blocks;
    `aux_heads=False` leaves the training-only auxiliary heads out. An unknown family is an
    :class:`~nas.errors.UnknownNameError` listing the known ones; a bad multiplier a ValueError."""
    builder = BASELINES[family]
    check_multipliers(width, depth)
    return builder(num_classes, width=float(width), depth=float(depth), aux_heads=aux_heads)
