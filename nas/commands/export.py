"""`nas export`: a model file → TorchScript / ONNX / architecture JSON, each checked against eager and timed.

Writes `model.ts`, `model.onnx` and `model.arch.json` (the formats asked for) into `--out` (default: `export/`
beside the checkpoint), then `export_report.json`: per format the max |exported − eager| on the logits and the
tolerance, the CPU latency of each backend, the input size, versions and the resolved config.
"""

from __future__ import annotations

import argparse
import logging
import platform
import time
from pathlib import Path
from typing import Any

from nas.errors import UserError

__all__ = ["register", "open_model_file", "resolve_input_hw", "REPORT_NAME"]

log = logging.getLogger(__name__)

REPORT_NAME = "export_report.json"


def register(sub: argparse._SubParsersAction) -> None:
    from nas.cli import add_config_args
    from nas.export import FORMATS

    p = sub.add_parser("export", help="export a model file to TorchScript / ONNX / JSON, checked against eager")
    p.add_argument("--checkpoint", required=True, metavar="MODEL.pt", help="a deployable model file (a run's model.pt)")
    p.add_argument("--format", dest="formats", action="append", choices=FORMATS,
                   help="format to write (repeatable; default: export.formats, all three)")
    p.add_argument("--out", metavar="DIR", help="output folder (default: export/ beside the checkpoint)")
    p.add_argument("--input", metavar="HxW",
                   help="export and benchmark input size (default: export.input_hw, else the model file's)")
    add_config_args(p)
    p.set_defaults(func=_export)


def open_model_file(path: str | Path) -> tuple[Any, dict[str, Any]]:
    """`nas.models.load_model` on the CPU, with any malformed field reported as a one-line UserError."""
    from nas.models import load_model

    try:
        return load_model(path, map_location="cpu")
    except UserError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path} is not a valid model file: {type(exc).__name__}: {str(exc)[:200]}") from None


def _stride(info: dict[str, Any]) -> int:
    """The input size must be a multiple of the network's coarsest scale."""
    if info.get("model_kind") == "segnet":
        return int(max(info["arch"]["space"]["scales"]))
    return 32


def resolve_input_hw(flag: str | None, configured: tuple[int, int], info: dict[str, Any],
                     fallback: tuple[int, int]) -> tuple[int, int]:
    """--input, else a configured size, else the model file's, else `fallback`; a multiple of the stride."""
    from nas.commands.arch import parse_hw

    if flag:
        hw = parse_hw(flag)
    elif min(configured) > 0:
        hw = (int(configured[0]), int(configured[1]))
    elif len(info.get("input_hw") or ()) == 2 and min(info["input_hw"]) > 0:
        hw = (int(info["input_hw"][0]), int(info["input_hw"][1]))
    else:
        hw = (int(fallback[0]), int(fallback[1]))
    s = _stride(info)
    if hw[0] % s or hw[1] % s:
        raise UserError(f"input size {hw[0]}x{hw[1]} is not a multiple of {s}, the network's coarsest stride")
    return hw


def _formats(requested: list[str] | tuple[str, ...]) -> list[str]:
    from nas.export import FORMATS

    out: list[str] = []
    for f in requested:
        if f not in FORMATS:
            raise UserError(f"unknown export format {f!r} (known: {', '.join(FORMATS)})")
        if f not in out:
            out.append(f)
    if not out:
        raise UserError("no export format given (use --format torchscript|onnx|json)")
    return out


def _versions() -> dict[str, str | None]:
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from nas import __version__

    found: dict[str, str | None] = {"nas": __version__, "torch": torch.__version__,
                                    "python": platform.python_version()}
    for name in ("onnx", "onnxruntime"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            found[name] = None
    return found


def _export(args: argparse.Namespace) -> int:
    from nas.cli import config_from_args
    from nas.export import check_inputs, measure_latencies, require_onnx, require_onnxruntime
    from nas.io import atomic_write_json

    cfg = config_from_args(args)
    ec = cfg.export
    formats = _formats(args.formats or ec.formats)
    if ec.atol < 0 or ec.repeats < 1 or ec.warmup < 0 or ec.threads < 0:
        raise UserError("export.atol, export.warmup and export.threads must be ≥ 0 and export.repeats ≥ 1")
    if "onnx" in formats:
        require_onnx()
        require_onnxruntime()
    if cfg.run.device not in ("auto", "cpu"):
        log.info("export, its checks and its latencies run on the CPU; run.device=%s is not used", cfg.run.device)
    model, info = open_model_file(args.checkpoint)
    hw = resolve_input_hw(args.input, ec.input_hw, info, cfg.data.image_size)
    out = Path(args.out) if args.out else Path(args.checkpoint).parent / "export"
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output folder {out}: {exc.strerror or exc}") from None

    inputs = check_inputs(hw, cfg.data, ec.real_images, seed=cfg.run.seed)
    rows, runnable = _write_and_check(model, info, formats, out, inputs, hw, ec)
    latency = None
    if ec.measure_latency:
        latency = measure_latencies(model, runnable, hw, threads=ec.threads, warmup=ec.warmup, repeats=ec.repeats)
    report = _report(args.checkpoint, model, info, hw, inputs, rows, latency, cfg)
    report_path = atomic_write_json(out / REPORT_NAME, report)
    _print_table(rows, latency)
    print(f"report: {report_path}")
    return 0


def _write_and_check(model: Any, info: dict[str, Any], formats: list[str], out: Path, inputs: dict[str, Any],
                     hw: tuple[int, int], ec: Any) -> tuple[dict[str, dict[str, Any]], list[Any]]:
    """Write each format; compare each runnable one with eager (a mismatch removes it and raises)."""
    from nas.export import FILE_NAMES, export_json, export_onnx, export_torchscript, verify_artifact
    from search_spaces.complexity import count_params

    example = inputs["random"][:1]
    rows: dict[str, dict[str, Any]] = {}
    runnable = []
    for fmt in formats:
        path = out / FILE_NAMES[fmt]
        if fmt == "json" and info.get("model_kind") != "segnet":
            rows[fmt] = {"skipped": f"a {info.get('model_kind')} model file has no searched architecture"}
            continue
        try:
            if fmt == "torchscript":
                artifact = export_torchscript(model, example, path)
            elif fmt == "onnx":
                artifact = export_onnx(model, example, path, opset=ec.opset)
            else:
                artifact = export_json(info, path, params=count_params(model), input_hw=hw)
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
        row: dict[str, Any] = {"file": path.name, "method": artifact.method}
        if fmt != "json":
            check = verify_artifact(artifact, model, inputs, ec.atol, threads=ec.threads)
            row.update(max_abs_diff=check.max_abs_diff, atol=check.atol, diffs=check.diffs,
                       logit_scale=check.logit_scale)
            runnable.append(artifact)
        rows[fmt] = row
    return rows, runnable


def _report(checkpoint: str, model: Any, info: dict[str, Any], hw: tuple[int, int], inputs: dict[str, Any],
            rows: dict[str, dict[str, Any]], latency: dict[str, float] | None, cfg: Any) -> dict[str, Any]:
    """`export_report.json`: the checks, the latencies and what they were measured under, with provenance."""
    import torch

    from nas.config import config_hash, to_dict
    from nas.device import device_name
    from search_spaces.complexity import count_params

    ec = cfg.export
    return {
        "checkpoint": str(checkpoint),
        "model_kind": info.get("model_kind"),
        "num_classes": info.get("num_classes"),
        "params": count_params(model),
        "input_hw": list(hw),
        "atol": ec.atol,
        "check_inputs": {name: list(x.shape) for name, x in inputs.items()},
        "formats": rows,
        "latency_ms": latency,
        "latency_conditions": {"device": device_name(torch.device("cpu")), "batch": 1, "threads": ec.threads,
                               "warmup": ec.warmup, "repeats": ec.repeats, "statistic": "median"},
        "versions": _versions(),
        "seed": cfg.run.seed,
        "config_hash": config_hash(cfg),
        "config": to_dict(cfg),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _print_table(rows: dict[str, dict[str, Any]], latency: dict[str, float] | None) -> None:
    backend = {"torchscript": "torchscript", "onnx": "onnxruntime"}
    lat = latency or {}

    def ms(key: str) -> str:
        return f"{lat[key]:.3f} ms" if key in lat else "-"

    print(f"{'format':<12} {'file':<16} {'method':<18} {'max|diff|':>10} {'atol':>8} {'latency':>11}")
    print(f"{'eager':<12} {'-':<16} {'torch':<18} {'-':>10} {'-':>8} {ms('torch_eager'):>11}")
    for fmt, row in rows.items():
        if "skipped" in row:
            print(f"{fmt:<12} skipped: {row['skipped']}")
            continue
        diff = f"{row['max_abs_diff']:.3g}" if "max_abs_diff" in row else "-"
        atol = f"{row['atol']:g}" if "atol" in row else "-"
        print(f"{fmt:<12} {row['file']:<16} {row['method']:<18} {diff:>10} {atol:>8} {ms(backend.get(fmt, '')):>11}")
