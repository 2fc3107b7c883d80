"""Finding, checking and building the latency table a run needs, cached per device/backend/conditions."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from nas.config import LatencyConfig
from nas.device import resolve_device
from nas.errors import UserError
from nas.latency.measure import LatencyBackend, create_backend
from nas.latency.table import LatencyTable, build_table, cache_key
from nas.latency.units import enumerate_units
from search_spaces.arch import SpaceSpec

__all__ = ["make_backend", "current_provenance", "table_path", "open_table"]

log = logging.getLogger(__name__)


def make_backend(cfg: LatencyConfig, device: str | torch.device = "cpu") -> LatencyBackend:
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if cfg.dtype != "float32" and (cfg.backend != "torch" or dev.type != "cuda"):
        raise UserError(f"latency dtype {cfg.dtype} is only measured with the torch backend on CUDA")
    backend = create_backend(cfg.backend, dev, threads=cfg.threads, warmup=cfg.warmup, repeats=cfg.repeats)
    if hasattr(backend, "dtype"):
        backend.dtype = getattr(torch, cfg.dtype)
    return backend


def current_provenance(cfg: LatencyConfig, backend: LatencyBackend, spec: SpaceSpec,
                       stem_widths: tuple[float, ...], head_widths: tuple[float, ...]) -> dict[str, Any]:
    """The conditions a table measured now would carry."""
    prov = dict(backend.provenance())
    prov.update({
        "batch": cfg.batch,
        "input_hw": list(cfg.input_hw),
        "space": {"name": spec.name, "layers": spec.layers, "fch": spec.fch, "ops": list(spec.ops),
                  "widths": [round(w, 6) for w in spec.widths], "num_classes": spec.num_classes},
        "widths": {"stem": [round(w, 6) for w in stem_widths], "head": [round(w, 6) for w in head_widths]},
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
    if prov.get("threads") is None and cfg.threads:
        prov["threads"] = cfg.threads
    return prov


def table_path(cfg: LatencyConfig, provenance: dict[str, Any]) -> Path:
    return Path(cfg.table) if cfg.table else Path(cfg.cache_dir) / f"{cache_key(provenance)}.json"


def open_table(cfg: LatencyConfig, spec: SpaceSpec, stem_widths: tuple[float, ...], head_widths: tuple[float, ...],
               device: str | torch.device = "cpu", build: bool = True, progress: bool = True) -> LatencyTable:
    """The table for these conditions: loaded from `cfg.table` (checked against the current device, backend,
    dtype, batch, threads and input size) or from the cache, measuring missing entries when `build`."""
    backend = make_backend(cfg, device)
    prov = current_provenance(cfg, backend, spec, stem_widths, head_widths)
    path = table_path(cfg, prov)
    if cfg.table:
        table = LatencyTable.load(path)
        table.check_compatible(prov, force=cfg.force)
        return table
    if not build:
        if not path.is_file():
            raise UserError(f"no latency table for these conditions at {path}: run `nas latency build` first")
        return LatencyTable.load(path)
    units = list(enumerate_units(spec, tuple(cfg.input_hw), stem_widths, head_widths, batch=cfg.batch))
    return build_table(units, backend, prov, path, progress=progress, rounds=cfg.rounds)
