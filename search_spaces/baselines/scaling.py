"""Scaling a baseline family to a latency target: the widest network whose measured latency is within it.

A benchmark compares a searched student with a baseline at equal latency: it times both with the same backend
(:func:`latency_measure` wraps one of :mod:`nas.latency.measure`'s backends, as `nas latency validate` times
whole networks) and asks :func:`scale_to_latency` for the baseline's width. Latency grows with width, so the
search bisects a sorted grid of widths: about log2(len(widths)) networks are built and timed.
"""

from __future__ import annotations

import logging
import statistics
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from torch import nn

from nas.errors import UserError

if TYPE_CHECKING:
    from nas.config import LatencyConfig
    from nas.latency.measure import LatencyBackend
    from nas.latency.table import LatencyTable

__all__ = ["DEFAULT_WIDTHS", "scale_to_latency", "latency_measure", "latency_measure_from_config"]

log = logging.getLogger(__name__)

DEFAULT_WIDTHS: tuple[float, ...] = tuple(0.125 * k for k in range(1, 17))  # 0.125, 0.25, …, 2.0


def scale_to_latency(family: str, num_classes: int, target_ms: float, measure: Callable[[nn.Module], float],
                     widths: Sequence[float] = DEFAULT_WIDTHS, depth: float = 1.0) -> tuple[float, float]:
    """The largest of `widths` whose `family` network (deployable: no auxiliary heads, eval mode) takes at most
    `target_ms` by `measure(network)`, and that latency in ms. Bisects the sorted widths, assuming latency grows
    with width. No width within the target is a one-line UserError naming the narrowest one's latency."""
    from search_spaces.baselines import build_baseline

    grid = sorted({float(w) for w in widths})
    if not grid:
        raise UserError("scale_to_latency needs at least one width")
    if not target_ms > 0:
        raise UserError(f"the latency target must be > 0 ms, got {target_ms}")
    timed: dict[int, float] = {}

    def ms(i: int) -> float:
        if i not in timed:
            net = build_baseline(family, num_classes, width=grid[i], depth=depth, aux_heads=False).eval()
            timed[i] = float(measure(net))
            log.info("%s width %g depth %g: %.3f ms (target %.3f ms)", family, grid[i], depth, timed[i], target_ms)
        return timed[i]

    within, over = -1, len(grid)  # grid[within] meets the target (or none yet), grid[over] does not (or none)
    while over - within > 1:
        mid = (within + over) // 2
        if ms(mid) <= target_ms:
            within = mid
        else:
            over = mid
    if within < 0:
        raise UserError(f"no {family} width within {target_ms:g} ms: the narrowest, {grid[0]:g}, takes "
                        f"{timed[0]:.3f} ms")
    return grid[within], timed[within]


def latency_measure(backend: LatencyBackend, input_shape: tuple[int, int, int, int], rounds: int = 3,
                    repeats: int | None = None) -> Callable[[nn.Module], float]:
    """`measure(network) -> ms` for :func:`scale_to_latency`: the logits-only network timed end to end by
    `backend` at `input_shape` `[B, 3, H, W]`, the median of `rounds` rounds (each the backend's median of
    `repeats` runs; its own default when None)."""
    from search_spaces.builder import InferenceWrapper

    def measure(net: nn.Module) -> float:
        wrapped = InferenceWrapper(net.eval())  # type: ignore[arg-type]  # any net returning {"logits": ...}
        return statistics.median(
            backend.measure(wrapped, [input_shape], warmup=2 if r == 0 else 1, repeats=repeats)
            for r in range(max(1, rounds))
        )

    return measure


def latency_measure_from_config(cfg: LatencyConfig, device: str = "cpu", rounds: int | None = None,
                                table: LatencyTable | None = None) -> Callable[[nn.Module], float]:
    """:func:`latency_measure` with the configured backend, threads, speed reference and input size
    (`latency.batch`, `latency.input_hw`); `rounds` defaults to `latency.validate_rounds`, as whole networks
    are timed by `nas latency validate`. Given `table`, networks are timed on its scale (its nominal speed), so a
    baseline scaled to a target is comparable with the table's prices even when this machine's cached speed
    reference was calibrated at another speed."""
    from nas.latency.cache import backend_for_table, make_backend

    backend = make_backend(cfg, device) if table is None else backend_for_table(cfg, table, device)
    shape = (cfg.batch, 3, int(cfg.input_hw[0]), int(cfg.input_hw[1]))
    return latency_measure(backend, shape, rounds=cfg.validate_rounds if rounds is None else rounds,
                           repeats=cfg.repeats)
