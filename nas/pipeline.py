"""The whole job as one resumable pipeline: data → latency table → search → teacher → student → export.

Each stage records in ``<run>/pipeline.json`` that it finished and what it produced; a later run skips every
stage whose record is there and whose outputs still exist, resumes an interrupted one from its checkpoint, and
``from_stage`` redoes a stage and everything after it (earlier outputs of those stages are moved to
``<run>/previous/<time>/``, never deleted). The run folder is locked for the duration (:mod:`nas.lock`).

Stages:

* ``data``: digit scenes are generated (or loaded from their cache); a dataset read from disk is checked.
* ``latency``: the latency table of this machine for the space's units, with its whole-network correction.
* ``search``: the latency-constrained search → ``student.arch.json``.
* ``teacher``: the teacher model file: ``distill.teacher`` (checked against the dataset) when given, else an
  HRNet (``train.hrnet_preset``) trained in ``<run>/teacher``; skipped when no KD loss is configured.
* ``student``: the searched student retrained with the KD losses from that teacher → ``student/model.pt``.
* ``export``: TorchScript / ONNX / JSON of the student at its latency input size, checked against eager.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nas.config import ExperimentConfig, config_hash
from nas.errors import UserError
from nas.io import atomic_write_json

__all__ = ["STAGES", "PipelineResult", "run_pipeline", "summary_lines"]

log = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("data", "latency", "search", "teacher", "student", "export")
STATE_NAME = "pipeline.json"


@dataclass
class PipelineResult:
    """Where every artifact of a pipeline run is, and its headline figures."""

    run_dir: Path
    ran: list[str] = field(default_factory=list)  # stages run now
    skipped: list[str] = field(default_factory=list)  # stages already done
    outputs: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage → what it recorded

    @property
    def model_path(self) -> Path | None:
        out = self.outputs.get("student", {}).get("model")
        return Path(out) if out else None

    @property
    def val_miou(self) -> float | None:
        return self.outputs.get("student", {}).get("val_miou")


def _state_path(run: Path) -> Path:
    return run / STATE_NAME


def _read_state(run: Path) -> dict[str, Any]:
    path = _state_path(run)
    if not path.is_file():
        return {}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("%s is unreadable: every stage is checked again", path)
        return {}
    return state if isinstance(state, dict) else {}


def _done(state: dict[str, Any], stage: str) -> dict[str, Any] | None:
    """The record of a finished stage whose files all still exist, else None."""
    record = state.get("stages", {}).get(stage)
    if not isinstance(record, dict):
        return None
    files = [v for k, v in record.items() if k in ("model", "arch", "table", "report", "scores") and v]
    return record if all(Path(f).is_file() for f in files) else None


def _move_aside(run: Path, paths: list[Path]) -> None:
    """Move earlier outputs of stages being redone to ``<run>/previous/<time>/`` (never delete work)."""
    existing = [p for p in paths if p.exists()]
    if not existing:
        return
    dest = run / "previous" / time.strftime("%Y%m%d-%H%M%S")
    dest.mkdir(parents=True, exist_ok=True)
    for p in existing:
        shutil.move(str(p), str(dest / p.name))
    log.info("earlier outputs moved to %s", dest)


def _stage_paths(run: Path, stage: str) -> list[Path]:
    """What a stage writes into the run folder (moved aside when it is redone)."""
    return {
        "search": [run / n for n in ("search.ckpt", "student.arch.json", "teacher.arch.json", "metrics.csv",
                                     "arch_evolution.png", "student_trellis.png", "teacher_trellis.png",
                                     "evolution.json", "halving")] + sorted(run.glob("student_*ms.arch.json")),
        "teacher": [run / "teacher"],
        "student": [run / "student"],
        "export": [run / "student" / "export"],
    }.get(stage, [])


def _check_before_work(cfg: ExperimentConfig, teacher: str | None) -> None:
    """Every check that needs no data and no training, so a mistake is refused before anything is written."""
    from nas.trainer.loop import check_train_config
    from search_spaces.hrnet import HRNET_PRESETS

    if cfg.search.latency_target_ms <= 0:
        log.warning("search.latency_target_ms is 0: the search runs without a latency constraint")
    if cfg.distill.losses and not teacher and cfg.train.hrnet_preset not in HRNET_PRESETS:
        raise UserError(f"no teacher to distil from: set distill.teacher, or train.hrnet_preset to one of "
                        f"{', '.join(HRNET_PRESETS)} to train one")
    if teacher and not Path(teacher).is_file():
        raise UserError(f"teacher model file not found: {teacher}")
    check_train_config(replace(cfg, train=replace(cfg.train, model="student")))


def run_pipeline(cfg: ExperimentConfig, teacher: str | None = None, from_stage: str | None = None,
                 teacher_epochs: int | None = None) -> PipelineResult:
    """Run every unfinished stage of the pipeline in ``<run.root>/<run.name>``; see the module docstring.

    `teacher` (a model file) overrides ``distill.teacher``; `teacher_epochs` the epochs of a teacher trained
    here (default ``train.epochs``); `from_stage` redoes that stage and the ones after it.
    """
    from nas.lock import RunLock

    if from_stage is not None and from_stage not in STAGES:
        raise UserError(f"unknown stage {from_stage!r} (stages: {', '.join(STAGES)})")
    teacher = teacher or cfg.distill.teacher
    _check_before_work(cfg, teacher)
    run = Path(cfg.run.root) / cfg.run.name
    result = PipelineResult(run)
    with RunLock(run, "nas run"):
        state = _read_state(run)
        state.setdefault("stages", {})
        if from_stage is not None:
            redo = STAGES[STAGES.index(from_stage):]
            _move_aside(run, [p for s in redo for p in _stage_paths(run, s)])
            for s in redo:
                state["stages"].pop(s, None)
        state["config_hash"] = config_hash(cfg)
        for stage in STAGES:
            record = _done(state, stage)
            if record is not None:
                result.skipped.append(stage)
                result.outputs[stage] = record
                log.info("stage %s: done before, skipped", stage)
                continue
            log.info("stage %s", stage)
            t0 = time.perf_counter()
            record = _RUNNERS[stage](cfg, run, result.outputs, teacher, teacher_epochs)
            record["seconds"] = round(time.perf_counter() - t0, 1)
            result.outputs[stage] = record
            result.ran.append(stage)
            state["stages"][stage] = record
            atomic_write_json(_state_path(run), state)
    return result


# --------------------------------------------------------------------------- stages


def _data(cfg: ExperimentConfig, run: Path, outputs: dict, teacher: str | None, epochs: int | None) -> dict:
    from nas.data import build_dataset, dataset_info

    info = dataset_info(cfg.data)
    counts = {split: len(build_dataset(cfg.data, split, augment=False)) for split in info.splits}
    for split, n in counts.items():
        if n == 0:
            raise UserError(f"the {split} split of {info.name} is empty")
    return {"dataset": info.name, "classes": info.num_classes, "images": counts}


def _latency(cfg: ExperimentConfig, run: Path, outputs: dict, teacher: str | None, epochs: int | None) -> dict:
    from nas.data import dataset_info
    from nas.device import resolve_device
    from nas.latency.cache import prepare_table
    from search_spaces.registry import space_from_config

    if cfg.search.latency_target_ms <= 0:
        return {"table": None, "skipped": "no latency target"}
    spec = space_from_config(cfg.space, dataset_info(cfg.data).num_classes)
    table, _ = prepare_table(cfg, spec, resolve_device(cfg.run.device))
    return {"table": str(table.path), "entries": len(table.entries), "input_hw": list(cfg.latency.input_hw)}


def _search(cfg: ExperimentConfig, run: Path, outputs: dict, teacher: str | None, epochs: int | None) -> dict:
    from nas.searcher import run_strategy
    from nas.searcher.common import CHECKPOINT

    res = run_strategy(cfg, resume=(run / CHECKPOINT).is_file())
    return {"arch": str(run / "student.arch.json"), "table_ms": res.student_latency_ms,
            "target_ms": cfg.search.latency_target_ms}


def _teacher(cfg: ExperimentConfig, run: Path, outputs: dict, teacher: str | None, epochs: int | None) -> dict:
    from nas.data import dataset_info, dataset_version
    from nas.trainer.chain import load_teacher
    from nas.trainer.loop import train_or_reuse

    if not cfg.distill.losses:
        return {"model": None, "skipped": "no KD losses configured"}
    info = dataset_info(cfg.data)
    if teacher:
        _, meta = load_teacher(teacher, info.num_classes, class_names=info.class_names,
                               dataset_version=dataset_version(cfg.data))
        return {"model": str(teacher), "val_miou": (meta.get("meta") or {}).get("val_miou"), "trained": False}
    tcfg = replace(cfg, train=replace(cfg.train, model="teacher", epochs=epochs or cfg.train.epochs),
                   distill=replace(cfg.distill, losses=(), teacher=None, online="none"))
    scores = train_or_reuse(tcfg)
    return {"model": scores["model"], "val_miou": scores["miou"], "trained": True}


def _student(cfg: ExperimentConfig, run: Path, outputs: dict, teacher: str | None, epochs: int | None) -> dict:
    from nas.trainer.loop import train_or_reuse

    teacher_file = outputs.get("teacher", {}).get("model")
    scfg = replace(cfg, train=replace(cfg.train, model="student"),
                   distill=replace(cfg.distill, teacher=teacher_file if cfg.distill.losses else None))
    scores = train_or_reuse(scfg, outputs["search"]["arch"])
    return {"model": scores["model"], "scores": str(Path(scores["model"]).parent / "scores.json"),
            "val_miou": scores["miou"], "params": scores["params"], "kd": list(cfg.distill.losses)}


def _export(cfg: ExperimentConfig, run: Path, outputs: dict, teacher: str | None, epochs: int | None) -> dict:
    from nas.exporter.job import run_export

    res = run_export(cfg, outputs["student"]["model"])
    lat = res.report.get("latency_ms") or {}
    return {"report": str(res.report_path), "files": {k: str(v) for k, v in res.files.items()},
            "input_hw": res.report["input_hw"], "measured_ms": lat.get("torch_eager")}


_RUNNERS = {"data": _data, "latency": _latency, "search": _search, "teacher": _teacher, "student": _student,
            "export": _export}


def summary_lines(result: PipelineResult) -> list[str]:
    """The end-of-run summary: where each artifact is and the headline figures."""
    o = result.outputs
    lines = [f"run folder: {result.run_dir}/ (stages run now: {', '.join(result.ran) or 'none'}; "
             f"already done: {', '.join(result.skipped) or 'none'})"]
    if o.get("latency", {}).get("table"):
        lines.append(f"latency table: {o['latency']['table']}")
    if "search" in o:
        table_ms = o["search"].get("table_ms")
        lines.append(f"architecture:  {o['search']['arch']}"
                     + (f" (table latency {table_ms:.2f} ms, target {o['search']['target_ms']:g} ms)"
                        if table_ms is not None else ""))
    t = o.get("teacher", {})
    if t.get("model"):
        miou = t.get("val_miou")
        lines.append(f"teacher:       {t['model']}" + (f" (val mIoU {100 * miou:.1f}%)" if miou is not None else ""))
    s = o.get("student", {})
    if s.get("model"):
        kd = "+".join(s.get("kd") or []) or "no KD"
        lines.append(f"student:       {s['model']} (val mIoU {100 * s['val_miou']:.1f}%, "
                     f"{s['params'] / 1e6:.2f} M parameters, {kd})")
    e = o.get("export", {})
    if e.get("report"):
        hw = "x".join(str(v) for v in e.get("input_hw", []))
        ms = e.get("measured_ms")
        lines.append(f"export:        {', '.join(e.get('files', {}).values())} at {hw}"
                     + (f" (measured {ms:.2f} ms, torch eager)" if ms is not None else ""))
    return lines
