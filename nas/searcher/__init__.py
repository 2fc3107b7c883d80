"""Search: latency-constrained teacher–student co-search over the supernet, resumable."""

from nas.searcher.common import SearchResult, arch_entropies
from nas.searcher.loop import run_search

__all__ = ["SearchResult", "arch_entropies", "run_search"]
