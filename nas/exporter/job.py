"""The export job: a model file → TorchScript / ONNX / architecture JSON, each checked against eager and timed.

Writes `model.ts`, `model.onnx` and `model.arch.json` (the formats asked for) into the output folder (default:
`export/` beside the model file), then `export_report.json`: per format the max |exported − eager| on the logits
and the tolerance, the CPU latency of each backend, the input size, versions and the resolved config. The input
size defaults to the one the model file records, which for a searched student is the size its latency was
priced at. With `dynamic` the ONNX graph takes any height and width (multiples of the network's stride) and is
checked against eager at a second size too.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nas.config import parse_hw
from nas.errors import UserError

__all__ = ["REPORT_NAME", "ExportResult", "run_export", "resolve_input_hw", "print_export_table"]

log = logging.getLogger(__name__)

REPORT_NAME = "export_report.json"


@dataclass(frozen=True)
class ExportResult:
    """What an export wrote: the report (also as a dict) and each format's file."""

    out_dir: Path
    report_path: Path
    report: dict[str, Any]
    files: dict[str, Path]


def _stride(info: dict[str, Any]) -> int:
    """The input size must be a multiple of the network's coarsest scale."""
    if info.get("model_kind") == "segnet":
        return int(max(info["arch"]["space"]["scales"]))
    return 32


def resolve_input_hw(flag: str | tuple[int, int] | None, configured: tuple[int, int], info: dict[str, Any],
                     fallback: tuple[int, int]) -> tuple[int, int]:
    """An explicit size (`HxW` text or a pair), else a configured one, else the model file's, else `fallback`;
    it must be a multiple of the network's stride."""
    if flag:
        hw = parse_hw(flag) if isinstance(flag, str) else (int(flag[0]), int(flag[1]))
    elif min(configured) > 0:
        hw = (int(configured[0]), int(configured[1]))
    elif len(info.get("input_hw") or ()) == 2 and min(info["input_hw"]) > 0:
        hw = (int(info["input_hw"][0]), int(info["input_hw"][1]))
    else:
        hw = (int(fallback[0]), int(fallback[1]))
    s = _stride(info)
    if min(hw) <= 0 or hw[0] % s or hw[1] % s:
        raise UserError(f"input size {hw[0]}x{hw[1]} is not a positive multiple of {s}, the network's coarsest stride")
    return hw


def _formats(requested: list[str] | tuple[str, ...]) -> list[str]:
    from nas.exporter import FORMATS

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


def run_export(cfg: Any, checkpoint: str | Path, formats: list[str] | tuple[str, ...] | None = None,
               out: str | Path | None = None, input_hw: str | tuple[int, int] | None = None,
               dynamic: bool | None = None) -> ExportResult:
    """Export the model file `checkpoint` as `cfg.export` says (arguments given here win); every input is
    checked before anything is written."""
    from nas.exporter import check_inputs, measure_latencies, require_onnx, require_onnxruntime
    from nas.io import atomic_write_json
    from nas.models import open_model_file

    ec = cfg.export
    formats = _formats(formats or ec.formats)
    dynamic = ec.dynamic if dynamic is None else dynamic
    if min(ec.atol, ec.rtol, ec.warmup, ec.threads) < 0 or ec.repeats < 1:
        raise UserError("export.atol, export.rtol, export.warmup and export.threads must be ≥ 0 and export.repeats ≥ 1")
    if "onnx" in formats:
        require_onnx()
        require_onnxruntime()
    if cfg.run.device not in ("auto", "cpu"):
        log.info("export, its checks and its latencies run on the CPU; run.device=%s is not used", cfg.run.device)
    model, info = open_model_file(checkpoint)
    hw = resolve_input_hw(input_hw, ec.input_hw, info, cfg.data.image_size)
    out_dir = Path(out) if out else Path(checkpoint).parent / "export"
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the output folder {out_dir}: {exc.strerror or exc}") from None

    inputs = check_inputs(hw, cfg.data, ec.real_images, seed=cfg.run.seed)
    second = None
    if dynamic:
        s = _stride(info)
        second = check_inputs((hw[0] + s, hw[1] + 2 * s), None, 0, seed=cfg.run.seed + 1)
    rows, runnable, files = _write_and_check(model, info, formats, out_dir, inputs, hw, ec, second)
    latency = None
    if ec.measure_latency:
        latency = measure_latencies(model, runnable, hw, threads=ec.threads, warmup=ec.warmup, repeats=ec.repeats)
    report = _report(checkpoint, model, info, hw, inputs, rows, latency, cfg, dynamic)
    report_path = atomic_write_json(out_dir / REPORT_NAME, report)
    return ExportResult(out_dir, report_path, report, files)


def _write_and_check(model: Any, info: dict[str, Any], formats: list[str], out: Path, inputs: dict[str, Any],
                     hw: tuple[int, int], ec: Any, second: dict[str, Any] | None
                     ) -> tuple[dict[str, dict[str, Any]], list[Any], dict[str, Path]]:
    """Write each format; compare each runnable one with eager (a mismatch removes it and raises)."""
    from nas.exporter import FILE_NAMES, export_json, export_onnx, export_torchscript, verify_artifact
    from search_spaces.complexity import count_params

    example = inputs["random"][:1]
    rows: dict[str, dict[str, Any]] = {}
    runnable, files = [], {}
    for fmt in formats:
        path = out / FILE_NAMES[fmt]
        if fmt == "json" and info.get("model_kind") != "segnet":
            rows[fmt] = {"skipped": f"a {info.get('model_kind')} model file has no searched architecture"}
            continue
        try:
            if fmt == "torchscript":
                artifact = export_torchscript(model, example, path)
            elif fmt == "onnx":
                artifact = export_onnx(model, example, path, opset=ec.opset, dynamic_hw=second is not None)
            else:
                artifact = export_json(info, path, params=count_params(model), input_hw=hw)
        except OSError as exc:
            raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
        row: dict[str, Any] = {"file": path.name, "method": artifact.method}
        if fmt != "json":
            check = verify_artifact(artifact, model, inputs, ec.atol, threads=ec.threads, rtol=ec.rtol)
            row.update(max_abs_diff=check.max_abs_diff, atol=check.atol, rtol=check.rtol,
                       tolerance=check.tolerance, diffs=check.diffs, logit_scale=check.logit_scale)
            if fmt == "onnx" and second is not None:
                other = verify_artifact(artifact, model, second, ec.atol, threads=ec.threads, rtol=ec.rtol)
                size = "x".join(str(v) for v in second["random"].shape[-2:])
                row.update(dynamic_hw=True, second_size=size, second_max_abs_diff=other.max_abs_diff)
            runnable.append(artifact)
        rows[fmt] = row
        files[fmt] = path
    return rows, runnable, files


def _report(checkpoint: str | Path, model: Any, info: dict[str, Any], hw: tuple[int, int], inputs: dict[str, Any],
            rows: dict[str, dict[str, Any]], latency: dict[str, float] | None, cfg: Any,
            dynamic: bool) -> dict[str, Any]:
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
        "dynamic_hw": bool(dynamic),
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


def print_export_table(result: ExportResult) -> None:
    """One line per format: file, method, max |diff| against eager, tolerance and latency."""
    rows, lat = result.report["formats"], result.report["latency_ms"] or {}
    backend = {"torchscript": "torchscript", "onnx": "onnxruntime"}

    def ms(key: str) -> str:
        return f"{lat[key]:.3f} ms" if key in lat else "-"

    print(f"{'format':<12} {'file':<16} {'method':<18} {'max|diff|':>10} {'allowed':>8} {'latency':>11}")
    print(f"{'eager':<12} {'-':<16} {'torch':<18} {'-':>10} {'-':>8} {ms('torch_eager'):>11}")
    for fmt, row in rows.items():
        if "skipped" in row:
            print(f"{fmt:<12} skipped: {row['skipped']}")
            continue
        diff = f"{row['max_abs_diff']:.3g}" if "max_abs_diff" in row else "-"
        atol = f"{row['tolerance']:.2g}" if "tolerance" in row else "-"
        print(f"{fmt:<12} {row['file']:<16} {row['method']:<18} {diff:>10} {atol:>8} {ms(backend.get(fmt, '')):>11}")
        if row.get("dynamic_hw"):
            print(f"{'':<12} dynamic height/width: at {row['second_size']} max|diff| {row['second_max_abs_diff']:.3g}")
    print(f"report: {result.report_path}")
