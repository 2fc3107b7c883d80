"""Latency: measured per-device lookup tables, the differentiable expected latency, validation."""

from nas.latency.expected import ArchProbs, ExpectedLatency, latency_loss
from nas.latency.table import LatencyTable, TableMismatch

__all__ = ["ArchProbs", "ExpectedLatency", "LatencyTable", "TableMismatch", "latency_loss"]
