"""Finding, checking and building the latency table a run needs, cached per device/backend/conditions."""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from nas.config import LatencyConfig
from nas.device import device_name, resolve_device
from nas.errors import UserError
from nas.io import atomic_write_json, read_json
from nas.latency.measure import LatencyBackend, SpeedReference, create_backend
from nas.latency.table import LatencyTable, build_table, cache_key
from nas.latency.units import enumerate_units
from search_spaces.arch import SpaceSpec

__all__ = ["make_backend", "backend_for_table", "speed_reference", "current_provenance", "table_path", "open_table",
           "prepare_table"]

log = logging.getLogger(__name__)


def make_backend(cfg: LatencyConfig, device: str | torch.device = "cpu",
                 nominal_ms: float | None = None) -> LatencyBackend:
    """The configured backend; on CPU with `normalise`, timings are reported at the speed reference's nominal
    time `nominal_ms` (a table's own, so that measuring against it stays consistent; None: this device's)."""
    dev = device if isinstance(device, torch.device) else resolve_device(device)
    if cfg.dtype != "float32" and (cfg.backend != "torch" or dev.type != "cuda"):
        raise UserError(f"latency dtype {cfg.dtype} is only measured with the torch backend on CUDA")
    backend = create_backend(cfg.backend, dev, threads=cfg.threads, warmup=cfg.warmup, repeats=cfg.repeats)
    if hasattr(backend, "dtype"):
        backend.dtype = getattr(torch, cfg.dtype)
    if cfg.normalise and dev.type == "cpu":
        backend.reference = speed_reference(cfg, dev, nominal_ms)
    return backend


def backend_for_table(cfg: LatencyConfig, table: LatencyTable, device: str | torch.device = "cpu") -> LatencyBackend:
    """A backend that measures on `table`'s scale: normalised to its nominal speed, or raw if it is raw."""
    normalised = bool(table.provenance.get("normalised")) and table.nominal_ms() is not None
    return make_backend(replace(cfg, normalise=normalised), device, nominal_ms=table.nominal_ms())


def speed_reference(cfg: LatencyConfig, device: torch.device, nominal_ms: float | None = None) -> SpeedReference:
    """This device's speed reference. Its nominal time is calibrated once per CPU, thread count and torch
    version and kept in the cache folder, so every later process (a table build, a validation, study trials)
    reports at the same nominal speed."""
    ref = SpeedReference(device, nominal_ms)
    if nominal_ms is not None:
        return ref
    ident = {"device": device_name(device), "threads": torch.get_num_threads(), "torch": torch.__version__,
             "module": SpeedReference.description}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cfg.cache_dir) / f"speed-reference-{digest}.json"
    if path.is_file():
        data = read_json(path, what="speed reference")
        if isinstance(data, dict) and isinstance(data.get("nominal_ms"), (int, float)) and data["nominal_ms"] > 0:
            ref.nominal_ms = float(data["nominal_ms"])
            return ref

    def keep(nominal: float) -> None:  # calibrated on first use: a job that never measures pays nothing
        atomic_write_json(path, {**ident, "nominal_ms": nominal, "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        log.info("speed reference calibrated: %.3f ms (%s)", nominal, path)

    ref.on_calibrated = keep
    return ref


def current_provenance(cfg: LatencyConfig, backend: LatencyBackend, spec: SpaceSpec,
                       stem_widths: tuple[float, ...], head_widths: tuple[float, ...]) -> dict[str, Any]:
    """The conditions a table measured now would carry."""
    prov = dict(backend.provenance())
    prov["normalised"] = prov.get("speed_reference") is not None
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
    if getattr(backend, "reference", None) is not None and path.is_file() and not cfg.table:
        old = LatencyTable.load(path).provenance.get("speed_reference") or {}
        if isinstance(old.get("nominal_ms"), (int, float)):  # resume a table at its own nominal speed
            backend.reference.nominal_ms = float(old["nominal_ms"])
            prov["speed_reference"] = backend.reference.provenance()
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


def prepare_table(cfg: Any, spec: SpaceSpec, device: str | torch.device = "cpu",
                  out: str | Path | None = None) -> tuple[LatencyTable, dict[str, Any] | None]:
    """What `nas latency build` does: measure (or resume) the table of `cfg.latency` for the student widths of
    `cfg.space`, save a copy to `out` if given, and fit its whole-network correction once (`latency.calibrate`
    random networks). Returns the table and the correction fitted now (None when there was nothing to fit)."""
    from nas.latency.validate import calibration_seed, fit_correction, random_networks

    stems, heads = (cfg.space.student_stem_width, 1.0), (cfg.space.student_head_width, 1.0)
    table = open_table(replace(cfg.latency, table=None), spec, stems, heads, device=device)
    if out:
        table.save(out)
    corr = None
    if cfg.latency.calibrate > 0 and table.correction is None:
        backend = backend_for_table(cfg.latency, table, device)
        archs = random_networks(spec, cfg.latency.calibrate, seed=calibration_seed(cfg.latency),
                                stem_width=stems[0], head_width=heads[0])
        shape = (cfg.latency.batch, 3, *cfg.latency.input_hw)
        corr = fit_correction(table, archs, backend, shape, rounds=cfg.latency.validate_rounds)
        table.save()
    return table, corr
