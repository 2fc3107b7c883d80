"""`nas latency build | show | validate`: per-device latency tables and their validation."""

from __future__ import annotations

import argparse
import logging
from dataclasses import replace
from pathlib import Path

import pandas as pd

from nas.errors import UserError

__all__ = ["register"]

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> None:
    from nas.cli import add_config_args

    p = sub.add_parser("latency", help="build, inspect and validate latency lookup tables")
    lsub = p.add_subparsers(dest="latency_command", metavar="ACTION", required=True)

    b = lsub.add_parser("build", help="measure every unit the search space can instantiate (cached, resumable)")
    add_config_args(b)
    b.add_argument("--out", help="write the table here instead of the per-device cache")
    b.set_defaults(func=_build)

    s = lsub.add_parser("show", help="summarise a table: provenance, entries, slowest units")
    s.add_argument("table", help="latency table JSON")
    s.add_argument("--top", type=int, default=10, help="how many of the slowest units to list")
    s.set_defaults(func=_show)

    v = lsub.add_parser("validate", help="predict and measure random derived networks; report the agreement")
    add_config_args(v)
    v.add_argument("--out", help="folder for the CSV and the scatter PNG (default: the run directory)")
    v.set_defaults(func=_validate)


def _setup(args: argparse.Namespace):
    from nas.cli import config_from_args
    from nas.data import dataset_info
    from nas.device import resolve_device
    from search_spaces.registry import space_from_config

    cfg = config_from_args(args)
    if getattr(args, "out", None) and args.latency_command == "build":
        cfg = replace(cfg, latency=replace(cfg.latency, table=None, cache_dir=str(Path(args.out).parent)))
    spec = space_from_config(cfg.space, dataset_info(cfg.data).num_classes)
    device = resolve_device(cfg.run.device)
    return cfg, spec, device


def _widths(cfg) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return (cfg.space.student_stem_width, 1.0), (cfg.space.student_head_width, 1.0)


def _build(args: argparse.Namespace) -> int:
    from nas.latency.cache import prepare_table

    cfg, spec, device = _setup(args)
    table, corr = prepare_table(cfg, spec, device, out=args.out)
    if corr is not None:
        print(f"correction fitted on {corr['n']} networks: measured ≈ {corr['scale']:.3f} · sum + {corr['offset_ms']:.2f} ms")
    print(f"latency table: {table.path} ({len(table.entries)} entries)")
    return 0


def _show(args: argparse.Namespace) -> int:
    from nas.latency.table import LatencyTable

    table = LatencyTable.load(args.table)
    print(f"latency table {args.table}")
    for k, v in table.provenance.items():
        print(f"  {k}: {v}")
    print(f"  entries: {len(table.entries)}")
    if table.correction:
        c = table.correction
        print(f"  correction: measured ≈ {c['scale']:.3f} · sum + {c['offset_ms']:.2f} ms (fitted on {c.get('n')} networks)")
    kinds: dict[str, list[float]] = {}
    for key, ms in table.entries.items():
        kinds.setdefault(key.split(":", 1)[0], []).append(ms)
    for kind, vals in sorted(kinds.items()):
        print(f"  {kind:7s} {len(vals):5d} entries, {min(vals):8.3f} – {max(vals):8.3f} ms")
    print(f"slowest {args.top}:")
    for key, ms in table.slowest(args.top):
        print(f"  {ms:9.3f} ms  {key}")
    return 0


def _validate(args: argparse.Namespace) -> int:
    from nas.io import RunDir, atomic_write_text
    from nas.latency.cache import backend_for_table, open_table
    from nas.latency.validate import calibration_seed, plot_scatter, random_networks, validate

    cfg, spec, device = _setup(args)
    stems, heads = _widths(cfg)
    table = open_table(cfg.latency, spec, stems, heads, device=device, build=False)
    if cfg.latency.table is None and table.correction is None and cfg.latency.calibrate > 0:
        raise UserError("this table has no fitted correction yet: run `nas latency build` first")
    backend = backend_for_table(cfg.latency, table, device)
    n = cfg.latency.validate_n
    if n < 2:
        raise UserError(f"latency.validate_n must be at least 2, got {n}")
    archs = random_networks(spec, n, seed=cfg.latency.validate_seed, stem_width=stems[0], head_width=heads[0])
    calibration = random_networks(spec, cfg.latency.calibrate, seed=calibration_seed(cfg.latency),
                                  stem_width=stems[0], head_width=heads[0]) if cfg.latency.calibrate >= 2 else []
    shape = (cfg.latency.batch, 3, *cfg.latency.input_hw)
    report = validate(table, archs, backend, shape, rounds=cfg.latency.validate_rounds, calibration=calibration)
    out = Path(args.out) if args.out else RunDir.create(cfg).path
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "latency_validation.csv", pd.DataFrame(report.rows()).to_csv(index=False))
    plot_scatter(report, out / "latency_validation.png",
                 title=f"{table.provenance.get('device')} · {table.provenance.get('backend')}\n{report.summary()}")
    print(report.summary())
    print(f"wrote {out / 'latency_validation.csv'} and {out / 'latency_validation.png'}")
    return 0
