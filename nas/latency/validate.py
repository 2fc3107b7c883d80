"""Does the table predict whole networks? Fit a correction on some random networks, validate on others.

Validation samples N random derived architectures (seeded), predicts each from the table, measures each end to
end on the same device and backend, and reports Kendall τ, Pearson r, mean absolute percentage error and the
share within ±10%. The correction (measured ≈ a · Σ entries + b) is fitted on a *separate* set of networks so
the validation figures are not fitted to themselves.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from nas.latency.measure import LatencyBackend
from nas.latency.table import LatencyTable
from nas.latency.units import record_unit_calls
from search_spaces.arch import Architecture, SpaceSpec

__all__ = ["ValidationReport", "kendall_tau", "random_networks", "fit_correction", "validate", "plot_scatter"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidationReport:
    predicted_ms: tuple[float, ...]
    measured_ms: tuple[float, ...]
    raw_ms: tuple[float, ...]  # before the correction
    kendall_tau: float
    pearson_r: float
    mape: float  # mean |pred − meas| / meas, in percent
    within_10: float  # share of networks predicted within ±10%, in percent

    def rows(self) -> list[dict[str, float]]:
        return [
            {"network": i, "predicted_ms": p, "measured_ms": m, "raw_sum_ms": r, "error_pct": 100 * (p - m) / m}
            for i, (p, m, r) in enumerate(zip(self.predicted_ms, self.measured_ms, self.raw_ms))
        ]

    def summary(self) -> str:
        return (f"{len(self.measured_ms)} networks: Kendall tau {self.kendall_tau:.3f}, Pearson r {self.pearson_r:.3f}, "
                f"MAPE {self.mape:.1f}%, within ±10%: {self.within_10:.0f}%")


def kendall_tau(x: list[float] | tuple[float, ...], y: list[float] | tuple[float, ...]) -> float:
    """Kendall's τ-b (ties counted as neither concordant nor discordant)."""
    n = len(x)
    conc = disc = tx = ty = 0
    for i in range(n):
        for j in range(i + 1, n):
            dx, dy = x[i] - x[j], y[i] - y[j]
            if dx == 0 and dy == 0:
                continue
            if dx == 0:
                tx += 1
            elif dy == 0:
                ty += 1
            elif (dx > 0) == (dy > 0):
                conc += 1
            else:
                disc += 1
    denom = math.sqrt((conc + disc + tx) * (conc + disc + ty))
    return (conc - disc) / denom if denom else float("nan")


def random_networks(spec: SpaceSpec, n: int, seed: int, stem_width: float, head_width: float) -> list[Architecture]:
    """`n` random derived architectures (seeded), both kinds of branch pairs and upsamplers."""
    from search_spaces.random_arch import random_architecture

    rng = np.random.default_rng(seed)
    return [random_architecture(spec, rng, stem_width=stem_width, head_width=head_width) for _ in range(n)]


class _Logits(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.net(x)["logits"]


def _measure(archs: list[Architecture], table: LatencyTable, backend: LatencyBackend,
             input_shape: tuple[int, int, int, int], progress: bool, rounds: int = 3) -> tuple[list[float], list[float]]:
    """Table sum and measured latency of each network. Each network is timed in `rounds` interleaved rounds
    and the fastest round's median kept: interference from other processes only ever adds time, and
    interleaving keeps a burst of it from hitting one network's every round."""
    import torch
    from tqdm import tqdm

    from search_spaces.builder import build_network

    nets = [_Logits(build_network(arch, aux_heads=False).eval()) for arch in archs]
    raw = [table.sum_ms(record_unit_calls(n.net, torch.zeros(input_shape))) for n in nets]
    measured = [float("inf")] * len(nets)
    bar = tqdm(total=rounds * len(nets), desc="networks", disable=None if progress else True)
    for _ in range(max(1, rounds)):
        for i, net in enumerate(nets):
            measured[i] = min(measured[i], backend.measure(net, [input_shape]))
            bar.update()
    bar.close()
    return raw, measured


def fit_correction(table: LatencyTable, archs: list[Architecture], backend: LatencyBackend,
                   input_shape: tuple[int, int, int, int], progress: bool = True, rounds: int = 3) -> dict[str, float]:
    """Least-squares `measured ≈ scale · raw + offset` over whole networks; stored in the table."""
    raw, measured = _measure(archs, table, backend, input_shape, progress, rounds)
    scale, offset = np.polyfit(np.asarray(raw), np.asarray(measured), 1)
    if not (0.2 < scale < 5):  # a degenerate fit (e.g. all networks alike): fall back to a pure offset
        scale, offset = 1.0, float(np.median(np.asarray(measured) - np.asarray(raw)))
    table.correction = {"scale": float(scale), "offset_ms": float(offset), "n": len(archs)}
    return table.correction


def validate(table: LatencyTable, archs: list[Architecture], backend: LatencyBackend,
             input_shape: tuple[int, int, int, int], progress: bool = True, rounds: int = 3) -> ValidationReport:
    raw, measured = _measure(archs, table, backend, input_shape, progress, rounds)
    pred = [table.corrected(r) for r in raw]
    p, m = np.asarray(pred), np.asarray(measured)
    err = np.abs(p - m) / m
    return ValidationReport(
        predicted_ms=tuple(pred), measured_ms=tuple(measured), raw_ms=tuple(raw),
        kendall_tau=kendall_tau(pred, measured),
        pearson_r=float(np.corrcoef(p, m)[0, 1]) if len(p) > 1 else float("nan"),
        mape=float(100 * err.mean()), within_10=float(100 * (err <= 0.10).mean()),
    )


def plot_scatter(report: ValidationReport, path: str | Path, title: str = "") -> Path:
    """Predicted vs measured latency, with the ±10% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    lo = min(min(report.measured_ms), min(report.predicted_ms)) * 0.9
    hi = max(max(report.measured_ms), max(report.predicted_ms)) * 1.1
    xs = np.linspace(lo, hi, 10)
    ax.plot(xs, xs, "k-", lw=1, label="ideal")
    ax.fill_between(xs, xs * 0.9, xs * 1.1, color="0.85", label="±10%")
    ax.scatter(report.measured_ms, report.predicted_ms, s=18, c="C0", zorder=3)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(title or report.summary(), fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)
