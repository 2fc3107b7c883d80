"""The `nas` command: one subcommand module per stage, each exposing `register(subparsers)`.

A user mistake (bad file, flag, config) raises :class:`~nas.errors.UserError`; `main` prints it as one line
and returns 2. Nothing is parsed or configured at import.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Sequence

from nas import __version__
from nas.errors import UserError

__all__ = ["main", "build_parser", "add_config_args"]

# Each module defines `register(subparsers)`; order is the order `nas --help` lists them.
COMMAND_MODULES = (
    "nas.commands.data",
    "nas.commands.arch",
    "nas.commands.latency",
    "nas.commands.search",
    "nas.commands.train",
    "nas.commands.export",
    "nas.commands.predict",
    "nas.commands.study",
    "nas.commands.run",
)


def add_config_args(parser: argparse.ArgumentParser) -> None:
    """The flags every job shares: `--config FILE`, repeated `--set key=value`, `--name`, `--device`."""
    parser.add_argument("--config", metavar="FILE", help="YAML file with differences from the defaults")
    parser.add_argument(
        "--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
        help="override one config key, e.g. --set data.batch_size=4 (repeatable)",
    )
    parser.add_argument("--name", help="run directory name (shortcut for --set run.name=...)")
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N (shortcut for --set run.device=...)")


def config_from_args(args: argparse.Namespace):  # -> ExperimentConfig
    """Resolve defaults ← --config ← --set ← --name/--device."""
    from nas.config import load_config

    overrides = list(args.overrides)
    if getattr(args, "name", None):
        overrides.append(f"run.name={args.name}")
    if getattr(args, "device", None):
        overrides.append(f"run.device={args.device}")
    from nas.checks import check_config

    cfg = load_config(args.config, overrides)
    check_config(cfg)
    return cfg


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nas",
        description="Latency-aware architecture search for real-time semantic segmentation, with distillation.",
    )
    parser.add_argument("--version", action="version", version=f"nas {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def _setup_logging(verbose: bool, quiet: bool) -> None:
    level = logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO
    console = logging.StreamHandler()
    console.setLevel(level)  # a run's log file lowers the root level to INFO; the console keeps -q / -v
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S",
                        handlers=[console])
    logging.getLogger().setLevel(level)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `nas` console script; returns the exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed a one-line usage error
        return 2 if exc.code not in (0, None) else 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _setup_logging(args.verbose, args.quiet)
    try:
        result = args.func(args)
    except UserError as exc:
        print(f"nas {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"nas {args.command}: interrupted", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
