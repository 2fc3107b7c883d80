"""Search: latency-constrained teacher–student co-search over the supernet, resumable."""

from __future__ import annotations

from nas.config import ExperimentConfig
from nas.searcher.common import SearchResult, arch_entropies
from nas.searcher.loop import run_search

__all__ = ["SearchResult", "arch_entropies", "run_search", "run_strategy"]


def run_strategy(cfg: ExperimentConfig, resume: bool = False) -> SearchResult:
    """Run the configured ``search.strategy``: native or evolution over the supernet, halving without one, nni-*
    through the optional NNI back-end."""
    if cfg.search.strategy in ("native", "evolution"):
        return run_search(cfg, resume=resume)
    if cfg.search.strategy == "halving":
        from nas.searcher.halving import run_halving

        return run_halving(cfg, resume=resume)
    from nas.nni_backend import run_nni_search

    return run_nni_search(cfg, resume=resume)
