"""Deployable model files: the weights plus what is needed to rebuild the network (never pickled code).

A model file (`model.pt`) is a plain dict loaded with `weights_only=True`:
``{"format": "nas-model", "version": 1, "model_kind": "segnet" | "hrnet" | "baseline",
"arch": <architecture JSON dict> | None, "hrnet": {"preset": str} | None,
"baseline": {"family": str, "width": float, "depth": float} | None, "num_classes": K, "class_names": [...],
"palette": [...], "input_hw": [H, W], "state_dict": {...}, "meta": {...}}``. Training-time modules (auxiliary heads, tutors,
peers, discriminators) are never in it: export and latency see only the deployable network. Files written before
the ``baseline`` field existed lack it and load as they did.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from nas.errors import UserError
from nas.io import load_checkpoint, save_checkpoint

__all__ = ["MODEL_FORMAT", "save_model", "load_model", "open_model_file", "build_model"]

MODEL_FORMAT = "nas-model"
_VERSION = 1


def build_model(model_kind: str, arch: dict[str, Any] | None, hrnet: dict[str, Any] | None, num_classes: int,
                aux_heads: bool = False, baseline: dict[str, Any] | None = None) -> nn.Module:
    """Rebuild the network a model file describes (random weights); `baseline` describes a ``baseline`` kind."""
    if model_kind == "segnet":
        from search_spaces.arch import Architecture
        from search_spaces.builder import build_network

        if arch is None:
            raise UserError("the model file has no architecture")
        return build_network(Architecture.from_dict(arch), aux_heads=aux_heads)
    if model_kind == "hrnet":
        from search_spaces.hrnet import build_hrnet

        return build_hrnet((hrnet or {}).get("preset", "w18_small"), num_classes)
    if model_kind == "baseline":
        from search_spaces.baselines import build_baseline

        if not isinstance(baseline, dict):
            raise UserError("the model file has no baseline description (family, width, depth)")
        return build_baseline(baseline["family"], num_classes, width=baseline.get("width", 1.0),
                              depth=baseline.get("depth", 1.0), aux_heads=aux_heads)
    raise UserError(f"unknown model kind {model_kind!r} in the model file")


def _deployable_state(model: nn.Module) -> dict[str, Any]:
    """State dict without auxiliary heads (training only)."""
    return {k: v for k, v in model.state_dict().items() if not k.startswith("aux")}


def save_model(path: str | Path, model: nn.Module, model_kind: str, num_classes: int,
               arch: dict[str, Any] | None = None, hrnet: dict[str, Any] | None = None,
               class_names: tuple[str, ...] | list[str] = (), palette: Any = (),
               input_hw: tuple[int, int] | list[int] = (0, 0), meta: dict[str, Any] | None = None,
               baseline: dict[str, Any] | None = None) -> Path:
    """Write a deployable model file atomically; `baseline` ({"family", "width", "depth"}) describes a
    ``baseline`` kind."""
    return save_checkpoint(path, {
        "format": MODEL_FORMAT,
        "version": _VERSION,
        "model_kind": model_kind,
        "arch": arch,
        "hrnet": hrnet,
        "baseline": baseline,
        "num_classes": int(num_classes),
        "class_names": list(class_names),
        "palette": [list(c) for c in palette],
        "input_hw": list(input_hw),
        "state_dict": _deployable_state(model),
        "meta": dict(meta or {}),
    })


def load_model(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild and load a model file (eval mode); returns (model, the file's fields without the weights).

    A file of another format, or weights that do not fit the described network, is a one-line UserError.
    """
    state = load_checkpoint(path, map_location=map_location)
    if state.get("format") != MODEL_FORMAT:
        raise UserError(f"{path} is not a nas model file (a training checkpoint? use the run's model.pt)")
    if state.get("version") != _VERSION:
        raise UserError(f"{path} has model-file version {state.get('version')!r}, expected {_VERSION}")
    try:
        model = build_model(state["model_kind"], state.get("arch"), state.get("hrnet"), state["num_classes"],
                            baseline=state.get("baseline"))
    except (KeyError, ValueError, TypeError) as exc:
        raise UserError(f"{path} does not describe a network this nas can build: {exc}") from None
    try:
        model.load_state_dict(state["state_dict"], strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0][:200]
        raise UserError(f"the weights in {path} do not fit its architecture: {first}") from None
    info = {k: v for k, v in state.items() if k != "state_dict"}
    return model.eval(), info


def open_model_file(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """:func:`load_model` on the CPU, with any malformed field reported as a one-line UserError."""
    try:
        return load_model(path, map_location="cpu")
    except UserError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise UserError(f"{path} is not a valid model file: {type(exc).__name__}: {str(exc)[:200]}") from None
