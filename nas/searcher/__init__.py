"""Search: latency-constrained teacher–student co-search over the supernet, resumable."""

from nas.searcher.loop import SearchResult, arch_entropies, run_search

__all__ = ["SearchResult", "arch_entropies", "run_search"]
