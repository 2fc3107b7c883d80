"""Exporting a deployable model file (:mod:`nas.models`) to TorchScript, ONNX and architecture JSON.

Formats: ``torchscript`` (`model.ts`), ``onnx`` (`model.onnx`, needs the `onnx` extra) and ``json``
(`model.arch.json`, the searched architecture; HRNet teachers have none). Every file is written atomically
and every runnable one is compared with the eager model (:mod:`nas.exporter.verify`), so
no exported file is left that disagrees with the network it came from.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from nas.errors import UserError
from nas.exporter.onnx import export_onnx, onnx_session, require_onnx, require_onnxruntime
from nas.exporter.torchscript import Artifact, export_torchscript, load_torchscript, logits_only
from nas.exporter.verify import (
    Verification,
    artifact_runner,
    check_inputs,
    measure_latencies,
    verify_artifact,
)

__all__ = [
    "FORMATS",
    "FILE_NAMES",
    "Artifact",
    "Verification",
    "logits_only",
    "export_torchscript",
    "export_onnx",
    "export_json",
    "load_torchscript",
    "onnx_session",
    "require_onnx",
    "require_onnxruntime",
    "check_inputs",
    "artifact_runner",
    "verify_artifact",
    "measure_latencies",
]

FORMATS: tuple[str, ...] = ("torchscript", "onnx", "json")
FILE_NAMES: dict[str, str] = {"torchscript": "model.ts", "onnx": "model.onnx", "json": "model.arch.json"}


def export_json(model_info: dict[str, Any], path: str | Path, *, params: int | None = None,
                input_hw: tuple[int, int] | None = None) -> Artifact:
    """Write the model file's architecture as versioned JSON (readable by `load_architecture`), with the
    parameter count, input size and classes in its `meta`."""
    from search_spaces.arch import Architecture, save_architecture

    if model_info.get("model_kind") != "segnet" or model_info.get("arch") is None:
        raise UserError(f"JSON export needs a searched architecture; this {model_info.get('model_kind')} "
                        "model file has none")
    arch = Architecture.from_dict(model_info["arch"])
    meta: dict[str, Any] = {"class_names": list(model_info.get("class_names", []))}
    if params is not None:
        meta["params"] = int(params)
    hw = input_hw or tuple(model_info.get("input_hw") or ())
    if hw and min(hw) > 0:
        meta["input_hw"] = [int(hw[0]), int(hw[1])]
    return Artifact("json", save_architecture(arch.with_meta(**meta), path), "json")
