"""Retraining: a derived student (or a teacher) from scratch, with distillation teacher → tutor → student.

The names below are loaded on first use, so that importing one submodule (e.g. :mod:`nas.trainer.chain`) does not
load the whole training loop and its data and distillation stack.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["CHECKPOINT", "TrainResult", "run_train", "scores_table", "train_or_reuse", "train_dir", "Phase", "kd_terms",
           "load_teacher", "plan_phases", "tutor_path_for"]

_WHERE = {
    "CHECKPOINT": "nas.trainer.loop",
    "TrainResult": "nas.trainer.loop",
    "run_train": "nas.trainer.loop",
    "scores_table": "nas.trainer.loop",
    "train_or_reuse": "nas.trainer.loop",
    "train_dir": "nas.trainer.loop",
    "Phase": "nas.trainer.chain",
    "kd_terms": "nas.trainer.chain",
    "load_teacher": "nas.trainer.chain",
    "plan_phases": "nas.trainer.chain",
    "tutor_path_for": "nas.trainer.chain",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(_WHERE[name]), name)
    raise AttributeError(f"module 'nas.trainer' has no attribute {name!r}")
