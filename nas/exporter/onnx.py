"""ONNX export with the legacy (TorchScript-based) exporter: input "image", output "logits", dynamic batch axis.

The dynamo exporter needs onnxscript, which the `onnx` extra does not install, so `dynamo=False`. Height and
width stay those of the example unless `dynamic_hw` (then the traced shape arithmetic follows the input). The
model is checked with `onnx.checker` before the file is written (atomically); onnx and onnxruntime are optional
and imported only here, with an error that names the extra.
"""

from __future__ import annotations

import io
import logging
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from nas.errors import UserError
from nas.exporter.torchscript import Artifact, _first_line, logits_only
from nas.io import atomic_write_bytes

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "require_onnx", "require_onnxruntime", "export_onnx", "onnx_session"]

log = logging.getLogger(__name__)

INPUT_NAME = "image"
OUTPUT_NAME = "logits"
_EXTRA = "pip install '.[onnx]'"


def require_onnx() -> Any:
    """The `onnx` module, or a UserError naming the extra that provides it."""
    try:
        import onnx
    except ImportError:
        raise UserError(f"ONNX export needs the 'onnx' extra (onnx is not installed): {_EXTRA}") from None
    return onnx


def require_onnxruntime() -> Any:
    """The `onnxruntime` module, or a UserError naming the extra that provides it."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError(f"checking an ONNX export needs the 'onnx' extra (onnxruntime is not installed): "
                        f"{_EXTRA}") from None
    return onnxruntime


def export_onnx(model: nn.Module, example: torch.Tensor, path: str | Path, opset: int = 17,
                dynamic_hw: bool = False) -> Artifact:
    """Export the logits of `model` at `example`'s size `[B, 3, H, W]` (any batch; any height and width too with
    `dynamic_hw`) to `path`, checked by onnx."""
    onnx = require_onnx()
    wrapper = logits_only(model)
    buf = io.BytesIO()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                wrapper, (example,), buf, dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_axes=_dynamic_axes(dynamic_hw),
            )
    except Exception as exc:  # the exporter raises many types for unsupported ops or opsets
        raise UserError(f"ONNX export (opset {opset}) failed: {_first_line(exc)}") from None
    data = buf.getvalue()
    try:
        onnx.checker.check_model(onnx.load_from_string(data), full_check=True)
    except Exception as exc:
        raise UserError(f"the exported ONNX model does not pass onnx.checker: {_first_line(exc)}") from None
    method = f"onnx-legacy-opset{opset}" + ("-dynamic-hw" if dynamic_hw else "")
    return Artifact("onnx", atomic_write_bytes(path, data), method)


def _dynamic_axes(dynamic_hw: bool) -> dict[str, dict[int, str]]:
    axes = {0: "batch", 2: "height", 3: "width"} if dynamic_hw else {0: "batch"}
    return {INPUT_NAME: dict(axes), OUTPUT_NAME: dict(axes)}


def onnx_session(path: str | Path, threads: int = 0) -> Any:
    """An ONNX Runtime CPU session for an exported file; `threads` > 0 fixes the intra-op threads."""
    ort = require_onnxruntime()
    opts = ort.SessionOptions()
    if threads > 0:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise UserError(f"ONNX Runtime cannot load {path}: {_first_line(exc)}") from None
