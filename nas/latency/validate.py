"""Does the table predict whole networks? Fit a correction on some random networks, validate on others.

Validation samples N random derived architectures (seeded), predicts each from the table, measures each end to
end on the same device and backend, and reports Kendall τ, Pearson r, mean absolute percentage error and the
share within ±10%. The correction (measured ≈ a · Σ entries + b) is fitted on a *separate* set of networks so
the validation figures are not fitted to themselves.

Two corrections are compared. The table's own was fitted when it was built; on a shared machine the speed of
whole networks can shift by ~15% between then and now, which moves every prediction alike. So validation also
times the calibration networks again, interleaved with the validation networks, and refits: the figures with
that *fresh* correction measure the table; the gap to those with the *build-time* one measures the drift.
"""

from __future__ import annotations

import logging
import math
import textwrap
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from torch import nn

from nas.config import LatencyConfig
from nas.latency.measure import LatencyBackend
from nas.latency.table import LatencyTable, apply_correction
from search_spaces.arch import Architecture, SpaceSpec

__all__ = ["ValidationReport", "kendall_tau", "kendall_tau_interval", "calibration_seed", "random_networks",
           "fit_correction", "validate", "plot_scatter"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ValidationReport:
    predicted_ms: tuple[float, ...]  # with the fresh correction (or the table's, when none was refitted)
    measured_ms: tuple[float, ...]
    raw_ms: tuple[float, ...]  # before any correction
    kendall_tau: float
    pearson_r: float
    mape: float  # mean |pred − meas| / meas, in percent
    within_10: float  # share of networks predicted within ±10%, in percent
    build_predicted_ms: tuple[float, ...] = ()  # with the table's build-time correction, when refitted
    correction: dict[str, float] | None = None  # the correction behind `predicted_ms`
    halves_ms: tuple[tuple[float, ...], tuple[float, ...]] = ((), ())  # medians of the first / second half of rounds

    @property
    def tau_interval(self) -> tuple[float, float]:
        """95% bootstrap interval of `kendall_tau` over the networks: how far another draw of as many random
        networks could move it (±0.05 at 30 networks), which decides whether a goal is met or merely touched."""
        return kendall_tau_interval(self.predicted_ms, self.measured_ms)

    @property
    def repeat_tau(self) -> float:
        """Kendall τ between the two halves of the measurement: how well the machine agrees with itself, a
        ceiling for any table's τ against it (nan with fewer than two rounds)."""
        first, second = self.halves_ms
        return kendall_tau(first, second) if first else float("nan")

    @property
    def build_mape(self) -> float:
        return _mape(self.build_predicted_ms, self.measured_ms)

    @property
    def build_within_10(self) -> float:
        return _within(self.build_predicted_ms, self.measured_ms, 0.10)

    def rows(self) -> list[dict[str, float]]:
        build = self.build_predicted_ms or (float("nan"),) * len(self.measured_ms)
        return [
            {"network": i, "predicted_ms": p, "measured_ms": m, "raw_sum_ms": r, "error_pct": 100 * (p - m) / m,
             "predicted_build_correction_ms": b, "measured_first_half_ms": h1, "measured_second_half_ms": h2}
            for i, (p, m, r, b, h1, h2) in enumerate(zip(self.predicted_ms, self.measured_ms, self.raw_ms, build,
                                                         *self._halves()))
        ]

    def _halves(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        nan = (float("nan"),) * len(self.measured_ms)
        return self.halves_ms if self.halves_ms[0] else (nan, nan)

    def summary(self) -> str:
        lo, hi = self.tau_interval
        text = (f"{len(self.measured_ms)} networks: Kendall tau {self.kendall_tau:.3f} (95% bootstrap interval "
                f"{lo:.2f}–{hi:.2f}), Pearson r {self.pearson_r:.3f}, MAPE {self.mape:.1f}%, within ±10%: "
                f"{self.within_10:.0f}%")
        if self.build_predicted_ms:
            text += (f" (fresh correction; with the build-time one: MAPE {self.build_mape:.1f}%, within ±10%: "
                     f"{self.build_within_10:.0f}%)")
        if self.halves_ms[0]:
            text += (f"; the measurement against itself (first vs second half of the rounds): Kendall tau "
                     f"{self.repeat_tau:.3f}, median difference {self.repeat_diff:.1f}%")
        return text

    @property
    def repeat_diff(self) -> float:
        """Median |first / second − 1| of the two halves of the measurement, in percent."""
        first, second = (np.asarray(h) for h in self.halves_ms)
        return float(100 * np.median(np.abs(first / second - 1))) if first.size else float("nan")


def _mape(pred: tuple[float, ...] | list[float], meas: tuple[float, ...] | list[float]) -> float:
    if not pred:
        return float("nan")
    p, m = np.asarray(pred), np.asarray(meas)
    return float(100 * (np.abs(p - m) / m).mean())


def _within(pred: tuple[float, ...] | list[float], meas: tuple[float, ...] | list[float], tol: float) -> float:
    if not pred:
        return float("nan")
    p, m = np.asarray(pred), np.asarray(meas)
    return float(100 * (np.abs(p - m) / m <= tol).mean())


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


def kendall_tau_interval(x: list[float] | tuple[float, ...], y: list[float] | tuple[float, ...],
                         level: float = 0.95, n_boot: int = 2000, seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of Kendall's τ-b, resampling the pairs (x_i, y_i) with replacement
    (seeded, so a report is reproducible); (nan, nan) with fewer than three pairs."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    n = len(xs)
    if n < 3:
        return float("nan"), float("nan")
    idx = np.random.default_rng(seed).integers(0, n, size=(n_boot, n))
    sx = np.sign(xs[idx][:, :, None] - xs[idx][:, None, :])
    sy = np.sign(ys[idx][:, :, None] - ys[idx][:, None, :])
    s = (sx * sy).sum(axis=(1, 2))  # each unordered pair twice, as are the counts below
    denom = np.sqrt((sx != 0).sum(axis=(1, 2)) * (sy != 0).sum(axis=(1, 2)).astype(float))
    taus = np.divide(s, denom, out=np.full(n_boot, np.nan), where=denom > 0)
    lo, hi = np.nanpercentile(taus, [50 * (1 - level), 50 * (1 + level)])
    return float(lo), float(hi)


def calibration_seed(cfg: LatencyConfig) -> int:
    """The seed of the networks a correction is fitted on: never the validation networks' own."""
    return 10_000 + cfg.validate_seed


def random_networks(spec: SpaceSpec, n: int, seed: int, stem_width: float, head_width: float) -> list[Architecture]:
    """`n` random derived architectures (seeded), both kinds of branch pairs and upsamplers, spread over the
    space's latency range: network k draws its cell widths from :func:`width_windows` in turn (nn-Meter's test
    sets span their FLOPs range too)."""
    from search_spaces.random_arch import random_architecture, width_windows

    rng = np.random.default_rng(seed)
    windows = width_windows(spec.widths)
    return [random_architecture(spec, rng, stem_width=stem_width, head_width=head_width,
                                widths=windows[k % len(windows)]) for k in range(n)]


class _Logits(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):  # noqa: ANN001, ANN201
        return self.net(x)["logits"]


def _time_networks(nets: list[nn.Module], backend: LatencyBackend, input_shape: tuple[int, int, int, int],
                   rounds: int, repeats: int, progress: bool) -> list[list[float]]:
    """Each network's time in each round, in the order of the rounds."""
    from tqdm import tqdm

    timed = [_Logits(net) for net in nets]
    samples: list[list[float]] = [[] for _ in timed]
    bar = tqdm(total=max(1, rounds) * len(timed), desc="networks", disable=None if progress else True)
    for r in range(max(1, rounds)):
        for i, net in enumerate(timed):
            samples[i].append(backend.measure(net, [input_shape], warmup=2 if r == 0 else 1, repeats=repeats))
            bar.update()
    bar.close()
    return samples


def _measure(archs: list[Architecture], table: LatencyTable, backend: LatencyBackend,
             input_shape: tuple[int, int, int, int], progress: bool,
             rounds: int) -> tuple[list[float], list[list[float]]]:
    """Table sum (a missing entry is refused before anything is timed) and each network's time per round."""
    from search_spaces.builder import build_network

    raw = [table.predict_architecture(a, input_shape, corrected=False) for a in archs]
    nets = [build_network(a, aux_heads=False).eval() for a in archs]
    return raw, _time_networks(nets, backend, input_shape, rounds, 3, progress)


def _fit(raw: list[float], measured: list[float], n: int) -> dict[str, float]:
    """Least-squares `measured ≈ scale · raw + offset`; a pure offset when the fit is degenerate."""
    scale, offset = np.polyfit(np.asarray(raw), np.asarray(measured), 1)
    if not (0.2 < scale < 5):  # e.g. all networks alike
        scale, offset = 1.0, float(np.median(np.asarray(measured) - np.asarray(raw)))
    return {"scale": float(scale), "offset_ms": float(offset), "n": n}


def fit_correction(table: LatencyTable, archs: list[Architecture], backend: LatencyBackend,
                   input_shape: tuple[int, int, int, int], progress: bool = True, rounds: int = 12) -> dict[str, float]:
    """Least-squares `measured ≈ scale · raw + offset` over whole networks; stored in the table."""
    raw, samples = _measure(archs, table, backend, input_shape, progress, rounds)
    table.correction = _fit(raw, [float(np.median(s)) for s in samples], len(archs))
    return table.correction


def validate(table: LatencyTable, archs: list[Architecture], backend: LatencyBackend,
             input_shape: tuple[int, int, int, int], progress: bool = True, rounds: int = 12,
             calibration: list[Architecture] | tuple[Architecture, ...] = ()) -> ValidationReport:
    """Predict each of `archs` from `table` and compare with its measured latency. With `calibration`
    networks (the ones the table's correction was fitted on), they are timed in the same rounds and a fresh
    correction is fitted on them; the build-time correction's predictions are reported beside."""
    calibration = list(calibration)
    raw_all, samples = _measure([*calibration, *archs], table, backend, input_shape, progress, rounds)
    measured = [float(np.median(s)) for s in samples]
    n_cal = len(calibration)
    raw, meas = raw_all[n_cal:], measured[n_cal:]
    half = len(samples[0]) // 2
    halves = tuple(tuple(float(np.median(s[part])) for s in samples[n_cal:])
                   for part in (slice(0, half), slice(half, None))) if half else ((), ())
    build = [table.corrected(r) for r in raw]
    corr = _fit(raw_all[:n_cal], measured[:n_cal], n_cal) if n_cal >= 2 else table.correction
    pred = [apply_correction(corr, r) for r in raw]
    p, m = np.asarray(pred), np.asarray(meas)
    return ValidationReport(
        predicted_ms=tuple(pred), measured_ms=tuple(meas), raw_ms=tuple(raw),
        kendall_tau=kendall_tau(pred, meas),
        pearson_r=float(np.corrcoef(p, m)[0, 1]) if len(p) > 1 else float("nan"),
        mape=_mape(pred, meas), within_10=_within(pred, meas, 0.10),
        build_predicted_ms=tuple(build) if n_cal >= 2 else (), correction=corr, halves_ms=halves,
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
    text = title or report.summary()
    ax.set_title("\n".join(textwrap.fill(line, 78) for line in text.splitlines()), fontsize=8)
    ax.legend(loc="upper left", fontsize=8)
    from nas.plots import save_figure

    out = save_figure(fig, path, dpi=120)
    plt.close(fig)
    return out
