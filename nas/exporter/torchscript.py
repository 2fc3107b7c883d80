"""TorchScript export: the eval-mode network behind a logits-only wrapper, scripted (traced if scripting fails).

Scripting keeps the network's Python control flow, so the file runs at any input size; tracing records one
path for the example's shape and is only the fallback. Either way the file is written atomically and then
compared with the eager model (:mod:`nas.exporter.verify`).
"""

from __future__ import annotations

import io
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from nas.errors import UserError
from nas.io import atomic_write_bytes

__all__ = ["Artifact", "logits_only", "export_torchscript", "load_torchscript"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Artifact:
    """One exported file: its format (`torchscript`, `onnx`, `json`), where it is, and how it was made."""

    format: str
    path: Path
    method: str  # script | trace | onnx-legacy-opsetN | json


def logits_only(model: nn.Module) -> nn.Module:
    """`[B, 3, H, W]` → logits `[B, K, H, W]`: the deployable form of a network that returns a dict of outputs.

    Both the model and the wrapper are put in eval mode first: the wrapper mirrors its model's mode, and an
    export of a training-mode network would bake in batch statistics and the auxiliary heads.
    """
    from search_spaces.builder import InferenceWrapper

    model.eval()
    return InferenceWrapper(model).eval()  # type: ignore[arg-type]  # any net returning {"logits": ...}


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:200]


def _compile(wrapper: nn.Module, example: torch.Tensor) -> tuple[torch.jit.ScriptModule, str]:
    try:
        return torch.jit.script(wrapper), "script"
    except Exception as exc:  # the TorchScript compiler raises many types for unsupported Python
        log.info("torch.jit.script failed (%s); tracing at input %s instead", _first_line(exc),
                 "x".join(str(s) for s in example.shape))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return torch.jit.trace(wrapper, (example,)), "trace"


def export_torchscript(model: nn.Module, example: torch.Tensor, path: str | Path) -> Artifact:
    """Script (or, failing that, trace at `example` `[B, 3, H, W]`) the logits of `model` and save it to `path`."""
    wrapper = logits_only(model)
    try:
        module, method = _compile(wrapper, example)
    except Exception as exc:
        raise UserError(f"TorchScript export failed: {_first_line(exc)}") from None
    buf = io.BytesIO()
    torch.jit.save(module, buf)
    return Artifact("torchscript", atomic_write_bytes(path, buf.getvalue()), method)


def load_torchscript(path: str | Path) -> torch.jit.ScriptModule:
    """Load an exported TorchScript file on the CPU, in eval mode."""
    try:
        return torch.jit.load(str(path), map_location="cpu").eval()
    except Exception as exc:
        raise UserError(f"cannot load TorchScript file {path}: {_first_line(exc)}") from None
