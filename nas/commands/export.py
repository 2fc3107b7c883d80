"""`nas export`: a model file → TorchScript / ONNX / architecture JSON, each checked against eager and timed.

Writes `model.ts`, `model.onnx` and `model.arch.json` (the formats asked for) into `--out` (default: `export/`
beside the checkpoint), then `export_report.json`: per format the max |exported − eager| on the logits and the
tolerance, the CPU latency of each backend, the input size, versions and the resolved config.
"""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:
    from nas.cli import add_config_args
    from nas.exporter import FORMATS

    p = sub.add_parser("export", help="export a model file to TorchScript / ONNX / JSON, checked against eager")
    p.add_argument("--checkpoint", required=True, metavar="MODEL.pt", help="a deployable model file (a run's model.pt)")
    p.add_argument("--format", dest="formats", action="append", choices=FORMATS,
                   help="format to write (repeatable; default: export.formats, all three)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: export/ beside the checkpoint)")
    p.add_argument("--input", metavar="HxW",
                   help="export and benchmark input size (default: export.input_hw, else the model file's: "
                        "the size a searched student's latency was priced at)")
    p.add_argument("--dynamic", action="store_true", default=None,
                   help="ONNX with dynamic height and width, checked against eager at a second size (export.dynamic)")
    add_config_args(p)
    p.set_defaults(func=_export)


def _export(args: argparse.Namespace) -> int:
    from nas.cli import config_from_args
    from nas.exporter.job import print_export_table, run_export

    cfg = config_from_args(args)
    result = run_export(cfg, args.checkpoint, formats=args.formats, out=args.out, input_hw=args.input,
                        dynamic=args.dynamic)
    print_export_table(result)
    return 0
