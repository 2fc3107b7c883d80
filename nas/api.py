"""The Python API: the same jobs as the CLI, for notebooks and scripts.

    import nas
    model = nas.load_model("runs/quickstart/student/model.pt")   # eval mode, with .class_names and .input_hw
    labels = nas.predict(model, "scene.png")                    # HxW class indices
    result = nas.run("experiments/configs/quickstart.yaml")     # the whole pipeline, resumable
    print(result.val_miou, result.model_path)

Every job takes a config: an :class:`~nas.config.ExperimentConfig`, a YAML path, a dict of differences from the
defaults, or None (the defaults), plus optional ``overrides`` (``["train.epochs=3"]``, as ``--set``). Jobs resume
what an earlier call left unfinished. Mistakes raise :class:`~nas.errors.UserError` with a one-line message.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np

if TYPE_CHECKING:
    from torch import nn

    from nas.config import ExperimentConfig
    from nas.exporter.job import ExportResult
    from nas.pipeline import PipelineResult
    from nas.searcher.common import SearchResult
    from nas.trainer.loop import TrainResult

__all__ = ["load_config", "load_model", "predict", "search", "train", "export", "run"]

ConfigLike = Union["ExperimentConfig", str, Path, dict, None]


def load_config(cfg: ConfigLike = None, overrides: list[str] | tuple[str, ...] = ()) -> ExperimentConfig:
    """Resolve a config (object, YAML path, dict of differences or None) with ``--set``-style overrides, checked
    as the CLI checks it."""
    from nas.checks import check_config
    from nas.config import ExperimentConfig, apply_overrides, from_dict
    from nas.config import load_config as load_file

    if isinstance(cfg, ExperimentConfig):
        resolved = apply_overrides(cfg, list(overrides))
    elif isinstance(cfg, dict):
        resolved = apply_overrides(from_dict(ExperimentConfig, cfg), list(overrides))
    else:
        resolved = load_file(cfg, list(overrides))
    check_config(resolved)
    return resolved


def load_model(path: str | Path, device: str = "cpu") -> nn.Module:
    """A deployable model file (a run's ``model.pt``) as an eval-mode module. Attributes: ``class_names``,
    ``palette``, ``input_hw`` (the size it predicts at) and ``model_info`` (the file's other fields)."""
    from nas.device import resolve_device
    from nas.models import open_model_file

    model, info = open_model_file(path)
    model.class_names = tuple(info.get("class_names") or ())
    model.palette = [tuple(c) for c in info.get("palette") or ()]
    model.input_hw = tuple(int(v) for v in info.get("input_hw") or ()) or None
    model.model_info = info
    return model.to(resolve_device(device)).eval()


def predict(model: nn.Module, image: np.ndarray | str | Path, input_hw: tuple[int, int] | None = None) -> np.ndarray:
    """Class indices `int64 [H, W]` of an RGB image (`uint8 [H, W, 3]` or a PNG/JPG path) at its own size,
    predicted at `input_hw` (default: the model's ``input_hw``)."""
    from nas.errors import UserError
    from nas.inference import predict_image, read_image

    array = read_image(image) if isinstance(image, (str, Path)) else np.asarray(image)
    hw = input_hw or getattr(model, "input_hw", None)
    if not hw:
        raise UserError("the model records no input size: pass input_hw=(H, W)")
    device = next(model.parameters()).device
    return predict_image(model, array, tuple(hw), device)


def search(cfg: ConfigLike = None, overrides: list[str] | tuple[str, ...] = (), resume: bool | None = None,
           ) -> SearchResult:
    """The latency-constrained search in ``<run.root>/<run.name>``; `resume` None continues a checkpoint if
    there is one."""
    from nas.searcher.common import CHECKPOINT

    c = load_config(cfg, overrides)
    if resume is None:
        resume = (Path(c.run.root) / c.run.name / CHECKPOINT).is_file()
    from nas.searcher import run_strategy

    return run_strategy(c, resume=resume)


def train(cfg: ConfigLike = None, arch: str | Path | None = None, overrides: list[str] | tuple[str, ...] = (),
          resume: bool | None = None) -> TrainResult:
    """Retrain a student from `arch` (with the config's distillation) or train a teacher
    (``train.model=teacher``); `resume` None continues a checkpoint if there is one."""
    from nas.trainer.loop import CHECKPOINT, run_train, train_dir

    c = load_config(cfg, overrides)
    if resume is None:
        resume = (train_dir(c) / CHECKPOINT).is_file()
    return run_train(c, arch, resume=resume)


def export(checkpoint: str | Path, cfg: ConfigLike = None, overrides: list[str] | tuple[str, ...] = (),
           **options: Any) -> ExportResult:
    """Export a model file to TorchScript / ONNX / JSON, checked against eager; `options` are those of
    :func:`nas.exporter.job.run_export` (formats, out, input_hw, dynamic)."""
    from nas.exporter.job import run_export

    return run_export(load_config(cfg, overrides), checkpoint, **options)


def run(cfg: ConfigLike = None, overrides: list[str] | tuple[str, ...] = (), teacher: str | Path | None = None,
        from_stage: str | None = None) -> PipelineResult:
    """The whole pipeline (data → latency → search → teacher → student → export), skipping finished stages."""
    from nas.pipeline import run_pipeline

    return run_pipeline(load_config(cfg, overrides), teacher=str(teacher) if teacher else None, from_stage=from_stage)
