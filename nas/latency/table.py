"""Latency lookup tables: measured unit latencies stamped with where and how they were measured.

A table is JSON: ``provenance`` (device, backend, dtype, batch, threads, input size, space, library versions,
date), ``entries`` (unit key → median ms) and an optional ``correction`` (measured ≈ scale · Σ entries +
offset, fitted on whole networks, because a network is not exactly the sum of its parts: operator fusion,
cache effects between consecutive layers, and per-call framework overhead). Unlike FasterSeg's table, ours is
refused on another device, backend, dtype, batch, thread count or input size unless the user forces it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas import __version__
from nas.errors import UserError
from nas.io import atomic_write_json, read_json
from nas.latency.measure import LatencyBackend
from nas.latency.units import Unit, architecture_unit_keys, record_unit_calls
from search_spaces.arch import Architecture

__all__ = ["LatencyTable", "TableMismatch", "apply_correction", "build_table", "cache_key", "TABLE_VERSION"]

log = logging.getLogger(__name__)

TABLE_VERSION = 1
# provenance fields that must match for a table to describe this run's latency
_MUST_MATCH = ("device", "backend", "dtype", "batch", "threads", "input_hw")


class TableMismatch(UserError):
    """A table measured under other conditions than the current run's."""


@dataclass
class LatencyTable:
    provenance: dict[str, Any]
    entries: dict[str, float] = field(default_factory=dict)
    correction: dict[str, float] | None = None
    path: Path | None = None

    # ---------------------------------------------------------------- files
    def to_dict(self) -> dict[str, Any]:
        return {"table_version": TABLE_VERSION, "provenance": self.provenance, "entries": self.entries,
                "correction": self.correction}

    def save(self, path: str | Path | None = None) -> Path:
        target = Path(path) if path is not None else self.path
        if target is None:
            raise ValueError("no path to save the latency table to")
        self.path = target
        return atomic_write_json(target, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> LatencyTable:
        data = read_json(path, what="latency table")
        if not isinstance(data, dict) or "entries" not in data or "provenance" not in data:
            raise UserError(f"latency table {path} lacks 'provenance' or 'entries'")
        if data.get("table_version") != TABLE_VERSION:
            raise UserError(f"latency table {path} has version {data.get('table_version')!r}, expected {TABLE_VERSION}")
        entries = data["entries"]
        if not isinstance(entries, dict) or not all(isinstance(v, (int, float)) for v in entries.values()):
            raise UserError(f"latency table {path}: 'entries' must map keys to milliseconds")
        return cls(provenance=data["provenance"], entries={k: float(v) for k, v in entries.items()},
                   correction=data.get("correction"), path=Path(path))

    # ---------------------------------------------------------------- use
    def check_compatible(self, current: dict[str, Any], force: bool = False) -> None:
        """Refuse (TableMismatch) when the table was measured under other conditions, unless `force`."""
        diffs = [
            f"{k} {self.provenance.get(k)!r} vs {current.get(k)!r}"
            for k in _MUST_MATCH
            if k in current and _norm(self.provenance.get(k)) != _norm(current.get(k))
        ]
        if diffs and not force:
            where = f" {self.path}" if self.path else ""
            raise TableMismatch(
                f"latency table{where} was measured under other conditions ({'; '.join(diffs)}); "
                "rebuild it with `nas latency build` or force it with --set latency.force=true"
            )
        if diffs:
            log.warning("using latency table measured under other conditions: %s", "; ".join(diffs))

    def lookup(self, key: str) -> float:
        try:
            return self.entries[key]
        except KeyError:
            where = f" {self.path}" if self.path else ""
            raise UserError(
                f"latency table{where} has no entry '{key}': it was built for another space or input size"
            ) from None

    def sum_ms(self, keys: Iterable[str]) -> float:
        return float(sum(self.lookup(k) for k in keys))

    def corrected(self, raw_ms: float) -> float:
        """Apply the fitted whole-network correction (identity if none was fitted)."""
        return apply_correction(self.correction, raw_ms)

    def predict_model(self, model: nn.Module, input_shape: tuple[int, ...], corrected: bool = True) -> float:
        """Predicted latency (ms) of a built network: the sum of its units' entries, then the correction."""
        device = next(model.parameters()).device
        return self._price(record_unit_calls(model, torch.zeros(input_shape, device=device)), corrected)

    def predict_architecture(self, arch: Architecture, input_shape: tuple[int, ...], corrected: bool = True) -> float:
        """Predicted latency (ms) of `arch`'s deployable network at `input_shape` (B, 3, H, W), priced from its
        plan without building it (a forward pass when the size needs one, see
        :func:`nas.latency.units.architecture_unit_keys`)."""
        keys = architecture_unit_keys(arch, (int(input_shape[-2]), int(input_shape[-1])))
        if keys is None:
            from search_spaces.builder import build_network

            return self.predict_model(build_network(arch, aux_heads=False), input_shape, corrected)
        return self._price(keys, corrected)

    def _price(self, keys: Iterable[str], corrected: bool) -> float:
        raw = self.sum_ms(keys)
        return self.corrected(raw) if corrected else raw

    def nominal_ms(self) -> float | None:
        """The speed reference's nominal time the entries are normalised to (None: raw timings)."""
        ref = self.provenance.get("speed_reference") or {}
        value = ref.get("nominal_ms") if isinstance(ref, dict) else None
        return float(value) if isinstance(value, (int, float)) and value > 0 else None

    def slowest(self, n: int = 10) -> list[tuple[str, float]]:
        return sorted(self.entries.items(), key=lambda kv: -kv[1])[:n]


def apply_correction(correction: dict[str, float] | None, raw_ms: float) -> float:
    """`scale · raw + offset` of a whole-network correction (identity when there is none)."""
    if not correction:
        return raw_ms
    return correction["scale"] * raw_ms + correction["offset_ms"]


def _norm(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def cache_key(provenance: dict[str, Any]) -> str:
    """A file-name-safe key for the conditions a table is valid for."""
    fields = {k: _norm(provenance.get(k)) for k in (*_MUST_MATCH, "space", "torch", "onnxruntime", "widths")}
    if provenance.get("normalised"):  # tables of un-normalised timings keep their old keys
        fields["normalised"] = True
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]
    dev = "".join(ch if ch.isalnum() else "-" for ch in str(provenance.get("device", "dev")))[:40].strip("-")
    return f"{provenance.get('backend')}-{dev}-{digest}"


def build_table(
    units: list[Unit],
    backend: LatencyBackend,
    provenance: dict[str, Any],
    path: Path,
    progress: bool = True,
    save_every: int = 10,
    rounds: int = 1,
) -> LatencyTable:
    """Measure every unit not yet in the table at `path` (resuming a partial one), saving as it goes;
    with `rounds` > 1 each unit is measured that many times (rounds interleaved, each in its own order) and the
    median kept (with normalised timings the fastest round is an outlier as often as the slowest).

    An interruption (Ctrl-C) saves what was measured and re-raises; the next call continues from there.
    """
    from tqdm import tqdm

    table = LatencyTable(provenance=provenance, path=path)
    if path.is_file():
        old = LatencyTable.load(path)
        if cache_key(old.provenance) == cache_key(provenance):
            table.entries = dict(old.entries)
            table.correction = old.correction
    todo = [u for u in units if u.key not in table.entries]
    if not todo:
        return table
    log.info("measuring %d of %d units (%d cached, %d rounds) on %s", len(todo), len(units), len(units) - len(todo),
             max(1, rounds), provenance.get("device"))
    # every round in its own seeded order: a slow spell of the machine then hits random units, not a block of
    # related ones (enumeration order groups units by scale and operator, so drift would bias whole kinds)
    order = random.Random(len(todo))
    todo = [u for _ in range(max(1, rounds)) for u in order.sample(todo, len(todo))]
    table.provenance["complete"] = False
    ref = getattr(backend, "reference", None)
    settle = ref is not None and not table.entries  # a new normalised table (a resumed one keeps its nominal)
    measured: set[str] = set()
    try:
        rounds_of: dict[str, list[float]] = {}
        for i, unit in enumerate(tqdm(todo, desc="latency", disable=None if progress else True, unit="op")):
            with torch.no_grad():
                ms = backend.measure(unit.make(), list(unit.shapes))
            rounds_of.setdefault(unit.key, []).append(ms)
            table.entries[unit.key] = statistics.median(rounds_of[unit.key])
            measured.add(unit.key)
            if (i + 1) % save_every == 0:
                if ref is not None:  # a killed build resumes at the nominal its entries were measured at
                    table.provenance["speed_reference"] = ref.provenance()
                table.save()
    finally:
        if settle and ref.samples:
            # the nominal speed of a new table is the reference's median *while it measured*, so its entries are
            # in the machine's typical milliseconds, not those of the moment the reference was first calibrated
            observed = statistics.median(ref.samples)
            for key in measured:
                table.entries[key] *= observed / ref.nominal_ms
            ref.nominal_ms = observed
        if ref is not None:
            table.provenance["speed_reference"] = ref.provenance()
        table.provenance["complete"] = len(table.entries) >= len({u.key for u in units})
        table.provenance["date"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        table.provenance["nas_version"] = __version__
        table.save()
    return table
