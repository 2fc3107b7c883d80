"""One study trial: sample hyperparameters → search → derive → short retrain with distillation → measure.

A trial is the ordinary pipeline run with `--set`-style overrides: :func:`nas.searcher.run_search` writes to
``<study dir>/trial_<n>/``, :func:`nas.trainer.run_train` retrains the derived student in ``trial_<n>/student/``
(distilled from the study's teacher when the trial's `kd` asks for it), and the deployable model is timed with
the configured latency backend on the configured device. The trial returns (val mIoU ↑, latency ms ↓), sets
the latency budget as a constraint (``trial.set_constraint``; ≤ 0 is feasible), stores a compact summary in
its user attributes and uploads its architecture JSON, metrics CSVs and model file as artifacts.

Seeds: trial n runs with seed :func:`trial_seed` (study seed, n). A retried trial (its worker died) keeps the
original trial's number for its seed and folder, and resumes that folder's checkpoints.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nas.config import ExperimentConfig, apply_overrides
from nas.errors import UserError
from nas.studies.space import SearchSpace
from nas.studies.storage import file_lock, safe_artifact_name

__all__ = ["OBJECTIVES", "DIRECTIONS", "trial_seed", "trial_dir", "ensure_teacher", "measure_model_latency",
           "TrialObjective"]

log = logging.getLogger(__name__)

OBJECTIVES = ("val_miou", "latency_ms")
DIRECTIONS = ("maximize", "minimize")
CONSTRAINT = "latency_over_budget_ms"
# Files each trial uploads: artifact name → path inside the trial folder.
TRIAL_FILES = {
    "student.arch.json": "student.arch.json",
    "search_metrics.csv": "metrics.csv",
    "train_metrics.csv": "student/metrics.csv",
    "scores.json": "student/scores.json",
    "model.pt": "student/model.pt",
}


def trial_seed(study_seed: int, number: int) -> int:
    """The run seed of trial `number`: a hash of (study seed, trial number), independent of timing and worker."""
    state = np.random.SeedSequence([int(study_seed) & 0xFFFFFFFF, int(number)]).generate_state(1)[0]
    return int(state) % (2**31 - 1)


def trial_dir(study_dir: str | Path, number: int) -> Path:
    """``<study dir>/trial_<n>``: where trial n's search, retraining and files live."""
    return Path(study_dir) / f"trial_{number}"


def ensure_teacher(base: ExperimentConfig, study_dir: str | Path) -> Path:
    """The teacher model file KD trials distil from: `study.teacher`, else an HRNet (`train.hrnet_preset`)
    trained once per study in ``<study dir>/teacher/`` (workers wait on a lock; an interrupted one resumes)."""
    from nas.trainer import run_train
    from nas.trainer.loop import CHECKPOINT

    if base.study.teacher:
        path = Path(base.study.teacher)
        if not path.is_file():
            raise UserError(f"study.teacher: teacher model file not found: {path}")
        return path
    study_dir = Path(study_dir)
    path = study_dir / "teacher" / "teacher" / "model.pt"
    with file_lock(study_dir / ".teacher.lock"):
        if path.is_file():
            return path
        cfg = apply_overrides(base, [
            f"run.root={json.dumps(str(study_dir))}", "run.name=teacher", "train.model=teacher",
            "train.teacher_arch=hrnet", "distill.losses=[]", "distill.tutor=none", "distill.teacher=null",
            f"train.epochs={base.study.teacher_epochs or base.train.epochs}",
        ])
        log.info("training the study's teacher (%s, %d epochs) in %s", cfg.train.hrnet_preset, cfg.train.epochs,
                 path.parent)
        result = run_train(cfg, None, resume=(path.parent / CHECKPOINT).is_file())
        return result.model_path


def measure_model_latency(model: torch.nn.Module, cfg: ExperimentConfig) -> float:
    """Median latency (ms) of the deployable `model` at `latency.input_hw` and `latency.batch`, with the
    configured backend on `run.device`; the median of `latency.rounds` medians (CPU timings normalised by the
    device's speed reference, where the fastest round is an outlier as often as the slowest)."""
    from nas.exporter import logits_only
    from nas.latency.cache import make_backend

    lc = cfg.latency
    previous = torch.get_num_threads()
    try:
        backend = make_backend(lc, cfg.run.device)
        shape = (lc.batch, 3, *lc.input_hw)
        wrapper = logits_only(model)
        return statistics.median(backend.measure(wrapper, [shape]) for _ in range(max(1, lc.rounds)))
    finally:
        torch.set_num_threads(previous)


@contextlib.contextmanager
def _trial_log_handlers():
    """Detach the log files the trial's runs attach, so trial n+1 does not write into trial n's log.txt."""
    root = logging.getLogger()
    before = list(root.handlers)
    try:
        yield
    finally:
        for handler in list(root.handlers):
            if handler not in before:
                root.removeHandler(handler)
                handler.close()


def _retried_number(trial: Any) -> int | None:
    """The number of the trial this one retries (set by the heartbeat retry callback), else None."""
    from optuna.trial import TrialState

    for frozen in trial.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if frozen.number == trial.number:
            origin = frozen.system_attrs.get("failed_trial")
            return int(origin) if origin is not None else None
    return None


def _arch_code(arch: Any) -> str:
    """A compact architecture string: per branch its scale and ops, e.g. `32:c2.z.s|16:c.c2`."""
    short = {"skip": "s", "conv": "c", "conv_2x": "c2", "zoomed_conv": "z", "zoomed_conv_2x": "z2"}
    return "|".join(f"{b.scale}:" + ".".join(short.get(c.op, c.op) for c in b.cells) for b in arch.branches)


@dataclass
class TrialObjective:
    """The objective `study.optimize` calls: one trial of the pipeline, returning (val mIoU, latency ms)."""

    base: ExperimentConfig
    space: SearchSpace
    study_dir: Path
    artifact_store: Any

    def __call__(self, trial: Any) -> tuple[float, float]:
        from nas.models import load_model
        from nas.searcher import run_search
        from nas.searcher.common import CHECKPOINT as SEARCH_CKPT
        from nas.trainer import run_train
        from nas.trainer.loop import CHECKPOINT as TRAIN_CKPT

        origin = _retried_number(trial)
        number = origin if origin is not None else trial.number
        seed = trial_seed(self.base.run.seed, number)
        folder = trial_dir(self.study_dir, number)
        values = self.space.suggest(trial)
        overrides = [*self.space.overrides(values), f"run.root={json.dumps(str(self.study_dir))}",
                     f"run.name=trial_{number}", f"run.seed={seed}"]
        cfg = apply_overrides(self.base, overrides)
        if cfg.distill.losses:
            teacher = ensure_teacher(self.base, self.study_dir)
            cfg = apply_overrides(cfg, [f"distill.teacher={json.dumps(str(teacher))}"])
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("run_dir", str(folder))
        if origin is not None:
            log.info("trial %d retries trial %d: resuming %s", trial.number, number, folder)
        log.info("trial %d: %s", trial.number, ", ".join(f"{k}={v}" for k, v in values.items()))
        t0 = time.perf_counter()
        with _trial_log_handlers():
            search = run_search(cfg, resume=(folder / SEARCH_CKPT).is_file())
            t1 = time.perf_counter()
            result = run_train(cfg, folder / "student.arch.json",
                               resume=(folder / "student" / TRAIN_CKPT).is_file())
        t2 = time.perf_counter()
        model, _ = load_model(result.model_path)
        latency = float(measure_model_latency(model, cfg))
        miou = float(result.scores.miou)
        if not np.isfinite(miou):
            miou = 0.0
        budget = cfg.study.latency_budget_ms
        if budget > 0:
            trial.set_constraint(CONSTRAINT, latency - budget)
        summary = {
            "val_miou": round(miou, 6),
            "latency_ms": round(latency, 4),
            "params": int(result.params),
            "predicted_latency_ms": search.student_latency_ms,
            "arch": _arch_code(search.student),
            "kd": list(cfg.distill.losses),
            "feasible": budget <= 0 or latency <= budget,
            "search_s": round(t1 - t0, 1),
            "train_s": round(t2 - t1, 1),
        }
        trial.set_user_attr("summary", summary)
        self._upload(trial, folder)
        log.info("trial %d: val mIoU %.4f, latency %.3f ms%s", trial.number, miou, latency,
                 "" if budget <= 0 else f" (budget {budget:g} ms)")
        return miou, latency

    def _upload(self, trial: Any, folder: Path) -> None:
        """Attach the trial's files as artifacts under fixed, sanitised names."""
        from optuna.artifacts import upload_artifact

        ids: dict[str, str] = {}
        with tempfile.TemporaryDirectory(prefix="nas-artifact-") as tmp:
            for name, rel in TRIAL_FILES.items():
                src = folder / rel
                if not src.is_file():
                    log.warning("trial %d has no %s to attach", trial.number, src)
                    continue
                staged = Path(tmp) / safe_artifact_name(name)
                shutil.copyfile(src, staged)
                ids[name] = upload_artifact(artifact_store=self.artifact_store, file_path=str(staged),
                                            study_or_trial=trial)
                staged.unlink()
        trial.set_user_attr("artifacts", ids)
