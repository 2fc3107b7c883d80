"""Checks of a resolved configuration that need no data, no files and no training: every job runs them before
it generates, reads or writes anything, so a mistake costs nothing but a one-line error."""

from __future__ import annotations

from typing import Any

from nas.errors import ConfigError

__all__ = ["check_config"]


def _positive_pair(value: tuple[int, int], key: str) -> None:
    if min(value) < 1:
        raise ConfigError(f"config key '{key}': sizes must be positive, got {list(value)}")


def check_config(cfg: Any) -> None:
    """Raise a one-line ConfigError for a value no job can use (negative counts, empty sizes, unknown dataset);
    the data section's own checks (batch size, workers, image size, the dataset's options) are
    :func:`nas.data.check_data_config`'s."""
    run = cfg.run
    if run.threads < 0:
        raise ConfigError(f"config key 'run.threads': must be 0 (torch's default) or positive, got {run.threads}")
    if run.log_every < 0:
        raise ConfigError(f"config key 'run.log_every': cannot be negative, got {run.log_every}")
    _positive_pair(cfg.latency.input_hw, "latency.input_hw")
    if cfg.search.latency_target_ms < 0:
        raise ConfigError(f"config key 'search.latency_target_ms': cannot be negative, got {cfg.search.latency_target_ms}")
    sc = cfg.search
    if sc.strategy in ("evolution", "halving"):
        if sc.latency_target_ms <= 0:
            raise ConfigError(f"config key 'search.latency_target_ms': search.strategy={sc.strategy} needs a latency "
                              "target")
        if any(t <= 0 for t in sc.extra_targets_ms):
            raise ConfigError(f"config key 'search.extra_targets_ms': targets must be positive, got {list(sc.extra_targets_ms)}")
        if not 0 < sc.evolution_window <= 1:
            raise ConfigError(f"config key 'search.evolution_window': must be in (0, 1], got {sc.evolution_window}")
        if sc.evolution_population < 2 or sc.evolution_generations < 0 or sc.evolution_calib_batches < 1:
            raise ConfigError("config keys 'search.evolution_*': population ≥ 2, generations ≥ 0 and calib_batches "
                              f"≥ 1, got {sc.evolution_population}, {sc.evolution_generations}, "
                              f"{sc.evolution_calib_batches}")
    if sc.strategy == "halving":
        for key, value, least in (("candidates", sc.halving_candidates, 2), ("iters", sc.halving_iters, 1),
                                  ("eta", sc.halving_eta, 2), ("score_batches", sc.halving_score_batches, 0)):
            if value < least:
                raise ConfigError(f"config key 'search.halving_{key}': must be at least {least}, got {value}")
    from nas.data import check_data_config

    check_data_config(cfg.data)
